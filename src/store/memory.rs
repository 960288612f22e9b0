//! The embedded store: everything in one process, for a single instance.
//!
//! One `std::sync::Mutex` guards all maps. Every operation is a few hash
//! lookups with no `.await` while the lock is held, so contention costs less
//! than a lock per map would cost in consistency (creating a verification
//! and indexing it as pending must be one step). An ordered purge queue
//! frees finished entries after their retention, and a hard cap on entries
//! keeps memory bounded even under a flood of starts.

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use super::{
    Blocked, CallKey, CompletedSend, Fingerprint, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW,
    Idempotency, PendingKey, Reservation, StoreError,
    feed::{Feed, Subscription},
};
use crate::domain::{
    CheckOutcome, CodeHash, DeliveryReport, DeliveryStatus, Destination, Policy, Status, TenantId,
    Verification, VerificationId,
    voice::{KeyOutcome, Menu},
};

type VerificationKey = (TenantId, VerificationId);
type IdempotencyKey = (TenantId, String);

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// The most verifications (and, separately, idempotency records) held.
    max_entries: usize,
    /// How long a verification stays readable after it expires.
    retention: Duration,
    /// Tells watchers of each change.
    feed: Arc<Feed<VerificationKey>>,
}

#[derive(Debug, Default)]
struct State {
    /// Boxed: a table holds a pointer per slot, so its spare capacity (up
    /// to half of it after growing) costs 8 bytes a slot, not a record.
    verifications: HashMap<VerificationKey, Box<Record>>,
    pending: HashMap<PendingKey, VerificationId>,
    idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// Destinations blocked after a fraud report, per tenant, until when.
    blocks: HashMap<(TenantId, String), SystemTime>,
    /// Entries by the time they may be dropped. A verification's time can
    /// move later (a resend restarts its validity), so a popped entry that
    /// is not yet due is queued again rather than kept in step on every
    /// write.
    purge_queue: BTreeSet<(SystemTime, Purgeable)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Purgeable {
    Verification(TenantId, VerificationId),
    Idempotency(TenantId, String),
    Block(TenantId, String),
}

#[derive(Debug)]
struct Record {
    verification: Verification,
    /// The hash of the code last accepted by a sender; none before that.
    code_hash: Option<CodeHash>,
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

impl MemoryStore {
    pub fn new(max_entries: usize, retention: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_entries,
            retention,
            feed: Arc::default(),
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
    /// transition (each is computed before it is written), so a poisoned
    /// lock is safe to keep using.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn purge_at(&self, v: &Verification) -> SystemTime {
        v.expires_at + self.retention
    }

