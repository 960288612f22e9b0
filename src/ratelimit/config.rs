//! `[limits]` and `[tenants.NAME.limits]`: the server's quotas and each
//! tenant's overrides of them.

use std::{collections::HashMap, time::Duration};

use crate::domain::{
    TenantId,
    limit::{Limit, Quota},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub starts_per_destination: Quota,
    pub starts_per_ip: Quota,
    pub failed_checks_per_destination: Quota,
    pub requests_per_tenant: Quota,
    /// SMS and voice starts per number prefix (the number without its last
    /// four digits): SMS pumping works through ranges of numbers.
    pub starts_per_prefix: Quota,
    /// SMS and voice starts per country calling code.
    pub starts_per_country: Quota,
    /// Starts and resends that send, per tenant, across every channel and
    /// country: a spray over many prefixes and countries is bounded too.
    pub sends_per_tenant: Quota,
    /// New verifications (starts, not resends) per tenant.
    pub starts_per_tenant: Quota,
    /// Emails (starts and resends) per tenant: email escapes the prefix and
    /// country budgets.
    pub emails_per_tenant: Quota,
    /// Live lookups of numbers per tenant (`[lookup]`), paid calls: never
    /// given back; when spent, the lookup's failure policy applies.
    #[serde(default = "default_lookups_per_tenant")]
    pub lookups_per_tenant: Quota,
}

/// 1,000 an hour.
fn default_lookups_per_tenant() -> Quota {
    Quota {
        burst: 1_000,
        period: Duration::from_millis(3_600),
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            starts_per_destination: Quota {
                burst: 5,
                period: minutes(2),
            },
            starts_per_ip: Quota {
                burst: 20,
                period: minutes(3),
            },
            failed_checks_per_destination: Quota {
                burst: 20,
                period: minutes(60),
            },
            requests_per_tenant: Quota {
                burst: 1_000,
                period: Duration::from_millis(1),
            },
            starts_per_prefix: Quota {
                burst: 30,
                period: minutes(2),
            },
            starts_per_country: Quota {
                burst: 1_000,
                period: Duration::from_millis(3_600),
            },
            // 10,000 an hour.
            sends_per_tenant: Quota {
                burst: 10_000,
                period: Duration::from_millis(360),
            },
            // 10,000 an hour.
            starts_per_tenant: Quota {
                burst: 10_000,
                period: Duration::from_millis(360),
            },
            // 5,000 an hour.
            emails_per_tenant: Quota {
                burst: 5_000,
                period: Duration::from_millis(720),
            },
            lookups_per_tenant: default_lookups_per_tenant(),
        }
    }
}

impl LimitsConfig {
    fn get(&self, limit: Limit) -> Quota {
        match limit {
            Limit::StartsPerDestination => self.starts_per_destination,
            Limit::StartsPerIp => self.starts_per_ip,
            Limit::FailedChecksPerDestination => self.failed_checks_per_destination,
            Limit::RequestsPerTenant => self.requests_per_tenant,
            Limit::StartsPerPrefix => self.starts_per_prefix,
            Limit::StartsPerCountry => self.starts_per_country,
            Limit::SendsPerTenant => self.sends_per_tenant,
            Limit::StartsPerTenant => self.starts_per_tenant,
            Limit::EmailsPerTenant => self.emails_per_tenant,
            Limit::LookupsPerTenant => self.lookups_per_tenant,
        }
    }

    /// The quotas, by limit.
    pub fn quotas(&self) -> impl Iterator<Item = (Limit, Quota)> {
        Limit::ALL.into_iter().map(|limit| (limit, self.get(limit)))
    }

    /// The first quota that allows nothing: its key under `[limits]` and
    /// why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        quota_problem(self.quotas())
    }
}

/// `[tenants.NAME.limits]`: a tenant's own quotas, each replacing the
/// server's (`[limits.*]`) for that tenant; those left out stay the
/// server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialLimits {
    pub starts_per_destination: Option<Quota>,
    pub starts_per_ip: Option<Quota>,
    pub failed_checks_per_destination: Option<Quota>,
    pub requests_per_tenant: Option<Quota>,
    pub starts_per_prefix: Option<Quota>,
    pub starts_per_country: Option<Quota>,
    pub sends_per_tenant: Option<Quota>,
    pub starts_per_tenant: Option<Quota>,
    pub emails_per_tenant: Option<Quota>,
    pub lookups_per_tenant: Option<Quota>,
}

