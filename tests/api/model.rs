//! Model-based test of the public API. Random sequences of starts,
//! resends, checks with the latest code, an older code or a wrong one,
//! cancels, gets and clock moves run against the real service over gRPC
//! and against a small reference model written from the docs alone
//! (docs/security.md "Approval", docs/configuration.md `[code]` and
//! `[limits.*]`, the README's error table). The model shares no code with
//! `src/domain`. After every step both must agree on the gRPC status code,
//! `approved`, and the verification's id, status, channel, purpose,
//! destination, creation and expiry times, attempt counters and number of
//! send attempts; RESOURCE_EXHAUSTED must carry the `RetryInfo` the model
//! expects and FAILED_PRECONDITION must name the status. Whatever the
//! model says, no verification is ever approved twice, a new verification
//! never reuses an id, and every accepted send (and nothing else) puts one
//! message in an outbox.
//!
//! It runs on the memory store (one app) and on two Redis-backed replicas
//! sharing one redis-server and one clock, each step sent to a replica
//! picked at random (sweeps read through the other replica). Each case gets
//! fresh apps and a fresh clock (and an empty Redis).
//!
//! On Redis, steps also rotate the HMAC key, one replica at a time as a
//! rolling update does: the replica is replaced by one a step further along
//! docs/security.md's procedure (stage the new key as a previous key, make
//! it active, drop the old one), while the other replica may lag behind or
//! run ahead. The memory store keeps verifications in the process, so a
//! rotation there is a restart that loses them all, by design; its rotation
//! steps do nothing.
//!
//! The model's rules:
//! - A start always makes a new verification, with a new id, and the one
//!   pending for the same destination and purpose becomes SUPERSEDED. It is
//!   RESOURCE_EXHAUSTED within the least gap after the destination's latest
//!   new verification, whatever its purpose (`resend_cooldown`, doubled
//!   with each new verification in a row, at most three times; a run is
//!   forgotten once `ttl` (or the gap, if longer) has passed since its
//!   latest; `RetryInfo`: what is left of it).
//! - A resend goes by id: same id, new code, the validity window restarts.
//!   It is RESOURCE_EXHAUSTED within the resend wait of the latest send
//!   (`resend_cooldown`, doubled with each resend, at most three times;
//!   `RetryInfo`: what is left of it) and once `max_send_attempts` sends
//!   were made (until the verification expires); FAILED_PRECONDITION naming
//!   the status when it is not pending.
//! - A code is valid for `ttl` after its send: at `expires_at` the
//!   verification is EXPIRED, whether or not anything looked at it.
//! - A check of a pending verification first takes a cell of its
//!   destination's `failed_checks_per_destination` budget (across purposes
//!   and verifications; a GCRA budget of `burst` cells, one back every
//!   `period`); with none left it is RESOURCE_EXHAUSTED ("rate limit
//!   failed_checks_per_destination reached") and changes nothing. Then the
//!   latest code approves, where the replica's key ring holds the key that
//!   hashed it (the active key of the replica that sent it); any other code
//!   (an older one included, or the latest where its key is unknown) is OK
//!   with `approved: false` and one attempt fewer, and the last attempt
//!   moves it to MAX_ATTEMPTS_REACHED.
//! - Checking or cancelling a verification that is not pending is
//!   FAILED_PRECONDITION naming its status, and takes no budget; an unknown
//!   id is NOT_FOUND.
//! - A verification stays readable for `retention` after its `expires_at`;
//!   then the purge (on a real-time interval) may drop it at any moment, so
//!   from then on the model also accepts NOT_FOUND, but once NOT_FOUND it
//!   stays so.
//!
//! The attempt limits are low (3 checks, 3 sends) and the failed-check
//! budget small, so that sequences reach them; the other rate limits are
//! set out of the way.

use std::{
    collections::HashSet,
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config as RunnerConfig, TestCaseError, TestRunner},
};
use tonic::Code;
use verifyd::{
    clock::Clock,
    config::Config,
    proto::{self, VerificationStatus},
    secret::Secret,
    store::StoreBackend,
};

use crate::{
    helpers::{TestApp, retry_after, spawn, test_clock, test_config, use_redis},
    redis_server::RedisServer,
};

const DESTINATIONS: [&str; 3] = ["+14155550170", "+14155550171", "+14155550172"];
const PURPOSES: [proto::Purpose; 2] = [proto::Purpose::PasswordReset, proto::Purpose::Enrollment];
/// `code.ttl` and `code.resend_cooldown` (the defaults, set explicitly) and
/// `code.retention` (short, so that sequences outlive it), in seconds.
const TTL: u64 = 600;
const COOLDOWN: u64 = 30;

