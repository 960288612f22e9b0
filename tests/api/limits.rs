//! Rate-limit rejections: RESOURCE_EXHAUSTED with RetryInfo, and nothing sent.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt as _;
use verifyd::{grpc::DESTINATION_BUSY, proto};

use crate::helpers::{resend_on, retry_after, sms_to, spawn_app, spawn_app_with};

#[tokio::test]
async fn starts_per_destination_are_limited_with_retry_info() {
    // No cooldown (so no least gap) and sends to spare, so only the rate
    // limit can refuse.
    let app = spawn_app_with(|c| {
        c.code.resend_cooldown = Duration::ZERO;
        c.code.max_send_attempts = 10;
    })
    .await;
    let v = app.started(sms_to("+14155550100")).await;
    for _ in 1..3 {
        app.started(sms_to("+14155550100")).await;
    }
    // Resends take from the same budget.
    let last = app.started(sms_to("+14155550100")).await;
    app.resent(resend_on(&last.id, proto::Channel::Sms)).await;
    let err = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("burst spent");
    assert_eq!(err.code(), Code::ResourceExhausted);
    // A start does not say which of its destination's states refused it.
    assert_eq!(err.message(), DESTINATION_BUSY);
    assert_eq!(retry_after(&err), Some(Duration::from_secs(120)));
    let err = app
        .resend(resend_on(&last.id, proto::Channel::Sms))
        .await
        .expect_err("burst spent");
    // A resend's caller holds the verification: it is told which budget.
    assert!(err.message().contains("starts_per_destination"), "{err:?}");
    assert_eq!(app.outbox.sent_count(&v.id), 1);
    assert_eq!(
        app.outbox.total_sent(),
        5,
        "the refused start and resend sent nothing"
    );

    app.clock.advance(Duration::from_secs(120));
    app.started(sms_to("+14155550100")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_start_answers_alike_whichever_state_of_its_destination_refuses_it() {
    // The least gap (30 s after a first start) refuses the second start;
    // a burst of one, the third, past the gap.
    let app = spawn_app_with(|c| c.limits.starts_per_destination.burst = 1).await;
    let v = app.started(sms_to("+14155550100")).await;
    let too_soon = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("inside the least gap");
    app.clock.advance(Duration::from_secs(30));
    let spent = app
        .start(sms_to("+14155550100"))
        .await
        .expect_err("the destination's burst is spent");
    for refused in [&too_soon, &spent] {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(refused.message(), DESTINATION_BUSY);
        assert!(retry_after(refused).is_some(), "{refused:?}");
        // Nothing else tells them apart: the details hold only RetryInfo.
        let details = refused.get_error_details();
        assert!(details.bad_request().is_none() && details.resource_info().is_none());
        assert!(details.error_info().is_none() && details.quota_failure().is_none());
    }
    assert_eq!(app.outbox.sent_count(&v.id), 1);
    app.stop().await;
}

#[tokio::test]
async fn starts_per_end_user_ip_are_limited() {
    let app = spawn_app_with(|c| c.limits.starts_per_ip.burst = 2).await;
    let from_ip = |to: &str| proto::StartVerificationRequest {
        end_user_ip: "203.0.113.7".into(),
        ..sms_to(to)
    };
    app.started(from_ip("+14155550100")).await;
    app.started(from_ip("+14155550101")).await;
    let err = app
        .start(from_ip("+14155550102"))
        .await
        .expect_err("ip budget spent");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("starts_per_ip"));
    assert!(retry_after(&err).is_some());
    app.stop().await;
}

#[tokio::test]
async fn ipv4_users_behind_a_dual_stack_caller_each_have_their_own_ip_budget() {
    // The server's default budget: 20 starts per address. A caller on a
    // dual-stack socket (Node's, for one) reports IPv4 users as
    // `::ffff:a.b.c.d`; 25 users, one start each, must all pass.
    let app = spawn_app().await;
    for n in 0..25 {
        let req = proto::StartVerificationRequest {
            end_user_ip: format!("::ffff:198.51.100.{n}"),
            ..sms_to(&format!("+1415555{:04}", 100 + n))
        };
        app.start(req)
            .await
            .unwrap_or_else(|e| panic!("user {n} is not another user's budget: {e:?}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn one_ipv4_user_is_one_ip_budget_however_the_address_is_written() {
    let app = spawn_app_with(|c| c.limits.starts_per_ip.burst = 2).await;
    let from_ip = |ip: &str, to: &str| proto::StartVerificationRequest {
        end_user_ip: ip.into(),
        ..sms_to(to)
    };
    app.started(from_ip("203.0.113.7", "+14155550100")).await;
    app.started(from_ip("::ffff:203.0.113.7", "+14155550101"))
        .await;
    // NAT64's well-known prefix embeds the same address: 203.0.113.7.
    let err = app
        .start(from_ip("64:ff9b::cb00:7107", "+14155550102"))
        .await
        .expect_err("the one address's budget is spent");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("starts_per_ip"), "{err:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_failed_check_budget_spans_a_destinations_verifications() {
    let app = spawn_app_with(|c| c.limits.failed_checks_per_destination.burst = 6).await;
    let first = app.started(sms_to("+14155550100")).await;
    for _ in 0..5 {
        app.check(&first.id, "000000").await.expect("wrong code");
    }
    // A new verification does not reset the budget.
    app.clock.advance(Duration::from_secs(30));
    let second = app.started(sms_to("+14155550100")).await;
    assert_ne!(second.id, first.id);
    app.check(&second.id, "000000")
        .await
        .expect("the sixth check");
    let code = app.outbox.code_for(&second.id);
    let err = app
        .check(&second.id, &code)
        .await
        .expect_err("budget spent");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("failed_checks_per_destination"));
    // A cell an hour, the first taken 30 s ago.
    assert_eq!(retry_after(&err), Some(Duration::from_secs(3570)));
    app.stop().await;
}

#[tokio::test]
async fn requests_per_tenant_are_limited() {
    let app = spawn_app_with(|c| {
        c.limits.requests_per_tenant.burst = 3;
        c.limits.requests_per_tenant.period = Duration::from_secs(1);
    })
    .await;
    let unknown = "VE0123456789abcdef0123456789abcdef";
    for _ in 0..3 {
        assert_eq!(
            app.get(unknown).await.expect_err("unknown").code(),
            Code::NotFound
        );
    }
    let err = app.get(unknown).await.expect_err("limited");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(retry_after(&err), Some(Duration::from_secs(1)));
    app.stop().await;
}

#[tokio::test]
async fn a_channel_without_a_sender_is_refused_before_anything_happens() {
    let app = spawn_app_with(|c| c.delivery.voice.clear()).await;
    let mut req = sms_to("+14155550100");
    req.channel = proto::Channel::Voice.into();
    let err = app.start(req).await.expect_err("voice is off");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("voice"));
    app.started(sms_to("+14155550100")).await;
    app.stop().await;
}
