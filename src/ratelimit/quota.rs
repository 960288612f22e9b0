//! The vocabulary of rate limits, shared with the stores that keep budgets
//! (the Redis store runs GCRA itself): a quota, and which limit it is.

use std::{num::NonZeroU32, time::Duration};

use governor::Quota;

/// A quota: `burst` requests at once, then one more every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub burst: u32,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

impl QuotaConfig {
    pub(super) fn quota(self) -> Option<Quota> {
        let burst = NonZeroU32::new(self.burst)?;
        Quota::with_period(self.period).map(|q| q.allow_burst(burst))
    }

    pub fn is_valid(self) -> bool {
        self.quota().is_some()
    }
}

/// Which limit refused a request; also the label on its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    StartsPerDestination,
    StartsPerIp,
    FailedChecksPerDestination,
    RequestsPerTenant,
    StartsPerPrefix,
    StartsPerCountry,
}

impl Limit {
    pub const ALL: [Self; 6] = [
        Self::StartsPerDestination,
        Self::StartsPerIp,
        Self::FailedChecksPerDestination,
        Self::RequestsPerTenant,
        Self::StartsPerPrefix,
        Self::StartsPerCountry,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StartsPerDestination => "starts_per_destination",
            Self::StartsPerIp => "starts_per_ip",
            Self::StartsPerPrefix => "starts_per_prefix",
            Self::StartsPerCountry => "starts_per_country",
            Self::FailedChecksPerDestination => "failed_checks_per_destination",
            Self::RequestsPerTenant => "requests_per_tenant",
        }
    }
}
