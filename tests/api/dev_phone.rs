//! Dev mode's simulated phone: calls ring it instead of Twilio, and what a
//! person does on it reaches verifyd through the production webhook routes,
//! signed as Twilio signs them. The test is the person: it answers and
//! presses keys through the phone's own methods, as its page does.

use std::time::Duration;

use verifyd::{
    config::Config,
    delivery::dev_phone::{Call, DevPhone, End, Line, State},
    proto::{self, VerificationStatus},
};

use crate::{
    fake_twilio::{AUTH_TOKEN, sign},
    helpers::{TestApp, spawn_app_with, status},
    voice::{call, twilio_provider},
};

/// Dev mode, with the console on every channel and the webhook listener on
/// an ephemeral loopback port.
fn dev_mode(config: &mut Config) {
    config.dev_mode = true;
    config.webhooks.addr = "127.0.0.1:0".parse().expect("addr");
}

async fn dev_app() -> (TestApp, DevPhone) {
    let app = spawn_app_with(dev_mode).await;
    let phone = app
        .phone
        .clone()
        .expect("dev mode rings the simulated phone");
    (app, phone)
}

/// The newest call on the phone.
fn newest(phone: &DevPhone) -> Call {
    phone.calls().into_iter().next().expect("a call rang")
}

fn said(call: &Call) -> String {
    call.transcript
        .iter()
        .filter_map(|line| match line {
            Line::Said(text) => Some(text.as_str()),
            Line::Pressed(_) => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// verifyd ends calls from a background task: waits for the phone to see it.
async fn ended(phone: &DevPhone, sid: &str) -> Call {
    for _ in 0..500 {
        let call = phone
            .calls()
            .into_iter()
            .find(|c| c.sid == sid)
            .expect("the call");
        if !call.is_live() {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the call {sid} never ended");
}

/// A call in `mode` to the test number, after the least gap since the
/// last one (well within a code's life).
async fn start(app: &TestApp, mode: proto::VoiceMode) -> proto::StartVerificationResponse {
    app.clock.advance(Duration::from_secs(120));
    app.client
        .clone()
        .start_verification(call(mode))
        .await
        .expect("started")
        .into_inner()
}

/// The id of a call started as [`start`] starts it.
async fn started(app: &TestApp, mode: proto::VoiceMode) -> String {
    start(app, mode).await.verification.expect("v").id
}

#[tokio::test]
async fn press_pound_on_the_simulated_phone_approves_through_the_webhooks() {
    let (app, phone) = dev_app().await;
    let v = start(&app, proto::VoiceMode::Confirm)
        .await
        .verification
        .expect("v");
    let attempt = v.send_attempts.last().expect("an attempt");
    assert_eq!(attempt.provider, DevPhone::PROVIDER);
    let ringing = newest(&phone);
    assert_eq!(ringing.state, State::Ringing);
    // The console says where the call rings, and says no code.
    let line = app.outbox.lines_for(&v.id).pop().expect("a console line");
    assert!(
        line.contains(&format!("answer it at {}", phone.page())),
        "{line}"
    );
    assert!(!line.contains("code="), "{line}");

    phone.answer(&ringing.sid, false).await.expect("answered");
    let asking = newest(&phone);
    assert!(asking.waits_for_keys(), "{asking:?}");
    assert!(
        said(&asking).contains("press the pound key"),
        "{}",
        said(&asking)
    );
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Pending,
        "answering approves nothing"
    );

    phone.press(&ringing.sid, '#').await.expect("pressed");
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Approved
    );
    let done = newest(&phone);
    assert_eq!(
        done.state,
        State::Ended(End::Finished),
        "verifyd's TwiML hung up"
    );
    // The answered status went back on the status callback (the final
    // one came after the approval, which late callbacks do not change).
    let after = app.get(&v.id).await.expect("get");
    let attempt = after.send_attempts.last().expect("attempt");
    assert_eq!(attempt.provider_status, "in-progress");
    app.stop().await;
}

#[tokio::test]
async fn number_matching_and_a_read_aloud_code_work_on_the_simulated_phone() {
    let (app, phone) = dev_app().await;
    let matching = start(&app, proto::VoiceMode::Match).await;
    let id = matching.verification.expect("v").id;
    let sid = newest(&phone).sid;
    phone.answer(&sid, false).await.expect("answered");
    for key in matching.match_digits.chars().chain(['#']) {
        phone.press(&sid, key).await.expect("pressed");
    }
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Approved,
        "the digits shown on screen, keyed in, approve"
    );

    let id = started(&app, proto::VoiceMode::Code).await;
    let sid = newest(&phone).sid;
    phone.answer(&sid, false).await.expect("answered");
    assert!(!said(&newest(&phone)).chars().any(|c| c.is_ascii_digit()));
    phone.press(&sid, '1').await.expect("pressed");
    // The code is said digit by digit (twice, then how long it lasts):
    // typed back, it approves.
    let heard: String = said(&newest(&phone))
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    let checked = app.check(&id, &heard).await.expect("checked");
    assert!(checked.approved);
    // A decided verification's call is ended through the provider.
    let call = ended(&phone, &sid).await;
    assert_eq!(call.state, State::Ended(End::EndedByVerifyd));
    app.stop().await;
}

#[tokio::test]
async fn cancel_and_supersede_hang_the_phone_up_and_the_fraud_key_denies() {
    let (app, phone) = dev_app().await;
    let id = started(&app, proto::VoiceMode::Confirm).await;
    let first = newest(&phone).sid;
    phone.answer(&first, false).await.expect("answered");
    app.cancel(&id).await.expect("canceled");
    assert_eq!(
        ended(&phone, &first).await.state,
        State::Ended(End::EndedByVerifyd)
    );
    assert_eq!(
        phone.press(&first, '#').await,
        Err(verifyd::delivery::dev_phone::PhoneError::NotNow),
        "a hung-up phone takes no keys"
    );

    // A new start for the number supersedes the pending one, whose call
    // (still ringing) stops.
    let superseded = started(&app, proto::VoiceMode::Confirm).await;
    let ringing = newest(&phone).sid;
    let id = started(&app, proto::VoiceMode::Confirm).await;
    assert_eq!(
        ended(&phone, &ringing).await.state,
        State::Ended(End::EndedByVerifyd)
    );
    assert_eq!(
        status(&app.get(&superseded).await.expect("get")),
        VerificationStatus::Superseded
    );

    // 0 opens the fraud report; # files it.
    let sid = newest(&phone).sid;
    phone.answer(&sid, false).await.expect("answered");
    phone.press(&sid, '0').await.expect("pressed");
    phone.press(&sid, '#').await.expect("pressed");
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Denied
    );
    app.stop().await;
}

#[tokio::test]
async fn a_declined_call_and_voicemail_approve_nothing() {
    let (app, phone) = dev_app().await;
    let id = started(&app, proto::VoiceMode::Confirm).await;
    let sid = newest(&phone).sid;
    phone.hang_up(&sid).await.expect("declined");
    let v = app.get(&id).await.expect("get");
    assert_eq!(status(&v), VerificationStatus::Pending);
    assert_eq!(
        v.send_attempts.last().expect("attempt").provider_status,
        "busy"
    );

    let id = started(&app, proto::VoiceMode::Code).await;
    let sid = newest(&phone).sid;
    phone.answer(&sid, true).await.expect("voicemail answered");
    // A machine hears no question and no code; verifyd hangs up.
    let call = ended(&phone, &sid).await;
    assert!(
        !said(&call).chars().any(|c| c.is_ascii_digit()),
        "{}",
        said(&call)
    );
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Pending
    );
    app.stop().await;
}

