//! Criterion benches for the pieces every request goes through: a request's
//! validation and its answer's encoding (the gRPC layer's conversions),
//! drawing a code, the code HMACs, a message's text, the in-memory store's
//! check (in one step with its failed-check budget, as CheckVerification
//! runs it), get and a Start's two steps, and the in-process rate limiters
//! on their allowed path.
//!
//! `cargo bench --bench hot_paths` measures; `cargo test --benches` runs
//! each bench once, as a smoke test. The numbers are per call on one core.

use std::{
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use verifyd::{
    clock::Clock,
    delivery::{Message, Templates},
    domain::{
        Channel, Code, CodeHash, CodeLength, DeliveryStatus, Destination, KeyRing, MatchDigits,
        Policy, Purpose, SendAttempt, SendOutcome, TenantId, Verification, VerificationId,
        code::{HmacKey, KeyId},
        limit::{Budget, Limit, Quota},
        verification::Delivery,
    },
    grpc::convert,
    proto,
    ratelimit::{LimitsConfig, Quotas, RateLimits},
    store::{BudgetedCheck, CompletedSend, Creation, MemoryStore, Store},
};

/// Pending verifications in the store, each to a destination of its own.
const VERIFICATIONS: usize = 100_000;
/// Destinations the per-destination limiter cycles over.
const LIMITED_DESTINATIONS: usize = 10_000;

/// Runs a future that never waits. The memory store and the local rate
/// limiters are async only because the Redis backends are, so one poll
/// finishes them, and no runtime's scheduling lands in the numbers.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a memory store or local limiter call waited"),
    }
}

fn tenant() -> TenantId {
    TenantId::parse("acme").expect("valid tenant")
}

fn key(id: &str, byte: u8) -> HmacKey {
    HmacKey::new(KeyId::parse(id).expect("valid key id"), vec![byte; 32]).expect("long enough")
}

fn email(i: usize) -> Destination {
    Destination::parse(&format!("user{i}@example.com")).expect("valid email")
}

fn code_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("code_generation");
    for len in [6, 10] {
        let length = CodeLength::new(len).expect("valid code length");
        group.bench_with_input(BenchmarkId::new("code", len), &length, |b, &length| {
            b.iter(|| Code::generate(black_box(length)));
        });
    }
    group.bench_function(BenchmarkId::new("match_digits", 2), |b| {
        b.iter(|| MatchDigits::generate(black_box(2)));
    });
    group.finish();
}

fn code_hmac(c: &mut Criterion) {
    let (tenant, id) = (tenant(), VerificationId::generate());
    let code = Code::parse("123456").expect("six digits");
    let one = KeyRing::new(key("k3", 3));
    // After two rotations: the active key and two previous ones.
    let three =
        KeyRing::with_previous(key("k3", 3), vec![key("k2", 2), key("k1", 1)]).expect("unique ids");

    let mut group = c.benchmark_group("code_hmac");
    group.bench_function("hash/1_key", |b| {
        b.iter(|| one.hash(black_box(&tenant), black_box(&id), black_box(&code)));
    });
    for (keys, ring) in [("1_key", &one), ("3_keys", &three)] {
        group.bench_function(format!("candidates/{keys}"), |b| {
            b.iter(|| ring.candidates(black_box(&tenant), black_box(&id), black_box(&code)));
        });
    }
    group.finish();
}

fn email_delivery() -> Delivery {
    Delivery {
        channel: Channel::Email,
        voice_mode: None,
        locale: None,
    }
}

/// An email send that a provider accepted, delivering the code `new_hash`
/// is the hash of.
fn sent(new_hash: Option<CodeHash>, at: SystemTime) -> CompletedSend {
    CompletedSend {
        delivery: email_delivery(),
        attempts: vec![SendAttempt {
            channel: Channel::Email,
            status: DeliveryStatus::Accepted,
            provider: "smtp".to_owned(),
            at,
            error_reason: None,
            reference: None,
            provider_status: None,
        }],
        outcome: SendOutcome::Accepted,
        new_hash,
        call: None,
        fallback_step: false,
    }
}

