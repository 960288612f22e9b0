//! The two store backends agree: the same random sequence of operations,
//! driven straight into a `MemoryStore` and a `RedisStore` (no gRPC), gets
//! the same answer from both after every step. The memory store applies the
//! domain's transitions (`Verification::reserve_send`, `reserve_step`,
//! `end_fallback`, `hasten_fallback`, `supersede`,
//! `record_send`, `check`, `cancel`, `record_delivery`, `press`, and
//! `RecentStarts::admit`) under its lock; the Redis store re-implements each
//! in Lua. So this is the evidence that the scripts mirror the Rust rules:
//! expiry, the least gap between new verifications, superseding the one
//! pending per (destination, purpose), the resend cooldown and send lease,
//! the send budget, the destination's start budget (taken after the gap),
//! the code swap (accepted sends replace the codes, sends whose outcome is
//! unknown add theirs beside the last accepted one, a read-aloud call's key
//! swaps in the code it says, a fallback step's code checks beside the
//! previous step's), fallback steps (claimed only when due, at their step,
//! moving on or ending the workflow; a report of an undelivered text
//! bringing the step forward; a resend ending it), delivery reports
//! moving attempts forward only, call keypresses, blocks, idempotency keys
//! and purging after retention.
//!
//! Ids and number-matching digits are random per store, and code hashes
//! bind the verification id, so each store gets its own candidates and the
//! verifications are compared with those parts blanked. On each store, a
//! verification is also never approved twice (by code or by keypress).

use std::time::{Duration, SystemTime};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use tokio_util::sync::CancellationToken;
use verifyd::{
    domain::{
        Channel, CheckOutcome, Code, DeliveryReport, DeliveryStatus, Destination, KeyRing, Locale,
        MatchDigits, Policy, Purpose, SendAttempt, SendOutcome, TenantId, Verification,
        VerificationId, VoiceMode,
        code::{HmacKey, KeyId},
        fallback::{Fallback, Workflow},
        limit::{Budget, Limit, Quota},
        verification::Delivery,
        voice::{KeyOutcome, KeyPress, Menu, VoiceCall},
    },
    store::{
        Blocked, CallKey, CompletedSend, Creation, Idempotency, MemoryStore, RedisStore,
        Reservation, Store, StoreError, redis::RedisConfig,
    },
};

use crate::redis_server::RedisServer;

/// The clock starts here and moves by whole seconds (Redis keeps ms).
const EPOCH_SECS: u64 = 1_800_000_000;
/// Short, so that sequences outlive it and see purges.
const RETENTION: Duration = Duration::from_secs(300);
const DESTINATIONS: [&str; 2] = ["+14155550100", "+14155550101"];
const PURPOSES: [Purpose; 2] = [Purpose::PasswordReset, Purpose::Enrollment];
const PROVIDER_STATUSES: &str =
    "queued sending sent delivered undelivered failed read weird_status";
const IDEMPOTENCY_KEYS: [&str; 2] = ["key-a", "key-b"];
/// Small enough that sequences spend it: both stores take a destination's
/// start cell in the step that creates or reserves, after the least gap.
const START_BUDGET: Budget = Budget {
    limit: Limit::StartsPerDestination,
    quota: Quota {
        burst: 4,
        period: Duration::from_secs(120),
    },
};

