//! SMS through Twilio's Messages API (a local fake), the delivery pipeline
//! around it, and Twilio's signed status callbacks.

use std::{collections::BTreeMap, time::Duration};

use tonic::Code;
use verifyd::{
    config::Config,
    delivery::{config::ProviderConfig, twilio::TwilioConfig},
    proto::{self, DeliveryStatus, VerificationStatus},
    secret::Secret,
};

use crate::{
    fake_twilio::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio, sid, sign},
    helpers::{TestApp, sms_to, spawn_app_with, status, violated_fields},
};

const PUBLIC_BASE: &str = "https://verifyd.example.com/";

/// A Twilio provider at `base_url` (a fake), with the test account.
pub(crate) fn twilio(base_url: &str) -> ProviderConfig {
    ProviderConfig::Twilio(TwilioConfig {
        base_url: base_url.parse().expect("url"),
        account_sid: ACCOUNT_SID.into(),
        auth_token: Secret::new(AUTH_TOKEN),
        previous_auth_token: None,
        api_key_sid: None,
        api_key_secret: None,
        from: Some(FROM.into()),
        messaging_service_sid: None,
        ring_timeout: Duration::from_secs(30),
        machine_detection: true,
        call_time_limit: Duration::from_secs(120),
    })
}

/// SMS through the named fakes, in order, with callbacks to the webhook
/// listener.
pub(crate) fn with_twilio(config: &mut Config, fakes: &[(&str, &FakeTwilio)]) {
    config.delivery.sms.clear();
    for (name, fake) in fakes {
        config
            .providers
            .insert((*name).into(), twilio(&fake.server.uri()));
        config.delivery.sms.push((*name).into());
    }
    config.webhooks.addr = "127.0.0.1:0".parse().expect("addr");
    config.webhooks.public_base_url = Some(PUBLIC_BASE.parse().expect("url"));
    config.delivery.retry.attempt_timeout = Duration::from_millis(500);
}

#[tokio::test]
async fn a_code_goes_out_as_twilio_documents_the_request() {
    let fake = FakeTwilio::start().await;
    fake.accept(&sid("SM", 1)).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;

    let v = app.started(sms_to("+14155550100")).await;
    let sent = fake.sent().await;
    assert_eq!(sent.len(), 1);
    let form = &sent[0];
    let fields: Vec<(String, String)> = form.clone().into_iter().collect();
    crate::fake_twilio::assert_conforms("CreateMessage", &fields);
    assert_eq!(form["To"], "+14155550100");
    assert_eq!(form["From"], FROM);
    assert!(!form.contains_key("MessagingServiceSid"));
    assert_eq!(
        form["StatusCallback"],
        format!(
            "{PUBLIC_BASE}webhooks/twilio/twilio/message-status?tenant=default&verification={}",
            v.id
        )
    );
    let code = code_in(form);
    assert_eq!(v.send_attempts.len(), 1);
    assert_eq!(v.send_attempts[0].provider, "twilio");
    assert_eq!(
        v.send_attempts[0].status,
        i32::from(DeliveryStatus::Accepted)
    );
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    app.stop().await;
}

#[tokio::test]
async fn a_5xx_is_retried_and_the_retry_counts_as_one_send() {
    let fake = FakeTwilio::start().await;
    fake.fail(500, 20500, "Internal Server Error", 1).await;
    fake.accept(&sid("SM", 2)).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;

    let v = app.started(sms_to("+14155550100")).await;
    assert_eq!(fake.sent().await.len(), 2);
    let statuses: Vec<_> = v.send_attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            i32::from(DeliveryStatus::Failed),
            i32::from(DeliveryStatus::Accepted)
        ]
    );
    assert!(
        v.send_attempts[0].error_reason.contains("HTTP 500"),
        "{:?}",
        v.send_attempts[0]
    );
    assert_eq!(v.send_attempts_remaining, 4);
    app.stop().await;
}

