//! The embedded store: everything in one process, for a single instance.
//!
//! One `std::sync::Mutex` guards all of it. Every operation is a few hash
//! lookups with no `.await` while the lock is held, so contention costs less
//! than a lock per map would cost in consistency (creating a verification
//! and indexing it as pending must be one step). Verifications are kept
//! compact ([`record`]) in one table with one deadline queue ([`table`]):
//! at its expiry a verification is settled and announced, after its
//! retention it is dropped. A hard cap on entries keeps memory bounded
//! even under a flood of starts.

mod budgets;
mod record;
mod table;

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;

use self::{
    budgets::Budgets,
    record::{Names, Record, Stamp},
    table::{MAX_RECORDS, Table},
};
use super::{
    feed::{Feed, Subscription},
    port::{
        Blocked, BudgetKey, BudgetedCheck, CompletedSend, Creation, Fingerprint, IDEMPOTENCY_LEASE,
        IDEMPOTENCY_WINDOW, Idempotency, Reservation, StoreError,
    },
};
use crate::domain::{
    CheckOutcome, CodeHash, DeliveryReport, DeliveryStatus, Destination, Policy, Status, TenantId,
    Verification, VerificationId,
    limit::{Budget, Quota},
    starts::RecentStarts,
    verification::SendRefused,
    voice::{KeyOutcome, KeyPress},
};

type VerificationKey = (TenantId, VerificationId);
type IdempotencyKey = (TenantId, String);

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Every tenant's budgets: destinations', addresses', prefixes'...
    budgets: Budgets,
    /// The most verifications (and, separately, idempotency records) held.
    max_entries: usize,
    /// How long a verification stays readable after it expires.
    retention: Duration,
    /// Tells watchers of each change.
    feed: Arc<Feed<VerificationKey>>,
    /// Wakes the expiry timer when a deadline earlier than the one it
    /// sleeps towards is queued.
    deadline_moved: Notify,
}

#[derive(Debug, Default)]
struct State {
    verifications: Table,
    names: Names,
    idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// Destinations blocked after a fraud report, per tenant, until when.
    blocks: HashMap<(TenantId, String), SystemTime>,
    /// Idempotency records and blocks by the time they may be dropped. A
    /// record's time can move later, so a popped entry that is not yet due
    /// is queued again rather than kept in step on every write.
    purge_queue: BTreeSet<(SystemTime, Purgeable)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Purgeable {
    Idempotency(TenantId, String),
    Block(TenantId, String),
}

#[derive(Debug)]
struct IdempotencyRecord {
    fingerprint: Fingerprint,
    state: IdempotencyState,
    expires_at: SystemTime,
    /// Where this record stands in the purge queue, so dropping the record
    /// drops its entry too.
    queued_at: SystemTime,
}

#[derive(Debug)]
enum IdempotencyState {
    InFlight { lease_until: SystemTime },
    Done(Box<Verification>),
}

/// Why a resend was not reserved.
enum Refused {
    Send(SendRefused),
    /// The destination's start budget is spent; a cell frees up after this.
    Limited(Duration),
}

/// What a change to a verification wrote, so that only that is written
/// back and watchers hear of it only if it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Nothing,
    /// The status and the check counter (a check, a cancel, a settled
    /// expiry).
    CheckState,
    Everything,
}

