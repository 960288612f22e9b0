//! Shared deadlines on Redis: a verification's expiry is announced (its
//! live call ended) by whichever replica is alive, and the replicas share
//! the deadline index's buckets by lease. Two replicas share one Redis and
//! one manual clock.

use std::time::Duration;

use verifyd::{config::Config, proto};

use crate::{
    fake_twilio::{FakeTwilio, sid},
    helpers::{spawn, status, test_clock, test_config, use_redis},
    redis_server::RedisServer,
    voice::{Phone, assert_call_ended, call, with_voice},
};

/// The longest a tag waits to be read once its replica is gone: read and
/// renewed a period apart (10 s), its lease lapses (20 s), and another
/// replica's next scan (10 s) takes it.
const READ_WITHIN: Duration = Duration::from_secs(40);

fn on(redis: &RedisServer, fake: &FakeTwilio) -> Config {
    let mut config = test_config();
    use_redis(&mut config, &[redis.url()]);
    with_voice(&mut config, fake);
    config
}

/// Each lease holder, from the leases hash (`bucket`, `owner until`
/// alternating).
fn lease_holders(redis: &RedisServer) -> Vec<String> {
    let flat = redis.cli(&["HGETALL", "verifyd:{deadlines}:leases"]);
    let lines: Vec<&str> = flat.lines().collect();
    lines
        .chunks(2)
        .filter_map(|pair| Some(pair.get(1)?.split(' ').next()?.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_ended_at_its_expiry_by_a_replica_other_than_the_one_that_placed_it() {
    let redis = tokio::task::block_in_place(RedisServer::start);
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 1)).await;
    let clock = test_clock();
    let placing = spawn(on(&redis, &fake), clock.clone()).await;
    let other = spawn(on(&redis, &fake), clock.clone()).await;
    let started = placing
        .start(call(proto::VoiceMode::Confirm))
        .await
        .expect("start");
    let v = started.verification.expect("v");
    let phone = Phone::picked_up(&placing, &fake).await;
    // The replica that placed the call goes away (a rollout, a crash):
    // its own timers go with it.
    placing.stop().await;

    let ttl = v.expires_at.expect("expires_at").seconds - v.created_at.expect("created_at").seconds;
    clock.advance(Duration::from_secs(ttl.unsigned_abs()) + READ_WITHIN);
    assert_call_ended(&fake, &phone).await;
    let read = other.get(&v.id).await.expect("get");
    assert_eq!(status(&read), proto::VerificationStatus::Expired);
    for index in redis
        .cli(&["--scan", "--pattern", "verifyd:*:deadlines"])
        .lines()
    {
        let entries = redis.cli(&["ZRANGE", index, "0", "-1"]);
        assert_eq!(entries, "~", "the announced expiry left the index");
    }
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_alive_share_the_index_buckets_and_take_a_stopped_ones_at_once() {
    let redis = tokio::task::block_in_place(RedisServer::start);
    let fake = FakeTwilio::start().await;
    let clock = test_clock();
    let first = spawn(on(&redis, &fake), clock.clone()).await;
    // The first replica's first scan, a period after it started, takes
    // every bucket.
    let holders = scan_until(&clock, &redis, 3, |h| {
        h.len() == 256 && h.iter().all(|o| *o == h[0])
    })
    .await;
    let first_id = holders[0].clone();

    // The first gives half up at a scan, the second takes them at its own.
    let second = spawn(on(&redis, &fake), clock.clone()).await;
    let holders = scan_until(&clock, &redis, 4, |h| {
        h.len() == 256 && h.iter().filter(|o| **o == first_id).count() == 128
    })
    .await;
    let second_id = holders
        .iter()
        .find(|o| **o != first_id)
        .expect("the second replica holds the other half")
        .clone();

    // The first stops and gives its buckets up: the second takes them all
    // at its next scan, without waiting for the leases to lapse.
    first.stop().await;
    scan_until(&clock, &redis, 1, |h| {
        h.len() == 256 && h.iter().all(|o| *o == second_id)
    })
    .await;
    second.stop().await;
}

/// Moves the clock a scan period on, up to `scans` times, until the lease
/// holders satisfy `done`; each replica scans in its own task once the
/// clock says so, and is given a moment to.
async fn scan_until(
    clock: &verifyd::clock::Clock,
    redis: &RedisServer,
    scans: u32,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    for _ in 0..scans {
        clock.advance(Duration::from_secs(10));
        for _ in 0..100 {
            let holders = lease_holders(redis);
            if done(&holders) {
                return holders;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("the leases never settled: {:?}", lease_holders(redis));
}