impl PartialLimits {
    /// The quotas set, by limit.
    pub fn quotas(&self) -> impl Iterator<Item = (Limit, Quota)> {
        Limit::ALL
            .into_iter()
            .filter_map(|limit| self.get(limit).map(|q| (limit, q)))
    }

    /// The first quota set that allows nothing: its key under
    /// `[tenants.NAME.limits]` and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        quota_problem(self.quotas())
    }

    fn get(&self, limit: Limit) -> Option<Quota> {
        match limit {
            Limit::StartsPerDestination => self.starts_per_destination,
            Limit::StartsPerIp => self.starts_per_ip,
            Limit::FailedChecksPerDestination => self.failed_checks_per_destination,
            Limit::RequestsPerTenant => self.requests_per_tenant,
            Limit::StartsPerPrefix => self.starts_per_prefix,
            Limit::StartsPerCountry => self.starts_per_country,
            Limit::SendsPerTenant => self.sends_per_tenant,
            Limit::StartsPerTenant => self.starts_per_tenant,
            Limit::EmailsPerTenant => self.emails_per_tenant,
            Limit::LookupsPerTenant => self.lookups_per_tenant,
        }
    }
}

/// The first of `quotas` that cannot be enforced, named by its limit.
fn quota_problem(
    mut quotas: impl Iterator<Item = (Limit, Quota)>,
) -> Option<(&'static str, &'static str)> {
    quotas.find_map(|(limit, quota)| quota.problem().map(|problem| (limit.as_str(), problem)))
}

/// The server's quotas and each tenant's overrides of them.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    server: LimitsConfig,
    tenants: HashMap<TenantId, PartialLimits>,
}

impl Quotas {
    /// `tenants`: the tenants that override any quota (others may be left
    /// out).
    pub fn new(
        server: LimitsConfig,
        tenants: impl IntoIterator<Item = (TenantId, PartialLimits)>,
    ) -> Self {
        Self {
            server,
            tenants: tenants
                .into_iter()
                .filter(|(_, l)| *l != PartialLimits::default())
                .collect(),
        }
    }

    /// The quota `limit` enforces for `tenant`.
    pub fn get(&self, limit: Limit, tenant: &TenantId) -> Quota {
        self.tenants
            .get(tenant)
            .and_then(|t| t.get(limit))
            .unwrap_or_else(|| self.server.get(limit))
    }

    /// The server's quota for `limit`.
    pub(super) fn server(&self, limit: Limit) -> Quota {
        self.server.get(limit)
    }

    /// The tenants whose quota for `limit` is not the server's, with theirs.
    pub(super) fn overrides(&self, limit: Limit) -> impl Iterator<Item = (&TenantId, Quota)> {
        let server = self.server(limit);
        self.tenants.iter().filter_map(move |(tenant, own)| {
            Some((tenant, own.get(limit).filter(|&q| q != server)?))
        })
    }
}

impl From<LimitsConfig> for Quotas {
    fn from(server: LimitsConfig) -> Self {
        Self::new(server, [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_quota_replaces_the_servers_for_that_tenant_only() {
        let strict = TenantId::parse("strict").expect("valid");
        let loose = TenantId::parse("loose").expect("valid");
        let one = Quota {
            burst: 1,
            period: Duration::from_secs(60),
        };
        let own = PartialLimits {
            starts_per_destination: Some(one),
            ..PartialLimits::default()
        };
        let quotas = Quotas::new(
            LimitsConfig::default(),
            [
                (strict.clone(), own),
                (loose.clone(), PartialLimits::default()),
            ],
        );
        assert_eq!(quotas.get(Limit::StartsPerDestination, &strict), one);
        assert_eq!(
            quotas.get(Limit::StartsPerIp, &strict),
            LimitsConfig::default().starts_per_ip
        );
        assert_eq!(
            quotas.get(Limit::StartsPerDestination, &loose),
            LimitsConfig::default().starts_per_destination
        );
        assert_eq!(quotas.overrides(Limit::StartsPerDestination).count(), 1);
        assert_eq!(quotas.overrides(Limit::StartsPerIp).count(), 0);
    }
}