    pub(super) fn reserve_send(
        &self,
        mut candidate: Verification,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Reservation, StoreError> {
        let pending_key = PendingKey {
            tenant: candidate.tenant.clone(),
            to: candidate.to.clone(),
            purpose: candidate.purpose,
        };
        let mut state = self.state();
        let state = &mut *state;

        if let Some(id) = state.pending.get(&pending_key) {
            let key = (pending_key.tenant.clone(), id.clone());
            if let Some(record) = state.verifications.get_mut(&key) {
                let v = &mut record.verification;
                v.settle(now);
                if !v.status.is_terminal() {
                    return Ok(match v.reserve_send(policy, now) {
                        Ok(()) => Reservation::Granted {
                            verification: v.clone(),
                            is_new: false,
                        },
                        Err(reason) => Reservation::Refused {
                            verification: v.clone(),
                            reason,
                        },
                    });
                }
            }
            state.pending.remove(&pending_key);
        }

        if state.verifications.len() >= self.max_entries {
            return Err(StoreError::Full);
        }
        candidate
            .reserve_send(policy, now)
            .expect("a new verification may always send once");
        let key = (candidate.tenant.clone(), candidate.id.clone());
        state.pending.insert(pending_key, candidate.id.clone());
        state.purge_queue.insert((
            self.purge_at(&candidate),
            Purgeable::Verification(key.0.clone(), key.1.clone()),
        ));
        state.verifications.insert(
            key,
            Box::new(Record {
                verification: candidate.clone(),
                code_hash: None,
            }),
        );
        Ok(Reservation::Granted {
            verification: candidate,
            is_new: true,
        })
    }

    /// Applies `change` to one record under the lock; watchers hear of it
    /// when the whole verification differs afterwards.
    fn update<T>(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        change: impl FnOnce(&mut Record) -> T,
    ) -> Option<(T, Verification)> {
        self.apply(tenant, id, Verification::clone, change)
    }

    /// Like `update`, for the transitions that touch only the status and
    /// the check counter (expiry on reading, check, cancel): whether
    /// anything changed is read off those two fields instead of comparing
    /// whole clones, which made every read cost two copies of the
    /// verification.
    fn transition<T>(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        change: impl FnOnce(&mut Record) -> T,
    ) -> Option<(T, Verification)> {
        self.apply(tenant, id, |v| (v.status, v.checks_remaining), change)
    }

    /// Applies `change` to one record under the lock, and tells watchers
    /// when `seen` (what of the verification the change may touch) differs
    /// afterwards. Whatever leaves the verification finished also drops its
    /// code hash (it can never approve again, so it is not kept for the
    /// retention period) and frees its pending slot.
    fn apply<T, S: PartialEq>(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        seen: impl Fn(&Verification) -> S,
        change: impl FnOnce(&mut Record) -> T,
    ) -> Option<(T, Verification)> {
        let key = (tenant.clone(), id.clone());
        let mut state = self.state();
        let record = state.verifications.get_mut(&key)?;
        let before = seen(&record.verification);
        let result = change(record);
        let changed = seen(&record.verification) != before;
        let v = record.verification.clone();
        if v.status.is_terminal() {
            record.code_hash = None;
            unindex_pending(&mut state, &v);
        }
        drop(state);
        if changed {
            self.feed.notify(&key);
        }
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
        let updated = self.update(tenant, id, |record| {
            let was_pending = record.verification.status == Status::Pending;
            let accepted = send
                .attempts
                .last()
                .is_some_and(|a| a.status == DeliveryStatus::Accepted);
            record
                .verification
                .record_send(send.delivery, send.attempts, send.call, policy, now);
            // The user now has the new send's code (or, after a press-#
            // call, none): swap it in only if a provider took the send and
            // the verification is still open, so a check that approved
            // meanwhile stands and a failed resend keeps the old code.
            if accepted && was_pending && record.verification.status == Status::Pending {
                record.code_hash = send.new_hash;
            }
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
        Ok(self.transition(tenant, id, |record| {
            let matches = record
                .code_hash
                .as_ref()
                .is_some_and(|stored| candidates.iter().any(|c| stored.matches(c)));
            record.verification.check(matches, now)
        }))
    }

    pub(super) fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let updated = self.transition(tenant, id, |record| record.verification.settle(now));
        Ok(updated.map(|(_, v)| v))
    }

    pub(super) fn status_and_destination(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Option<(Status, Destination)> {
        let key = (tenant.clone(), id.clone());
        let state = self.state();
        let v = &state.verifications.get(&key)?.verification;
        Some((v.status_at(now), v.to.clone()))
    }

    pub(super) fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Verification, bool)>, StoreError> {
        let updated = self.transition(tenant, id, |record| record.verification.cancel(now).is_ok());
        Ok(updated.map(|(canceled, v)| (v, canceled)))
    }

    pub(super) fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
    ) -> Result<Option<(bool, Verification)>, StoreError> {
        Ok(self.update(tenant, id, |record| {
            record.verification.record_delivery(report)
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

    pub(super) fn purge(&self, now: SystemTime) {
        let mut state = self.state();
        let state = &mut *state;
        while let Some(first) = state.purge_queue.first() {
            if first.0 > now {
                break;
            }
            let (_, item) = state.purge_queue.pop_first().expect("just seen");
            match item {
                Purgeable::Verification(tenant, id) => {
                    let key = (tenant, id);
                    // Only read: purging changes no status (reads and
                    // transitions settle expiry; the Redis store's TTLs
                    // change nothing either).
                    let Some(record) = state.verifications.get(&key) else {
                        continue;
                    };
                    let due = record.verification.expires_at + self.retention;
                    if due > now {
                        state
                            .purge_queue
                            .insert((due, Purgeable::Verification(key.0, key.1)));
                        continue;
                    }
                    if let Some(record) = state.verifications.remove(&key) {
                        let v = record.verification;
                        let pending_key = PendingKey {
                            tenant: v.tenant.clone(),
                            to: v.to.clone(),
                            purpose: v.purpose,
                        };
                        if state.pending.get(&pending_key) == Some(&v.id) {
                            state.pending.remove(&pending_key);
                        }
                    }
                }
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn press(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        call: &CallKey,
        menu: Menu,
        digits: &str,
        max_reprompts: u8,
        now: SystemTime,
    ) -> Result<Option<(Option<KeyOutcome>, Verification)>, StoreError> {
        Ok(self.update(tenant, id, |record| {
            let v = &mut record.verification;
            let admitted = v
                .call
                .as_ref()
                .is_some_and(|live| live.admits(&call.token, &call.call_sid));
            admitted.then(|| v.press(menu, digits, max_reprompts, now))
        }))
    }

    /// How many verifications and idempotency records are held.
    pub fn len(&self) -> (usize, usize) {
        let state = self.state();
        (state.verifications.len(), state.idempotency.len())
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

/// Frees the (tenant, destination, purpose) slot once its verification has
/// finished, so the next start creates a new verification.
fn unindex_pending(state: &mut State, v: &Verification) {
    let key = PendingKey {
        tenant: v.tenant.clone(),
        to: v.to.clone(),
        purpose: v.purpose,
    };
    if state.pending.get(&key) == Some(&v.id) {
        state.pending.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Channel, DeliveryStatus, Destination, Purpose, SendAttempt, Status,
        verification::{Delivery, SendRefused},
    };

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

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

    fn granted(r: Reservation) -> (Verification, bool) {
        match r {
            Reservation::Granted {
                verification,
                is_new,
            } => (verification, is_new),
            Reservation::Refused { reason, .. } => panic!("refused: {reason:?}"),
            Reservation::Limited { .. } => panic!("the memory store keeps no budgets"),
        }
    }

    #[test]
    fn a_second_start_for_the_same_destination_reuses_the_pending_verification() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let (first, is_new) = granted(
            store
                .reserve_send(candidate(&policy, "+14155550100"), &policy, T0)
                .expect("ok"),
        );
        assert!(is_new);
        let later = T0 + policy.resend_cooldown;
        let (again, is_new) = granted(
            store
                .reserve_send(candidate(&policy, "+14155550100"), &policy, later)
                .expect("ok"),
        );
        assert!(!is_new);
        assert_eq!(again.id, first.id);
        match store
            .reserve_send(candidate(&policy, "+14155550100"), &policy, later)
            .expect("ok")
        {
            Reservation::Refused {
                reason: SendRefused::Cooldown { .. },
                ..
            } => {}
            other => panic!("expected a cooldown, got {other:?}"),
        }
    }

    #[test]
    fn the_store_is_bounded_and_purges_after_retention() {
        let policy = Policy::default();
        let store = MemoryStore::new(2, policy.retention);
        store
            .reserve_send(candidate(&policy, "+14155550100"), &policy, T0)
            .expect("room");
        store
            .reserve_send(candidate(&policy, "+14155550101"), &policy, T0)
            .expect("room");
        assert!(matches!(
            store.reserve_send(candidate(&policy, "+14155550102"), &policy, T0),
            Err(StoreError::Full)
        ));
        store.purge(T0 + policy.code_ttl + policy.retention - Duration::from_secs(1));
        assert_eq!(store.len().0, 2, "kept during retention");
        store.purge(T0 + policy.code_ttl + policy.retention);
        assert_eq!(store.len().0, 0, "purged after retention");
        store
            .reserve_send(
                candidate(&policy, "+14155550102"),
                &policy,
                T0 + policy.code_ttl + policy.retention,
            )
            .expect("room again");
    }

    #[test]
    fn a_code_hash_is_swapped_in_only_by_an_accepted_send() {
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let (v, _) = granted(
            store
                .reserve_send(candidate(&policy, "+14155550100"), &policy, T0)
                .expect("ok"),
        );
        let hash = |b: u8| CodeHash {
            key_id: crate::domain::code::KeyId::parse("k1").expect("id"),
            mac: [b; 32],
        };
        let attempt = |status| SendAttempt {
            channel: Channel::Sms,
            status,
            provider: "console".into(),
            at: T0,
            error_reason: None,
            reference: None,
            provider_status: None,
        };
        store
            .complete_send(
                &v.tenant,
                &v.id,
                CompletedSend {
                    delivery: v.delivery.clone(),
                    attempts: vec![attempt(DeliveryStatus::Accepted)],
                    new_hash: Some(hash(1)),
                    call: None,
                },
                &policy,
                T0,
            )
            .expect("ok");
        let later = T0 + policy.resend_cooldown;
        granted(
            store
                .reserve_send(candidate(&policy, "+14155550100"), &policy, later)
                .expect("ok"),
        );
        store
            .complete_send(
                &v.tenant,
                &v.id,
                CompletedSend {
                    delivery: v.delivery.clone(),
                    attempts: vec![attempt(DeliveryStatus::Failed)],
                    new_hash: None,
                    call: None,
                },
                &policy,
                later,
            )
            .expect("ok");
        let (outcome, v) = store
            .check(&v.tenant, &v.id, &[hash(1)], later)
            .expect("ok")
            .expect("found");
        assert_eq!(
            outcome,
            CheckOutcome::Approved,
            "the old code still approves after a failed resend"
        );
        assert_eq!(v.status, Status::Approved);
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
}
