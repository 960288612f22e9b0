//! The fraud guard: countries and number types that never get a code, and
//! the SMS-pumping budget per number prefix, whose trip blocks the prefix.

use std::time::Duration;

use tonic::Code;
use verifyd::proto;

use crate::helpers::{retry_after, sms_to, spawn_app, spawn_app_with};

fn call(to: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        channel: proto::Channel::Voice.into(),
        ..sms_to(to)
    }
}

#[tokio::test]
async fn premium_rate_shared_cost_and_sms_to_landlines_are_refused_before_anything_is_sent() {
    let app = spawn_app().await;
    for (request, what) in [
        (sms_to("+449098790000"), "premium-rate"),
        (call("+449098790000"), "premium-rate"),
        (sms_to("+33810123456"), "shared-cost"),
        (sms_to("+442079460000"), "landline"),
    ] {
        let refused = app.start(request).await.expect_err(what);
        assert_eq!(refused.code(), Code::PermissionDenied, "{what}");
        assert!(refused.message().contains(what), "{}", refused.message());
    }
    assert_eq!(app.outbox.total_sent(), 0);
    app.started(call("+442079460000")).await;
}

#[tokio::test]
async fn a_country_outside_the_channels_list_is_permission_denied() {
    let app = spawn_app_with(|c| c.fraud.sms_calling_codes = vec![1]).await;
    let refused = app
        .start(sms_to("+447911123456"))
        .await
        .expect_err("not +1");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("+44"), "{}", refused.message());
    app.started(sms_to("+14155550100")).await;
    app.started(call("+447911123456")).await;
}

#[tokio::test]
async fn a_prefix_that_trips_its_budget_is_blocked_for_a_while() {
    let app = spawn_app_with(|c| {
        c.limits.starts_per_prefix.burst = 3;
        c.limits.starts_per_prefix.period = Duration::from_secs(60);
        c.fraud.prefix_block = Duration::from_secs(3600);
    })
    .await;
    for n in 0..3 {
        app.started(sms_to(&format!("+1415555010{n}"))).await;
    }
    let tripped = app
        .start(sms_to("+14155550103"))
        .await
        .expect_err("budget spent");
    assert_eq!(tripped.code(), Code::ResourceExhausted);
    assert!(tripped.message().contains("starts_per_prefix"));

    // Now the whole range is blocked, whatever the budget says.
    app.clock.advance(Duration::from_secs(600));
    let blocked = app
        .start(sms_to("+14155550199"))
        .await
        .expect_err("prefix blocked");
    assert_eq!(blocked.code(), Code::PermissionDenied);
    assert_eq!(retry_after(&blocked), Some(Duration::from_secs(3000)));
    app.started(sms_to("+14155560100")).await;

    app.clock.advance(Duration::from_secs(3000));
    app.started(sms_to("+14155550199")).await;
    assert_eq!(app.outbox.total_sent(), 5);

    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(r#"verifyd_prefix_blocks_total{tenant="default"}"#),
        Some(1.0),
        "one block, counted once: {}",
        metrics.0
    );
}
