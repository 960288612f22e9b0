//! A tenant's own settings over the server's: rate limits
//! (`[tenants.NAME.limits]`), code settings (`[tenants.NAME.code]`), voice
//! settings (`[tenants.NAME.voice]`) and message templates
//! (`tenants.NAME.templates_dir`). The other tenant keeps the server's.

use std::time::Duration;

use tonic::{Code, Status};
use verifyd::{
    app::Application,
    config::Config,
    domain::{
        limit::Quota,
        policy::{ChannelTtls, CodeOverrides},
    },
    proto,
    ratelimit::PartialLimits,
    service::{TenantConfig, tenants::VoiceOverrides},
};

use crate::{
    auth::{Client, as_tenant, digest},
    fake_twilio::{FakeTwilio, sid},
    helpers::{TestApp, retry_after, sms_to, spawn_app_with, test_config},
    voice::{self, Phone, with_voice},
};

const ACME_KEY: &str = "acme-api-key-7c41e9b2d05a";
const GLOBEX_KEY: &str = "globex-api-key-1a8f3d6e92c4";
const TO: &str = "+14155550100";

/// acme, configured by `acme`, and globex with the server's settings.
fn with_tenants(config: &mut Config, acme: TenantConfig) {
    config.tenants.insert(
        "acme".into(),
        TenantConfig {
            api_key_sha256: vec![digest(ACME_KEY)],
            ..acme
        },
    );
    config.tenants.insert(
        "globex".into(),
        TenantConfig {
            api_key_sha256: vec![digest(GLOBEX_KEY)],
            ..TenantConfig::default()
        },
    );
}

async fn start(
    client: &mut Client,
    req: proto::StartVerificationRequest,
) -> Result<proto::Verification, Status> {
    Ok(client
        .start_verification(req)
        .await?
        .into_inner()
        .verification
        .expect("a verification"))
}

/// A template directory holding `files` (relative path, text).
fn templates(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

#[tokio::test]
async fn a_tenants_own_quota_limits_it_while_another_keeps_the_servers() {
    let app = spawn_app_with(|c| {
        // No cooldown and sends to spare, so only the rate limit can refuse.
        c.code.resend_cooldown = Duration::ZERO;
        c.code.max_send_attempts = 10;
        with_tenants(
            c,
            TenantConfig {
                limits: PartialLimits {
                    starts_per_destination: Some(Quota {
                        burst: 1,
                        period: Duration::from_secs(600),
                    }),
                    ..PartialLimits::default()
                },
                ..TenantConfig::default()
            },
        );
    })
    .await;
    let mut acme = as_tenant(&app, ACME_KEY);
    let mut globex = as_tenant(&app, GLOBEX_KEY);

    let v = start(&mut acme, sms_to(TO)).await.expect("the first start");
    let refused = start(&mut acme, sms_to(TO))
        .await
        .expect_err("a burst of one is spent");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(refused.message(), verifyd::grpc::DESTINATION_BUSY);
    assert_eq!(retry_after(&refused), Some(Duration::from_secs(600)));
    assert_eq!(
        app.outbox.sent_count(&v.id),
        1,
        "the refused start sent nothing"
    );

    // The server's burst of 5, for globex and the same destination.
    for _ in 0..5 {
        start(&mut globex, sms_to(TO))
            .await
            .expect("within the server's burst");
    }
    let refused = start(&mut globex, sms_to(TO))
        .await
        .expect_err("the server's burst is spent");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(retry_after(&refused), Some(Duration::from_secs(120)));

    // The tenant's period, not the server's.
    app.clock.advance(Duration::from_secs(120));
    start(&mut acme, sms_to(TO))
        .await
        .expect_err("acme waits its own period");
    app.clock.advance(Duration::from_secs(480));
    start(&mut acme, sms_to(TO))
        .await
        .expect("one more after acme's period");
    app.stop().await;
}

/// How long a verification's code lives, as its answer shows it.
fn ttl(v: &proto::Verification) -> Duration {
    let (created, expires) = (
        v.created_at.expect("created_at"),
        v.expires_at.expect("expires_at"),
    );
    Duration::from_secs(u64::try_from(expires.seconds - created.seconds).expect("expires later"))
}

fn email_to(to: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        channel: proto::Channel::Email.into(),
        ..sms_to(to)
    }
}

