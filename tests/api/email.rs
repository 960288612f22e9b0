//! Email through the SMTP provider to a real SMTP server (aiosmtpd) on
//! loopback: what arrives, in which language, and what happens when the
//! server is down or refuses.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt as _;
use verifyd::{
    delivery::{config::ProviderConfig, smtp::SmtpTls},
    proto::{self, VerificationStatus},
    secret::Secret,
};

use crate::{
    helpers::{TestApp, spawn_app_with, status, violated_fields},
    smtp_sink::{SmtpSink, SmtpTarpit, closed_port, smtp_provider},
};

fn email_to(to: &str, locale: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        to: to.to_owned(),
        channel: proto::Channel::Email.into(),
        purpose: proto::Purpose::PasswordReset.into(),
        locale: locale.to_owned(),
        ..Default::default()
    }
}

/// The app with `mail` (the sink) as its only email provider.
async fn app_mailing_to(sink: &SmtpSink) -> TestApp {
    spawn_app_with(|config| {
        config.providers.insert("mail".into(), sink.provider());
        config.delivery.email = vec!["mail".into()];
    })
    .await
}

/// The verification a failed start names in its ResourceInfo.
async fn failed_verification(app: &TestApp, err: &tonic::Status) -> proto::Verification {
    let info = err
        .get_details_resource_info()
        .unwrap_or_else(|| panic!("the error names its verification: {err:?}"));
    app.get(&info.resource_name).await.expect("get")
}

fn assert_no_full_address(text: &str, address: &str) {
    assert!(
        !text.to_lowercase().contains(&address.to_lowercase()),
        "full address in {text}"
    );
}

#[tokio::test]
async fn the_email_arrives_with_both_parts_and_its_code_approves() {
    let sink = SmtpSink::start();
    let app = app_mailing_to(&sink).await;
    let v = app.started(email_to("Ana.Lopez@Example.COM", "")).await;
    assert_eq!(v.send_attempts.len(), 1);
    assert_eq!(v.send_attempts[0].provider, "mail");
    assert_eq!(
        v.send_attempts[0].status,
        i32::from(proto::DeliveryStatus::Accepted)
    );

    let mail = sink.single();
    assert_eq!(mail.rcpt_tos(), ["Ana.Lopez@example.com"]);
    assert_eq!(mail.header("to"), ["Ana.Lopez@example.com"]);
    assert_eq!(
        mail.header("from"),
        ["Acme Security <no-reply@acme.example>"]
    );
    assert_eq!(mail.header("reply-to"), ["support@acme.example"]);
    assert_eq!(mail.header("auto-submitted"), ["auto-generated"]);
    assert_eq!(mail.header("message-id").len(), 1);
    assert!(mail.header("message-id")[0].ends_with("@acme.example>"));
    assert_eq!(mail.json["content_type"], "multipart/alternative");
    assert_eq!(mail.part_types(), ["text/plain", "text/html"]);
    assert_eq!(mail.subject(), "Your Acme password reset code");

    assert!(mail.raw.contains("\nMIME-Version: 1.0\r\n"), "{}", mail.raw);
    let code = mail.code(6);
    let text = mail.part("text/plain");
    let html = mail.part("text/html");
    assert!(text.contains("reset your Acme password"), "{text}");
    assert!(
        html.contains(&code) && html.contains("<html lang=\"en\">"),
        "{html}"
    );

    let checked = app.check(&v.id, &code).await.expect("check");
    assert!(checked.approved);
    app.stop().await;
}

#[tokio::test]
async fn the_subject_and_body_follow_the_locale() {
    let sink = SmtpSink::start();
    let app = app_mailing_to(&sink).await;
    let cases = [
        (
            "fr-CA",
            "Votre code de réinitialisation du mot de passe Acme",
            "Bonjour,",
            "fr",
        ),
        (
            "de",
            "Ihr Code zum Zurücksetzen des Passworts für Acme",
            "Hallo,",
            "de",
        ),
        (
            "es-MX",
            "Tu código para restablecer la contraseña de Acme",
            "Hola:",
            "es",
        ),
        (
            "pt-BR",
            "Acme: seu código para redefinir a senha",
            "Olá,",
            "pt",
        ),
        ("xx", "Your Acme password reset code", "Hello,", "en"),
    ];
    for (i, (locale, subject, greeting, lang)) in cases.into_iter().enumerate() {
        let v = app
            .started(email_to(&format!("user{i}@example.com"), locale))
            .await;
        let mail = sink.messages().pop().expect("a message");
        assert_eq!(mail.rcpt_tos(), [format!("user{i}@example.com")]);
        assert_eq!(mail.subject(), subject, "{locale}");
        let text = mail.part("text/plain");
        assert!(text.starts_with(greeting), "{locale}: {text}");
        let html = mail.part("text/html");
        assert!(
            html.contains(&format!("<html lang=\"{lang}\">")),
            "{locale}: {html}"
        );
        assert!(html.contains(greeting), "{locale}: {html}");
        let code = mail.code(6);
        assert!(
            app.check(&v.id, &code).await.expect("check").approved,
            "{locale}"
        );
    }
    assert_eq!(sink.messages().len(), cases.len());
    app.stop().await;
}

