//! Time, resends and channel switches, driven by the service's clock; a
//! verification belongs to the session that started it.

use std::time::Duration;

use tonic::Code;
use verifyd::proto::{self, VerificationStatus};

use crate::helpers::{resend_on, retry_after, sms_to, spawn_app, spawn_app_with, status};

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

    let err = app
        .resend(resend_on(&v.id, proto::Channel::Voice))
        .await
        .expect_err("inside the cooldown");
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
    let resent = app
        .resent(proto::ResendVerificationRequest {
            voice_mode: proto::VoiceMode::Code.into(),
            ..resend_on(&v.id, proto::Channel::Voice)
        })
        .await;
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
        .resend(resend_on(&v.id, proto::Channel::Sms))
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
    // A retry after the least gap creates a new verification.
    app.clock.advance(Duration::from_secs(30));
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
    let again = app.resent(resend_on(&v.id, proto::Channel::Sms)).await;
    assert_eq!(again.send_attempts_remaining, 0);
    app.clock.advance(Duration::from_secs(60));
    let err = app
        .resend(resend_on(&v.id, proto::Channel::Sms))
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
    // The least gap spans purposes.
    app.clock.advance(Duration::from_secs(30));
    let mut enroll = sms_to("+14155550100");
    enroll.purpose = proto::Purpose::Enrollment.into();
    let enroll = app.started(enroll).await;
    assert_ne!(reset.id, enroll.id);
    assert_eq!(
        status(&app.get(&reset.id).await.expect("get")),
        VerificationStatus::Pending,
        "another purpose supersedes nothing"
    );
    let reset_code = app.outbox.code_for(&reset.id);
    let enroll_code = app.outbox.code_for(&enroll.id);
    if reset_code != enroll_code {
        let r = app.check(&enroll.id, &reset_code).await.expect("check");
        assert!(!r.approved, "a code works only for its own verification");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_second_start_creates_its_own_verification_and_supersedes_the_first() {
    let app = spawn_app().await;
    // The victim's session, mid-reset.
    let victim = app.started(sms_to("+14155550100")).await;
    let victim_code = app.outbox.code_for(&victim.id);
    let mut watch = app.watch(&victim.id).await.expect("watch");
    watch.message().await.expect("current").expect("state");

    // Another session starts a reset for the same account: inside the
    // least gap it is refused, after it it gets a verification of its own.
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("inside the least gap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(retry_after(&err), Some(Duration::from_secs(30)));
    app.clock.advance(Duration::from_secs(30));
    let attacker = app.started(sms_to("+14155550100")).await;
    assert_ne!(attacker.id, victim.id, "never the other session's id");

    // The victim's verification is final and says why; watchers hear it.
    let update = watch
        .message()
        .await
        .expect("an update")
        .expect("state")
        .verification
        .expect("v");
    assert_eq!(status(&update), VerificationStatus::Superseded);
    let err = app
        .check(&victim.id, &victim_code)
        .await
        .expect_err("its code stopped working");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("SUPERSEDED"), "{err:?}");
    // Nothing the victim's code does approves what the other session sees.
    let seen = app.get(&attacker.id).await.expect("get");
    assert_eq!(status(&seen), VerificationStatus::Pending);
    let code = app.outbox.code_for(&attacker.id);
    assert!(
        app.check(&attacker.id, &code)
            .await
            .expect("check")
            .approved
    );

    // A resend of the superseded one is refused.
    app.clock.advance(Duration::from_secs(60));
    let err = app
        .resend(resend_on(&victim.id, proto::Channel::Sms))
        .await
        .expect_err("superseded");
    assert_eq!(err.code(), Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test]
async fn the_least_gap_doubles_with_each_new_verification_in_a_row() {
    let app = spawn_app_with(|c| c.limits.starts_per_destination.burst = 100).await;
    app.started(sms_to("+14155550100")).await;
    for gap in [30, 60, 120, 240, 240] {
        app.clock.advance(Duration::from_secs(gap - 1));
        let err = app
            .start(sms_to("+14155550100"))
            .await
            .expect_err("inside the gap");
        assert_eq!(retry_after(&err), Some(Duration::from_secs(1)), "{gap} s");
        app.clock.advance(Duration::from_secs(1));
        app.started(sms_to("+14155550100")).await;
    }
    // Another destination has its own.
    app.started(sms_to("+14155550101")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_resend_needs_a_channel_that_reaches_the_destination() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    app.clock.advance(Duration::from_secs(30));
    let err = app
        .resend(resend_on(&v.id, proto::Channel::Email))
        .await
        .expect_err("email cannot reach a phone");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(crate::helpers::violated_fields(&err), ["channel"]);
    let err = app
        .resend(resend_on(
            "VE0123456789abcdef0123456789abcdef",
            proto::Channel::Sms,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}
