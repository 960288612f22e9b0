//! What only a shared store can promise: replicas that act as one service,
//! Redis Cluster, fail-closed outages, and a key space that gives nothing
//! away. Every app here runs on Redis, whichever store the rest of the
//! suite uses.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use verifyd::{
    clock::Clock,
    config::Config,
    proto::{self, VerificationStatus},
};

use crate::{
    helpers::{
        TestApp, next_status_within, resend_on, sms_to, spawn, status, test_clock, test_config,
        use_redis, wrong,
    },
    redis_server::{RedisCluster, RedisServer, TlsRedis},
    server::http_get,
};

/// How long an outage may take to fail a request: well under any sane
/// caller deadline (the command timeout here is 300 ms).
const FAIL_FAST: Duration = Duration::from_secs(2);
/// How long readiness and recovery may take to notice Redis (health is
/// re-checked every second).
const NOTICE: Duration = Duration::from_secs(15);

/// Runs the requests at once, on the runtime's threads, and collects
/// their results in order.
async fn concurrently<T: Send + 'static>(
    requests: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = requests.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("request task"));
    }
    results
}

fn check_on(
    app: &TestApp,
    id: &str,
    code: &str,
) -> impl Future<Output = Result<proto::CheckVerificationResponse, tonic::Status>> + Send + 'static
{
    let mut client = app.client.clone();
    let request = proto::CheckVerificationRequest {
        id: id.to_owned(),
        code: code.to_owned(),
    };
    async move {
        client
            .check_verification(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

fn start_on(
    app: &TestApp,
    request: proto::StartVerificationRequest,
) -> impl Future<Output = Result<proto::StartVerificationResponse, tonic::Status>> + Send + 'static
{
    let mut client = app.client.clone();
    async move {
        client
            .start_verification(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Two replicas of one service: one Redis, one clock, same config.
async fn replicas(redis: &RedisServer, configure: impl Fn(&mut Config)) -> (TestApp, TestApp) {
    let clock = test_clock();
    let config = || {
        let mut config = test_config();
        use_redis(&mut config, &[redis.url()]);
        configure(&mut config);
        config
    };
    (
        spawn(config(), clock.clone()).await,
        spawn(config(), clock).await,
    )
}

async fn on_redis(urls: &[String], clock: Clock) -> TestApp {
    let mut config = test_config();
    use_redis(&mut config, urls);
    spawn(config, clock).await
}

#[tokio::test]
async fn a_code_sent_by_one_replica_approves_on_the_other_once() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |_| {}).await;
    let v = a.started(sms_to("+14155550100")).await;
    let code = a.outbox.code_for(&v.id);
    let wrong_code = b.check(&v.id, &wrong(&code)).await.expect("check on b");
    assert!(!wrong_code.approved);
    assert_eq!(a.get(&v.id).await.expect("get").check_attempts_remaining, 4);
    assert!(b.check(&v.id, &code).await.expect("check").approved);
    let again = a.check(&v.id, &code).await.expect_err("single use");
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_right_checks_over_two_replicas_approve_exactly_once() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |_| {}).await;
    let v = a.started(sms_to("+14155550100")).await;
    let code = a.outbox.code_for(&v.id);
    let checks = (0..32).map(|i| check_on(if i % 2 == 0 { &a } else { &b }, &v.id, &code));
    let results = concurrently(checks).await;
    let approvals = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.approved))
        .count();
    assert_eq!(approvals, 1);
    for result in &results {
        match result {
            Ok(r) => assert!(r.approved, "the right code is never rejected"),
            // Already approved, or past the destination's check budget
            // (a cell is taken before each comparison).
            Err(e) => assert!(
                matches!(e.code(), Code::FailedPrecondition | Code::ResourceExhausted),
                "{e:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_over_two_replicas_create_one_verification() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.limits.starts_per_destination.burst = 100;
    })
    .await;
    let starts =
        (0..32).map(|i| start_on(if i % 2 == 0 { &a } else { &b }, sms_to("+14155550100")));
    let results = concurrently(starts).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.verification.clone().expect("verification").id)
        .collect();
    assert_eq!(ids.len(), 1, "one verification: {results:?}");
    let sent = a.outbox.lines_for(ids.first().expect("one")).len()
        + b.outbox.lines_for(ids.first().expect("one")).len();
    assert_eq!(sent, 1, "one message");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        // The others hit the least gap.
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_without_a_gap_leave_exactly_one_pending_verification() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.limits.starts_per_destination.burst = 100;
        c.code.resend_cooldown = Duration::ZERO;
    })
    .await;
    let starts =
        (0..16).map(|i| start_on(if i % 2 == 0 { &a } else { &b }, sms_to("+14155550100")));
    let results = concurrently(starts).await;
    let mut pending = 0;
    for result in &results {
        let id = &result
            .as_ref()
            .expect("no gap: each creates its own")
            .verification
            .as_ref()
            .expect("v")
            .id;
        match status(&a.get(id).await.expect("get")) {
            VerificationStatus::Pending => pending += 1,
            VerificationStatus::Superseded => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        pending, 1,
        "each start superseded the one before, atomically"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_checks_split_over_two_replicas_spend_exactly_the_attempt_limit() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.code.max_check_attempts = 20;
        c.limits.failed_checks_per_destination.burst = 100;
    })
    .await;
    let v = a.started(sms_to("+14155550100")).await;
    let code = a.outbox.code_for(&v.id);
    let wrong_code = wrong(&code);
    let checks = (0..20).map(|i| check_on(if i % 2 == 0 { &a } else { &b }, &v.id, &wrong_code));
    let rejected = concurrently(checks)
        .await
        .into_iter()
        .filter(|r| r.as_ref().is_ok_and(|r| !r.approved))
        .count();
    assert_eq!(rejected, 20, "every wrong code counted, none lost");
    let after = b.get(&v.id).await.expect("get");
    assert_eq!(after.check_attempts_remaining, 0);
    assert_eq!(status(&after), VerificationStatus::MaxAttemptsReached);
    let late = a.check(&v.id, &code).await.expect_err("no attempts left");
    assert_eq!(late.code(), Code::FailedPrecondition);
}

