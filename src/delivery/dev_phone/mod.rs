//! The simulated phone: dev mode's call provider. It "places" a call by
//! ringing a phone a developer answers on a page of the webhook listener
//! (`http::dev_phone`), and everything the person does there travels to
//! verifyd exactly as Twilio's requests do: the instructions fetch, the
//! gathered keys and the call status, signed (`X-Twilio-Signature`) with a
//! token made at startup, to the same webhook routes and handlers. So
//! press #, number matching, the read-aloud code, the fraud key,
//! re-prompts and an unanswered call all behave as in production, with no
//! provider account and no public URL.
//!
//! verifyd ends the phone's calls the way it ends Twilio's, through the
//! voice route's provider ([`DevPhone::end_call`]). It runs in dev mode
//! only (`app::delivery`), and its calls are announced on the console.

mod call;
mod twiml;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use rand::Rng as _;
use reqwest::header::CONTENT_TYPE;
use url::Url;
use zeroize::Zeroizing;

pub use self::call::{Call, End, Line, State};
use self::{
    call::{Script, Webhooks},
    twiml::Instruction,
};
use super::{
    console::ConsoleSender,
    message::{Content, FailureKind, Message, Receipt, SendError},
    twilio::{
        signature,
        webhook::{self, Route},
    },
    web::{exchange, form_body},
};
use crate::{clock::Clock, domain::Channel, secret::Secret};

/// The phone keeps this many calls on its screen, the newest.
const CALLS_KEPT: usize = 20;

/// How long the phone waits for verifyd to answer one of its requests.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The simulated phone's account, as Twilio's requests carry one.
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// The number its calls come from (Twilio's magic test number).
const CALLER_ID: &str = "+15005550006";

/// The dev-only call provider and the phone it rings. Clones share the
/// phone.
#[derive(Clone)]
pub struct DevPhone {
    inner: Arc<Inner>,
}

struct Inner {
    /// Signs its webhooks, as a Twilio auth token does.
    token: Secret,
    public_base: Url,
    http: reqwest::Client,
    console: ConsoleSender,
    clock: Clock,
    calls: Mutex<VecDeque<Call>>,
}

impl std::fmt::Debug for DevPhone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPhone").finish_non_exhaustive()
    }
}

/// Why a person's action on the phone did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("no such call")]
    NoSuchCall,
    #[error("the call is not in a state for that")]
    NotNow,
}

impl DevPhone {
    /// Its provider name, in its webhook paths (`/webhooks/twilio/dev-phone/…`)
    /// and send attempts; no `[providers]` entry may take it.
    pub const PROVIDER: &'static str = "dev-phone";