/// The least time from a send to the next after `sends` sends: the
/// cooldown, doubled with each resend, at most three times (the docs'
/// 30 s, 1 min, 2 min, 4 min).
fn wait_after(sends: u32) -> u64 {
    COOLDOWN << sends.saturating_sub(1).min(3)
}
const RETENTION: u64 = 900;
const MAX_CHECKS: u32 = 3;
const MAX_SENDS: u32 = 3;
const CASES: u32 = 32;
const MAX_STEPS: usize = 25;
/// `limits.failed_checks_per_destination`: a burst of 3 comparisons per
/// destination (one verification's worth), then one more every 10
/// minutes, so that sequences spend it and see it come back.
const FAILED_CHECKS_BURST: u64 = 3;
const FAILED_CHECKS_PERIOD: u64 = 600;
/// The other rate limits: far more than any case uses.
const NO_LIMIT: u32 = 100_000;
/// HMAC keys `k0`, `k1`, `k2`, in rotation order.
const KEYS: [&str; 3] = [
    "model-test-hmac-key-k0-0123456789abcdef",
    "model-test-hmac-key-k1-fedcba9876543210",
    "model-test-hmac-key-k2-00112233445566778",
];
/// The furthest step of the rotation procedure a replica reaches: `k2`
/// active, `k1` dropped.
const LAST_ROTATION_STEP: usize = 6;

/// The key ring at a step of the rotation procedure, as indexes into
/// `KEYS`: the active key and the previous ones. Each rotation is three
/// steps: the next key staged as a previous key, then made active with the
/// old one kept, then the old one dropped.
fn key_ring(step: usize) -> (usize, Vec<usize>) {
    let key = step / 3;
    match step % 3 {
        0 => (key, vec![]),
        1 => (key, vec![key + 1]),
        _ => (key + 1, vec![key]),
    }
}

/// Whether a replica at rotation step `step` knows the key `key`.
fn ring_holds(step: usize, key: usize) -> bool {
    let (active, previous) = key_ring(step);
    active == key || previous.contains(&key)
}

/// One step. A `usize` operand picks a verification the model knows of,
/// modulo how many there are (in order of creation).
#[derive(Debug, Clone)]
enum Op {
    /// (destination, purpose).
    Start(usize, usize),
    /// A resend of a verification, by its id.
    Resend(usize),
    /// Advances the clock by the resend cooldown, then resends, so that
    /// sequences reach the send limit.
    ResendLater(usize),
    /// The verification's latest code.
    CheckLatest(usize),
    /// (v, back): an older code of the verification (one that differs
    /// from the latest), or a wrong code when it has none.
    CheckOlder(usize, usize),
    /// (v, seed): a six-digit code that is not the latest.
    CheckWrong(usize, u32),
    /// An id nobody issued.
    CheckUnknown(u128),
    Cancel(usize),
    Get(usize),
    /// GetVerification on every verification the model knows of.
    Sweep,
    /// Seconds.
    Advance(u64),
    /// Replaces the replica with one this many steps further along the key
    /// rotation (Redis only): rolled once, or twice before anything else
    /// happens.
    Rotate(usize),
}

/// An operation and the replica it goes to (modulo how many there are).
#[derive(Debug, Clone)]
struct Step(usize, Op);

/// Mostly the first destination and purpose, so that resends reach the
/// cooldown and the send limit.
fn start() -> impl Strategy<Value = Op> {
    let to = prop_oneof![2 => Just(0), 1 => 0..DESTINATIONS.len()];
    let purpose = prop_oneof![2 => Just(0), 1 => 0..PURPOSES.len()];
    (to, purpose).prop_map(|(to, purpose)| Op::Start(to, purpose))
}