/// A twilio provider beside the phone, on no route: only its webhook
/// routes matter here.
fn with_a_twilio_provider(config: &mut Config) {
    dev_mode(config);
    config
        .providers
        .insert("twilio".into(), twilio_provider("http://127.0.0.1:9/"));
}

#[tokio::test]
async fn a_bad_signature_on_the_phones_path_is_refused_exactly_like_twilios() {
    let app = spawn_app_with(with_a_twilio_provider).await;
    let phone = app.phone.clone().expect("the phone");
    let v = app
        .client
        .clone()
        .start_verification(call(proto::VoiceMode::Confirm))
        .await
        .expect("started")
        .into_inner()
        .verification
        .expect("v");
    let sid = newest(&phone).sid;
    let base = phone.page().join("/").expect("base");
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for provider in [DevPhone::PROVIDER, "twilio"] {
        let url = format!(
            "{base}webhooks/twilio/{provider}/voice/gather?tenant=default&verification={}&token={}&menu=main&step=0",
            v.id,
            "a".repeat(32)
        );
        let form = [("CallSid", sid.as_str()), ("Digits", "#")];
        // The phone's path signed with Twilio's auth token, which is valid
        // on Twilio's path only; Twilio's path with a signature of nothing.
        let signature = if provider == "twilio" {
            "bm90IHRoZSBzaWduYXR1cmU=".to_owned()
        } else {
            sign(AUTH_TOKEN, &url, &form.into_iter().collect())
        };
        let response = http
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .form(&form)
            .send()
            .await
            .expect("answered");
        answers.push((
            response.status().as_u16(),
            response.text().await.expect("body"),
        ));
    }
    assert_eq!(answers[0], (403, "invalid signature\n".to_owned()));
    assert_eq!(answers[0], answers[1], "the same refusal on both paths");
    let metrics = app.metrics().await;
    for provider in [DevPhone::PROVIDER, "twilio"] {
        assert_eq!(
            metrics.count(&format!(
                "verifyd_webhooks_refused_total{{provider=\"{provider}\",reason=\"signature\"}}"
            )),
            1.0,
            "{provider}"
        );
    }
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Pending
    );
    app.stop().await;
}

