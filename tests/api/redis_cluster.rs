//! Redis Cluster while a slot moves. verifyd follows MOVED and ASK itself
//! (the crate's own retries are off: they would also send again a command
//! whose connection broke, which may have run), so a migration costs its
//! callers nothing, and nothing runs twice.

use std::time::Duration;

use tonic::Code;
use verifyd::proto::{self, VerificationStatus};

use crate::{
    helpers::{
        TestApp, once_served, sms_to, spawn, status, test_clock, test_config, use_redis, wrong,
    },
    redis_server::{RedisCluster, wait_for},
};

async fn on_cluster(cluster: &RedisCluster) -> TestApp {
    let mut config = test_config();
    use_redis(&mut config, &cluster.urls());
    // Long enough to outlast a migration the test finishes by hand.
    config.store.redis.timeout = Duration::from_secs(5);
    spawn(config, test_clock()).await
}

/// Three masters, verifyd on them, and one verification with its code.
async fn a_verification_on_a_cluster() -> (RedisCluster, TestApp, proto::Verification, String) {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let app = on_cluster(&cluster).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    (cluster, app, v, code)
}

/// The slot of a verification's keys, and the node serving it.
fn slot_of(cluster: &RedisCluster, v: &proto::Verification) -> (u16, usize) {
    let hash = cluster
        .dump()
        .into_iter()
        .map(|(key, _, _)| key)
        .find(|key| key.ends_with(&format!("v:{}", v.id)))
        .expect("the verification's hash");
    cluster.slot_of(&hash)
}

/// A wrong code then the right one: each check runs once, wherever the
/// slot is.
async fn checks_once(app: &TestApp, v: &proto::Verification, code: &str) {
    let rejected = app
        .check(&v.id, &wrong(code))
        .await
        .expect("the wrong code is checked");
    assert!(!rejected.approved);
    let after = app.get(&v.id).await.expect("get");
    assert_eq!(after.check_attempts_remaining, 4, "one attempt spent, once");
    assert!(app.check(&v.id, code).await.expect("check").approved);
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Approved
    );
    let again = app.check(&v.id, code).await.expect_err("single use");
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_moved_after_the_map_was_read_is_followed() {
    let (cluster, app, v, code) = a_verification_on_a_cluster().await;
    let (slot, from) = slot_of(&cluster, &v);
    let to = (from + 1) % 3;
    tokio::task::block_in_place(|| {
        cluster.migrate(slot, from, to, None);
        cluster.assign(slot, to);
    });
    // verifyd's map still names `from`, which answers MOVED.
    checks_once(&app, &v, &code).await;
    assert_eq!(slot_of(&cluster, &v), (slot, to));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_already_migrated_are_reached_on_the_target_with_asking() {
    let (cluster, app, v, code) = a_verification_on_a_cluster().await;
    let (slot, from) = slot_of(&cluster, &v);
    let to = (from + 1) % 3;
    // Mid-migration: the keys are on the target, the slot still the
    // source's, which answers ASK for them (scripts and MULTI/EXEC alike).
    tokio::task::block_in_place(|| cluster.migrate(slot, from, to, None));
    checks_once(&app, &v, &code).await;
    // A new verification for the destination, in the same slot, makes
    // new keys, which the target refuses (TRYAGAIN) until the migration
    // ends: the start waits it out, within its deadline.
    app.clock.advance(Duration::from_secs(30));
    let refused_before = cluster.errors(to, "TRYAGAIN");
    let mut client = app.client.clone();
    let start =
        tokio::spawn(async move { client.start_verification(sms_to("+14155550100")).await });
    tokio::task::block_in_place(|| {
        wait_for(
            Duration::from_secs(10),
            "the start to meet TRYAGAIN",
            // More than the redirects followed: only the command timeout
            // bounds how long a start waits for a migration.
            || cluster.errors(to, "TRYAGAIN") > refused_before + 8,
        );
        cluster.assign(slot, to);
    });
    let newer = start
        .await
        .expect("task")
        .expect("the start outlasts the migration")
        .into_inner()
        .verification
        .expect("verification");
    assert_eq!(slot_of(&cluster, &newer), (slot, to));
    let newer_code = app.outbox.code_for(&newer.id);
    checks_once(&app, &newer, &newer_code).await;
}

/// A scale-out: a slot moves onto a node added since verifyd read the
/// map, which the crate has no connection to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moving_to_a_node_added_since_is_followed_there() {
    let (mut cluster, app, v, code) = a_verification_on_a_cluster().await;
    let (slot, from) = slot_of(&cluster, &v);
    let added = tokio::task::block_in_place(|| {
        let added = cluster.add_node();
        cluster.migrate(slot, from, added, None);
        added
    });
    // ASK, to the new node.
    let rejected = app
        .check(&v.id, &wrong(&code))
        .await
        .expect("the check follows ASK to the new node");
    assert!(!rejected.approved);
    tokio::task::block_in_place(|| cluster.assign(slot, added));
    // MOVED, to the new node.
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    assert_eq!(
        app.get(&v.id).await.expect("get").check_attempts_remaining,
        4,
        "each check ran once"
    );
    assert_eq!(slot_of(&cluster, &v), (slot, added));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_followed_to_the_replica_that_took_over() {
    let mut cluster =
        tokio::task::block_in_place(|| RedisCluster::with_replicas(Duration::from_secs(1)));
    let mut config = test_config();
    use_redis(&mut config, &cluster.urls());
    let app = spawn(config, test_clock()).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    assert!(
        !app.check(&v.id, &wrong(&code))
            .await
            .expect("check")
            .approved
    );
    let (slot, _) = slot_of(&cluster, &v);
    tokio::task::block_in_place(|| {
        let master = cluster.master_of(slot);
        cluster.replicate(master);
        cluster.kill(master);
        cluster.wait_until_ok();
    });
    // Fail closed until verifyd reaches the promoted replica, then served:
    // the spent attempt was replicated, so it survived.
    let after = once_served(Duration::from_secs(20), || app.get(&v.id)).await;
    assert_eq!(after.check_attempts_remaining, 4);
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    let again = app.check(&v.id, &code).await.expect_err("single use");
    assert_eq!(again.code(), Code::FailedPrecondition);
    app.started(sms_to("+14155550101")).await;
}
