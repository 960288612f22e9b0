//! The vocabulary of rate limits, named by every side that keeps or
//! enforces a budget: a quota, which limit it is, a refusal, and the GCRA
//! arithmetic of a budget whose cells can be given back.
//!
//! A budget is a generic cell rate algorithm (GCRA) count: `burst` cells
//! at once, then one more every `period`. Its whole state is one time, the
//! theoretical arrival time (TAT), past which the budget is full again.
//! [`BudgetTable`] keeps one per key, on the time it is given; the Redis
//! store's `budget.lua` is the same arithmetic in a script.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, SystemTime},
};

/// A quota: `burst` requests at once, then one more every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub burst: u32,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

/// The largest burst a quota may allow.
pub const MAX_BURST: u32 = 1_000_000_000;
/// The longest period a quota may have. With [`MAX_BURST`], a budget's
/// arithmetic stays far inside what time values hold.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

impl Quota {
    /// Why this quota cannot be enforced: it allows nothing (no cell, or
    /// none refilling), or its burst or period is past what a budget's
    /// arithmetic holds ([`MAX_BURST`], [`MAX_PERIOD`]).
    pub fn problem(self) -> Option<&'static str> {
        if self.burst == 0 || self.period.is_zero() {
            return Some("burst and period must both be above zero");
        }
        if self.burst > MAX_BURST || self.period > MAX_PERIOD {
            return Some("burst must be at most 1000000000 and period at most 366 days");
        }
        None
    }

    pub fn is_valid(self) -> bool {
        self.problem().is_none()
    }
}

/// Which limit refused a request; also the label on its metric and the
/// name of its budget in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    StartsPerDestination,
    StartsPerIp,
    FailedChecksPerDestination,
    RequestsPerTenant,
    StartsPerPrefix,
    StartsPerCountry,
    SendsPerTenant,
    StartsPerTenant,
    EmailsPerTenant,
    /// Live lookups of numbers per tenant (paid calls): never given back,
    /// and when spent, the lookup's failure policy applies.
    LookupsPerTenant,
}

impl Limit {
    pub const ALL: [Self; 10] = [
        Self::StartsPerDestination,
        Self::StartsPerIp,
        Self::FailedChecksPerDestination,
        Self::RequestsPerTenant,
        Self::StartsPerPrefix,
        Self::StartsPerCountry,
        Self::SendsPerTenant,
        Self::StartsPerTenant,
        Self::EmailsPerTenant,
        Self::LookupsPerTenant,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StartsPerDestination => "starts_per_destination",
            Self::StartsPerIp => "starts_per_ip",
            Self::StartsPerPrefix => "starts_per_prefix",
            Self::StartsPerCountry => "starts_per_country",
            Self::FailedChecksPerDestination => "failed_checks_per_destination",
            Self::RequestsPerTenant => "requests_per_tenant",
            Self::SendsPerTenant => "sends_per_tenant",
            Self::StartsPerTenant => "starts_per_tenant",
            Self::EmailsPerTenant => "emails_per_tenant",
            Self::LookupsPerTenant => "lookups_per_tenant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {} reached; retry in {retry_after:?}", limit.as_str())]
pub struct RateLimited {
    pub limit: Limit,
    pub retry_after: Duration,
}

/// A limit and the quota it enforces for one tenant: what a use case hands
/// the store when a cell is taken in the store's own step (a start's
/// destination budget, a check's failed-check budget), so the store's
/// refusal names the limit as the rate limits' own do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: Limit,
    pub quota: Quota,
}

impl Budget {
    /// This budget's refusal: a cell frees up after `retry_after`.
    pub fn refused(self, retry_after: Duration) -> RateLimited {
        RateLimited {
            limit: self.limit,
            retry_after,
        }
    }
}

/// Budgets by key, each a GCRA whose cells can be given back: a start or
/// resend that sends nothing returns its cell, so refused requests cannot
/// spend a budget other users share and trip its block. The quota travels
/// with each call, so one table serves keys under different quotas (a
/// tenant's own, the server's).
#[derive(Debug)]
pub struct BudgetTable<K> {
    /// Each key's theoretical arrival time: the budget is full again then.
    /// A key past it holds nothing worth keeping ([`Self::retain_recent`]).
    full_at: HashMap<K, SystemTime>,
}

