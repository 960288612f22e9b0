//! The real binary at the most verbose log level, through every path:
//! no code may appear anywhere in its logs (stderr), span fields included,
//! and no full destination either. The codes come from the console sender
//! on stdout, the one place they may appear.

use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use verifyd::proto::{self, verification_service_client::VerificationServiceClient};

use crate::helpers::field;

const PHONE: &str = "+14155550100";
const EMAIL: &str = "alice.secret@example.com";

/// Collects what a child writes to one of its pipes.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut sink = sink.lock().expect("lock");
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    text
}

/// Waits (bounded) until `text` holds a line matching `find`.
async fn wait_for<T>(text: &Mutex<String>, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = text.lock().expect("lock").lines().find_map(&find) {
            return found;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) struct Server {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn spawn_with<V: AsRef<std::ffi::OsStr>>(extra_env: &[(&str, V)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verifyd"))
            .arg("serve")
            .env_clear()
            .env("RUST_LOG", "trace")
            .env("VERIFYD_DEV_MODE", "true")
            .env("VERIFYD_SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("VERIFYD_SERVER__ADMIN_ADDR", "127.0.0.1:0")
            // Dev mode always runs the webhook listener (the simulated
            // phone's).
            .env("VERIFYD_WEBHOOKS__ADDR", "127.0.0.1:0")
            .env("VERIFYD_SERVER__SHUTDOWN_GRACE", "5s")
            .env("VERIFYD_LOG__FORMAT", "json")
            // Ten digits, so a code is never mistaken for a stray number.
            .env("VERIFYD_CODE__LENGTH", "10")
            .env("VERIFYD_CODE__TTL", "1s")
            .env("VERIFYD_CODE__RESEND_COOLDOWN", "0s")
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the verifyd binary starts");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) async fn client(&self) -> VerificationServiceClient<Channel> {
        VerificationServiceClient::new(self.channel().await)
    }

    /// A connection to the gRPC listener, once it serves.
    pub(crate) async fn channel(&self) -> Channel {
        let addr = wait_for(&self.stderr, "the serving log line", |line| {
            line.contains("verifyd serving")
                .then(|| {
                    line.split("\"grpc\":\"")
                        .nth(1)?
                        .split('"')
                        .next()
                        .map(str::to_owned)
                })
                .flatten()
        })
        .await;
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// The address from the serving log line's `field`.
    pub(crate) async fn addr(&self, field: &str) -> std::net::SocketAddr {
        let needle = format!("\"{field}\":\"");
        wait_for(&self.stderr, "the serving log line", |line| {
            line.contains("verifyd serving")
                .then(|| line.split(&needle).nth(1)?.split('"').next()?.parse().ok())
                .flatten()
        })
        .await
    }

    /// Sends SIGTERM and returns at once.
    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (bounded, without blocking the runtime) for the process to
    /// exit; its exit status and everything it logged.
    pub(crate) async fn exited(mut self) -> (std::process::ExitStatus, String) {
        let give_up = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < give_up, "verifyd did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader threads finish once the pipes close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let logs = self.stderr.lock().expect("lock").clone();
        (status, logs)
    }

    /// The webhook listener's address, from the serving log line.
    async fn webhooks(&self) -> std::net::SocketAddr {
        wait_for(&self.stderr, "the serving log line", |line| {
            line.contains("verifyd serving")
                .then(|| {
                    line.split("\"webhooks\":\"")
                        .nth(1)?
                        .split('"')
                        .next()?
                        .parse()
                        .ok()
                })
                .flatten()
        })
        .await
    }

    pub(crate) async fn code_for(&self, id: &str) -> String {
        let needle = format!("verification={id} ");
        wait_for(&self.stdout, "a console message", |line| {
            line.contains(&needle)
                .then(|| field(line, "code"))
                .flatten()
        })
        .await
    }

    /// Answers the newest call on the simulated phone's page, presses a
    /// key for its code, and reads the code the page says (10 digits).
    pub(crate) async fn code_said_on_the_phone(&self) -> String {
        let page = format!("http://{}/dev/phone", self.addr("webhooks").await);
        let http = reqwest::Client::new();
        let read = || async {
            http.get(format!("{page}?refresh=0"))
                .send()
                .await
                .expect("the phone's page")
                .text()
                .await
                .expect("its body")
        };
        let shown = read().await;
        let attribute = |name: &str| {
            let start = shown.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            shown[start..].split('"').next().expect("quoted").to_owned()
        };
        let (sid, csrf) = (attribute("data-sid"), attribute("name=\"csrf\" value"));
        for act in [[("action", "answer")], [("key", "1")]] {
            let response = http
                .post(format!("{page}/calls/{sid}"))
                .form(&[("csrf", csrf.as_str()), act[0]])
                .send()
                .await
                .expect("the phone's form");
            assert!(response.status().is_success() || response.status().is_redirection());
        }
        let shown = read().await;
        let after_the_key = shown
            .split("You pressed 1")
            .nth(1)
            .expect("the key was pressed");
        let code: String = after_the_key
            .chars()
            .filter(char::is_ascii_digit)
            .take(10)
            .collect();
        assert_eq!(code.len(), 10, "the call said a code: {after_the_key}");
        code
    }

    /// SIGTERM, then everything the process logged.
    fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("verifyd exits");
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
        // The reader threads finish once the pipes close.
        thread::sleep(Duration::from_millis(100));
        self.stderr.lock().expect("lock").clone()
    }
}

pub(crate) fn start(to: &str, channel: proto::Channel) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        to: to.into(),
        channel: channel.into(),
        purpose: proto::Purpose::PasswordReset.into(),
        voice_mode: if channel == proto::Channel::Voice {
            proto::VoiceMode::Code.into()
        } else {
            0
        },
        ..Default::default()
    }
}

fn occurs_as_number(haystack: &str, code: &str) -> bool {
    haystack.match_indices(code).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// A caller's reference and tag value, logged only on the audit line.
const REFERENCE: &str = "reset-session-7f3a";
const TAG_VALUE: &str = "helpdesk-ticket-991";

/// An office extension (a pause, then eight digits), masked in the logs.
const EXTENSION: &str = "w86420975";

const LOGGED_NEVER_KEY: &str = "binary-test-hmac-key-5b0e9c1d7a3f4e2b8c6d";

#[tokio::test]
async fn no_code_or_destination_reaches_the_logs_on_any_path() {
    // A configured HMAC key, so the test knows what must not appear.
    let server = Server::spawn_with(&[("VERIFYD_HMAC__KEY", LOGGED_NEVER_KEY)]);
    let mut client = server.client().await;
    let mut codes = Vec::new();

    // Success, after a wrong code; the caller's reference and tags go to
    // the audit lines and nowhere else in the logs.
    let v = client
        .start_verification(proto::StartVerificationRequest {
            reference: REFERENCE.into(),
            tags: [("ticket".into(), TAG_VALUE.into())].into(),
            ..start(PHONE, proto::Channel::Sms)
        })
        .await
        .expect("start")
        .into_inner();
    let id = v.verification.expect("v").id;
    let code = server.code_for(&id).await;
    let wrong = client
        .check_verification(proto::CheckVerificationRequest {
            id: id.clone(),
            code: "0000000000".into(),
        })
        .await
        .expect("wrong code");
    assert!(!wrong.get_ref().approved);
    let right = client
        .check_verification(proto::CheckVerificationRequest {
            id: id.clone(),
            code: code.clone(),
        })
        .await
        .expect("right code");
    assert!(right.get_ref().approved);
    codes.push(code.clone());
    // The used code again: refused.
    client
        .check_verification(proto::CheckVerificationRequest { id, code })
        .await
        .expect_err("used");

    // Bad input.
    client
        .start_verification(start("+1415", proto::Channel::Sms))
        .await
        .expect_err("bad number");
    client
        .check_verification(proto::CheckVerificationRequest {
            id: "x".into(),
            code: "12".into(),
        })
        .await
        .expect_err("bad check");

    // Email, then cancel; a call, answered on the simulated phone.
    for (to, channel) in [
        (EMAIL, proto::Channel::Email),
        ("+14155550101", proto::Channel::Voice),
    ] {
        // The call dials an office extension, masked wherever the number is.
        let extension = if channel == proto::Channel::Voice {
            EXTENSION
        } else {
            ""
        };
        let v = client
            .start_verification(proto::StartVerificationRequest {
                extension: extension.into(),
                ..start(to, channel)
            })
            .await
            .expect("start")
            .into_inner();
        let id = v.verification.expect("v").id;
        if channel == proto::Channel::Voice {
            // The call rings dev mode's simulated phone: answered on its
            // page, a key asks for the code, said on the page (and through
            // the webhooks, which must not log it either). It is the code:
            // it approves.
            let code = server.code_said_on_the_phone().await;
            let checked = client
                .check_verification(proto::CheckVerificationRequest {
                    id,
                    code: code.clone(),
                })
                .await
                .expect("check")
                .into_inner();
            assert!(checked.approved, "the code the call said");
            codes.push(code);
            continue;
        }
        codes.push(server.code_for(&id).await);
        client
            .cancel_verification(proto::CancelVerificationRequest { id })
            .await
            .expect("cancel");
    }

    // Expiry, pushed to a watcher (the code lives one second here).
    let v = client
        .start_verification(start("+14155550102", proto::Channel::Sms))
        .await
        .expect("start")
        .into_inner();
    let id = v.verification.expect("v").id;
    codes.push(server.code_for(&id).await);
    let mut watch = client
        .watch_verification(proto::WatchVerificationRequest { id: id.clone() })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(update) = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("pushed")
    {
        last = Some(update.expect("ok").verification.expect("v").status);
    }
    assert_eq!(last, Some(i32::from(proto::VerificationStatus::Expired)));
    let expired = client
        .check_verification(proto::CheckVerificationRequest {
            id,
            code: codes.last().expect("code").clone(),
        })
        .await
        .expect_err("expired");
    assert_eq!(expired.code(), tonic::Code::FailedPrecondition);

    let logs = server.terminate();
    assert!(
        logs.contains("\"level\":\"TRACE\""),
        "the run logged at trace level"
    );
    assert!(
        logs.contains("+141******00"),
        "destinations are logged masked"
    );
    assert!(logs.contains("verification expired"), "the expiry path ran");
    // The audit log: one event per status change, masked.
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"target\":\"verifyd::audit\""))
        .collect();
    for (from, to) in [
        ("none", "pending"),
        ("pending", "approved"),
        ("pending", "expired"),
    ] {
        let needle = format!("\"from\":\"{from}\",\"to\":\"{to}\"");
        assert!(
            audit
                .iter()
                .any(|l| l.contains(&needle) && l.contains("\"destination\":\"+141******")),
            "no audit event {from} -> {to}: {audit:#?}"
        );
    }
    for (from, to) in [("none", "pending"), ("pending", "approved")] {
        let needle = format!("\"from\":\"{from}\",\"to\":\"{to}\"");
        assert!(
            audit.iter().any(|l| l.contains(&needle)
                && l.contains(&format!("\"reference\":\"{REFERENCE}\""))
                && l.contains(&format!(r#""tags":"{{\"ticket\":\"{TAG_VALUE}\"}}""#))),
            "no audit event {from} -> {to} with the reference and tags: {audit:#?}"
        );
    }
    assert!(
        audit.iter().any(
            |l| l.contains("\"destination\":\"+141******01 ext. ********\"")
                && l.contains("\"to\":\"approved\"")
        ),
        "no audit event with the extension masked: {audit:#?}"
    );
    assert!(
        !logs.contains(&EXTENSION[1..]),
        "the extension reached the logs"
    );
    for secret in [REFERENCE, TAG_VALUE] {
        let elsewhere: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(secret) && !l.contains("\"target\":\"verifyd::audit\""))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "{secret} logged off the audit line: {elsewhere:#?}"
        );
    }
    for code in &codes {
        assert_eq!(code.len(), 10);
        assert!(!occurs_as_number(&logs, code), "a code reached the logs");
    }
    assert!(
        !logs.contains(LOGGED_NEVER_KEY),
        "the HMAC key reached the logs"
    );
    for destination in [PHONE, EMAIL, "alice.secret"] {
        assert!(
            !logs.contains(destination),
            "{destination} reached the logs unmasked"
        );
    }
}

/// Twilio (a local fake) refusing numbers with an error that echoes them, as
/// its 400 for a bad `To` does.
async fn echoing_twilio() -> crate::fake_twilio::FakeTwilio {
    let fake = crate::fake_twilio::FakeTwilio::start().await;
    fake.fail(
        400,
        21211,
        &format!("The 'To' number {PHONE} is not a valid phone number."),
        100,
    )
    .await;
    fake
}

pub(crate) fn twilio_env(fake: &crate::fake_twilio::FakeTwilio) -> Vec<(&'static str, String)> {
    use crate::fake_twilio::{ACCOUNT_SID, AUTH_TOKEN, FROM};
    vec![
        ("VERIFYD_PROVIDERS__TWILIO__KIND", "twilio".to_owned()),
        ("VERIFYD_PROVIDERS__TWILIO__BASE_URL", fake.server.uri()),
        (
            "VERIFYD_PROVIDERS__TWILIO__ACCOUNT_SID",
            ACCOUNT_SID.to_owned(),
        ),
        (
            "VERIFYD_PROVIDERS__TWILIO__AUTH_TOKEN",
            AUTH_TOKEN.to_owned(),
        ),
        // Quoted: figment reads an unquoted +1500... as a number.
        ("VERIFYD_PROVIDERS__TWILIO__FROM", format!("\"{FROM}\"")),
        ("VERIFYD_DELIVERY__SMS", "[twilio]".to_owned()),
    ]
}

#[tokio::test]
async fn a_provider_error_echoing_the_number_leaves_no_full_number_in_the_logs() {
    let fake = echoing_twilio().await;
    let env = twilio_env(&fake);
    let server = Server::spawn_with(&env);
    let mut client = server.client().await;
    let err = client
        .start_verification(start(PHONE, proto::Channel::Sms))
        .await
        .expect_err("refused by the provider");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(!format!("{err:?}").contains(PHONE));
    let logs = server.terminate();
    assert!(logs.contains("21211"), "the failure was logged");
    assert!(!logs.contains(PHONE), "the full number reached the logs");
    assert!(
        !logs.contains(crate::fake_twilio::AUTH_TOKEN),
        "the auth token reached the logs"
    );
}

/// A verification verifyd cannot read back fails the Get closed, and the
/// store error logged says so without the reply (redis-rs's conversion
/// errors may quote it, destination and all: `describe` in
/// src/store/redis/mod.rs, whose unit test shows one that does).
#[tokio::test]
async fn an_unreadable_redis_record_leaves_no_destination_in_the_logs() {
    let redis = crate::redis_server::RedisServer::start();
    let server = Server::spawn_with(&[
        ("VERIFYD_STORE__BACKEND", "redis".to_owned()),
        ("VERIFYD_STORE__REDIS__URL", redis.url()),
    ]);
    let mut client = server.client().await;
    let id = client
        .start_verification(start(PHONE, proto::Channel::Sms))
        .await
        .expect("started")
        .into_inner()
        .verification
        .expect("a verification")
        .id;
    // Its destination made bytes that are not UTF-8, so the reply's
    // element for it does not convert.
    let hash = redis.cli(&["--raw", "--scan", "--pattern", "*:v:*"]);
    assert!(hash.ends_with(&id), "{hash}");
    let corrupt = "return redis.call('HSET', KEYS[1], 'to', ARGV[1] .. '\\255')";
    assert_eq!(redis.cli(&["EVAL", corrupt, "1", &hash, PHONE]), "0");
    let err = client
        .get_verification(proto::GetVerificationRequest { id })
        .await
        .expect_err("unreadable");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let logs = server.terminate();
    assert!(logs.contains("store error"), "the failure was logged");
    assert!(!logs.contains(PHONE), "the full number reached the logs");
    assert!(logs.contains("unexpected shape"), "{logs}");
}

#[tokio::test]
async fn send_test_reports_each_provider_try() {
    let fake = echoing_twilio().await;
    let output = Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .args(["send-test", "--channel", "sms", "--to", PHONE])
        .env_clear()
        .env("VERIFYD_DEV_MODE", "true")
        .envs(twilio_env(&fake))
        .output()
        .expect("verifyd runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("twilio: failed: HTTP 400 (Twilio error 21211)"),
        "{stderr}"
    );
    assert!(!stderr.contains(PHONE), "{stderr}");
    let sent = fake.sent().await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0]["Body"].contains("test message"));
}