#[tokio::test]
async fn a_refused_number_is_final_and_its_echo_is_masked() {
    let (first, second) = (FakeTwilio::start().await, FakeTwilio::start().await);
    first
        .fail(
            400,
            21211,
            "The 'To' number +14155550100 is not a valid phone number.",
            10,
        )
        .await;
    second.accept(&sid("SM", 3)).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("primary", &first), ("backup", &second)])).await;

    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["to"]);
    assert!(!format!("{err:?}").contains("+14155550100"), "{err:?}");
    assert_eq!(first.sent().await.len(), 1, "no retry");
    assert_eq!(second.sent().await.len(), 0, "no failover");
    app.stop().await;
}

#[tokio::test]
async fn a_provider_that_hangs_costs_its_timeout_then_the_next_one_sends() {
    let (slow, backup) = (FakeTwilio::start().await, FakeTwilio::start().await);
    slow.hang().await;
    backup.accept(&sid("SM", 4)).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("slow", &slow), ("backup", &backup)]);
        c.delivery.retry.attempt_timeout = Duration::from_millis(200);
        c.delivery.retry.retries = 0;
    })
    .await;
    let v = app.started(sms_to("+14155550100")).await;
    assert_eq!(v.send_attempts.len(), 2);
    assert_eq!(v.send_attempts[0].provider, "slow");
    assert_eq!(v.send_attempts[0].error_reason, "timed out after 200ms");
    assert_eq!(v.send_attempts[1].provider, "backup");
    assert_eq!(
        v.send_attempts[1].status,
        i32::from(DeliveryStatus::Accepted)
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_default_retries_a_hanging_provider_still_leaves_time_for_the_next() {
    let (slow, backup) = (FakeTwilio::start().await, FakeTwilio::start().await);
    slow.hang().await;
    backup.accept(&sid("SM", 13)).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("slow", &slow), ("backup", &backup)]);
        c.delivery.retry = verifyd::delivery::RetryPolicy::default();
        c.delivery.timeout = Duration::from_secs(2);
    })
    .await;
    let v = app.started(sms_to("+14155550100")).await;
    let last = v.send_attempts.last().expect("attempts");
    assert_eq!(last.provider, "backup");
    assert_eq!(last.status, i32::from(DeliveryStatus::Accepted));
    assert!(
        v.send_attempts[0]
            .error_reason
            .starts_with("timed out after")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_request_fails_over_to_the_next_provider() {
    let (broken, backup) = (FakeTwilio::start().await, FakeTwilio::start().await);
    broken.fail(401, 20003, "Authenticate", 10).await;
    backup.accept(&sid("SM", 5)).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("broken", &broken), ("backup", &backup)])).await;
    let v = app.started(sms_to("+14155550100")).await;
    assert_eq!(broken.sent().await.len(), 1, "a 4xx is not retried");
    assert_eq!(backup.sent().await.len(), 1);
    assert_eq!(v.send_attempts[1].provider, "backup");
    app.stop().await;
}

#[tokio::test]
async fn the_circuit_breaker_skips_a_failing_provider_then_probes_it() {
    let (flaky, backup) = (FakeTwilio::start().await, FakeTwilio::start().await);
    flaky.fail(503, 20503, "Service Unavailable", 2).await;
    flaky.accept(&sid("SM", 6)).await;
    backup.accept(&sid("SM", 7)).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("flaky", &flaky), ("backup", &backup)]);
        c.delivery.retry.retries = 0;
        c.delivery.breaker.failures = 2;
        c.delivery.breaker.open_for = Duration::from_secs(30);
    })
    .await;
    for n in 0..2 {
        app.started(sms_to(&format!("+1415555010{n}"))).await;
    }
    assert_eq!(flaky.sent().await.len(), 2);

    // Open: skipped without a request.
    let v = app.started(sms_to("+14155550102")).await;
    assert_eq!(flaky.sent().await.len(), 2);
    assert_eq!(
        v.send_attempts[0].error_reason,
        "circuit open: provider skipped"
    );
    assert_eq!(v.send_attempts[1].provider, "backup");

    // After open_for, one probe goes through; it succeeds and closes it.
    app.clock.advance(Duration::from_secs(30));
    let v = app.started(sms_to("+14155550103")).await;
    assert_eq!(flaky.sent().await.len(), 3);
    assert_eq!(v.send_attempts.len(), 1);
    assert_eq!(v.send_attempts[0].provider, "flaky");
    app.started(sms_to("+14155550104")).await;
    assert_eq!(flaky.sent().await.len(), 4, "closed again");
    app.stop().await;
}

