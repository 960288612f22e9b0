//! Redis behind Sentinel (one primary, one replica, three sentinels):
//! verifyd finds the primary through the sentinels and follows a
//! failover, its commands and its watchers alike, failing closed in
//! between.

use std::time::Duration;

use tonic::Code;
use verifyd::{
    config::Config,
    proto::{self, VerificationStatus},
    secret::Secret,
    store::redis::SentinelConfig,
};

use crate::{
    helpers::{
        TestApp, next_status_within, once_served, sms_to, spawn, status, test_clock, test_config,
        use_redis, wrong,
    },
    redis_server::{RedisSentinels, SENTINEL_MASTER},
    redis_store::{DATA_NODE_ACL, documented_acl_commands},
};

/// How long verifyd may take to answer again once the sentinels have
/// promoted the replica (the bar is 5 s; the debug build on a
/// loaded 2-core runner gets some slack).
const RECOVERY: Duration = Duration::from_secs(10);

/// How docs/redis.md opens its list of what verifyd's user on the
/// sentinels needs.
const SENTINEL_ACL: &str = "The Sentinel ACL user needs";

fn sentinel_config(redis: &RedisSentinels) -> Config {
    let mut config = test_config();
    use_redis(&mut config, &[]);
    config.store.redis.sentinel = SentinelConfig {
        master_name: SENTINEL_MASTER.to_owned(),
        nodes: redis.urls(),
        ..SentinelConfig::default()
    };
    config
}

async fn on_sentinels(redis: &RedisSentinels) -> TestApp {
    spawn(sentinel_config(redis), test_clock()).await
}

/// A verifyd that signs in as ACL users with exactly what docs/redis.md
/// lists: one on the sentinels, and one on each node (ACL users are not
/// replicated), and nothing else.
async fn on_sentinels_as_acl_users(redis: &RedisSentinels) -> TestApp {
    let grant = |user: &str, password: &str, patterns: &[&str], opening: &str| {
        let commands = documented_acl_commands(opening);
        assert!(!commands.is_empty(), "docs/redis.md lists {opening:?}");
        let mut acl = ["ACL", "SETUSER", user, "reset", "on"]
            .map(str::to_owned)
            .to_vec();
        acl.push(format!(">{password}"));
        acl.extend(patterns.iter().map(|p| (*p).to_owned()));
        acl.extend(commands.iter().map(|c| format!("+{c}")));
        acl
    };
    let node_user = grant(
        "verifyd",
        "node-password",
        &["~verifyd:*", "&verifyd:watch:*"],
        DATA_NODE_ACL,
    );
    let node_user: Vec<&str> = node_user.iter().map(String::as_str).collect();
    for node in &redis.nodes {
        assert_eq!(node.cli(&node_user), "OK");
    }
    let sentinel_user = grant(
        "verifyd-sentinel",
        "sentinel-password",
        &["&+switch-master"],
        SENTINEL_ACL,
    );
    let sentinel_user: Vec<&str> = sentinel_user.iter().map(String::as_str).collect();
    for answer in redis.on_each_sentinel(&sentinel_user) {
        assert_eq!(answer, "OK");
    }
    let mut config = sentinel_config(redis);
    config.store.redis.username = Some("verifyd".to_owned());
    config.store.redis.password = Some(Secret::new("node-password"));
    config.store.redis.sentinel.username = Some("verifyd-sentinel".to_owned());
    config.store.redis.sentinel.password = Some(Secret::new("sentinel-password"));
    spawn(config, test_clock()).await
}

async fn next_status(
    stream: &mut tonic::Streaming<proto::WatchVerificationResponse>,
) -> proto::Verification {
    next_status_within(RECOVERY, stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_is_found_through_the_sentinels_and_followed_when_it_dies() {
    let mut redis = tokio::task::block_in_place(RedisSentinels::start);
    let app = on_sentinels_as_acl_users(&redis).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    assert!(
        !app.check(&v.id, &wrong(&code))
            .await
            .expect("check")
            .approved
    );
    let old = redis.primary_port();
    assert_ne!(
        redis.primary().cli(&["DBSIZE"]),
        "0",
        "verifyd wrote to the primary the sentinels name"
    );

    tokio::task::block_in_place(|| {
        redis.replicate();
        redis.primary().stop();
        redis.wait_for_failover_from(old);
    });
    let after = once_served(RECOVERY, || app.get(&v.id)).await;
    // Replicated before the failover, so the spent attempt survived it.
    assert_eq!(after.check_attempts_remaining, 4);
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    let again = app.check(&v.id, &code).await.expect_err("single use");
    assert_eq!(again.code(), Code::FailedPrecondition);
    app.started(sms_to("+14155550101")).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_and_the_commands_follow_a_switchover() {
    let mut redis = tokio::task::block_in_place(RedisSentinels::start);
    let app = on_sentinels(&redis).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    let mut stream = app.watch(&v.id).await.expect("watch");
    assert_eq!(
        status(&next_status(&mut stream).await),
        VerificationStatus::Pending
    );

    // The old primary lives on, and takes writes, until the sentinels
    // demote it some seconds later; what it took is then lost. verifyd
    // leaves it as soon as the sentinels announce the new primary, its
    // commands and its pub/sub alike.
    let old = redis.primary_port();
    tokio::task::block_in_place(|| {
        redis.replicate();
        redis.fail_over();
        redis.wait_for_failover_from(old);
        redis.wait_until_left(old, Duration::from_secs(5));
    });
    let checked = once_served(RECOVERY, || app.check(&v.id, &code)).await;
    assert!(checked.approved);
    while status(&next_status(&mut stream).await) != VerificationStatus::Approved {}
    // The approval went to the new primary: it outlives the old one's
    // demotion, and reaches the old one as its replica.
    tokio::task::block_in_place(|| {
        redis.wait_for_demotion_of(old);
        redis.replicate();
    });
    let approved = app.get(&v.id).await.expect("get");
    assert_eq!(status(&approved), VerificationStatus::Approved);
    app.stop().await;
}

/// A "sentinel" that accepts connections and never answers, as one whose
/// node vanished behind a firewall does. Listed first, it holds up a
/// lookup past the command timeout (the `redis` crate reads the
/// sentinels' answers in order): the lookup must outlive the requests
/// that started it, or none would ever find the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_never_answers_costs_one_lookup_not_every_request() {
    let redis = tokio::task::block_in_place(RedisSentinels::start);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("redis://{}", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    let mut config = sentinel_config(&redis);
    config.store.redis.sentinel.nodes.insert(0, silent_url);
    let app = spawn(config, test_clock()).await;
    let v = once_served(RECOVERY, || app.start(sms_to("+14155550100"))).await;
    let id = v.verification.expect("verification").id;
    app.get(&id).await.expect("served from then on");
    held.abort();
    app.stop().await;
}