/// The name of the limit a refusal reports.
fn refused_by(status: &tonic::Status) -> &str {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .message()
        .strip_prefix("rate limit ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a rate limit: {status:?}"))
}

#[tokio::test]
async fn the_destination_budget_is_one_budget_across_replicas() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.code.resend_cooldown = Duration::ZERO;
        c.code.max_send_attempts = 20;
    })
    .await;
    // The default budget: five starts, then one every two minutes.
    for i in 0..5 {
        let app = if i % 2 == 0 { &a } else { &b };
        app.start(sms_to("+14155550100"))
            .await
            .expect("within budget");
    }
    for app in [&a, &b] {
        let refused = app
            .start(sms_to("+14155550100"))
            .await
            .expect_err("budget spent on both replicas together");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(refused.message(), verifyd::grpc::DESTINATION_BUSY);
    }
}

#[tokio::test]
async fn the_ip_budget_is_one_budget_across_replicas() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.limits.starts_per_ip.burst = 2;
    })
    .await;
    let from_one_ip = |to: &str| proto::StartVerificationRequest {
        end_user_ip: "203.0.113.9".into(),
        ..sms_to(to)
    };
    a.started(from_one_ip("+14155550100")).await;
    b.started(from_one_ip("+14155550101")).await;
    for app in [&a, &b] {
        let refused = app
            .start(from_one_ip("+14155550102"))
            .await
            .expect_err("budget spent on both replicas together");
        assert_eq!(refused_by(&refused), "starts_per_ip");
    }
}

