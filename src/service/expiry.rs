//! Pushes expiry: a timer on the service clock fires at each pending
//! verification's `expires_at`, so watchers see EXPIRED when it happens
//! rather than on their next read. This queue is for stores that keep no
//! deadlines of their own (Redis); the memory store queues its own
//! ([`crate::store::Store::keeps_deadlines`]).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use tokio::sync::Notify;

use crate::domain::{TenantId, VerificationId};

type Due = Reverse<(SystemTime, TenantId, VerificationId)>;

/// Verifications by the time they expire. A resend moves a verification's
/// expiry later and schedules it again; the earlier entry then fires
/// harmlessly, since expiring is decided against the stored `expires_at`.
#[derive(Debug, Default)]
pub struct ExpiryQueue {
    heap: Mutex<BinaryHeap<Due>>,
    /// Wakes the timer when an entry earlier than its current target arrives.
    changed: Notify,
}

impl ExpiryQueue {
    pub fn schedule(&self, at: SystemTime, tenant: TenantId, id: VerificationId) {
        let mut heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = heap.peek().is_none_or(|Reverse((next, ..))| at < *next);
        heap.push(Reverse((at, tenant, id)));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    pub fn next_due(&self) -> Option<SystemTime> {
        let heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        heap.peek().map(|Reverse((at, ..))| *at)
    }

    /// Removes and returns everything due at `now`.
    pub fn pop_due(&self, now: SystemTime) -> Vec<(TenantId, VerificationId)> {
        let mut heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
            if let Some(Reverse((_, tenant, id))) = heap.pop() {
                due.push((tenant, id));
            }
        }
        due
    }

    /// Resolves when an earlier entry may have been scheduled.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