/// One step. `v` picks a verification started so far (modulo how many).
/// Send `n` of a sequence carries code `100000 + n`, provider references
/// `SM{n}x{try}` and, by voice, the call with token `token-{n}` and
/// CallSid `CA{n}`.
#[derive(Debug, Clone)]
enum Op {
    /// (destination, purpose, delivery): `create`.
    Start(usize, usize, usize),
    /// (v): `reserve_resend`.
    Resend(usize),
    /// (v): `reserve_step`, at the step this side last saw.
    Step(usize),
    /// (v): `end_fallback`, at the step this side last saw.
    EndFallback(usize),
    /// (v, provider tries, delivery): the last try decides.
    Complete(usize, Vec<bool>, usize),
    /// (v, back): the code of `back` sends ago (0: the latest), or a code
    /// never sent.
    Check(usize, usize),
    Get(usize),
    Cancel(usize),
    /// (v, which reference, status word, with an error code).
    Deliver(usize, usize, usize, bool),
    /// (v, fraud menu, keys, genuine): keys `#`, `0`, `5` (twice as
    /// likely), or the store's own match digits; the live call's token, or
    /// a forged one. One re-prompt per call.
    Press(usize, bool, usize, bool),
    /// (destination, for how many seconds).
    Block(usize, u64),
    BlockedUntil(usize),
    /// (key, fingerprint byte).
    Begin(usize, u8),
    /// (key, v): finishes with verification `v` as last seen.
    Finish(usize, usize),
    Abandon(usize),
    Advance(u64),
}

impl Op {
    fn target(&self) -> Option<usize> {
        match self {
            Self::Complete(v, ..) | Self::Check(v, _) | Self::Get(v) | Self::Cancel(v) => Some(*v),
            Self::Resend(v) | Self::Step(v) | Self::EndFallback(v) => Some(*v),
            Self::Deliver(v, ..) | Self::Press(v, ..) | Self::Finish(_, v) => Some(*v),
            _ => None,
        }
    }
}

fn start() -> impl Strategy<Value = Op> {
    (0..2usize, 0..2usize, 0..5usize).prop_map(|(to, purpose, d)| Op::Start(to, purpose, d))
}

fn op() -> impl Strategy<Value = Op> {
    let v = || 0..4usize;
    let tries = vec(prop::bool::weighted(0.7), 1..=2);
    let weighted = prop::bool::weighted;
    prop_oneof![
        4 => start(),
        3 => v().prop_map(Op::Resend),
        3 => v().prop_map(Op::Step),
        1 => v().prop_map(Op::EndFallback),
        4 => (v(), tries, 0..5usize).prop_map(|(v, tries, d)| Op::Complete(v, tries, d)),
        4 => (v(), 0..3usize).prop_map(|(v, back)| Op::Check(v, back)),
        1 => v().prop_map(Op::Get),
        1 => v().prop_map(Op::Cancel),
        2 => (v(), 0..4usize, 0..8usize, any::<bool>())
            .prop_map(|(v, pick, status, error)| Op::Deliver(v, pick, status, error)),
        4 => (v(), weighted(0.2), 0..5usize, weighted(0.8))
            .prop_map(|(v, fraud, keys, genuine)| Op::Press(v, fraud, keys, genuine)),
        // At least a minute: Redis expires the block key in real time.
        1 => (0..2usize, 60..2000u64).prop_map(|(to, secs)| Op::Block(to, secs)),
        1 => (0..2usize).prop_map(Op::BlockedUntil),
        2 => (0..2usize, weighted(0.2)).prop_map(|(key, other)| Op::Begin(key, u8::from(other))),
        2 => (0..2usize, v()).prop_map(|(key, v)| Op::Finish(key, v)),
        1 => (0..2usize).prop_map(Op::Abandon),
        // Mostly across the 11 s lease and the 30 s cooldown, sometimes
        // the 600 s code ttl and the retention.
        4 => prop_oneof![3 => 0..60u64, 1 => 0..700u64].prop_map(Op::Advance),
    ]
}

fn policy() -> Policy {
    Policy {
        max_check_attempts: 3,
        max_send_attempts: 2,
        retention: RETENTION,
        ..Policy::default()
    }
}

fn ring() -> KeyRing {
    let id = KeyId::parse("k1").expect("valid key id");
    KeyRing::new(HmacKey::new(id, vec![7; 32]).expect("long enough"))
}

