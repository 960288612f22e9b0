//! The store port: where verifications, code hashes and idempotency records
//! live.
//!
//! Each operation is one atomic step at the level the domain needs (there is
//! a single `check`, never a get-then-put), and takes the current time as an
//! argument so that one clock drives every backend. Backends apply the
//! domain's transitions; they hold no rules of their own.
//!
//! The port is a closed enum rather than a trait object: the set of backends
//! is known, calls stay static, and async methods need no boxing.

pub mod feed;
mod memory;
pub mod port;
pub mod redis;

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use port::{
    Blocked, BudgetKey, BudgetStore, BudgetedCheck, CallKey, CompletedSend, Creation, DueDeadline,
    Fingerprint, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, Idempotency, Reservation, SafeListed,
    StoreError,
};
pub use redis::RedisStore;

use crate::domain::{
    CheckOutcome, CodeHash, DeliveryReport, Destination, Policy, Status, TenantId, Verification,
    VerificationId,
    limit::{Budget, Quota},
    lookup::Signals,
    voice::{KeyOutcome, KeyPress},
};

// From the module that defines it, which imports nothing from `store`.
use self::redis::config::RedisConfig;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Memory,
    /// Shared by every replica; see `[store.redis]`.
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// The most verifications (and idempotency records) the memory store
    /// holds; starts beyond it fail with UNAVAILABLE.
    pub max_entries: usize,
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    pub redis: RedisConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            max_entries: 1_000_000,
            purge_interval: Duration::from_secs(30),
            redis: RedisConfig::default(),
        }
    }
}

impl StoreConfig {
    /// The first problem with these settings: its key and why; the Redis
    /// settings only count with the Redis backend.
    pub fn problem(&self, dev_mode: bool) -> Option<(&'static str, String)> {
        if self.max_entries == 0 {
            return Some(("store.max_entries", "must be above zero".to_owned()));
        }
        if self.purge_interval.is_zero() {
            return Some(("store.purge_interval", "must be above zero".to_owned()));
        }
        if self.backend == StoreBackend::Redis {
            return self.redis.problem(dev_mode);
        }
        None
    }
}

// One store per process, never moved around: boxing the larger variant
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// A watcher's end of a verification's changes: each signal means "re-read".
#[derive(Debug)]
pub enum Changes {
    Memory(feed::Subscription<(TenantId, VerificationId)>),
    Redis(feed::Subscription<String>),
}

impl Changes {
    /// Resolves at the next change (or resync) since the last call.
    pub async fn changed(&mut self) {
        match self {
            Self::Memory(s) => s.changed().await,
            Self::Redis(s) => s.changed().await,
        }
    }
}

