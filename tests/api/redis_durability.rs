//! Durable acknowledgements (`store.redis.wait_replicas`): a caller is told
//! of an approval, a spent attempt or a send only once a replica holds it,
//! so a failover cannot undo what a caller was told. The replica is frozen
//! (SIGSTOP) to make it miss its acknowledgement.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::Code;
use verifyd::{config::Config, proto, proto::VerificationStatus, secret::Secret};

use crate::{
    fake_twilio::{FakeTwilio, sid},
    helpers::{
        TestApp, next_status_within, once_served, resend_on, sms_to, spawn, status, test_clock,
        test_config, use_redis, wrong,
    },
    redis_server::{RedisSentinels, RedisServer, replicated, wait_for},
    redis_store::{DATA_NODE_ACL, documented_acl_commands},
    voice::{GatherEl, Phone, call, with_voice},
};

/// How long verifyd may take to answer again once the sentinels have
/// promoted the replica (as in the Sentinel tests).
const RECOVERY: Duration = Duration::from_secs(10);

fn durable(config: &mut Config) {
    config.store.redis.wait_replicas = 1;
    config.store.redis.wait_timeout = Duration::from_millis(100);
}

/// A verifyd that waits for one replica, signed in to `primary` as an
/// ACL user with exactly the commands docs/redis.md lists.
async fn on_primary_as_acl_user(primary: &RedisServer) -> TestApp {
    let commands = documented_acl_commands(DATA_NODE_ACL);
    assert!(commands.contains(&"wait".to_owned()), "{commands:?}");
    let mut acl = ["ACL", "SETUSER", "verifyd", "reset", "on", ">node-password"]
        .map(str::to_owned)
        .to_vec();
    acl.extend(["~verifyd:*", "&verifyd:watch:*"].map(str::to_owned));
    acl.extend(commands.iter().map(|c| format!("+{c}")));
    let acl: Vec<&str> = acl.iter().map(String::as_str).collect();
    assert_eq!(primary.cli(&acl), "OK");
    let mut config = test_config();
    use_redis(&mut config, &[primary.url()]);
    durable(&mut config);
    config.store.redis.username = Some("verifyd".to_owned());
    config.store.redis.password = Some(Secret::new("node-password"));
    spawn(config, test_clock()).await
}

