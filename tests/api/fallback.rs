//! Automatic channel fallback: a verification still pending when its
//! step's time is up (or whose text is reported undelivered) sends on the
//! next channel by itself, from the deadline timer, with a new code; the
//! previous step's code stays checkable beside it; a step is a resend
//! (budget, cooldown) and runs once, on whichever replica claims it.
//! Runs on the suite's store (`API_TEST_STORE`); the two-replica test on
//! Redis always.

use std::time::{Duration, Instant};

use tonic::Code;
use verifyd::{
    config::Config,
    domain::VoiceMode,
    proto::{self, VerificationStatus},
    service::FallbackConfig,
};

use crate::{
    fake_twilio::{AUTH_TOKEN, FakeTwilio, sid},
    helpers::{
        Outbox, TestApp, field, resend_on, sms_to, spawn, spawn_app_with, status, test_clock,
        test_config, use_redis, violated_fields,
    },
    redis_server::RedisServer,
    twilio::{callback, with_twilio},
};

const TO: &str = "+14155550100";
const STEP: Duration = Duration::from_secs(60);
/// Past a step's time, far enough that Redis's deadline scan (every 10 s
/// of the service clock) has come round; the memory store's timer runs
/// the step at its time.
const STEP_AND_SCAN: Duration = Duration::from_secs(80);

/// Calls read the code aloud, so each step's code shows in the outbox.
fn read_aloud(config: &mut Config) {
    config.voice.modes = vec![VoiceMode::Confirm, VoiceMode::Code].into();
    config.voice.default_mode = VoiceMode::Code;
}

fn workflow(channels: &[proto::Channel], step_timeout: Duration) -> proto::Fallback {
    proto::Fallback {
        channels: channels.iter().map(|&c| c.into()).collect(),
        step_timeout: Some(step_timeout.try_into().expect("duration")),
    }
}

fn sms_then_voice() -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        fallback: Some(workflow(
            &[proto::Channel::Sms, proto::Channel::Voice],
            STEP,
        )),
        ..sms_to(TO)
    }
}

