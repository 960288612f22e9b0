//! Idempotent starts and resends: replays, concurrency, and a reused key.

use std::time::Duration;

use tonic::Code;
use verifyd::proto;

use crate::helpers::{resend_on, sms_to, spawn_app, spawn_app_with, status, violated_fields};

fn keyed(to: &str, key: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        idempotency_key: key.to_owned(),
        ..sms_to(to)
    }
}

#[tokio::test]
async fn a_retried_start_returns_the_stored_response_and_sends_nothing() {
    let app = spawn_app().await;
    let mut req = keyed("+14155550100", "reset-42");
    req.channel = proto::Channel::Voice.into();
    req.voice_mode = proto::VoiceMode::Match.into();
    let first = app.start(req.clone()).await.expect("start");
    let id = first.verification.as_ref().expect("v").id.clone();

    // Inside the cooldown a plain start would be refused; the replay is not.
    app.clock.advance(Duration::from_secs(5));
    let replay = app.start(req).await.expect("replay");
    assert_eq!(replay, first, "the stored response, match digits included");
    assert_eq!(app.outbox.sent_count(&id), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_replay_is_not_refused_by_rate_limits() {
    let app = spawn_app_with(|c| c.limits.starts_per_destination.burst = 1).await;
    let req = keyed("+14155550100", "once");
    let first = app.start(req.clone()).await.expect("start");
    let replay = app
        .start(req)
        .await
        .expect("the replay comes before the limits");
    assert_eq!(replay, first);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_starts_with_one_key_create_one_verification() {
    let app = spawn_app().await;
    let req = keyed("+14155550100", "concurrent");
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let mut client = app.client.clone();
            let req = req.clone();
            tokio::spawn(async move { client.start_verification(req).await })
        })
        .collect();
    let mut ids = Vec::new();
    for start in starts {
        let response = start.await.expect("task").expect("every start succeeds");
        ids.push(response.into_inner().verification.expect("v").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one verification: {ids:?}");
    assert_eq!(app.outbox.sent_count(&ids[0]), 1, "one message");
    app.stop().await;
}

#[tokio::test]
async fn a_key_reused_with_another_request_is_invalid() {
    let app = spawn_app().await;
    app.start(keyed("+14155550100", "k")).await.expect("start");
    let err = app
        .start(keyed("+14155550199", "k"))
        .await
        .expect_err("another request");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["idempotency_key"]);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_start_releases_its_key() {
    let app = spawn_app().await;
    app.outbox.set_failing(true);
    let err = app
        .start(keyed("+14155550100", "retry-me"))
        .await
        .expect_err("fails");
    assert_eq!(err.code(), Code::Unavailable);
    app.outbox.set_failing(false);
    app.clock.advance(Duration::from_secs(30));
    let v = app.started(keyed("+14155550100", "retry-me")).await;
    assert_eq!(app.outbox.sent_count(&v.id), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_replay_after_a_supersede_returns_the_first_verification_as_it_stands() {
    let app = spawn_app().await;
    let req = keyed("+14155550100", "session-1");
    let first = app.started(req.clone()).await;
    app.clock.advance(Duration::from_secs(30));
    let second = app.started(sms_to("+14155550100")).await;

    let replay = app
        .start(req)
        .await
        .expect("replay")
        .verification
        .expect("v");
    assert_eq!(replay.id, first.id, "never the newer verification");
    assert_ne!(replay.id, second.id);
    assert_eq!(status(&replay), proto::VerificationStatus::Superseded);
    assert_eq!(app.outbox.total_sent(), 2, "the replay sent nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_retried_resend_replays_and_its_key_is_its_own() {
    let app = spawn_app().await;
    let v = app.started(keyed("+14155550100", "start-key")).await;
    app.clock.advance(Duration::from_secs(30));
    let resend = proto::ResendVerificationRequest {
        idempotency_key: "resend-1".into(),
        ..resend_on(&v.id, proto::Channel::Sms)
    };
    let first = app.resend(resend.clone()).await.expect("resend");
    let replay = app.resend(resend.clone()).await.expect("replay");
    assert_eq!(replay, first);
    assert_eq!(
        app.outbox.sent_count(&v.id),
        2,
        "the first send and one resend"
    );

    // The same key on another request, a start's own included, is refused.
    let err = app
        .resend(proto::ResendVerificationRequest {
            channel: proto::Channel::Voice.into(),
            ..resend
        })
        .await
        .expect_err("another request");
    assert_eq!(violated_fields(&err), ["idempotency_key"]);
    let err = app
        .resend(proto::ResendVerificationRequest {
            idempotency_key: "start-key".into(),
            ..resend_on(&v.id, proto::Channel::Sms)
        })
        .await
        .expect_err("a start's key");
    assert_eq!(violated_fields(&err), ["idempotency_key"]);
    app.stop().await;
}
