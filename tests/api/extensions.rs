//! Office phones with extensions: the call dials the extension once it
//! connects (Twilio's `SendDigits`); the number alone keys budgets and the
//! least gap; an extension's pending verification is superseded only by
//! one to the same keys; such a verification is reached by voice only.

use std::time::Duration;

use tonic::Code;
use verifyd::proto::{self, VerificationStatus};

use crate::{
    helpers::{resend_on, status, violated_fields},
    voice::{Phone, call, voice_app_with},
};

fn desk(extension: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        extension: extension.to_owned(),
        ..call(proto::VoiceMode::Confirm)
    }
}

#[tokio::test]
async fn the_call_dials_the_extension_and_pound_approves() {
    let (app, fake) = voice_app_with(|_| {}).await;
    let v = app.started(desk("ww4711")).await;
    assert_eq!(v.extension, "ww4711");
    let phone = Phone::picked_up(&app, &fake).await;
    crate::fake_twilio::assert_conforms("CreateCall", &phone.form);
    assert_eq!(phone.field("SendDigits"), Some("ww4711"));
    assert_eq!(
        phone.field("MachineDetection"),
        None,
        "the switchboard answers first: detection would judge it, not the person"
    );
    let twiml = phone.answer("").await;
    let gather = twiml.gather.expect("a gather");
    assert!(phone.press(&gather, "#").await.hangup);
    let approved = app.get(&v.id).await.expect("get");
    assert_eq!(status(&approved), VerificationStatus::Approved);
    assert_eq!(approved.extension, "ww4711");

    // A call without one dials nothing more, with detection on.
    app.clock.advance(Duration::from_secs(60));
    app.started(call(proto::VoiceMode::Confirm)).await;
    let plain = Phone::picked_up(&app, &fake).await;
    assert_eq!(plain.field("SendDigits"), None);
    assert_eq!(plain.field("MachineDetection"), Some("Enable"));
    app.stop().await;
}

#[tokio::test]
async fn a_start_supersedes_only_a_pending_verification_to_the_same_keys() {
    let (app, _fake) = voice_app_with(|c| c.code.resend_cooldown = Duration::from_secs(1)).await;
    let later = || app.clock.advance(Duration::from_secs(20));
    let first = app.started(desk("4711")).await;
    later();
    let other_desk = app.started(desk("4712")).await;
    later();
    let switchboard = app.started(call(proto::VoiceMode::Confirm)).await;
    for v in [&first, &other_desk, &switchboard] {
        let v = app.get(&v.id).await.expect("get");
        assert_eq!(status(&v), VerificationStatus::Pending, "{}", v.extension);
    }
    // Pauses make no other extension.
    later();
    let again = app.started(desk("ww4711")).await;
    let first = app.get(&first.id).await.expect("get");
    assert_eq!(status(&first), VerificationStatus::Superseded);
    for v in [&again, &other_desk, &switchboard] {
        let v = app.get(&v.id).await.expect("get");
        assert_eq!(status(&v), VerificationStatus::Pending, "{}", v.extension);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_number_alone_keys_the_least_gap_and_the_budget() {
    // A least gap of a second (doubling), so the budget is what refuses
    // once the gap has passed.
    let (app, _fake) = voice_app_with(|c| {
        c.code.resend_cooldown = Duration::from_secs(1);
        c.limits.starts_per_destination.burst = 2;
    })
    .await;
    app.started(desk("1")).await;
    // Another extension, or the same one with pauses, is the same number.
    for extension in ["2", "w1", "ww1"] {
        let err = app.start(desk(extension)).await.expect_err("least gap");
        assert_eq!(err.code(), Code::ResourceExhausted, "{extension}");
    }
    app.clock.advance(Duration::from_secs(5));
    app.started(desk("2")).await;
    app.clock.advance(Duration::from_secs(5));
    for (what, request) in [
        ("another extension", desk("3")),
        ("the bare number", call(proto::VoiceMode::Confirm)),
    ] {
        let err = app
            .start(request)
            .await
            .expect_err("the number's burst is spent");
        assert_eq!(err.code(), Code::ResourceExhausted, "{what}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_extension_is_checked_by_name_and_reached_by_voice_only() {
    let (app, fake) = voice_app_with(|_| {}).await;
    for (what, request) in [
        ("a letter", desk("12a4")),
        ("only pauses", desk("ww")),
        ("a star, to work a switchboard's menus", desk("*72")),
        ("a pound key", desk("4711#")),
        ("nine digits, enough for an outside line", desk("123456789")),
        ("too long", desk(&format!("{}1", "w".repeat(16)))),
        (
            "a mobile, which has no switchboard",
            proto::StartVerificationRequest {
                to: "+447400123456".into(),
                ..desk("4711")
            },
        ),
        (
            "an SMS",
            proto::StartVerificationRequest {
                extension: "4711".into(),
                ..crate::helpers::sms_to("+14155550100")
            },
        ),
    ] {
        let err = app.start(request).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert_eq!(violated_fields(&err), ["extension"], "{what}");
    }
    assert!(fake.placed_calls().await.is_empty(), "nothing was placed");

    let v = app.started(desk("4711")).await;
    app.clock.advance(Duration::from_secs(60));
    let err = app
        .resend(resend_on(&v.id, proto::Channel::Sms))
        .await
        .expect_err("a text would reach the office number, not the desk");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["channel"]);
    let resent = app.resent(resend_on(&v.id, proto::Channel::Voice)).await;
    assert_eq!(resent.extension, "4711");
    let calls = fake.placed_calls().await;
    assert_eq!(calls.len(), 2);
    assert!(calls[1].contains(&("SendDigits".to_owned(), "4711".to_owned())));
    app.stop().await;
}

#[tokio::test]
async fn another_extension_under_one_idempotency_key_is_another_request() {
    let (app, _fake) = voice_app_with(|_| {}).await;
    let keyed = |extension: &str| proto::StartVerificationRequest {
        idempotency_key: "desk-session".into(),
        ..desk(extension)
    };
    let first = app.started(keyed("4711")).await;
    assert_eq!(app.started(keyed("4711")).await.id, first.id, "a replay");
    for extension in ["w4711", "4712", ""] {
        let err = app.start(keyed(extension)).await.expect_err(extension);
        assert_eq!(err.code(), Code::InvalidArgument, "{extension}");
        assert_eq!(violated_fields(&err), ["idempotency_key"], "{extension}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_provider_error_that_echoes_the_extension_is_masked() {
    let (app, fake) = voice_app_with(|_| {}).await;
    wiremock::Mock::given(wiremock::matchers::path(
        crate::fake_twilio::FakeTwilio::calls_path(),
    ))
    .respond_with(
        wiremock::ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211,
            "message": "SendDigits 86420975 cannot be dialed on +14155550100 (error 21211)",
            "status": 400,
        })),
    )
    .with_priority(1)
    .mount(&fake.server)
    .await;
    let err = app.start(desk("w86420975")).await.expect_err("refused");
    let answer = format!("{err:?}");
    assert!(!answer.contains("86420975"), "{answer}");
    assert!(
        answer.contains("SendDigits ext. ******** cannot"),
        "{answer}"
    );
    assert!(
        answer.contains("(error 21211)"),
        "the rest of the text is kept: {answer}"
    );
    app.stop().await;
}
