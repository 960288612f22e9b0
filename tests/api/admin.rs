//! The operator API (AdminService): off by default, on a listener of its
//! own with TLS, answering operator tokens only (never a tenant's key),
//! and lifting a prefix block (its budgets refilled with it) or a
//! destination's.

use std::time::Duration;

use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig},
};
use verifyd::{
    config::Config,
    grpc::tls::TlsConfig,
    proto::{self, admin_service_client::AdminServiceClient},
};

use crate::{
    auth::digest,
    helpers::{TestApp, sms_to, spawn_app, spawn_app_with, violated_fields},
    pki::Pki,
};

const TOKEN: &str = "operator-token-0123456789";

fn with_admin_api(pki: &Pki) -> impl FnOnce(&mut Config) + '_ {
    move |config| {
        config.admin_api.addr = Some("127.0.0.1:0".parse().expect("addr"));
        config.admin_api.token_sha256 = vec![digest(TOKEN)];
        config.admin_api.tls = Some(TlsConfig {
            cert_path: pki.path("server.pem"),
            key_path: pki.path("server.key"),
            client_ca_path: None,
            max_handshakes: 16,
            max_handshakes_per_ip: 4,
        });
        // A range that trips after two starts, blocked for an hour.
        config.limits.starts_per_prefix.burst = 2;
        config.limits.starts_per_prefix.period = Duration::from_secs(3600);
        config.fraud.prefix_block = Duration::from_secs(3600);
    }
}

async fn admin(app: &TestApp, pki: &Pki) -> AdminServiceClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    let addr = app.admin_api_addr.expect("the operator API is on");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("TLS");
    AdminServiceClient::new(channel)
}