#[tokio::test]
async fn the_app_name_is_escaped_in_the_html_part_only() {
    let sink = SmtpSink::start();
    let app = spawn_app_with(|config| {
        config.app_name = "<b>Acme & Co</b>".into();
        config.providers.insert("mail".into(), sink.provider());
        config.delivery.email = vec!["mail".into()];
    })
    .await;
    app.started(email_to("ana@example.com", "en")).await;
    let mail = sink.single();
    assert_eq!(mail.subject(), "Your <b>Acme & Co</b> password reset code");
    assert!(
        mail.part("text/plain")
            .contains("reset your <b>Acme & Co</b> password")
    );
    let html = mail.part("text/html");
    assert!(html.contains("&lt;b&gt;Acme &amp; Co&lt;"), "{html}");
    assert!(!html.contains("<b>Acme"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn an_internationalized_address_arrives_over_smtputf8() {
    let sink = SmtpSink::start();
    let app = app_mailing_to(&sink).await;
    let v = app.started(email_to("Jörg@Bücher.Example", "de")).await;
    assert_eq!(v.to, "Jörg@xn--bcher-kva.example");
    let mail = sink.single();
    assert_eq!(mail.rcpt_tos(), ["Jörg@xn--bcher-kva.example"]);
    assert!(
        app.check(&v.id, &mail.code(6))
            .await
            .expect("check")
            .approved
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_server_down_the_start_fails_unavailable_and_the_verification_is_failed() {
    let port = closed_port();
    let app = spawn_app_with(|config| {
        config.providers.insert("mail".into(), smtp_provider(port));
        config.delivery.email = vec!["mail".into()];
    })
    .await;
    let address = "ana.lopez@example.com";
    let err = app
        .start(email_to(address, "en"))
        .await
        .expect_err("nothing is listening");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_no_full_address(err.message(), address);
    assert_no_full_address(&format!("{:?}", err.get_error_details()), address);

    let v = failed_verification(&app, &err).await;
    assert_eq!(status(&v), VerificationStatus::Failed);
    // The first try and its two retries: a refused connection is transient.
    assert_eq!(v.send_attempts.len(), 3, "{:#?}", v.send_attempts);
    for attempt in &v.send_attempts {
        assert_eq!(attempt.provider, "mail");
        assert_eq!(attempt.status, i32::from(proto::DeliveryStatus::Failed));
        assert!(!attempt.error_reason.is_empty());
        assert_no_full_address(&attempt.error_reason, address);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_tarpitting_relay_holds_a_start_no_longer_than_the_delivery_timeout() {
    let tarpit = SmtpTarpit::start().await;
    let app = spawn_app_with(|config| {
        // The relay's own timeout (10 s by default) is longer than the
        // send's: `delivery.timeout` bounds the whole send.
        config
            .providers
            .insert("mail".into(), smtp_provider(tarpit.port));
        config.delivery.email = vec!["mail".into()];
        config.delivery.timeout = Duration::from_secs(1);
    })
    .await;
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        app.start(email_to("ana.lopez@example.com", "en")),
    )
    .await
    .expect("verifyd answers while the relay still stalls");
    let err = answer.expect_err("the relay never takes the message");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(tarpit.connections() >= 1, "the relay was tried");
    let v = failed_verification(&app, &err).await;
    assert!(!v.send_attempts.is_empty());
    for attempt in &v.send_attempts {
        assert_eq!(attempt.status, i32::from(proto::DeliveryStatus::Failed));
        assert!(
            attempt.error_reason.starts_with("timed out"),
            "{:#?}",
            v.send_attempts
        );
    }
    // A timeout cannot tell whether the relay took the message: the
    // verification stays pending, as after any send of unknown outcome.
    assert_eq!(status(&v), VerificationStatus::Pending);
    app.stop().await;
}

#[tokio::test]
async fn a_mailbox_the_server_refuses_is_final_and_masked() {
    let sink = SmtpSink::start();
    let app = app_mailing_to(&sink).await;
    let address = "reject.bob@example.com";
    let err = app
        .start(email_to(address, "en"))
        .await
        .expect_err("the sink refuses reject.* mailboxes");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), ["to"]);
    let details = format!("{:?}", err.get_error_details());
    assert!(
        details.contains("550") && details.contains("r***@example.com"),
        "{details}"
    );
    assert_no_full_address(&details, address);
    assert_no_full_address(err.message(), address);

    let v = failed_verification(&app, &err).await;
    assert_eq!(status(&v), VerificationStatus::Failed);
    assert_eq!(v.send_attempts.len(), 1, "no retry: {:#?}", v.send_attempts);
    let reason = &v.send_attempts[0].error_reason;
    assert!(
        reason.contains("5.1.1") && reason.contains("r***@example.com"),
        "{reason}"
    );
    assert_no_full_address(reason, address);
    assert!(sink.messages().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_temporary_refusal_is_retried_then_fails_over_to_the_next_provider() {
    let sink = SmtpSink::start();
    let app = spawn_app_with(|config| {
        config.providers.insert("mail".into(), sink.provider());
        config.delivery.email = vec!["mail".into()];
    })
    .await;
    let err = app
        .start(email_to("tempfail@example.com", "en"))
        .await
        .expect_err("the sink answers 451");
    assert_eq!(err.code(), Code::Unavailable);
    let v = failed_verification(&app, &err).await;
    assert_eq!(v.send_attempts.len(), 3, "{:#?}", v.send_attempts);
    assert!(
        v.send_attempts[0].error_reason.contains("451"),
        "{:?}",
        v.send_attempts[0]
    );
    app.stop().await;

    // A relay that is down, then the sink: the message still goes out.
    let down = closed_port();
    let app = spawn_app_with(|config| {
        config.providers.insert("down".into(), smtp_provider(down));
        config.providers.insert("mail".into(), sink.provider());
        config.delivery.email = vec!["down".into(), "mail".into()];
    })
    .await;
    let v = app.started(email_to("ana@example.com", "en")).await;
    let providers: Vec<&str> = v
        .send_attempts
        .iter()
        .map(|a| a.provider.as_str())
        .collect();
    assert_eq!(providers, ["down", "down", "down", "mail"]);
    let mail = sink.single();
    assert!(
        app.check(&v.id, &mail.code(6))
            .await
            .expect("check")
            .approved
    );
    app.stop().await;
}

/// The app with one provider, `mail`, configured as given.
async fn app_with_provider(provider: ProviderConfig) -> TestApp {
    spawn_app_with(|config| {
        config.providers.insert("mail".into(), provider);
        config.delivery.email = vec!["mail".into()];
    })
    .await
}

#[tokio::test]
async fn the_sender_logs_in_and_a_wrong_password_fails_without_retry() {
    let sink = SmtpSink::start_with(&["--auth", "verifyd:s3cret-pass"]);
    let with_password = |password: &str| {
        let mut config = sink.config();
        config.username = Some("verifyd".into());
        config.password = Some(Secret::new(password));
        ProviderConfig::Smtp(config)
    };

    let app = app_with_provider(with_password("s3cret-pass")).await;
    let v = app.started(email_to("ana@example.com", "en")).await;
    assert!(
        app.check(&v.id, &sink.single().code(6))
            .await
            .expect("check")
            .approved
    );
    app.stop().await;

    let app = app_with_provider(with_password("wrong-pass")).await;
    let err = app
        .start(email_to("bob@example.com", "en"))
        .await
        .expect_err("authentication fails");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!err.message().contains("pass"), "{err:?}");
    let v = failed_verification(&app, &err).await;
    assert_eq!(
        v.send_attempts.len(),
        1,
        "refused, not retried: {:#?}",
        v.send_attempts
    );
    assert!(
        v.send_attempts[0].error_reason.contains("535"),
        "{:?}",
        v.send_attempts[0]
    );
    assert_eq!(sink.messages().len(), 1, "only the first message arrived");
    app.stop().await;
}

#[tokio::test]
async fn required_starttls_sends_nothing_to_a_server_without_it() {
    let sink = SmtpSink::start();
    let mut config = sink.config();
    config.tls = SmtpTls::Starttls;
    let app = app_with_provider(ProviderConfig::Smtp(config)).await;
    let err = app
        .start(email_to("ana@example.com", "en"))
        .await
        .expect_err("the sink offers no STARTTLS");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let v = failed_verification(&app, &err).await;
    assert_eq!(v.send_attempts.len(), 1, "{:#?}", v.send_attempts);
    assert!(
        v.send_attempts[0].error_reason.contains("STARTTLS"),
        "{:?}",
        v.send_attempts[0]
    );
    assert!(sink.messages().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn implicit_tls_to_a_plain_server_fails_without_retry() {
    let sink = SmtpSink::start();
    let mut config = sink.config();
    config.tls = SmtpTls::Implicit;
    let app = app_with_provider(ProviderConfig::Smtp(config)).await;
    let err = app
        .start(email_to("ana@example.com", "en"))
        .await
        .expect_err("the sink does not speak TLS");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let v = failed_verification(&app, &err).await;
    // A handshake failure will not improve on retry.
    assert_eq!(v.send_attempts.len(), 1, "{:#?}", v.send_attempts);
    assert!(
        v.send_attempts[0]
            .error_reason
            .starts_with("TLS handshake failed"),
        "{:?}",
        v.send_attempts[0]
    );
    assert!(sink.messages().is_empty());
    app.stop().await;
}
