//! Voice calls end to end, with the test playing Twilio: it takes the Calls
//! API request, fetches the call's TwiML with signed requests, parses the
//! XML, posts the keys to the gather action, and sends call status
//! callbacks, as Twilio's documented Gather behaviour describes.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tokio_stream::StreamExt as _;
use tonic::Code;
use verifyd::{
    config::Config,
    delivery::config::ProviderConfig,
    domain::VoiceMode,
    proto::{self, DeliveryStatus, VerificationStatus},
};

use crate::{
    fake_twilio::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio, sid, sign},
    helpers::{TestApp, resend_on, spawn_app_with, status},
};

pub(crate) const PUBLIC_BASE: &str = "https://verifyd.example.com/";
const TO: &str = "+14155550100";

pub(crate) fn with_voice(config: &mut Config, fake: &FakeTwilio) {
    config
        .providers
        .insert("twilio".into(), twilio_provider(&fake.server.uri()));
    config.delivery.voice = vec!["twilio".into()];
    config.webhooks.addr = "127.0.0.1:0".parse().expect("addr");
    config.webhooks.public_base_url = Some(PUBLIC_BASE.parse().expect("url"));
}

/// The test account's Twilio provider ([`crate::twilio::twilio`]), its
/// API at `base_url`, ringing 25 s (the Calls API test reads it back).
pub(crate) fn twilio_provider(base_url: &str) -> ProviderConfig {
    let ProviderConfig::Twilio(mut twilio) = crate::twilio::twilio(base_url) else {
        unreachable!("a Twilio provider");
    };
    twilio.ring_timeout = Duration::from_secs(25);
    ProviderConfig::Twilio(twilio)
}

pub(crate) fn call(mode: proto::VoiceMode) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        to: TO.into(),
        channel: proto::Channel::Voice.into(),
        purpose: proto::Purpose::PasswordReset.into(),
        voice_mode: mode.into(),
        ..Default::default()
    }
}

/// The parts of a TwiML document a caller hears and does.
#[derive(Debug, Default)]
pub(crate) struct Twiml {
    pub(crate) says: Vec<String>,
    pub(crate) gather: Option<GatherEl>,
    pub(crate) hangup: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct GatherEl {
    pub(crate) action: String,
    num_digits: Option<String>,
    finish_on_key: Option<String>,
    pub(crate) prompt: String,
}

fn parse(xml: &str) -> Twiml {
    let doc =
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("TwiML parses: {e}: {xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response");
    let mut twiml = Twiml::default();
    for verb in root.children().filter(roxmltree::Node::is_element) {
        match verb.tag_name().name() {
            "Say" => twiml.says.push(verb.text().unwrap_or_default().to_owned()),
            "Gather" => {
                assert_eq!(verb.attribute("input"), Some("dtmf"));
                let prompt = verb
                    .children()
                    .find(|n| n.has_tag_name("Say"))
                    .and_then(|n| n.text())
                    .unwrap_or_default()
                    .to_owned();
                twiml.gather = Some(GatherEl {
                    action: verb.attribute("action").expect("an action").to_owned(),
                    num_digits: verb.attribute("numDigits").map(str::to_owned),
                    finish_on_key: verb.attribute("finishOnKey").map(str::to_owned),
                    prompt,
                });
            }
            "Hangup" => twiml.hangup = true,
            "Pause" => {}
            other => panic!("unexpected verb {other}"),
        }
    }
    twiml
}

/// The callee's phone, as Twilio sees it.
pub(crate) struct Phone {
    webhooks: SocketAddr,
    call_sid: String,
    pub(crate) form: Vec<(String, String)>,
}

impl Phone {
    /// Picks up the call the app placed last.
    pub(crate) async fn picked_up(app: &TestApp, fake: &FakeTwilio) -> Self {
        Self::picked_up_at(app.webhook_addr.expect("webhooks"), fake).await
    }

    /// Picks up the call placed last by the verifyd whose webhook listener
    /// is at `webhooks`.
    pub(crate) async fn picked_up_at(webhooks: SocketAddr, fake: &FakeTwilio) -> Self {
        Self {
            webhooks,
            call_sid: sid("CA", 1),
            form: fake.placed_calls().await.pop().expect("a call was placed"),
        }
    }