#[tokio::test]
async fn api_keys_never_reach_the_trace_level_logs() {
    const KEY: &str = "binary-test-api-key-3e8a1f0c";
    const WRONG: &str = "binary-test-wrong-key-77d2b9";
    let digest = crate::auth::digest(KEY);
    let tenants = format!("[{digest}]");
    let server = Server::spawn_with(&[("VERIFYD_TENANTS__ACME__API_KEY_SHA256", &tenants)]);
    let mut client = server.client().await;
    for (key, ok) in [(KEY, true), (WRONG, false)] {
        let mut request = tonic::Request::new(start(PHONE, proto::Channel::Sms));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("ascii"),
        );
        let answer = client.start_verification(request).await;
        assert_eq!(answer.is_ok(), ok, "{answer:?}");
    }
    let logs = server.terminate();
    assert!(
        logs.contains("\"level\":\"TRACE\""),
        "the run logged at trace level"
    );
    for key in [KEY, WRONG] {
        assert!(!logs.contains(key), "an API key reached the logs");
    }
}

#[tokio::test]
async fn call_tokens_never_reach_the_trace_level_logs() {
    use crate::{
        fake_twilio::{AUTH_TOKEN, FakeTwilio, sid},
        voice::{PUBLIC_BASE, Phone, call},
    };
    // This test's own webhook client, with no app in the process to have
    // installed the one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 1)).await;
    let mut env = twilio_env(&fake);
    env.extend([
        ("VERIFYD_DELIVERY__VOICE", "[twilio]".to_owned()),
        ("VERIFYD_WEBHOOKS__ADDR", "127.0.0.1:0".to_owned()),
        ("VERIFYD_WEBHOOKS__PUBLIC_BASE_URL", PUBLIC_BASE.to_owned()),
        // Long enough for the call, whatever the machine's speed.
        ("VERIFYD_CODE__TTL", "10m".to_owned()),
    ]);
    let server = Server::spawn_with(&env);
    let mut client = server.client().await;

    // Press-# confirmation: the token rides in every webhook URL, which
    // the server receives (and hyper and axum see) on each request.
    let started = client
        .start_verification(call(proto::VoiceMode::Confirm))
        .await
        .expect("the call is placed")
        .into_inner();
    let id = started.verification.expect("verification").id;
    let phone = Phone::picked_up_at(server.webhooks().await, &fake).await;
    let token = phone.call_token();
    let gather = phone.answer("human").await.gather.expect("a gather");
    phone.press(&gather, "#").await;
    assert_eq!(phone.report("completed").await, 204);
    let got = client
        .get_verification(proto::GetVerificationRequest { id })
        .await
        .expect("get")
        .into_inner()
        .verification
        .expect("verification");
    assert_eq!(got.status(), proto::VerificationStatus::Approved);

    let logs = server.terminate();
    assert!(
        logs.contains("\"level\":\"TRACE\""),
        "the run logged at trace level"
    );
    assert!(
        logs.contains("call keys"),
        "the keypress webhook was logged"
    );
    assert!(!logs.contains(&token), "a call token reached the logs");
    assert!(
        !logs.contains(AUTH_TOKEN),
        "the auth token reached the logs"
    );
    assert!(!logs.contains(PHONE), "the full number reached the logs");
}