/// The 6-digit code in a message body Twilio received.
fn code_in(form: &BTreeMap<String, String>) -> String {
    form["Body"]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code in the body")
        .into()
}

/// The verification a send error names.
fn named(err: &tonic::Status) -> String {
    tonic_types::StatusExt::get_details_resource_info(err)
        .expect("the error names the verification")
        .resource_name
}

#[tokio::test]
async fn a_send_whose_outcome_is_unknown_locks_no_one_out() {
    // Three verifications, each first sent and accepted (code A), then
    // resent into three 5xx in a row: Twilio may have sent that one (code
    // B) all the same.
    let fake = FakeTwilio::start().await;
    fake.accept(&sid("SM", 1)).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        c.delivery.retry.backoff = Duration::from_millis(1);
    })
    .await;
    let mut held = Vec::new();
    for to in ["+14155550100", "+14155550101", "+14155550102"] {
        let v = app.started(sms_to(to)).await;
        let a = code_in(fake.sent().await.last().expect("sent"));
        held.push((v.id, a));
    }
    app.clock.advance(Duration::from_secs(30));
    let mut codes = Vec::new();
    for (id, a) in held {
        let before = fake.sent().await.len();
        fake.fail(500, 20500, "Internal Server Error", 3).await;
        let err = app
            .resend(crate::helpers::resend_on(&id, proto::Channel::Sms))
            .await
            .expect_err("no answer verifyd can trust");
        // As before: UNAVAILABLE, naming the verification.
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(named(&err), id);
        // The retries carried one message: one code the user may hold.
        let tries = fake.sent().await.split_off(before);
        assert_eq!(tries.len(), 3);
        let b = code_in(&tries[0]);
        assert!(tries.iter().all(|t| code_in(t) == b), "the same code");
        assert_ne!(a, b);
        let v = app.get(&id).await.expect("get");
        assert_eq!(status(&v), VerificationStatus::Pending);
        codes.push((id, a, b));
    }
    let [(first, a1, _), (second, _, b2), (third, a3, b3)] = &codes[..] else {
        unreachable!("three verifications");
    };
    // Whichever code the user got checks: the last accepted or the one
    // whose send's outcome is unknown.
    assert!(app.check(first, a1).await.expect("check").approved);
    assert!(app.check(second, b2).await.expect("check").approved);
    // Until the next accepted send: then only its code does.
    app.clock.advance(Duration::from_secs(60));
    app.resent(crate::helpers::resend_on(third, proto::Channel::Sms))
        .await;
    let c3 = code_in(fake.sent().await.last().expect("sent"));
    for old in [a3, b3] {
        let checked = app.check(third, old).await.expect("check");
        assert!(!checked.approved, "an earlier code after an accepted send");
    }
    assert!(app.check(third, &c3).await.expect("check").approved);
    app.stop().await;
}

#[tokio::test]
async fn a_first_send_whose_outcome_is_unknown_leaves_the_verification_pending() {
    let fake = FakeTwilio::start().await;
    fake.fail(500, 20500, "Internal Server Error", 100).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        c.delivery.retry.backoff = Duration::from_millis(1);
    })
    .await;
    let err = app.start(sms_to("+14155550100")).await.expect_err("5xx");
    assert_eq!(err.code(), Code::Unavailable);
    let id = named(&err);
    let v = app.get(&id).await.expect("get");
    assert_eq!(
        status(&v),
        VerificationStatus::Pending,
        "the SMS may be there"
    );
    let code = code_in(fake.sent().await.last().expect("sent"));
    assert!(app.check(&id, &code).await.expect("check").approved);

    // A refusal is no unknown outcome: the destination's first send fails.
    let fake = FakeTwilio::start().await;
    fake.fail(400, 20003, "Authenticate", 100).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;
    let err = app.start(sms_to("+14155550100")).await.expect_err("4xx");
    assert_eq!(err.code(), Code::Unavailable);
    let v = app.get(&named(&err)).await.expect("get");
    assert_eq!(status(&v), VerificationStatus::Failed);
    app.stop().await;
}

