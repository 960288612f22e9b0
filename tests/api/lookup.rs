//! Risk signals before a phone send: Twilio Lookup v2 (a local fake that
//! answers as its OpenAPI description documents), the policy that reads
//! it, its cache and its budget.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tonic::Code;
use verifyd::{config::Config, domain::limit::Quota, proto};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path_regex},
};

use crate::{
    fake_twilio::{ACCOUNT_SID, AUTH_TOKEN},
    helpers::{TestApp, sms_to, spawn, spawn_app_with, test_clock, test_config, use_redis},
    redis_server::RedisServer,
};

const NUMBER: &str = "+14155550100";
const REFUSED_LINE: &str = "this number cannot receive text messages";
const CANNOT_USE: &str = "this number cannot be used to verify now; use another method";

/// Lookup v2's answer for `number`, as its OpenAPI examples are shaped.
fn answer(number: &str, line: Option<&str>, sim_swap: Option<Value>) -> Value {
    json!({
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": number,
        "national_format": "(415) 555-0100",
        "valid": true,
        "validation_errors": null,
        "caller_name": null,
        "sim_swap": sim_swap,
        "call_forwarding": null,
        "live_activity": null,
        "line_type_intelligence": line.map(|kind| json!({
            "error_code": null,
            "mobile_country_code": "310",
            "mobile_network_code": "456",
            "carrier_name": "T-Mobile USA, Inc.",
            "type": kind,
        })),
        "identity_match": null,
        "reassigned_number": null,
        "sms_pumping_risk": null,
        "phone_number_quality_score": null,
        "url": format!("https://lookups.twilio.com/v2/PhoneNumbers/{number}"),
    })
}

fn swapped_in_the_last_day() -> Value {
    json!({
        "last_sim_swap": {
            "last_sim_swap_date": null,
            "swapped_period": "PT24H",
            "swapped_in_period": true,
        },
        "carrier_name": "T-Mobile USA, Inc.",
        "mobile_country_code": "310",
        "mobile_network_code": "160",
        "error_code": null,
    })
}

async fn fake_lookup(status: u16, body: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/v2/PhoneNumbers/"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    server
}

/// Lookups on, through a Twilio account (SMS stays on the console).
fn with_lookup(config: &mut Config, fake: &MockServer) {
    config
        .providers
        .insert("twilio".into(), crate::twilio::twilio(&fake.uri()));
    config.lookup.enabled = true;
    config.lookup.provider = "twilio".into();
    config.lookup.base_url = fake.uri().parse().expect("url");
}

async fn app_with(fake: &MockServer, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        with_lookup(c, fake);
        configure(c);
    })
    .await
}

fn purposed(to: &str, purpose: proto::Purpose) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        purpose: purpose.into(),
        ..sms_to(to)
    }
}

async fn lookups(fake: &MockServer) -> Vec<wiremock::Request> {
    fake.received_requests().await.unwrap_or_default()
}

