//! The memory store's budgets: every budget of every tenant in GCRA tables
//! ([`BudgetTable`]), under locks of their own so that a take from an IP's
//! or a prefix's budget never waits on the verifications' lock. The steps
//! that take a destination's cell with a verification (create, resend,
//! check) hold the verifications' lock first, then one shard's; nothing
//! takes them the other way round.
//!
//! The budgets are split into shards by key, so the purge, which sweeps
//! them for budgets that are full again, holds one shard at a time: a step
//! waits on at most a sixteenth of the sweep.

use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use crate::{
    domain::{
        Destination, TenantId,
        limit::{BudgetTable, Limit, Quota},
    },
    store::port::BudgetKey,
};

const SHARDS: usize = 16;

type Key = (TenantId, Owned);

#[derive(Debug)]
pub(super) struct Budgets {
    hasher: RandomState,
    shards: [Mutex<BudgetTable<Key>>; SHARDS],
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

/// A [`BudgetKey`] the table can keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owned {
    Destination(Limit, Destination),
    Ip(IpAddr),
    Prefix(String),
    Country(u16),
    PrefixSends(String),
    Tenant(Limit),
}

impl From<BudgetKey<'_>> for Owned {
    fn from(key: BudgetKey<'_>) -> Self {
        match key {
            BudgetKey::Destination(limit, to) => Self::Destination(limit, to.clone()),
            BudgetKey::Ip(block) => Self::Ip(block),
            BudgetKey::Prefix(prefix) => Self::Prefix(prefix.to_owned()),
            BudgetKey::Country(code) => Self::Country(code),
            BudgetKey::PrefixSends(prefix) => Self::PrefixSends(prefix.to_owned()),
            BudgetKey::Tenant(limit) => Self::Tenant(limit),
        }
    }
}

/// A poisoned lock is safe to keep using: each change is one insert.
fn locked(shard: &Mutex<BudgetTable<Key>>) -> MutexGuard<'_, BudgetTable<Key>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Budgets {
    /// The key, and the shard that holds it.
    fn find(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
    ) -> (Key, MutexGuard<'_, BudgetTable<Key>>) {
        let key = (tenant.clone(), Owned::from(key));
        // The modulo keeps the index below SHARDS, whatever usize's width.
        let shard = (self.hasher.hash_one(&key) % SHARDS as u64) as usize;
        (key, locked(&self.shards[shard]))
    }

    /// `None` when a cell was taken, else the wait until one frees up.
    pub(super) fn take(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Option<Duration> {
        let (key, mut table) = self.find(tenant, key);
        table.take(key, quota, now).err()
    }

    pub(super) fn give_back(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) {
        let (key, mut table) = self.find(tenant, key);
        table.give_back(&key, quota, now);
    }

    pub(super) fn wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Duration {
        let (key, table) = self.find(tenant, key);
        table.wait(&key, quota, now)
    }

    pub(super) fn refill(&self, tenant: &TenantId, key: BudgetKey<'_>) {
        let (key, mut table) = self.find(tenant, key);
        table.refill(&key);
    }

    /// Drops the budgets that are full again, one shard at a time.
    pub(super) fn retain_recent(&self, now: SystemTime) {
        for shard in &self.shards {
            locked(shard).retain_recent(now);
        }
    }

    /// The budgets that are not full.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|shard| locked(shard).len()).sum()
    }
}