fn op() -> impl Strategy<Value = Op> {
    let v = || 0..6usize;
    prop_oneof![
        4 => start(),
        3 => v().prop_map(Op::Resend),
        3 => v().prop_map(Op::ResendLater),
        4 => v().prop_map(Op::CheckLatest),
        3 => (v(), 0..3usize).prop_map(|(v, back)| Op::CheckOlder(v, back)),
        4 => (v(), any::<u32>()).prop_map(|(v, seed)| Op::CheckWrong(v, seed)),
        1 => any::<u128>().prop_map(Op::CheckUnknown),
        1 => v().prop_map(Op::Cancel),
        2 => v().prop_map(Op::Get),
        1 => Just(Op::Sweep),
        6 => (1..=2usize).prop_map(Op::Rotate),
        6 => prop_oneof![
            // The edges: exactly the cooldown, exactly the TTL.
            3 => Just(COOLDOWN),
            1 => Just(TTL),
            1 => Just(TTL - COOLDOWN),
            4 => 0..60u64,
            1 => 0..700u64,
        ]
        .prop_map(Op::Advance),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Every sequence starts something, so few steps act on nothing.
    let step = || (0..2usize, op()).prop_map(|(replica, op)| Step(replica, op));
    ((0..2usize, start()), vec(step(), 0..MAX_STEPS)).prop_map(|((replica, first), rest)| {
        std::iter::once(Step(replica, first)).chain(rest).collect()
    })
}

// ---------------------------------------------------------------- model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Approved,
    Canceled,
    Expired,
    MaxAttemptsReached,
    Superseded,
}

impl State {
    fn wire(self) -> VerificationStatus {
        match self {
            Self::Pending => VerificationStatus::Pending,
            Self::Approved => VerificationStatus::Approved,
            Self::Canceled => VerificationStatus::Canceled,
            Self::Expired => VerificationStatus::Expired,
            Self::MaxAttemptsReached => VerificationStatus::MaxAttemptsReached,
            Self::Superseded => VerificationStatus::Superseded,
        }
    }
}

/// Times are whole seconds since the case's clock started.
#[derive(Debug)]
struct ModelVerification {
    /// Empty until the service names it.
    id: String,
    to: usize,
    purpose: usize,
    /// As the last transition left it; expiry is settled on reading.
    state: State,
    created_at: u64,
    expires_at: u64,
    last_send_at: u64,
    sends: u32,
    wrong_checks: u32,
    /// Every code sent, the latest last.
    codes: Vec<String>,
    /// The key (index into `KEYS`) that hashed the latest code.
    latest_key: usize,
    /// The service answered NOT_FOUND once (after retention).
    purged: bool,
}

impl ModelVerification {
    fn state(&self, now: u64) -> State {
        if self.state == State::Pending && now >= self.expires_at {
            State::Expired
        } else {
            self.state
        }
    }

    fn snapshot(&self, now: u64, new: bool) -> Snapshot {
        Snapshot {
            id: (!new).then(|| self.id.clone()),
            to: self.to,
            purpose: self.purpose,
            state: self.state(now),
            created_at: self.created_at,
            expires_at: self.expires_at,
            checks_remaining: MAX_CHECKS - self.wrong_checks,
            sends_remaining: MAX_SENDS - self.sends,
            sends: self.sends,
        }
    }

    /// Past its retention, the purge may have dropped it.
    fn may_be_purged(&self, now: u64) -> bool {
        now >= self.expires_at + RETENTION
    }
}

/// What the service must show of a verification.
#[derive(Debug)]
struct Snapshot {
    /// `None`: a new verification, whose id must be one never seen.
    id: Option<String>,
    to: usize,
    purpose: usize,
    state: State,
    created_at: u64,
    expires_at: u64,
    checks_remaining: u32,
    sends_remaining: u32,
    sends: u32,
}

/// What the model says one call answers.
#[derive(Debug)]
enum Expected {
    /// OK with this verification; `approved` for checks.
    Verification {
        approved: Option<bool>,
        v: Snapshot,
    },
    /// FAILED_PRECONDITION naming the status.
    NotPending(State),
    /// RESOURCE_EXHAUSTED for one of these reasons, with its RetryInfo
    /// delay in seconds.
    Exhausted(Vec<(Refusal, u64)>),
    NotFound,
}

/// Why a call is RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The least gap between new verifications for a destination.
    TooSoon,
    Cooldown,
    SendLimit,
    /// `limits.failed_checks_per_destination`.
    CheckBudget,
}

impl Refusal {
    /// Whether `message` fits: the rate limit's is documented, the others
    /// are not, but they are no rate limit.
    fn fits(self, message: &str) -> bool {
        match self {
            Self::CheckBudget => message == "rate limit failed_checks_per_destination reached",
            Self::TooSoon | Self::Cooldown | Self::SendLimit => !message.starts_with("rate limit"),
        }
    }
}