fn delivery(i: usize) -> Delivery {
    let (channel, voice_mode, locale) = match i {
        0 => (Channel::Sms, None, None),
        1 => (Channel::Sms, None, Locale::parse("fr-CA")),
        2 => (Channel::Voice, Some(VoiceMode::Confirm), None),
        3 => (Channel::Voice, Some(VoiceMode::Match), None),
        _ => (Channel::Voice, Some(VoiceMode::Code), Locale::parse("de")),
    };
    Delivery {
        channel,
        voice_mode,
        locale,
    }
}

fn code(send: Option<usize>) -> Code {
    let digits = send.map_or(999_999, |n| 100_000 + n);
    Code::parse(&digits.to_string()).expect("six digits")
}

fn destination(to: usize) -> Destination {
    Destination::parse(DESTINATIONS[to]).expect("valid destination")
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS + secs)
}

fn blank_id() -> VerificationId {
    VerificationId::parse(&format!("VE{}", "0".repeat(32))).expect("valid id")
}

/// Blanks what differs between the stores by design: the id, and the
/// random number-matching digits (compared for presence only).
fn normalize(v: &Verification) -> Verification {
    let digits = v
        .match_digits
        .as_ref()
        .map(|_| MatchDigits::from_stored(".."));
    Verification {
        id: blank_id(),
        match_digits: digits,
        ..v.clone()
    }
}

/// What both stores are told alike: the clock, and per verification the
/// sends completed on it (by number) and the provider references they got.
#[derive(Default)]
struct World {
    secs: u64,
    sends: usize,
    sent: Vec<Vec<usize>>,
    references: Vec<Vec<String>>,
}

/// One store and what the test knows of it, by logical verification index.
struct Side {
    store: Store,
    ids: Vec<VerificationId>,
    last: Vec<Option<Verification>>,
    approvals: Vec<u32>,
}

/// An operation's outcome in words, and the verification it returned.
type Observed = (String, Option<Verification>);

fn ok<T>(result: Result<T, StoreError>) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("store error: {e}")))
}

fn seen<T: std::fmt::Debug>(found: Option<(T, Verification)>) -> Observed {
    let words = |(word, v)| (format!("{word:?}"), Some(v));
    found.map_or(("gone".to_owned(), None), words)
}

impl Side {
    fn index_of(&self, id: &VerificationId) -> Option<usize> {
        self.ids.iter().position(|known| known == id)
    }

