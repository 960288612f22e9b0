//! The words of the store port, shared by its callers and both backends:
//! what the operations take (a completed send, a call's key, a block, a
//! check's budget) and give back (a creation, a reservation, a budgeted
//! check, an idempotency record), and how they fail. `Store` (in `store`) dispatches
//! each operation to a backend.

use std::{
    future::Future,
    net::IpAddr,
    time::{Duration, SystemTime},
};

pub use crate::domain::call::CallKey;
use crate::domain::{
    CheckOutcome, CodeHash, Destination, SendAttempt, SendOutcome, TenantId, Verification,
    VerificationId,
    limit::{Limit, Quota, RateLimited},
    verification::{Delivery, SendRefused},
    voice::VoiceCall,
};

/// How long a succeeded start's response is replayed for its idempotency key.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a start holds its idempotency key before a retry may take over,
/// in case the replica running it died. Longer than any send may take.
pub const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is full")]
    Full,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// The result of creating a verification
/// ([`Store::create`](super::Store::create)).
// Returned once and matched at once, as `BudgetedCheck` is: boxing would
// cost every start an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Creation {
    /// The candidate is the verification now, its first send reserved.
    /// `superseded` is the one that was pending for the same tenant,
    /// destination and purpose, and is SUPERSEDED now.
    Created {
        verification: Verification,
        superseded: Option<Verification>,
    },
    /// The destination is blocked after a fraud report
    /// ([`Blocked::Destination`]) until `until`: nothing changed. Decided in
    /// this step, before the least gap, so that a start meets a block where
    /// it meets the gap and the destination's budget.
    Blocked { until: SystemTime },
    /// Too soon after the destination's latest new verification
    /// ([`crate::domain::starts::RecentStarts`]): nothing changed, the
    /// start budget included (it is taken after the gap).
    TooSoon { retry_at: SystemTime },
    /// The destination's start budget is spent: nothing changed.
    Limited(RateLimited),
}

/// The result of asking for a send on a verification
/// ([`Store::reserve_resend`](super::Store::reserve_resend)).
#[derive(Debug)]
pub enum Reservation {
    /// The send may go ahead.
    Granted(Verification),
    /// It may not send now, or ever (not pending).
    Refused {
        verification: Verification,
        reason: SendRefused,
    },
    /// The destination's start budget is spent: nothing changed.
    Limited(RateLimited),
}

/// How a reserved send went.
#[derive(Debug)]
pub struct CompletedSend {
    /// The channel and wording the send used.
    pub delivery: Delivery,
    /// Every provider try, in order.
    pub attempts: Vec<SendAttempt>,
    /// How the send ended.
    pub outcome: SendOutcome,
    /// The hash of the code this send delivers (none for calls that ask
    /// for keys). An accepted send's replaces the stored codes; an unknown
    /// one's is kept beside the last accepted one (the user may hold
    /// either) until the next accepted send; a refused one's is dropped.
    pub new_hash: Option<CodeHash>,
    /// The call a voice send placed.
    pub call: Option<VoiceCall>,
    /// A fallback step's send: once accepted, its code is checked beside
    /// the previous step's (at most two), and a step that delivers none
    /// leaves the previous one alone.
    pub fallback_step: bool,
}

/// A verification with a deadline due: its expiry, for the service to
/// announce (its `expired` event, its call ended), or its next fallback
/// step, for the service to run; then to hand back with
/// [`Store::deadline_handled`](super::Store::deadline_handled).
#[derive(Debug)]
pub struct DueDeadline {
    pub tenant: TenantId,
    pub id: VerificationId,
    /// Redis: the claimed entry of the shared deadline index, released
    /// once handled (a replica that dies first leaves it to another).
    pub(super) claim: Option<DeadlineClaim>,
}

/// An entry of Redis's deadline index, as claimed: its index, itself, and
/// the score the claim gave it.
#[derive(Debug)]
pub(super) struct DeadlineClaim {
    pub(super) index: String,
    pub(super) entry: String,
    pub(super) score: u64,
}

/// What a block holds back: one destination (after a fraud report) or a
/// whole number prefix (after SMS pumping tripped its budget).
#[derive(Debug, Clone, Copy)]
pub enum Blocked<'a> {
    Destination(&'a Destination),
    Prefix(&'a str),
}

impl Blocked<'_> {
    /// One string per subject, kinds kept apart.
    pub fn subject(&self) -> String {
        match self {
            Self::Destination(to) => format!("to:{}", to.as_str()),
            Self::Prefix(prefix) => format!("prefix:{prefix}"),
        }
    }
}