#[tokio::test]
async fn a_prefix_budget_and_the_block_it_trips_hold_across_replicas() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.limits.starts_per_prefix.burst = 2;
    })
    .await;
    a.started(sms_to("+14155550100")).await;
    b.started(sms_to("+14155550101")).await;
    let tripped = a
        .start(sms_to("+14155550102"))
        .await
        .expect_err("budget spent on both replicas together");
    assert_eq!(refused_by(&tripped), "starts_per_prefix");
    let blocked = b
        .start(sms_to("+14155550103"))
        .await
        .expect_err("blocked on the other replica too");
    assert_eq!(blocked.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_clicks_over_two_replicas_give_their_prefix_cells_back() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, crate::fraud::pumping_guard).await;
    let v = a.started(sms_to("+14155550111")).await;
    // 40 starts inside the least gap and 40 resends inside the cooldown,
    // at once, over both replicas.
    let starts =
        (0..40).map(|i| start_on(if i % 2 == 0 { &a } else { &b }, sms_to("+14155550111")));
    for refused in concurrently(starts).await {
        assert_eq!(
            refused.expect_err("inside the gap").code(),
            Code::ResourceExhausted
        );
    }
    let resends = (0..40).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let mut client = app.client.clone();
        let request = resend_on(&v.id, proto::Channel::Sms);
        async move { client.resend_verification(request).await }
    });
    for refused in concurrently(resends).await {
        assert_eq!(
            refused.expect_err("inside the cooldown").code(),
            Code::ResourceExhausted
        );
    }
    // The range's budget is whole again, and nothing is blocked.
    b.started(sms_to("+14155550177")).await;
}

#[tokio::test]
async fn the_failed_check_budget_is_one_budget_across_replicas() {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |c| {
        c.limits.failed_checks_per_destination.burst = 3;
        c.code.max_check_attempts = 10;
    })
    .await;
    let v = a.started(sms_to("+14155550100")).await;
    let code = a.outbox.code_for(&v.id);
    for i in 0..3 {
        let app = if i % 2 == 0 { &a } else { &b };
        assert!(
            !app.check(&v.id, &wrong(&code))
                .await
                .expect("within budget")
                .approved
        );
    }
    for app in [&a, &b] {
        let refused = app
            .check(&v.id, &code)
            .await
            .expect_err("budget spent on both replicas together");
        assert_eq!(refused_by(&refused), "failed_checks_per_destination");
    }
}

/// A record written before verifyd named the failed-check budget in it
/// (`check_budget`) is checked in separate steps, against the same budget
/// the one-step check script takes from, until a resend names it.
#[tokio::test]
async fn a_record_without_its_check_budget_spends_the_same_budget_in_separate_steps() {
    let redis = RedisServer::start();
    let (app, _) = replicas(&redis, |c| {
        c.limits.failed_checks_per_destination.burst = 3;
    })
    .await;
    let to = "+14155550100";
    let current = app.started(sms_to(to)).await;
    app.clock.advance(Duration::from_secs(30));
    let older = app
        .started(proto::StartVerificationRequest {
            purpose: proto::Purpose::Enrollment.into(),
            ..sms_to(to)
        })
        .await;
    let hash = redis.cli(&["--raw", "--scan", "--pattern", &format!("*:v:{}", older.id)]);
    assert_eq!(redis.cli(&["HDEL", &hash, "check_budget"]), "1", "{hash}");

    let current_code = app.outbox.code_for(&current.id);
    let older_code = app.outbox.code_for(&older.id);
    for (id, code) in [
        (&current.id, &current_code),
        (&current.id, &current_code),
        (&older.id, &older_code),
    ] {
        let checked = app.check(id, &wrong(code)).await.expect("within budget");
        assert!(!checked.approved);
    }
    let older_now = app.get(&older.id).await.expect("found");
    assert_eq!(
        older_now.check_attempts_remaining,
        older.check_attempts_remaining - 1,
        "the separate steps spent an attempt"
    );
    for (id, code) in [(&current.id, &current_code), (&older.id, &older_code)] {
        let refused = app.check(id, code).await.expect_err("one budget, spent");
        assert_eq!(refused_by(&refused), "failed_checks_per_destination");
    }
    // A resend names the budget in the record, for one-step checks.
    app.clock.advance(Duration::from_secs(60));
    let resent = app.resent(resend_on(&older.id, proto::Channel::Sms)).await;
    assert_eq!(resent.id, older.id);
    assert_eq!(redis.cli(&["HEXISTS", &hash, "check_budget"]), "1");
}

/// The commands docs/redis.md says an ACL user needs, in ACL syntax
/// (`SCRIPT LOAD` is `script|load`): every upper-case word or pair in
/// backticks in the paragraph that begins with `opening` ("The Redis ACL
/// user needs").
pub fn documented_acl_commands(opening: &str) -> Vec<String> {
    let doc = include_str!("../../docs/redis.md");
    let start = doc
        .find(opening)
        .unwrap_or_else(|| panic!("docs/redis.md has a paragraph \"{opening}…\""));
    let paragraph = doc[start..].split("\n\n").next().unwrap_or_default();
    paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == ' '))
        .map(|word| word.to_lowercase().replace(' ', "|"))
        .collect()
}