#[tokio::test]
async fn a_destination_refused_after_a_try_that_may_have_sent_leaves_the_code_usable() {
    // The first provider's answer is lost (a 5xx: it may have sent the
    // SMS); the second refuses the number.
    let lost = FakeTwilio::start().await;
    lost.fail(500, 20500, "Internal Server Error", 100).await;
    let refusing = FakeTwilio::start().await;
    refusing
        .fail(
            400,
            21211,
            "The 'To' number is not a valid phone number.",
            100,
        )
        .await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("lost", &lost), ("refusing", &refusing)]);
        c.delivery.retry.retries = 0;
    })
    .await;
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("no one took it");
    // Not "invalid to": the caller should keep the verification.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let id = named(&err);
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Pending
    );
    let code = code_in(lost.sent().await.last().expect("sent"));
    assert!(app.check(&id, &code).await.expect("check").approved);
    app.stop().await;
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_sent_nothing_so_a_first_send_fails() {
    let closed = crate::smtp_sink::closed_port();
    let app = spawn_app_with(|c| {
        with_twilio(c, &[]);
        c.providers.insert(
            "twilio".into(),
            twilio(&format!("http://127.0.0.1:{closed}")),
        );
        c.delivery.sms = vec!["twilio".into()];
        c.delivery.retry.backoff = Duration::from_millis(1);
    })
    .await;
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable);
    let v = app.get(&named(&err)).await.expect("get");
    assert_eq!(v.send_attempts.len(), 3, "retried: it may come up");
    assert_eq!(v.send_attempts[0].error_reason, "connection failed");
    // No connection, no message: nothing the user could hold.
    assert_eq!(status(&v), VerificationStatus::Failed);
    app.stop().await;
}

#[tokio::test]
async fn every_provider_failing_on_the_first_send_answers_unavailable() {
    let fake = FakeTwilio::start().await;
    fake.fail(500, 20500, "Internal Server Error", 100).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;
    let err = app.start(sms_to("+14155550100")).await.expect_err("fails");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no provider accepted"), "{err:?}");
    assert_eq!(fake.sent().await.len(), 3, "one try and two retries");
    app.stop().await;
}

/// Posts a status callback to the webhook listener, signed for the public
/// URL, as Twilio does.
pub(crate) async fn callback(
    app: &TestApp,
    id: &str,
    params: &[(&str, &str)],
    token: Option<&str>,
) -> u16 {
    let path = format!("webhooks/twilio/twilio/message-status?tenant=default&verification={id}");
    let params: BTreeMap<&str, &str> = params.iter().copied().collect();
    let mut request = reqwest::Client::new()
        .post(format!(
            "http://{}/{path}",
            app.webhook_addr.expect("webhooks on")
        ))
        .form(&params);
    if let Some(token) = token {
        request = request.header(
            "X-Twilio-Signature",
            sign(token, &format!("{PUBLIC_BASE}{path}"), &params),
        );
    }
    request
        .send()
        .await
        .expect("webhook answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn signed_status_callbacks_update_the_send_attempt_and_never_move_it_back() {
    let fake = FakeTwilio::start().await;
    let message = sid("SM", 8);
    fake.accept(&message).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;
    let v = app.started(sms_to("+14155550100")).await;
    let report = |status: &'static str| {
        vec![
            ("MessageSid", message.as_str()),
            ("MessageStatus", status),
            ("AccountSid", ACCOUNT_SID),
        ]
    };

    assert_eq!(
        callback(&app, &v.id, &report("delivered"), None).await,
        403,
        "unsigned"
    );
    assert_eq!(
        callback(&app, &v.id, &report("delivered"), Some("wrong-token")).await,
        403
    );
    let unchanged = app.get(&v.id).await.expect("get");
    assert_eq!(
        unchanged.send_attempts[0].status,
        i32::from(DeliveryStatus::Accepted)
    );

    assert_eq!(
        callback(&app, &v.id, &report("sent"), Some(AUTH_TOKEN)).await,
        204
    );
    assert_eq!(
        callback(&app, &v.id, &report("delivered"), Some(AUTH_TOKEN)).await,
        204
    );
    assert_eq!(
        callback(&app, &v.id, &report("sent"), Some(AUTH_TOKEN)).await,
        204,
        "late"
    );
    let after = app.get(&v.id).await.expect("get");
    assert_eq!(
        after.send_attempts[0].status,
        i32::from(DeliveryStatus::Delivered)
    );
    assert_eq!(after.send_attempts[0].provider_status, "delivered");
    assert_eq!(status(&after), VerificationStatus::Pending);

    let bad = vec![("MessageSid", "nope"), ("MessageStatus", "delivered")];
    assert_eq!(callback(&app, &v.id, &bad, Some(AUTH_TOKEN)).await, 400);
    app.stop().await;
}

