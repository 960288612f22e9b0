//! Rate limits: GCRA quotas, each a burst and a replenish interval, e.g. a
//! burst of 5 then one more every 2 minutes.
//!
//! - [`config`]: the server's quotas and each tenant's overrides.
//! - [`local`]: the per-tenant request rate, kept in each process
//!   (governor), a cheap first line that needs no round trip.
//! - [`shared`]: the budgets that guard destinations, end users' addresses,
//!   number prefixes and countries. They live in the store, behind the
//!   store port's [`BudgetStore`], so every replica sharing a Redis spends
//!   from one budget. A destination's cells are taken in the store's own
//!   step with its verification: for those, the limits hand the use case a
//!   [`Budget`] to pass to the store.
//!
//! Keys include the tenant, so one tenant's traffic never spends another's
//! budget or reveals what another did with a destination. All read the
//! service's [`Clock`], so tests drive them with the same manual clock as
//! expiry.

mod config;
mod local;
mod shared;

use std::{net::IpAddr, sync::Arc};

pub use config::{LimitsConfig, PartialLimits, Quotas};
use local::Limiters;
pub use shared::LimitError;
use shared::SharedBudgets;

use crate::{
    clock::Clock,
    domain::{
        Destination, TenantId,
        limit::{Budget, Limit, RateLimited},
    },
    store::port::{BudgetKey, BudgetStore, StoreError},
    telemetry::Metrics,
};

/// The limits, over the store `B` that keeps the shared budgets.
#[derive(Debug)]
pub struct RateLimits<B> {
    requests_per_tenant: Limiters<TenantId>,
    budgets: SharedBudgets<B>,
    /// Counts refusals, by tenant and limit.
    metrics: Arc<Metrics>,
}

impl<B: BudgetStore> RateLimits<B> {
    /// Limits whose budgets `store` keeps.
    pub fn new(quotas: &Quotas, clock: Clock, store: B) -> Self {
        Self {
            requests_per_tenant: Limiters::new(Limit::RequestsPerTenant, quotas, clock.clone()),
            budgets: SharedBudgets::new(store, quotas.clone(), clock),
            metrics: Arc::default(),
        }
    }

    /// Counts refusals in `metrics`.
    #[must_use]
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// Counts a refusal, and passes the result on.
    fn counted<T>(
        &self,
        tenant: &TenantId,
        result: Result<T, LimitError>,
    ) -> Result<T, LimitError> {
        if let Err(LimitError::Limited(limited)) = &result {
            self.metrics.rate_limited(tenant, limited.limit.as_str());
        }
        result
    }

    pub fn request(&self, tenant: &TenantId) -> Result<(), RateLimited> {
        let taken = self.requests_per_tenant.take(tenant, tenant);
        if let Err(limited) = &taken {
            self.metrics.rate_limited(tenant, limited.limit.as_str());
        }
        taken
    }

    /// Takes one start from the end user's address block, if the caller
    /// named one, and returns the destination's start budget, which the
    /// store takes from in the step that creates or reserves
    /// ([`crate::store::Store::create`],
    /// [`crate::store::Store::reserve_resend`]) after the least gap.
    pub async fn start(&self, tenant: &TenantId, ip: Option<IpAddr>) -> Result<Budget, LimitError> {
        if let Some(ip) = ip {
            let taken = self.budgets.take_ip(tenant, ip).await;
            self.counted(tenant, taken)?;
        }
        Ok(self.budgets.budget(Limit::StartsPerDestination, tenant))
    }