    async fn apply(&mut self, op: &Op, w: &World) -> Result<Observed, TestCaseError> {
        let (tenant, policy, now) = (TenantId::default_tenant(), policy(), at(w.secs));
        let i = match op.target() {
            Some(_) if self.ids.is_empty() => return Ok(("nothing started".to_owned(), None)),
            Some(v) => v % self.ids.len(),
            None => 0,
        };
        let id = &self.ids.get(i).cloned().unwrap_or_else(blank_id);
        let store = &self.store;
        Ok(match op {
            Op::Start(to, purpose, d) => {
                let (to, purpose) = (destination(*to), PURPOSES[*purpose]);
                let new_id = store.new_id(&tenant, &to);
                let mut candidate =
                    Verification::new(new_id, tenant, to, purpose, delivery(*d), &policy, now);
                // Plain texts fall back to a call (the step's timeout is
                // the 30 s resend cooldown).
                if *d == 0 {
                    let workflow =
                        Workflow::new(vec![Channel::Sms, Channel::Voice], policy.resend_cooldown)
                            .expect("valid");
                    candidate.fallback = Some(Box::new(Fallback::begin(workflow, now)));
                }
                match ok(store.create(candidate, &policy, START_BUDGET, now).await)? {
                    Creation::Created {
                        verification: v,
                        superseded,
                    } => {
                        self.ids.push(v.id.clone());
                        self.last.push(None);
                        self.approvals.push(0);
                        // The one it superseded, by index and as it is now.
                        let superseded = superseded.map(|old| {
                            let i = self.index_of(&old.id);
                            if let Some(i) = i {
                                self.last[i] = Some(old.clone());
                            }
                            (i, normalize(&old))
                        });
                        (format!("created, superseding {superseded:?}"), Some(v))
                    }
                    Creation::Blocked { until } => (format!("blocked until {until:?}"), None),
                    Creation::TooSoon { retry_at } => (format!("too soon {retry_at:?}"), None),
                    Creation::Limited(limited) => (format!("limited {limited:?}"), None),
                }
            }
            Op::Resend(_) => {
                let to = self.last[i]
                    .as_ref()
                    .map_or_else(|| destination(0), |v| v.to.clone());
                match ok(store
                    .reserve_resend(&tenant, id, &to, &policy, START_BUDGET, now)
                    .await)?
                {
                    None => ("gone".to_owned(), None),
                    Some(Reservation::Granted(v)) => ("granted".to_owned(), Some(v)),
                    Some(Reservation::Refused {
                        verification,
                        reason,
                    }) => (format!("refused {reason:?}"), Some(verification)),
                    Some(Reservation::Limited(limited)) => (format!("limited {limited:?}"), None),
                }
            }
            Op::Step(_) | Op::EndFallback(_) => {
                let (to, after) = self.last[i].as_ref().map_or_else(
                    || (destination(0), 0),
                    |v| (v.to.clone(), v.fallback.as_ref().map_or(0, |f| f.step)),
                );
                if matches!(op, Op::EndFallback(_)) {
                    let ended = ok(store.end_fallback(&tenant, id, after, now).await)?;
                    let v = ok(store.get(&tenant, id, now).await)?;
                    (format!("ended {ended}"), v)
                } else {
                    match ok(store
                        .reserve_step(&tenant, id, &to, after, &policy, START_BUDGET, now)
                        .await)?
                    {
                        None => ("not due".to_owned(), None),
                        Some(Reservation::Granted(v)) => ("step".to_owned(), Some(v)),
                        Some(Reservation::Refused {
                            verification,
                            reason,
                        }) => (format!("step refused {reason:?}"), Some(verification)),
                        Some(Reservation::Limited(limited)) => {
                            (format!("step limited {limited:?}"), None)
                        }
                    }
                }
            }
            Op::Complete(_, tries, d) => {
                let (n, delivery) = (w.sends, delivery(*d));
                let attempts = tries.iter().enumerate().map(|(k, &took)| SendAttempt {
                    channel: delivery.channel,
                    status: [DeliveryStatus::Failed, DeliveryStatus::Accepted][usize::from(took)],
                    provider: "twilio".to_owned(),
                    at: now,
                    error_reason: (!took).then(|| "provider refused".to_owned()),
                    reference: took.then(|| format!("SM{n}x{k}")),
                    provider_status: None,
                });
                // Calls that ask for keys carry no code.
                let keys = matches!(
                    delivery.voice_mode,
                    Some(VoiceMode::Confirm | VoiceMode::Match)
                );
                let call = (delivery.channel == Channel::Voice).then(|| {
                    let token_hash = VoiceCall::hash_token(&format!("token-{n}"));
                    VoiceCall::from_stored(token_hash, Some(format!("CA{n}")), 0, 0)
                });
                // A send no provider took may have gone out all the same
                // (here: after a retry), or surely not.
                let outcome = match (tries.last(), tries.len()) {
                    (Some(true), _) => SendOutcome::Accepted,
                    (_, 2..) => SendOutcome::Unknown,
                    _ => SendOutcome::Refused,
                };
                let send = CompletedSend {
                    new_hash: (!keys).then(|| ring().hash(&tenant, id, &code(Some(n)))),
                    attempts: attempts.collect(),
                    outcome,
                    delivery,
                    call,
                    // Once a step was claimed, its sends are the step's.
                    fallback_step: self.last[i]
                        .as_ref()
                        .and_then(|v| v.fallback.as_ref())
                        .is_some_and(|f| f.step > 0),
                };
                let v = ok(store.complete_send(&tenant, id, send, &policy, now).await)?;
                ("completed".to_owned(), v)
            }
            Op::Check(_, back) => {
                let send = w.sent[i].iter().rev().nth(*back).copied();
                let candidates = ring().candidates(&tenant, id, &code(send));
                let found = ok(store.check(&tenant, id, &candidates, now).await)?;
                let approved = matches!(found, Some((CheckOutcome::Approved, _)));
                self.approvals[i] += u32::from(approved);
                seen(found)
            }
            Op::Get(_) => ("got".to_owned(), ok(store.get(&tenant, id, now).await)?),
            Op::Cancel(_) => {
                let found = ok(store.cancel(&tenant, id, now).await)?;
                seen(found.map(|(v, canceled)| (("canceled", canceled), v)))
            }
            Op::Deliver(_, pick, status, error) => {
                let (references, mut words) = (&w.references[i], PROVIDER_STATUSES.split(' '));
                let reference = references.get(pick % references.len().max(1));
                let report = DeliveryReport {
                    reference: reference.map_or_else(|| "SM-unknown".to_owned(), Clone::clone),
                    status: words.nth(*status).unwrap_or_default().to_owned(),
                    error_code: error.then(|| "30003".to_owned()),
                };
                seen(ok(store
                    .record_delivery(&tenant, id, &report, &policy, now)
                    .await)?)
            }
            Op::Press(_, fraud_menu, keys, genuine) => {
                // The live call's CallSid `CA{n}` gives its token, `token-{n}`.
                let live = self.last[i].as_ref().and_then(|v| v.call.clone());
                let call_sid = live.and_then(|c| c.call_sid).unwrap_or_default();
                let token = match call_sid.strip_prefix("CA") {
                    Some(n) if *genuine => format!("token-{n}"),
                    _ => "forged".to_owned(),
                };
                let own = self.last[i].as_ref().and_then(|v| v.match_digits.clone());
                let digits = match keys {
                    0 => "#",
                    1 => "0",
                    2 | 3 => "5",
                    _ => own.as_ref().map_or("#", MatchDigits::as_str),
                };
                let menu = if *fraud_menu { Menu::Fraud } else { Menu::Main };
                let call = CallKey { token, call_sid };
                // What a read-aloud call says if the press reveals a code:
                // the next send's, as the world numbers them.
                let reveal = ring().hash(&tenant, id, &code(Some(w.sends)));
                // The step the call waits for, as this side last saw it; one
                // in four "5"s replays the step before.
                let expected = self.last[i]
                    .as_ref()
                    .and_then(|v| v.call.as_ref())
                    .map_or(0, |call| call.presses);
                let step = if *keys == 3 {
                    expected.wrapping_sub(1)
                } else {
                    expected
                };
                let press = KeyPress {
                    call: &call,
                    menu,
                    digits,
                    max_reprompts: 1,
                    step,
                    reveal: &reveal,
                };
                let found = ok(store.press(&tenant, id, press, now).await)?;
                let approved = matches!(found, Some((Some(KeyOutcome::Approved), _)));
                self.approvals[i] += u32::from(approved);
                seen(found)
            }
            Op::Block(to, secs) => {
                let until = now + Duration::from_secs(*secs);
                ok(store
                    .block(&tenant, Blocked::Destination(&destination(*to)), until, now)
                    .await)?;
                ("blocked".to_owned(), None)
            }
            Op::BlockedUntil(to) => {
                let until = ok(store
                    .blocked_until(&tenant, Blocked::Destination(&destination(*to)), now)
                    .await)?;
                (format!("blocked until {until:?}"), None)
            }
            Op::Begin(key, fingerprint) => {
                let (key, fingerprint) = (IDEMPOTENCY_KEYS[*key], [*fingerprint; 32]);
                match ok(store.begin_idempotent(&tenant, key, fingerprint, now).await)? {
                    Idempotency::Replay(v) => ("replay".to_owned(), Some(*v)),
                    other => (format!("{other:?}"), None),
                }
            }
            Op::Finish(key, _) => {
                let Some(v) = &self.last[i] else {
                    return Ok(("nothing seen".to_owned(), None));
                };
                let key = IDEMPOTENCY_KEYS[*key];
                ok(store.finish_idempotent(&tenant, key, v, now).await)?;
                ("finished".to_owned(), None)
            }
            Op::Abandon(key) => {
                let key = IDEMPOTENCY_KEYS[*key];
                ok(store.abandon_idempotent(&tenant, key).await)?;
                ("abandoned".to_owned(), None)
            }
            Op::Advance(secs) => {
                // The memory store drops verifications at their deadlines
                // and the rest on a timer; Redis's scripts treat what is
                // past retention as gone (its deadline index only
                // announces expiries, and a scan reads 65,536 tags).
                let now = at(w.secs + secs);
                if matches!(store, Store::Memory(_)) {
                    ok(store.expire_due(now).await)?;
                }
                store.purge(now).await;
                ("advanced".to_owned(), None)
            }
        })
    }
}

