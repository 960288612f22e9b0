//! Rate limits: GCRA quotas (governor), each a burst and a replenish
//! interval, e.g. a burst of 5 then one more every 2 minutes.
//!
//! The limiters read the service's [`Clock`], so tests drive them with the
//! same manual clock as expiry. With the Redis store, the budgets that
//! guard destinations and IP addresses (starts and failed checks) live in
//! Redis, one GCRA script per take, so every replica spends from one budget;
//! the per-tenant request rate stays in process, a cheap first line that
//! needs no round trip.

pub(crate) mod quota;
mod returnable;

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use governor::{
    RateLimiter, clock::Clock as GovernorClock, middleware::NoOpMiddleware, nanos::Nanos,
    state::keyed::DashMapStateStore,
};

pub use quota::{Limit, QuotaConfig};
use returnable::ReturnableBudget;

use crate::{
    clock::Clock,
    domain::{Destination, TenantId},
    store::{RedisStore, StoreError},
    telemetry::Metrics,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {} reached; retry in {retry_after:?}", limit.as_str())]
pub struct RateLimited {
    pub limit: Limit,
    pub retry_after: Duration,
}

/// Why a take failed: the budget is spent, or (shared budgets) the store
/// that holds it cannot say, and the request fails closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Limited(#[from] RateLimited),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The refusal inside an error, if a limit refused.
trait AsLimited {
    fn as_limited(&self) -> Option<&RateLimited>;
}

impl AsLimited for RateLimited {
    fn as_limited(&self) -> Option<&RateLimited> {
        Some(self)
    }
}

impl AsLimited for LimitError {
    fn as_limited(&self) -> Option<&RateLimited> {
        match self {
            Self::Limited(limited) => Some(limited),
            Self::Store(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub starts_per_destination: QuotaConfig,
    pub starts_per_ip: QuotaConfig,
    pub failed_checks_per_destination: QuotaConfig,
    pub requests_per_tenant: QuotaConfig,
    /// SMS and voice starts per number prefix (the number without its last
    /// four digits): SMS pumping works through ranges of numbers.
    pub starts_per_prefix: QuotaConfig,
    /// SMS and voice starts per country calling code.
    pub starts_per_country: QuotaConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            starts_per_destination: QuotaConfig {
                burst: 5,
                period: minutes(2),
            },
            starts_per_ip: QuotaConfig {
                burst: 20,
                period: minutes(3),
            },
            failed_checks_per_destination: QuotaConfig {
                burst: 20,
                period: minutes(60),
            },
            requests_per_tenant: QuotaConfig {
                burst: 1_000,
                period: Duration::from_millis(1),
            },
            starts_per_prefix: QuotaConfig {
                burst: 30,
                period: minutes(2),
            },
            starts_per_country: QuotaConfig {
                burst: 1_000,
                period: Duration::from_millis(3_600),
            },
        }
    }
}

/// `[tenants.NAME.limits]`: a tenant's own quotas, each replacing the
/// server's (`[limits.*]`) for that tenant; those left out stay the
/// server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialLimits {
    pub starts_per_destination: Option<QuotaConfig>,
    pub starts_per_ip: Option<QuotaConfig>,
    pub failed_checks_per_destination: Option<QuotaConfig>,
    pub requests_per_tenant: Option<QuotaConfig>,
    pub starts_per_prefix: Option<QuotaConfig>,
    pub starts_per_country: Option<QuotaConfig>,
}

impl PartialLimits {
    /// The quotas set, by limit.
    pub fn quotas(&self) -> impl Iterator<Item = (Limit, QuotaConfig)> {
        Limit::ALL
            .into_iter()
            .filter_map(|limit| self.get(limit).map(|q| (limit, q)))
    }

    fn get(&self, limit: Limit) -> Option<QuotaConfig> {
        match limit {
            Limit::StartsPerDestination => self.starts_per_destination,
            Limit::StartsPerIp => self.starts_per_ip,
            Limit::FailedChecksPerDestination => self.failed_checks_per_destination,
            Limit::RequestsPerTenant => self.requests_per_tenant,
            Limit::StartsPerPrefix => self.starts_per_prefix,
            Limit::StartsPerCountry => self.starts_per_country,
        }
    }
}

impl LimitsConfig {
    fn get(&self, limit: Limit) -> QuotaConfig {
        match limit {
            Limit::StartsPerDestination => self.starts_per_destination,
            Limit::StartsPerIp => self.starts_per_ip,
            Limit::FailedChecksPerDestination => self.failed_checks_per_destination,
            Limit::RequestsPerTenant => self.requests_per_tenant,
            Limit::StartsPerPrefix => self.starts_per_prefix,
            Limit::StartsPerCountry => self.starts_per_country,
        }
    }
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
    pub fn get(&self, limit: Limit, tenant: &TenantId) -> QuotaConfig {
        self.tenants
            .get(tenant)
            .and_then(|t| t.get(limit))
            .unwrap_or_else(|| self.server.get(limit))
    }
}

impl From<LimitsConfig> for Quotas {
    fn from(server: LimitsConfig) -> Self {
        Self::new(server, [])
    }
}

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

/// One keyed limiter and the limit it enforces.
#[derive(Debug)]
struct Limiter<K: Hash + Eq + Clone> {
    limit: Limit,
    inner: Keyed<K>,
    clock: LimiterClock,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(limit: Limit, quota: QuotaConfig, clock: &LimiterClock) -> Self {
        let quota = quota.quota().expect("quotas are validated with the config");
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
struct Limiters<K: Hash + Eq + Clone> {
    server: Limiter<K>,
    overrides: Vec<Limiter<K>>,
    /// Index into `overrides`, for the tenants with a quota of their own.
    by_tenant: HashMap<TenantId, usize>,
}

impl<K: Hash + Eq + Clone> Limiters<K> {
    fn new(limit: Limit, quotas: &Quotas, clock: &LimiterClock) -> Self {
        let server = quotas.server.get(limit);
        let mut distinct: Vec<QuotaConfig> = Vec::new();
        let mut by_tenant = HashMap::new();
        for (tenant, own) in &quotas.tenants {
            let Some(quota) = own.get(limit).filter(|&q| q != server) else {
                continue;
            };
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
            server: Limiter::new(limit, server, clock),
            overrides: distinct
                .into_iter()
                .map(|quota| Limiter::new(limit, quota, clock))
                .collect(),
            by_tenant,
        }
    }

    fn take(&self, tenant: &TenantId, key: &K) -> Result<(), RateLimited> {
        let limiter = self
            .by_tenant
            .get(tenant)
            .map_or(&self.server, |&i| &self.overrides[i]);
        limiter.take(key)
    }

    fn all(&self) -> impl Iterator<Item = &Limiter<K>> {
        std::iter::once(&self.server).chain(&self.overrides)
    }

    fn retain_recent(&self) {
        self.all().for_each(|l| l.inner.retain_recent());
    }

    fn len(&self) -> usize {
        self.all().map(|l| l.inner.len()).sum()
    }
}

/// The limits.
///
/// Keys include the tenant, so one tenant's traffic never spends another's
/// budget or reveals what another did with a destination. IPv6 addresses
/// count per /64, the block one subscriber usually holds, so rotating
/// through one's own addresses buys nothing. A tenant may have quotas of
/// its own (`[tenants.NAME.limits]`); the rest are the server's.
#[derive(Debug)]
pub struct RateLimits {
    requests_per_tenant: Limiters<TenantId>,
    budgets: Budgets,
    /// Counts refusals, by tenant and limit.
    metrics: Arc<Metrics>,
}

/// Where the budgets every replica must share live (destinations, IPs,
/// prefixes, countries).
// One per process, never moved around: boxing the larger variant would buy
// nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Budgets {
    Local {
        /// Returnable: a start the least gap refuses gives its cell back.
        starts_per_destination: ReturnableBudget<(TenantId, Destination)>,
        starts_per_ip: Limiters<(TenantId, IpAddr)>,
        failed_checks_per_destination: Limiters<(TenantId, Destination)>,
        starts_per_prefix: ReturnableBudget<(TenantId, String)>,
        starts_per_country: ReturnableBudget<(TenantId, u16)>,
        /// The sends to each prefix that may have gone out, under the
        /// prefix's quota: what a prefix block is decided on.
        prefix_sends: ReturnableBudget<(TenantId, String)>,
        /// The quotas of the returnable budgets, per tenant.
        quotas: Quotas,
    },
    Shared {
        redis: RedisStore,
        quotas: Quotas,
        clock: Clock,
    },
}

impl RateLimits {
    /// Limits kept in this process.
    pub fn new(quotas: &Quotas, clock: Clock) -> Self {
        let limiter_clock = LimiterClock(clock.clone());
        Self::with_budgets(
            quotas,
            clock.clone(),
            Budgets::Local {
                starts_per_destination: ReturnableBudget::new(clock.clone()),
                starts_per_ip: Limiters::new(Limit::StartsPerIp, quotas, &limiter_clock),
                failed_checks_per_destination: Limiters::new(
                    Limit::FailedChecksPerDestination,
                    quotas,
                    &limiter_clock,
                ),
                starts_per_prefix: ReturnableBudget::new(clock.clone()),
                starts_per_country: ReturnableBudget::new(clock.clone()),
                prefix_sends: ReturnableBudget::new(clock.clone()),
                quotas: quotas.clone(),
            },
        )
    }

    /// Limits whose destination and IP budgets every replica sharing
    /// `redis` spends together.
    pub fn shared(quotas: &Quotas, clock: Clock, redis: RedisStore) -> Self {
        Self::with_budgets(
            quotas,
            clock.clone(),
            Budgets::Shared {
                redis,
                quotas: quotas.clone(),
                clock,
            },
        )
    }

    fn with_budgets(quotas: &Quotas, clock: Clock, budgets: Budgets) -> Self {
        Self {
            requests_per_tenant: Limiters::new(
                Limit::RequestsPerTenant,
                quotas,
                &LimiterClock(clock),
            ),
            budgets,
            metrics: Arc::default(),
        }
    }

    /// Counts refusals in `metrics`.
    #[must_use]
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// Counts a refusal, and passes the result on.
    fn counted<T, E>(&self, tenant: &TenantId, result: Result<T, E>) -> Result<T, E>
    where
        E: AsLimited,
    {
        if let Err(refused) = &result
            && let Some(limited) = refused.as_limited()
        {
            self.metrics.rate_limited(tenant, limited.limit.as_str());
        }
        result
    }

    pub fn request(&self, tenant: &TenantId) -> Result<(), RateLimited> {
        self.counted(tenant, self.requests_per_tenant.take(tenant, tenant))
    }

    /// Takes one start from the IP's budget, then the destination's. With
    /// shared budgets the destination's is left to the store, which takes
    /// it in the reservation's own step
    /// ([`crate::store::Store::create`], [`crate::store::Store::reserve_resend`]): its quota comes back, and
    /// dropping it would skip that budget.
    #[must_use = "with shared budgets, the destination's start budget is the store's to take"]
    pub async fn start(
        &self,
        tenant: &TenantId,
        to: &Destination,
        ip: Option<IpAddr>,
    ) -> Result<Option<QuotaConfig>, LimitError> {
        let taken = self.take_start(tenant, to, ip).await;
        self.counted(tenant, taken)
    }

    async fn take_start(
        &self,
        tenant: &TenantId,
        to: &Destination,
        ip: Option<IpAddr>,
    ) -> Result<Option<QuotaConfig>, LimitError> {
        match &self.budgets {
            Budgets::Local {
                starts_per_destination,
                starts_per_ip,
                quotas,
                ..
            } => {
                if let Some(ip) = ip {
                    starts_per_ip.take(tenant, &(tenant.clone(), ip_block(ip)))?;
                }
                let limit = Limit::StartsPerDestination;
                starts_per_destination
                    .take((tenant.clone(), to.clone()), quotas.get(limit, tenant))
                    .map_err(|retry_after| RateLimited { limit, retry_after })?;
                Ok(None)
            }
            Budgets::Shared { quotas, .. } => {
                if let Some(ip) = ip {
                    let block = ip_block(ip).to_string();
                    self.take_shared(Limit::StartsPerIp, tenant, &block).await?;
                }
                Ok(Some(quotas.get(Limit::StartsPerDestination, tenant)))
            }
        }
    }

    /// Gives back the destination's cell [`Self::start`] took, for a start
    /// the least gap refused. With shared budgets the store checks the gap
    /// before it takes the cell, in one step, so there is nothing to give.
    pub fn give_back_start(&self, tenant: &TenantId, to: &Destination) {
        if let Budgets::Local {
            starts_per_destination,
            quotas,
            ..
        } = &self.budgets
        {
            starts_per_destination.give_back(
                &(tenant.clone(), to.clone()),
                quotas.get(Limit::StartsPerDestination, tenant),
            );
        }
    }

    /// A refusal by the destination's start budget that the store took
    /// from itself, counted as [`Self::start`] counts its own.
    pub fn start_refused(&self, tenant: &TenantId, retry_after: Duration) -> RateLimited {
        self.refused_by_store(tenant, Limit::StartsPerDestination, retry_after)
    }

    /// Takes one SMS or voice start from the number prefix's budget, then
    /// the country's (giving the prefix's back if the country's is spent).
    /// Both are budgets other users share: give them back with
    /// [`Self::give_back_phone_start`] when nothing is sent.
    pub async fn phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), LimitError> {
        let taken = self.take_phone_start(tenant, prefix, calling_code).await;
        self.counted(tenant, taken)
    }

    async fn take_phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), LimitError> {
        match &self.budgets {
            Budgets::Local {
                starts_per_prefix,
                starts_per_country,
                quotas,
                ..
            } => {
                let refused = |limit: Limit| {
                    move |retry_after| LimitError::from(RateLimited { limit, retry_after })
                };
                let prefix_quota = quotas.get(Limit::StartsPerPrefix, tenant);
                let prefix_key = (tenant.clone(), prefix.to_owned());
                starts_per_prefix
                    .take(prefix_key.clone(), prefix_quota)
                    .map_err(refused(Limit::StartsPerPrefix))?;
                let country = starts_per_country
                    .take(
                        (tenant.clone(), calling_code),
                        quotas.get(Limit::StartsPerCountry, tenant),
                    )
                    .map_err(refused(Limit::StartsPerCountry));
                if country.is_err() {
                    starts_per_prefix.give_back(&prefix_key, prefix_quota);
                }
                country
            }
            Budgets::Shared { .. } => {
                self.take_shared(Limit::StartsPerPrefix, tenant, prefix)
                    .await?;
                let country = self
                    .take_shared(Limit::StartsPerCountry, tenant, &calling_code.to_string())
                    .await;
                if country.is_err() {
                    self.give_back_shared(Limit::StartsPerPrefix, tenant, prefix)
                        .await?;
                }
                country
            }
        }
    }

    /// Gives back the cells [`Self::phone_start`] took, for a send that did
    /// not happen.
    pub async fn give_back_phone_start(
        &self,
        tenant: &TenantId,
        prefix: &str,
        calling_code: u16,
    ) -> Result<(), StoreError> {
        match &self.budgets {
            Budgets::Local {
                starts_per_prefix,
                starts_per_country,
                quotas,
                ..
            } => {
                starts_per_prefix.give_back(
                    &(tenant.clone(), prefix.to_owned()),
                    quotas.get(Limit::StartsPerPrefix, tenant),
                );
                starts_per_country.give_back(
                    &(tenant.clone(), calling_code),
                    quotas.get(Limit::StartsPerCountry, tenant),
                );
                Ok(())
            }
            Budgets::Shared { .. } => {
                self.give_back_shared(Limit::StartsPerPrefix, tenant, prefix)
                    .await?;
                self.give_back_shared(Limit::StartsPerCountry, tenant, &calling_code.to_string())
                    .await
            }
        }
    }

    /// Counts a send to `prefix` that may have gone out (a provider took
    /// it, or its outcome is unknown), under the prefix's quota. A prefix
    /// is blocked on these, not on the starts its budget refuses: cells
    /// held by starts still waiting on a provider, which may give them
    /// back, must not trip a block.
    pub async fn prefix_sent(&self, tenant: &TenantId, prefix: &str) -> Result<(), StoreError> {
        let limit = Limit::StartsPerPrefix;
        match &self.budgets {
            Budgets::Local {
                prefix_sends,
                quotas,
                ..
            } => {
                // Past the quota, the count stays at its fullest.
                let _ = prefix_sends.take(
                    (tenant.clone(), prefix.to_owned()),
                    quotas.get(limit, tenant),
                );
                Ok(())
            }
            Budgets::Shared {
                redis,
                quotas,
                clock,
            } => redis
                .take(
                    PREFIX_SENDS,
                    tenant,
                    prefix,
                    quotas.get(limit, tenant),
                    clock.now(),
                )
                .await
                .map(|_| ()),
        }
    }

    /// Whether the sends to `prefix` that may have gone out have spent its
    /// quota: the pumping pattern a prefix block is for.
    pub async fn prefix_sends_spent(
        &self,
        tenant: &TenantId,
        prefix: &str,
    ) -> Result<bool, StoreError> {
        let limit = Limit::StartsPerPrefix;
        let wait = match &self.budgets {
            Budgets::Local {
                prefix_sends,
                quotas,
                ..
            } => prefix_sends.wait(
                &(tenant.clone(), prefix.to_owned()),
                quotas.get(limit, tenant),
            ),
            Budgets::Shared {
                redis,
                quotas,
                clock,
            } => {
                redis
                    .wait(
                        PREFIX_SENDS,
                        tenant,
                        prefix,
                        quotas.get(limit, tenant),
                        clock.now(),
                    )
                    .await?
            }
        };
        Ok(!wait.is_zero())
    }

    /// Takes one cell before a code is compared. Taking it first means no
    /// guess can run past the budget, however many checks race; a right
    /// code ends the verification, so in practice the budget is spent by
    /// wrong codes. It spans all of a destination's verifications, so a
    /// fresh start does not reset it.
    pub async fn check(&self, tenant: &TenantId, to: &Destination) -> Result<(), LimitError> {
        let taken = self.take_check(tenant, to).await;
        self.counted(tenant, taken)
    }

    async fn take_check(&self, tenant: &TenantId, to: &Destination) -> Result<(), LimitError> {
        match &self.budgets {
            Budgets::Local {
                failed_checks_per_destination,
                ..
            } => Ok(failed_checks_per_destination.take(tenant, &(tenant.clone(), to.clone()))?),
            Budgets::Shared {
                redis,
                quotas,
                clock,
            } => {
                let limit = Limit::FailedChecksPerDestination;
                let wait = redis
                    .take_failed_check(tenant, to, quotas.get(limit, tenant), clock.now())
                    .await?;
                refused(limit, wait)
            }
        }
    }

    /// Takes one cell of the destination's failed-check budget kept in
    /// this process, for the store to call in the check's own step
    /// ([`crate::store::Store::check_within_budget`]): `Some(wait)` when it
    /// is spent. Only for budgets in this process ([`Self::shared_check_quota`]
    /// is `None`); a refusal is counted by [`Self::check_refused`].
    pub fn take_local_check(&self, tenant: &TenantId, to: &Destination) -> Option<Duration> {
        let Budgets::Local {
            failed_checks_per_destination,
            ..
        } = &self.budgets
        else {
            unreachable!("shared budgets are the store's to take");
        };
        failed_checks_per_destination
            .take(tenant, &(tenant.clone(), to.clone()))
            .err()
            .map(|limited| limited.retry_after)
    }

    /// With shared budgets, the failed-check quota for the store to take
    /// from in the check's own step ([`crate::store::Store::check_within_budget`]);
    /// `None` when the budgets are in this process, and [`Self::check`]
    /// takes from them.
    pub fn shared_check_quota(&self, tenant: &TenantId) -> Option<QuotaConfig> {
        match &self.budgets {
            Budgets::Local { .. } => None,
            Budgets::Shared { quotas, .. } => {
                Some(quotas.get(Limit::FailedChecksPerDestination, tenant))
            }
        }
    }

    /// A refusal by the failed-check budget that the store took from
    /// itself, counted as [`Self::check`] counts its own.
    pub fn check_refused(&self, tenant: &TenantId, retry_after: Duration) -> RateLimited {
        self.refused_by_store(tenant, Limit::FailedChecksPerDestination, retry_after)
    }

    fn refused_by_store(
        &self,
        tenant: &TenantId,
        limit: Limit,
        retry_after: Duration,
    ) -> RateLimited {
        self.metrics.rate_limited(tenant, limit.as_str());
        RateLimited { limit, retry_after }
    }

    /// Takes one cell of `tenant`'s quota for `limit` from the budget in
    /// Redis. The quota travels with each take, so a tenant's own quota
    /// needs nothing more.
    async fn take_shared(
        &self,
        limit: Limit,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<(), LimitError> {
        let Budgets::Shared {
            redis,
            quotas,
            clock,
        } = &self.budgets
        else {
            unreachable!("only called for shared budgets");
        };
        let wait = redis
            .take(
                limit.as_str(),
                tenant,
                subject,
                quotas.get(limit, tenant),
                clock.now(),
            )
            .await?;
        refused(limit, wait)
    }

    /// Returns one cell of `tenant`'s budget for `limit` to Redis.
    async fn give_back_shared(
        &self,
        limit: Limit,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<(), StoreError> {
        let Budgets::Shared {
            redis,
            quotas,
            clock,
        } = &self.budgets
        else {
            unreachable!("only called for shared budgets");
        };
        redis
            .give_back(
                limit.as_str(),
                tenant,
                subject,
                quotas.get(limit, tenant),
                clock.now(),
            )
            .await
    }

    /// Drops limiter state for keys that are back to a full budget, so
    /// memory tracks active keys only. (Shared budgets expire in Redis.)
    pub fn prune(&self) {
        self.requests_per_tenant.retain_recent();
        if let Budgets::Local {
            starts_per_destination,
            starts_per_ip,
            failed_checks_per_destination,
            starts_per_prefix,
            starts_per_country,
            prefix_sends,
            ..
        } = &self.budgets
        {
            starts_per_destination.retain_recent();
            starts_per_ip.retain_recent();
            failed_checks_per_destination.retain_recent();
            starts_per_prefix.retain_recent();
            starts_per_country.retain_recent();
            prefix_sends.retain_recent();
        }
    }

    pub fn tracked_keys(&self) -> usize {
        let local = match &self.budgets {
            Budgets::Local {
                starts_per_destination,
                starts_per_ip,
                failed_checks_per_destination,
                starts_per_prefix,
                starts_per_country,
                prefix_sends,
                ..
            } => {
                starts_per_destination.len()
                    + starts_per_ip.len()
                    + failed_checks_per_destination.len()
                    + starts_per_prefix.len()
                    + starts_per_country.len()
                    + prefix_sends.len()
            }
            Budgets::Shared { .. } => 0,
        };
        self.requests_per_tenant.len() + local
    }
}

/// The name, in Redis, of the count of sends per prefix that
/// [`RateLimits::prefix_sent`] keeps beside the prefix's start budget.
const PREFIX_SENDS: &str = "sends_per_prefix";

/// A shared take's answer: taken, or refused until a cell frees up.
fn refused(limit: Limit, wait: Option<Duration>) -> Result<(), LimitError> {
    match wait {
        None => Ok(()),
        Some(retry_after) => Err(RateLimited { limit, retry_after }.into()),
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

    fn limits(clock: &Clock) -> RateLimits {
        RateLimits::new(&LimitsConfig::default().into(), clock.clone())
    }

    fn phone() -> Destination {
        Destination::parse("+14155550100").expect("valid")
    }

    #[tokio::test]
    async fn starts_per_destination_allow_a_burst_then_one_per_period() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let limits = limits(&clock);
        let tenant = TenantId::default_tenant();
        for _ in 0..5 {
            limits
                .start(&tenant, &phone(), None)
                .await
                .expect("within burst");
        }
        let Err(LimitError::Limited(refused)) = limits.start(&tenant, &phone(), None).await else {
            panic!("burst spent");
        };
        assert_eq!(refused.limit, Limit::StartsPerDestination);
        assert_eq!(refused.retry_after, Duration::from_secs(120));
        clock.advance(Duration::from_secs(120));
        limits
            .start(&tenant, &phone(), None)
            .await
            .expect("one more after the period");
        let other = TenantId::parse("other").expect("valid");
        limits
            .start(&other, &phone(), None)
            .await
            .expect("another tenant has its own budget");
    }

    #[tokio::test]
    async fn a_tenant_quota_replaces_the_servers_for_that_tenant_only() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let strict = TenantId::parse("strict").expect("valid");
        let also_strict = TenantId::parse("also-strict").expect("valid");
        let loose = TenantId::parse("loose").expect("valid");
        let one = QuotaConfig {
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
                (also_strict.clone(), own),
                (loose.clone(), PartialLimits::default()),
            ],
        );
        assert_eq!(quotas.get(Limit::StartsPerDestination, &strict), one);
        assert_eq!(
            quotas.get(Limit::StartsPerIp, &strict),
            LimitsConfig::default().starts_per_ip
        );
        let limits = RateLimits::new(&quotas, clock.clone());
        for tenant in [&strict, &also_strict] {
            limits
                .start(tenant, &phone(), None)
                .await
                .expect("within burst");
            let Err(LimitError::Limited(refused)) = limits.start(tenant, &phone(), None).await
            else {
                panic!("a burst of one is spent");
            };
            assert_eq!(refused.limit, Limit::StartsPerDestination);
            assert_eq!(refused.retry_after, Duration::from_secs(60));
        }
        for _ in 0..5 {
            limits
                .start(&loose, &phone(), None)
                .await
                .expect("the server's burst");
        }
        if let Budgets::Local { starts_per_ip, .. } = &limits.budgets {
            assert!(
                starts_per_ip.overrides.is_empty(),
                "no own quota, no limiter"
            );
        }
    }

    #[tokio::test]
    async fn ipv6_addresses_share_a_budget_per_64() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let limits = limits(&clock);
        let tenant = TenantId::default_tenant();
        for i in 0..20u16 {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().expect("ip");
            let to = Destination::parse(&format!("+1415555{:04}", 100 + i)).expect("valid");
            limits
                .start(&tenant, &to, Some(ip))
                .await
                .expect("within burst");
        }
        let ip: IpAddr = "2001:db8::ffff:1".parse().expect("ip");
        let to = Destination::parse("+14155550999").expect("valid");
        assert!(matches!(
            limits.start(&tenant, &to, Some(ip)).await,
            Err(LimitError::Limited(RateLimited {
                limit: Limit::StartsPerIp,
                ..
            }))
        ));
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

    #[tokio::test]
    async fn pruning_forgets_keys_whose_budget_is_full_again() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let limits = limits(&clock);
        limits
            .start(&TenantId::default_tenant(), &phone(), None)
            .await
            .expect("ok");
        assert!(limits.tracked_keys() > 0);
        clock.advance(Duration::from_secs(3_600));
        limits.prune();
        assert_eq!(limits.tracked_keys(), 0);
    }
}