#[tokio::test]
async fn badly_signed_webhooks_are_each_counted_and_logged_once_a_minute() {
    use crate::voice::PUBLIC_BASE;
    let fake = crate::fake_twilio::FakeTwilio::start().await;
    let mut env = twilio_env(&fake);
    env.extend([
        ("VERIFYD_WEBHOOKS__ADDR", "127.0.0.1:0".to_owned()),
        ("VERIFYD_WEBHOOKS__PUBLIC_BASE_URL", PUBLIC_BASE.to_owned()),
    ]);
    let server = Server::spawn_with(&env);
    let webhooks = server.webhooks().await;
    let admin = server.addr("admin").await;

    // Unauthenticated traffic, as fast as one client sends it: forged
    // signatures, and one without any.
    let url = format!(
        "http://{webhooks}/webhooks/twilio/twilio/message-status\
         ?tenant=default&verification=VE0123456789abcdef0123456789abcdef"
    );
    let form = [
        ("MessageSid", crate::fake_twilio::sid("SM", 1)),
        ("MessageStatus", "delivered".to_owned()),
    ];
    // This test's own webhook client, with no app in the process to have
    // installed the one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    for n in 0..200 {
        let mut request = http.post(&url).form(&form);
        if n > 0 {
            request = request.header("X-Twilio-Signature", format!("forged{n}="));
        }
        let response = request.send().await.expect("the webhook answers");
        assert_eq!(response.status().as_u16(), 403);
    }

    let metrics = crate::server::http_response(&format!("http://{admin}/metrics")).await;
    assert!(
        metrics.contains(
            "verifyd_webhooks_refused_total{provider=\"twilio\",reason=\"signature\"} 200"
        ),
        "{metrics}"
    );
    let logs = server.terminate();
    let logged = logs
        .lines()
        .filter(|l| l.contains("webhook refused"))
        .count();
    assert_eq!(logged, 1, "one line for the first, none for the flood");
}