async fn run_case(redis: &RedisStore, ops: &[Op]) -> Result<(), TestCaseError> {
    let memory = MemoryStore::new(10_000, RETENTION);
    let mut sides = [Store::Memory(memory), Store::Redis(redis.clone())].map(|store| Side {
        store,
        ids: Vec::new(),
        last: Vec::new(),
        approvals: Vec::new(),
    });
    let mut world = World::default();
    for (step, op) in ops.iter().enumerate() {
        let mut observed = Vec::new();
        for side in &mut sides {
            let (word, v) = side.apply(op, &world).await?;
            // A replay is an old snapshot, not the verification's state.
            if let (Some(v), false) = (&v, matches!(op, Op::Begin(..))) {
                let i = side.index_of(&v.id).expect("started here");
                side.last[i] = Some(v.clone());
            }
            observed.push((word, v.as_ref().map(normalize)));
        }
        // Memory's on the left, Redis's on the right.
        prop_assert_eq!(&observed[0], &observed[1], "step {}: {:?}", step, op);
        for side in &sides {
            prop_assert!(side.approvals.iter().all(|&n| n <= 1), "approved twice");
        }
        let started = sides[0].ids.len();
        prop_assert_eq!(started, sides[1].ids.len());
        world.sent.resize(started, Vec::new());
        world.references.resize(started, Vec::new());
        match op {
            Op::Advance(secs) => world.secs += secs,
            Op::Complete(v, tries, _) if started > 0 => {
                let (i, n) = (v % started, world.sends);
                world.sent[i].push(n);
                for k in (0..tries.len()).filter(|&k| tries[k]) {
                    world.references[i].push(format!("SM{n}x{k}"));
                }
                world.sends += 1;
            }
            // A read-aloud call said a new code: it checks from now on.
            Op::Press(v, ..) if started > 0 && observed[0].0 == "Some(Reveal)" => {
                world.sent[v % started].push(world.sends);
                world.sends += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn memory_and_redis_stores_agree_on_random_operation_sequences() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let stop = CancellationToken::new();
    let config = RedisConfig {
        url: Some(server.url()),
        ..RedisConfig::default()
    };
    let redis = {
        // open() spawns its pub/sub task.
        let _runtime = runtime.enter();
        RedisStore::open(
            &config,
            &[9; 32],
            RETENTION,
            stop.clone(),
            Default::default(),
        )
        .expect("open the Redis store")
    };
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    // Every sequence starts something, so few steps act on nothing.
    let ops = (start(), vec(op(), 0..30))
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect::<Vec<_>>());
    let result = runner.run(&ops, |ops| {
        server.cli(&["FLUSHALL"]);
        runtime.block_on(run_case(&redis, &ops))
    });
    stop.cancel();
    if let Err(error) = result {
        panic!("{error}");
    }
}
