//! The budgets every replica spends together: a destination's starts and
//! failed checks, an end user's address block, a number prefix and its
//! country. They live in the store (the store port's [`BudgetStore`]), so
//! with Redis every replica takes from one budget; with the memory store,
//! from the process's own. A destination's cells are taken in the store's
//! own step with its verification; the rest, here.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use smallvec::SmallVec;

use super::config::Quotas;
use crate::{
    clock::Clock,
    domain::{
        TenantId,
        limit::{Budget, Limit, RateLimited},
    },
    store::port::{BudgetKey, BudgetStore, StoreError},
};

/// Why a take failed: the budget is spent, or the store that holds it
/// cannot say, and the request fails closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Limited(#[from] RateLimited),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub(super) struct SharedBudgets<B> {
    store: B,
    quotas: Quotas,
    clock: Clock,
}

impl<B: BudgetStore> SharedBudgets<B> {
    pub(super) fn new(store: B, quotas: Quotas, clock: Clock) -> Self {
        Self {
            store,
            quotas,
            clock,
        }
    }

    /// `limit`'s budget for `tenant`, for the store to take from in its
    /// own step.
    pub(super) fn budget(&self, limit: Limit, tenant: &TenantId) -> Budget {
        Budget {
            limit,
            quota: self.quotas.get(limit, tenant),
        }
    }

    /// Takes one cell of `limit`'s budget for `key`.
    pub(super) async fn take(
        &self,
        limit: Limit,
        tenant: &TenantId,
        key: BudgetKey<'_>,
    ) -> Result<(), LimitError> {
        let budget = self.budget(limit, tenant);
        let wait = self
            .store
            .take_cell(tenant, key, budget.quota, self.clock.now())
            .await?;
        match wait {
            None => Ok(()),
            Some(retry_after) => Err(budget.refused(retry_after).into()),
        }
    }

    /// Gives back one cell [`Self::take`] took.
    pub(super) async fn give_back(
        &self,
        limit: Limit,
        tenant: &TenantId,
        key: BudgetKey<'_>,
    ) -> Result<(), StoreError> {
        let quota = self.quotas.get(limit, tenant);
        self.store
            .give_back_cell(tenant, key, quota, self.clock.now())
            .await
    }

    /// Takes one start from an end user's address block.
    pub(super) async fn take_ip(&self, tenant: &TenantId, ip: IpAddr) -> Result<(), LimitError> {
        let key = BudgetKey::Ip(ip_block(ip));
        self.take(Limit::StartsPerIp, tenant, key).await
    }

    /// Takes one SMS or voice start from the number prefix's budget, then
    /// the country's, giving the prefix's back if the country's is spent.
    pub(super) async fn take_phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), LimitError> {
        let prefix_key = BudgetKey::Prefix(prefix);
        self.take(Limit::StartsPerPrefix, tenant, prefix_key)
            .await?;
        let country = self
            .take(
                Limit::StartsPerCountry,
                tenant,
                BudgetKey::Country(calling_code),
            )
            .await;
        if country.is_err() {
            self.give_back(Limit::StartsPerPrefix, tenant, prefix_key)
                .await?;
        }
        country
    }

    pub(super) async fn give_back_phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), StoreError> {
        self.give_back(Limit::StartsPerPrefix, tenant, BudgetKey::Prefix(prefix))
            .await?;
        let country = BudgetKey::Country(calling_code);
        self.give_back(Limit::StartsPerCountry, tenant, country)
            .await
    }

    /// Takes one cell of each of the tenant's own budgets `limits`, across
    /// every destination: all or none, in one step (one script on Redis).
    pub(super) async fn take_tenant(
        &self,
        limits: &[Limit],
        tenant: &TenantId,
    ) -> Result<(), LimitError> {
        // At most three (sends, starts, emails): no allocation per start.
        let cells: SmallVec<[(BudgetKey<'_>, _); 3]> = limits
            .iter()
            .map(|&limit| (BudgetKey::Tenant(limit), self.quotas.get(limit, tenant)))
            .collect();
        match self
            .store
            .take_cells(tenant, &cells, self.clock.now())
            .await?
        {
            None => Ok(()),
            Some((i, wait)) => Err(self.budget(limits[i], tenant).refused(wait).into()),
        }
    }

    pub(super) async fn give_back_tenant(
        &self,
        limit: Limit,
        tenant: &TenantId,
    ) -> Result<(), StoreError> {
        self.give_back(limit, tenant, BudgetKey::Tenant(limit))
            .await
    }

    /// Counts a send to `prefix` that may have gone out, under the prefix's
    /// quota; past the quota, the count stays at its fullest.
    pub(super) async fn count_prefix_send(
        &self,
        tenant: &TenantId,
        prefix: &str,
    ) -> Result<(), StoreError> {
        let quota = self.quotas.get(Limit::StartsPerPrefix, tenant);
        let key = BudgetKey::PrefixSends(prefix);
        self.store
            .take_cell(tenant, key, quota, self.clock.now())
            .await
            .map(|_| ())
    }

    /// How long until the count of sends to `prefix` has room.
    pub(super) async fn prefix_sends_wait(
        &self,
        tenant: &TenantId,
        prefix: &str,
    ) -> Result<Duration, StoreError> {
        let quota = self.quotas.get(Limit::StartsPerPrefix, tenant);
        let key = BudgetKey::PrefixSends(prefix);
        self.store
            .cell_wait(tenant, key, quota, self.clock.now())
            .await
    }
}

/// The addresses taken as one end user's, for the IP budget: an IPv4
/// address alone, an IPv6 address with its /64 (one subscriber's LAN).
///
/// An IPv4 address written as IPv6 is that IPv4 address: mapped
/// (`::ffff:a.b.c.d`, what a dual-stack socket reports, e.g. Node's) or
/// behind NAT64's well-known prefix (`64:ff9b::/96`, RFC 6052). As a /64
/// each would put every IPv4 user of such a caller into one budget.
fn ip_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => nat64_embedded(v6).map_or_else(
            || IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            IpAddr::V4,
        ),
    }
}

/// The IPv4 address in the last 32 bits of an address under NAT64's
/// well-known prefix `64:ff9b::/96`.
fn nat64_embedded(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    const WELL_KNOWN_PREFIX: [u8; 12] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
    let octets = v6.octets();
    let (prefix, v4) = octets.split_at(12);
    (prefix == WELL_KNOWN_PREFIX).then(|| Ipv4Addr::new(v4[0], v4[1], v4[2], v4[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_a_block_per_64() {
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::ffff:1".parse().expect("ip");
        let other: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        assert_eq!(ip_block(a), ip_block(b));
        assert_ne!(ip_block(a), ip_block(other));
        assert_eq!(ip_block(a), "2001:db8::".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn an_ipv4_address_written_as_ipv6_is_budgeted_as_that_ipv4_address() {
        let v4: IpAddr = "198.51.100.7".parse().expect("ip");
        for written in ["::ffff:198.51.100.7", "64:ff9b::c633:6407", "198.51.100.7"] {
            let ip: IpAddr = written.parse().expect("ip");
            assert_eq!(ip_block(ip), v4, "{written}");
        }
        // Neighbours in IPv6 stay apart as IPv4 addresses, not one /64.
        let other: IpAddr = "::ffff:198.51.100.8".parse().expect("ip");
        assert_ne!(ip_block(other), v4);
        // Outside the well-known prefix, an address is an IPv6 /64.
        let ip: IpAddr = "64:ff9b:1::c633:6407".parse().expect("ip");
        assert_eq!(ip_block(ip), "64:ff9b:1::".parse::<IpAddr>().expect("ip"));
    }
}
