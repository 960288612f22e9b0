//! Twilio, all of it: SMS through the Messages API, voice calls through the
//! Calls API, and Twilio's side of the webhooks ([`webhook`]: their URLs,
//! the signature on what Twilio posts, the requests read into domain
//! events, and the TwiML a call step becomes).
//!
//! `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json` (or
//! `Calls.json`), form-encoded, HTTP Basic auth with the Account SID and
//! auth token, or an API key SID and secret.

pub mod lookup;
pub mod signature;
pub mod twiml;
pub mod webhook;

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use url::Url;

use self::webhook::Route;
use super::{
    message::{Content, FailureKind, Message, Receipt, SendError},
    web::{exchange, form_body, retried_status},
};
use crate::{domain::Channel, secret::Secret};

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Twilio's API; tests point it at a local fake.
    #[serde(default = "default_base_url")]
    pub base_url: Url,
    pub account_sid: String,
    /// Signs Twilio's webhooks, and authenticates API calls when no API key
    /// is set.
    pub auth_token: Secret,
    /// Still accepted on webhooks while the auth token is rotated.
    #[serde(default)]
    pub previous_auth_token: Option<Secret>,
    /// An API key for API calls, instead of the account's auth token.
    #[serde(default)]
    pub api_key_sid: Option<String>,
    #[serde(default)]
    pub api_key_secret: Option<Secret>,
    /// The sender number (E.164) or alphanumeric sender id.
    #[serde(default)]
    pub from: Option<String>,
    /// A Messaging Service, used instead of `from` for SMS. Calls always
    /// come from `from`.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// How long a call rings before Twilio gives up.
    #[serde(default = "default_ring_timeout", with = "humantime_serde")]
    pub ring_timeout: Duration,
    /// Answering-machine detection on calls: a machine never approves.
    #[serde(default = "default_true")]
    pub machine_detection: bool,
    /// The longest a call may last (Twilio's `TimeLimit`; its own default
    /// is 4 hours). A verification call takes well under a minute; a
    /// revenue-share number that answers and holds the line costs money
    /// for every minute it is let.
    #[serde(default = "default_call_time_limit", with = "humantime_serde")]
    pub call_time_limit: Duration,
}

fn default_ring_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_call_time_limit() -> Duration {
    Duration::from_secs(120)
}

/// What `call_time_limit` may be: long enough for a prompt and its
/// re-prompts, short enough to bound what a held line costs.
const CALL_TIME_LIMITS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(30)..=Duration::from_secs(600);

fn default_true() -> bool {
    true
}

/// Twilio refuses inline TwiML longer than this.
const MAX_INLINE_TWIML: usize = 4_000;

fn default_base_url() -> Url {
    Url::parse(DEFAULT_BASE_URL).expect("a valid URL")
}