    /// The per-call token verifyd put in the URLs it gave Twilio.
    pub(crate) fn call_token(&self) -> String {
        let url: url::Url = self
            .field("Url")
            .expect("the call fetches its TwiML")
            .parse()
            .expect("a URL");
        url.query_pairs()
            .find(|(name, _)| name == "token")
            .map(|(_, token)| token.into_owned())
            .expect("the URL carries the call token")
    }

    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Posts `params` to a URL verifyd gave Twilio, signed for that public
    /// URL, but sent to the pod through a proxy with another Host.
    async fn post(
        &self,
        public_url: &str,
        params: &[(&str, &str)],
        token: Option<&str>,
    ) -> (u16, String) {
        let path = public_url.strip_prefix(PUBLIC_BASE).expect("a public URL");
        let mut all: BTreeMap<&str, &str> = params.iter().copied().collect();
        all.insert("CallSid", &self.call_sid);
        all.insert("AccountSid", ACCOUNT_SID);
        all.insert("From", FROM);
        all.insert("To", TO);
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/{path}", self.webhooks))
            .header("Host", "verifyd-7f9c.pod.internal:8080")
            .form(&all);
        if let Some(token) = token {
            request = request.header("X-Twilio-Signature", sign(token, public_url, &all));
        }
        let response = request.send().await.expect("webhook answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub(crate) async fn answer(&self, answered_by: &str) -> Twiml {
        let url = self.field("Url").expect("the call fetches its TwiML");
        let (status, body) = self
            .post(
                url,
                &[("CallStatus", "in-progress"), ("AnsweredBy", answered_by)],
                Some(AUTH_TOKEN),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        parse(&body)
    }

    pub(crate) async fn press(&self, gather: &GatherEl, digits: &str) -> Twiml {
        let (status, body) = self
            .post(
                &gather.action,
                &[("Digits", digits), ("CallStatus", "in-progress")],
                Some(AUTH_TOKEN),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        parse(&body)
    }

    pub(crate) async fn report(&self, call_status: &str) -> u16 {
        let url = self.field("StatusCallback").expect("a status callback");
        self.post(url, &[("CallStatus", call_status)], Some(AUTH_TOKEN))
            .await
            .0
    }
}

/// Waits (bounded) for verifyd to end the call through the Calls API: it
/// does so in the background, after answering the RPC.
pub(crate) async fn assert_call_ended(fake: &FakeTwilio, phone: &Phone) {
    let ended = vec![("Status".to_owned(), "completed".to_owned())];
    for _ in 0..200 {
        let updates = fake.call_updates(&phone.call_sid).await;
        if !updates.is_empty() {
            assert_eq!(updates, [ended]);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the call was not ended");
}

/// Starts a call through the app and picks up the phone.
async fn ring(
    app: &TestApp,
    fake: &FakeTwilio,
    req: proto::StartVerificationRequest,
) -> (proto::StartVerificationResponse, Phone) {
    let started = app.start(req).await.expect("start");
    (started, Phone::picked_up(app, fake).await)
}

async fn voice_app() -> (TestApp, FakeTwilio) {
    voice_app_with(|_| {}).await
}

/// A server that calls through a fake Twilio, configured further.
pub(crate) async fn voice_app_with(configure: impl FnOnce(&mut Config)) -> (TestApp, FakeTwilio) {
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 1)).await;
    let app = spawn_app_with(|c| {
        with_voice(c, &fake);
        configure(c);
    })
    .await;
    (app, fake)
}

#[tokio::test]
async fn pound_approves_and_watchers_see_it_at_once() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Unspecified)).await;
    let v = started.verification.expect("v");
    assert_eq!(
        v.voice_mode,
        i32::from(proto::VoiceMode::Confirm),
        "CONFIRM by default"
    );
    assert_eq!(v.send_attempts[0].provider, "twilio");

