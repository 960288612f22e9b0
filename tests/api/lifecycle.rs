//! Time, resends and channel switches, driven by the service's clock.

use std::time::Duration;

use tonic::Code;
use verifyd::proto::{self, VerificationStatus};

use crate::helpers::{retry_after, sms_to, spawn_app, spawn_app_with, status};

#[tokio::test]
async fn a_code_stops_working_at_expiry() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);

    app.clock.advance(Duration::from_secs(599));
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Pending
    );
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Expired
    );
    let err = app.check(&v.id, &code).await.expect_err("expired");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("EXPIRED"), "{err:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_resend_inside_the_cooldown_is_refused_with_retry_info_whatever_the_channel() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    app.clock.advance(Duration::from_secs(10));

    let mut voice = sms_to("+14155550100");
    voice.channel = proto::Channel::Voice.into();
    let err = app.start(voice).await.expect_err("inside the cooldown");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(retry_after(&err), Some(Duration::from_secs(20)));
    assert_eq!(app.outbox.sent_count(&v.id), 1, "nothing more was sent");
    app.stop().await;
}

#[tokio::test]
async fn a_resend_keeps_the_id_switches_channel_and_replaces_the_code() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let old_code = app.outbox.code_for(&v.id);
    let wrong = app.check(&v.id, "000000").await.expect("check");
    let attempts_after_wrong = wrong.verification.expect("v").check_attempts_remaining;

    app.clock.advance(Duration::from_secs(30));
    let mut voice = sms_to("+14155550100");
    voice.channel = proto::Channel::Voice.into();
    voice.voice_mode = proto::VoiceMode::Code.into();
    let resent = app.started(voice).await;
    assert_eq!(resent.id, v.id, "same verification");
    assert_eq!(resent.channel, i32::from(proto::Channel::Voice));
    assert_eq!(resent.send_attempts.len(), 2);
    assert_eq!(resent.send_attempts_remaining, 3);
    assert_eq!(
        resent.check_attempts_remaining, attempts_after_wrong,
        "a resend does not reset check attempts"
    );
    assert_eq!(
        resent.expires_at.expect("expires").seconds,
        v.expires_at.expect("expires").seconds + 30,
        "validity restarts"
    );
    let new_code = app.outbox.code_for(&v.id);

    if new_code != old_code {
        let r = app.check(&v.id, &old_code).await.expect("check");
        assert!(
            !r.approved,
            "the old code stops working once the new one is sent"
        );
    }
    let r = app.check(&v.id, &new_code).await.expect("check");
    assert!(r.approved);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_resend_leaves_the_old_code_valid() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    app.clock.advance(Duration::from_secs(30));

    app.outbox.set_failing(true);
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("the send fails");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(!err.message().contains(&code));
    app.outbox.set_failing(false);

    let after = app.get(&v.id).await.expect("get");
    assert_eq!(status(&after), VerificationStatus::Pending);
    // The first send, then the failed resend's try and its two retries.
    assert_eq!(after.send_attempts.len(), 4);
    assert_eq!(
        after.send_attempts_remaining, 3,
        "retries count as one send"
    );
    for attempt in &after.send_attempts[1..] {
        assert_eq!(attempt.status, i32::from(proto::DeliveryStatus::Failed));
        assert_eq!(attempt.error_reason, "broken pipe");
    }
    assert_eq!(after.expires_at, v.expires_at, "validity unchanged");
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_first_send_fails_the_verification() {
    let app = spawn_app().await;
    app.outbox.set_failing(true);
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("the send fails");
    assert_eq!(err.code(), Code::Unavailable);
    app.outbox.set_failing(false);
    // The destination is free again: a retry creates a new verification.
    let v = app.started(sms_to("+14155550100")).await;
    assert_eq!(v.send_attempts.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn sends_per_verification_are_capped() {
    let app = spawn_app_with(|c| {
        c.code.max_send_attempts = 2;
        c.limits.starts_per_destination.burst = 100;
    })
    .await;
    let v = app.started(sms_to("+14155550100")).await;
    app.clock.advance(Duration::from_secs(30));
    let again = app.started(sms_to("+14155550100")).await;
    assert_eq!(again.send_attempts_remaining, 0);
    app.clock.advance(Duration::from_secs(30));
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("no sends left");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(retry_after(&err).is_some());
    assert_eq!(app.outbox.sent_count(&v.id), 2);
    app.stop().await;
}

#[tokio::test]
async fn purposes_keep_verifications_apart() {
    let app = spawn_app().await;
    let reset = app.started(sms_to("+14155550100")).await;
    let mut enroll = sms_to("+14155550100");
    enroll.purpose = proto::Purpose::Enrollment.into();
    let enroll = app.started(enroll).await;
    assert_ne!(reset.id, enroll.id);
    let reset_code = app.outbox.code_for(&reset.id);
    let enroll_code = app.outbox.code_for(&enroll.id);
    if reset_code != enroll_code {
        let r = app.check(&enroll.id, &reset_code).await.expect("check");
        assert!(!r.approved, "a code works only for its own verification");
    }
    app.stop().await;
}