#[tokio::test]
async fn the_lookup_asks_as_twilio_documents_and_sms_to_a_landline_is_refused() {
    let fake = fake_lookup(200, answer(NUMBER, Some("landline"), None)).await;
    let app = app_with(&fake, |_| {}).await;

    let err = app
        .start(purposed(NUMBER, proto::Purpose::Enrollment))
        .await
        .expect_err("a landline takes no texts");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), REFUSED_LINE);
    assert_eq!(app.outbox.total_sent(), 0, "nothing was sent");

    let requests = lookups(&fake).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.path(), format!("/v2/PhoneNumbers/{NUMBER}"));
    assert_eq!(
        request.url.query(),
        Some("Fields=line_type_intelligence"),
        "an enrollment asks no SIM change"
    );
    let credentials = STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    assert_eq!(
        request
            .headers
            .get("authorization")
            .map(|v| v.to_str().expect("ascii")),
        Some(format!("Basic {credentials}").as_str())
    );
    assert!(request.body.is_empty());

    // A call reaches a landline; the signals come from the cache. A reset
    // asks the SIM change too, which a landline has none of to ask.
    let call = proto::StartVerificationRequest {
        channel: proto::Channel::Voice.into(),
        voice_mode: proto::VoiceMode::Code.into(),
        ..purposed(NUMBER, proto::Purpose::Enrollment)
    };
    app.started(call).await;
    assert_eq!(lookups(&fake).await.len(), 1, "cached");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.count(
            "verifyd_lookups_total{tenant=\"default\",source=\"fetched\",decision=\"line_type\"}"
        ),
        1.0
    );
    assert_eq!(
        metrics.count(
            "verifyd_lookups_total{tenant=\"default\",source=\"cached\",decision=\"proceed\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_recent_sim_change_refuses_a_reset_without_saying_so_and_not_an_enrollment() {
    let fake = fake_lookup(
        200,
        answer(NUMBER, Some("mobile"), Some(swapped_in_the_last_day())),
    )
    .await;
    let app = app_with(&fake, |c| c.code.resend_cooldown = Duration::ZERO).await;
    for purpose in [proto::Purpose::PasswordReset, proto::Purpose::MethodUpdate] {
        let err = app
            .start(purposed(NUMBER, purpose))
            .await
            .expect_err("swapped");
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(
            err.message(),
            CANNOT_USE,
            "the same words as a lookup that failed"
        );
    }
    let request = &lookups(&fake).await[0];
    assert_eq!(
        request.url.query(),
        Some("Fields=line_type_intelligence,sim_swap")
    );
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(app.outbox.total_sent(), 1);
    app.stop().await;
}

#[tokio::test]
async fn when_the_lookup_fails_a_reset_is_refused_and_an_enrollment_goes_ahead() {
    let fake = fake_lookup(
        500,
        json!({"code": 20500, "message": "Internal Server Error"}),
    )
    .await;
    let app = app_with(&fake, |c| c.code.resend_cooldown = Duration::ZERO).await;
    let err = app
        .start(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await
        .expect_err("closed");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), CANNOT_USE);
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(
        lookups(&fake).await.len(),
        1,
        "a failure is remembered for a minute: a probe repeated at once pays nothing"
    );
    let metrics = app.metrics().await;
    for (source, decision) in [("failed", "lookup_unavailable"), ("cached", "proceed")] {
        let series = format!(
            "verifyd_lookups_total{{tenant=\"default\",source=\"{source}\",decision=\"{decision}\"}}"
        );
        assert_eq!(metrics.count(&series), 1.0, "{series}");
    }
    app.clock.advance(Duration::from_secs(61));
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(
        lookups(&fake).await.len(),
        2,
        "asked again after the minute"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_spent_lookup_budget_applies_the_failure_policy_and_is_never_given_back() {
    let fake = fake_lookup(200, answer(NUMBER, Some("mobile"), None)).await;
    let app = app_with(&fake, |c| {
        c.limits.lookups_per_tenant = Quota {
            burst: 1,
            period: Duration::from_secs(3_600),
        };
        c.lookup.sim_swap_within = Duration::ZERO;
    })
    .await;
    // The one lookup goes to the first number; the second finds the
    // budget spent.
    app.started(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await;
    let err = app
        .start(purposed("+14155550101", proto::Purpose::PasswordReset))
        .await
        .expect_err("no lookup left: closed for a reset");
    assert_eq!(err.message(), CANNOT_USE);
    app.started(purposed("+14155550102", proto::Purpose::Enrollment))
        .await;
    assert_eq!(
        lookups(&fake).await.len(),
        1,
        "the spent budget asked nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn signals_are_kept_for_the_cache_ttl_and_shared_by_replicas_on_redis() {
    let fake = fake_lookup(200, answer(NUMBER, Some("mobile"), None)).await;
    let redis = RedisServer::start();
    let clock = test_clock();
    let config = || {
        let mut config = test_config();
        use_redis(&mut config, &[redis.url()]);
        with_lookup(&mut config, &fake);
        config.lookup.sim_swap_within = Duration::ZERO;
        config
    };
    let one = spawn(config(), clock.clone()).await;
    let two = spawn(config(), clock.clone()).await;
    one.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    clock.advance(Duration::from_secs(600));
    two.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(
        lookups(&fake).await.len(),
        1,
        "the other replica read the cache"
    );
    let keys = redis.cli(&["--scan", "--pattern", "verifyd:*lk:*"]);
    assert!(!keys.contains("4155550100"), "keyed by hash: {keys}");
    assert!(!keys.trim().is_empty(), "cached in Redis");
    // Redis expires the entry on its own clock: forced here.
    for key in keys.split_whitespace() {
        redis.cli(&["DEL", key]);
    }
    clock.advance(Duration::from_secs(600));
    one.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(lookups(&fake).await.len(), 2, "looked up again");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_tenant_may_turn_lookups_off_and_email_is_never_looked_up() {
    let fake = fake_lookup(200, answer(NUMBER, Some("landline"), None)).await;
    let app = app_with(&fake, |c| {
        c.lookup.enabled = false;
    })
    .await;
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    app.started(proto::StartVerificationRequest {
        to: "ana@example.com".into(),
        channel: proto::Channel::Email.into(),
        ..purposed(NUMBER, proto::Purpose::PasswordReset)
    })
    .await;
    assert!(lookups(&fake).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_memory_cache_expires_with_the_cache_ttl() {
    let fake = fake_lookup(200, answer(NUMBER, Some("mobile"), None)).await;
    let app = app_with(&fake, |c| {
        c.lookup.sim_swap_within = Duration::ZERO;
        c.lookup.cache_ttl = Duration::from_secs(3_600);
        c.code.resend_cooldown = Duration::ZERO;
    })
    .await;
    if app.redis.is_some() {
        // Redis expires entries on its own clock; the test above covers it.
        app.stop().await;
        return;
    }
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    app.clock.advance(Duration::from_secs(3_599));
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(lookups(&fake).await.len(), 1);
    app.clock.advance(Duration::from_secs(1));
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(lookups(&fake).await.len(), 2, "expired");
    app.stop().await;
}

#[tokio::test]
async fn a_lookup_refusal_gives_the_number_prefixs_cell_back() {
    let fake = fake_lookup(200, answer(NUMBER, Some("landline"), None)).await;
    let app = app_with(&fake, |c| c.limits.starts_per_prefix.burst = 1).await;
    for n in 0..3 {
        let err = app
            .start(purposed(
                &format!("+1415555010{n}"),
                proto::Purpose::Enrollment,
            ))
            .await
            .expect_err("a landline takes no texts");
        assert_eq!(err.message(), REFUSED_LINE);
    }
    // The prefix's one cell is still there for a call.
    app.started(proto::StartVerificationRequest {
        channel: proto::Channel::Voice.into(),
        voice_mode: proto::VoiceMode::Code.into(),
        ..purposed("+14155550109", proto::Purpose::Enrollment)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_configuration_names_a_twilio_account_and_a_cache_that_outlasts_the_least_gap() {
    let fake = MockServer::start().await;
    let mut config = test_config();
    with_lookup(&mut config, &fake);
    config.validate().expect("valid");
    config.lookup.provider = "console".into();
    let err = config.validate().expect_err("no Twilio account");
    assert!(err.to_string().contains("lookup.provider"), "{err}");
    config.lookup.provider = "twilio".into();
    // The default least gap doubles to 4 minutes.
    config.lookup.cache_ttl = Duration::from_secs(239);
    let err = config.validate().expect_err("shorter than the gap");
    assert!(err.to_string().contains("lookup.cache_ttl"), "{err}");
    config.lookup.cache_ttl = Duration::from_secs(240);
    config.validate().expect("as long as the gap");
    // Off everywhere: nothing to check.
    config.lookup.enabled = false;
    config.lookup.provider = String::new();
    config.validate().expect("lookups off");
}

#[tokio::test]
async fn a_start_the_least_gap_or_the_budget_refuses_pays_for_no_lookup() {
    let fake = fake_lookup(200, answer(NUMBER, Some("mobile"), None)).await;
    let app = app_with(&fake, |c| c.limits.starts_per_destination.burst = 2).await;
    // An enrollment's answer holds no SIM change, so a reset cannot use it.
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(lookups(&fake).await.len(), 1);
    let err = app
        .start(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await
        .expect_err("inside the least gap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        lookups(&fake).await.len(),
        1,
        "no lookup paid for a start the gap refuses"
    );

    // Past the gap, the second start spends the burst of two; the third,
    // past its own gap, finds the budget spent before any lookup.
    app.clock.advance(Duration::from_secs(30));
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    app.clock.advance(Duration::from_secs(60));
    let err = app
        .start(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await
        .expect_err("the destination's budget is spent");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(lookups(&fake).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_sim_answer_holds_a_minute_so_a_swap_after_it_is_still_caught() {
    let not_swapped = json!({
        "last_sim_swap": {
            "last_sim_swap_date": null,
            "swapped_period": "PT720H",
            "swapped_in_period": false,
        },
        "error_code": null,
    });
    let fake = fake_lookup(200, answer(NUMBER, Some("mobile"), Some(not_swapped))).await;
    let app = app_with(&fake, |c| c.code.resend_cooldown = Duration::ZERO).await;
    app.started(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await;
    app.clock.advance(Duration::from_secs(60));
    app.started(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await;
    assert_eq!(lookups(&fake).await.len(), 1, "fresh for a minute");
    // The SIM is swapped; the next reset asks again and is refused.
    fake.reset().await;
    Mock::given(method("GET"))
        .and(path_regex("^/v2/PhoneNumbers/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer(
            NUMBER,
            Some("mobile"),
            Some(swapped_in_the_last_day()),
        )))
        .mount(&fake)
        .await;
    app.clock.advance(Duration::from_secs(1));
    let err = app
        .start(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await
        .expect_err("swapped since");
    assert_eq!(err.message(), CANNOT_USE);
    // An enrollment still uses the line type, cached an hour long.
    app.started(purposed(NUMBER, proto::Purpose::Enrollment))
        .await;
    assert_eq!(lookups(&fake).await.len(), 1, "one lookup since the swap");
    app.stop().await;
}

#[tokio::test]
async fn a_resend_its_verification_refuses_pays_for_no_lookup() {
    let fake = fake_lookup(200, answer(NUMBER, Some("mobile"), None)).await;
    let app = app_with(&fake, |c| {
        c.lookup.sim_swap_within = Duration::ZERO;
        c.lookup.cache_ttl = Duration::from_secs(240);
        c.code.max_send_attempts = 1;
    })
    .await;
    let v = app
        .started(purposed(NUMBER, proto::Purpose::PasswordReset))
        .await;
    // The cached answer is gone; the verification has no send left.
    app.clock.advance(Duration::from_secs(300));
    let err = app
        .resend(crate::helpers::resend_on(&v.id, proto::Channel::Sms))
        .await
        .expect_err("no send left");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        lookups(&fake).await.len(),
        1,
        "no lookup for a send the store refuses"
    );
    app.stop().await;
}
