//! The words of the store port, shared by its callers and both backends:
//! what the operations take (a completed send, a call's key, a block, a
//! check's budget) and give back (a creation, a reservation, a budgeted
//! check, an idempotency record), and how they fail. `Store` (in `store`) dispatches
//! each operation to a backend.

use std::time::{Duration, SystemTime};

use crate::domain::{
    CheckOutcome, CodeHash, Destination, SendAttempt, Verification,
    verification::{Delivery, SendRefused},
    voice::VoiceCall,
};
use crate::ratelimit::quota::QuotaConfig;

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
    /// Too soon after the destination's latest new verification
    /// ([`crate::domain::starts::RecentStarts`]): nothing changed, the
    /// start budget included (it is taken after the gap).
    TooSoon { retry_at: SystemTime },
    /// The destination's start budget is spent: nothing changed; a cell
    /// frees up after this long.
    Limited { retry_after: Duration },
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
    /// The destination's start budget is spent: nothing changed; a cell
    /// frees up after this long.
    Limited { retry_after: Duration },
}

/// How a reserved send went.
#[derive(Debug)]
pub struct CompletedSend {
    /// The channel and wording the send used.
    pub delivery: Delivery,
    /// Every provider try, in order; the last one decides.
    pub attempts: Vec<SendAttempt>,
    /// The hash of the code this send delivers (none for calls that ask
    /// for keys); it replaces the stored one only if a provider accepted.
    pub new_hash: Option<CodeHash>,
    /// The call a voice send placed.
    pub call: Option<VoiceCall>,
}

/// What a call's webhook presents: the token from its URL and the CallSid
/// the provider sent.
#[derive(Debug, Clone)]
pub struct CallKey {
    pub token: String,
    pub call_sid: String,
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

/// Where a check's cell of the destination's failed-check budget comes
/// from, for
/// [`Store::check_within_budget`](super::Store::check_within_budget).
#[derive(Clone, Copy)]
pub enum CheckBudget<'a> {
    /// Budgets every replica shares in Redis: the store takes a cell under
    /// this quota in the check's own script.
    Shared(QuotaConfig),
    /// Budgets in this process: the store asks this, under its lock, to take
    /// a cell for the verification's destination; `Some(wait)` when the
    /// budget is spent and a cell frees up after `wait`.
    Local(&'a (dyn Fn(&Destination) -> Option<Duration> + Sync)),
}

impl std::fmt::Debug for CheckBudget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared(quota) => f.debug_tuple("Shared").field(quota).finish(),
            Self::Local(_) => f.write_str("Local"),
        }
    }
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
    /// The destination's budget is spent: nothing changed; a cell frees up
    /// after this long.
    Limited(Duration),
    /// The store cannot take from this verification's budget in the same
    /// step (the budgets are not where the store can reach them; a Redis
    /// record may predate the budget's name): nothing changed, and the
    /// caller takes the cell and checks in separate steps.
    Unbudgeted,
}

/// A digest of everything a start request asks for, to tell a retry from a
/// different request reusing the key.
pub type Fingerprint = [u8; 32];
