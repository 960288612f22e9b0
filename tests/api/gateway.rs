//! The generic HTTP provider against a local in-house gateway (wiremock):
//! a signed JSON POST, and how the gateway's answers are treated.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tonic::Code;
use verifyd::{
    app::{Application, RunError, delivery::SetupError},
    config::Config,
    delivery::{config::ProviderConfig, http::HttpConfig},
    proto::DeliveryStatus,
    secret::Secret,
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::helpers::{sms_to, spawn_app_with, test_config, violated_fields};

const SECRET: &str = "gateway-signing-secret-0123456789abcdef";

fn with_gateway(config: &mut Config, server: &MockServer) {
    config.providers.insert(
        "gateway".into(),
        ProviderConfig::Http(HttpConfig {
            url: format!("{}/send", server.uri()).parse().expect("url"),
            signing_secret: Secret::new(SECRET),
        }),
    );
    config.delivery.sms = vec!["gateway".into()];
}

/// What a gateway does to authenticate verifyd: recompute the signature.
fn signature_is_valid(header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test]
async fn the_gateway_gets_a_signed_json_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"id": "gw-1"})))
        .mount(&server)
        .await;
    let app = spawn_app_with(|c| with_gateway(c, &server)).await;
    let mut req = sms_to("+14155550100");
    req.locale = "fr-CA".into();
    let v = app.started(req).await;

    let received = server.received_requests().await.expect("recorded");
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.url.path(), "/send");
    let header = request
        .headers
        .get("x-verifyd-signature")
        .and_then(|h| h.to_str().ok())
        .expect("signed");
    assert!(signature_is_valid(header, &request.body), "{header}");
    let body: Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(body["to"], "+14155550100");
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["verification_id"], v.id.as_str());
    assert_eq!(body["locale"], "fr-CA");
    let code: String = body["body"]
        .as_str()
        .expect("text")
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a code")
        .into();
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    app.stop().await;
}

#[tokio::test]
async fn a_422_refuses_the_destination_and_a_5xx_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let app = spawn_app_with(|c| with_gateway(c, &server)).await;

    let err = app.start(sms_to("+14155550100")).await.expect_err("422");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["to"]);

    let v = app.started(sms_to("+14155550101")).await;
    let statuses: Vec<_> = v.send_attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            i32::from(DeliveryStatus::Failed),
            i32::from(DeliveryStatus::Accepted)
        ]
    );
    assert_eq!(v.send_attempts[0].error_reason, "HTTP 503");
    assert_eq!(server.received_requests().await.expect("recorded").len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_misconfigured_provider_stops_startup_with_one_line() {
    let mut config = test_config();
    config.providers.insert(
        "gateway".into(),
        ProviderConfig::Http(HttpConfig {
            url: "ftp://gateway.internal/send".parse().expect("url"),
            signing_secret: Secret::new("short"),
        }),
    );
    config.delivery.sms = vec!["gateway".into()];
    config.delivery.retry.attempt_timeout = Duration::from_secs(1);
    let err = Application::build(config).await.expect_err("refused");
    assert!(
        matches!(err, RunError::Delivery(SetupError::Provider { .. })),
        "{err:?}"
    );
    let line = err.to_string();
    assert_eq!(line, "provider gateway: url must be http or https");
    assert!(!line.contains('\n'));
}
