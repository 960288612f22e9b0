//! Twilio's Messages API for SMS, and the signature on its webhooks.
//!
//! `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded, HTTP Basic auth with the Account SID and auth token, or an
//! API key SID and secret.

pub mod signature;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{Content, FailureKind, Message, Receipt, SendError};
use crate::{config::Secret, domain::destination::mask_phone_numbers};

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
    /// A Messaging Service, used instead of `from`.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
}

fn default_base_url() -> Url {
    Url::parse(DEFAULT_BASE_URL).expect("a valid URL")
}

/// Sends SMS through Twilio.
#[derive(Debug, Clone)]
pub struct TwilioSms {
    name: String,
    messages_url: Url,
    user: String,
    password: Secret,
    sender: (&'static str, String),
    /// Where Twilio posts delivery status; none without a public webhook URL.
    status_callback: Option<Url>,
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

impl TwilioSms {
    /// `status_callback_base` is the public URL of verifyd's webhook
    /// listener, if Twilio can reach one.
    pub fn new(
        name: &str,
        config: &TwilioConfig,
        http: reqwest::Client,
        status_callback_base: Option<&Url>,
    ) -> Result<Self, String> {
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
        let messages_url = config
            .base_url
            .join(&format!(
                "2010-04-01/Accounts/{}/Messages.json",
                config.account_sid
            ))
            .map_err(|e| format!("base_url: {e}"))?;
        let status_callback = status_callback_base
            .map(|base| base.join(&format!("webhooks/twilio/{name}/message-status")))
            .transpose()
            .map_err(|e| format!("status callback URL: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            messages_url,
            user,
            password,
            sender,
            status_callback,
            http,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, kind: FailureKind, reason: impl Into<String>) -> SendError {
        SendError {
            provider: self.name.clone(),
            kind,
            reason: mask_phone_numbers(&reason.into()),
        }
    }

    pub async fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        let mut form = vec![
            ("To", message.to.as_str().to_owned()),
            (self.sender.0, self.sender.1.clone()),
            ("Body", content.text().to_owned()),
        ];
        if let Some(callback) = &self.status_callback {
            let mut callback = callback.clone();
            callback
                .query_pairs_mut()
                .append_pair("tenant", message.tenant.as_str())
                .append_pair("verification", message.verification_id.as_str());
            form.push(("StatusCallback", callback.into()));
        }
        let response = self
            .http
            .post(self.messages_url.clone())
            .basic_auth(&self.user, Some(self.password.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| self.error(FailureKind::Transient, transport_reason(&e)))?;
        let status = response.status();
        let body = read_limited(response)
            .await
            .map_err(|e| self.error(FailureKind::Transient, transport_reason(&e)))?;
        if status.is_success() {
            return Ok(Receipt {
                provider: self.name.clone(),
                // A 2xx means Twilio took the message; an unreadable body
                // only costs the id for status callbacks.
                reference: serde_json::from_slice::<Created>(&body).ok().map(|c| c.sid),
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
        let kind = if status.is_server_error() || status.as_u16() == 429 {
            FailureKind::Transient
        } else if code.is_some_and(|c| DESTINATION_ERRORS.contains(&c)) {
            FailureKind::Destination
        } else {
            FailureKind::Rejected
        };
        Err(self.error(kind, reason))
    }
}

/// What went wrong on the wire, without the URL (which holds the account).
pub(crate) fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the response broke off".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// The most of a provider's response body that is read: enough for any
/// real answer, so a provider streaming garbage costs memory for no more.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub(crate) async fn read_limited(
    mut response: reqwest::Response,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok(body)
}

/// One HTTP client for every provider: connection pooling, rustls with the
/// ring provider, and a connect timeout (attempt timeouts come from the
/// route).
pub fn http_client() -> Result<reqwest::Client, String> {
    // One rustls crypto provider across every crate: ring. Installing it
    // twice (tests build several apps) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}
