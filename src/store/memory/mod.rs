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
//!
//! The operations, by what they do: [`sends`] (create, resend, record a
//! send), [`checks`] (reads, checks, cancels, delivery reports, key
//! presses), [`idempotency`], [`retention`] (expiry, purging, blocks); the
//! budgets every replica would share live in [`budgets`], under a lock of
//! their own.

mod budgets;
mod checks;
mod idempotency;
mod lookups;
mod record;
mod retention;
mod safe_list;
mod sends;
mod state;
mod table;

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;

use self::{
    budgets::Budgets,
    record::{Names, Record},
    state::State,
    table::MAX_RECORDS,
};
use super::{
    feed::{Feed, Subscription},
    port::{BudgetKey, SafeListed},
};
use crate::domain::{
    Destination, Status, TenantId, Verification, VerificationId,
    limit::{Budget, Quota},
    lookup::Signals,
};

type VerificationKey = (TenantId, VerificationId);

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Every tenant's budgets: destinations', addresses', prefixes'...
    budgets: Budgets,
    /// Numbers' lookup signals, for `[lookup]`'s cache.
    lookups: lookups::Lookups,
    /// Each tenant's safe-listed numbers and prefixes.
    safe_lists: safe_list::SafeLists,
    /// The most verifications (and, separately, idempotency records) held.
    max_entries: usize,
    /// The most of those one tenant may hold: its share, so no tenant can
    /// fill the store and make every other's starts UNAVAILABLE.
    per_tenant: usize,
    /// How long a verification stays readable after it expires.
    retention: Duration,
    /// Tells watchers of each change.
    feed: Arc<Feed<VerificationKey>>,
    /// Wakes the expiry timer when a deadline earlier than the one it
    /// sleeps towards is queued.
    deadline_moved: Notify,
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
            lookups: lookups::Lookups::default(),
            safe_lists: safe_list::SafeLists::default(),
            max_entries: max_entries.min(MAX_RECORDS),
            per_tenant: max_entries.min(MAX_RECORDS),
            retention,
            feed: Arc::default(),
            deadline_moved: Notify::new(),
        }
    }

    /// Splits the store between `tenants` tenants: each may hold an equal
    /// share of `max_entries` (verifications, and idempotency records).
    #[must_use]
    pub fn shared_by(self, tenants: usize) -> Self {
        Self {
            per_tenant: (self.max_entries / tenants.max(1)).max(1),
            ..self
        }
    }

    pub(super) fn cached_lookup(
        &self,
        tenant: &TenantId,
        to: &Destination,
        now: SystemTime,
    ) -> Option<Signals> {
        self.lookups.get(tenant, to, now)
    }

    pub(super) fn cache_lookup(
        &self,
        tenant: &TenantId,
        to: &Destination,
        signals: Signals,
        until: SystemTime,
        now: SystemTime,
    ) {
        self.lookups
            .put(tenant, to, signals, until, now, self.per_tenant);
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

    /// Cells of several budgets, all or none: `Some((i, wait))` when
    /// `cells[i]` is spent, with the cells before it given back.
    pub(super) fn take_cells(
        &self,
        tenant: &TenantId,
        cells: &[(BudgetKey<'_>, Quota)],
        now: SystemTime,
    ) -> Option<(usize, Duration)> {
        for (i, &(key, quota)) in cells.iter().enumerate() {
            if let Some(wait) = self.budgets.take(tenant, key, quota, now) {
                for &(key, quota) in cells[..i].iter().rev() {
                    self.budgets.give_back(tenant, key, quota, now);
                }
                return Some((i, wait));
            }
        }
        None
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

    /// How the safe-list spells `entry`.
    pub(super) fn safe_list_member(entry: SafeListed<'_>) -> String {
        match entry {
            SafeListed::Number(to) => format!("n:{}", to.as_str()),
            SafeListed::Prefix(prefix) => format!("p:{prefix}"),
        }
    }

    pub(super) fn set_safe_listed(
        &self,
        tenant: &TenantId,
        entry: SafeListed<'_>,
        listed: bool,
    ) -> bool {
        self.safe_lists
            .set(tenant, Self::safe_list_member(entry), listed)
    }

    pub(super) fn safe_list(&self, tenant: &TenantId) -> std::collections::HashSet<String> {
        self.safe_lists.of(tenant)
    }

    pub(super) fn refill_budget(&self, tenant: &TenantId, key: BudgetKey<'_>) {
        self.budgets.refill(tenant, key);
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
        let step_before = record.next_step_at();
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
        let step_after = state.verifications.get(slot).next_step_at();
        let earliest = match step_after {
            Some(at) if step_after != step_before => state.verifications.schedule_step(slot, at),
            _ => false,
        };
        drop(guard);
        if earliest {
            self.deadline_moved.notify_one();
        }
        self.feed.notify(&(tenant.clone(), id.clone()));
        Some((result, v))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{
            Channel, CheckOutcome, CodeHash, DeliveryStatus, Destination, Policy, Purpose,
            SendAttempt, SendOutcome, Status,
            limit::{Limit, RateLimited},
            verification::{Delivery, SendRefused},
        },
        store::port::{
            CompletedSend, Creation, IDEMPOTENCY_WINDOW, Idempotency, Reservation, StoreError,
        },
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
                    outcome: SendOutcome::Refused,
                    new_hash: None,
                    call: None,
                    fallback_step: false,
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

    #[test]
    fn after_a_send_whose_outcome_is_unknown_both_codes_check_until_the_next_accepted_one() {
        let policy = Policy {
            resend_cooldown: Duration::ZERO,
            max_send_attempts: 10,
            ..Policy::default()
        };
        let store = MemoryStore::new(10, policy.retention);
        let checks = |v: &Verification, b: u8| {
            store.apply(&v.tenant, &v.id, |_, record, names| {
                (record.code_matches(&[code(b)], names), Written::Nothing)
            })
        };
        let v = new_verification(created(&store, &policy, "+14155550100", T0));
        completed(&store, &v, &policy, T0, SendOutcome::Unknown, 1);
        assert_eq!(checks(&v, 1).map(|(m, _)| m), Some(true), "a first send");
        resent(&store, &v, &policy, T0);
        completed(&store, &v, &policy, T0, SendOutcome::Accepted, 2);
        resent(&store, &v, &policy, T0);
        completed(&store, &v, &policy, T0, SendOutcome::Unknown, 3);
        resent(&store, &v, &policy, T0);
        completed(&store, &v, &policy, T0, SendOutcome::Unknown, 4);
        let held: Vec<bool> = (1..=4).map(|b| checks(&v, b).expect("found").0).collect();
        assert_eq!(
            held,
            [false, true, false, true],
            "the last accepted code and the latest unknown one"
        );
        resent(&store, &v, &policy, T0);
        completed(&store, &v, &policy, T0, SendOutcome::Refused, 5);
        assert!(
            checks(&v, 4).expect("found").0,
            "a refused send changes nothing"
        );
        resent(&store, &v, &policy, T0);
        completed(&store, &v, &policy, T0, SendOutcome::Accepted, 6);
        let held: Vec<bool> = (1..=6).map(|b| checks(&v, b).expect("found").0).collect();
        assert_eq!(held, [false, false, false, false, false, true]);
        let (outcome, v) = store
            .check(&v.tenant, &v.id, &[code(6)], T0)
            .expect("ok")
            .expect("found");
        assert_eq!(outcome, CheckOutcome::Approved);
        record_of(&store, &v, |r| {
            assert!(!r.has_code(), "finished: none kept")
        });
    }

    #[test]
    fn a_read_aloud_calls_code_is_stored_only_when_a_key_reveals_it() {
        use crate::domain::{
            VoiceMode,
            voice::{CallKey, CallToken, KeyOutcome, KeyPress, Menu, VoiceCall},
        };
        let policy = Policy::default();
        let store = MemoryStore::new(10, policy.retention);
        let candidate = Verification {
            delivery: Delivery {
                channel: Channel::Voice,
                voice_mode: Some(VoiceMode::Code),
                locale: None,
            },
            ..candidate(&policy, "+14155550100")
        };
        let Creation::Created {
            verification: v, ..
        } = store.create(candidate, &policy, STARTS, T0).expect("room")
        else {
            panic!("created");
        };
        let token = CallToken::generate();
        let mut call = VoiceCall::new(&token);
        call.call_sid = Some("CA1".into());
        let placed = CompletedSend {
            delivery: v.delivery.clone(),
            attempts: vec![SendAttempt {
                channel: Channel::Voice,
                status: DeliveryStatus::Accepted,
                provider: "twilio".into(),
                at: T0,
                error_reason: None,
                reference: Some("CA1".into()),
                provider_status: None,
            }],
            outcome: SendOutcome::Accepted,
            // The call went without a code.
            new_hash: None,
            call: Some(call),
            fallback_step: false,
        };
        store
            .complete_send(&v.tenant, &v.id, placed, &policy, T0)
            .expect("ok");
        record_of(&store, &v, |r| {
            assert!(!r.has_code(), "no code before a key")
        });
        let press = |token: &str, step: u8, b: u8| {
            let key = CallKey {
                token: token.to_owned(),
                call_sid: "CA1".into(),
            };
            let press = KeyPress {
                call: &key,
                menu: Menu::Main,
                digits: "#",
                max_reprompts: 2,
                step,
                reveal: &code(b),
            };
            store.press(&v.tenant, &v.id, press, T0).expect("ok")
        };
        let (forged, _) = press(CallToken::generate().as_str(), 0, 1).expect("found");
        assert_eq!(forged, None, "not this call's token");
        record_of(&store, &v, |r| assert!(!r.has_code()));
        let (revealed, _) = press(token.as_str(), 0, 2).expect("found");
        assert_eq!(revealed, Some(KeyOutcome::Reveal));
        // The same signed gather, replayed: the call has moved past it.
        let (replayed, _) = press(token.as_str(), 0, 3).expect("found");
        assert_eq!(replayed, None, "a replayed press is refused");
        let (outcome, _) = store
            .check(&v.tenant, &v.id, &[code(2)], T0)
            .expect("ok")
            .expect("found");
        assert_eq!(
            outcome,
            CheckOutcome::Approved,
            "the code said is the one stored"
        );
    }

    fn code(b: u8) -> CodeHash {
        CodeHash {
            key_id: crate::domain::code::KeyId::parse("k1").expect("id"),
            mac: [b; 32],
        }
    }

    fn sent(store: &MemoryStore, v: &Verification, policy: &Policy, at: SystemTime, b: u8) {
        completed(store, v, policy, at, SendOutcome::Accepted, b);
    }

    fn completed(
        store: &MemoryStore,
        v: &Verification,
        policy: &Policy,
        at: SystemTime,
        outcome: SendOutcome,
        b: u8,
    ) {
        let status = match outcome {
            SendOutcome::Accepted => DeliveryStatus::Accepted,
            SendOutcome::Unknown | SendOutcome::Refused => DeliveryStatus::Failed,
        };
        store
            .complete_send(
                &v.tenant,
                &v.id,
                CompletedSend {
                    delivery: v.delivery.clone(),
                    attempts: vec![SendAttempt {
                        channel: Channel::Sms,
                        status,
                        provider: "console".into(),
                        at,
                        error_reason: None,
                        reference: None,
                        provider_status: None,
                    }],
                    outcome,
                    new_hash: Some(code(b)),
                    call: None,
                    fallback_step: false,
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

    #[test]
    fn each_tenant_holds_at_most_its_share_of_the_store() {
        let policy = Policy::default();
        let store = MemoryStore::new(4, policy.retention).shared_by(2);
        let other = TenantId::parse("other").expect("valid");
        let of = |tenant: &TenantId, to: &str| Verification {
            tenant: tenant.clone(),
            ..candidate(&policy, to)
        };
        let default = TenantId::default_tenant();
        for to in ["+14155550100", "+14155550101"] {
            let created = store.create(of(&default, to), &policy, STARTS, T0);
            assert!(
                matches!(created, Ok(Creation::Created { .. })),
                "{created:?}"
            );
        }
        let full = store.create(of(&default, "+14155550102"), &policy, STARTS, T0);
        assert!(
            matches!(full, Err(StoreError::Full)),
            "its share is spent: {full:?}"
        );
        let created = store.create(of(&other, "+14155550102"), &policy, STARTS, T0);
        assert!(
            matches!(created, Ok(Creation::Created { .. })),
            "the other's is not"
        );
        // Idempotency records are shared out the same way.
        for key in ["a", "b"] {
            let begun = store.begin_idempotent(&default, key, [0; 32], T0);
            assert!(matches!(begun, Ok(Idempotency::Started)), "{begun:?}");
        }
        let full = store.begin_idempotent(&default, "c", [0; 32], T0);
        assert!(matches!(full, Err(StoreError::Full)), "{full:?}");
        let begun = store.begin_idempotent(&other, "c", [0; 32], T0);
        assert!(matches!(begun, Ok(Idempotency::Started)), "{begun:?}");
    }
}