    // The Calls API request, field by field.
    let fields = |name: &str| -> Vec<&str> {
        phone
            .form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(fields("To"), [TO]);
    assert_eq!(fields("From"), [FROM]);
    assert_eq!(fields("Timeout"), ["25"]);
    assert_eq!(
        fields("TimeLimit"),
        ["120"],
        "never Twilio's default of 4 hours"
    );
    assert_eq!(fields("MachineDetection"), ["Enable"]);
    assert_eq!(
        fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(fields("StatusCallbackMethod"), ["POST"]);
    assert!(
        fields("Twiml").is_empty(),
        "press-# calls fetch their instructions"
    );
    let url = phone.field("Url").expect("Url");
    assert!(
        url.starts_with(&format!("{PUBLIC_BASE}webhooks/twilio/twilio/voice/twiml?")),
        "{url}"
    );
    assert!(url.contains(&format!("verification={}", v.id)));
    assert!(
        url.contains("token="),
        "an unguessable token bound to the call"
    );

    let mut watch = app.watch(&v.id).await.expect("watch");
    watch.next().await.expect("current").expect("ok");

    let twiml = phone.answer("human").await;
    let gather = twiml.gather.expect("a gather");
    assert_eq!(gather.num_digits.as_deref(), Some("1"));
    assert_eq!(
        gather.finish_on_key.as_deref(),
        Some(""),
        "# arrives as a key"
    );
    assert!(gather.prompt.contains("pound key"), "{}", gather.prompt);
    assert!(twiml.hangup, "no input ends the call after the gather");

    let after = phone.press(&gather, "#").await;
    assert!(after.hangup && after.gather.is_none());
    let update = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("pushed")
        .expect("update")
        .expect("ok")
        .verification
        .expect("v");
    assert_eq!(status(&update), VerificationStatus::Approved);

    // A replayed keypress after the end is refused and changes nothing.
    let press = [("Digits", "0"), ("CallStatus", "in-progress")];
    let (replayed, _) = phone.post(&gather.action, &press, Some(AUTH_TOKEN)).await;
    assert_eq!(replayed, 403, "the call has moved past that gather");
    assert_eq!(
        status(&app.get(&v.id).await.expect("get")),
        VerificationStatus::Approved
    );
    app.stop().await;
}

#[tokio::test]
async fn other_keys_reprompt_twice_then_the_call_ends_with_nothing_approved() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let id = started.verification.expect("v").id;
    let mut gather = phone.answer("human").await.gather.expect("gather");
    for _ in 0..2 {
        let twiml = phone.press(&gather, "5").await;
        gather = twiml.gather.expect("asked again");
        assert!(gather.prompt.starts_with("Sorry"), "{}", gather.prompt);
    }
    let end = phone.press(&gather, "5").await;
    assert!(end.gather.is_none() && end.hangup);
    assert!(end.says[0].contains("nothing was changed"));
    let v = app.get(&id).await.expect("get");
    assert_eq!(
        status(&v),
        VerificationStatus::Pending,
        "the user can resend"
    );
    assert_eq!(v.check_attempts_remaining, 5);
    // A press-# call delivers no code, so no code can approve it.
    for guess in ["000000", "123456", "999999"] {
        assert!(!app.check(&id, guess).await.expect("check").approved);
    }

    // The call completes; the attempt says so and the verification waits.
    assert_eq!(phone.report("completed").await, 204);
    let v = app.get(&id).await.expect("get");
    assert_eq!(v.send_attempts[0].provider_status, "completed");
    assert_eq!(v.check_attempts_remaining, 2);
    assert_eq!(status(&v), VerificationStatus::Pending);
    app.stop().await;
}

#[tokio::test]
async fn number_matching_needs_the_exact_digits_and_wrong_ones_cost_an_attempt() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Match)).await;
    let digits = started.match_digits.clone();
    let id = started.verification.expect("v").id;
    assert_eq!(digits.len(), 2);
    let gather = phone.answer("human").await.gather.expect("gather");
    assert_eq!(gather.num_digits, None, "keys until #");
    assert_eq!(gather.finish_on_key.as_deref(), Some("#"));
    assert!(
        !gather.prompt.contains(&digits),
        "the call never says the digits"
    );

    let wrong = if digits == "99" { "98" } else { "99" };
    let retry = phone
        .press(&gather, wrong)
        .await
        .gather
        .expect("asked again");
    assert_eq!(app.get(&id).await.expect("get").check_attempts_remaining, 4);
    let done = phone.press(&retry, &digits).await;
    assert!(done.hangup);
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Approved
    );
    app.stop().await;
}