/// Waits (in real time, for the timer's task) until `id` has had `n`
/// sends.
async fn sends_reach(outbox: &Outbox, id: &str, n: usize) -> Vec<String> {
    let began = Instant::now();
    loop {
        let lines = outbox.lines_for(id);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{id} had {} sends, not {n}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn channel_of(line: &str) -> String {
    field(line, "channel").expect("a channel")
}

fn code_of(line: &str) -> String {
    field(line, "code").expect("a code")
}

#[tokio::test]
async fn a_text_still_pending_when_its_step_is_up_is_followed_by_a_call() {
    let app = spawn_app_with(read_aloud).await;
    let v = app.started(sms_then_voice()).await;
    let state = v.fallback.clone().expect("a workflow");
    assert_eq!(state.step, 0);
    assert_eq!(
        state.next_step_at.expect("due").seconds,
        v.created_at.expect("created").seconds + 60
    );
    assert_eq!(app.outbox.sent_count(&v.id), 1);

    app.clock.advance(STEP_AND_SCAN);
    let lines = sends_reach(&app.outbox, &v.id, 2).await;
    assert_eq!(channel_of(&lines[1]), "voice");
    let after = app.get(&v.id).await.expect("get");
    assert_eq!(status(&after), VerificationStatus::Pending);
    let state = after.fallback.expect("a workflow");
    assert_eq!(state.step, 1);
    assert_eq!(state.next_step_at, None, "the last step ran");
    assert_eq!(after.send_attempts.len(), 2, "watchers see the step");
    assert_eq!(
        after.send_attempts[1].channel,
        i32::from(proto::Channel::Voice)
    );
    assert_eq!(
        after.send_attempts_remaining,
        v.send_attempts_remaining - 1,
        "a step spends a send"
    );
    assert_eq!(
        app.metrics().await.count(
            r#"verifyd_fallback_steps_total{tenant="default",channel="voice",outcome="sent"}"#
        ),
        1.0
    );
    // The user was still reading the text: its code approves.
    let checked = app.check(&v.id, &code_of(&lines[0])).await.expect("check");
    assert!(checked.approved);
    app.stop().await;
}

#[tokio::test]
async fn each_step_keeps_only_the_previous_steps_code_beside_its_own() {
    // The third step meets the doubled resend wait: a minute.
    let app = spawn_app_with(read_aloud).await;
    let v = app
        .started(proto::StartVerificationRequest {
            fallback: Some(workflow(
                &[
                    proto::Channel::Sms,
                    proto::Channel::Voice,
                    proto::Channel::Sms,
                ],
                STEP,
            )),
            ..sms_to(TO)
        })
        .await;
    app.clock.advance(STEP_AND_SCAN);
    sends_reach(&app.outbox, &v.id, 2).await;
    app.clock.advance(STEP_AND_SCAN);
    let lines = sends_reach(&app.outbox, &v.id, 3).await;
    let channels: Vec<String> = lines.iter().map(|l| channel_of(l)).collect();
    assert_eq!(channels, ["sms", "voice", "sms"]);
    let codes: Vec<String> = lines.iter().map(|l| code_of(l)).collect();
    let read = app.get(&v.id).await.expect("get");
    assert_eq!(read.fallback.expect("workflow").step, 2);

    // The first step's code is two steps back: no longer checked.
    let first = app.check(&v.id, &codes[0]).await.expect("check");
    if codes[0] != codes[1] && codes[0] != codes[2] {
        assert!(!first.approved, "at most two codes check");
    }
    // The second step's still does.
    let second = app.check(&v.id, &codes[1]).await.expect("check");
    assert!(second.approved);
    app.stop().await;
}

#[tokio::test]
async fn a_verification_that_ends_before_its_step_sends_no_more() {
    let app = spawn_app_with(read_aloud).await;
    let approved = app.started(sms_then_voice()).await;
    let code = app.outbox.code_for(&approved.id);
    assert!(
        app.check(&approved.id, &code)
            .await
            .expect("check")
            .approved
    );
    // A control on another number, due at the same time.
    let control = app
        .started(proto::StartVerificationRequest {
            to: "+14155550199".into(),
            ..sms_then_voice()
        })
        .await;
    app.clock.advance(STEP_AND_SCAN);
    sends_reach(&app.outbox, &control.id, 2).await;
    assert_eq!(app.outbox.sent_count(&approved.id), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_resend_the_caller_asks_for_ends_the_workflow() {
    let app = spawn_app_with(read_aloud).await;
    let v = app.started(sms_then_voice()).await;
    app.clock.advance(Duration::from_secs(30));
    let resent = app.resent(resend_on(&v.id, proto::Channel::Sms)).await;
    let state = resent.fallback.expect("the workflow is still shown");
    assert_eq!((state.step, state.next_step_at), (0, None));
    app.stop().await;
}

#[tokio::test]
async fn a_workflow_that_cannot_run_is_refused_naming_its_field() {
    let app = spawn_app_with(read_aloud).await;
    let sms = proto::Channel::Sms;
    let voice = proto::Channel::Voice;
    let cases = [
        (sms_to(TO), workflow(&[sms, sms], STEP), "fallback.channels"),
        (
            sms_to(TO),
            workflow(&[voice, sms], STEP),
            "fallback.channels",
        ),
        (
            sms_to(TO),
            workflow(&[sms, proto::Channel::Email], STEP),
            "fallback.channels",
        ),
        (
            sms_to(TO),
            workflow(&[sms, voice], Duration::from_secs(10)),
            "fallback.step_timeout",
        ),
        (
            sms_to(TO),
            workflow(&[sms, voice], Duration::from_secs(3_600)),
            "fallback.step_timeout",
        ),
        (
            proto::StartVerificationRequest {
                channel: voice.into(),
                extension: "4711".into(),
                to: "+14155550123".into(),
                ..sms_to(TO)
            },
            workflow(&[voice, sms], STEP),
            "fallback.channels",
        ),
    ];
    for (request, fallback, named) in cases {
        let err = app
            .start(proto::StartVerificationRequest {
                fallback: Some(fallback.clone()),
                ..request
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{fallback:?}: {err:?}");
        assert_eq!(violated_fields(&err), [named], "{fallback:?}");
    }
    assert_eq!(app.outbox.total_sent(), 0, "nothing was sent");
    app.stop().await;
}

#[tokio::test]
async fn the_tenants_default_runs_unless_the_start_asks_for_none() {
    let app = spawn_app_with(|c| {
        read_aloud(c);
        c.fallback = FallbackConfig {
            channels: vec![
                verifyd::service::tenants::ChannelName::Sms,
                verifyd::service::tenants::ChannelName::Voice,
            ],
            step_timeout: Duration::from_secs(45),
        };
    })
    .await;
    let by_default = app.started(sms_to(TO)).await;
    let state = by_default.fallback.expect("the default");
    assert_eq!(
        state.workflow.expect("workflow").step_timeout,
        Some(Duration::from_secs(45).try_into().expect("duration"))
    );
    app.clock.advance(Duration::from_secs(300));
    let none = app
        .started(proto::StartVerificationRequest {
            fallback: Some(proto::Fallback::default()),
            ..sms_to("+14155550101")
        })
        .await;
    assert_eq!(none.fallback, None);
    // A call does not begin where the default does.
    let call = app
        .started(proto::StartVerificationRequest {
            channel: proto::Channel::Voice.into(),
            ..sms_to("+14155550102")
        })
        .await;
    assert_eq!(call.fallback, None);
    app.stop().await;
}

#[tokio::test]
async fn an_undelivered_text_brings_the_call_forward_to_the_resend_wait() {
    let fake = FakeTwilio::start().await;
    let message = sid("SM", 31);
    fake.accept(&message).await;
    let app = spawn_app_with(|c| {
        with_twilio(c, &[("twilio", &fake)]);
        read_aloud(c);
    })
    .await;
    let v = app
        .started(proto::StartVerificationRequest {
            fallback: Some(workflow(
                &[proto::Channel::Sms, proto::Channel::Voice],
                Duration::from_secs(300),
            )),
            ..sms_to(TO)
        })
        .await;
    app.clock.advance(Duration::from_secs(5));
    let report = [
        ("MessageSid", message.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    assert_eq!(callback(&app, &v.id, &report, Some(AUTH_TOKEN)).await, 204);
    let hastened = app.get(&v.id).await.expect("get");
    let due = hastened
        .fallback
        .expect("workflow")
        .next_step_at
        .expect("still due");
    assert_eq!(
        due.seconds,
        v.created_at.expect("created").seconds + 30,
        "as soon as the 30 s resend wait allows, not in 5 minutes"
    );
    app.clock.advance(Duration::from_secs(25 + 20));
    let lines = sends_reach(&app.outbox, &v.id, 1).await;
    assert_eq!(channel_of(&lines[0]), "voice", "the text went by Twilio");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_run_a_step_once() {
    let redis = tokio::task::block_in_place(RedisServer::start);
    let clock = test_clock();
    let config = || {
        let mut config = test_config();
        use_redis(&mut config, &[redis.url()]);
        read_aloud(&mut config);
        config
    };
    let first = spawn(config(), clock.clone()).await;
    let second = spawn(config(), clock.clone()).await;
    let v = first.started(sms_then_voice()).await;
    let voice_sends = |apps: &[&TestApp]| -> usize {
        apps.iter()
            .flat_map(|a| a.outbox.lines_for(&v.id))
            .filter(|l| channel_of(l) == "voice")
            .count()
    };
    clock.advance(STEP_AND_SCAN);
    let began = Instant::now();
    while voice_sends(&[&first, &second]) == 0 {
        assert!(began.elapsed() < Duration::from_secs(10), "no step ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another scan round on both replicas, with a control step to wait
    // for: the step does not run again.
    let control = second
        .started(proto::StartVerificationRequest {
            to: "+14155550199".into(),
            ..sms_then_voice()
        })
        .await;
    clock.advance(STEP_AND_SCAN);
    let began = Instant::now();
    while first.outbox.sent_count(&control.id) + second.outbox.sent_count(&control.id) < 2 {
        assert!(began.elapsed() < Duration::from_secs(10), "no control step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(voice_sends(&[&first, &second]), 1, "one call, one replica");
    let read = second.get(&v.id).await.expect("get");
    assert_eq!(read.send_attempts.len(), 2);
    assert_eq!(status(&read), VerificationStatus::Pending);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_step_due_a_redis_claims_length_after_the_one_before_still_runs() {
    // The second step claims its deadline entry for 30 s and schedules
    // the third 30 s on: the same score, which once read as "handled".
    let app = spawn_app_with(|c| {
        read_aloud(c);
        c.code.resend_cooldown = Duration::from_secs(15);
    })
    .await;
    let v = app
        .started(proto::StartVerificationRequest {
            fallback: Some(workflow(
                &[
                    proto::Channel::Sms,
                    proto::Channel::Voice,
                    proto::Channel::Sms,
                ],
                Duration::from_secs(30),
            )),
            ..sms_to(TO)
        })
        .await;
    app.clock.advance(Duration::from_secs(30));
    sends_reach(&app.outbox, &v.id, 2).await;
    app.clock.advance(Duration::from_secs(30));
    let lines = sends_reach(&app.outbox, &v.id, 3).await;
    assert_eq!(channel_of(&lines[2]), "sms");
    app.stop().await;
}

#[tokio::test]
async fn a_read_aloud_step_keeps_the_texts_code_beside_the_one_it_says() {
    let (app, fake) = crate::voice::voice_app_with(read_aloud).await;
    let v = app.started(sms_then_voice()).await;
    let texted = app.outbox.code_for(&v.id);
    app.clock.advance(STEP_AND_SCAN);
    let began = Instant::now();
    while fake.placed_calls().await.is_empty() {
        assert!(began.elapsed() < Duration::from_secs(10), "no call placed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let phone = crate::voice::Phone::picked_up(&app, &fake).await;
    let asked = phone.answer("human").await;
    let said = phone
        .press(&asked.gather.expect("a key is asked for"), "#")
        .await;
    let spoken = crate::voice::said_code(&said).expect("a code is said");
    assert_ne!(spoken, texted);
    // The user who was still reading the text is not locked out.
    let checked = app.check(&v.id, &texted).await.expect("check");
    assert!(checked.approved, "the text's code checks beside the call's");
    app.stop().await;
}