    /// Takes one SMS or voice start from the number prefix's budget, then
    /// the country's. Both are budgets other users share: give them back
    /// with [`Self::give_back_phone_start`] when nothing is sent.
    pub async fn phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), LimitError> {
        let taken = self
            .budgets
            .take_phone_start(tenant, prefix, calling_code)
            .await;
        self.counted(tenant, taken)
    }

    /// Gives back the cells [`Self::phone_start`] took, for a send that did
    /// not happen.
    pub async fn give_back_phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), StoreError> {
        self.budgets
            .give_back_phone_start(tenant, prefix, calling_code)
            .await
    }

    /// Takes the cells of the tenant's own budgets a send spends, across
    /// every destination: every send (`sends_per_tenant`), a new
    /// verification (`starts_per_tenant`), an email (`emails_per_tenant`).
    /// So a spray over many prefixes, countries or addresses is bounded
    /// too. All or none, in one step (one script on Redis); give them back
    /// with [`Self::give_back_tenant`] when nothing is sent.
    pub async fn tenant(&self, tenant: &TenantId, limits: &[Limit]) -> Result<(), LimitError> {
        let taken = self.budgets.take_tenant(limits, tenant).await;
        self.counted(tenant, taken)
    }

    pub async fn give_back_tenant(
        &self,
        tenant: &TenantId,
        limits: &[Limit],
    ) -> Result<(), StoreError> {
        for &limit in limits.iter().rev() {
            self.budgets.give_back_tenant(limit, tenant).await?;
        }
        Ok(())
    }

    /// Counts a send to `prefix` that may have gone out (a provider took
    /// it, or its outcome is unknown), under the prefix's quota. A prefix
    /// is blocked on these, not on the starts its budget refuses: cells
    /// held by starts still waiting on a provider, which may give them
    /// back, must not trip a block.
    pub async fn prefix_sent(&self, tenant: &TenantId, prefix: &str) -> Result<(), StoreError> {
        self.budgets.count_prefix_send(tenant, prefix).await
    }

    /// Whether the sends to `prefix` that may have gone out have spent its
    /// quota: the pumping pattern a prefix block is for.
    pub async fn prefix_sends_spent(
        &self,
        tenant: &TenantId,
        prefix: &str,
    ) -> Result<bool, StoreError> {
        let wait = self.budgets.prefix_sends_wait(tenant, prefix).await?;
        Ok(!wait.is_zero())
    }

    /// The destination's failed-check budget, which the store takes one
    /// cell from before a code is compared, in the check's own step
    /// ([`crate::store::Store::check_within_budget`]). Taking it first
    /// means no guess can run past the budget, however many checks race; a
    /// right code ends the verification, so in practice the budget is
    /// spent by wrong codes. It spans all of a destination's verifications,
    /// so a fresh start does not reset it.
    pub fn check_budget(&self, tenant: &TenantId) -> Budget {
        self.budgets
            .budget(Limit::FailedChecksPerDestination, tenant)
    }

    /// Takes a cell of [`Self::check_budget`] on its own, for a check the
    /// store cannot budget in its step (a Redis record older than its
    /// budget's name).
    pub async fn check(&self, tenant: &TenantId, to: &Destination) -> Result<(), LimitError> {
        let limit = Limit::FailedChecksPerDestination;
        let taken = self
            .budgets
            .take(limit, tenant, BudgetKey::Destination(limit, to))
            .await;
        self.counted(tenant, taken)
    }

    /// Forgets the in-process limiters' keys whose budget is full again
    /// (the store prunes the shared budgets it keeps).
    pub fn prune(&self) {
        self.requests_per_tenant.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Mutex,
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::domain::limit::{BudgetTable, Quota};

    /// A budget store in a map, keyed by each budget's debug form.
    #[derive(Debug, Default)]
    struct Table(Mutex<BudgetTable<String>>);

    impl BudgetStore for Table {
        async fn take_cell(
            &self,
            tenant: &TenantId,
            key: BudgetKey<'_>,
            quota: Quota,
            now: SystemTime,
        ) -> Result<Option<Duration>, StoreError> {
            let mut table = self.0.lock().expect("lock");
            Ok(table.take(format!("{tenant}/{key:?}"), quota, now).err())
        }

        async fn give_back_cell(
            &self,
            tenant: &TenantId,
            key: BudgetKey<'_>,
            quota: Quota,
            now: SystemTime,
        ) -> Result<(), StoreError> {
            let mut table = self.0.lock().expect("lock");
            table.give_back(&format!("{tenant}/{key:?}"), quota, now);
            Ok(())
        }

        async fn cell_wait(
            &self,
            tenant: &TenantId,
            key: BudgetKey<'_>,
            quota: Quota,
            now: SystemTime,
        ) -> Result<Duration, StoreError> {
            let table = self.0.lock().expect("lock");
            Ok(table.wait(&format!("{tenant}/{key:?}"), quota, now))
        }
    }

    fn limits(quotas: LimitsConfig) -> RateLimits<Table> {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        RateLimits::new(&quotas.into(), clock, Table::default())
    }

    #[tokio::test]
    async fn a_start_takes_from_the_address_block_and_hands_over_the_destinations_budget() {
        let limits = limits(LimitsConfig::default());
        let tenant = TenantId::default_tenant();
        for i in 0..20u16 {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().expect("ip");
            let budget = limits.start(&tenant, Some(ip)).await.expect("within burst");
            assert_eq!(budget.limit, Limit::StartsPerDestination);
            assert_eq!(budget.quota, LimitsConfig::default().starts_per_destination);
        }
        let ip: IpAddr = "2001:db8::ffff:1".parse().expect("ip");
        let Err(LimitError::Limited(refused)) = limits.start(&tenant, Some(ip)).await else {
            panic!("the /64's burst is spent");
        };
        assert_eq!(refused.limit, Limit::StartsPerIp);
        let other = TenantId::parse("other").expect("valid");
        limits
            .start(&other, Some(ip))
            .await
            .expect("another tenant has its own budget");
    }

    #[tokio::test]
    async fn a_phone_start_refused_by_its_country_gives_the_prefix_its_cell_back() {
        let one = Quota {
            burst: 1,
            period: Duration::from_secs(60),
        };
        let limits = limits(LimitsConfig {
            starts_per_prefix: one,
            starts_per_country: one,
            ..LimitsConfig::default()
        });
        let tenant = TenantId::default_tenant();
        limits
            .phone_start(&tenant, "+1415555", 1)
            .await
            .expect("first");
        let Err(LimitError::Limited(refused)) = limits.phone_start(&tenant, "+1212555", 1).await
        else {
            panic!("the country's burst is spent");
        };
        assert_eq!(refused.limit, Limit::StartsPerCountry);
        limits
            .give_back_phone_start(&tenant, "+1415555", 1)
            .await
            .expect("given back");
        limits
            .phone_start(&tenant, "+1212555", 1)
            .await
            .expect("the refused prefix kept its cell, the country has one again");
    }
}