#[tokio::test]
async fn outside_dev_mode_there_is_no_simulated_phone() {
    let app = spawn_app_with(|c| {
        c.webhooks.addr = "127.0.0.1:0".parse().expect("addr");
        c.webhooks.public_base_url = Some("http://127.0.0.1:9/".parse().expect("url"));
    })
    .await;
    assert!(app.phone.is_none());
    let page = format!("http://{}/dev/phone", app.webhook_addr.expect("webhooks"));
    let response = reqwest::get(&page).await.expect("answered");
    assert_eq!(response.status().as_u16(), 404);
    app.stop().await;
}

#[tokio::test]
async fn the_phones_page_answers_this_machine_and_its_own_forms_only() {
    let (app, phone) = dev_app().await;
    start(&app, proto::VoiceMode::Confirm).await;
    let sid = newest(&phone).sid;
    let page = phone.page().to_string();
    let http = reqwest::Client::new();
    let shown = http
        .get(&page)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    let csrf = shown
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's token")
        .to_owned();
    let act = format!("{page}/calls/{sid}");
    let answer = |token: &str| [("csrf", token.to_owned()), ("action", "answer".to_owned())];
    let status = |response: reqwest::Response| response.status().as_u16();

    // Another host (DNS rebinding), or a request a proxy forwarded.
    let rebound = http
        .get(&page)
        .header("Host", "phone.attacker.example")
        .send()
        .await;
    assert_eq!(status(rebound.expect("answered")), 421);
    let tunneled = http
        .get(&page)
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await;
    assert_eq!(status(tunneled.expect("answered")), 421);
    let forwarded = http
        .post(&act)
        .header("Forwarded", "for=203.0.113.9")
        .form(&answer(&csrf))
        .send()
        .await;
    assert_eq!(status(forwarded.expect("answered")), 421);
    // A form without the page's token, or posted from another site.
    let forged = http
        .post(&act)
        .form(&answer("0".repeat(32).as_str()))
        .send()
        .await;
    assert_eq!(status(forged.expect("answered")), 403);
    let cross_site = http
        .post(&act)
        .header("Sec-Fetch-Site", "cross-site")
        .form(&answer(&csrf))
        .send()
        .await;
    assert_eq!(status(cross_site.expect("answered")), 403);
    assert_eq!(
        newest(&phone).state,
        State::Ringing,
        "none of them answered"
    );

    let own = http
        .post(&act)
        .form(&answer(&csrf))
        .send()
        .await
        .expect("answered");
    assert_eq!(status(own), 200, "the page again, after the redirect");
    assert!(newest(&phone).waits_for_keys());
    app.stop().await;
}

#[tokio::test]
async fn dev_mode_behind_a_public_url_has_no_phone_and_twilio_gets_no_loopback_url() {
    // A tunnel's URL: the page (which shows codes) is not served there.
    let app = spawn_app_with(|c| {
        dev_mode(c);
        c.webhooks.public_base_url = Some("https://dev.example.com/".parse().expect("url"));
    })
    .await;
    assert!(app.phone.is_none());
    app.stop().await;

    // Twilio on the voice route with no public URL still stops startup:
    // the phone's loopback address is the phone's alone.
    let mut config = crate::helpers::test_config();
    with_a_twilio_provider(&mut config);
    config.delivery.voice = vec!["twilio".into()];
    let built = verifyd::app::Application::build(config).await;
    let error = built.expect_err("no URL for Twilio's calls").to_string();
    assert!(error.contains("webhooks.public_base_url"), "{error}");
}