/// Which code a check sends.
#[derive(Debug, Clone, Copy)]
enum Guess {
    /// The latest code, to a replica that holds the key that hashed it.
    Latest,
    /// Any other code, or the latest to a replica without its key: a wrong
    /// code either way.
    Other,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    vs: Vec<ModelVerification>,
    /// Per destination, the failed-check budget as GCRA keeps it: the
    /// theoretical time at which it is full again.
    budget_full_at: [u64; DESTINATIONS.len()],
    /// Per destination, its latest new verification and how many came in
    /// a row.
    recent_starts: [Option<(u64, u32)>; DESTINATIONS.len()],
}

impl Model {
    /// The expected answer, and which verification it is about.
    fn start(&mut self, to: usize, purpose: usize) -> (Expected, Option<usize>) {
        let now = self.now;
        let mut in_a_row = 1;
        if let Some((last, count)) = self.recent_starts[to] {
            let gap_ends = last + wait_after(count);
            if now < gap_ends {
                return (
                    Expected::Exhausted(vec![(Refusal::TooSoon, gap_ends - now)]),
                    None,
                );
            }
            if now < last + TTL.max(wait_after(count)) {
                in_a_row = count + 1;
            }
        }
        self.recent_starts[to] = Some((now, in_a_row));
        if let Some(pending) = self
            .vs
            .iter_mut()
            .find(|v| v.to == to && v.purpose == purpose && v.state(now) == State::Pending)
        {
            pending.state = State::Superseded;
        }
        self.vs.push(ModelVerification {
            id: String::new(),
            to,
            purpose,
            state: State::Pending,
            created_at: now,
            expires_at: now + TTL,
            last_send_at: now,
            sends: 1,
            wrong_checks: 0,
            codes: Vec::new(),
            latest_key: 0,
            purged: false,
        });
        let v = self.vs.last().expect("just pushed").snapshot(now, true);
        (
            Expected::Verification { approved: None, v },
            Some(self.vs.len() - 1),
        )
    }

    fn resend(&mut self, i: usize) -> Expected {
        let now = self.now;
        let v = &mut self.vs[i];
        if v.purged {
            return Expected::NotFound;
        }
        let state = v.state(now);
        if state != State::Pending {
            return Expected::NotPending(state);
        }
        let cooldown_ends = v.last_send_at + wait_after(v.sends);
        let out_of_sends = v.sends >= MAX_SENDS;
        // The docs do not say which refusal wins when both hold.
        let mut refusals = Vec::new();
        if now < cooldown_ends {
            refusals.push((Refusal::Cooldown, cooldown_ends - now));
        }
        if out_of_sends {
            refusals.push((Refusal::SendLimit, v.expires_at - now));
        }
        if !refusals.is_empty() {
            return Expected::Exhausted(refusals);
        }
        v.sends += 1;
        v.last_send_at = now;
        v.expires_at = now + TTL;
        Expected::Verification {
            approved: None,
            v: v.snapshot(now, false),
        }
    }

    fn check(&mut self, i: usize, guess: Guess) -> Expected {
        let now = self.now;
        let v = &mut self.vs[i];
        if v.purged {
            return Expected::NotFound;
        }
        let state = v.state(now);
        if state != State::Pending {
            // Checks of a verification that is no longer pending take
            // nothing from the budget.
            return Expected::NotPending(state);
        }
        // One cell is taken before each comparison, whatever the code: a
        // burst of cells, one more back every period.
        let full_at = &mut self.budget_full_at[v.to];
        let tolerance = (FAILED_CHECKS_BURST - 1) * FAILED_CHECKS_PERIOD;
        if *full_at > now + tolerance {
            let delay = *full_at - tolerance - now;
            return Expected::Exhausted(vec![(Refusal::CheckBudget, delay)]);
        }
        *full_at = (*full_at).max(now) + FAILED_CHECKS_PERIOD;
        let approved = match guess {
            Guess::Latest => {
                v.state = State::Approved;
                true
            }
            Guess::Other => {
                v.wrong_checks += 1;
                if v.wrong_checks == MAX_CHECKS {
                    v.state = State::MaxAttemptsReached;
                }
                false
            }
        };
        Expected::Verification {
            approved: Some(approved),
            v: v.snapshot(now, false),
        }
    }

    fn cancel(&mut self, i: usize) -> Expected {
        let now = self.now;
        let v = &mut self.vs[i];
        if v.purged {
            return Expected::NotFound;
        }
        let state = v.state(now);
        if state != State::Pending {
            return Expected::NotPending(state);
        }
        v.state = State::Canceled;
        Expected::Verification {
            approved: None,
            v: v.snapshot(now, false),
        }
    }

