//! `/metrics` on the admin listener: a flow through the API, then the
//! counters read back, and nothing in them that names a verification or a
//! destination.

use tonic::Code;

use crate::helpers::{sms_to, spawn_app, spawn_app_with, suite_uses_redis};

const TO: &str = "+14155550100";

#[tokio::test]
async fn a_flow_shows_up_in_the_counters() {
    let app = spawn_app().await;
    let before = app.metrics().await;
    assert_eq!(before.value("verifyd_ready"), Some(1.0), "{}", before.0);

    let v = app.started(sms_to(TO)).await;
    let code = app.outbox.code_for(&v.id);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert!(!app.check(&v.id, wrong).await.expect("check").approved);
    assert!(app.check(&v.id, &code).await.expect("check").approved);
    let missing = app
        .get("VE00000000000000000000000000000000")
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound);
    let mut watch = app.watch(&v.id).await.expect("watch");
    let _ = watch.message().await.expect("first state");
    drop(watch);

    let m = app.metrics().await;
    let text = &m.0;
    for (series, want) in [
        (
            r#"verifyd_verifications_started_total{tenant="default",channel="sms"}"#,
            1.0,
        ),
        (
            r#"verifyd_verifications_ended_total{tenant="default",channel="sms",status="approved"}"#,
            1.0,
        ),
        (
            r#"verifyd_checks_total{tenant="default",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"verifyd_checks_total{tenant="default",outcome="approved"}"#,
            1.0,
        ),
        (
            r#"verifyd_sends_total{channel="sms",provider="console",result="ok"}"#,
            1.0,
        ),
        (
            r#"verifyd_rpc_duration_seconds_count{method="StartVerification",code="OK"}"#,
            1.0,
        ),
        (
            r#"verifyd_rpc_duration_seconds_count{method="CheckVerification",code="OK"}"#,
            2.0,
        ),
        (
            r#"verifyd_rpc_duration_seconds_count{method="GetVerification",code="NOT_FOUND"}"#,
            1.0,
        ),
        (
            r#"verifyd_rpc_duration_seconds_count{method="WatchVerification",code="OK"}"#,
            1.0,
        ),
        (
            r#"verifyd_provider_request_duration_seconds_count{provider="console"}"#,
            1.0,
        ),
        (r#"verifyd_provider_circuit_open{provider="console"}"#, 0.0),
    ] {
        assert_eq!(m.value(series), Some(want), "{series} in:\n{text}");
    }
    if suite_uses_redis() {
        assert!(
            m.count(r#"verifyd_store_operation_duration_seconds_count{backend="redis",operation="check"}"#)
                >= 2.0,
            "{text}"
        );
        assert_eq!(
            m.value(r#"verifyd_store_errors_total{backend="redis",operation="check"}"#),
            None,
            "{text}"
        );
    }
    // No id, number or code in any series.
    for secret in [v.id.as_str(), TO, &TO[1..], code.as_str()] {
        assert!(!text.contains(secret), "{secret} is in /metrics");
    }
    app.stop().await;
}

#[tokio::test]
async fn refusals_count_by_limit_and_watchers_by_tenant() {
    let app = spawn_app_with(|c| {
        c.limits.starts_per_destination.burst = 1;
    })
    .await;
    app.started(sms_to(TO)).await;
    // Past the least gap, so that the budget is what refuses.
    app.clock.advance(std::time::Duration::from_secs(30));
    let refused = app.start(sms_to(TO)).await.expect_err("limited");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let v = app.started(sms_to("+14155550101")).await;
    let watch = app.watch(&v.id).await.expect("watch");

    let m = app.metrics().await;
    assert_eq!(
        m.value(r#"verifyd_rate_limited_total{tenant="default",limit="starts_per_destination"}"#),
        Some(1.0),
        "{}",
        m.0
    );
    assert_eq!(
        m.value(r#"verifyd_watch_streams{tenant="default"}"#),
        Some(1.0),
        "{}",
        m.0
    );
    drop(watch);
    // The stream's task ends when it sees the client gone; bounded wait.
    let mut open = 1.0;
    for _ in 0..200 {
        open = app
            .metrics()
            .await
            .count(r#"verifyd_watch_streams{tenant="default"}"#);
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(open, 0.0, "the closed watch is no longer counted");
    app.stop().await;
}