#[tokio::test]
async fn a_tenants_code_settings_and_a_channels_ttl_replace_the_servers() {
    let app = spawn_app_with(|c| {
        c.code.ttl_by_channel.email = Some(Duration::from_secs(30 * 60));
        c.code.ttl_by_channel.voice = Some(Duration::from_secs(2 * 60));
        with_tenants(
            c,
            TenantConfig {
                code: CodeOverrides {
                    length: Some(8),
                    ttl: Some(Duration::from_secs(5 * 60)),
                    ttl_by_channel: ChannelTtls {
                        voice: Some(Duration::from_secs(60)),
                        ..ChannelTtls::default()
                    },
                    max_check_attempts: Some(3),
                    max_send_attempts: Some(2),
                    resend_cooldown: Some(Duration::from_secs(10)),
                },
                ..TenantConfig::default()
            },
        );
    })
    .await;
    let mut acme = as_tenant(&app, ACME_KEY);
    let mut globex = as_tenant(&app, GLOBEX_KEY);

    // acme: its own length, life and attempts, on every channel (its ttl
    // replaces the server's email ttl too).
    let sms = start(&mut acme, sms_to(TO)).await.expect("acme's text");
    assert_eq!(app.outbox.code_for(&sms.id).len(), 8);
    assert_eq!(ttl(&sms), Duration::from_secs(5 * 60));
    assert_eq!(sms.check_attempts_remaining, 3);
    // Its cooldown, its own voice ttl, its send attempts.
    let by_call = || proto::ResendVerificationRequest {
        id: sms.id.clone(),
        channel: proto::Channel::Voice.into(),
        ..Default::default()
    };
    app.clock.advance(Duration::from_secs(5));
    let soon = acme
        .resend_verification(by_call())
        .await
        .expect_err("within acme's cooldown");
    assert_eq!(retry_after(&soon), Some(Duration::from_secs(5)));
    app.clock.advance(Duration::from_secs(5));
    let called = acme
        .resend_verification(by_call())
        .await
        .expect("after acme's cooldown")
        .into_inner()
        .verification
        .expect("a verification");
    assert_eq!(
        ttl(&called),
        Duration::from_secs(10 + 60),
        "acme's voice ttl"
    );
    app.clock.advance(Duration::from_secs(20));
    let spent = acme
        .resend_verification(by_call())
        .await
        .expect_err("acme's two sends are spent");
    assert_eq!(spent.message(), "this verification has used all its sends");
    let email = start(&mut acme, email_to("ada@example.com"))
        .await
        .expect("acme's email");
    assert_eq!(ttl(&email), Duration::from_secs(5 * 60));

    // globex: the server's settings, and the server's email ttl.
    let sms = start(&mut globex, sms_to("+14155550101"))
        .await
        .expect("globex's text");
    assert_eq!(app.outbox.code_for(&sms.id).len(), 6);
    assert_eq!(ttl(&sms), Duration::from_secs(10 * 60));
    assert_eq!(sms.check_attempts_remaining, 5);
    let email = start(&mut globex, email_to("grace@example.com"))
        .await
        .expect("globex's email");
    assert_eq!(ttl(&email), Duration::from_secs(30 * 60));

    // A resend on another channel takes that channel's life.
    app.clock.advance(Duration::from_secs(31));
    let called = globex
        .resend_verification(proto::ResendVerificationRequest {
            id: sms.id.clone(),
            channel: proto::Channel::Voice.into(),
            ..Default::default()
        })
        .await
        .expect("a resend by call")
        .into_inner()
        .verification
        .expect("a verification");
    assert_eq!(ttl(&called), Duration::from_secs(31 + 2 * 60));
    app.stop().await;
}

#[test]
fn a_tenants_code_settings_are_checked_as_the_servers_are() {
    let mut config = test_config();
    config.tenants.insert(
        "acme".into(),
        TenantConfig {
            api_key_sha256: vec![digest(ACME_KEY)],
            code: CodeOverrides {
                length: Some(5),
                ..CodeOverrides::default()
            },
            ..TenantConfig::default()
        },
    );
    let err = config.validate().expect_err("a 5-digit code");
    assert_eq!(err.key, "tenants.acme.code.length");

    let acme = config.tenants.get_mut("acme").expect("acme");
    acme.code = CodeOverrides {
        ttl: Some(Duration::from_secs(20)),
        ..CodeOverrides::default()
    };
    let err = config.validate().expect_err("a cooldown past the life");
    assert_eq!(err.key, "tenants.acme.code.resend_cooldown");

    config.tenants.clear();
    config.code.ttl_by_channel.voice = Some(Duration::from_secs(25 * 3600));
    let err = config.validate().expect_err("a day and more");
    assert_eq!(err.key, "code.ttl_by_channel.voice");
    config.code.ttl_by_channel.voice = Some(Duration::from_secs(10));
    let err = config.validate().expect_err("shorter than the cooldown");
    assert_eq!(err.key, "code.resend_cooldown");
}