    fn get(&self, i: usize) -> Expected {
        let v = &self.vs[i];
        if v.purged {
            return Expected::NotFound;
        }
        Expected::Verification {
            approved: None,
            v: v.snapshot(self.now, false),
        }
    }
}

// ------------------------------------------------------------ harness

/// What a call answered: the verification (and `approved` for checks), or
/// the error.
type Answer = Result<(Option<bool>, proto::Verification), tonic::Status>;

struct Case<'a> {
    apps: Vec<TestApp>,
    /// Each replica's step of the key rotation (`key_ring`).
    rotation_steps: Vec<usize>,
    /// How to start a replica further along the rotation; `None` on the
    /// memory store.
    rotation: Option<&'a Rotation<'a>>,
    /// Replicas replaced by a rotation: stopped at the end, and their
    /// messages still count.
    retired: Vec<TestApp>,
    model: Model,
    /// Base of the model's times, in seconds since the epoch.
    epoch: u64,
    /// Every id the service has named, and every id it approved.
    ids: HashSet<String>,
    approved: HashSet<String>,
    /// Steps so far, with what the service answered, for failure reports.
    trace: String,
}

/// What a rotation step needs to start a replica like the others.
struct Rotation<'a> {
    redis: &'a RedisServer,
    clock: Clock,
}

impl Rotation<'_> {
    async fn replica(&self, step: usize) -> TestApp {
        let mut config = config_at(step);
        use_redis(&mut config, &[self.redis.url()]);
        spawn(config, self.clock.clone()).await
    }
}