    /// A phone whose webhooks go to `public_base` (dev mode's loopback
    /// webhook listener), signed with a token made now.
    pub fn new(
        public_base: Url,
        http: reqwest::Client,
        console: ConsoleSender,
        clock: Clock,
    ) -> Self {
        let token = Secret::new(hex::encode(rand::rng().random::<[u8; 16]>()));
        Self {
            inner: Arc::new(Inner {
                token,
                public_base,
                http,
                console,
                clock,
                calls: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The token its webhooks are signed with, for the webhook routes.
    pub fn token(&self) -> &Secret {
        &self.inner.token
    }

    /// Where a person answers: the phone's page on the webhook listener.
    pub fn page(&self) -> Url {
        self.inner
            .public_base
            .join("dev/phone")
            .expect("the public base URL is an absolute http(s) URL")
    }

    /// The calls on the phone's screen, newest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Call>> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the call `sid`.
    fn with_call<T>(&self, sid: &str, f: impl FnOnce(&mut Call) -> T) -> Result<T, PhoneError> {
        let mut calls = self.lock();
        let call = calls
            .iter_mut()
            .find(|c| c.sid == sid)
            .ok_or(PhoneError::NoSuchCall)?;
        Ok(f(call))
    }

    /// Places a call: the phone rings. Like Twilio's Calls API, it answers
    /// with the CallSid at once; the rest happens when a person acts.
    pub(super) fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        if message.delivery.channel != Channel::Voice {
            return Err(SendError::new(
                Self::PROVIDER,
                FailureKind::Rejected,
                "the simulated phone takes calls only",
            ));
        }
        let sid = format!("CA{}", hex::encode(rand::rng().random::<[u8; 16]>()));
        let script = match &message.call_token {
            Some(token) => {
                let url = |route| {
                    webhook::url(
                        &self.inner.public_base,
                        Self::PROVIDER,
                        route,
                        &message.tenant,
                        &message.verification_id,
                        Some(token.as_str()),
                        None,
                    )
                    .map(String::from)
                };
                Script::Webhooks(Webhooks {
                    instructions: url(Route::CallTwiml).ok_or_else(|| {
                        SendError::new(Self::PROVIDER, FailureKind::Rejected, "no webhook URL")
                    })?,
                    status: url(Route::CallStatus),
                })
            }
            // A test call (`verifyd send-test`): its words travel with it.
            None => Script::Inline(Zeroizing::new(content.text().to_owned())),
        };
        // Said first: a call whose line could not be written is no call,
        // and must not be left ringing for the route's next try.
        self.inner.console.note(
            message,
            &format!(
                "the simulated phone is ringing: answer it at {}",
                self.page()
            ),
        )?;
        let call = Call::ringing(
            sid.clone(),
            message.to.as_str().to_owned(),
            self.inner.clock.now(),
            script,
        );
        let mut calls = self.lock();
        if calls.len() == CALLS_KEPT {
            calls.pop_front();
        }
        calls.push_back(call);
        drop(calls);
        Ok(Receipt {
            provider: Self::PROVIDER.to_owned(),
            reference: Some(sid),
            // As with Twilio, a call that fetches its instructions says a
            // code only once a person asks for it.
            code_withheld: message.call_token.is_some(),
        })
    }

    /// verifyd ends a call (its verification was decided, canceled,
    /// superseded or resent), as it would through Twilio's API: the phone
    /// hangs up and the call's final status follows, in the background.
    pub(super) fn end_call(&self, sid: &str) -> Result<(), SendError> {
        let ended = self
            .with_call(sid, |call| {
                call.end(End::EndedByVerifyd).then(|| call.clone())
            })
            .map_err(|_| SendError::new(Self::PROVIDER, FailureKind::Rejected, "no such call"))?;
        if let Some(call) = ended {
            let phone = self.clone();
            tokio::spawn(async move { phone.report_end(&call).await });
        }
        Ok(())
    }

    /// The person answers (or, with `machine`, voicemail does): the call
    /// fetches what to say, and the answered status follows.
    pub async fn answer(&self, sid: &str, machine: bool) -> Result<(), PhoneError> {
        let call = self.with_call(sid, |call| {
            if call.state != State::Ringing {
                return Err(PhoneError::NotNow);
            }
            call.state = State::Connecting;
            Ok(call.clone())
        })??;
        let answered_by = if machine { "machine_end_beep" } else { "human" };
        match &call.script {
            Script::Inline(text) => {
                self.follow(
                    sid,
                    Ok(vec![Instruction::Say(text.clone()), Instruction::Hangup]),
                )
                .await;
            }
            Script::Webhooks(hooks) => {
                let mut form = self.form(&call, "in-progress");
                form.push(("AnsweredBy", answered_by.to_owned()));
                let instructions = self.fetch(&hooks.instructions, &form).await;
                self.follow(sid, instructions).await;
                // Twilio's `answered` status event, with what answered.
                if let Some(status) = &hooks.status {
                    let _ = self.post(status, &form).await;
                }
            }
        }
        Ok(())
    }

    /// A key pressed on the call; a gather that has its keys sends them.
    pub async fn press(&self, sid: &str, key: char) -> Result<(), PhoneError> {
        let (call, keys) = self.with_call(sid, |call| {
            if !call.waits_for_keys() || !call::is_key(key) {
                return Err(PhoneError::NotNow);
            }
            let keys = call.press(key);
            Ok((call.clone(), keys))
        })??;
        if let Some(keys) = keys {
            let mut form = self.form(&call, "in-progress");
            form.push(("Digits", keys.digits));
            let instructions = self.fetch(&keys.action, &form).await;
            self.follow(sid, instructions).await;
        } else if !call.is_live() {
            // `#` alone ran the gather's timeout, which hung up.
            self.report_end(&call).await;
        }
        Ok(())
    }

    /// The gather's time runs out with no keys: what follows it runs.
    pub async fn let_time_out(&self, sid: &str) -> Result<(), PhoneError> {
        let call = self.with_call(sid, |call| {
            if !call.waits_for_keys() {
                return Err(PhoneError::NotNow);
            }
            call.time_out();
            Ok(call.clone())
        })??;
        if !call.is_live() {
            self.report_end(&call).await;
        }
        Ok(())
    }

    /// The person hangs up, declines a ringing call, or lets it ring out.
    pub async fn hang_up(&self, sid: &str) -> Result<(), PhoneError> {
        let ended = self.with_call(sid, |call| {
            let how = match call.state {
                State::Ringing => End::Declined,
                State::Connecting | State::Connected => End::HungUp,
                State::Ended(_) => return Err(PhoneError::NotNow),
            };
            call.end(how);
            Ok(call.clone())
        })??;
        self.report_end(&ended).await;
        Ok(())
    }

    /// Nobody picks up a ringing call.
    pub async fn ring_out(&self, sid: &str) -> Result<(), PhoneError> {
        let ended = self.with_call(sid, |call| {
            if call.state != State::Ringing {
                return Err(PhoneError::NotNow);
            }
            call.end(End::NotAnswered);
            Ok(call.clone())
        })??;
        self.report_end(&ended).await;
        Ok(())
    }

    /// Runs verifyd's answer on the call, or ends it when there is none;
    /// a call that ends so reports its final status.
    async fn follow(&self, sid: &str, instructions: Result<Vec<Instruction>, String>) {
        let ended = self.with_call(sid, |call| {
            let was_live = call.is_live();
            match instructions {
                Ok(instructions) => call.follow(instructions),
                Err(reason) => {
                    call.end(End::Failed(reason));
                }
            }
            (was_live && !call.is_live()).then(|| call.clone())
        });
        if let Ok(Some(call)) = ended {
            self.report_end(&call).await;
        }
    }

    /// The final status callback of a call that has ended.
    async fn report_end(&self, call: &Call) {
        let (Script::Webhooks(hooks), State::Ended(how)) = (&call.script, &call.state) else {
            return;
        };
        if let Some(status) = &hooks.status {
            let form = self.form(call, how.call_status());
            let _ = self.post(status, &form).await;
        }
    }

    /// The fields every Twilio call webhook carries.
    fn form(&self, call: &Call, status: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AccountSid", ACCOUNT_SID.to_owned()),
            ("ApiVersion", "2010-04-01".to_owned()),
            ("CallSid", call.sid.clone()),
            ("CallStatus", status.to_owned()),
            ("Direction", "outbound-api".to_owned()),
            ("From", CALLER_ID.to_owned()),
            ("To", call.to.clone()),
        ]
    }

    /// Posts to a webhook and reads the TwiML it answers.
    async fn fetch(
        &self,
        url: &str,
        form: &[(&'static str, String)],
    ) -> Result<Vec<Instruction>, String> {
        let document = self.post(url, form).await?;
        twiml::read(&String::from_utf8_lossy(&document))
    }

    /// A form POST to one of verifyd's webhook URLs, signed as Twilio signs
    /// it; the answer's body when verifyd took it.
    async fn post(
        &self,
        url: &str,
        form: &[(&'static str, String)],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let params: Vec<(String, String)> = form
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let signed = signature::compute(self.inner.token.expose(), url, &params);
        let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = self
            .inner
            .http
            .post(url)
            .timeout(WEBHOOK_TIMEOUT)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signed)
            .body(form_body(&fields));
        let (status, body) = exchange(request)
            .await
            .map_err(|(_, reason)| format!("verifyd's webhook: {reason}"))?;
        if !status.is_success() {
            // verifyd's refusals are short plain texts with no secret.
            let said = String::from_utf8_lossy(&body);
            return Err(format!(
                "verifyd's webhook answered HTTP {}: {}",
                status.as_u16(),
                said.trim()
            ));
        }
        Ok(Zeroizing::new(body))
    }
}
