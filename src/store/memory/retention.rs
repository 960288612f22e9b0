//! Time: expiries settled and announced, verifications dropped after
//! their retention, idempotency records and blocks dropped when due; and
//! the blocks themselves.

use std::time::SystemTime;

use super::{MemoryStore, record::Stamp, state::Purgeable};
use crate::{
    domain::{Destination, Status, TenantId, Verification, VerificationId},
    store::port::{Blocked, StoreError},
};

impl MemoryStore {
    /// Drops the idempotency records and blocks whose time has passed, and
    /// the budgets that are full again.
    /// Verifications go by their own deadlines ([`MemoryStore::expire_due`]).
    pub(in crate::store) fn purge(&self, now: SystemTime) {
        self.budgets.retain_recent(now);
        let mut state = self.state();
        let state = &mut *state;
        while let Some(first) = state.purge_queue.first() {
            if first.0 > now {
                break;
            }
            let (_, item) = state.purge_queue.pop_first().expect("just seen");
            match item {
                Purgeable::Idempotency(tenant, key) => {
                    let key = (tenant, key);
                    let Some(record) = state.idempotency.get_mut(&key) else {
                        continue;
                    };
                    if record.expires_at > now {
                        let due = record.expires_at;
                        record.queued_at = due;
                        state
                            .purge_queue
                            .insert((due, Purgeable::Idempotency(key.0, key.1)));
                        continue;
                    }
                    state.drop_idempotency(&key);
                }
                Purgeable::Block(tenant, to) => {
                    let key = (tenant, to);
                    match state.blocks.get(&key) {
                        Some(until) if *until > now => {
                            let due = *until;
                            state
                                .purge_queue
                                .insert((due, Purgeable::Block(key.0, key.1)));
                        }
                        Some(_) => {
                            state.blocks.remove(&key);
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// When the next verification deadline falls: an expiry to settle and
    /// announce, or a retention that ends.
    pub(in crate::store) fn next_deadline(&self) -> Option<SystemTime> {
        self.state().verifications.next_deadline().map(Stamp::time)
    }

    /// Resolves when a deadline earlier than every other was queued.
    pub(in crate::store) async fn deadline_moved(&self) {
        self.deadline_moved.notified().await;
    }

    /// Works through the deadlines due at `now`: a verification whose
    /// fallback step is due goes back to the service, which runs the step;
    /// a verification past its retention is dropped; one whose expiry this
    /// is goes back to the service, which settles it with [`MemoryStore::get`] (telling
    /// watchers) and announces it, as it does for a store that keeps no
    /// deadlines. What a read already settled is announced all the same.
    pub(in crate::store) fn expire_due(&self, now: SystemTime) -> Vec<(TenantId, VerificationId)> {
        let mut due = Vec::new();
        let stamp = Stamp::of(now);
        let mut state = self.state();
        let table = &mut state.verifications;
        while let Some(slot) = table.pop_due_step(stamp) {
            let record = table.get(slot);
            // Skipped if it has ended or expired (its expiry is announced
            // on its own deadline), or its step moved.
            if record.status == Status::Pending
                && record.expires_at > stamp
                && record.next_step_at().is_some_and(|at| at <= stamp)
            {
                due.push((record.tenant.clone(), record.verification_id()));
            }
        }
        while let Some(slot) = table.pop_due(stamp) {
            let record = table.get(slot);
            if record.status == Status::Pending && record.expires_at > stamp {
                // A resend moved its expiry later.
                let at = record.expires_at;
                table.schedule(slot, at);
                continue;
            }
            let retained_until = Stamp::of(record.expires_at.time() + self.retention);
            if retained_until <= stamp {
                table.remove(slot);
                continue;
            }
            // This was its expiry: a finished verification's next deadline
            // is the end of its retention.
            if matches!(record.status, Status::Pending | Status::Expired) {
                due.push((record.tenant.clone(), record.verification_id()));
            }
            table.schedule(slot, retained_until);
        }
        due
    }

    /// Lifts a block: `true` when one was in force.
    pub(in crate::store) fn unblock(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> bool {
        let mut state = self.state();
        let until = state.blocks.remove(&(tenant.clone(), what.subject()));
        until.is_some_and(|until| until > now)
    }

    pub(in crate::store) fn block(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        until: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (tenant.clone(), what.subject());
        let until = state.blocks.get(&key).map_or(until, |t| (*t).max(until));
        state.blocks.insert(key.clone(), until);
        state
            .purge_queue
            .insert((until, Purgeable::Block(key.0, key.1)));
        Ok(())
    }

    pub(in crate::store) fn blocked_until(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.state().blocked_until(tenant, what, now))
    }
}

impl MemoryStore {
    /// The destination's newest verifications, newest first, at most
    /// `limit`. The memory store keeps no index for this operators' call:
    /// it reads every record, about 5 ms per million held, under the lock.
    pub(in crate::store) fn recent_of(
        &self,
        tenant: &TenantId,
        to: &Destination,
        limit: usize,
        now: SystemTime,
    ) -> Vec<Verification> {
        let state = self.state();
        let mut found: Vec<Verification> = state
            .verifications
            .records()
            .filter(|r| {
                r.tenant == *tenant && r.to == *to && r.expires_at.time() + self.retention > now
            })
            .map(|r| r.verification(&state.names))
            .collect();
        drop(state);
        found.sort_by_key(|v| std::cmp::Reverse(v.created_at));
        found.truncate(limit);
        for v in &mut found {
            v.status = v.status_at(now);
        }
        found
    }
}