impl Case<'_> {
    fn fail(&self, what: String) -> TestCaseError {
        TestCaseError::fail(format!(
            "{what}\n--- steps (replica, op => service's answer):\n{}",
            self.trace
        ))
    }

    fn app(&self, replica: usize) -> &TestApp {
        &self.apps[replica % self.apps.len()]
    }

    fn pick(&self, v: usize) -> Option<usize> {
        (!self.model.vs.is_empty()).then(|| v % self.model.vs.len())
    }

    async fn run(&mut self, steps: &[Step]) -> Result<(), TestCaseError> {
        for (n, Step(replica, op)) in steps.iter().enumerate() {
            let _ = write!(self.trace, "{n:>2}. [{}] {op:?}", replica % self.apps.len());
            self.step(*replica, op).await?;
            self.trace.push('\n');
            self.messages_match()?;
        }
        // A last look at everything, through the other replica.
        self.trace.push_str("end. sweep");
        self.sweep(1).await
    }

    async fn step(&mut self, replica: usize, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Resend(v) | Op::ResendLater(v) => {
                let Some(i) = self.pick(v) else { return Ok(()) };
                if let Op::ResendLater(_) = op {
                    self.advance(wait_after(self.model.vs[i].sends));
                }
                self.resend(replica, i).await?;
            }
            Op::Start(to, purpose) => self.start(replica, to, purpose).await?,
            Op::CheckLatest(v) => {
                let Some(i) = self.pick(v) else { return Ok(()) };
                let code = self.model.vs[i].codes.last().expect("a code").clone();
                self.check(replica, i, code, Guess::Latest).await?;
            }
            Op::CheckOlder(v, back) => {
                let Some(i) = self.pick(v) else { return Ok(()) };
                let codes = &self.model.vs[i].codes;
                let latest = codes.last().expect("a code");
                let older: Vec<&String> = codes.iter().filter(|c| *c != latest).collect();
                let code = match older.len() {
                    0 => wrong_code(latest, 0),
                    n => older[n - 1 - back % n].clone(),
                };
                self.check(replica, i, code, Guess::Other).await?;
            }
            Op::CheckWrong(v, seed) => {
                let Some(i) = self.pick(v) else { return Ok(()) };
                let code = wrong_code(self.model.vs[i].codes.last().expect("a code"), seed);
                self.check(replica, i, code, Guess::Other).await?;
            }
            Op::CheckUnknown(n) => {
                let answer = self
                    .app(replica)
                    .check(&format!("VE{n:032x}"), "123456")
                    .await
                    .map(|r| (Some(r.approved), r.verification.expect("verification")));
                self.compare(&answer, &Expected::NotFound, None)?;
            }
            Op::Cancel(v) => {
                let Some(i) = self.pick(v) else { return Ok(()) };
                let expected = self.model.cancel(i);
                let answer = self
                    .app(replica)
                    .cancel(&self.model.vs[i].id)
                    .await
                    .map(|v| (None, v));
                self.compare(&answer, &expected, Some(i))?;
            }
            Op::Get(v) => {
                let Some(i) = self.pick(v) else { return Ok(()) };
                self.get(replica, i).await?;
            }
            Op::Sweep => self.sweep(replica).await?,
            Op::Advance(secs) => self.advance(secs),
            Op::Rotate(steps) => self.rotate(replica, steps).await,
        }
        Ok(())
    }

    /// Replaces the replica with one `steps` further along the rotation.
    async fn rotate(&mut self, replica: usize, steps: usize) {
        let r = replica % self.apps.len();
        let step = (self.rotation_steps[r] + steps).min(LAST_ROTATION_STEP);
        let Some(rotation) = self.rotation else {
            return;
        };
        if step == self.rotation_steps[r] {
            return;
        }
        let _ = write!(self.trace, " to step {step} {:?}", key_ring(step));
        let next = rotation.replica(step).await;
        self.retired
            .push(std::mem::replace(&mut self.apps[r], next));
        self.rotation_steps[r] = step;
    }

    fn advance(&mut self, secs: u64) {
        // Replicas share the clock.
        self.apps[0].clock.advance(Duration::from_secs(secs));
        self.model.now += secs;
    }

    async fn start(
        &mut self,
        replica: usize,
        to: usize,
        purpose: usize,
    ) -> Result<(), TestCaseError> {
        let (expected, i) = self.model.start(to, purpose);
        let request = proto::StartVerificationRequest {
            to: DESTINATIONS[to].to_owned(),
            channel: proto::Channel::Sms.into(),
            purpose: PURPOSES[purpose].into(),
            ..Default::default()
        };
        let answer = self.app(replica).start(request).await.map(|r| {
            let v = r
                .verification
                .expect("a start answers with the verification");
            (None, v)
        });
        self.compare(&answer, &expected, i)?;
        if let (Some(i), Ok((_, got))) = (i, &answer) {
            // A new verification takes the id the service gave it.
            self.model.vs[i].id.clone_from(&got.id);
            self.sent(replica, i);
        }
        Ok(())
    }

    async fn resend(&mut self, replica: usize, i: usize) -> Result<(), TestCaseError> {
        let expected = self.model.resend(i);
        let request = proto::ResendVerificationRequest {
            id: self.model.vs[i].id.clone(),
            channel: proto::Channel::Sms.into(),
            ..Default::default()
        };
        let answer = self.app(replica).resend(request).await.map(|r| {
            let v = r
                .verification
                .expect("a resend answers with the verification");
            (None, v)
        });
        self.compare(&answer, &expected, Some(i))?;
        if answer.is_ok() {
            self.sent(replica, i);
        }
        Ok(())
    }

    /// The code the replica's latest send carried, as the verification's
    /// latest.
    fn sent(&mut self, replica: usize, i: usize) {
        let code = self.app(replica).outbox.code_for(&self.model.vs[i].id);
        let _ = write!(self.trace, " code={code}");
        let (active, _) = key_ring(self.rotation_steps[replica % self.apps.len()]);
        self.model.vs[i].codes.push(code);
        self.model.vs[i].latest_key = active;
    }

    async fn check(
        &mut self,
        replica: usize,
        i: usize,
        code: String,
        guess: Guess,
    ) -> Result<(), TestCaseError> {
        let _ = write!(self.trace, " code={code}");
        let step = self.rotation_steps[replica % self.apps.len()];
        let guess = match guess {
            Guess::Latest if !ring_holds(step, self.model.vs[i].latest_key) => Guess::Other,
            guess => guess,
        };
        let expected = self.model.check(i, guess);
        let answer = self
            .app(replica)
            .check(&self.model.vs[i].id, &code)
            .await
            .map(|r| (Some(r.approved), r.verification.expect("verification")));
        if let Ok((Some(true), got)) = &answer
            && !self.approved.insert(got.id.clone())
        {
            return Err(self.fail(format!("{} approved twice", got.id)));
        }
        self.compare(&answer, &expected, Some(i))
    }

    async fn get(&mut self, replica: usize, i: usize) -> Result<(), TestCaseError> {
        let expected = self.model.get(i);
        let answer = self
            .app(replica)
            .get(&self.model.vs[i].id)
            .await
            .map(|v| (None, v));
        self.compare(&answer, &expected, Some(i))
    }

    /// Reads every verification through the replica after `replica`.
    async fn sweep(&mut self, replica: usize) -> Result<(), TestCaseError> {
        for i in 0..self.model.vs.len() {
            self.get(replica + 1, i).await?;
        }
        Ok(())
    }

    /// Every send the model counts went out once, and nothing else did.
    fn messages_match(&self) -> Result<(), TestCaseError> {
        let sent: usize = self
            .apps
            .iter()
            .chain(&self.retired)
            .map(|a| a.outbox.total_sent())
            .sum();
        let expected: u32 = self.model.vs.iter().map(|v| v.sends).sum();
        if sent != expected as usize {
            return Err(self.fail(format!(
                "{sent} messages sent, the model counts {expected} sends"
            )));
        }
        Ok(())
    }

    /// Compares one answer with the model's; `i` is the verification the
    /// call was about.
    fn compare(
        &mut self,
        answer: &Answer,
        expected: &Expected,
        i: Option<usize>,
    ) -> Result<(), TestCaseError> {
        let _ = write!(self.trace, " => {}", describe(answer));
        let now = self.model.now;
        // Past retention the purge may have dropped it; then it stays gone.
        if let (Err(status), Some(i)) = (answer, i)
            && status.code() == Code::NotFound
            && !matches!(expected, Expected::NotFound)
            && self.model.vs[i].may_be_purged(now)
            && !self.model.vs[i].id.is_empty()
        {
            self.model.vs[i].purged = true;
            return Ok(());
        }
        let verdict = match (expected, answer) {
            (Expected::Verification { approved, v }, Ok((got_approved, got))) => {
                if approved != got_approved {
                    Err(format!("approved: {got_approved:?}, model: {approved:?}"))
                } else {
                    self.same_verification(got, v)
                }
            }
            (Expected::NotPending(state), Err(status))
                if status.code() == Code::FailedPrecondition =>
            {
                let message = format!("verification is {}", state.wire().as_str_name());
                if status.message() == message {
                    Ok(())
                } else {
                    Err(format!(
                        "message {:?}, model: {message:?}",
                        status.message()
                    ))
                }
            }
            (Expected::Exhausted(refusals), Err(status))
                if status.code() == Code::ResourceExhausted =>
            {
                let delay = retry_after(status);
                let fits = |&(why, secs): &(Refusal, u64)| {
                    why.fits(status.message()) && delay == Some(Duration::from_secs(secs))
                };
                if refusals.iter().any(fits) {
                    Ok(())
                } else {
                    Err(format!(
                        "RetryInfo {delay:?} for {:?}, model: one of {refusals:?} (s)",
                        status.message()
                    ))
                }
            }
            (Expected::NotFound, Err(status)) if status.code() == Code::NotFound => Ok(()),
            _ => Err("the service and the model disagree".to_owned()),
        };
        verdict.map_err(|why| {
            self.fail(format!(
                "{why}\nservice: {}\nmodel:   {expected:?}",
                describe(answer)
            ))
        })
    }

    fn same_verification(
        &mut self,
        got: &proto::Verification,
        want: &Snapshot,
    ) -> Result<(), String> {
        match &want.id {
            Some(id) if *id != got.id => {
                return Err(format!("id {}, model: {id}", got.id));
            }
            Some(_) => {}
            None => {
                if !self.ids.insert(got.id.clone()) {
                    return Err(format!("a new verification reuses the id {}", got.id));
                }
            }
        }
        let seconds = |t: &Option<prost_types::Timestamp>| {
            t.as_ref().map(|t| (t.seconds - self.epoch as i64, t.nanos))
        };
        let got_status = VerificationStatus::try_from(got.status).ok();
        let differences: Vec<String> = [
            ("to", got.to.clone(), DESTINATIONS[want.to].to_owned()),
            (
                "purpose",
                format!("{:?}", proto::Purpose::try_from(got.purpose).ok()),
                format!("{:?}", Some(PURPOSES[want.purpose])),
            ),
            (
                "channel",
                format!("{:?}", proto::Channel::try_from(got.channel).ok()),
                format!("{:?}", Some(proto::Channel::Sms)),
            ),
            (
                "status",
                format!("{got_status:?}"),
                format!("{:?}", Some(want.state.wire())),
            ),
            (
                "created_at",
                format!("{:?}", seconds(&got.created_at)),
                format!("{:?}", Some((want.created_at as i64, 0))),
            ),
            (
                "expires_at",
                format!("{:?}", seconds(&got.expires_at)),
                format!("{:?}", Some((want.expires_at as i64, 0))),
            ),
            (
                "check_attempts_remaining",
                got.check_attempts_remaining.to_string(),
                want.checks_remaining.to_string(),
            ),
            (
                "send_attempts_remaining",
                got.send_attempts_remaining.to_string(),
                want.sends_remaining.to_string(),
            ),
            (
                "send_attempts",
                got.send_attempts.len().to_string(),
                want.sends.to_string(),
            ),
        ]
        .into_iter()
        .filter(|(_, got, want)| got != want)
        .map(|(field, got, want)| format!("{field}: {got}, model: {want}"))
        .collect();
        if differences.is_empty() {
            Ok(())
        } else {
            Err(differences.join("; "))
        }
    }
}

