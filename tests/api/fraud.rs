//! The fraud guard: countries and number types that never get a code, and
//! the SMS-pumping budget per number prefix, whose trip blocks the prefix.

use std::time::Duration;

use tonic::Code;
use verifyd::proto;

use crate::helpers::{resend_on, retry_after, sms_to, spawn_app, spawn_app_with};

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

/// A prefix budget of 30 starts with a block behind it, and destination
/// budgets out of the way: the reproduction's setting.
pub(crate) fn pumping_guard(c: &mut verifyd::config::Config) {
    c.limits.starts_per_prefix.burst = 30;
    c.limits.starts_per_prefix.period = Duration::from_secs(120);
    c.limits.starts_per_destination.burst = 1_000;
    c.fraud.prefix_block = Duration::from_secs(3600);
}

#[tokio::test]
async fn refused_starts_and_resends_spend_nothing_of_the_prefix_budget() {
    let app = spawn_app_with(pumping_guard).await;
    // One user clicks, then keeps clicking: each start inside the least
    // gap and each resend inside the cooldown is refused.
    let v = app.started(sms_to("+14155550111")).await;
    for _ in 0..40 {
        let err = app
            .start(sms_to("+14155550111"))
            .await
            .expect_err("inside the least gap");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(!err.message().contains("starts_per_prefix"), "{err:?}");
    }
    for _ in 0..40 {
        let err = app
            .resend(resend_on(&v.id, proto::Channel::Sms))
            .await
            .expect_err("inside the cooldown");
        assert_eq!(err.code(), Code::ResourceExhausted);
    }
    // Another user in the same range of numbers is still reachable.
    app.started(sms_to("+14155550177")).await;
    assert_eq!(app.outbox.total_sent(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.count(r#"verifyd_prefix_blocks_total{tenant="default"}"#),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn personal_pager_uan_and_voicemail_numbers_get_nothing_unless_allowed() {
    let app = spawn_app().await;
    for (number, what) in [
        ("+447012345678", "personal"),
        ("+447640123456", "pager"),
        ("+445512345678", "universal-access"),
        ("+49177991234567", "voicemail-access"),
    ] {
        for request in [sms_to(number), call(number)] {
            let refused = app.start(request).await.expect_err(what);
            assert_eq!(refused.code(), Code::PermissionDenied, "{what}");
            assert!(refused.message().contains(what), "{}", refused.message());
        }
    }
    assert_eq!(app.outbox.total_sent(), 0);
    app.stop().await;

    let app = spawn_app_with(|c| {
        c.fraud.allow_line_types = vec![verifyd::domain::fraud::SpecialLine::PersonalNumber];
    })
    .await;
    app.started(sms_to("+447012345678")).await;
    let refused = app.start(sms_to("+447640123456")).await.expect_err("pager");
    assert_eq!(refused.code(), Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_sends_are_bounded_across_channels_and_countries() {
    let app = spawn_app_with(|c| {
        c.limits.sends_per_tenant = verifyd::domain::limit::Quota {
            burst: 3,
            period: Duration::from_secs(3_600),
        };
    })
    .await;
    let email = proto::StartVerificationRequest {
        channel: proto::Channel::Email.into(),
        ..sms_to("user@example.com")
    };
    app.started(sms_to("+14155550100")).await;
    app.started(email).await;
    // Refused by the least gap: its cell of the tenant's budget comes back.
    let too_soon = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("inside the least gap");
    assert!(
        !too_soon.message().contains("sends_per_tenant"),
        "{too_soon:?}"
    );
    // Another country, another channel: the same budget.
    app.started(call("+447911123456")).await;
    let refused = app
        .start(sms_to("+33612345678"))
        .await
        .expect_err("the tenant's sends are spent");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("sends_per_tenant"),
        "{}",
        refused.message()
    );
    assert!(retry_after(&refused).is_some_and(|wait| wait > Duration::ZERO));
    assert_eq!(app.outbox.total_sent(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_new_verifications_and_emails_have_budgets_of_their_own() {
    let hourly = |burst| verifyd::domain::limit::Quota {
        burst,
        period: Duration::from_secs(3_600),
    };
    let app = spawn_app_with(|c| {
        c.limits.starts_per_tenant = hourly(2);
        c.limits.emails_per_tenant = hourly(1);
    })
    .await;
    let email = |to: &str| proto::StartVerificationRequest {
        channel: proto::Channel::Email.into(),
        ..sms_to(to)
    };
    app.started(email("first@example.com")).await;
    // Email bombing across many addresses: the tenant's email budget.
    let refused = app
        .start(email("second@example.com"))
        .await
        .expect_err("the tenant's emails are spent");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("emails_per_tenant"),
        "{}",
        refused.message()
    );
    // That refusal gave its new-verification cell back: one is left.
    app.started(sms_to("+14155550100")).await;
    let refused = app
        .start(sms_to("+14155550101"))
        .await
        .expect_err("the tenant's new verifications are spent");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("starts_per_tenant"),
        "{}",
        refused.message()
    );
    assert_eq!(app.outbox.total_sent(), 2);
    app.stop().await;
}
