//! The caller's reference and tags: kept with the verification and
//! returned on it everywhere, part of an idempotent start's request, checked
//! before anything happens, and never sent to a provider.

use std::collections::HashMap;

use tokio_stream::StreamExt as _;
use tonic::Code;
use verifyd::proto;

use crate::{
    fake_twilio::{FakeTwilio, sid},
    helpers::{resend_on, sms_to, spawn_app, spawn_app_with, violated_fields},
};

const REFERENCE: &str = "reset-session/7f3a 42";

fn tags() -> HashMap<String, String> {
    [
        ("ticket".to_owned(), "HD-991".to_owned()),
        ("app:region".to_owned(), "eu west".to_owned()),
    ]
    .into()
}

fn referenced(to: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        reference: REFERENCE.to_owned(),
        tags: tags(),
        ..sms_to(to)
    }
}

fn assert_carries(v: &proto::Verification, what: &str) {
    assert_eq!(v.reference, REFERENCE, "{what}");
    assert_eq!(v.tags, tags(), "{what}");
}

#[tokio::test]
async fn the_reference_and_tags_come_back_on_every_answer_about_the_verification() {
    let app = spawn_app().await;
    let v = app.started(referenced("+14155550100")).await;
    assert_carries(&v, "start");
    let mut watch = app.watch(&v.id).await.expect("watch");
    let first = watch.next().await.expect("current").expect("ok");
    assert_carries(&first.verification.expect("v"), "watch");

    app.clock.advance(std::time::Duration::from_secs(60));
    assert_carries(
        &app.resent(resend_on(&v.id, proto::Channel::Sms)).await,
        "resend",
    );
    assert_carries(&app.get(&v.id).await.expect("get"), "get");
    let code = app.outbox.code_for(&v.id);
    let checked = app.check(&v.id, &code).await.expect("check");
    assert!(checked.approved);
    assert_carries(&checked.verification.expect("v"), "check");
    assert_carries(&app.get(&v.id).await.expect("get"), "get after approval");

    // A start without them carries none.
    let plain = app.started(sms_to("+14155550101")).await;
    assert_eq!((plain.reference.as_str(), plain.tags.len()), ("", 0));
    app.stop().await;
}

#[tokio::test]
async fn an_idempotent_replay_carries_them_and_another_reference_is_another_request() {
    let app = spawn_app().await;
    let keyed = |reference: &str, tags: HashMap<String, String>| proto::StartVerificationRequest {
        idempotency_key: "session-1".to_owned(),
        reference: reference.to_owned(),
        tags,
        ..sms_to("+14155550100")
    };
    let first = app.started(keyed(REFERENCE, tags())).await;
    let replay = app.started(keyed(REFERENCE, tags())).await;
    assert_eq!(replay.id, first.id);
    assert_carries(&replay, "replay");
    assert_eq!(
        app.outbox.sent_count(&first.id),
        1,
        "a replay sends nothing"
    );

    let mut other_tags = tags();
    other_tags.insert("ticket".to_owned(), "HD-992".to_owned());
    for (what, request) in [
        ("another reference", keyed("reset-session/other", tags())),
        ("no reference", keyed("", tags())),
        ("other tags", keyed(REFERENCE, other_tags)),
        ("no tags", keyed(REFERENCE, HashMap::new())),
    ] {
        let err = app.start(request).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert_eq!(violated_fields(&err), ["idempotency_key"], "{what}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_references_and_tags_are_refused_by_name_before_anything_is_sent() {
    let app = spawn_app().await;
    let many: HashMap<String, String> = (0..11).map(|i| (format!("k{i}"), String::new())).collect();
    let cases = [
        (
            "a long reference",
            "r".repeat(129),
            HashMap::new(),
            "reference",
        ),
        (
            "a line break",
            "a\nb".to_owned(),
            HashMap::new(),
            "reference",
        ),
        (
            "not ASCII",
            "caf\u{e9}".to_owned(),
            HashMap::new(),
            "reference",
        ),
        ("eleven tags", String::new(), many, "tags"),
        (
            "a key with a space",
            String::new(),
            [("bad key".to_owned(), "v".to_owned())].into(),
            "tags",
        ),
        (
            "a long value",
            String::new(),
            [("k".to_owned(), "v".repeat(129))].into(),
            "tags",
        ),
        (
            "a control character",
            String::new(),
            [("k".to_owned(), "\u{1b}[31m".to_owned())].into(),
            "tags",
        ),
    ];
    for (what, reference, tags, field) in cases {
        let err = app
            .start(proto::StartVerificationRequest {
                reference,
                tags,
                ..sms_to("+14155550100")
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert_eq!(violated_fields(&err), [field], "{what}");
    }
    assert_eq!(app.outbox.total_sent(), 0, "nothing was sent");
    // The largest allowed fits, and a next start is not held back by any
    // of the refused ones.
    let most: HashMap<String, String> = (0..10)
        .map(|i| (format!("{i:0>32}"), "v".repeat(128)))
        .collect();
    let v = app
        .started(proto::StartVerificationRequest {
            reference: "r".repeat(128),
            tags: most.clone(),
            ..sms_to("+14155550100")
        })
        .await;
    assert_eq!(v.tags, most);
    app.stop().await;
}

#[tokio::test]
async fn a_provider_never_sees_them() {
    let fake = FakeTwilio::start().await;
    fake.accept(&sid("SM", 1)).await;
    let app = spawn_app_with(|c| crate::twilio::with_twilio(c, &[("twilio", &fake)])).await;
    let v = app.started(referenced("+14155550100")).await;
    assert_carries(&v, "start");
    let requests = fake.server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 1);
    let request = format!(
        "{} {:?} {}",
        requests[0].url,
        requests[0].headers,
        String::from_utf8_lossy(&requests[0].body)
    );
    for value in [
        REFERENCE,
        "reset-session",
        "HD-991",
        "ticket",
        "eu+west",
        "eu west",
        "region",
    ] {
        assert!(
            !request.contains(value),
            "{value} reached the provider: {request}"
        );
    }
    app.stop().await;
}
