//! Bad input: INVALID_ARGUMENT naming each bad field, nothing sent, and the
//! server keeps serving.

use tonic::Code;
use verifyd::proto;

use crate::helpers::{sms_to, spawn_app, violated_fields};

#[tokio::test]
async fn each_bad_start_field_is_named() {
    let app = spawn_app().await;
    let ok = sms_to("+14155550100");
    let cases: Vec<(&str, proto::StartVerificationRequest)> = vec![
        (
            "to",
            proto::StartVerificationRequest {
                to: String::new(),
                ..ok.clone()
            },
        ),
        (
            "to",
            proto::StartVerificationRequest {
                to: "+1415".into(),
                ..ok.clone()
            },
        ),
        (
            "to",
            proto::StartVerificationRequest {
                to: "x".repeat(400),
                ..ok.clone()
            },
        ),
        (
            "to",
            proto::StartVerificationRequest {
                to: "alice@example.com".into(),
                ..ok.clone()
            },
        ),
        (
            "to",
            proto::StartVerificationRequest {
                channel: proto::Channel::Email.into(),
                ..ok.clone()
            },
        ),
        (
            "to",
            proto::StartVerificationRequest {
                to: "not an address@".into(),
                channel: proto::Channel::Email.into(),
                ..ok.clone()
            },
        ),
        (
            "channel",
            proto::StartVerificationRequest {
                channel: 0,
                ..ok.clone()
            },
        ),
        (
            "channel",
            proto::StartVerificationRequest {
                channel: 99,
                ..ok.clone()
            },
        ),
        (
            "purpose",
            proto::StartVerificationRequest {
                purpose: 0,
                ..ok.clone()
            },
        ),
        (
            "purpose",
            proto::StartVerificationRequest {
                purpose: 42,
                ..ok.clone()
            },
        ),
        (
            "voice_mode",
            proto::StartVerificationRequest {
                voice_mode: 7,
                ..ok.clone()
            },
        ),
        (
            "voice_mode",
            proto::StartVerificationRequest {
                voice_mode: proto::VoiceMode::Code.into(),
                ..ok.clone()
            },
        ),
        (
            "locale",
            proto::StartVerificationRequest {
                locale: "en_US".into(),
                ..ok.clone()
            },
        ),
        (
            "locale",
            proto::StartVerificationRequest {
                locale: "e".repeat(40),
                ..ok.clone()
            },
        ),
        (
            "idempotency_key",
            proto::StartVerificationRequest {
                idempotency_key: "k".repeat(256),
                ..ok.clone()
            },
        ),
        (
            "idempotency_key",
            proto::StartVerificationRequest {
                idempotency_key: "has space".into(),
                ..ok.clone()
            },
        ),
        (
            "end_user_ip",
            proto::StartVerificationRequest {
                end_user_ip: "999.1.1.1".into(),
                ..ok.clone()
            },
        ),
        (
            "end_user_ip",
            proto::StartVerificationRequest {
                end_user_ip: "1".repeat(100),
                ..ok.clone()
            },
        ),
    ];
    for (field, req) in cases {
        let err = app.start(req.clone()).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(violated_fields(&err), [field], "{req:?}");
    }
    // Nothing was sent, and the server still serves.
    let v = app.started(ok).await;
    assert_eq!(app.outbox.sent_count(&v.id), 1);
    app.stop().await;
}

#[tokio::test]
async fn every_bad_field_of_one_request_is_reported() {
    let app = spawn_app().await;
    let err = app
        .start(proto::StartVerificationRequest {
            to: String::new(),
            channel: 0,
            purpose: 0,
            locale: "??".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad");
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["channel", "locale", "purpose", "to"]);
    app.stop().await;
}

#[tokio::test]
async fn bad_ids_and_codes_are_named() {
    let app = spawn_app().await;
    let id = app.started(sms_to("+14155550100")).await.id;
    let cases = [
        ("", "123456", vec!["id"]),
        ("VE-not-an-id", "123456", vec!["id"]),
        (id.as_str(), "", vec!["code"]),
        (id.as_str(), "12345", vec!["code"]),
        (id.as_str(), "12345678901", vec!["code"]),
        (id.as_str(), "12a456", vec!["code"]),
        ("", "", vec!["id", "code"]),
    ];
    for (bad_id, code, fields) in cases {
        let err = app.check(bad_id, code).await.expect_err("bad");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), fields, "{bad_id:?} {code:?}");
    }
    for err in [
        app.get("nope").await.expect_err("bad"),
        app.cancel("").await.expect_err("bad"),
    ] {
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["id"]);
    }
    // Malformed codes cost no attempt.
    let v = app.get(&id).await.expect("get");
    assert_eq!(v.check_attempts_remaining, 5);
    app.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_before_decoding() {
    let app = spawn_app().await;
    let err = app
        .start(proto::StartVerificationRequest {
            to: "x".repeat(64 * 1024),
            ..sms_to("+14155550100")
        })
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::OutOfRange);
    app.started(sms_to("+14155550100")).await;
    app.stop().await;
}