#[tokio::test]
async fn the_voice_mode_policy_sets_the_default_and_refuses_other_modes_before_any_call() {
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 1)).await;
    let app = spawn_app_with(|c| {
        with_voice(c, &fake);
        c.voice.modes = vec![VoiceMode::Match, VoiceMode::Code].into();
        c.voice.default_mode = VoiceMode::Match;
    })
    .await;

    let refused = app
        .start(call(proto::VoiceMode::Confirm))
        .await
        .expect_err("press # is not allowed");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("voice_mode"), "{refused:?}");
    assert!(fake.placed_calls().await.is_empty(), "nothing was placed");

    let started = app
        .start(call(proto::VoiceMode::Unspecified))
        .await
        .expect("the default mode");
    let v = started.verification.expect("v");
    assert_eq!(v.voice_mode, i32::from(proto::VoiceMode::Match));
    assert_eq!(started.match_digits.len(), 2, "digits to show");

    // A resend is held to the same policy.
    app.clock.advance(Duration::from_secs(30));
    let refused = app
        .resend(proto::ResendVerificationRequest {
            voice_mode: proto::VoiceMode::Confirm.into(),
            ..resend_on(&v.id, proto::Channel::Voice)
        })
        .await
        .expect_err("press # is not allowed on a resend either");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("voice_mode"), "{refused:?}");
    assert_eq!(fake.placed_calls().await.len(), 1, "no second call");
    app.stop().await;
}

