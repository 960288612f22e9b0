//! Safe-listed numbers and prefixes (a company's own range, a test
//! range): their SMS and voice starts skip the prefix and country budgets
//! and prefix blocks, which guard against SMS pumping across a range; the
//! destination's own limits, its blocks and the fraud screen still hold.
//!
//! The list is the store's (shared by every replica on Redis); each
//! replica reads a tenant's at most every [`FRESH_FOR`] of the service
//! clock, so a change reaches the others within that, and at once the
//! replica that made it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use crate::{
    domain::{Destination, TenantId},
    store::{SafeListed, Store, StoreError},
};

/// How long a replica trusts its copy of a tenant's safe-list.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// A tenant's safe-list as read, and when.
type Copy = (SystemTime, Arc<HashSet<String>>);

/// This replica's copies of the tenants' safe-lists.
#[derive(Debug, Default)]
pub(super) struct SafeListCopies(Mutex<Copies>);

#[derive(Debug, Default)]
struct Copies {
    by_tenant: HashMap<TenantId, Copy>,
    /// Moved on by each change this replica makes: a read begun before
    /// it is not kept after it.
    generation: u64,
}

impl SafeListCopies {
    fn copies(&self) -> std::sync::MutexGuard<'_, Copies> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tenant's copy if it is fresh; else the generation to read
    /// under.
    fn fresh(&self, tenant: &TenantId, now: SystemTime) -> Result<Arc<HashSet<String>>, u64> {
        let copies = self.copies();
        match copies.by_tenant.get(tenant) {
            Some((read_at, list))
                if *read_at <= now
                    && now.duration_since(*read_at).unwrap_or_default() < FRESH_FOR =>
            {
                Ok(Arc::clone(list))
            }
            _ => Err(copies.generation),
        }
    }

    /// Keeps a list read under `generation`, unless a change came since.
    fn keep(
        &self,
        tenant: &TenantId,
        list: Arc<HashSet<String>>,
        now: SystemTime,
        generation: u64,
    ) {
        let mut copies = self.copies();
        if copies.generation == generation {
            copies.by_tenant.insert(tenant.clone(), (now, list));
        }
    }

    /// This replica changed the tenant's list: its copy goes at once.
    pub(super) fn forget(&self, tenant: &TenantId) {
        let mut copies = self.copies();
        copies.generation += 1;
        copies.by_tenant.remove(tenant);
    }
}

impl SafeListCopies {
    /// Whether `to` (a phone number) is on the tenant's safe-list in
    /// `store`, itself or by one of its prefixes; read from this replica's
    /// copy while it is fresh.
    pub(super) async fn contains(
        &self,
        store: &Store,
        tenant: &TenantId,
        to: &Destination,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let list = match self.fresh(tenant, now) {
            Ok(list) => list,
            Err(generation) => {
                let list = Arc::new(store.safe_list(tenant).await?);
                self.keep(tenant, Arc::clone(&list), now, generation);
                list
            }
        };
        if list.is_empty() {
            return Ok(false);
        }
        let member = |entry| store.safe_list_member(tenant, entry);
        if list.contains(&member(SafeListed::Number(to))) {
            return Ok(true);
        }
        let number = to.as_str();
        Ok(
            (2..=number.len())
                .any(|end| list.contains(&member(SafeListed::Prefix(&number[..end])))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_fresh_for_five_seconds_and_a_change_here_outdates_a_read_under_way() {
        let copies = SafeListCopies::default();
        let tenant = TenantId::default_tenant();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let list = || Arc::new(HashSet::from(["p:+14155".to_owned()]));
        let generation = copies.fresh(&tenant, t0).expect_err("none yet");
        copies.keep(&tenant, list(), t0, generation);
        assert!(copies.fresh(&tenant, t0 + Duration::from_secs(4)).is_ok());
        assert!(copies.fresh(&tenant, t0 + FRESH_FOR).is_err());
        assert!(
            copies.fresh(&tenant, t0 - Duration::from_secs(1)).is_err(),
            "a clock that went back"
        );
        // A read begun, then a change here, then the read's answer.
        let generation = copies.fresh(&tenant, t0 + FRESH_FOR).expect_err("stale");
        copies.forget(&tenant);
        copies.keep(&tenant, list(), t0 + FRESH_FOR, generation);
        assert!(
            copies.fresh(&tenant, t0 + FRESH_FOR).is_err(),
            "the outdated read is not kept"
        );
    }
}
