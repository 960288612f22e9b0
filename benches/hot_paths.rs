//! Criterion benches for the pieces every request goes through: drawing a
//! code, the code HMACs, the in-memory store's check, get and a Start's two
//! steps, and the in-process rate limiters on their allowed path.
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
    domain::{
        Channel, Code, CodeHash, CodeLength, DeliveryStatus, Destination, KeyRing, MatchDigits,
        Policy, Purpose, SendAttempt, TenantId, Verification, VerificationId,
        code::{HmacKey, KeyId},
        verification::Delivery,
    },
    ratelimit::{LimitsConfig, QuotaConfig, Quotas, RateLimits},
    store::{CompletedSend, MemoryStore, Reservation, Store},
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
        new_hash,
        call: None,
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
            let reserved = ready(store.reserve_send(candidate, policy, None, now)).expect("room");
            let Reservation::Granted { verification, .. } = reserved else {
                panic!("a new destination's first send is granted");
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
    // under a load of Starts.
    group.bench_function(
        format!("start_new_destination/{VERIFICATIONS}_pending"),
        |b| {
            let code = Code::parse("123456").expect("six digits");
            let mut n = VERIFICATIONS;
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
                    ready(store.reserve_send(candidate, &policy, None, now)).expect("room");
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

fn rate_limits(c: &mut Criterion) {
    // A million at once and one more every nanosecond: no iteration is
    // ever refused, so this is the allowed path that nearly every request
    // takes.
    let unlimited = QuotaConfig {
        burst: 1_000_000,
        period: Duration::from_nanos(1),
    };
    let quotas = Quotas::from(LimitsConfig {
        requests_per_tenant: unlimited,
        failed_checks_per_destination: unlimited,
        ..LimitsConfig::default()
    });
    let limits = RateLimits::new(&quotas, Clock::system());
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

criterion_group!(
    benches,
    code_generation,
    code_hmac,
    memory_store,
    rate_limits
);
criterion_main!(benches);