#[tokio::test]
async fn a_resend_to_a_number_reported_as_fraud_is_refused_as_a_start_is() {
    let (app, fake) = voice_app().await;
    // An enrollment by SMS is pending for the number...
    let mut enroll = call(proto::VoiceMode::Unspecified);
    enroll.channel = proto::Channel::Sms.into();
    enroll.purpose = proto::Purpose::Enrollment.into();
    let pending = app.started(enroll).await;
    // ... when a reset call to it is reported as fraud.
    app.clock.advance(Duration::from_secs(30));
    let (_, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let gather = phone.answer("human").await.gather.expect("gather");
    let menu = phone.press(&gather, "0").await.gather.expect("fraud menu");
    assert!(phone.press(&menu, "#").await.hangup);

    let refused = app
        .resend(resend_on(&pending.id, proto::Channel::Sms))
        .await
        .expect_err("the number is blocked");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(crate::helpers::retry_after(&refused).is_some());
    app.stop().await;
}

/// The code a read-aloud step says: the digits between "code is" and the
/// sentence's end.
pub(crate) fn said_code(twiml: &Twiml) -> Option<String> {
    let spoken = twiml.says.join(" ");
    let code: String = spoken
        .split("code is")
        .nth(1)?
        .chars()
        .take_while(|c| *c != '.')
        .filter(char::is_ascii_digit)
        .collect();
    Some(code)
}

/// Whether anything a step says or prompts holds a digit.
fn says_a_digit(twiml: &Twiml) -> bool {
    let prompt = twiml.gather.as_ref().map(|g| g.prompt.as_str());
    twiml
        .says
        .iter()
        .map(String::as_str)
        .chain(prompt)
        .any(|text| text.chars().any(|c| c.is_ascii_digit()))
}

#[tokio::test]
async fn a_read_aloud_call_says_a_code_only_once_a_key_asks_and_each_key_says_a_new_one() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Code)).await;
    let id = started.verification.expect("v").id;
    // The call fetches its instructions, as Twilio's description allows,
    // and carries nothing a code could be in.
    crate::fake_twilio::assert_conforms("CreateCall", &phone.form);
    assert!(phone.field("Twiml").is_none(), "nothing inline");
    assert!(phone.field("Url").is_some());
    let run_of_six = |v: &str| {
        v.as_bytes()
            .windows(6)
            .any(|w| w.iter().all(u8::is_ascii_digit))
    };
    // Six digits in a row anywhere but the numbers, the id and the token
    // (random hex, which may hold such a run) could be a code.
    let token = phone.call_token();
    assert!(
        !phone.form.iter().any(|(k, v)| {
            let v = v.replace(&id, "").replace(&token, "");
            k != "To" && k != "From" && run_of_six(&v)
        }),
        "{:?}",
        phone.form
    );

    // Answered by a person: asked to press a key, told no code yet.
    let asked = phone.answer("human").await;
    assert!(!says_a_digit(&asked), "{asked:?}");
    let gather = asked.gather.expect("a key is asked for");
    assert_eq!(gather.num_digits.as_deref(), Some("1"));
    assert!(
        gather.prompt.contains("hear your verification code"),
        "{}",
        gather.prompt
    );

    // Each key says a new code, swapped in as it is said; each spends a
    // re-prompt: the opening question's answer and two more (the default).
    let mut codes = Vec::new();
    let mut next = gather;
    loop {
        let step = phone.press(&next, "#").await;
        let code = said_code(&step).expect("a code is said");
        assert_eq!(code.len(), 6, "{step:?}");
        codes.push(code);
        match step.gather {
            Some(again) => {
                assert!(again.prompt.contains("new code"), "{}", again.prompt);
                next = again;
            }
            None => {
                assert!(step.hangup);
                break;
            }
        }
    }
    assert_eq!(codes.len(), 3, "1 + voice.max_reprompts codes");
    if let Some(redis) = &app.redis {
        // The control for the answering-machine test: a said code is
        // stored, as its MAC.
        let dump = redis.dump();
        assert!(
            dump.iter()
                .any(|(key, _, value)| key.ends_with(&format!(":v:{id}"))
                    && value.contains("code_mac")),
            "{dump:?}"
        );
    }
    let latest = codes.last().expect("said").clone();
    for earlier in codes.iter().filter(|c| **c != latest) {
        let checked = app.check(&id, earlier).await.expect("check");
        assert!(!checked.approved, "a code said before the latest one");
    }
    assert!(app.check(&id, &latest).await.expect("check").approved);
    // The call is still live, so verifyd ends it, as Twilio describes.
    assert_call_ended(&fake, &phone).await;
    for update in fake.call_updates(&phone.call_sid).await {
        crate::fake_twilio::assert_conforms("UpdateCall", &update);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_gather_is_refused_and_says_no_code() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Code)).await;
    let id = started.verification.expect("v").id;
    let gather = phone.answer("human").await.gather.expect("gather");
    assert!(gather.action.contains("step=0"), "{}", gather.action);
    let said = phone.press(&gather, "#").await;
    let code = said_code(&said).expect("a code");
    let next = said.gather.expect("a new code is offered");
    assert!(next.action.contains("step=1"), "{}", next.action);
    // Twilio signs no timestamp: the same signed request, posted again by
    // whoever logged it, is refused, says nothing, and draws no code.
    let press = [("Digits", "#"), ("CallStatus", "in-progress")];
    let (replayed, body) = phone.post(&gather.action, &press, Some(AUTH_TOKEN)).await;
    assert_eq!(replayed, 403, "{body}");
    assert!(!body.chars().any(|c| c.is_ascii_digit()), "{body}");
    assert!(app.check(&id, &code).await.expect("check").approved);
    app.stop().await;
}

