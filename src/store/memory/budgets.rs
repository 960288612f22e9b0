//! The memory store's budgets: every budget of every tenant in one GCRA
//! table ([`BudgetTable`]), under a lock of its own so that a take from an
//! IP's or a prefix's budget never waits on the verifications' lock. The
//! steps that take a destination's cell with a verification (create,
//! resend, check) hold the verifications' lock first, then this one.

use std::{
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

#[derive(Debug, Default)]
pub(super) struct Budgets {
    table: Mutex<BudgetTable<(TenantId, Owned)>>,
}

/// A [`BudgetKey`] the table can keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owned {
    Destination(Limit, Destination),
    Ip(IpAddr),
    Prefix(String),
    Country(u16),
    PrefixSends(String),
}

impl From<BudgetKey<'_>> for Owned {
    fn from(key: BudgetKey<'_>) -> Self {
        match key {
            BudgetKey::Destination(limit, to) => Self::Destination(limit, to.clone()),
            BudgetKey::Ip(block) => Self::Ip(block),
            BudgetKey::Prefix(prefix) => Self::Prefix(prefix.to_owned()),
            BudgetKey::Country(code) => Self::Country(code),
            BudgetKey::PrefixSends(prefix) => Self::PrefixSends(prefix.to_owned()),
        }
    }
}

impl Budgets {
    /// A poisoned lock is safe to keep using: each change is one insert.
    fn table(&self) -> MutexGuard<'_, BudgetTable<(TenantId, Owned)>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `None` when a cell was taken, else the wait until one frees up.
    pub(super) fn take(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Option<Duration> {
        self.table()
            .take((tenant.clone(), key.into()), quota, now)
            .err()
    }

    pub(super) fn give_back(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) {
        self.table()
            .give_back(&(tenant.clone(), key.into()), quota, now);
    }

    pub(super) fn wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Duration {
        self.table().wait(&(tenant.clone(), key.into()), quota, now)
    }

    /// Drops the budgets that are full again.
    pub(super) fn retain_recent(&self, now: SystemTime) {
        self.table().retain_recent(now);
    }

    /// The budgets that are not full.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table().len()
    }
}
