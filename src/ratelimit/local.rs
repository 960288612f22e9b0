//! The limits kept in each process (governor's keyed GCRA): a tenant's
//! request rate, a cheap first line that needs no round trip. Each replica
//! enforces it on its own share of the traffic.

use std::{collections::HashMap, hash::Hash, num::NonZeroU32, time::SystemTime};

use governor::{
    RateLimiter, clock::Clock as GovernorClock, middleware::NoOpMiddleware, nanos::Nanos,
    state::keyed::DashMapStateStore,
};

use super::config::Quotas;
use crate::{
    clock::Clock,
    domain::{
        TenantId,
        limit::{Limit, Quota, RateLimited},
    },
};

/// Adapts the service clock to governor, which counts nanoseconds from an
/// arbitrary origin; the Unix epoch serves.
#[derive(Debug, Clone)]
struct LimiterClock(Clock);

impl GovernorClock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let since_epoch = self
            .0
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Nanos::from(since_epoch)
    }
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, LimiterClock, NoOpMiddleware<Nanos>>;

/// A quota as governor takes it; `None` when it allows nothing
/// ([`Quota::is_valid`]).
fn governor_quota(quota: Quota) -> Option<governor::Quota> {
    let burst = NonZeroU32::new(quota.burst)?;
    governor::Quota::with_period(quota.period).map(|q| q.allow_burst(burst))
}

/// One keyed limiter and the limit it enforces.
#[derive(Debug)]
struct Limiter<K: Hash + Eq + Clone> {
    limit: Limit,
    inner: Keyed<K>,
    clock: LimiterClock,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(limit: Limit, quota: Quota, clock: &LimiterClock) -> Self {
        let quota = governor_quota(quota).expect("quotas are validated with the config");
        Self {
            limit,
            inner: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock: clock.clone(),
        }
    }

    fn take(&self, key: &K) -> Result<(), RateLimited> {
        self.inner.check_key(key).map_err(|not_until| RateLimited {
            limit: self.limit,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }
}

/// One limit's keyed limiters: governor fixes a limiter's quota, so there
/// is one for the server's quota and one more per distinct quota that
/// tenants set instead. Keys hold the tenant, so tenants sharing a limiter
/// never share a budget.
#[derive(Debug)]
pub(super) struct Limiters<K: Hash + Eq + Clone> {
    server: Limiter<K>,
    overrides: Vec<Limiter<K>>,
    /// Index into `overrides`, for the tenants with a quota of their own.
    by_tenant: HashMap<TenantId, usize>,
}

impl<K: Hash + Eq + Clone> Limiters<K> {
    pub(super) fn new(limit: Limit, quotas: &Quotas, clock: Clock) -> Self {
        let clock = LimiterClock(clock);
        let mut distinct: Vec<Quota> = Vec::new();
        let mut by_tenant = HashMap::new();
        for (tenant, quota) in quotas.overrides(limit) {
            let index = distinct
                .iter()
                .position(|&q| q == quota)
                .unwrap_or_else(|| {
                    distinct.push(quota);
                    distinct.len() - 1
                });
            by_tenant.insert(tenant.clone(), index);
        }
        Self {
            server: Limiter::new(limit, quotas.server(limit), &clock),
            overrides: distinct
                .into_iter()
                .map(|quota| Limiter::new(limit, quota, &clock))
                .collect(),
            by_tenant,
        }
    }

    pub(super) fn take(&self, tenant: &TenantId, key: &K) -> Result<(), RateLimited> {
        let limiter = self
            .by_tenant
            .get(tenant)
            .map_or(&self.server, |&i| &self.overrides[i]);
        limiter.take(key)
    }

    fn all(&self) -> impl Iterator<Item = &Limiter<K>> {
        std::iter::once(&self.server).chain(&self.overrides)
    }

    /// Drops the keys whose budget is full again.
    pub(super) fn retain_recent(&self) {
        self.all().for_each(|l| l.inner.retain_recent());
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.all().map(|l| l.inner.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::config::{LimitsConfig, PartialLimits};
    use super::*;

    #[test]
    fn tenants_with_the_same_own_quota_share_a_limiter_not_a_budget() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let one = Quota {
            burst: 1,
            period: Duration::from_secs(60),
        };
        let own = PartialLimits {
            requests_per_tenant: Some(one),
            ..PartialLimits::default()
        };
        let strict = TenantId::parse("strict").expect("valid");
        let also_strict = TenantId::parse("also-strict").expect("valid");
        let loose = TenantId::parse("loose").expect("valid");
        let quotas = Quotas::new(
            LimitsConfig::default(),
            [
                (strict.clone(), own),
                (also_strict.clone(), own),
                (loose.clone(), PartialLimits::default()),
            ],
        );
        let limiters = Limiters::new(Limit::RequestsPerTenant, &quotas, clock.clone());
        assert_eq!(
            limiters.overrides.len(),
            1,
            "one limiter per distinct quota"
        );
        for tenant in [&strict, &also_strict] {
            limiters.take(tenant, tenant).expect("within burst");
            let refused = limiters.take(tenant, tenant).expect_err("a burst of one");
            assert_eq!(refused.limit, Limit::RequestsPerTenant);
            assert_eq!(refused.retry_after, Duration::from_secs(60));
        }
        limiters.take(&loose, &loose).expect("the server's burst");
        clock.advance(Duration::from_secs(3_600));
        limiters.retain_recent();
        assert_eq!(limiters.len(), 0, "full again, forgotten");
    }
}
