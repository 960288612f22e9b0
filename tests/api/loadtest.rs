//! The ghz configs in loadtest/ghz/ and `verifyd-bench`: every config
//! parses, names a real method and makes requests verifyd accepts, so the
//! configs cannot rot unseen; and bench runs them against a real server,
//! reporting as ghz does.

use std::{path::PathBuf, time::Duration};

use clap::Parser as _;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use verifyd::{
    domain::{Channel, Destination, fraud::FraudRules},
    proto,
    service::TenantConfig,
};

use verifyd_bench::{self as bench, GhzConfig, Plan, Stop};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn ghz_configs() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/ghz");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("loadtest/ghz exists")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
}

fn config(name: &str) -> GhzConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("loadtest/ghz")
        .join(name);
    bench::load(&path).expect("config loads")
}

#[test]
fn every_ghz_config_parses_and_makes_requests_its_method_accepts() {
    let files = ghz_configs();
    let mut calls = Vec::new();
    for file in &files {
        let name = file.display();
        assert_eq!(
            file.extension().and_then(|e| e.to_str()),
            Some("json"),
            "{name}: loadtest/ghz holds ghz JSON configs only"
        );
        let cfg = bench::load(file).unwrap_or_else(|e| panic!("{e}"));
        // Resolves the call in the descriptors, checks the proto file,
        // parses the templates and encodes request 0.
        let plan = Plan::from_config(&cfg, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let input = plan.call.method.input();
        let mut bodies = Vec::new();
        for n in [0, 1] {
            let body = plan
                .call
                .request(n, "c0w0")
                .unwrap_or_else(|e| panic!("{name}: request {n}: {e}"))
                .into_inner();
            DynamicMessage::decode(input.clone(), body.clone())
                .unwrap_or_else(|e| panic!("{name}: request {n} is no {}: {e}", input.full_name()));
            bodies.push(body);
        }
        if input.full_name() == "verifyd.v1.StartVerificationRequest" {
            let starts = bodies
                .iter()
                .map(|b| proto::StartVerificationRequest::decode(b.clone()).expect("decodes"))
                .collect::<Vec<_>>();
            for start in &starts {
                assert_starts_pass_validation(&name.to_string(), start);
            }
            assert_ne!(
                starts[0].to, starts[1].to,
                "{name}: each request needs its own destination, or the per-destination \
                 limits are what gets measured"
            );
        }
        calls.push(input.full_name().to_owned());
    }
    for needed in [
        "grpc.health.v1.HealthCheckRequest",
        "verifyd.v1.StartVerificationRequest",
        "verifyd.v1.GetVerificationRequest",
        "verifyd.v1.CheckVerificationRequest",
    ] {
        assert!(calls.iter().any(|c| c == needed), "no config for {needed}");
    }
}

/// The destination is valid and gets past the fraud screen on its channel.
fn assert_starts_pass_validation(name: &str, start: &proto::StartVerificationRequest) {
    let to = Destination::parse(&start.to)
        .unwrap_or_else(|e| panic!("{name}: destination {:?} {e}", start.to));
    let channel = match proto::Channel::try_from(start.channel) {
        Ok(proto::Channel::Sms) => Channel::Sms,
        Ok(proto::Channel::Voice) => Channel::Voice,
        Ok(proto::Channel::Email) => Channel::Email,
        other => panic!("{name}: channel {other:?}"),
    };
    assert!(channel.reaches(&to), "{name}: {channel:?} cannot reach it");
    FraudRules::default()
        .screen(channel, &to)
        .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
}

fn against(app: &TestApp, name: &str, over: GhzConfig) -> Plan {
    let cfg = config(name).overridden_by(GhzConfig {
        host: Some(app.grpc_addr.to_string()),
        ..over
    });
    Plan::from_config(&cfg, None).expect("plan")
}

fn assert_all_ok(report: &bench::Report, count: u64) {
    assert_eq!(report.count, count, "{}", report.summary());
    assert_eq!(
        report.status_code_distribution.get("OK"),
        Some(&count),
        "{}",
        report.summary()
    );
    assert!(report.error_distribution.is_empty(), "{}", report.summary());
}

#[tokio::test]
async fn bench_drives_health_and_the_verification_calls_and_reports_as_ghz() {
    let app = spawn_app().await;
    let small = || GhzConfig {
        total: Some(200),
        concurrency: Some(8),
        connections: Some(2),
        ..GhzConfig::default()
    };

    let health = bench::run(&against(&app, "health.json", small()))
        .await
        .expect("runs");
    assert_all_ok(&health.report, 200);
    let json = serde_json::to_value(&health.report).expect("serializes");
    for field in [
        "count",
        "total",
        "average",
        "fastest",
        "slowest",
        "rps",
        "latencyDistribution",
        "histogram",
        "statusCodeDistribution",
        "errorDistribution",
        "endReason",
        "date",
        "options",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert_eq!(json["count"], 200);
    assert_eq!(json["statusCodeDistribution"]["OK"], 200);
    let p99 = &json["latencyDistribution"][6];
    assert_eq!(p99["percentage"], 99);
    // Nanoseconds, as ghz writes them: between the fastest and slowest.
    let p99 = p99["latency"].as_u64().expect("latency in ns");
    assert!(health.report.fastest <= p99 && p99 <= health.report.slowest);
    assert!(health.report.total >= health.report.slowest);

    let mut start_plan = against(&app, "start.json", small());
    start_plan.collect_ids = true;
    let start = bench::run(&start_plan).await.expect("runs");
    assert_all_ok(&start.report, 200);
    assert_eq!(app.outbox.total_sent(), 200, "one message per start");
    let mut ids = start.ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "200 distinct verifications");

    // The saved ids, as a data file, drive GetVerification round-robin.
    let dir = tempfile::tempdir().expect("tempdir");
    let ids_file = dir.path().join("ids.json");
    let data: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect();
    std::fs::write(&ids_file, serde_json::to_string(&data).expect("json")).expect("write");
    let get = bench::run(&against(
        &app,
        "get.json",
        GhzConfig {
            data_file: Some(ids_file.display().to_string()),
            total: Some(400),
            ..small()
        },
    ))
    .await
    .expect("runs");
    assert_all_ok(&get.report, 400);

    // CheckVerification with a wrong code answers OK, approved: false.
    let checks: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({ "id": id, "code": "000000" }))
        .collect();
    let check = bench::run(&against(
        &app,
        "check.json",
        GhzConfig {
            data: Some(serde_json::Value::Array(checks)),
            ..small()
        },
    ))
    .await
    .expect("runs");
    assert_all_ok(&check.report, 200);
    app.stop().await;
}