impl Store {
    /// Creates `candidate` with its first send reserved, in one step with
    /// what bounds it: a block of the destination after a fraud report,
    /// the least gap since the destination's latest new
    /// verification ([`crate::domain::starts::RecentStarts`]), then one
    /// cell of the destination's start budget (`budget`; a start the gap
    /// refuses spends none). The verification still pending for the same
    /// tenant, destination and purpose, if any, is superseded in the same
    /// step and returned.
    pub async fn create(
        &self,
        candidate: Verification,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Creation, StoreError> {
        match self {
            Self::Memory(m) => m.create(candidate, policy, budget, now),
            Self::Redis(r) => r.create(candidate, policy, budget, now).await,
        }
    }

    /// Reserves a send on the verification `id` names, whose destination
    /// is `to`: refused unless it is pending, past its resend wait and
    /// within its sends. One cell of the destination's start budget
    /// (`budget`) is taken first, in the same step. `None` when there is
    /// no such verification.
    pub async fn reserve_resend(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        to: &Destination,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Reservation>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.reserve_resend(tenant, id, policy, budget, now)),
            Self::Redis(r) => r.reserve_resend(tenant, id, to, policy, budget, now).await,
        }
    }

    /// Claims the fallback step after step `after` of the verification `id`
    /// names, in one step: it must be pending, still at that step, and the
    /// step due; then its send is reserved as [`Store::reserve_resend`]
    /// reserves one, and the workflow moves on to it. A step that may not
    /// send (refused, or the budget spent) ends the workflow. `None`: no
    /// such verification, or the step is not this caller's to run
    /// (another replica claimed it, or the workflow moved on or ended):
    /// nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn reserve_step(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        to: &Destination,
        after: u8,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Reservation>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.reserve_step(tenant, id, after, policy, budget, now)),
            Self::Redis(r) => {
                r.reserve_step(tenant, id, to, after, policy, budget, now)
                    .await
            }
        }
    }

    /// Ends the fallback of the verification `id` names, if its step after
    /// `after` is still due: a gate refused the step before it could be
    /// claimed. Returns whether it ended it.
    pub async fn end_fallback(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        after: u8,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.end_fallback(tenant, id, after, now)),
            Self::Redis(r) => r.end_fallback(tenant, id, after, now).await,
        }
    }

    /// Records a reserved send. When a sender accepted it, the new code's
    /// hash replaces the stored one in the same step.
    pub async fn complete_send(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        send: CompletedSend,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        match self {
            Self::Memory(m) => m.complete_send(tenant, id, send, policy, now),
            Self::Redis(r) => r.complete_send(tenant, id, send, policy, now).await,
        }
    }

    /// Compares the candidates with the stored hash and applies the check,
    /// atomically: concurrent checks of one code approve once.
    pub async fn check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        now: SystemTime,
    ) -> Result<Option<(CheckOutcome, Verification)>, StoreError> {
        match self {
            Self::Memory(m) => m.check(tenant, id, candidates, now),
            Self::Redis(r) => r.check(tenant, id, candidates, now).await,
        }
    }

    /// [`Store::check`], taking one cell from the destination's failed-check
    /// budget first, all in one atomic step: one round trip to Redis where
    /// the separate steps take three, one lookup in memory where they take
    /// two. Not pending: nothing is taken.
    pub async fn check_within_budget(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<BudgetedCheck>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.check_within_budget(tenant, id, candidates, budget, now)),
            Self::Redis(r) => {
                r.check_within_budget(tenant, id, candidates, budget, now)
                    .await
            }
        }
    }

    /// A verification as of `now`, its expiry written (and watchers told)
    /// if it has just passed.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        match self {
            Self::Memory(m) => m.get(tenant, id, now),
            Self::Redis(r) => r.get(tenant, id, now).await,
        }
    }

    /// A verification as of `now`, for a caller to see: expiry shows in
    /// its status, though the store may leave writing it to the expiry
    /// timer (the Redis store then needs no script). [`Store::get`] writes
    /// the expiry and tells watchers.
    pub async fn read(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        match self {
            Self::Memory(m) => m.get(tenant, id, now),
            Self::Redis(r) => r.read(tenant, id, now).await,
        }
    }

    /// A verification's status as of `now` and its destination, without
    /// the rest of it: what a check needs before it takes from the
    /// destination's budget.
    pub async fn status_and_destination(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Status, Destination)>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.status_and_destination(tenant, id, now)),
            Self::Redis(r) => r.status_and_destination(tenant, id, now).await,
        }
    }

    /// Cancels a pending verification. Returns the verification and whether
    /// this call canceled it.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Verification, bool)>, StoreError> {
        match self {
            Self::Memory(m) => m.cancel(tenant, id, now),
            Self::Redis(r) => r.cancel(tenant, id, now).await,
        }
    }

    /// Applies a provider's delivery report. Returns whether it changed
    /// anything, and the verification. A report that the latest send
    /// failed brings the next fallback step forward, to when the resend
    /// wait (of `policy`) allows ([`Verification::hasten_fallback`]).
    pub async fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<(bool, Verification)>, StoreError> {
        match self {
            Self::Memory(m) => m.record_delivery(tenant, id, report, policy, now),
            Self::Redis(r) => r.record_delivery(tenant, id, report, policy, now).await,
        }
    }

    /// Applies keys pressed on the live call. `None` inside: the token or
    /// CallSid is not this verification's live call's.
    pub async fn press(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        press: KeyPress<'_>,
        now: SystemTime,
    ) -> Result<Option<(Option<KeyOutcome>, Verification)>, StoreError> {
        match self {
            Self::Memory(m) => m.press(tenant, id, press, now),
            Self::Redis(r) => r.press(tenant, id, press, now).await,
        }
    }

    /// Blocks new verifications to `to` for the tenant until `until`.
    pub async fn block(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        until: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.block(tenant, what, until),
            Self::Redis(r) => r.block(tenant, what, until, now).await,
        }
    }

    /// Lifts a block before it runs out (an operator's call): `true` when
    /// one was in force.
    pub async fn unblock(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.unblock(tenant, what, now)),
            Self::Redis(r) => r.unblock(tenant, what, now).await,
        }
    }

    /// Makes one of a tenant's budgets full again (an operator's call).
    pub async fn refill_budget(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.refill_budget(tenant, key);
                Ok(())
            }
            Self::Redis(r) => r.refill_budget(tenant, key).await,
        }
    }

    /// Adds (`listed`) or removes an entry of the tenant's safe-list;
    /// whether that changed it.
    pub async fn set_safe_listed(
        &self,
        tenant: &TenantId,
        entry: SafeListed<'_>,
        listed: bool,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.set_safe_listed(tenant, entry, listed)),
            Self::Redis(r) => r.set_safe_listed(tenant, entry, listed).await,
        }
    }

    /// The tenant's safe-list, as [`Store::safe_list_member`] spells its
    /// entries.
    pub async fn safe_list(&self, tenant: &TenantId) -> Result<HashSet<String>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.safe_list(tenant)),
            Self::Redis(r) => r.safe_list(tenant).await,
        }
    }

    /// How the safe-list spells `entry`: on Redis a keyed hash, so the
    /// store holds no number.
    pub fn safe_list_member(&self, tenant: &TenantId, entry: SafeListed<'_>) -> String {
        match self {
            Self::Memory(_) => MemoryStore::safe_list_member(entry),
            Self::Redis(r) => r.safe_list_member(tenant, entry),
        }
    }

    /// The destination's newest verifications (within their retention),
    /// newest first, at most `limit`: an operator's helpdesk listing.
    pub async fn recent_of(
        &self,
        tenant: &TenantId,
        to: &Destination,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<Verification>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.recent_of(tenant, to, limit, now)),
            Self::Redis(r) => r.recent_of(tenant, to, limit, now).await,
        }
    }

    pub async fn blocked_until(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        match self {
            Self::Memory(m) => m.blocked_until(tenant, what, now),
            Self::Redis(r) => r.blocked_until(tenant, what, now).await,
        }
    }

    /// What [`Store::create`] would refuse a start to `to` with now (a
    /// block, the least gap, the destination's budget), read without
    /// writing: a paid lookup is not spent on a start the store step will
    /// refuse. `None`: it would not refuse.
    pub async fn peek_start(
        &self,
        tenant: &TenantId,
        to: &Destination,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Creation>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.peek_start(tenant, to, policy, budget, now)),
            Self::Redis(r) => r.peek_start(tenant, to, policy, budget, now).await,
        }
    }

    /// A number's lookup signals, if cached and not expired.
    pub async fn cached_lookup(
        &self,
        tenant: &TenantId,
        to: &Destination,
        now: SystemTime,
    ) -> Result<Option<Signals>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.cached_lookup(tenant, to, now)),
            Self::Redis(r) => r.cached_lookup(tenant, to).await,
        }
    }

    /// Keeps a number's lookup signals for `ttl`.
    pub async fn cache_lookup(
        &self,
        tenant: &TenantId,
        to: &Destination,
        signals: &Signals,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.cache_lookup(tenant, to, *signals, now + ttl, now);
                Ok(())
            }
            Self::Redis(r) => r.cache_lookup(tenant, to, signals, ttl).await,
        }
    }

    pub async fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Result<Idempotency, StoreError> {
        match self {
            Self::Memory(m) => m.begin_idempotent(tenant, key, fingerprint, now),
            Self::Redis(r) => r.begin_idempotent(tenant, key, fingerprint, now).await,
        }
    }

    pub async fn finish_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &Verification,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.finish_idempotent(tenant, key, response, now),
            Self::Redis(r) => r.finish_idempotent(tenant, key, response, now).await,
        }
    }

    /// Releases a key whose start failed, so a retry can run.
    pub async fn abandon_idempotent(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.abandon_idempotent(tenant, key),
            Self::Redis(r) => r.abandon_idempotent(tenant, key).await,
        }
    }

    /// Drops the idempotency records and blocks that have outlived their
    /// time (verifications go by their deadlines, [`Store::expire_due`]).
    /// Redis does that itself, by TTL, and its scripts treat what is past
    /// retention as gone.
    pub async fn purge(&self, now: SystemTime) {
        match self {
            Self::Memory(m) => m.purge(now),
            Self::Redis(_) => {}
        }
    }

    /// When the store's next deadline falls: the memory store's earliest
    /// expiry, fallback step or end of retention, Redis's next read of its shared
    /// deadline index (`redis::deadlines`; at once while a scan is under
    /// way).
    pub fn next_deadline(&self) -> Option<SystemTime> {
        match self {
            Self::Memory(m) => m.next_deadline(),
            Self::Redis(r) => Some(r.next_deadline()),
        }
    }

    /// Resolves when the store queued a deadline earlier than all others
    /// (never on Redis, which scans on a schedule).
    pub async fn deadline_moved(&self) {
        match self {
            Self::Memory(m) => m.deadline_moved().await,
            Self::Redis(_) => std::future::pending().await,
        }
    }

    /// Works through the store's deadlines due at `now` (settling expiries,
    /// dropping what is past retention; on Redis, claiming the due entries
    /// of the next bucket of this replica's share of the index) and returns
    /// the verifications that reached their expiry or a fallback step, for
    /// the service to announce or run and then to hand back with
    /// [`Store::deadline_handled`].
    ///
    /// # Errors
    /// When Redis cannot renew this replica's share: the next scan tries
    /// again.
    pub async fn expire_due(&self, now: SystemTime) -> Result<Vec<DueDeadline>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m
                .expire_due(now)
                .into_iter()
                .map(|(tenant, id)| DueDeadline {
                    tenant,
                    id,
                    claim: None,
                })
                .collect()),
            Self::Redis(r) => r.expire_due(now).await,
        }
    }

    /// This replica stops: Redis passes its share of the deadline index to
    /// the others at once.
    pub async fn stop_keeping_deadlines(&self) {
        if let Self::Redis(r) = self {
            r.leave_deadlines().await;
        }
    }

    /// `due` was handled (its expiry announced, its fallback step run):
    /// Redis removes its entry from the index (unless its deadline moved
    /// since, as a step moves it). One not handed back is claimed again
    /// once its claim runs out.
    pub async fn deadline_handled(&self, due: &DueDeadline) {
        if let (Self::Redis(r), Some(claim)) = (self, &due.claim)
            && let Err(error) = r.release(claim).await
        {
            tracing::warn!(%error, verification = %due.id, "could not release a handled deadline; it may come up again");
        }
    }

    /// A fresh id for a verification of `to`. Redis ids carry the shard of
    /// their destination, so the id alone finds its keys.
    pub fn new_id(&self, tenant: &TenantId, to: &Destination) -> VerificationId {
        match self {
            Self::Memory(_) => VerificationId::generate(),
            Self::Redis(r) => r.new_id(tenant, to),
        }
    }

    /// Follows a verification's changes, whoever makes them. Subscribe
    /// before reading the current state, so no change falls between the
    /// two.
    pub async fn subscribe(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<Changes, StoreError> {
        match self {
            Self::Memory(m) => Ok(Changes::Memory(m.subscribe(tenant, id))),
            Self::Redis(r) => r.subscribe(tenant, id).await.map(Changes::Redis),
        }
    }

    pub async fn is_ready(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(r) => r.is_ready().await,
        }
    }
}

