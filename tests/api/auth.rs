//! Callers and tenants: API keys, isolation between tenants, channels a
//! tenant may use, its own app name; health and reflection stay open.

use sha2::{Digest as _, Sha256};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use verifyd::{
    config::Config,
    proto::{self, verification_service_client::VerificationServiceClient},
    service::{TenantConfig, tenants::ChannelName},
};

use crate::helpers::{TestApp, sms_to, spawn_app_with};

const ACME_KEY: &str = "acme-api-key-5d1f0a8e7c6b";
const GLOBEX_KEY: &str = "globex-api-key-93b7e2c4a1f0";

/// What `tenants.NAME.api_key_sha256` holds for `key`.
pub(crate) fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Two tenants: acme (every channel, its own app name) and globex (email
/// only).
fn with_tenants(config: &mut Config) {
    config.tenants.insert(
        "acme".into(),
        TenantConfig {
            api_key_sha256: vec![digest(ACME_KEY)],
            app_name: "Acme Corp".into(),
            ..TenantConfig::default()
        },
    );
    config.tenants.insert(
        "globex".into(),
        TenantConfig {
            api_key_sha256: vec![digest(GLOBEX_KEY)],
            channels: vec![ChannelName::Email],
            ..TenantConfig::default()
        },
    );
}

/// Sends `authorization` as given (or nothing).
#[derive(Clone)]
pub(crate) struct Authorization(Option<MetadataValue<Ascii>>);

impl Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(crate) type Client = VerificationServiceClient<InterceptedService<Channel, Authorization>>;

fn client(app: &TestApp, authorization: Option<&str>) -> Client {
    let value = authorization.map(|a| a.parse().expect("ascii"));
    VerificationServiceClient::with_interceptor(app.channel.clone(), Authorization(value))
}

/// A client calling as the tenant whose API key is `key`.
pub(crate) fn as_tenant(app: &TestApp, key: &str) -> Client {
    client(app, Some(&format!("Bearer {key}")))
}

#[tokio::test]
async fn a_call_without_a_known_key_is_unauthenticated_and_health_stays_open() {
    let app = spawn_app_with(with_tenants).await;
    for authorization in [
        None,
        Some("Bearer not-a-key"),
        Some("Basic YWNtZTprZXk="),
        Some("Bearer "),
    ] {
        let refused = client(&app, authorization)
            .start_verification(sms_to("+14155550100"))
            .await
            .expect_err("no tenant");
        assert_eq!(refused.code(), Code::Unauthenticated, "{authorization:?}");
        assert!(!refused.message().contains("not-a-key"), "never echoed");
    }
    assert_eq!(app.outbox.total_sent(), 0, "nothing sent");
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no key")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    as_tenant(&app, ACME_KEY)
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("a known key");
}

#[tokio::test]
async fn another_tenants_verification_is_exactly_as_unknown_as_an_id_that_never_existed() {
    let app = spawn_app_with(with_tenants).await;
    let mut acme = as_tenant(&app, ACME_KEY);
    let mut globex = as_tenant(&app, GLOBEX_KEY);
    let v = acme
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("start")
        .into_inner()
        .verification
        .expect("verification");
    let code = app.outbox.code_for(&v.id);
    let never = "VE00000000000000000000000000000000";
    for id in [v.id.as_str(), never] {
        let check = globex
            .check_verification(proto::CheckVerificationRequest {
                id: id.into(),
                code: code.clone(),
            })
            .await
            .expect_err("not globex's");
        let get = globex
            .get_verification(proto::GetVerificationRequest { id: id.into() })
            .await
            .expect_err("not globex's");
        let cancel = globex
            .cancel_verification(proto::CancelVerificationRequest { id: id.into() })
            .await
            .expect_err("not globex's");
        let watch = globex
            .watch_verification(proto::WatchVerificationRequest { id: id.into() })
            .await
            .expect_err("not globex's");
        let resend = globex
            .resend_verification(proto::ResendVerificationRequest {
                id: id.into(),
                channel: proto::Channel::Email.into(),
                ..Default::default()
            })
            .await
            .expect_err("not globex's");
        for refused in [check, get, cancel, watch, resend] {
            assert_eq!(refused.code(), Code::NotFound);
            assert_eq!(refused.message(), "verification not found");
            assert!(refused.details().is_empty());
        }
    }
    let checked = acme
        .check_verification(proto::CheckVerificationRequest {
            id: v.id.clone(),
            code,
        })
        .await
        .expect("acme's own")
        .into_inner();
    assert!(checked.approved, "globex's tries spent nothing");
}

#[tokio::test]
async fn a_channel_the_tenant_may_not_use_is_permission_denied_before_anything_is_sent() {
    let app = spawn_app_with(with_tenants).await;
    let refused = as_tenant(&app, GLOBEX_KEY)
        .start_verification(sms_to("+14155550100"))
        .await
        .expect_err("sms is not globex's");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(app.outbox.total_sent(), 0);
    as_tenant(&app, GLOBEX_KEY)
        .start_verification(proto::StartVerificationRequest {
            to: "user@example.com".into(),
            channel: proto::Channel::Email.into(),
            ..sms_to("")
        })
        .await
        .expect("email is");
}

#[tokio::test]
async fn messages_carry_the_tenants_app_name() {
    let app = spawn_app_with(with_tenants).await;
    let v = as_tenant(&app, ACME_KEY)
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("start")
        .into_inner()
        .verification
        .expect("verification");
    let line = app.outbox.lines_for(&v.id).pop().expect("sent");
    assert!(line.contains("Acme Corp"), "{line}");
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let app = spawn_app_with(|c| c.server.reflection = false).await;
    let refused = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .expect_err("no reflection");
    assert_eq!(refused.code(), Code::Unimplemented);
}

/// What a start's answer says, without what differs by nature (the id,
/// the destination, timestamps).
fn shape(response: &tonic::Response<proto::StartVerificationResponse>) -> String {
    let mut headers: Vec<String> = response
        .metadata()
        .keys()
        .map(|k| format!("{k:?}"))
        .filter(|k| !k.contains("date"))
        .collect();
    headers.sort();
    let v = response
        .get_ref()
        .verification
        .clone()
        .expect("verification");
    format!(
        "headers={headers:?} status={} channel={} purpose={} checks={} sends={} attempts={:?}",
        v.status,
        v.channel,
        v.purpose,
        v.check_attempts_remaining,
        v.send_attempts_remaining,
        v.send_attempts
            .iter()
            .map(|a| (
                a.channel,
                a.status,
                a.provider.clone(),
                a.error_reason.clone()
            ))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn a_starts_answer_says_nothing_about_the_destinations_history() {
    let app = spawn_app_with(with_tenants).await;
    let mut acme = as_tenant(&app, ACME_KEY);
    let mut globex = as_tenant(&app, GLOBEX_KEY);
    let email = |to: &str| proto::StartVerificationRequest {
        to: to.into(),
        channel: proto::Channel::Email.into(),
        ..sms_to("")
    };
    // history@ has a past: a verification approved by acme, and one
    // started and failed by globex.
    let past = acme
        .start_verification(email("history@example.com"))
        .await
        .expect("start")
        .into_inner()
        .verification
        .expect("verification");
    let code = app.outbox.code_for(&past.id);
    acme.check_verification(proto::CheckVerificationRequest {
        id: past.id,
        code: code.clone(),
    })
    .await
    .expect("approve");
    let other = globex
        .start_verification(email("history@example.com"))
        .await
        .expect("start")
        .into_inner()
        .verification
        .expect("verification");
    for _ in 0..5 {
        let _ = globex
            .check_verification(proto::CheckVerificationRequest {
                id: other.id.clone(),
                code: "000000".into(),
            })
            .await;
    }

    // Past the least gap between new verifications, which a start inside
    // it does tell its own tenant (docs/security.md).
    app.clock.advance(std::time::Duration::from_secs(30));
    for client in [&mut acme, &mut globex] {
        let seen = client
            .start_verification(email("history@example.com"))
            .await
            .expect("start with history");
        let fresh = client
            .start_verification(email("fresh@example.com"))
            .await
            .expect("start without");
        assert_eq!(shape(&seen), shape(&fresh));
    }
}