/// A six-digit code that is not `latest`.
fn wrong_code(latest: &str, seed: u32) -> String {
    let n = seed % 1_000_000;
    let code = format!("{n:06}");
    if code == latest {
        format!("{:06}", (n + 1) % 1_000_000)
    } else {
        code
    }
}

fn describe(answer: &Answer) -> String {
    match answer {
        Ok((approved, v)) => {
            let status = VerificationStatus::try_from(v.status)
                .map_or("?", |s| s.as_str_name())
                .trim_start_matches("VERIFICATION_STATUS_");
            let expires = v.expires_at.as_ref().map_or(0, |t| t.seconds);
            let approved = approved.map_or(String::new(), |a| format!("approved={a} "));
            format!(
                "OK {approved}{} {status} expires={expires} checks_left={} sends_left={} sends={}",
                v.id,
                v.check_attempts_remaining,
                v.send_attempts_remaining,
                v.send_attempts.len()
            )
        }
        Err(status) => format!(
            "{:?} {:?} retry_after={:?}",
            status.code(),
            status.message(),
            retry_after(status)
        ),
    }
}

/// The configuration of a replica at `rotation_step` of the key rotation.
fn config_at(rotation_step: usize) -> Config {
    let mut config = test_config();
    let (active, previous) = key_ring(rotation_step);
    config.hmac.key_id = format!("k{active}");
    config.hmac.key = Some(Secret::new(KEYS[active]));
    config.hmac.previous_keys = previous
        .into_iter()
        .map(|key| (format!("k{key}"), Secret::new(KEYS[key])))
        .collect();
    config.code.ttl = Duration::from_secs(TTL);
    config.code.resend_cooldown = Duration::from_secs(COOLDOWN);
    config.code.retention = Duration::from_secs(RETENTION);
    // The memory store purges on a real-time interval: often, so that
    // sequences see verifications go.
    config.store.purge_interval = Duration::from_millis(10);
    config.code.max_check_attempts = MAX_CHECKS;
    config.code.max_send_attempts = MAX_SENDS;
    config.limits.failed_checks_per_destination.burst =
        u32::try_from(FAILED_CHECKS_BURST).expect("small");
    config.limits.failed_checks_per_destination.period = Duration::from_secs(FAILED_CHECKS_PERIOD);
    config.limits.starts_per_destination.burst = NO_LIMIT;
    config.limits.requests_per_tenant.burst = NO_LIMIT;
    config
}