/// A store holding `VERIFICATIONS` pending email verifications, each sent
/// once (as a start does: `reserve_send`, then `complete_send` with the
/// code's hash), and for each id the candidates of a wrong code.
fn pending_store(
    policy: &Policy,
    ring: &KeyRing,
    now: SystemTime,
) -> (Store, Vec<(VerificationId, Vec<CodeHash>)>) {
    // No cap: the Start bench adds to it.
    let store = Store::Memory(MemoryStore::new(usize::MAX, policy.retention));
    let tenant = tenant();
    let (right, wrong) = (
        Code::parse("123456").expect("six digits"),
        Code::parse("654321").expect("six digits"),
    );
    let delivery = email_delivery();
    let ids = (0..VERIFICATIONS)
        .map(|i| {
            let candidate = Verification::new(
                VerificationId::generate(),
                tenant.clone(),
                email(i),
                Purpose::PasswordReset,
                delivery.clone(),
                policy,
                now,
            );
            let created =
                ready(store.create(candidate, policy, start_budget(), now)).expect("room");
            let Creation::Created { verification, .. } = created else {
                panic!("a new destination's first verification is created");
            };
            let id = verification.id;
            let send = sent(Some(ring.hash(&tenant, &id, &right)), now);
            ready(store.complete_send(&tenant, &id, send, policy, now))
                .expect("memory store")
                .expect("just created");
            let candidates = ring.candidates(&tenant, &id, &wrong);
            (id, candidates)
        })
        .collect();
    (store, ids)
}

fn memory_store(c: &mut Criterion) {
    // Wrong codes never use up a verification, however many iterations
    // criterion runs, so every check takes the pending path.
    let policy = Policy {
        max_check_attempts: u32::MAX,
        ..Policy::default()
    };
    let ring = KeyRing::new(key("k1", 1));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (store, ids) = pending_store(&policy, &ring, now);
    let tenant = tenant();

    let mut group = c.benchmark_group("memory_store");
    group.bench_function(format!("check_wrong_code/{VERIFICATIONS}_pending"), |b| {
        let mut next = ids.iter().cycle();
        b.iter(|| {
            let (id, candidates) = next.next().expect("cycles forever");
            ready(store.check(&tenant, id, candidates, now)).expect("memory store")
        });
    });
    // CheckVerification's store step: the status, a cell of the
    // destination's failed-check budget, and the compare, under one lock.
    let budget = Budget {
        limit: Limit::FailedChecksPerDestination,
        quota: unlimited_quotas().get(Limit::FailedChecksPerDestination, &tenant),
    };
    group.bench_function(
        format!("check_within_budget/{VERIFICATIONS}_pending"),
        |b| {
            let mut next = ids.iter().cycle();
            b.iter(|| {
                let (id, candidates) = next.next().expect("cycles forever");
                let checked =
                    ready(store.check_within_budget(&tenant, id, candidates, budget, now))
                        .expect("memory store");
                assert!(matches!(checked, Some(BudgetedCheck::Checked(..))));
            });
        },
    );
    group.bench_function(format!("get/{VERIFICATIONS}_pending"), |b| {
        let mut next = ids.iter().cycle();
        b.iter(|| {
            let (id, _) = next.next().expect("cycles forever");
            ready(store.get(&tenant, id, now)).expect("memory store")
        });
    });
    // A Start's two store steps for a destination never seen: the
    // reservation that creates the verification, and the recorded send
    // with the code's hash. The store grows as the bench runs, as it does
    // under a load of Starts. Criterion calls the routine once per sample,
    // so the count of destinations lives outside it: each is new.
    let mut n = VERIFICATIONS;
    group.bench_function(
        format!("start_new_destination/{VERIFICATIONS}_pending"),
        |b| {
            let code = Code::parse("123456").expect("six digits");
            b.iter_batched(
                || {
                    n += 1;
                    let candidate = Verification::new(
                        VerificationId::generate(),
                        tenant.clone(),
                        email(n),
                        Purpose::PasswordReset,
                        email_delivery(),
                        &policy,
                        now,
                    );
                    let hash = ring.hash(&tenant, &candidate.id, &code);
                    (candidate, hash)
                },
                |(candidate, hash)| {
                    let id = candidate.id.clone();
                    ready(store.create(candidate, &policy, start_budget(), now)).expect("room");
                    ready(store.complete_send(&tenant, &id, sent(Some(hash), now), &policy, now))
                        .expect("memory store")
                        .expect("just created")
                },
                BatchSize::SmallInput,
            );
        },
    );
    group.finish();
}

