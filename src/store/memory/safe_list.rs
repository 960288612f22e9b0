//! Each tenant's safe-list, in this process, under a lock of its own: the
//! entries as `MemoryStore::safe_list_member` spells them (nothing here
//! outlives the process, so they are kept as they are).

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

use crate::domain::TenantId;

#[derive(Debug, Default)]
pub(super) struct SafeLists(Mutex<HashMap<TenantId, HashSet<String>>>);

impl SafeLists {
    /// Adds (`true`) or removes (`false`) an entry; whether that changed
    /// the list.
    pub(super) fn set(&self, tenant: &TenantId, member: String, listed: bool) -> bool {
        let mut lists = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if listed {
            return lists.entry(tenant.clone()).or_default().insert(member);
        }
        let Some(list) = lists.get_mut(tenant) else {
            return false;
        };
        let removed = list.remove(&member);
        if list.is_empty() {
            lists.remove(tenant);
        }
        removed
    }

    pub(super) fn of(&self, tenant: &TenantId) -> HashSet<String> {
        let lists = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lists.get(tenant).cloned().unwrap_or_default()
    }
}