/// What a tenant's safe-list holds: a whole number, or a number prefix
/// (`+` and digits).
#[derive(Debug, Clone, Copy)]
pub enum SafeListed<'a> {
    Number(&'a Destination),
    Prefix(&'a str),
}

/// The result of beginning an idempotent start.
#[derive(Debug)]
pub enum Idempotency {
    /// The key is new (or its earlier holder gave up): go ahead, then
    /// `finish_idempotent` or `abandon_idempotent`.
    Started,
    /// A start with this key succeeded: here is what it answered.
    Replay(Box<Verification>),
    /// A start with this key is still running.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
}

/// The result of
/// [`Store::check_within_budget`](super::Store::check_within_budget).
// Returned once and matched at once: boxing the verification would cost an
// allocation per check for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BudgetedCheck {
    /// A cell was taken and the code compared (or, when not pending,
    /// neither happened).
    Checked(CheckOutcome, Verification),
    /// The destination's budget is spent: nothing changed.
    Limited(RateLimited),
    /// The store cannot take from this verification's budget in the same
    /// step (a Redis record may predate the budget's name): nothing
    /// changed, and the caller takes the cell and checks in separate steps.
    Unbudgeted,
}

/// A digest of everything a start request asks for, to tell a retry from a
/// different request reusing the key.
pub type Fingerprint = [u8; 32];

/// One of a tenant's budgets that a store keeps, so that every replica
/// sharing the store spends from it together: which count, of what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKey<'a> {
    /// A destination's starts or failed checks, kept beside its
    /// verifications (in Redis, in their slot), so the steps that create
    /// and check them take a cell in the same step
    /// ([`Store::create`](super::Store::create),
    /// [`Store::check_within_budget`](super::Store::check_within_budget)).
    Destination(Limit, &'a Destination),
    /// Starts from an end user's address block.
    Ip(IpAddr),
    /// SMS and voice starts to a number prefix.
    Prefix(&'a str),
    /// SMS and voice starts to a country calling code.
    Country(u16),
    /// Sends to a number prefix that may have gone out, under the prefix's
    /// quota: what a prefix block is decided on.
    PrefixSends(&'a str),
    /// One of the tenant's own budgets, across every destination
    /// (`sends_per_tenant`, `starts_per_tenant`, `emails_per_tenant`).
    Tenant(Limit),
}

impl BudgetKey<'_> {
    /// The budget's name, in a store's keys.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Destination(limit, _) => limit.as_str(),
            Self::Ip(_) => Limit::StartsPerIp.as_str(),
            Self::Prefix(_) => Limit::StartsPerPrefix.as_str(),
            Self::Country(_) => Limit::StartsPerCountry.as_str(),
            Self::PrefixSends(_) => "sends_per_prefix",
            Self::Tenant(limit) => limit.as_str(),
        }
    }
}

/// The budgets half of the store port: GCRA budgets that every replica
/// sharing a store spends together (in one process, the memory store's
/// own). The rate limits take from them through this; the quota travels
/// with each call, as a tenant's own may replace the server's.
pub trait BudgetStore: Send + Sync {
    /// Takes one cell of `key`'s budget: `None` when taken, else how long
    /// until one frees up (nothing taken).
    fn take_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<Duration>, StoreError>> + Send;

    /// Takes one cell of each of `cells`, all or none: `None` when all were
    /// taken, else the first that is spent and how long until a cell of
    /// it frees up (nothing taken). On Redis the cells must be of budgets
    /// that share a slot: one tenant's own ([`BudgetKey::Tenant`]), taken
    /// in one script.
    fn take_cells(
        &self,
        tenant: &TenantId,
        cells: &[(BudgetKey<'_>, Quota)],
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<(usize, Duration)>, StoreError>> + Send {
        async move {
            for (i, &(key, quota)) in cells.iter().enumerate() {
                if let Some(wait) = self.take_cell(tenant, key, quota, now).await? {
                    for &(key, quota) in cells[..i].iter().rev() {
                        self.give_back_cell(tenant, key, quota, now).await?;
                    }
                    return Ok(Some((i, wait)));
                }
            }
            Ok(None)
        }
    }

    /// Gives back one cell [`Self::take_cell`] took, for a send that did
    /// not happen.
    fn give_back_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How long until `key`'s budget has a cell (zero: it has one now),
    /// taking nothing.
    fn cell_wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> impl Future<Output = Result<Duration, StoreError>> + Send;
}