#[tokio::test]
async fn watchers_see_delivery_updates() {
    use tokio_stream::StreamExt as _;
    let fake = FakeTwilio::start().await;
    let message = sid("SM", 9);
    fake.accept(&message).await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;
    let v = app.started(sms_to("+14155550100")).await;
    let mut stream = app.watch(&v.id).await.expect("watch");
    stream.next().await.expect("current").expect("ok");
    let params = vec![
        ("MessageSid", message.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    assert_eq!(callback(&app, &v.id, &params, Some(AUTH_TOKEN)).await, 204);
    let update = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("pushed")
        .expect("update")
        .expect("ok")
        .verification
        .expect("v");
    assert_eq!(
        update.send_attempts[0].status,
        i32::from(DeliveryStatus::Undelivered)
    );
    assert!(update.send_attempts[0].error_reason.contains("30003"));
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_and_a_messaging_service_can_stand_in_for_the_account_and_number() {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use wiremock::{Mock, ResponseTemplate, matchers::header};
    let fake = FakeTwilio::start().await;
    let (key_sid, key_secret) = (sid("SK", 1), "api-key-secret");
    let service = sid("MG", 1);
    Mock::given(header(
        "authorization",
        format!(
            "Basic {}",
            STANDARD.encode(format!("{key_sid}:{key_secret}"))
        )
        .as_str(),
    ))
    .respond_with(
        ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": sid("SM", 10)})),
    )
    .mount(&fake.server)
    .await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        let Some(ProviderConfig::Twilio(t)) = c.providers.get_mut("twilio") else {
            unreachable!()
        };
        t.api_key_sid = Some(key_sid.clone());
        t.api_key_secret = Some(Secret::new(key_secret));
        t.from = None;
        t.messaging_service_sid = Some(service.clone());
    })
    .await;
    app.started(sms_to("+14155550100")).await;
    let sent = fake.sent().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["MessagingServiceSid"], service);
    assert!(!sent[0].contains_key("From"));
    app.stop().await;
}

#[tokio::test]
async fn callbacks_signed_with_the_previous_token_pass_during_rotation() {
    use wiremock::{Mock, ResponseTemplate, matchers::method};
    let fake = FakeTwilio::start().await;
    let message = sid("SM", 11);
    // API calls now authenticate with the new token.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": message})))
        .mount(&fake.server)
        .await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        let Some(ProviderConfig::Twilio(t)) = c.providers.get_mut("twilio") else {
            unreachable!()
        };
        t.previous_auth_token = Some(std::mem::replace(
            &mut t.auth_token,
            Secret::new("the-new-token-0123456789abcdef"),
        ));
    })
    .await;
    let v = app.started(sms_to("+14155550100")).await;
    let sent = vec![("MessageSid", message.as_str()), ("MessageStatus", "sent")];
    assert_eq!(
        callback(&app, &v.id, &sent, Some(AUTH_TOKEN)).await,
        204,
        "previous token"
    );
    let delivered = vec![
        ("MessageSid", message.as_str()),
        ("MessageStatus", "delivered"),
    ];
    assert_eq!(
        callback(
            &app,
            &v.id,
            &delivered,
            Some("the-new-token-0123456789abcdef")
        )
        .await,
        204,
        "current token"
    );
    let after = app.get(&v.id).await.expect("get");
    assert_eq!(after.send_attempts[0].provider_status, "delivered");
    app.stop().await;
}