fn lift(
    token: Option<&str>,
    to: &str,
    scope: proto::BlockScope,
) -> Request<proto::LiftBlockRequest> {
    let mut request = Request::new(proto::LiftBlockRequest {
        tenant: "default".into(),
        destination: to.into(),
        scope: scope.into(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

#[tokio::test]
async fn the_operator_api_is_off_by_default() {
    let app = spawn_app().await;
    assert_eq!(app.admin_api_addr, None);
    app.stop().await;
}

#[tokio::test]
async fn an_operator_lifts_a_prefix_block_and_the_range_sends_again() {
    let pki = Pki::new();
    let app = spawn_app_with(with_admin_api(&pki)).await;
    app.started(sms_to("+14155550100")).await;
    app.started(sms_to("+14155550101")).await;
    let tripped = app.start(sms_to("+14155550102")).await.expect_err("spent");
    assert_eq!(tripped.code(), Code::ResourceExhausted);
    app.clock.advance(Duration::from_secs(60));
    let blocked = app
        .start(sms_to("+14155550103"))
        .await
        .expect_err("blocked");
    assert_eq!(blocked.code(), Code::PermissionDenied);

    let mut client = admin(&app, &pki).await;
    for token in [None, Some("not-a-token")] {
        let refused = client
            .lift_block(lift(token, "+14155550103", proto::BlockScope::Prefix))
            .await
            .expect_err("no operator");
        assert_eq!(refused.code(), Code::Unauthenticated, "{token:?}");
    }
    let bad = client
        .lift_block(lift(
            Some(TOKEN),
            "+14155550103",
            proto::BlockScope::Unspecified,
        ))
        .await
        .expect_err("no scope");
    assert_eq!(violated_fields(&bad), ["scope"]);
    let lifted = client
        .lift_block(lift(Some(TOKEN), "+14155550103", proto::BlockScope::Prefix))
        .await
        .expect("lifted")
        .into_inner();
    assert!(lifted.lifted);
    // The range's budget is full again: two more starts go out.
    app.started(sms_to("+14155550103")).await;
    app.started(sms_to("+14155550104")).await;
    let again = client
        .lift_block(lift(Some(TOKEN), "+14155550103", proto::BlockScope::Prefix))
        .await
        .expect("answered")
        .into_inner();
    assert!(!again.lifted, "nothing was in force");
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_key_is_no_operator_token_and_outside_dev_mode_tls_is_required() {
    let pki = Pki::new();
    let mut config = crate::helpers::test_config();
    with_admin_api(&pki)(&mut config);
    config.tenants.insert(
        "sspr".into(),
        verifyd::service::TenantConfig {
            api_key_sha256: vec![digest(TOKEN)],
            ..Default::default()
        },
    );
    let problem = config.validate().expect_err("shared digest");
    assert!(
        problem.to_string().contains("admin_api.token_sha256"),
        "{problem}"
    );
    config.tenants.clear();
    config.admin_api.tls = None;
    let problem = config.validate().expect_err("no TLS");
    assert!(problem.to_string().contains("admin_api.tls"), "{problem}");

    // A tenant's key at the operator API is refused.
    let app = spawn_app_with(|c| {
        with_admin_api(&pki)(c);
        c.tenants.insert(
            "sspr".into(),
            verifyd::service::TenantConfig {
                api_key_sha256: vec![digest("sspr-key")],
                ..Default::default()
            },
        );
    })
    .await;
    let mut client = admin(&app, &pki).await;
    let refused = client
        .lift_block(lift(
            Some("sspr-key"),
            "+14155550100",
            proto::BlockScope::Destination,
        ))
        .await
        .expect_err("a tenant key");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let unknown = client
        .lift_block(lift(
            Some(TOKEN),
            "+14155550100",
            proto::BlockScope::Destination,
        ))
        .await
        .expect_err("no tenant default once tenants are configured");
    assert_eq!(violated_fields(&unknown), ["tenant"]);
    app.stop().await;
}

fn entry(e: proto::safe_list_entry::Entry) -> proto::SafeListEntry {
    proto::SafeListEntry { entry: Some(e) }
}

fn with_token<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    request
}

#[tokio::test]
async fn a_safe_listed_prefix_skips_the_range_budget_but_not_the_numbers_own_limits() {
    use proto::safe_list_entry::Entry;
    let pki = Pki::new();
    let app = spawn_app_with(with_admin_api(&pki)).await;
    let mut client = admin(&app, &pki).await;
    let prefix = || entry(Entry::Prefix("+1415555".into()));
    let added = client
        .add_safe_list_entry(with_token(proto::AddSafeListEntryRequest {
            tenant: "default".into(),
            entry: Some(prefix()),
        }))
        .await
        .expect("added")
        .into_inner();
    assert!(added.added);
    // Four starts in a range whose budget allows two.
    for n in 0..4 {
        app.started(sms_to(&format!("+1415555010{n}"))).await;
    }
    // The number's own least gap still holds.
    let again = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("too soon");
    assert_eq!(again.code(), Code::ResourceExhausted);

    let removed = client
        .remove_safe_list_entry(with_token(proto::RemoveSafeListEntryRequest {
            tenant: "default".into(),
            entry: Some(prefix()),
        }))
        .await
        .expect("removed")
        .into_inner();
    assert!(removed.removed);
    // The range's budget, untouched by the safe-listed starts: two more.
    app.started(sms_to("+14155550105")).await;
    app.started(sms_to("+14155550106")).await;
    let tripped = app.start(sms_to("+14155550107")).await.expect_err("spent");
    assert_eq!(tripped.code(), Code::ResourceExhausted);

    let bad = client
        .add_safe_list_entry(with_token(proto::AddSafeListEntryRequest {
            tenant: "default".into(),
            entry: Some(entry(Entry::Prefix("1415".into()))),
        }))
        .await
        .expect_err("not a prefix");
    assert_eq!(violated_fields(&bad), ["entry.prefix"]);
    let bad = client
        .add_safe_list_entry(with_token(proto::AddSafeListEntryRequest {
            tenant: "default".into(),
            entry: Some(entry(Entry::Number("a@example.com".into()))),
        }))
        .await
        .expect_err("not a number");
    assert_eq!(violated_fields(&bad), ["entry.number"]);
    app.stop().await;
}

#[tokio::test]
async fn a_helpdesk_lists_a_destinations_verifications_masked_and_without_ids() {
    let pki = Pki::new();
    let app = spawn_app_with(with_admin_api(&pki)).await;
    let first = app.started(sms_to("+14155550100")).await;
    app.clock.advance(Duration::from_secs(60));
    let second = app
        .started(proto::StartVerificationRequest {
            reference: "reset-session-42".into(),
            ..sms_to("+14155550100")
        })
        .await;
    assert_eq!(second.reference, "reset-session-42");
    app.started(sms_to("+14155560177")).await;
    let mut client = admin(&app, &pki).await;
    let list = |limit| {
        with_token(proto::ListDestinationVerificationsRequest {
            tenant: "default".into(),
            destination: "+14155550100".into(),
            limit,
        })
    };
    let found = client
        .list_destination_verifications(list(0))
        .await
        .expect("listed")
        .into_inner()
        .verifications;
    assert_eq!(found.len(), 2, "that number's only");
    assert_eq!(found[0].created_at, second.created_at, "newest first");
    assert_eq!(found[1].created_at, first.created_at);
    assert_eq!(
        found[1].status,
        i32::from(proto::VerificationStatus::Superseded)
    );
    for v in &found {
        assert_eq!(v.id, "", "an id is its session's capability");
        assert_eq!(v.reference, "", "a reference may name a session too");
        assert_eq!(v.to, "+141******00");
        assert_eq!(v.send_attempts.len(), 1);
    }
    let one = client
        .list_destination_verifications(list(1))
        .await
        .expect("listed")
        .into_inner()
        .verifications;
    assert_eq!(one.len(), 1);
    let bad = client
        .list_destination_verifications(list(51))
        .await
        .expect_err("too many");
    assert_eq!(violated_fields(&bad), ["limit"]);
    app.stop().await;
}
