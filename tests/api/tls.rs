//! TLS on the gRPC listener: rustls, client certificates mapped to a
//! tenant, and a certificate rotated on disk picked up without a restart.
//! Certificates are made for each test with `openssl` (`crate::pki`).

use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use verifyd::{
    config::Config,
    grpc::tls::TlsConfig,
    proto::{self, verification_service_client::VerificationServiceClient},
    service::TenantConfig,
};

use crate::{
    helpers::{TestApp, sms_to, spawn_app_with},
    pki::Pki,
};

fn with_tls(pki: &Pki) -> impl FnOnce(&mut Config) + '_ {
    move |config| {
        config.server.tls = Some(TlsConfig {
            cert_path: pki.path("server.pem"),
            key_path: pki.path("server.key"),
            client_ca_path: Some(pki.path("ca.pem")),
            max_handshakes: 256,
            max_handshakes_per_ip: 16,
        });
        config.tenants.insert(
            "sspr".into(),
            TenantConfig {
                client_cert_sans: vec!["sspr.internal".into()],
                ..TenantConfig::default()
            },
        );
        config.tenants.insert(
            "other".into(),
            TenantConfig {
                api_key_sha256: vec![crate::auth::digest("other-key")],
                ..TenantConfig::default()
            },
        );
    }
}

/// A TLS client trusting `ca`, presenting `identity` (`client`) if given.
async fn connect(
    app: &TestApp,
    pki: &Pki,
    ca: &str,
    identity: Option<&str>,
) -> Result<VerificationServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read(&format!("{ca}.pem"))))
        .domain_name("localhost");
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            pki.read(&format!("{name}.pem")),
            pki.read(&format!("{name}.key")),
        ));
    }
    let channel = Channel::from_shared(format!("https://{}", app.grpc_addr))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(VerificationServiceClient::new(channel))
}

#[tokio::test]
async fn a_client_certificate_authenticates_its_tenant_over_tls() {
    let pki = Pki::new();
    let app = spawn_app_with(with_tls(&pki)).await;
    let mut sspr = connect(&app, &pki, "ca", Some("client"))
        .await
        .expect("mutual TLS");
    let v = sspr
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("the certificate is the credential")
        .into_inner()
        .verification
        .expect("verification");

    // Without a certificate (or key), over TLS: no tenant.
    let mut anonymous = connect(&app, &pki, "ca", None).await.expect("TLS");
    let refused = anonymous
        .get_verification(proto::GetVerificationRequest { id: v.id.clone() })
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut other = anonymous;
    let mut request = tonic::Request::new(proto::GetVerificationRequest { id: v.id });
    request
        .metadata_mut()
        .insert("authorization", "Bearer other-key".parse().expect("ascii"));
    let refused = other
        .get_verification(request)
        .await
        .expect_err("not other's");
    assert_eq!(refused.code(), Code::NotFound);
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_from_the_next_connection() {
    let pki = Pki::new();
    let app = spawn_app_with(with_tls(&pki)).await;
    connect(&app, &pki, "ca", Some("client"))
        .await
        .expect("the first certificate");

    // cert-manager rotates: a new CA and server certificate, same paths.
    pki.ca("ca2");
    pki.issue("ca2", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    let mut rotated = connect(&app, &pki, "ca2", Some("client"))
        .await
        .expect("the new certificate, without a restart");
    rotated
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("served");
    assert!(
        connect(&app, &pki, "ca", Some("client")).await.is_err(),
        "the old certificate is gone"
    );
}

#[tokio::test]
async fn a_wildcard_client_certificate_from_the_same_ca_authenticates_no_tenant() {
    // One CA for the whole mesh or cluster: it issues the tenant's own
    // certificate, and a wildcard one to anyone else in the namespace.
    let pki = Pki::new();
    pki.issue("ca", "wildcard", "subjectAltName=DNS:*.ns.svc");
    pki.issue("ca", "exact", "subjectAltName=DNS:sspr.ns.svc");
    pki.issue("ca", "by-ip", "subjectAltName=IP:10.0.0.7");
    pki.issue("ca", "both", "subjectAltName=DNS:sspr.ns.svc,IP:10.0.0.7");
    let app = spawn_app_with(|config| {
        with_tls(&pki)(config);
        config.tenants.insert(
            "mesh".into(),
            TenantConfig {
                client_cert_sans: vec!["sspr.ns.svc".into()],
                ..TenantConfig::default()
            },
        );
        config.tenants.insert(
            "batch".into(),
            TenantConfig {
                client_cert_sans: vec!["10.0.0.7".into()],
                ..TenantConfig::default()
            },
        );
    })
    .await;

    let mut wildcard = connect(&app, &pki, "ca", Some("wildcard"))
        .await
        .expect("TLS: the chain itself is valid");
    let refused = wildcard
        .start_verification(sms_to("+14155550100"))
        .await
        .expect_err("*.ns.svc is not sspr.ns.svc");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut exact = connect(&app, &pki, "ca", Some("exact"))
        .await
        .expect("mutual TLS");
    let v = exact
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("the exact name is the tenant's")
        .into_inner()
        .verification
        .expect("verification");
    let mut by_ip = connect(&app, &pki, "ca", Some("by-ip"))
        .await
        .expect("mutual TLS");
    let other_tenant = by_ip
        .get_verification(proto::GetVerificationRequest { id: v.id })
        .await
        .expect_err("authenticated, as another tenant");
    assert_eq!(other_tenant.code(), Code::NotFound);

    // Naming two tenants, a certificate is neither.
    let mut both = connect(&app, &pki, "ca", Some("both"))
        .await
        .expect("mutual TLS");
    let refused = both
        .start_verification(sms_to("+14155550100"))
        .await
        .expect_err("which tenant?");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn one_client_that_never_says_hello_cannot_hold_the_listener() {
    let pki = Pki::new();
    let app = spawn_app_with(|config| {
        with_tls(&pki)(config);
        let tls = config.server.tls.as_mut().expect("TLS");
        tls.max_handshakes_per_ip = 1;
    })
    .await;
    // A connection that sends nothing holds 127.0.0.1's one handshake
    // slot; the kernel queues connections in order, so it is accepted
    // before the client's below.
    let silent = tokio::net::TcpStream::connect(app.grpc_addr)
        .await
        .expect("TCP");
    assert!(
        connect(&app, &pki, "ca", Some("client")).await.is_err(),
        "a second handshake from the address is closed at once"
    );

    // Its slot comes back when it goes, and the address is served again.
    drop(silent);
    let mut served = None;
    for _ in 0..100 {
        if let Ok(client) = connect(&app, &pki, "ca", Some("client")).await {
            served = Some(client);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    served
        .expect("the slot freed")
        .start_verification(sms_to("+14155550100"))
        .await
        .expect("served");
}