/// A million at once and one more every nanosecond, for the budgets the
/// benches take from: no iteration is ever refused, so they measure the
/// allowed path that nearly every request takes.
fn unlimited_quotas() -> Quotas {
    let unlimited = Quota {
        burst: 1_000_000,
        period: Duration::from_nanos(1),
    };
    Quotas::from(LimitsConfig {
        requests_per_tenant: unlimited,
        failed_checks_per_destination: unlimited,
        starts_per_destination: unlimited,
        ..LimitsConfig::default()
    })
}

/// A start's budget that never refuses.
fn start_budget() -> Budget {
    Budget {
        limit: Limit::StartsPerDestination,
        quota: unlimited_quotas().get(Limit::StartsPerDestination, &tenant()),
    }
}

fn rate_limits(c: &mut Criterion) {
    let store = Store::Memory(MemoryStore::new(usize::MAX, Duration::from_secs(60)));
    let limits = RateLimits::new(&unlimited_quotas(), Clock::system(), store);
    let tenant = tenant();
    let destinations: Vec<Destination> = (0..LIMITED_DESTINATIONS).map(email).collect();

    let mut group = c.benchmark_group("rate_limits");
    group.bench_function("request/1_tenant", |b| {
        b.iter(|| limits.request(black_box(&tenant)).expect("never refused"));
    });
    group.bench_function(format!("check/{LIMITED_DESTINATIONS}_destinations"), |b| {
        let mut next = destinations.iter().cycle();
        b.iter(|| {
            let to = next.next().expect("cycles forever");
            ready(limits.check(&tenant, to)).expect("never refused");
        });
    });
    group.finish();
}

/// The gRPC layer's own work on each side of a use case: a
/// StartVerification request validated into a domain request (its
/// destination parsed and canonicalized), and a verification encoded as an
/// answer (every RPC's).
fn grpc_conversion(c: &mut Criterion) {
    let request = proto::StartVerificationRequest {
        to: "User.Name+tag@Example.COM".to_owned(),
        channel: proto::Channel::Email.into(),
        purpose: proto::Purpose::PasswordReset.into(),
        ..Default::default()
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut v = Verification::new(
        VerificationId::generate(),
        tenant(),
        email(1),
        Purpose::PasswordReset,
        email_delivery(),
        &Policy::default(),
        now,
    );
    let send = sent(None, now);
    v.record_send(
        send.delivery,
        send.attempts,
        None,
        send.outcome,
        &Policy::default(),
        now,
    );

    let mut group = c.benchmark_group("grpc_conversion");
    group.bench_function("start_request/email", |b| {
        b.iter(|| convert::start_request(black_box(&request)).expect("valid"));
    });
    group.bench_function("verification/1_attempt", |b| {
        b.iter(|| convert::verification(black_box(&v)));
    });
    group.finish();
}

/// A Start's message: the built-in templates, each kind of message from its
/// cached skeleton with the code put in.
fn message_text(c: &mut Criterion) {
    let templates = Templates::load(None, None).expect("the built-in templates load");
    let message = |channel| Message {
        tenant: tenant(),
        verification_id: VerificationId::generate(),
        to: match channel {
            Channel::Email => email(1),
            _ => Destination::parse("+14155550100").expect("valid number"),
        },
        extension: None,
        purpose: Purpose::PasswordReset,
        delivery: Delivery {
            channel,
            voice_mode: None,
            locale: None,
        },
        code: Code::parse("123456").expect("six digits"),
        match_digits: None,
        call_token: None,
        valid_for: Duration::from_secs(600),
        app_name: "Acme".to_owned(),
    };
    let mut group = c.benchmark_group("message_text");
    for (name, channel) in [("email", Channel::Email), ("sms", Channel::Sms)] {
        let message = message(channel);
        group.bench_function(name, |b| {
            b.iter(|| templates.render(black_box(&message)).expect("renders"));
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    grpc_conversion,
    code_generation,
    code_hmac,
    message_text,
    memory_store,
    rate_limits
);
criterion_main!(benches);
