//! A keyed GCRA whose cells can be given back, for the budgets other users
//! share (number prefixes, countries): a start or resend that sends nothing
//! returns its cell, so refused requests cannot spend a range's budget and
//! trip its block. governor's limiters cannot give a cell back; this one
//! mirrors the Redis store's `budget.lua`, take and give-back alike, on the
//! service clock.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use super::quota::QuotaConfig;
use crate::clock::Clock;

/// The quota travels with each take and give-back, so one budget serves
/// keys under different quotas (a tenant's own, the server's).
#[derive(Debug)]
pub(super) struct ReturnableBudget<K> {
    clock: Clock,
    /// Each key's theoretical arrival time: the budget is full again then.
    /// A key past it holds nothing worth keeping ([`Self::retain_recent`]).
    full_at: Mutex<HashMap<K, SystemTime>>,
}

impl<K: Hash + Eq> ReturnableBudget<K> {
    pub(super) fn new(clock: Clock) -> Self {
        Self {
            clock,
            full_at: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one cell for `key`, or says how long until one frees up,
    /// spending nothing.
    pub(super) fn take(&self, key: K, quota: QuotaConfig) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut full_at = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = full_at
            .get(&key)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        let next = tat + quota.period;
        // The burst may hold `burst` cells: the next one is allowed once
        // the arrival time is at most that many periods ahead.
        let allowed_at = next
            .checked_sub(quota.period * quota.burst)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now < allowed_at {
            return Err(allowed_at.duration_since(now).unwrap_or_default());
        }
        full_at.insert(key, next);
        Ok(())
    }

    /// How long until a take for `key` would succeed: zero when one would
    /// now. Takes nothing.
    pub(super) fn wait(&self, key: &K, quota: QuotaConfig) -> Duration {
        let now = self.clock.now();
        let full_at = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = full_at
            .get(key)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        (tat + quota.period)
            .checked_sub(quota.period * quota.burst)
            .and_then(|allowed_at| allowed_at.duration_since(now).ok())
            .unwrap_or_default()
    }

    /// Returns one cell taken for `key`: the budget is as if that take had
    /// not happened (or full, whichever comes first).
    pub(super) fn give_back(&self, key: &K, quota: QuotaConfig) {
        let period = quota.period;
        let now = self.clock.now();
        let mut full_at = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = full_at.get_mut(key) {
            match tat.checked_sub(period).filter(|back| *back > now) {
                Some(back) => *tat = back,
                None => {
                    full_at.remove(key);
                }
            }
        }
    }

    /// Drops the keys whose budget is full again.
    pub(super) fn retain_recent(&self) {
        let now = self.clock.now();
        self.full_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, tat| *tat > now);
    }

    pub(super) fn len(&self) -> usize {
        self.full_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: QuotaConfig = QuotaConfig {
        burst: 3,
        period: Duration::from_secs(60),
    };

    fn clock() -> Clock {
        Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
    }

    #[test]
    fn a_burst_then_one_per_period_as_governor_counts() {
        let clock = clock();
        let budget = ReturnableBudget::new(clock.clone());
        for _ in 0..3 {
            budget.take("+1415555", QUOTA).expect("within the burst");
        }
        assert_eq!(budget.take("+1415555", QUOTA), Err(Duration::from_secs(60)));
        budget.take("+1212555", QUOTA).expect("another key");
        clock.advance(Duration::from_secs(60));
        budget
            .take("+1415555", QUOTA)
            .expect("one more after the period");
    }

    #[test]
    fn a_cell_given_back_can_be_taken_again_and_never_beyond_the_burst() {
        let budget = ReturnableBudget::new(clock());
        for _ in 0..100 {
            budget.take("+1415555", QUOTA).expect("each given back");
            budget.give_back(&"+1415555", QUOTA);
        }
        assert_eq!(budget.len(), 0, "a full budget is not kept");
        for _ in 0..3 {
            budget.take("+1415555", QUOTA).expect("the whole burst");
        }
        for _ in 0..4 {
            budget.give_back(&"+1415555", QUOTA);
        }
        for _ in 0..3 {
            budget.take("+1415555", QUOTA).expect("the burst again");
        }
        assert!(budget.take("+1415555", QUOTA).is_err(), "not more");
        assert_eq!(budget.wait(&"+1415555", QUOTA), Duration::from_secs(60));
        assert_eq!(budget.wait(&"+1212555", QUOTA), Duration::ZERO);
    }
}
