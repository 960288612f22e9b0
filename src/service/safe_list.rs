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
pub(super) struct SafeListCopies(Mutex<HashMap<TenantId, Copy>>);

impl SafeListCopies {
    fn fresh(&self, tenant: &TenantId, now: SystemTime) -> Option<Arc<HashSet<String>>> {
        let copies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (read_at, list) = copies.get(tenant)?;
        (now.duration_since(*read_at).unwrap_or_default() < FRESH_FOR && *read_at <= now)
            .then(|| Arc::clone(list))
    }

    fn keep(&self, tenant: &TenantId, list: Arc<HashSet<String>>, now: SystemTime) {
        let mut copies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        copies.insert(tenant.clone(), (now, list));
    }

    pub(super) fn forget(&self, tenant: &TenantId) {
        let mut copies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        copies.remove(tenant);
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
            Some(list) => list,
            None => {
                let list = Arc::new(store.safe_list(tenant).await?);
                self.keep(tenant, Arc::clone(&list), now);
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
        Ok((2..number.len()).any(|end| list.contains(&member(SafeListed::Prefix(&number[..end])))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_fresh_for_five_seconds_of_the_service_clock() {
        let copies = SafeListCopies::default();
        let tenant = TenantId::default_tenant();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        copies.keep(&tenant, Arc::new(HashSet::from(["p:+1".to_owned()])), t0);
        assert!(copies.fresh(&tenant, t0 + Duration::from_secs(4)).is_some());
        assert!(copies.fresh(&tenant, t0 + FRESH_FOR).is_none());
        assert!(
            copies.fresh(&tenant, t0 - Duration::from_secs(1)).is_none(),
            "a clock that went back"
        );
        copies.forget(&tenant);
        assert!(copies.fresh(&tenant, t0).is_none());
    }
}