#[tokio::test]
async fn an_answering_machine_never_hears_a_code_and_none_is_stored() {
    for answered_by in ["machine_end_beep", "machine_start", "fax"] {
        let (app, fake) = voice_app().await;
        let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Code)).await;
        let id = started.verification.expect("v").id;
        let machine = phone.answer(answered_by).await;
        assert!(machine.hangup && machine.gather.is_none(), "{answered_by}");
        assert!(
            machine.says.is_empty() && !says_a_digit(&machine),
            "{machine:?}"
        );
        let v = app.get(&id).await.expect("get");
        assert_eq!(v.send_attempts[0].provider_status, "answered-by-machine");
        assert_eq!(status(&v), VerificationStatus::Pending);
        // Nothing was drawn, so nothing is stored: on Redis, the
        // verification's hash holds no code's MAC.
        if let Some(redis) = &app.redis {
            let dump = redis.dump();
            let verification = dump
                .iter()
                .find(|(key, kind, _)| kind == "hash" && key.ends_with(&format!(":v:{id}")))
                .unwrap_or_else(|| panic!("the verification is stored: {dump:?}"));
            assert!(!verification.2.contains("code_mac"), "{verification:?}");
            assert!(
                !verification.2.contains("unconfirmed_mac"),
                "{verification:?}"
            );
        }
        app.stop().await;
    }
    // Detection off, or undecided: a voicemail greeting presses no key, so
    // the call asks and hears nothing, and says no code.
    let (app, fake) = voice_app().await;
    let (_, phone) = ring(&app, &fake, call(proto::VoiceMode::Code)).await;
    let asked = phone.answer("unknown").await;
    assert!(asked.gather.is_some() && !says_a_digit(&asked), "{asked:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_fraud_report_denies_and_blocks_the_destination() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let id = started.verification.expect("v").id;
    let gather = phone.answer("human").await.gather.expect("gather");
    let menu = phone
        .press(&gather, "0")
        .await
        .gather
        .expect("the fraud menu");
    assert!(menu.prompt.contains("fraud"), "{}", menu.prompt);
    let back = phone
        .press(&menu, "1")
        .await
        .gather
        .expect("back to the question");
    let menu = phone
        .press(&back, "0")
        .await
        .gather
        .expect("the fraud menu again");
    let reported = phone.press(&menu, "#").await;
    assert!(reported.hangup);
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Denied
    );

    // A start to the blocked number answers as any busy destination does:
    // whoever starts it is not told the user reported a call.
    let err = app
        .start(call(proto::VoiceMode::Confirm))
        .await
        .expect_err("blocked");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), verifyd::grpc::DESTINATION_BUSY);
    // The wait is the longest least gap's (30 s doubled three times), not
    // the block's 24 hours, which would say what refused it.
    assert_eq!(
        crate::helpers::retry_after(&err),
        Some(Duration::from_secs(240))
    );
    let mut sms = call(proto::VoiceMode::Unspecified);
    sms.channel = proto::Channel::Sms.into();
    assert_eq!(
        app.start(sms).await.expect_err("blocked").message(),
        verifyd::grpc::DESTINATION_BUSY
    );
    app.clock.advance(Duration::from_secs(24 * 3600));
    assert!(
        app.start(call(proto::VoiceMode::Confirm)).await.is_ok(),
        "the block lifts"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_blocked_number_spends_and_meets_the_ip_budget_as_any_number_does() {
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 1)).await;
    let app = spawn_app_with(|c| {
        with_voice(c, &fake);
        c.limits.starts_per_ip.burst = 1;
    })
    .await;
    let (_, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let gather = phone.answer("human").await.gather.expect("gather");
    let menu = phone.press(&gather, "0").await.gather.expect("fraud menu");
    assert!(phone.press(&menu, "#").await.hangup, "reported: blocked");

    let from = |ip: &str, to: &str| proto::StartVerificationRequest {
        end_user_ip: ip.into(),
        to: to.into(),
        ..call(proto::VoiceMode::Confirm)
    };
    // Refused as busy, spending the address's cell as a refusal by the
    // least gap does...
    let blocked = app
        .start(from("203.0.113.7", TO))
        .await
        .expect_err("blocked");
    assert_eq!(blocked.message(), verifyd::grpc::DESTINATION_BUSY);
    let other = app
        .start(from("203.0.113.7", "+14155550101"))
        .await
        .expect_err("the address's budget is spent");
    assert!(other.message().contains("starts_per_ip"), "{other:?}");
    // ... and an address whose budget is spent is told so, as it would be
    // for any number: nothing tells the blocked one apart.
    let spent = app.start(from("203.0.113.7", TO)).await.expect_err("spent");
    assert!(spent.message().contains("starts_per_ip"), "{spent:?}");
    app.stop().await;
}

