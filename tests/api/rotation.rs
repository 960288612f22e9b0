//! HMAC key rotation across replicas: apps with different key rings share
//! one Redis (and one clock), as a fleet does in the middle of a rotation.
//! A code checks wherever the key that hashed it is still in the ring, and
//! is just a wrong code where it is not.

use verifyd::{clock::Clock, proto::VerificationStatus, secret::Secret};

use crate::{
    helpers::{TestApp, sms_to, spawn, status, test_clock, test_config, use_redis},
    redis_server::RedisServer,
};

const KEY_K1: &str = "rotation-test-key-k1-0123456789abcdef";
const KEY_K2: &str = "rotation-test-key-k2-fedcba9876543210";

/// An app on `redis` and `clock` whose ring is `active` plus `previous`.
async fn app_with_keys(
    redis: &RedisServer,
    clock: &Clock,
    active: (&str, &str),
    previous: &[(&str, &str)],
) -> TestApp {
    let mut config = test_config();
    use_redis(&mut config, &[redis.url()]);
    config.hmac.key_id = active.0.to_owned();
    config.hmac.key = Some(Secret::new(active.1));
    config.hmac.previous_keys = previous
        .iter()
        .map(|(id, key)| ((*id).to_owned(), Secret::new(*key)))
        .collect();
    spawn(config, clock.clone()).await
}

#[tokio::test]
async fn a_code_checks_under_a_previous_key_and_is_a_wrong_code_once_that_key_is_gone() {
    let redis = RedisServer::start();
    let clock = test_clock();
    // A: before the rotation. B: after it, k1 still accepted. C: after k1
    // was removed.
    let a = app_with_keys(&redis, &clock, ("k1", KEY_K1), &[]).await;
    let b = app_with_keys(&redis, &clock, ("k2", KEY_K2), &[("k1", KEY_K1)]).await;
    let c = app_with_keys(&redis, &clock, ("k2", KEY_K2), &[]).await;

    let v = a.started(sms_to("+14155550100")).await;
    let code = a.outbox.code_for(&v.id);
    let checked = b.check(&v.id, &code).await.expect("check on b");
    assert!(checked.approved, "k1 is a previous key on b");
    let checked = checked.verification.expect("verification");
    assert_eq!(status(&checked), VerificationStatus::Approved);

    let v = a.started(sms_to("+14155550101")).await;
    let code = a.outbox.code_for(&v.id);
    let attempts = v.check_attempts_remaining;
    let checked = c.check(&v.id, &code).await.expect("check on c");
    assert!(!checked.approved, "c no longer knows k1");
    let checked = checked.verification.expect("verification");
    assert_eq!(status(&checked), VerificationStatus::Pending);
    assert_eq!(
        checked.check_attempts_remaining,
        attempts - 1,
        "an attempt spent, as for any wrong code"
    );
    let got = a.get(&v.id).await.expect("get on a");
    assert_eq!(status(&got), VerificationStatus::Pending);
    assert_eq!(got.check_attempts_remaining, attempts - 1);

    let checked = b.check(&v.id, &code).await.expect("check on b");
    assert!(
        checked.approved,
        "the same code still checks where k1 is known"
    );
    assert_eq!(
        status(&checked.verification.expect("verification")),
        VerificationStatus::Approved
    );
}

#[tokio::test]
async fn codes_issued_under_the_new_active_key_check_on_every_replica_that_holds_it() {
    let redis = RedisServer::start();
    let clock = test_clock();
    // Step (a) of the procedure: k2 deployed as a previous key first.
    let staged = app_with_keys(&redis, &clock, ("k1", KEY_K1), &[("k2", KEY_K2)]).await;
    // Step (b): k2 active, k1 previous.
    let rotated = app_with_keys(&redis, &clock, ("k2", KEY_K2), &[("k1", KEY_K1)]).await;
    // Step (c): k1 removed.
    let done = app_with_keys(&redis, &clock, ("k2", KEY_K2), &[]).await;

    let v = rotated.started(sms_to("+14155550100")).await;
    let code = rotated.outbox.code_for(&v.id);
    assert!(
        rotated
            .check(&v.id, &code)
            .await
            .expect("check on the issuing app")
            .approved
    );

    for (n, (name, checker)) in [("staged", &staged), ("done", &done)]
        .into_iter()
        .enumerate()
    {
        let v = rotated
            .started(sms_to(&format!("+1415555010{}", n + 1)))
            .await;
        let code = rotated.outbox.code_for(&v.id);
        let checked = checker.check(&v.id, &code).await.expect("check");
        assert!(checked.approved, "a k2 code checks on the {name} replica");
    }

    // And a code from a replica not yet moved to k2 checks on a moved one.
    let v = staged.started(sms_to("+14155550103")).await;
    let code = staged.outbox.code_for(&v.id);
    assert!(rotated.check(&v.id, &code).await.expect("check").approved);
}