/// Runs one case on `apps` (all at rotation step 0), then stops every app.
async fn run_case(
    apps: Vec<TestApp>,
    rotation: Option<&Rotation<'_>>,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let epoch = apps[0]
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch");
    assert_eq!(
        epoch.subsec_nanos(),
        0,
        "the clock starts on a whole second"
    );
    let mut case = Case {
        rotation_steps: vec![0; apps.len()],
        apps,
        rotation,
        retired: Vec::new(),
        model: Model::default(),
        epoch: epoch.as_secs(),
        ids: HashSet::new(),
        approved: HashSet::new(),
        trace: String::new(),
    };
    let result = case.run(steps).await;
    for app in case.apps.into_iter().chain(case.retired) {
        app.stop().await;
    }
    result
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn the_memory_store_agrees_with_the_model() {
    let runtime = runtime();
    let result = runner().run(&steps(), |steps| {
        runtime.block_on(async {
            let mut config = config_at(0);
            config.store.backend = StoreBackend::Memory;
            let app = spawn(config, test_clock()).await;
            run_case(vec![app], None, &steps).await
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn two_redis_replicas_agree_with_the_model() {
    let runtime = runtime();
    let redis = RedisServer::start();
    let result = runner().run(&steps(), |steps| {
        redis.cli(&["FLUSHALL"]);
        runtime.block_on(async {
            let rotation = Rotation {
                redis: &redis,
                clock: test_clock(),
            };
            let apps = vec![rotation.replica(0).await, rotation.replica(0).await];
            run_case(apps, Some(&rotation), &steps).await
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