fn unavailable<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, what: &str) {
    let error = answer.expect_err(what);
    assert_eq!(error.code(), Code::Unavailable, "{what}: {error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_no_replica_acknowledged_stays_pending_until_the_same_code_checks_again() {
    let [primary, replica] = tokio::task::block_in_place(replicated);
    let app = on_primary_as_acl_user(&primary).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    let mut watch = app.watch(&v.id).await.expect("watch");
    let first = next_status_within(RECOVERY, &mut watch).await;
    assert_eq!(status(&first), VerificationStatus::Pending);

    replica.freeze();
    unavailable(
        app.check(&v.id, &wrong(&code)).await,
        "a spent attempt is told only once a replica holds it",
    );
    unavailable(
        app.check(&v.id, &code).await,
        "an approval is told only once a replica holds it",
    );
    let held = app.get(&v.id).await.expect("get");
    assert_eq!(
        status(&held),
        VerificationStatus::Pending,
        "an unacknowledged approval reads as pending"
    );
    assert_eq!(held.check_attempts_remaining, 4, "the attempt was spent");
    unavailable(
        app.check(&v.id, &wrong(&code)).await,
        "another code meets an approval awaiting its replicas",
    );
    unavailable(
        app.resend(resend_on(&v.id, proto::Channel::Sms)).await,
        "nor can it be sent again meanwhile",
    );
    assert_eq!(
        app.get(&v.id).await.expect("get").check_attempts_remaining,
        4,
        "and that spent nothing"
    );

    replica.thaw();
    assert!(
        app.check(&v.id, &code).await.expect("check").approved,
        "the same code, once the replica is back, is told approved"
    );
    // Watchers heard of the spent attempt; of the approval only now.
    let pushed = loop {
        let next = next_status_within(RECOVERY, &mut watch).await;
        if status(&next) != VerificationStatus::Pending {
            break next;
        }
    };
    assert_eq!(status(&pushed), VerificationStatus::Approved);
    let again = app.check(&v.id, &code).await.expect_err("told once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Approved
    );
    let replica_holds = replica.cli(&["DBSIZE"]);
    assert_ne!(replica_holds, "0", "the replica holds the verification");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_told_to_its_caller_survives_a_failover_only_with_wait_replicas() {
    let mut redis = tokio::task::block_in_place(RedisSentinels::start);
    let on_sentinels = |wait: bool| {
        let mut config = test_config();
        use_redis(&mut config, &[]);
        config.store.redis.sentinel.master_name = crate::redis_server::SENTINEL_MASTER.into();
        config.store.redis.sentinel.nodes = redis.urls();
        if wait {
            durable(&mut config);
        }
        spawn(config, test_clock())
    };
    let waiting = on_sentinels(true).await;
    let asynchronous = on_sentinels(false).await;
    let told = waiting.started(sms_to("+14155550100")).await;
    let held_back = waiting.started(sms_to("+14155550101")).await;
    let lost = asynchronous.started(sms_to("+14155550102")).await;
    let code_of = |app: &TestApp, v: &proto::Verification| app.outbox.code_for(&v.id);
    assert!(
        waiting
            .check(&told.id, &code_of(&waiting, &told))
            .await
            .expect("check")
            .approved
    );
    let old = redis.primary_port();
    tokio::task::block_in_place(|| redis.replicate());

    // The replica stops taking the primary's writes (it follows a
    // primary that is not there: a frozen one would still read what its
    // kernel buffered); then the primary dies, and the replica is
    // promoted with what it had.
    let replica = &redis.nodes[1];
    assert_eq!(replica.cli(&["REPLICAOF", "127.0.0.1", "1"]), "OK");
    unavailable(
        waiting
            .check(&held_back.id, &code_of(&waiting, &held_back))
            .await,
        "not acknowledged: the caller is not told",
    );
    assert!(
        asynchronous
            .check(&lost.id, &code_of(&asynchronous, &lost))
            .await
            .expect("check")
            .approved,
        "without wait_replicas the caller is told at once"
    );
    tokio::task::block_in_place(|| {
        redis.primary().stop();
        let replica = &redis.nodes[1];
        let rejoined = replica.cli(&["REPLICAOF", "127.0.0.1", &old.to_string()]);
        assert_eq!(rejoined, "OK");
        redis.wait_for_failover_from(old);
    });

    let after = once_served(RECOVERY, || waiting.get(&told.id)).await;
    assert_eq!(
        status(&after),
        VerificationStatus::Approved,
        "an acknowledged approval survives the failover"
    );
    let after = once_served(RECOVERY, || asynchronous.get(&lost.id)).await;
    assert_eq!(
        status(&after),
        VerificationStatus::Pending,
        "the approval its caller was told of is gone: replication is asynchronous"
    );
    // The approval never told is lost too. With no replica left, nothing
    // can be acknowledged; once the old primary is back as a replica, the
    // same code approves it, once.
    unavailable(
        waiting
            .check(&held_back.id, &code_of(&waiting, &held_back))
            .await,
        "no replica left to acknowledge",
    );
    tokio::task::block_in_place(|| {
        redis.nodes[0].restart();
        wait_for(
            RECOVERY * 6,
            "the old primary to rejoin as a replica",
            || redis.primary().cli(&["WAIT", "1", "100"]) == "1",
        );
    });
    // The restarted node comes back as an empty primary until the
    // sentinels make it a replica, and a connection idle since it died may
    // reach it in that moment: it finds nothing there, which fails closed.
    // The same code then approves on the promoted primary, once.
    let began = std::time::Instant::now();
    loop {
        match waiting
            .check(&held_back.id, &code_of(&waiting, &held_back))
            .await
        {
            Ok(checked) => {
                assert!(checked.approved);
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e.code(), Code::Unavailable | Code::NotFound),
                    "fail closed: {e:?}"
                );
                assert!(began.elapsed() < RECOVERY * 6, "not served: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let again = waiting
        .check(&held_back.id, &code_of(&waiting, &held_back))
        .await
        .expect_err("told once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    waiting.stop().await;
    asynchronous.stop().await;
}

/// A verifyd waiting for one replica of `primary`, placing calls through
/// `fake`; a press-# call to the user, answered, and its first question.
async fn on_a_call(primary: &RedisServer, fake: &FakeTwilio) -> (TestApp, String, Phone, GatherEl) {
    fake.accept_calls(&sid("CA", 1)).await;
    let mut config = test_config();
    use_redis(&mut config, &[primary.url()]);
    durable(&mut config);
    with_voice(&mut config, fake);
    let app = spawn(config, test_clock()).await;
    let started = app
        .start(call(proto::VoiceMode::Confirm))
        .await
        .expect("start");
    let id = started.verification.expect("v").id;
    let phone = Phone::picked_up(&app, fake).await;
    let gather = phone.answer("human").await.gather.expect("a gather");
    (app, id, phone, gather)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_press_no_replica_acknowledged_asks_for_the_key_again() {
    let [primary, replica] = tokio::task::block_in_place(replicated);
    let fake = FakeTwilio::start().await;
    let (app, id, phone, gather) = on_a_call(&primary, &fake).await;

    replica.freeze();
    let again = phone.press(&gather, "#").await;
    let retry = again.gather.expect("asked again");
    assert!(
        retry.prompt.contains("press the pound key again"),
        "{}",
        retry.prompt
    );
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Pending
    );

    replica.thaw();
    let done = phone.press(&retry, "#").await;
    assert!(done.hangup && done.gather.is_none(), "{done:?}");
    assert!(
        done.says.iter().any(|s| s.contains("verified")),
        "{:?}",
        done.says
    );
    let mut watch = app.watch(&id).await.expect("watch");
    let now = watch.next().await.expect("current").expect("ok");
    assert_eq!(
        status(&now.verification.expect("v")),
        VerificationStatus::Approved
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_approval_told_to_no_one_can_be_canceled_or_superseded() {
    let [primary, replica] = tokio::task::block_in_place(replicated);
    let mut config = test_config();
    use_redis(&mut config, &[primary.url()]);
    durable(&mut config);
    let app = spawn(config, test_clock()).await;
    let canceled = app.started(sms_to("+14155550100")).await;
    let superseded = app.started(sms_to("+14155550101")).await;

    replica.freeze();
    for v in [&canceled, &superseded] {
        unavailable(
            app.check(&v.id, &app.outbox.code_for(&v.id)).await,
            "not acknowledged",
        );
    }
    let after = app.cancel(&canceled.id).await.expect("cancel");
    assert_eq!(status(&after), VerificationStatus::Canceled);
    replica.thaw();

    // A new start for the destination supersedes the approval no one was
    // told of, as it would a pending verification.
    app.clock.advance(Duration::from_secs(120));
    app.started(sms_to("+14155550101")).await;
    assert_eq!(
        status(&app.get(&superseded.id).await.expect("get")),
        VerificationStatus::Superseded
    );
    for v in [&canceled, &superseded] {
        let late = app
            .check(&v.id, &app.outbox.code_for(&v.id))
            .await
            .expect_err("ended");
        assert_eq!(late.code(), Code::FailedPrecondition, "{}", v.id);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fraud_key_still_reports_an_approval_told_to_no_one() {
    let [primary, replica] = tokio::task::block_in_place(replicated);
    let fake = FakeTwilio::start().await;
    let (app, id, phone, gather) = on_a_call(&primary, &fake).await;
    replica.freeze();
    let again = phone.press(&gather, "#").await.gather.expect("asked again");
    replica.thaw();
    let menu = phone
        .press(&again, "0")
        .await
        .gather
        .expect("the fraud menu");
    let reported = phone.press(&menu, "#").await;
    assert!(reported.hangup, "{reported:?}");
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Denied
    );
    app.stop().await;
}
