//! `verifyd client` through the real binary: the quick start's transcript
//! (docs/quickstart.md) against a dev-mode server, and TLS and mutual TLS
//! against a listener with them.

use std::process::{Command, Output};

use crate::{binary::Server, pki::Pki};

/// `verifyd client --addr ADDR ARGS…`, with a clean environment so that
/// nothing from the test's shell (VERIFYD_API_KEY, ...) takes part.
fn client<S: AsRef<std::ffi::OsStr>>(addr: &str, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .env_clear()
        .args(["client", "--addr", addr])
        .args(args)
        .output()
        .expect("the verifyd binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "verifyd client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "verifyd client should have failed"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The value of `name: value` in the client's output.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn the_quick_start_transcript_runs_as_written() {
    let server = Server::spawn_with::<&str>(&[]);
    let addr = format!("http://{}", server.addr("grpc").await);

    let started = stdout(&client(
        &addr,
        &["start", "--to", "+14155550100", "--channel", "sms"],
    ));
    let id = line(&started, "id").to_owned();
    assert!(id.starts_with("VE"), "{started}");
    assert_eq!(line(&started, "to"), "+14155550100");
    assert_eq!(line(&started, "status"), "VERIFICATION_STATUS_PENDING");
    assert_eq!(
        line(&started, "send_attempt"),
        "CHANNEL_SMS DELIVERY_STATUS_ACCEPTED via console"
    );

    // The code, from the console sender's line on the server's stdout.
    let code = server.code_for(&id).await;
    let checked = stdout(&client(&addr, &["check", "--id", &id, "--code", &code]));
    assert!(checked.starts_with("approved: true\n"), "{checked}");
    assert_eq!(line(&checked, "status"), "VERIFICATION_STATUS_APPROVED");

    let again = stderr(&client(&addr, &["check", "--id", &id, "--code", &code]));
    assert!(
        again.contains("FailedPrecondition: verification is VERIFICATION_STATUS_APPROVED"),
        "{again}"
    );

    // A caller's reference and tags, given and shown back; a malformed tag
    // is refused by the client itself.
    let referenced = stdout(&client(
        &addr,
        &[
            "start",
            "--to",
            "+14155550101",
            "--channel",
            "sms",
            "--reference",
            "reset-42",
            "--tag",
            "ticket=HD-1",
            "--tag",
            "app=sspr",
        ],
    ));
    assert_eq!(line(&referenced, "reference"), "reset-42");
    assert!(
        referenced.contains("tag: app=sspr\ntag: ticket=HD-1\n"),
        "{referenced}"
    );
    let bad = client(
        &addr,
        &[
            "start",
            "--to",
            "+14155550102",
            "--channel",
            "sms",
            "--tag",
            "x",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("a tag is KEY=VALUE"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn the_client_speaks_tls_and_presents_a_certificate() {
    let pki = Pki::new();
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let server = Server::spawn_with(&[
        ("VERIFYD_SERVER__TLS__CERT_PATH", path("server.pem")),
        ("VERIFYD_SERVER__TLS__KEY_PATH", path("server.key")),
        ("VERIFYD_SERVER__TLS__CLIENT_CA_PATH", path("ca.pem")),
        (
            "VERIFYD_TENANTS__SSPR__CLIENT_CERT_SANS",
            "[\"sspr.internal\"]".to_owned(),
        ),
    ]);
    let port = server.addr("grpc").await.port();
    let addr = format!("https://localhost:{port}");
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let start = ["start", "--to", "+14155550100", "--channel", "sms"];
    let with = |flags: &[&str]| -> Vec<String> {
        flags
            .iter()
            .chain(&start)
            .map(|s| (*s).to_owned())
            .collect()
    };

    // The CA and the client's certificate: the tenant it names.
    let started = stdout(&client(
        &addr,
        &with(&["--ca", &ca, "--cert", &cert, "--key", &key]),
    ));
    assert_eq!(line(&started, "status"), "VERIFICATION_STATUS_PENDING");

    // Through 127.0.0.1 with the certificate's name given.
    let by_ip = format!("https://127.0.0.1:{port}");
    let renamed = client(
        &by_ip,
        &with(&[
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--server-name",
            "localhost",
        ]),
    );
    assert_eq!(line(&stdout(&renamed), "to"), "+14155550100");

    // No client certificate: TLS works, the call is not authenticated.
    let anonymous = stderr(&client(&addr, &with(&["--ca", &ca])));
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");

    // The system's roots do not know the test CA: the handshake fails,
    // and the message says why.
    let untrusted = stderr(&client(&addr, &with(&["--cert", &cert, "--key", &key])));
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");

    // TLS flags with a plaintext address are refused, not ignored.
    let plaintext = stderr(&client(
        &format!("http://localhost:{port}"),
        &with(&["--ca", &ca]),
    ));
    assert!(
        plaintext.contains("need an https:// address"),
        "{plaintext}"
    );

    // A missing file names the flag.
    let missing = stderr(&client(&addr, &with(&["--ca", "/nonexistent/ca.pem"])));
    assert!(missing.contains("--ca /nonexistent/ca.pem"), "{missing}");
}

#[tokio::test]
async fn verifyd_admin_lifts_a_block_with_an_operator_token_and_is_audited() {
    let server = Server::spawn_with(&[
        ("VERIFYD_ADMIN_API__ADDR", "127.0.0.1:0".to_owned()),
        (
            "VERIFYD_ADMIN_API__TOKEN_SHA256",
            format!("[\"{}\"]", crate::auth::digest("op-token-42")),
        ),
    ]);
    // Dev mode: a loopback listener without TLS.
    let addr = format!("http://{}", server.addr("admin_api").await);
    let admin = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_verifyd"))
            .env_clear()
            .env("VERIFYD_ADMIN_TOKEN", token)
            .args([
                "admin",
                "--addr",
                &addr,
                "lift-block",
                "--to",
                "+14155550100",
            ])
            .output()
            .expect("the verifyd binary runs")
    };
    let lifted = stdout(&admin("op-token-42"));
    assert_eq!(lifted.trim(), "no block was in force");
    let refused = stderr(&admin("a-tenant-key"));
    assert!(refused.contains("Unauthenticated"), "{refused}");

    server.sigterm();
    let (_, logs) = server.exited().await;
    let audit = logs
        .lines()
        .find(|l| l.contains("\"admin_action\""))
        .unwrap_or_else(|| panic!("no admin_action audit line in {logs}"));
    assert!(audit.contains("\"lift_block\""), "{audit}");
    assert!(audit.contains("\"operator\":\""), "{audit}");
    assert!(!audit.contains("+14155550100"), "masked: {audit}");
    assert!(!logs.contains("op-token-42"), "the token is never logged");
    // Every call is on the record, the refused one too.
    let calls: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"admin_call\""))
        .collect();
    assert_eq!(calls.len(), 2, "{logs}");
    assert!(calls[0].contains("\"operator\":\"#1\""), "{}", calls[0]);
    assert!(
        calls[1].contains("\"operator\":\"unauthenticated\""),
        "{}",
        calls[1]
    );
}