/// A stand-in OpenTelemetry collector: the OTLP/gRPC trace service,
/// keeping every span it is sent.
mod collector {
    use std::{
        net::SocketAddr,
        sync::{Arc, Mutex},
    };

    use opentelemetry_proto::tonic::{
        collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
        trace::v1::Span,
    };
    use tokio_stream::wrappers::TcpListenerStream;

    #[derive(Clone, Default)]
    pub(super) struct Collector(Arc<Mutex<Vec<Span>>>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let spans = request
                .into_inner()
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans);
            self.0.lock().expect("lock").extend(spans);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    impl Collector {
        pub(super) async fn start() -> (Self, SocketAddr) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let collector = Self::default();
            let service = TraceServiceServer::new(collector.clone());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
            (collector, addr)
        }

        pub(super) fn spans(&self) -> Vec<Span> {
            self.0.lock().expect("lock").clone()
        }
    }
}

// Multi-threaded: the collector must keep answering while the test blocks
// on the server's exit, when the last spans are flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_continues_through_the_rpc_and_on_to_the_provider() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let (collector, collector_addr) = collector::Collector::start().await;
    let fake = crate::fake_twilio::FakeTwilio::start().await;
    fake.accept(&crate::fake_twilio::sid("SM", 1)).await;
    let mut env = twilio_env(&fake);
    env.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        ),
        ("OTEL_SERVICE_NAME", "verifyd-trace-test".to_owned()),
    ]);
    let server = Server::spawn_with(&env);
    let mut client = server.client().await;

    let mut request = tonic::Request::new(start(PHONE, proto::Channel::Sms));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    client.start_verification(request).await.expect("sent");

    // Twilio was called within the caller's trace.
    let twilio = fake.server.received_requests().await.expect("recorded");
    let traceparent = twilio[0]
        .headers
        .get("traceparent")
        .expect("the provider request carries traceparent")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")) && !traceparent.contains(CALLER_SPAN),
        "{traceparent}: the caller's trace, from verifyd's own span"
    );

    // Shutdown flushes the batch.
    let logs = server.terminate();
    assert!(!logs.contains("trace export"), "{logs}");
    let spans = collector.spans();
    let hex = |bytes: &[u8]| hex::encode(bytes);
    let rpc = spans
        .iter()
        .find(|s| s.name == "StartVerification")
        .unwrap_or_else(|| panic!("an RPC span among {:?}", names(&spans)));
    assert_eq!(hex(&rpc.trace_id), TRACE_ID);
    assert_eq!(hex(&rpc.parent_span_id), CALLER_SPAN);
    let provider = spans
        .iter()
        .find(|s| s.name == "provider_request")
        .unwrap_or_else(|| panic!("a provider span among {:?}", names(&spans)));
    assert_eq!(hex(&provider.trace_id), TRACE_ID);
    assert!(
        traceparent.contains(&hex(&provider.span_id)),
        "the provider request's parent is the provider span"
    );
    // Attributes are masked: no full number anywhere in any span.
    for span in &spans {
        for attribute in &span.attributes {
            if let Some(Value::StringValue(value)) =
                attribute.value.as_ref().and_then(|v| v.value.as_ref())
            {
                assert!(
                    !value.contains(&PHONE[1..]),
                    "{}: {} = {value}",
                    span.name,
                    attribute.key
                );
            }
        }
    }
}

fn names(spans: &[opentelemetry_proto::tonic::trace::v1::Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}