#[tokio::test]
async fn a_tenants_templates_word_its_messages_and_the_others_keep_the_built_in_text() {
    let dir = templates(&[(
        "en/sms.txt",
        "{{ app_name }} tenant wording: {{ code }} ({{ minutes }} min)",
    )]);
    let app = spawn_app_with(|c| {
        with_tenants(
            c,
            TenantConfig {
                app_name: "Acme Corp".into(),
                templates_dir: Some(dir.path().to_owned()),
                ..TenantConfig::default()
            },
        );
    })
    .await;
    let acme = start(&mut as_tenant(&app, ACME_KEY), sms_to(TO))
        .await
        .expect("start");
    let line = app.outbox.lines_for(&acme.id).pop().expect("sent");
    let code = app.outbox.code_for(&acme.id);
    assert!(
        line.ends_with(&format!("| Acme Corp tenant wording: {code} (10 min)")),
        "{line}"
    );

    let globex = start(&mut as_tenant(&app, GLOBEX_KEY), sms_to(TO))
        .await
        .expect("start");
    let line = app.outbox.lines_for(&globex.id).pop().expect("sent");
    assert!(!line.contains("tenant wording"), "{line}");
    assert!(
        line.contains("Acme: your password reset code is"),
        "the built-in text and the server's app name: {line}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_template_override_layers_over_the_servers() {
    let server = templates(&[
        ("en/sms.txt", "server wording {{ code }}"),
        ("en/email.txt", "server email {{ code }}"),
    ]);
    let tenant = templates(&[("en/sms.txt", "tenant wording {{ code }}")]);
    let app = spawn_app_with(|c| {
        c.delivery.templates_dir = Some(server.path().to_owned());
        with_tenants(
            c,
            TenantConfig {
                templates_dir: Some(tenant.path().to_owned()),
                ..TenantConfig::default()
            },
        );
    })
    .await;
    let mut acme = as_tenant(&app, ACME_KEY);
    let sms = start(&mut acme, sms_to(TO)).await.expect("start");
    let line = app.outbox.lines_for(&sms.id).pop().expect("sent");
    assert!(line.contains("| tenant wording "), "{line}");
    let email = start(
        &mut acme,
        proto::StartVerificationRequest {
            to: "user@example.com".into(),
            channel: proto::Channel::Email.into(),
            ..sms_to("")
        },
    )
    .await
    .expect("start");
    let line = app.outbox.lines_for(&email.id).pop().expect("sent");
    assert!(
        line.contains("| server email "),
        "what the tenant leaves out is the server's: {line}"
    );
    let globex = start(&mut as_tenant(&app, GLOBEX_KEY), sms_to(TO))
        .await
        .expect("start");
    let line = app.outbox.lines_for(&globex.id).pop().expect("sent");
    assert!(line.contains("| server wording "), "{line}");
    app.stop().await;
}

#[tokio::test]
async fn a_broken_tenant_template_stops_startup_naming_the_tenant() {
    let dir = templates(&[("en/sms.txt", "no code here")]);
    let mut config = test_config();
    with_tenants(
        &mut config,
        TenantConfig {
            templates_dir: Some(dir.path().to_owned()),
            ..TenantConfig::default()
        },
    );
    config.validate().expect("the config itself is valid");
    let err = Application::build(config)
        .await
        .expect_err("a template that never shows the code");
    let err = err.to_string();
    assert!(err.starts_with("tenants.acme.templates_dir: "), "{err}");
    assert!(err.contains("en/sms.txt"), "{err}");
    assert!(err.contains("never shows the code"), "{err}");
}

// Voice: the test plays Twilio with tests/api/voice.rs's phone.

/// Starts a press-# call as the tenant with `key`, answers it, and presses
/// a wrong key until the call hangs up: the prompts it asked again with.
async fn reprompts(app: &TestApp, fake: &FakeTwilio, key: &str) -> Vec<String> {
    start(
        &mut as_tenant(app, key),
        voice::call(proto::VoiceMode::Confirm),
    )
    .await
    .expect("start a call");
    let phone = Phone::picked_up(app, fake).await;
    let mut twiml = phone.answer("human").await;
    let mut prompts = Vec::new();
    for _ in 0..10 {
        let gather = twiml.gather.clone().expect("the call asks for keys");
        twiml = phone.press(&gather, "5").await;
        match &twiml.gather {
            Some(gather) => prompts.push(gather.prompt.clone()),
            None => {
                assert!(twiml.hangup);
                return prompts;
            }
        }
    }
    panic!("the call never ended");
}

#[tokio::test]
async fn a_tenants_voice_settings_and_call_templates_apply_to_its_calls_only() {
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 1)).await;
    let dir = templates(&[("en/voice_retry.txt", "Acme asks again: press pound.")]);
    let app = spawn_app_with(|c| {
        with_voice(c, &fake);
        with_tenants(
            c,
            TenantConfig {
                voice: VoiceOverrides {
                    max_reprompts: Some(1),
                    ..VoiceOverrides::default()
                },
                templates_dir: Some(dir.path().to_owned()),
                ..TenantConfig::default()
            },
        );
    })
    .await;

    assert_eq!(
        reprompts(&app, &fake, ACME_KEY).await,
        ["Acme asks again: press pound."],
        "one re-prompt, in acme's words"
    );

    let prompts = reprompts(&app, &fake, GLOBEX_KEY).await;
    assert_eq!(prompts.len(), 2, "the server's two re-prompts: {prompts:?}");
    assert!(
        prompts.iter().all(|p| p.starts_with("Sorry")),
        "the built-in words: {prompts:?}"
    );
    app.stop().await;
}