impl<K> Default for BudgetTable<K> {
    fn default() -> Self {
        Self {
            full_at: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> BudgetTable<K> {
    /// Spends one cell for `key`, or says how long until one frees up,
    /// spending nothing.
    ///
    /// # Errors
    /// The wait until a cell frees up, when the budget is spent.
    pub fn take(&mut self, key: K, quota: Quota, now: SystemTime) -> Result<(), Duration> {
        let next = self.arrival(&key, now) + quota.period;
        let wait = wait_for(next, quota, now);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.full_at.insert(key, next);
        Ok(())
    }

    /// How long until a take for `key` would succeed: zero when one would
    /// now. Takes nothing.
    pub fn wait(&self, key: &K, quota: Quota, now: SystemTime) -> Duration {
        wait_for(self.arrival(key, now) + quota.period, quota, now)
    }

    /// Returns one cell taken for `key`: the budget is as if that take had
    /// not happened (or full, whichever comes first).
    pub fn give_back(&mut self, key: &K, quota: Quota, now: SystemTime) {
        if let Some(tat) = self.full_at.get_mut(key) {
            match tat.checked_sub(quota.period).filter(|back| *back > now) {
                Some(back) => *tat = back,
                None => {
                    self.full_at.remove(key);
                }
            }
        }
    }

    /// Makes `key`'s budget full again, as an operator lifting what it
    /// held back.
    pub fn refill(&mut self, key: &K) {
        self.full_at.remove(key);
    }

    /// Drops the keys whose budget is full again.
    pub fn retain_recent(&mut self, now: SystemTime) {
        self.full_at.retain(|_, tat| *tat > now);
    }

    /// The keys whose budget is not full.
    pub fn len(&self) -> usize {
        self.full_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.full_at.is_empty()
    }

    /// The key's theoretical arrival time, or `now` if its budget is full.
    fn arrival(&self, key: &K, now: SystemTime) -> SystemTime {
        self.full_at
            .get(key)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now)
    }
}

/// How long until a cell whose arrival would move the TAT to `next` is
/// allowed: the burst may hold `burst` cells, so one is allowed once the
/// TAT is at most that many periods ahead.
fn wait_for(next: SystemTime, quota: Quota, now: SystemTime) -> Duration {
    next.checked_sub(quota.period * quota.burst)
        .and_then(|allowed_at| allowed_at.duration_since(now).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota {
        burst: 3,
        period: Duration::from_secs(60),
    };

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    #[test]
    fn a_burst_then_one_per_period_as_governor_counts() {
        let mut budget = BudgetTable::default();
        let now = start();
        for _ in 0..3 {
            budget
                .take("+1415555", QUOTA, now)
                .expect("within the burst");
        }
        assert_eq!(
            budget.take("+1415555", QUOTA, now),
            Err(Duration::from_secs(60))
        );
        budget.take("+1212555", QUOTA, now).expect("another key");
        let later = now + Duration::from_secs(60);
        budget
            .take("+1415555", QUOTA, later)
            .expect("one more after the period");
    }

    #[test]
    fn a_cell_given_back_can_be_taken_again_and_never_beyond_the_burst() {
        let mut budget = BudgetTable::default();
        let now = start();
        for _ in 0..100 {
            budget
                .take("+1415555", QUOTA, now)
                .expect("each given back");
            budget.give_back(&"+1415555", QUOTA, now);
        }
        assert_eq!(budget.len(), 0, "a full budget is not kept");
        for _ in 0..3 {
            budget
                .take("+1415555", QUOTA, now)
                .expect("the whole burst");
        }
        for _ in 0..4 {
            budget.give_back(&"+1415555", QUOTA, now);
        }
        for _ in 0..3 {
            budget
                .take("+1415555", QUOTA, now)
                .expect("the burst again");
        }
        assert!(budget.take("+1415555", QUOTA, now).is_err(), "not more");
        assert_eq!(
            budget.wait(&"+1415555", QUOTA, now),
            Duration::from_secs(60)
        );
        assert_eq!(budget.wait(&"+1212555", QUOTA, now), Duration::ZERO);
    }

    #[test]
    fn a_quota_allows_something_and_stays_within_what_time_holds() {
        let zero = Quota { burst: 0, ..QUOTA };
        assert!(zero.problem().is_some_and(|p| p.contains("above zero")));
        let huge = Quota {
            burst: u32::MAX,
            period: Duration::from_secs(u64::MAX / 4),
        };
        assert!(huge.problem().is_some_and(|p| p.contains("at most")));
        let largest = Quota {
            burst: MAX_BURST,
            period: MAX_PERIOD,
        };
        assert_eq!(largest.problem(), None);
        // The largest allowed quota's arithmetic does not overflow.
        let mut budget = BudgetTable::default();
        budget.take("+1415555", largest, start()).expect("a cell");
        assert_eq!(budget.wait(&"+1415555", largest, start()), Duration::ZERO);
    }

    #[test]
    fn keys_whose_budget_is_full_again_are_forgotten() {
        let mut budget = BudgetTable::default();
        let now = start();
        budget.take("+1415555", QUOTA, now).expect("a cell");
        budget.retain_recent(now);
        assert_eq!(budget.len(), 1);
        budget.retain_recent(now + QUOTA.period);
        assert!(budget.is_empty());
    }
}