#[tokio::test]
async fn going_back_from_the_fraud_menu_spends_a_reprompt_so_the_loop_ends() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let id = started.verification.expect("v").id;
    let mut question = phone.answer("human").await.gather.expect("gather");
    // A responder holding the line: 0, any key, 0, any key… Each round
    // back spends one of the call's two re-prompts.
    for _ in 0..2 {
        let menu = phone
            .press(&question, "0")
            .await
            .gather
            .expect("fraud menu");
        question = phone.press(&menu, "1").await.gather.expect("back");
    }
    let menu = phone
        .press(&question, "0")
        .await
        .gather
        .expect("fraud menu");
    let end = phone.press(&menu, "1").await;
    assert!(
        end.gather.is_none() && end.hangup,
        "out of re-prompts, the call ends"
    );
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Pending,
        "nothing approved or denied"
    );
    app.stop().await;
}

#[tokio::test]
async fn machines_never_approve_and_unknown_counts_as_a_person() {
    for answered_by in [
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
    ] {
        let (app, fake) = voice_app().await;
        let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
        let id = started.verification.expect("v").id;
        let twiml = phone.answer(answered_by).await;
        assert!(twiml.hangup && twiml.gather.is_none(), "{answered_by}");
        let v = app.get(&id).await.expect("get");
        assert_eq!(
            v.send_attempts[0].status,
            i32::from(DeliveryStatus::Failed),
            "{answered_by}"
        );
        assert_eq!(status(&v), VerificationStatus::Pending);
        app.stop().await;
    }
    let (app, fake) = voice_app().await;
    let (_, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    assert!(phone.answer("unknown").await.gather.is_some());
    app.stop().await;
}

#[tokio::test]
async fn busy_and_no_answer_leave_the_verification_pending() {
    for outcome in ["busy", "no-answer"] {
        let (app, fake) = voice_app().await;
        let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
        let id = started.verification.expect("v").id;
        assert_eq!(phone.report("ringing").await, 204);
        assert_eq!(phone.report(outcome).await, 204);
        let v = app.get(&id).await.expect("get");
        assert_eq!(
            v.send_attempts[0].status,
            i32::from(DeliveryStatus::Undelivered),
            "{outcome}"
        );
        assert_eq!(v.send_attempts[0].provider_status, outcome);
        assert_eq!(status(&v), VerificationStatus::Pending);
        app.stop().await;
    }
}

#[tokio::test]
async fn webhooks_without_the_right_signature_token_or_call_change_nothing() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let id = started.verification.expect("v").id;
    let gather = phone.answer("human").await.gather.expect("gather");
    let press = [("Digits", "#")];
    assert_eq!(
        phone.post(&gather.action, &press, None).await.0,
        403,
        "unsigned"
    );
    assert_eq!(
        phone
            .post(&gather.action, &press, Some("not-the-token"))
            .await
            .0,
        403
    );

    let wrong_token = {
        let mut url = url::Url::parse(&gather.action).expect("url");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "token" {
                    "a".repeat(32)
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        String::from(url)
    };
    assert_eq!(
        phone.post(&wrong_token, &press, Some(AUTH_TOKEN)).await.0,
        403,
        "another call's token"
    );

    let other_call = Phone {
        call_sid: sid("CA", 2),
        webhooks: phone.webhooks,
        form: phone.form.clone(),
    };
    assert_eq!(
        other_call
            .post(&gather.action, &press, Some(AUTH_TOKEN))
            .await
            .0,
        403,
        "another CallSid"
    );
    assert_eq!(
        status(&app.get(&id).await.expect("get")),
        VerificationStatus::Pending
    );
    app.stop().await;
}

#[tokio::test]
async fn canceling_during_a_live_call_ends_the_call() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let id = started.verification.expect("v").id;
    assert_eq!(phone.report("ringing").await, 204);
    app.cancel(&id).await.expect("cancel");
    assert_call_ended(&fake, &phone).await;
    // Twilio may still fetch the TwiML: the call only hangs up.
    let twiml = phone.answer("human").await;
    assert!(twiml.hangup && twiml.gather.is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_resend_while_the_call_is_live_ends_the_call() {
    let (app, fake) = voice_app().await;
    let (started, phone) = ring(&app, &fake, call(proto::VoiceMode::Confirm)).await;
    let id = started.verification.expect("v").id;
    assert_eq!(phone.report("in-progress").await, 204);
    app.clock.advance(Duration::from_secs(30));
    let resent = app.resent(resend_on(&id, proto::Channel::Sms)).await;
    assert_eq!(resent.id, id, "the same verification, now by SMS");
    assert_call_ended(&fake, &phone).await;
    // The old call's webhooks no longer act on the verification.
    let url = phone.field("Url").expect("url").to_owned();
    let (status_code, _) = phone
        .post(&url, &[("CallStatus", "in-progress")], Some(AUTH_TOKEN))
        .await;
    assert_eq!(status_code, 403);
    app.stop().await;
}

#[tokio::test]
async fn a_second_session_gets_its_own_digits_and_the_first_calls_keys_approve_nothing() {
    let fake = FakeTwilio::start().await;
    fake.accept_calls(&sid("CA", 2)).await;
    fake.accept_next_call(&sid("CA", 1), Duration::ZERO).await;
    let app = spawn_app_with(|c| with_voice(c, &fake)).await;

    // The victim's session: a number-matching call, answered.
    let victim = app
        .start(call(proto::VoiceMode::Match))
        .await
        .expect("start");
    let victim_phone = Phone::picked_up(&app, &fake).await;
    let victim_id = victim.verification.expect("v").id;
    let gather = victim_phone.answer("human").await.gather.expect("gather");

    // The attacker starts a reset for the same account, and is handed a
    // verification of its own, with digits of its own.
    app.clock.advance(Duration::from_secs(30));
    let attacker = app
        .start(call(proto::VoiceMode::Match))
        .await
        .expect("start");
    let attacker_id = attacker.verification.expect("v").id;
    assert_ne!(attacker_id, victim_id);
    assert_call_ended(&fake, &victim_phone).await;

    // The victim, still on the first call, keys in the digits they see.
    let after = victim_phone.press(&gather, &victim.match_digits).await;
    assert!(after.hangup && after.gather.is_none(), "nothing to ask");
    assert_eq!(
        status(&app.get(&victim_id).await.expect("get")),
        VerificationStatus::Superseded
    );
    assert_eq!(
        status(&app.get(&attacker_id).await.expect("get")),
        VerificationStatus::Pending,
        "nothing the first session's call did reaches the second's"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_call_still_being_placed_when_its_verification_is_superseded_is_ended() {
    let fake = FakeTwilio::start().await;
    // The first call takes a while to be accepted; the second is at once.
    fake.accept_next_call(&sid("CA", 1), Duration::from_millis(500))
        .await;
    fake.accept_calls(&sid("CA", 2)).await;
    let app = spawn_app_with(|c| with_voice(c, &fake)).await;

    let client = app.client.clone();
    let first = tokio::spawn(async move {
        client
            .clone()
            .start_verification(call(proto::VoiceMode::Confirm))
            .await
    });
    // Once the first call is on its way to the provider, the second start.
    for _ in 0..500 {
        if !fake.placed_calls().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fake.placed_calls().await.len(), 1, "the first is in flight");
    app.clock.advance(Duration::from_secs(30));
    let second = app
        .start(call(proto::VoiceMode::Confirm))
        .await
        .expect("the second start")
        .verification
        .expect("v");

    let first = first
        .await
        .expect("task")
        .expect("the first send was accepted")
        .into_inner()
        .verification
        .expect("v");
    assert_eq!(status(&first), VerificationStatus::Superseded);
    assert_ne!(first.id, second.id);
    // Nothing stored names the first call: it is ended from its own receipt.
    let ended = vec![("Status".to_owned(), "completed".to_owned())];
    for _ in 0..200 {
        if !fake.call_updates(&sid("CA", 1)).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.call_updates(&sid("CA", 1)).await, [ended]);
    assert!(
        fake.call_updates(&sid("CA", 2)).await.is_empty(),
        "the second call is left alone"
    );
    app.stop().await;
}