/// Sends SMS and places calls through one Twilio account.
#[derive(Debug, Clone)]
pub struct Twilio {
    name: String,
    account_url: Url,
    user: String,
    password: Secret,
    sender: (&'static str, String),
    /// The caller id for calls.
    from: Option<String>,
    ring_timeout: Duration,
    machine_detection: bool,
    call_time_limit: Duration,
    /// verifyd's public webhook base; none means no callbacks (and no
    /// interactive calls).
    public_base: Option<Url>,
    http: reqwest::Client,
}

/// Twilio's error body for a 4xx or 5xx.
#[derive(Debug, Deserialize)]
struct ApiError {
    code: Option<u32>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Created {
    sid: String,
}

/// Error codes that are about the number itself (invalid, not reachable by
/// SMS, opted out, blocked, or in a region the account may not reach):
/// another try or another provider would fail the same way.
const DESTINATION_ERRORS: &[u32] = &[
    21211, 21214, 21217, 21219, 21401, 21407, 21408, 21421, 21610, 21612, 21614, 21635,
];

impl Twilio {
    /// `status_callback_base` is the public URL of verifyd's webhook
    /// listener, if Twilio can reach one.
    pub fn new(
        name: &str,
        config: &TwilioConfig,
        http: reqwest::Client,
        status_callback_base: Option<&Url>,
    ) -> Result<Self, String> {
        if !(Duration::from_secs(5)..=Duration::from_secs(600)).contains(&config.ring_timeout) {
            return Err("ring_timeout must be 5s to 600s".to_owned());
        }
        if !CALL_TIME_LIMITS.contains(&config.call_time_limit) {
            return Err("call_time_limit must be 30s to 600s".to_owned());
        }
        if !config.account_sid.starts_with("AC") || config.account_sid.len() != 34 {
            return Err("account_sid must be AC followed by 32 characters".to_owned());
        }
        let (user, password) = match (&config.api_key_sid, &config.api_key_secret) {
            (Some(sid), Some(secret)) => (sid.clone(), secret.clone()),
            (None, None) => (config.account_sid.clone(), config.auth_token.clone()),
            _ => return Err("api_key_sid and api_key_secret go together".to_owned()),
        };
        let sender = match (&config.from, &config.messaging_service_sid) {
            (Some(from), None) => ("From", from.clone()),
            (None, Some(sid)) => ("MessagingServiceSid", sid.clone()),
            _ => return Err("set exactly one of from and messaging_service_sid".to_owned()),
        };
        let account_url = config
            .base_url
            .join(&format!("2010-04-01/Accounts/{}/", config.account_sid))
            .map_err(|e| format!("base_url: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            account_url,
            user,
            password,
            sender,
            from: config.from.clone(),
            ring_timeout: config.ring_timeout,
            machine_detection: config.machine_detection,
            call_time_limit: config.call_time_limit,
            public_base: status_callback_base.cloned(),
            http,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, kind: FailureKind, reason: impl Into<String>) -> SendError {
        SendError::new(&self.name, kind, reason)
    }

    /// Checks what calls need beyond SMS: a caller id, and a public URL for
    /// the call's instructions and callbacks.
    pub fn check_voice(&self) -> Result<(), String> {
        if self.from.is_none() {
            return Err("calls need from (a Messaging Service cannot place calls)".to_owned());
        }
        if self.public_base.is_none() {
            return Err(
                "calls need webhooks.public_base_url, where Twilio fetches what to say".to_owned(),
            );
        }
        Ok(())
    }

    /// A webhook URL of this provider for one verification (and call).
    /// Twilio signs its requests to it, query included.
    fn webhook(&self, route: Route, message: &Message) -> Option<String> {
        let token = message.call_token.as_ref().map(|t| t.as_str());
        let url = webhook::url(
            self.public_base.as_ref()?,
            &self.name,
            route,
            &message.tenant,
            &message.verification_id,
            token,
            None,
        )?;
        Some(url.into())
    }

    pub async fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        match message.delivery.channel {
            Channel::Voice => self.call(message, content).await,
            Channel::Sms => self.text(message, content).await,
            Channel::Email => Err(self.error(FailureKind::Rejected, "Twilio does not send email")),
        }
    }

    /// Places a call. A verification's call, in every mode, fetches its
    /// instructions from verifyd once it is answered, so that `AnsweredBy`
    /// is known before anything is said; a read-aloud call's code is drawn
    /// only when a person presses a key for it, so no code travels with the
    /// call. A test call (`verifyd send-test`) has no token to sign webhooks
    /// with and no secret to say: it carries its text inline.
    async fn call(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        let from = self
            .from
            .clone()
            .ok_or_else(|| self.error(FailureKind::Rejected, "no caller id (from)"))?;
        let mut form = vec![
            ("To", message.to.as_str().to_owned()),
            ("From", from),
            ("Timeout", self.ring_timeout.as_secs().to_string()),
            ("TimeLimit", self.call_time_limit.as_secs().to_string()),
        ];
        if let Some(extension) = &message.extension {
            // Dialed once the call connects. Machine detection would judge
            // the office's switchboard, which answers first, not the
            // person: it is left off, and a code is still said only after
            // a person presses a key for it.
            form.push(("SendDigits", extension.as_str().to_owned()));
        } else if self.machine_detection {
            form.push(("MachineDetection", "Enable".to_owned()));
        }
        let fetches = message.call_token.is_some();
        if fetches {
            let url = self.webhook(Route::CallTwiml, message).ok_or_else(|| {
                self.error(FailureKind::Rejected, "no public webhook URL for the call")
            })?;
            form.push(("Url", url));
        } else {
            let locale = message.delivery.locale.as_ref().map(|l| l.as_str());
            let twiml = twiml::response(
                twiml::say_language(locale),
                &[
                    twiml::Verb::Pause(1),
                    twiml::Verb::Say(content.text()),
                    twiml::Verb::Hangup,
                ],
            );
            if twiml.len() > MAX_INLINE_TWIML {
                return Err(self.error(
                    FailureKind::Rejected,
                    "call instructions longer than 4,000 characters",
                ));
            }
            form.push(("Twiml", twiml.as_str().to_owned()));
        }
        if let Some(callback) = self.webhook(Route::CallStatus, message) {
            form.push(("StatusCallback", callback));
            form.push(("StatusCallbackMethod", "POST".to_owned()));
            for event in ["initiated", "ringing", "answered", "completed"] {
                form.push(("StatusCallbackEvent", event.to_owned()));
            }
        }
        let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let receipt =
            self.post("Calls.json", &fields)
                .await
                .map_err(|e| match &message.extension {
                    // Twilio's error texts may echo the request's fields, as
                    // sent or as keys.
                    Some(extension) => e
                        .masking(extension.as_str(), &extension.masked())
                        .masking(extension.keys(), &extension.masked()),
                    None => e,
                })?;
        // Webhooks are bound to this CallSid: without a well-formed one the
        // call cannot be checked, so it does not count as placed (though
        // Twilio may have placed it).
        if !receipt.reference.as_deref().is_some_and(is_call_sid) {
            return Err(self.error(FailureKind::Unconfirmed, "Twilio's answer has no call SID"));
        }
        Ok(Receipt {
            code_withheld: fetches,
            ..receipt
        })
    }

    /// Ends a live call (its verification was decided, canceled or resent).
    pub async fn end_call(&self, call_sid: &str) -> Result<(), SendError> {
        if !is_call_sid(call_sid) {
            return Err(self.error(FailureKind::Rejected, "not a call SID"));
        }
        self.post(
            &format!("Calls/{call_sid}.json"),
            &[("Status", "completed")],
        )
        .await
        .map(|_| ())
    }

    async fn text(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        // The body is borrowed from the content, which wipes itself; the
        // form it goes into is wiped too (`post`).
        let callback = self.webhook(Route::MessageStatus, message);
        let mut form = vec![
            ("To", message.to.as_str()),
            (self.sender.0, self.sender.1.as_str()),
            ("Body", content.text()),
        ];
        if let Some(callback) = &callback {
            form.push(("StatusCallback", callback));
        }
        self.post("Messages.json", &form).await
    }

    async fn post(&self, resource: &str, form: &[(&str, &str)]) -> Result<Receipt, SendError> {
        let url = self
            .account_url
            .join(resource)
            .map_err(|e| self.error(FailureKind::Rejected, format!("bad resource URL: {e}")))?;
        let request = self
            .http
            .post(url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(form));
        let (status, body) = exchange(request)
            .await
            .map_err(|(kind, reason)| self.error(kind, reason))?;
        if status.is_success() {
            return Ok(Receipt {
                provider: self.name.clone(),
                // A 2xx means Twilio took the message; an unreadable body
                // only costs the id for status callbacks.
                reference: serde_json::from_slice::<Created>(&body).ok().map(|c| c.sid),
                code_withheld: false,
            });
        }
        let api_error: Option<ApiError> = serde_json::from_slice(&body).ok();
        let code = api_error.as_ref().and_then(|e| e.code);
        let detail = api_error
            .and_then(|e| e.message)
            .unwrap_or_else(|| "unreadable error body".to_owned());
        let detail: String = detail.chars().take(200).collect();
        let reason = match code {
            Some(code) => format!("HTTP {} (Twilio error {code}): {detail}", status.as_u16()),
            None => format!("HTTP {}: {detail}", status.as_u16()),
        };
        let kind = if let Some(retried) = retried_status(status) {
            retried
        } else if code.is_some_and(|c| DESTINATION_ERRORS.contains(&c)) {
            FailureKind::Destination
        } else {
            FailureKind::Rejected
        };
        Err(self.error(kind, reason))
    }
}

/// `CA` and 32 hex digits.
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}