#[tokio::test]
async fn a_provider_that_drops_the_connection_or_answers_garbage_loses_nothing() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    // Accepts connections and closes them at once.
    let dropper = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dropper_url = format!("http://{}", dropper.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = dropper.accept().await {
            drop(socket);
        }
    });
    let garbage = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>\u{0}\u{1}not json"))
        .mount(&garbage)
        .await;
    let app = spawn_app_with(|c| {
        c.delivery.sms = vec!["dropper".into(), "garbage".into()];
        c.providers.insert("dropper".into(), twilio(&dropper_url));
        c.providers.insert("garbage".into(), twilio(&garbage.uri()));
        c.delivery.retry.retries = 0;
    })
    .await;
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("nobody took it");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("HTTP 502: unreadable error body"),
        "{err:?}"
    );
    // The verification is there with both tries on record, PENDING: a
    // dropped connection and a 502 may each have sent the message.
    let v = app.get(&named(&err)).await.expect("get");
    assert_eq!(status(&v), VerificationStatus::Pending);
    let reasons: Vec<_> = v
        .send_attempts
        .iter()
        .map(|a| a.error_reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        ["request failed", "HTTP 502: unreadable error body"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_send_completes_and_is_recorded_even_when_the_caller_goes_away() {
    use wiremock::{Mock, ResponseTemplate, matchers::method};
    let fake = FakeTwilio::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": sid("SM", 12)}))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&fake.server)
        .await;
    let app = spawn_app_with(|c| with_twilio(c, &[("twilio", &fake)])).await;
    let req = proto::StartVerificationRequest {
        idempotency_key: "leaves-early".into(),
        ..sms_to("+14155550100")
    };
    let mut client = app.client.clone();
    let first = tokio::spawn({
        let req = req.clone();
        async move { client.start_verification(req).await }
    });
    // The provider has the message; the caller hangs up before the answer.
    tokio::time::timeout(Duration::from_secs(10), async {
        while fake.sent().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the provider got the message");
    first.abort();

    // A retry with the key waits for the first run and gets what it
    // recorded: the send went through, once.
    let v = app.started(req).await;
    assert_eq!(v.send_attempts.len(), 1);
    assert_eq!(
        v.send_attempts[0].status,
        i32::from(DeliveryStatus::Accepted)
    );
    assert_eq!(fake.sent().await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_callers_deadline_bounds_the_send() {
    let fake = FakeTwilio::start().await;
    fake.hang().await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        c.delivery.retry.attempt_timeout = Duration::from_secs(5);
    })
    .await;
    let mut request = tonic::Request::new(sms_to("+14155550100"));
    request.set_timeout(Duration::from_millis(800));
    let err = app
        .client
        .clone()
        .start_verification(request)
        .await
        .expect_err("the provider hangs");
    // verifyd's own answer, sent before the deadline, not the transport's
    // DEADLINE_EXCEEDED: the send stopped in time and was recorded.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let v = app.get(&named(&err)).await.expect("get");
    // Twilio may have sent it after all: the verification stays pending.
    assert_eq!(status(&v), VerificationStatus::Pending);
    assert!(
        v.send_attempts[0]
            .error_reason
            .starts_with("timed out after")
    );
    app.stop().await;
}

#[tokio::test]
async fn past_the_cap_on_sends_in_flight_a_start_is_refused_and_takes_nothing() {
    let fake = FakeTwilio::start().await;
    fake.hang_next(2).await;
    fake.accept(&sid("SM", 1)).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        c.delivery.max_sends_in_flight = 2;
        c.delivery.timeout = Duration::from_secs(1);
        c.delivery.retry.retries = 0;
        // One start per end-user IP: a refusal that took the IP's cell
        // would leave its retry nothing.
        c.limits.starts_per_ip.burst = 1;
    })
    .await;
    let from = |ip: &str, to: &str| proto::StartVerificationRequest {
        end_user_ip: ip.into(),
        idempotency_key: format!("start-{to}"),
        ..sms_to(to)
    };

    // Two starts hang on the provider and fill the cap.
    let hung: Vec<_> = ["+14155550100", "+14155550101"]
        .into_iter()
        .enumerate()
        .map(|(n, to)| {
            let mut client = app.client.clone();
            let req = from(&format!("203.0.113.{n}"), to);
            tokio::spawn(async move { client.start_verification(req).await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while fake.sent().await.len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both hanging sends reached the provider");

    let third = from("198.51.100.7", "+14155550102");
    let err = app
        .start(third.clone())
        .await
        .expect_err("the cap on sends in flight is reached");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("sending as many messages"),
        "{err:?}"
    );
    assert_eq!(
        crate::helpers::retry_after(&err),
        Some(Duration::from_secs(1))
    );
    assert_eq!(fake.sent().await.len(), 2, "nothing was sent");
    // Everything else is still served.
    let missing = app
        .get("VE0123456789abcdef0123456789abcdef")
        .await
        .expect_err("no such verification");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(r#"verifyd_rate_limited_total{tenant="default",limit="sends_in_flight"}"#),
        Some(1.0)
    );
    assert_eq!(metrics.value("verifyd_sends_in_flight"), Some(2.0));

    for start in hung {
        let answer = start.await.expect("task");
        assert_eq!(answer.expect_err("timed out").code(), Code::Unavailable);
    }
    // The refused start claimed no idempotency key and took no cell (the
    // IP's, the destination's, the least gap): its retry runs afresh.
    let v = app.started(third).await;
    assert_eq!(v.send_attempts.len(), 1);
    assert_eq!(fake.sent().await.len(), 3);
    assert_eq!(
        app.metrics().await.value("verifyd_sends_in_flight"),
        Some(0.0),
        "every slot given back"
    );
    app.stop().await;
}

#[tokio::test]
async fn numbers_the_provider_refuses_give_their_prefix_cells_back() {
    let fake = FakeTwilio::start().await;
    fake.accept(&sid("SM", 1)).await;
    // SMS to a landline that static numbering data cannot tell from a
    // mobile: Twilio refuses the number.
    fake.fail(400, 21614, "'To' number is not a valid mobile number", 30)
        .await;
    let app = spawn_app_with(|c| {
        crate::fraud::pumping_guard(c);
        with_twilio(c, &[("twilio", &fake)]);
    })
    .await;
    for n in 0..30 {
        let err = app
            .start(sms_to(&format!("+141555501{n:02}")))
            .await
            .expect_err("the provider refuses the number");
        assert_eq!(violated_fields(&err), ["to"]);
    }
    // Nothing went out, so the range's budget is whole.
    app.started(sms_to("+14155550177")).await;
    assert_eq!(fake.sent().await.len(), 31);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_the_provider_refuses_block_no_range() {
    let fake = FakeTwilio::start().await;
    fake.accept(&sid("SM", 1)).await;
    // Each refusal takes a while, so the starts' cells are all held at
    // once: the prefix budget refuses some, with nothing sent.
    fake.refuse_all_but(
        "+14155550177",
        21614,
        "'To' number is not a valid mobile number",
        Duration::from_millis(300),
    )
    .await;
    let app = spawn_app_with(|c| {
        crate::fraud::pumping_guard(c);
        with_twilio(c, &[("twilio", &fake)]);
    })
    .await;
    let starts: Vec<_> = (0..40)
        .map(|n| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .start_verification(sms_to(&format!("+141555502{n:02}")))
                    .await
            })
        })
        .collect();
    let mut held_back = 0;
    for start in starts {
        let refused = start.await.expect("task").expect_err("nothing is sent");
        match refused.code() {
            Code::InvalidArgument => assert_eq!(violated_fields(&refused), ["to"]),
            Code::ResourceExhausted => {
                assert!(
                    refused.message().contains("starts_per_prefix"),
                    "{refused:?}"
                );
                held_back += 1;
            }
            other => panic!("{other:?}: {refused:?}"),
        }
    }
    assert!(held_back > 0, "the budget was held while the sends ran");
    // Nothing went out, so nothing is blocked: the neighbour is reachable.
    app.started(sms_to("+14155550177")).await;
    app.stop().await;
}