impl MemoryStore {
    pub fn new(max_entries: usize, retention: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            budgets: Budgets::default(),
            max_entries: max_entries.min(MAX_RECORDS),
            retention,
            feed: Arc::default(),
            deadline_moved: Notify::new(),
        }
    }

    pub(super) fn subscribe(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Subscription<VerificationKey> {
        self.feed.subscribe((tenant.clone(), id.clone()))
    }

    /// A panic while the lock was held cannot leave a half-applied
    /// transition (each is computed on a copy before it is written), so a
    /// poisoned lock is safe to keep using.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn create(
        &self,
        mut candidate: Verification,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Creation, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
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
        if table.len() >= self.max_entries {
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
        if let Some(slot) = table.pending(&candidate.tenant, &candidate.to, candidate.purpose) {
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

    pub(super) fn reserve_resend(
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
                Ok(()) => Written::Everything,
                Err(_) if v.status != before => Written::CheckState,
                Err(_) => Written::Nothing,
            };
            (reserved.map_err(Refused::Send), written)
        })?;
        Some(match reserved {
            Ok(()) => Reservation::Granted(v),
            Err(Refused::Send(reason)) => Reservation::Refused {
                verification: v,
                reason,
            },
            Err(Refused::Limited(wait)) => Reservation::Limited(budget.refused(wait)),
        })
    }

    /// Takes one cell of the destination's budget `budget` names, with the
    /// verification's own step: `Some(wait)` when it is spent.
    fn take_destination_cell(
        &self,
        tenant: &TenantId,
        to: &Destination,
        budget: Budget,
        now: SystemTime,
    ) -> Option<Duration> {
        let key = BudgetKey::Destination(budget.limit, to);
        self.budgets.take(tenant, key, budget.quota, now)
    }

    /// Takes one cell of a budget kept apart from any verification.
    pub(super) fn take_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Option<Duration> {
        self.budgets.take(tenant, key, quota, now)
    }

    pub(super) fn give_back_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) {
        self.budgets.give_back(tenant, key, quota, now);
    }

    pub(super) fn cell_wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Duration {
        self.budgets.wait(tenant, key, quota, now)
    }

    /// Runs `change` on the verification `id` names, under the lock, and
    /// writes back what it says it wrote. Whatever leaves the verification
    /// finished also drops its code hash (it can never approve again, so it
    /// is not kept for the retention period) and frees its pending slot.
    /// Watchers hear of every change.
    fn apply<T>(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        change: impl FnOnce(&mut Verification, &mut Record, &mut Names) -> (T, Written),
    ) -> Option<(T, Verification)> {
        let mut guard = self.state();
        let state = &mut *guard;
        let slot = state.verifications.find(tenant, id.to_bits())?;
        let record = state.verifications.get_mut(slot);
        let mut v = record.verification(&state.names);
        let (result, written) = change(&mut v, record, &mut state.names);
        match written {
            Written::Nothing => return Some((result, v)),
            Written::CheckState => record.set_check_state(&v),
            Written::Everything => record.set(&v, &mut state.names),
        }
        if v.status.is_terminal() {
            record.drop_code();
            state.verifications.unindex_pending(slot);
        }
        drop(guard);
        self.feed.notify(&(tenant.clone(), id.clone()));
        Some((result, v))
    }

    pub(super) fn complete_send(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        send: CompletedSend,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let updated = self.apply(tenant, id, |v, record, names| {
            let was_pending = v.status == Status::Pending;
            let accepted = send
                .attempts
                .last()
                .is_some_and(|a| a.status == DeliveryStatus::Accepted);
            v.record_send(send.delivery, send.attempts, send.call, policy, now);
            // The user now has the new send's code (or, after a press-#
            // call, none): swap it in only if a provider took the send and
            // the verification is still open, so a check that approved
            // meanwhile stands and a failed resend keeps the old code.
            if accepted && was_pending && v.status == Status::Pending {
                match send.new_hash {
                    Some(hash) => record.set_code(hash, names),
                    None => record.drop_code(),
                }
            }
            ((), Written::Everything)
        });
        Ok(updated.map(|((), v)| v))
    }

    pub(super) fn check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        now: SystemTime,
    ) -> Result<Option<(CheckOutcome, Verification)>, StoreError> {
        Ok(self.apply(tenant, id, |v, record, names| {
            let before = (v.status, v.checks_remaining);
            let outcome = v.check(record.code_matches(candidates, names), now);
            (outcome, check_state_written(before, v))
        }))
    }

    /// [`Self::check`], first taking one cell of the destination's
    /// failed-check budget (`budget`), in the same step: one lookup where
    /// reading the destination, then checking, takes two. Not pending
    /// (expired included): nothing is taken or written.
    pub(super) fn check_within_budget(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        budget: Budget,
        now: SystemTime,
    ) -> Option<BudgetedCheck> {
        let (checked, v) = self.apply(tenant, id, |v, record, names| {
            let status = v.status_at(now);
            if status.is_terminal() {
                return (Ok(CheckOutcome::NotPending(status)), Written::Nothing);
            }
            if let Some(wait) = self.take_destination_cell(tenant, &v.to, budget, now) {
                return (Err(wait), Written::Nothing);
            }
            let before = (v.status, v.checks_remaining);
            let outcome = v.check(record.code_matches(candidates, names), now);
            (Ok(outcome), check_state_written(before, v))
        })?;
        Some(match checked {
            Ok(outcome) => BudgetedCheck::Checked(outcome, v),
            Err(wait) => BudgetedCheck::Limited(budget.refused(wait)),
        })
    }

    pub(super) fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let updated = self.apply(tenant, id, |v, _, _| {
            let written = if v.settle(now) {
                Written::CheckState
            } else {
                Written::Nothing
            };
            ((), written)
        });
        Ok(updated.map(|((), v)| v))
    }

    pub(super) fn status_and_destination(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Option<(Status, Destination)> {
        let state = self.state();
        let table = &state.verifications;
        let record = table.get(table.find(tenant, id.to_bits())?);
        Some((record.status_at(now), record.to.clone()))
    }

    pub(super) fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Verification, bool)>, StoreError> {
        let updated = self.apply(tenant, id, |v, _, _| {
            let before = (v.status, v.checks_remaining);
            let canceled = v.cancel(now).is_ok();
            (canceled, check_state_written(before, v))
        });
        Ok(updated.map(|(canceled, v)| (v, canceled)))
    }

    pub(super) fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
    ) -> Result<Option<(bool, Verification)>, StoreError> {
        Ok(self.apply(tenant, id, |v, _, _| {
            let changed = v.record_delivery(report);
            let written = if changed {
                Written::Everything
            } else {
                Written::Nothing
            };
            (changed, written)
        }))
    }
    pub(super) fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Result<Idempotency, StoreError> {
        let mut state = self.state();
        let entries = state.idempotency.len();
        let state = &mut *state;
        match state.idempotency.entry((tenant.clone(), key.to_owned())) {
            Entry::Occupied(mut entry) => {
                let record = entry.get_mut();
                if record.expires_at <= now {
                    // Past its window: the key is free again.
                    *record = new_in_flight(fingerprint, now, record.queued_at);
                    return Ok(Idempotency::Started);
                }
                if record.fingerprint != fingerprint {
                    return Ok(Idempotency::Mismatch);
                }
                match &record.state {
                    IdempotencyState::Done(v) => Ok(Idempotency::Replay(v.clone())),
                    IdempotencyState::InFlight { lease_until } if *lease_until > now => {
                        Ok(Idempotency::InFlight)
                    }
                    IdempotencyState::InFlight { .. } => {
                        *record = new_in_flight(fingerprint, now, record.queued_at);
                        Ok(Idempotency::Started)
                    }
                }
            }
            Entry::Vacant(entry) => {
                if entries >= self.max_entries {
                    return Err(StoreError::Full);
                }
                let expires_at = now + IDEMPOTENCY_WINDOW;
                let record = new_in_flight(fingerprint, now, expires_at);
                state.purge_queue.insert((
                    expires_at,
                    Purgeable::Idempotency(tenant.clone(), key.to_owned()),
                ));
                entry.insert(record);
                Ok(Idempotency::Started)
            }
        }
    }

    pub(super) fn finish_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &Verification,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(record) = state.idempotency.get_mut(&(tenant.clone(), key.to_owned())) {
            record.state = IdempotencyState::Done(Box::new(response.clone()));
            record.expires_at = now + IDEMPOTENCY_WINDOW;
        }
        Ok(())
    }

    pub(super) fn abandon_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (tenant.clone(), key.to_owned());
        if let Some(IdempotencyRecord {
            state: IdempotencyState::InFlight { .. },
            queued_at,
            ..
        }) = state.idempotency.get(&key)
        {
            let queued = (
                *queued_at,
                Purgeable::Idempotency(key.0.clone(), key.1.clone()),
            );
            state.purge_queue.remove(&queued);
            state.idempotency.remove(&key);
        }
        Ok(())
    }

    /// Drops the idempotency records and blocks whose time has passed, and
    /// the budgets that are full again.
    /// Verifications go by their own deadlines ([`MemoryStore::expire_due`]).
    pub(super) fn purge(&self, now: SystemTime) {
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
                    state.idempotency.remove(&key);
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
    pub(super) fn next_deadline(&self) -> Option<SystemTime> {
        self.state().verifications.next_deadline().map(Stamp::time)
    }

    /// Resolves when a deadline earlier than every other was queued.
    pub(super) async fn deadline_moved(&self) {
        self.deadline_moved.notified().await;
    }

    /// Works through the deadlines due at `now`: a verification past its
    /// retention is dropped; one whose expiry this is goes back to the
    /// service, which settles it with [`MemoryStore::get`] (telling
    /// watchers) and announces it, as it does for a store that keeps no
    /// deadlines. What a read already settled is announced all the same.
    pub(super) fn expire_due(&self, now: SystemTime) -> Vec<(TenantId, VerificationId)> {
        let mut due = Vec::new();
        let stamp = Stamp::of(now);
        let mut state = self.state();
        let table = &mut state.verifications;
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

    pub(super) fn block(
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

    pub(super) fn blocked_until(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let state = self.state();
        Ok(state
            .blocks
            .get(&(tenant.clone(), what.subject()))
            .copied()
            .filter(|until| *until > now))
    }

    /// Applies keys pressed on a verification's live call, if the webhook's
    /// token and CallSid belong to that call.
    pub(super) fn press(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        press: KeyPress<'_>,
        now: SystemTime,
    ) -> Result<Option<(Option<KeyOutcome>, Verification)>, StoreError> {
        let KeyPress {
            call,
            menu,
            digits,
            max_reprompts,
        } = press;
        Ok(self.apply(tenant, id, |v, _, _| {
            let admitted = v
                .call
                .as_ref()
                .is_some_and(|live| live.admits(&call.token, &call.call_sid));
            if !admitted {
                return (None, Written::Nothing);
            }
            let seen = |v: &Verification| {
                (
                    v.status,
                    v.checks_remaining,
                    v.call.as_ref().map(|c| c.reprompts),
                )
            };
            let before = seen(v);
            let outcome = v.press(menu, digits, max_reprompts, now);
            let written = if seen(v) == before {
                Written::Nothing
            } else {
                Written::Everything
            };
            (Some(outcome), written)
        }))
    }

    /// How many verifications and idempotency records are held.
    pub fn len(&self) -> (usize, usize) {
        let state = self.state();
        (state.verifications.len(), state.idempotency.len())
    }
}

/// What a transition that touches only the status and the check counter
/// wrote: nothing when neither moved.
fn check_state_written(before: (Status, u32), v: &Verification) -> Written {
    if (v.status, v.checks_remaining) == before {
        Written::Nothing
    } else {
        Written::CheckState
    }
}

fn new_in_flight(
    fingerprint: Fingerprint,
    now: SystemTime,
    queued_at: SystemTime,
) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint,
        state: IdempotencyState::InFlight {
            lease_until: now + IDEMPOTENCY_LEASE,
        },
        expires_at: now + IDEMPOTENCY_WINDOW,
        queued_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Channel, DeliveryStatus, Destination, Purpose, SendAttempt, Status,
        limit::{Limit, RateLimited},
        verification::{Delivery, SendRefused},
    };

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    /// A destination's start budget too large to refuse in these tests.
    const STARTS: Budget = Budget {
        limit: Limit::StartsPerDestination,
        quota: Quota {
            burst: 1_000,
            period: Duration::from_secs(1),
        },
    };

    fn candidate(policy: &Policy, to: &str) -> Verification {
        Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse(to).expect("valid"),
            Purpose::PasswordReset,
            Delivery {
                channel: Channel::Sms,
                voice_mode: None,
                locale: None,
            },
            policy,
            T0,
        )
    }

    /// Creates a verification for `to` at `at`, which must succeed.
    fn created(store: &MemoryStore, policy: &Policy, to: &str, at: SystemTime) -> Creation {
        let candidate = Verification {
            created_at: at,
            expires_at: at + policy.code_ttl,
            ..candidate(policy, to)
        };
        let created = store.create(candidate, policy, STARTS, at).expect("room");
        assert!(matches!(created, Creation::Created { .. }), "{created:?}");
        created
    }

    fn new_verification(created: Creation) -> Verification {
        match created {
            Creation::Created { verification, .. } => verification,
            other => panic!("not created: {other:?}"),
        }
    }

    fn resent(store: &MemoryStore, v: &Verification, policy: &Policy, at: SystemTime) {
        match store.reserve_resend(&v.tenant, &v.id, policy, STARTS, at) {
            Some(Reservation::Granted(_)) => {}
            other => panic!("not granted: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_start_supersedes_the_pending_verification_after_the_least_gap() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let first = new_verification(created(&store, &policy, "+14155550100", T0));
        sent(&store, &first, &policy, T0, 1);
        let mut watcher = store.subscribe(&first.tenant, &first.id);

        // Inside the gap: refused, and nothing changed.
        let too_soon = store
            .create(candidate(&policy, "+14155550100"), &policy, STARTS, T0)
            .expect("ok");
        assert!(
            matches!(too_soon, Creation::TooSoon { retry_at } if retry_at == T0 + policy.resend_cooldown),
            "{too_soon:?}"
        );
        record_of(&store, &first, |r| assert_eq!(r.status, Status::Pending));

        let later = T0 + policy.resend_cooldown;
        let Creation::Created {
            verification: second,
            superseded,
        } = created(&store, &policy, "+14155550100", later)
        else {
            unreachable!("checked");
        };
        assert_ne!(second.id, first.id, "a new verification, always");
        let superseded = superseded.expect("the first was pending");
        assert_eq!(
            (superseded.id.clone(), superseded.status),
            (first.id.clone(), Status::Superseded)
        );
        tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("watchers hear of it");
        record_of(&store, &first, |r| assert!(!r.has_code()));
        assert_eq!(
            store
                .check(&first.tenant, &first.id, &[code(1)], later)
                .expect("ok")
                .expect("found")
                .0,
            CheckOutcome::NotPending(Status::Superseded),
            "its code approves nothing"
        );
        // The gap doubles for the next.
        assert!(matches!(
            store.create(
                candidate(&policy, "+14155550100"),
                &policy,
                STARTS,
                later + policy.resend_cooldown
            ),
            Ok(Creation::TooSoon { .. })
        ));
        // Another destination is another run.
        created(&store, &policy, "+14155550101", later);
    }

    #[test]
    fn a_resend_goes_by_id_within_its_wait_and_sends() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let v = new_verification(created(&store, &policy, "+14155550100", T0));
        sent(&store, &v, &policy, T0, 1);
        assert!(matches!(
            store.reserve_resend(&v.tenant, &v.id, &policy, STARTS, T0),
            Some(Reservation::Refused {
                reason: SendRefused::Cooldown { .. },
                ..
            })
        ));
        resent(&store, &v, &policy, T0 + policy.resend_cooldown);
        let other = TenantId::parse("other").expect("valid");
        assert!(
            store
                .reserve_resend(&other, &v.id, &policy, STARTS, T0 + policy.code_ttl)
                .is_none(),
            "another tenant's id is unknown"
        );
        store
            .cancel(&v.tenant, &v.id, T0 + policy.resend_cooldown)
            .expect("ok");
        assert!(matches!(
            store.reserve_resend(&v.tenant, &v.id, &policy, STARTS, T0 + policy.code_ttl),
            Some(Reservation::Refused {
                reason: SendRefused::NotPending(Status::Canceled),
                ..
            })
        ));
    }

    #[test]
    fn the_store_is_bounded_and_purges_after_retention() {
        let policy = Policy::default();
        let store = MemoryStore::new(2, policy.retention);
        created(&store, &policy, "+14155550100", T0);
        created(&store, &policy, "+14155550101", T0);
        assert!(matches!(
            store.create(candidate(&policy, "+14155550102"), &policy, STARTS, T0),
            Err(StoreError::Full)
        ));
        store.expire_due(T0 + policy.code_ttl + policy.retention - Duration::from_secs(1));
        assert_eq!(store.len().0, 2, "kept during retention");
        store.expire_due(T0 + policy.code_ttl + policy.retention);
        assert_eq!(store.len().0, 0, "purged after retention");
        created(
            &store,
            &policy,
            "+14155550102",
            T0 + policy.code_ttl + policy.retention,
        );
    }

    #[test]
    fn a_run_of_starts_is_forgotten_with_its_latest_verification() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        created(&store, &policy, "+14155550100", T0);
        let later = T0 + policy.resend_cooldown;
        created(&store, &policy, "+14155550100", later);
        // A code's lifetime after the latest, the gap is the cooldown again.
        let fresh = later + policy.code_ttl;
        created(&store, &policy, "+14155550100", fresh);
        created(
            &store,
            &policy,
            "+14155550100",
            fresh + policy.resend_cooldown,
        );
        // Purged, the latest verification takes its run along.
        let gone = fresh + policy.resend_cooldown + policy.code_ttl + policy.retention;
        store.expire_due(gone);
        assert_eq!(store.len().0, 0);
        created(&store, &policy, "+14155550100", gone);
        created(
            &store,
            &policy,
            "+14155550100",
            gone + policy.resend_cooldown,
        );
    }

    #[test]
    fn a_code_hash_is_swapped_in_only_by_an_accepted_send() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let v = new_verification(created(&store, &policy, "+14155550100", T0));
        sent(&store, &v, &policy, T0, 1);
        let later = T0 + policy.resend_cooldown;
        resent(&store, &v, &policy, later);
        store
            .complete_send(
                &v.tenant,
                &v.id,
                CompletedSend {
                    delivery: v.delivery.clone(),
                    attempts: vec![SendAttempt {
                        channel: Channel::Sms,
                        status: DeliveryStatus::Failed,
                        provider: "console".into(),
                        at: later,
                        error_reason: None,
                        reference: None,
                        provider_status: None,
                    }],
                    new_hash: None,
                    call: None,
                },
                &policy,
                later,
            )
            .expect("ok");
        let (outcome, v) = store
            .check(&v.tenant, &v.id, &[code(1)], later)
            .expect("ok")
            .expect("found");
        assert_eq!(
            outcome,
            CheckOutcome::Approved,
            "the old code still approves after a failed resend"
        );
        assert_eq!(v.status, Status::Approved);
    }

    fn code(b: u8) -> CodeHash {
        CodeHash {
            key_id: crate::domain::code::KeyId::parse("k1").expect("id"),
            mac: [b; 32],
        }
    }

    fn sent(store: &MemoryStore, v: &Verification, policy: &Policy, at: SystemTime, b: u8) {
        store
            .complete_send(
                &v.tenant,
                &v.id,
                CompletedSend {
                    delivery: v.delivery.clone(),
                    attempts: vec![SendAttempt {
                        channel: Channel::Sms,
                        status: DeliveryStatus::Accepted,
                        provider: "console".into(),
                        at,
                        error_reason: None,
                        reference: None,
                        provider_status: None,
                    }],
                    new_hash: Some(code(b)),
                    call: None,
                },
                policy,
                at,
            )
            .expect("ok")
            .expect("found");
    }

    fn record_of(store: &MemoryStore, v: &Verification, f: impl FnOnce(&Record)) {
        let state = store.state();
        let table = &state.verifications;
        f(table.get(table.find(&v.tenant, v.id.to_bits()).expect("held")));
    }

    #[tokio::test]
    async fn a_verification_expires_at_its_deadline_and_goes_after_its_retention() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let v = new_verification(created(&store, &policy, "+14155550100", T0));
        sent(&store, &v, &policy, T0, 1);
        let expiry = T0 + policy.code_ttl;
        let end = expiry + policy.retention;
        let just = Duration::from_nanos(1);
        assert_eq!(store.next_deadline(), Some(expiry));

        assert!(store.expire_due(expiry - just).is_empty());
        record_of(&store, &v, |r| assert_eq!(r.status, Status::Pending));
        let mut watcher = store.subscribe(&v.tenant, &v.id);
        assert_eq!(
            store.expire_due(expiry),
            vec![(v.tenant.clone(), v.id.clone())]
        );
        // What the service does with each: settle it, which tells watchers.
        let settled = store
            .get(&v.tenant, &v.id, expiry)
            .expect("ok")
            .expect("found");
        assert_eq!(settled.status, Status::Expired);
        tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("watchers are told of the expiry");
        record_of(&store, &v, |r| {
            assert_eq!(r.status, Status::Expired);
            assert!(!r.has_code(), "an expired verification keeps no code hash");
        });
        assert_eq!(store.next_deadline(), Some(end), "then the retention's end");

        assert!(store.expire_due(end - just).is_empty());
        assert_eq!(store.len().0, 1, "readable during retention");
        assert!(store.expire_due(end).is_empty(), "announced once");
        assert_eq!(store.len().0, 0, "dropped after retention");
        assert_eq!(store.next_deadline(), None);
        let state = store.state();
        assert_eq!(
            state.verifications.deadlines(),
            0,
            "no deadline left behind"
        );
    }

    #[test]
    fn a_resend_moves_the_expiry_and_an_expiry_a_read_settled_is_still_announced() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let v = new_verification(created(&store, &policy, "+14155550100", T0));
        sent(&store, &v, &policy, T0, 1);
        let resent_at = T0 + policy.resend_cooldown;
        resent(&store, &v, &policy, resent_at);
        sent(&store, &v, &policy, resent_at, 2);
        let expiry = resent_at + policy.code_ttl;
        assert!(
            store.expire_due(T0 + policy.code_ttl).is_empty(),
            "the first send's expiry has moved"
        );
        assert_eq!(store.next_deadline(), Some(expiry));

        let read = store
            .get(&v.tenant, &v.id, expiry)
            .expect("ok")
            .expect("found");
        assert_eq!(read.status, Status::Expired);
        assert_eq!(
            store.expire_due(expiry),
            vec![(v.tenant.clone(), v.id.clone())]
        );
        assert_eq!(
            store
                .check(&v.tenant, &v.id, &[code(2)], expiry)
                .expect("ok")
                .expect("found")
                .0,
            CheckOutcome::NotPending(Status::Expired)
        );
    }

    #[test]
    fn a_finished_verification_frees_its_destination_and_its_code() {
        let policy = Policy {
            resend_cooldown: Duration::ZERO,
            ..Policy::default()
        };
        let store = MemoryStore::new(10, policy.retention);
        let v = new_verification(created(&store, &policy, "+14155550100", T0));
        sent(&store, &v, &policy, T0, 1);
        let (outcome, approved) = store
            .check(&v.tenant, &v.id, &[code(1)], T0)
            .expect("ok")
            .expect("found");
        assert_eq!(
            (outcome, approved.status),
            (CheckOutcome::Approved, Status::Approved)
        );
        record_of(&store, &v, |r| assert!(!r.has_code()));
        let Creation::Created {
            verification: next,
            superseded,
        } = created(&store, &policy, "+14155550100", T0)
        else {
            unreachable!("checked");
        };
        assert!(superseded.is_none(), "an approved one is not superseded");
        assert_ne!(next.id, v.id);

        // One expired without the timer: the start settles it, and it stays
        // expired rather than superseded.
        sent(&store, &next, &policy, T0, 3);
        let later = T0 + policy.code_ttl;
        let Creation::Created { superseded, .. } = created(&store, &policy, "+14155550100", later)
        else {
            unreachable!("checked");
        };
        assert!(superseded.is_none());
        record_of(&store, &next, |r| {
            assert_eq!(r.status, Status::Expired);
            assert!(!r.has_code());
        });
    }

    #[test]
    fn idempotency_keys_replay_refuse_mismatches_and_free_up_on_abandon() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let t = TenantId::default_tenant();
        assert!(matches!(
            store.begin_idempotent(&t, "k", [1; 32], T0),
            Ok(Idempotency::Started)
        ));
        assert!(matches!(
            store.begin_idempotent(&t, "k", [1; 32], T0),
            Ok(Idempotency::InFlight)
        ));
        assert!(matches!(
            store.begin_idempotent(&t, "k", [2; 32], T0),
            Ok(Idempotency::Mismatch)
        ));
        store.abandon_idempotent(&t, "k").expect("ok");
        assert!(matches!(
            store.begin_idempotent(&t, "k", [1; 32], T0),
            Ok(Idempotency::Started)
        ));
        let v = candidate(&policy, "+14155550100");
        store.finish_idempotent(&t, "k", &v, T0).expect("ok");
        match store.begin_idempotent(
            &t,
            "k",
            [1; 32],
            T0 + IDEMPOTENCY_WINDOW - Duration::from_secs(1),
        ) {
            Ok(Idempotency::Replay(replayed)) => assert_eq!(replayed.id, v.id),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(
            matches!(
                store.begin_idempotent(&t, "k", [2; 32], T0 + IDEMPOTENCY_WINDOW),
                Ok(Idempotency::Started)
            ),
            "a key is free after 24 h"
        );
    }

    #[test]
    fn abandoned_keys_leave_nothing_behind() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let t = TenantId::default_tenant();
        for n in 0..100 {
            let key = format!("failed-{n}");
            assert!(matches!(
                store.begin_idempotent(&t, &key, [1; 32], T0),
                Ok(Idempotency::Started)
            ));
            store.abandon_idempotent(&t, &key).expect("ok");
        }
        let state = store.state();
        assert!(state.idempotency.is_empty());
        assert!(
            state.purge_queue.is_empty(),
            "{} queue entries left",
            state.purge_queue.len()
        );
    }

    #[test]
    fn a_destinations_start_budget_is_taken_after_the_gap_and_forgotten_when_full() {
        let policy = Policy {
            resend_cooldown: Duration::ZERO,
            ..Policy::default()
        };
        let store = MemoryStore::new(100, policy.retention);
        let two = Budget {
            limit: Limit::StartsPerDestination,
            quota: Quota {
                burst: 2,
                period: Duration::from_secs(120),
            },
        };
        for _ in 0..2 {
            let created = store.create(candidate(&policy, "+14155550100"), &policy, two, T0);
            assert!(matches!(created, Ok(Creation::Created { .. })));
        }
        let refused = store.create(candidate(&policy, "+14155550100"), &policy, two, T0);
        let Ok(Creation::Limited(limited)) = refused else {
            panic!("the burst is spent: {refused:?}");
        };
        assert_eq!(
            limited,
            RateLimited {
                limit: Limit::StartsPerDestination,
                retry_after: Duration::from_secs(120),
            }
        );
        let other = store.create(candidate(&policy, "+14155550101"), &policy, two, T0);
        assert!(
            matches!(other, Ok(Creation::Created { .. })),
            "another destination"
        );
        assert_eq!(store.budgets.len(), 2);
        store.purge(T0 + Duration::from_secs(240));
        assert_eq!(store.budgets.len(), 0, "full again, forgotten");
    }
}