/// How docs/redis.md opens its list of what verifyd's user on the Redis
/// nodes needs.
pub const DATA_NODE_ACL: &str = "The Redis ACL user needs";

/// Makes the ACL user `verifyd` with the commands docs/redis.md lists,
/// less `without`, and a verifyd that signs in as that user.
async fn app_as_acl_user(redis: &RedisServer, without: &[&str]) -> TestApp {
    let commands = documented_acl_commands(DATA_NODE_ACL);
    assert!(commands.contains(&"evalsha".to_owned()), "{commands:?}");
    let mut acl = vec![
        "ACL",
        "SETUSER",
        "verifyd",
        "reset",
        "on",
        ">acl-test-password",
        "~verifyd:*",
        "&verifyd:watch:*",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    acl.extend(
        commands
            .iter()
            .filter(|c| !without.contains(&c.as_str()))
            .map(|c| format!("+{c}")),
    );
    let acl: Vec<&str> = acl.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&acl), "OK");

    let mut config = test_config();
    use_redis(&mut config, &[redis.url()]);
    config.store.redis.username = Some("verifyd".to_owned());
    config.store.redis.password = Some(verifyd::secret::Secret::new("acl-test-password"));
    spawn(config, test_clock()).await
}

/// A user with exactly the commands, keys and channels docs/redis.md lists
/// runs every RPC, watching and expiry included: the list cannot fall
/// behind what verifyd sends (it did once, when Get began to send MULTI).
#[tokio::test]
async fn the_documented_acl_is_enough_for_every_rpc() {
    let redis = RedisServer::start();
    let app = app_as_acl_user(&redis, &[]).await;
    let req = proto::StartVerificationRequest {
        end_user_ip: "203.0.113.9".into(),
        idempotency_key: "acl-flow".into(),
        ..sms_to("+14155550100")
    };
    let v = app.started(req.clone()).await;
    let mut stream = app.watch(&v.id).await.expect("watch");
    assert_eq!(
        status(&next_status(&mut stream).await),
        VerificationStatus::Pending
    );
    let code = app.outbox.code_for(&v.id);
    assert_eq!(app.started(req).await.id, v.id, "the idempotent replay");
    assert!(
        !app.check(&v.id, &wrong(&code))
            .await
            .expect("check")
            .approved
    );
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Pending
    );
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    while status(&next_status(&mut stream).await) != VerificationStatus::Approved {}
    // A second verification: resent, superseded, canceled; and a third
    // left to expire.
    let other = app.started(sms_to("+14155550101")).await;
    app.clock.advance(Duration::from_secs(30));
    app.resent(resend_on(&other.id, proto::Channel::Sms)).await;
    let newer = app.started(sms_to("+14155550101")).await;
    assert_eq!(
        status(&app.get(&other.id).await.expect("get")),
        VerificationStatus::Superseded
    );
    app.cancel(&newer.id).await.expect("cancel");
    let left = app.started(sms_to("+14155550102")).await;
    let mut stream = app.watch(&left.id).await.expect("watch");
    next_status(&mut stream).await;
    app.clock.advance(Duration::from_secs(600));
    while status(&next_status(&mut stream).await) != VerificationStatus::Expired {}
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.is_empty(), "refused by the ACL: {log}");
}

