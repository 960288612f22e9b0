//! The main flows, per channel, with the console sender.

use tonic::Code;
use verifyd::proto::{self, VerificationStatus};

use crate::helpers::{sms_to, spawn_app, spawn_app_with, status, wrong};

async fn full_flow(req: proto::StartVerificationRequest, expected_to: &str) {
    let app = spawn_app().await;
    let started = app.start(req.clone()).await.expect("start succeeds");
    let v = started.verification.expect("verification");
    assert_eq!(v.to, expected_to, "the destination is canonicalized");
    assert_eq!(v.channel, req.channel);
    assert_eq!(status(&v), VerificationStatus::Pending);
    assert_eq!(v.check_attempts_remaining, 5);
    assert_eq!(v.send_attempts_remaining, 4);
    assert_eq!(v.send_attempts.len(), 1);
    assert_eq!(v.send_attempts[0].provider, "console");
    assert_eq!(
        v.send_attempts[0].status,
        i32::from(proto::DeliveryStatus::Accepted)
    );
    let created = v.created_at.expect("created_at");
    let expires = v.expires_at.expect("expires_at");
    assert_eq!(
        expires.seconds - created.seconds,
        600,
        "valid for 10 minutes"
    );

    let code = app.outbox.code_for(&v.id);
    assert_eq!(code.len(), 6);
    let checked = app.check(&v.id, &code).await.expect("check succeeds");
    assert!(checked.approved);
    let v = checked.verification.expect("verification");
    assert_eq!(status(&v), VerificationStatus::Approved);
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Approved
    );

    let again = app
        .check(&v.id, &code)
        .await
        .expect_err("a code approves once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(
        again.message().contains("VERIFICATION_STATUS_APPROVED"),
        "{again:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn sms_flow_approves_the_sent_code_once() {
    full_flow(sms_to("+1 415 555 0100"), "+14155550100").await;
}

#[tokio::test]
async fn voice_flow_with_the_code_read_aloud() {
    full_flow(
        proto::StartVerificationRequest {
            to: "+442071838750".into(),
            channel: proto::Channel::Voice.into(),
            purpose: proto::Purpose::Enrollment.into(),
            voice_mode: proto::VoiceMode::Code.into(),
            ..Default::default()
        },
        "+442071838750",
    )
    .await;
}

#[tokio::test]
async fn email_flow_with_an_internationalized_domain() {
    full_flow(
        proto::StartVerificationRequest {
            to: "Jörg@Bücher.Example".into(),
            channel: proto::Channel::Email.into(),
            purpose: proto::Purpose::MethodUpdate.into(),
            locale: "de-DE".into(),
            ..Default::default()
        },
        "Jörg@xn--bcher-kva.example",
    )
    .await;
}

#[tokio::test]
async fn voice_defaults_to_press_pound_and_number_matching_returns_digits() {
    let app = spawn_app().await;
    let mut req = sms_to("+14155550100");
    req.channel = proto::Channel::Voice.into();
    let v = app.started(req.clone()).await;
    assert_eq!(v.voice_mode, i32::from(proto::VoiceMode::Confirm));

    req.to = "+14155550101".into();
    req.voice_mode = proto::VoiceMode::Match.into();
    let started = app.start(req).await.expect("start");
    assert_eq!(started.match_digits.len(), 2);
    assert!(started.match_digits.bytes().all(|b| b.is_ascii_digit()));
    let v = started.verification.expect("verification");
    let line = app.outbox.lines_for(&v.id).pop().expect("message");
    assert!(line.contains(&format!("match_digits={}", started.match_digits)));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_code_costs_one_attempt_and_the_last_one_locks_the_verification() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    for remaining in (0..5).rev() {
        let r = app
            .check(&v.id, &wrong(&code))
            .await
            .expect("a wrong code is OK");
        assert!(!r.approved);
        let v = r.verification.expect("verification");
        assert_eq!(v.check_attempts_remaining, remaining);
    }
    let v = app.get(&v.id).await.expect("get");
    assert_eq!(status(&v), VerificationStatus::MaxAttemptsReached);
    let err = app
        .check(&v.id, &code)
        .await
        .expect_err("even the right code fails");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("MAX_ATTEMPTS_REACHED"));
    app.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_pending_verification_and_only_a_pending_one() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    let canceled = app.cancel(&v.id).await.expect("cancel");
    assert_eq!(status(&canceled), VerificationStatus::Canceled);
    let err = app.cancel(&v.id).await.expect_err("already canceled");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = app
        .check(&v.id, &code)
        .await
        .expect_err("canceled codes fail");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A new verification for the destination, after the least gap.
    app.clock.advance(std::time::Duration::from_secs(30));
    let next = app.started(sms_to("+14155550100")).await;
    assert_ne!(next.id, v.id);
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = spawn_app().await;
    let unknown = "VE0123456789abcdef0123456789abcdef";
    assert_eq!(
        app.get(unknown).await.expect_err("unknown").code(),
        Code::NotFound
    );
    assert_eq!(
        app.cancel(unknown).await.expect_err("unknown").code(),
        Code::NotFound
    );
    assert_eq!(
        app.check(unknown, "123456")
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    app.stop().await;
}

#[tokio::test]
async fn thirty_two_concurrent_checks_of_the_right_code_approve_exactly_once() {
    // Room for every check in the per-destination budget, so each one
    // reaches the store and the store alone decides.
    let app = spawn_app_with(|c| c.limits.failed_checks_per_destination.burst = 100).await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    let checks = (0..32).map(|_| {
        let mut client = app.client.clone();
        let (id, code) = (v.id.clone(), code.clone());
        tokio::spawn(async move {
            client
                .check_verification(proto::CheckVerificationRequest { id, code })
                .await
        })
    });
    let mut approved = 0;
    let mut refused = 0;
    for check in checks.collect::<Vec<_>>() {
        match check.await.expect("task") {
            Ok(r) if r.get_ref().approved => approved += 1,
            Ok(r) => panic!("the right code was rejected: {r:?}"),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                refused += 1;
            }
        }
    }
    assert_eq!((approved, refused), (1, 31));
    app.stop().await;
}