impl BudgetStore for Store {
    async fn take_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<Option<Duration>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.take_cell(tenant, key, quota, now)),
            Self::Redis(r) => r.take_cell(tenant, key, quota, now).await,
        }
    }

    async fn take_cells(
        &self,
        tenant: &TenantId,
        cells: &[(BudgetKey<'_>, Quota)],
        now: SystemTime,
    ) -> Result<Option<(usize, Duration)>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.take_cells(tenant, cells, now)),
            Self::Redis(r) => r.take_cells(tenant, cells, now).await,
        }
    }

    async fn give_back_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.give_back_cell(tenant, key, quota, now);
                Ok(())
            }
            Self::Redis(r) => r.give_back_cell(tenant, key, quota, now).await,
        }
    }

    async fn cell_wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<Duration, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.cell_wait(tenant, key, quota, now)),
            Self::Redis(r) => r.cell_wait(tenant, key, quota, now).await,
        }
    }
}

/// The service and its rate limits share one store.
impl<S: BudgetStore> BudgetStore for std::sync::Arc<S> {
    fn take_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<Duration>, StoreError>> + Send {
        (**self).take_cell(tenant, key, quota, now)
    }

    fn take_cells(
        &self,
        tenant: &TenantId,
        cells: &[(BudgetKey<'_>, Quota)],
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<(usize, Duration)>, StoreError>> + Send {
        (**self).take_cells(tenant, cells, now)
    }

    fn give_back_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).give_back_cell(tenant, key, quota, now)
    }

    fn cell_wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> impl Future<Output = Result<Duration, StoreError>> + Send {
        (**self).cell_wait(tenant, key, quota, now)
    }
}
