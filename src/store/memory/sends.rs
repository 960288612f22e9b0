//! The steps that send: creating a verification with its first send
//! reserved, reserving a resend, and recording how a send went.

use std::time::{Duration, SystemTime};

use super::{MemoryStore, Written, record::Record};
use crate::{
    domain::{
        Destination, Policy, SendOutcome, Status, TenantId, Verification, VerificationId,
        limit::Budget, starts::RecentStarts, verification::SendRefused,
    },
    store::port::{Blocked, BudgetKey, CompletedSend, Creation, Reservation, StoreError},
};

impl MemoryStore {
    /// What [`Self::create`] would refuse a start to `to` with now, read
    /// without writing anything: a block, the least gap, the destination's
    /// budget.
    pub(in crate::store) fn peek_start(
        &self,
        tenant: &TenantId,
        to: &Destination,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Option<Creation> {
        {
            let state = self.state();
            if let Some(until) = state.blocked_until(tenant, Blocked::Destination(to), now) {
                return Some(Creation::Blocked { until });
            }
            let table = &state.verifications;
            let recent = table
                .latest(tenant, to)
                .map(|slot| table.get(slot).recent_starts());
            if let Err(retry_at) = RecentStarts::admit(recent, policy, now) {
                return Some(Creation::TooSoon { retry_at });
            }
        }
        let wait = self.cell_wait(
            tenant,
            BudgetKey::Destination(budget.limit, to),
            budget.quota,
            now,
        );
        (!wait.is_zero()).then(|| Creation::Limited(budget.refused(wait)))
    }

    pub(in crate::store) fn create(
        &self,
        mut candidate: Verification,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Creation, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        // A block first: it refuses where the gap does, with nothing spent.
        if let Some(until) =
            state.blocked_until(&candidate.tenant, Blocked::Destination(&candidate.to), now)
        {
            return Ok(Creation::Blocked { until });
        }
        let table = &mut state.verifications;
        // The destination's run of starts is its latest verification's: a
        // run is forgotten a code's lifetime after its latest start, and at
        // the latest once that verification is purged.
        let recent = table
            .latest(&candidate.tenant, &candidate.to)
            .map(|slot| table.get(slot).recent_starts());
        let started = match RecentStarts::admit(recent, policy, now) {
            Ok(started) => started,
            Err(retry_at) => return Ok(Creation::TooSoon { retry_at }),
        };
        if table.len() >= self.max_entries || table.tenant_len(&candidate.tenant) >= self.per_tenant
        {
            return Err(StoreError::Full);
        }
        // The budget after the gap: a start the gap refuses spends nothing.
        if let Some(wait) =
            self.take_destination_cell(&candidate.tenant, &candidate.to, budget, now)
        {
            return Ok(Creation::Limited(budget.refused(wait)));
        }

        let mut superseded = None;
        let mut settled = None;
        if let Some(slot) =
            table.pending(&candidate.tenant, &candidate.to, candidate.pending_kind())
        {
            let record = table.get_mut(slot);
            let mut v = record.verification(&state.names);
            if v.supersede(now) {
                superseded = Some(v.clone());
            } else {
                // Expired before the timer got to it: settled in the same
                // step, and announced as the timer would.
                settled = Some(v.id.clone());
            }
            record.set_check_state(&v);
            record.drop_code();
            table.unindex_pending(slot);
        }

        candidate
            .reserve_send(policy, now)
            .expect("a new verification may always send once");
        let mut record = Record::new(&candidate, &mut state.names);
        record.set_run(started);
        let (_, earliest) = table.insert(record);
        drop(guard);
        let tenant = &candidate.tenant;
        for id in superseded
            .as_ref()
            .map(|v| &v.id)
            .into_iter()
            .chain(&settled)
        {
            self.feed.notify(&(tenant.clone(), id.clone()));
        }
        if earliest {
            self.deadline_moved.notify_one();
        }
        Ok(Creation::Created {
            verification: candidate,
            superseded,
        })
    }

    pub(in crate::store) fn reserve_resend(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Option<Reservation> {
        let (reserved, v) = self.apply(tenant, id, |v, _, _| {
            // The budget goes first, as for a start: a resend its cooldown
            // refuses has spent its cell too. Not pending: nothing is taken.
            if !v.status_at(now).is_terminal()
                && let Some(wait) = self.take_destination_cell(tenant, &v.to, budget, now)
            {
                return (Err(Refused::Limited(wait)), Written::Nothing);
            }
            let before = v.status;
            let reserved = v.reserve_send(policy, now);
            let written = match reserved {
                Ok(()) => {
                    // The caller took over: no automatic step follows.
                    v.end_fallback();
                    Written::Everything
                }
                Err(_) if v.status != before => Written::CheckState,
                Err(_) => Written::Nothing,
            };
            (reserved.map_err(Refused::Send), written)
        })?;
        Some(reservation(reserved, v, budget))
    }

    /// Claims the fallback step after step `after`, its send reserved as a
    /// resend's (the destination's budget first); a step that may not send
    /// ends the workflow. `None`: no such verification, or the step is not
    /// due (another replica claimed it, the workflow moved on or ended).
    pub(in crate::store) fn reserve_step(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        after: u8,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Option<Reservation> {
        let (reserved, v) = self.apply(tenant, id, |v, _, _| {
            // Settled first, as every transition is (and as resend.lua
            // writes it): an expired verification reads as expired after.
            let settled = v.settle(now);
            if !v.step_due(after, now) {
                return (None, settled_written(settled));
            }
            if let Some(wait) = self.take_destination_cell(tenant, &v.to, budget, now) {
                v.end_fallback();
                return (Some(Err(Refused::Limited(wait))), Written::Everything);
            }
            let reserved = v.reserve_step(policy, now).map_err(Refused::Send);
            (Some(reserved), Written::Everything)
        })?;
        Some(reservation(reserved?, v, budget))
    }

    /// Ends the fallback of the verification `id` names if it still stands
    /// at step `after`. Returns whether it did.
    pub(in crate::store) fn end_fallback(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        after: u8,
        now: SystemTime,
    ) -> bool {
        self.apply(tenant, id, |v, _, _| {
            let settled = v.settle(now);
            let ends = v.step_due(after, now) && v.end_fallback();
            let written = if ends {
                Written::Everything
            } else {
                settled_written(settled)
            };
            (ends, written)
        })
        .is_some_and(|(ended, _)| ended)
    }

    pub(in crate::store) fn complete_send(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        send: CompletedSend,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let updated = self.apply(tenant, id, |v, record, names| {
            let was_pending = v.status == Status::Pending;
            let outcome = send.outcome;
            v.record_send(
                send.delivery,
                send.attempts,
                send.call,
                outcome,
                policy,
                now,
            );
            // Only while the verification is still open, so that a check
            // that approved meanwhile stands. An accepted send's code (or,
            // after a press-# call, none) is the one the user has now; an
            // unknown one's may be, beside the last accepted; a refused
            // resend keeps the old code alone.
            if was_pending && v.status == Status::Pending {
                match (outcome, send.new_hash) {
                    (SendOutcome::Accepted, hash) if send.fallback_step => {
                        record.add_step_code(hash, names);
                    }
                    (SendOutcome::Accepted, Some(hash)) => record.set_code(hash, names),
                    (SendOutcome::Accepted, None) => record.drop_code(),
                    (SendOutcome::Unknown, Some(hash)) => record.set_unconfirmed_code(hash, names),
                    (SendOutcome::Unknown, None) | (SendOutcome::Refused, _) => {}
                }
            }
            ((), Written::Everything)
        });
        Ok(updated.map(|((), v)| v))
    }
}

/// Why a resend was not reserved.
enum Refused {
    Send(SendRefused),
    /// The destination's start budget is spent; a cell frees up after this.
    Limited(Duration),
}

fn reservation(reserved: Result<(), Refused>, v: Verification, budget: Budget) -> Reservation {
    match reserved {
        Ok(()) => Reservation::Granted(v),
        Err(Refused::Send(reason)) => Reservation::Refused {
            verification: v,
            reason,
        },
        Err(Refused::Limited(wait)) => Reservation::Limited(budget.refused(wait)),
    }
}

/// What a step that changed nothing but (perhaps) settling expiry writes.
fn settled_written(settled: bool) -> Written {
    if settled {
        Written::CheckState
    } else {
        Written::Nothing
    }
}