#[tokio::test]
async fn bench_runs_open_loop_at_a_fixed_rate_and_for_a_duration() {
    let app = spawn_app().await;
    // 100 requests at 400/s: the last is due 247.5 ms after the start, so
    // the run cannot be shorter, however fast the server.
    let paced = bench::run(&against(
        &app,
        "health.json",
        GhzConfig {
            total: Some(100),
            rps: Some(400),
            concurrency: Some(4),
            ..GhzConfig::default()
        },
    ))
    .await
    .expect("runs");
    assert_all_ok(&paced.report, 100);
    assert!(
        paced.report.total >= 247_000_000,
        "{}",
        paced.report.summary()
    );

    let plan = against(
        &app,
        "health.json",
        GhzConfig {
            duration: Some(Duration::from_millis(200)),
            concurrency: Some(2),
            ..GhzConfig::default()
        },
    );
    assert_eq!(plan.stop, Stop::Duration(Duration::from_millis(200)));
    let timed = bench::run(&plan).await.expect("runs");
    assert_eq!(timed.report.end_reason, "timeout");
    assert!(timed.report.count > 0);
    assert_all_ok(&timed.report, timed.report.count);
    app.stop().await;
}

#[tokio::test]
async fn the_configs_placeholder_key_is_refused_and_api_key_replaces_it() {
    const KEY: &str = "loadtest-api-key-4be1c07d";
    let app = spawn_app_with(|config| {
        config.tenants.insert(
            "loadtest".into(),
            TenantConfig {
                api_key_sha256: vec![crate::auth::digest(KEY)],
                ..TenantConfig::default()
            },
        );
    })
    .await;
    let cfg = config("start.json").overridden_by(GhzConfig {
        host: Some(app.grpc_addr.to_string()),
        total: Some(20),
        concurrency: Some(4),
        ..GhzConfig::default()
    });

    let placeholder = bench::run(&Plan::from_config(&cfg, None).expect("plan"))
        .await
        .expect("runs");
    assert_eq!(
        placeholder
            .report
            .status_code_distribution
            .get("Unauthenticated"),
        Some(&20),
        "{}",
        placeholder.report.summary()
    );

    let keyed = bench::run(&Plan::from_config(&cfg, Some(KEY)).expect("plan"))
        .await
        .expect("runs");
    assert_all_ok(&keyed.report, 20);
    app.stop().await;
}

#[tokio::test]
async fn the_bench_command_takes_ghz_flags_and_writes_ghz_json() {
    let app = spawn_app().await;
    let host = app.grpc_addr.to_string();
    let out = tempfile::NamedTempFile::new().expect("a temporary file");
    let out_path = out.path().to_str().expect("a UTF-8 path").to_owned();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/ghz/health.json");
    // The command line as verifyd-bench's main parses it.
    let cli = bench::Cli::try_parse_from([
        "verifyd-bench",
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "-n",
        "100",
        "-c",
        "5",
        "--cpus",
        "1",
        "-O",
        "json",
        "-o",
        &out_path,
        &host,
    ])
    .expect("ghz's flags parse");
    bench::main(cli.args).await.expect("runs");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path()).expect("the report is written"))
            .expect("the output is one JSON report");
    assert_eq!(report["count"], 100, "{report}");
    assert_eq!(report["statusCodeDistribution"]["OK"], 100, "{report}");
    assert_eq!(report["options"]["concurrency"], 5, "{report}");
    app.stop().await;
}

#[tokio::test]
async fn bench_speaks_tls_to_a_server_whose_ca_it_is_given() {
    let pki = crate::pki::Pki::new();
    let app = spawn_app_with(|config| {
        config.server.tls = Some(verifyd::grpc::tls::TlsConfig {
            cert_path: pki.path("server.pem"),
            key_path: pki.path("server.key"),
            client_ca_path: None,
            max_handshakes: 256,
            max_handshakes_per_ip: 16,
        });
    })
    .await;
    let over = |cacert: Option<String>| GhzConfig {
        host: Some(app.grpc_addr.to_string()),
        insecure: Some(false),
        cacert,
        total: Some(50),
        concurrency: Some(5),
        ..GhzConfig::default()
    };
    let plan = Plan::from_config(
        &config("health.json").overridden_by(over(Some(pki.path("ca.pem").display().to_string()))),
        None,
    )
    .expect("plan");
    let run = bench::run(&plan).await.expect("runs over TLS");
    assert_all_ok(&run.report, 50);

    let err = Plan::from_config(&config("health.json").overridden_by(over(None)), None)
        .expect_err("TLS without a CA");
    assert!(err.to_string().contains("cacert"), "{err}");
    app.stop().await;
}