/// An ACL written before Get read in a MULTI/EXEC refuses MULTI: the Get
/// fails closed with UNAVAILABLE (the refused MULTI let its two reads run
/// outside a transaction, and EXEC is refused too), and the connection
/// stays in step: every other RPC still gets its own reply.
#[tokio::test]
async fn a_redis_that_refuses_multi_fails_a_get_closed_and_nothing_else() {
    let redis = RedisServer::start();
    let app = app_as_acl_user(&redis, &["multi", "exec"]).await;
    let v = app.started(sms_to("+14155550100")).await;
    let connections = redis.clients_of("verifyd");
    let refused = app.get(&v.id).await.expect_err("MULTI is refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // The same connections: none broke and was made again (redis-rs's own
    // transactions lose count of the replies here and drop the connection).
    assert_eq!(redis.clients_of("verifyd"), connections);
    let code = app.outbox.code_for(&v.id);
    assert!(
        !app.check(&v.id, &wrong(&code))
            .await
            .expect("a check after the refused Get")
            .approved
    );
    let other = app.started(sms_to("+14155550101")).await;
    assert_ne!(other.id, v.id);
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    let again = app.get(&v.id).await.expect_err("still refused");
    assert_eq!(again.code(), Code::Unavailable);
}

async fn next_status(
    stream: &mut tonic::Streaming<proto::WatchVerificationResponse>,
) -> proto::Verification {
    next_status_within(NOTICE, stream).await
}

#[tokio::test]
async fn a_watcher_on_one_replica_sees_changes_made_on_the_other_even_after_its_subscription_is_killed()
 {
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis, |_| {}).await;
    let v = a.started(sms_to("+14155550100")).await;
    let code = a.outbox.code_for(&v.id);
    let mut stream = a.watch(&v.id).await.expect("watch on a");
    assert_eq!(
        status(&next_status(&mut stream).await),
        VerificationStatus::Pending
    );

    b.check(&v.id, &wrong(&code))
        .await
        .expect("wrong code on b");
    assert_eq!(next_status(&mut stream).await.check_attempts_remaining, 4);

    // Drop a's pub/sub connection mid-watch. Once a has subscribed again,
    // a change made on b reaches it by pub/sub, not only by the re-read a
    // reconnect brings.
    let channel = format!("verifyd:watch:default:{}", v.id);
    let subscribers = || redis.cli(&["PUBSUB", "NUMSUB", &channel]);
    assert!(subscribers().ends_with('1'), "watched: {}", subscribers());
    assert!(redis.kill_pubsub_clients() >= 1);
    let began = Instant::now();
    while !subscribers().ends_with('1') {
        assert!(began.elapsed() < NOTICE, "a never subscribed again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.check(&v.id, &wrong(&code))
        .await
        .expect("wrong code on b");
    assert_eq!(next_status(&mut stream).await.check_attempts_remaining, 3);
    b.check(&v.id, &code).await.expect("right code on b");
    assert_eq!(
        status(&next_status(&mut stream).await),
        VerificationStatus::Approved
    );
}

#[tokio::test]
async fn the_full_flow_runs_on_redis_cluster() {
    let cluster = RedisCluster::start();
    let clock = test_clock();
    let a = on_redis(&cluster.urls(), clock.clone()).await;
    let b = on_redis(&cluster.urls(), clock).await;
    // Destinations land in different slots, hence on different masters.
    for n in 0..6 {
        let to = format!("+1415555010{n}");
        let v = a.started(sms_to(&to)).await;
        let code = a.outbox.code_for(&v.id);
        let mut stream = b.watch(&v.id).await.expect("watch on b");
        assert_eq!(
            status(&next_status(&mut stream).await),
            VerificationStatus::Pending
        );
        assert!(!b.check(&v.id, &wrong(&code)).await.expect("check").approved);
        assert_eq!(next_status(&mut stream).await.check_attempts_remaining, 4);
        // A resend from the other replica, by id: a new code.
        a.clock.advance(Duration::from_secs(30));
        let resent = b.resent(resend_on(&v.id, proto::Channel::Sms)).await;
        assert_eq!(resent.id, v.id);
        let new_code = b.outbox.code_for(&v.id);
        while next_status(&mut stream).await.send_attempts.len() < 2 {}
        assert!(a.check(&v.id, &new_code).await.expect("check").approved);
        while status(&next_status(&mut stream).await) != VerificationStatus::Approved {}
        assert!(b.cancel(&v.id).await.is_err(), "approved stays approved");
        let read = a.get(&v.id).await.expect("a read in one slot");
        assert_eq!(status(&read), VerificationStatus::Approved);
        assert_eq!(read.send_attempts.len(), 2);

        // Another session starts on b: a verification of its own, and the
        // one a pending on a is superseded, in the destination's slot.
        let first = a.started(sms_to(&to)).await;
        // The second new verification in a row: the gap has doubled.
        a.clock.advance(Duration::from_secs(60));
        let second = b.started(sms_to(&to)).await;
        assert_ne!(second.id, first.id);
        assert_eq!(
            status(&a.get(&first.id).await.expect("get")),
            VerificationStatus::Superseded
        );
    }
    let holding_keys = cluster
        .urls()
        .iter()
        .filter(|url| {
            let size = std::process::Command::new("redis-cli")
                .args(["-u", url, "DBSIZE"])
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&size.stdout).trim() != "0"
        })
        .count();
    assert!(holding_keys > 1, "keys spread over the masters");
}

async fn health(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers whatever the store does")
        .into_inner()
        .status()
}

/// Waits (bounded) for the gRPC health and `/readyz` to say `serving`.
async fn await_readiness(app: &TestApp, serving: bool) {
    let (want, code) = if serving {
        (ServingStatus::Serving, 200)
    } else {
        (ServingStatus::NotServing, 503)
    };
    let readyz = format!("http://{}/readyz", app.admin_addr);
    let began = Instant::now();
    while health(app).await != want || http_get(&readyz).await != code {
        assert!(
            began.elapsed() < NOTICE,
            "readiness did not become {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http_get(&format!("http://{}/livez", app.admin_addr)).await,
        200,
        "liveness never depends on Redis"
    );
}

/// While Redis is out: every RPC fails fast with UNAVAILABLE, the right
/// code approves nothing, and nothing is sent.
async fn assert_fails_closed(app: &TestApp, id: &str, code: &str) {
    let sent_before = app.outbox.total_sent();
    let timed = |began: Instant, what: &str| {
        assert!(
            began.elapsed() < FAIL_FAST,
            "{what} took {:?}",
            began.elapsed()
        );
    };
    let began = Instant::now();
    let check = app.check(id, code).await.expect_err("no approval");
    assert_eq!(check.code(), Code::Unavailable, "{check:?}");
    timed(began, "check");
    let began = Instant::now();
    let start = app
        .start(sms_to("+14155550199"))
        .await
        .expect_err("no start");
    assert_eq!(start.code(), Code::Unavailable, "{start:?}");
    timed(began, "start");
    let began = Instant::now();
    let get = app.get(id).await.expect_err("no read");
    assert_eq!(get.code(), Code::Unavailable);
    timed(began, "get");
    assert_eq!(app.outbox.total_sent(), sent_before, "nothing sent");
    await_readiness(app, false).await;
}

/// Polls until the store answers again (Redis reconnects take a moment).
async fn await_recovery(app: &TestApp, id: &str) -> Result<proto::Verification, tonic::Status> {
    let began = Instant::now();
    loop {
        match app.get(id).await {
            Err(e) if e.code() == Code::Unavailable && began.elapsed() < NOTICE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_stopped_redis_fails_requests_fast_and_closed_and_a_restarted_one_is_picked_up() {
    let mut redis = RedisServer::start();
    let app = on_redis(&[redis.url()], test_clock()).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);

    redis.stop();
    assert_fails_closed(&app, &v.id, &code).await;

    // Without persistence the restarted Redis is empty: the verification
    // is gone (fail closed), and new ones work without restarting verifyd.
    redis.restart();
    let gone = await_recovery(&app, &v.id).await.expect_err("data is gone");
    assert_eq!(gone.code(), Code::NotFound);
    await_readiness(&app, true).await;
    let fresh = app.started(sms_to("+14155550101")).await;
    let code = app.outbox.code_for(&fresh.id);
    assert!(app.check(&fresh.id, &code).await.expect("check").approved);
}

#[tokio::test]
async fn a_frozen_redis_fails_requests_within_the_timeout_and_a_thawed_one_carries_on() {
    let redis = RedisServer::start();
    let app = on_redis(&[redis.url()], test_clock()).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);

    redis.freeze();
    assert_fails_closed(&app, &v.id, &code).await;
    redis.thaw();

    let after = await_recovery(&app, &v.id).await.expect("readable again");
    assert_eq!(
        status(&after),
        VerificationStatus::Pending,
        "nothing approved while frozen"
    );
    await_readiness(&app, true).await;
    assert!(app.check(&v.id, &code).await.expect("check").approved);
}

#[tokio::test]
async fn a_dump_of_redis_after_a_full_flow_holds_no_code_and_no_destination_in_key_names_and_every_key_expires()
 {
    let redis = RedisServer::start();
    let app = on_redis(&[redis.url()], test_clock()).await;
    let phone = "+14155550100";
    let email = "alice@example.com";
    let mut codes = Vec::new();
    let flows = [
        (phone, proto::Channel::Sms, proto::Purpose::PasswordReset),
        (email, proto::Channel::Email, proto::Purpose::PasswordReset),
        // A call that reads the code aloud, so a call is stored too.
        (phone, proto::Channel::Voice, proto::Purpose::Enrollment),
    ];
    for (to, channel, purpose) in flows {
        let req = proto::StartVerificationRequest {
            channel: channel.into(),
            purpose: purpose.into(),
            voice_mode: if channel == proto::Channel::Voice {
                proto::VoiceMode::Code.into()
            } else {
                0
            },
            end_user_ip: "203.0.113.9".into(),
            idempotency_key: format!("flow-{to}-{}", channel.as_str_name()),
            ..sms_to(to)
        };
        let v = app.started(req.clone()).await;
        let code = app.outbox.code_for(&v.id);
        app.check(&v.id, &wrong(&code)).await.expect("wrong code");
        codes.push(code);
        // A resend: a second code, the one that approves.
        app.clock.advance(Duration::from_secs(60));
        let v = app
            .resent(proto::ResendVerificationRequest {
                voice_mode: req.voice_mode,
                end_user_ip: req.end_user_ip,
                ..resend_on(&v.id, channel)
            })
            .await;
        let code = app.outbox.code_for(&v.id);
        codes.push(code.clone());
        assert!(app.check(&v.id, &code).await.expect("check").approved);
    }
    // And one sent once and left pending: its keys expire too.
    let left = app
        .started(proto::StartVerificationRequest {
            channel: proto::Channel::Email.into(),
            ..sms_to("bob@example.com")
        })
        .await;
    codes.push(app.outbox.code_for(&left.id));
    let dump = redis.dump();
    assert!(!dump.is_empty());
    let phone_digits = phone.trim_start_matches('+');
    for (key, _kind, value) in &dump {
        // Whole tokens: a code stored in any form would stand alone, while
        // a timestamp or a MAC may contain any six digits by chance.
        let tokens: Vec<&str> = key
            .split(|c: char| !c.is_ascii_alphanumeric())
            .chain(value.split(|c: char| !c.is_ascii_alphanumeric()))
            .collect();
        for secret in &codes {
            assert!(!tokens.contains(&secret.as_str()), "code in {key}: {value}");
        }
        for personal in [phone_digits, email, "alice", "bob", "203.0.113.9"] {
            assert!(!key.contains(personal), "{personal} in key name {key}");
        }
        for secret in [crate::helpers::TEST_KEY, crate::helpers::TEST_INDEX_KEY] {
            assert!(!value.contains(secret), "a key in {key}");
        }
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().expect("PTTL");
        // -1: no expiry. 0: expires within the millisecond. -2: gone since
        // the dump (a budget refills within its period, and short ones
        // expire at once).
        assert!(ttl >= 0 || ttl == -2, "{key} never expires ({ttl})");
    }
}

#[tokio::test]
async fn rediss_urls_speak_tls_and_trust_the_configured_ca() {
    let redis = TlsRedis::start();
    let mut config = test_config();
    use_redis(&mut config, std::slice::from_ref(&redis.url));
    config.store.redis.ca_cert =
        Some(std::fs::read_to_string(&redis.ca_file).expect("the test CA"));
    let app = spawn(config, test_clock()).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    let mut stream = app.watch(&v.id).await.expect("pub/sub over TLS too");
    assert_eq!(
        status(&next_status(&mut stream).await),
        VerificationStatus::Pending
    );
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    assert_eq!(
        status(&next_status(&mut stream).await),
        VerificationStatus::Approved
    );
    assert!(
        !redis.server.dump().is_empty(),
        "the data went to this server, over its TLS port"
    );

    // Without the CA, the server's certificate is not trusted: fail closed.
    let mut untrusting = test_config();
    use_redis(&mut untrusting, std::slice::from_ref(&redis.url));
    let app = spawn(untrusting, test_clock()).await;
    let refused = app
        .start(sms_to("+14155550101"))
        .await
        .expect_err("untrusted");
    assert_eq!(refused.code(), Code::Unavailable);
}
