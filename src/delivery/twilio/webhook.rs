//! Twilio's side of verifyd's webhooks: the URLs verifyd gives Twilio, the
//! signature on what Twilio posts to them, the requests read into domain
//! events, and the TwiML a call step becomes.
//!
//! Every URL carries the tenant and verification (and, for a call, its
//! token) in its query, which the signature covers. A request is read only
//! once its signature checks out, and every field is validated before the
//! event is built; a bad one is named.

use std::collections::HashMap;

use url::Url;
use zeroize::Zeroizing;

use super::{
    signature,
    twiml::{self, Gather, Verb},
};
pub use crate::delivery::inbound::{CallRef, Event, Refused};
use crate::{
    domain::{
        DeliveryReport, TenantId, VerificationId,
        call::CallKey,
        voice::{AnsweredBy, CallStep, Menu, Next},
    },
    secret::Secret,
};

/// The auth tokens each Twilio provider's webhooks are signed with, by
/// provider name: the current one, and the previous one during a rotation.
pub type WebhookTokens = HashMap<String, Vec<Secret>>;

/// A webhook route under `/webhooks/twilio/{provider}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    MessageStatus,
    CallTwiml,
    CallGather,
    CallStatus,
}

impl Route {
    /// Every route, for the router.
    pub const ALL: [Self; 4] = [
        Self::MessageStatus,
        Self::CallTwiml,
        Self::CallGather,
        Self::CallStatus,
    ];

    fn path(self) -> &'static str {
        match self {
            Self::MessageStatus => "message-status",
            Self::CallTwiml => "voice/twiml",
            Self::CallGather => "voice/gather",
            Self::CallStatus => "voice/status",
        }
    }

    /// The route's path pattern, `{provider}` standing for the provider.
    pub fn pattern(self) -> String {
        format!("/webhooks/twilio/{{provider}}/{}", self.path())
    }
}

/// The webhook URL of `provider`'s `route` for one verification (and, for
/// a call, its token, and for a gather the menu it answers and the step it
/// is), under the public base URL (which ends in `/`).
pub(crate) fn url(
    public_base: &Url,
    provider: &str,
    route: Route,
    tenant: &TenantId,
    verification: &VerificationId,
    call_token: Option<&str>,
    gather: Option<(Menu, u8)>,
) -> Option<Url> {
    let mut url = public_base
        .join(&format!("webhooks/twilio/{provider}/{}", route.path()))
        .ok()?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("tenant", tenant.as_str())
            .append_pair("verification", verification.as_str());
        if let Some(token) = call_token {
            query.append_pair("token", token);
        }
        if let Some((menu, step)) = gather {
            query.append_pair(
                "menu",
                match menu {
                    Menu::Main => "main",
                    Menu::Fraud => "fraud",
                },
            );
            query.append_pair("step", &step.to_string());
        }
    }
    Some(url)
}

fn invalid(field: &'static str, problem: &'static str) -> Refused {
    Refused::Invalid { field, problem }
}

/// A webhook request as received: the provider named in its path, the URL
/// Twilio requested (the public base and the path and query as received),
/// its `X-Twilio-Signature` and its form body.
pub struct Request<'a> {
    pub provider: &'a str,
    pub url: &'a str,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// The URL carries a call's token and the body a code's digits: neither is
/// shown.
impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("provider", &self.provider)
            .field("url", &"<redacted>")
            .field("signature", &self.signature.map(|_| "<redacted>"))
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Reads a request to `route`: its signature first, under `tokens`, then
/// every field.
///
/// # Errors
/// What refused it; nothing is read from a request whose signature fails.
pub fn read(tokens: &WebhookTokens, route: Route, request: &Request<'_>) -> Result<Event, Refused> {
    let tokens = tokens
        .get(request.provider)
        .ok_or(Refused::UnknownProvider)?;
    let tokens: Vec<&str> = tokens.iter().map(Secret::expose).collect();
    let form = request
        .signature
        .and_then(|s| verified_form(&tokens, request.url, s, request.body))
        .ok_or(Refused::Signature)?;
    let query = query_of(request.url);
    let fields = Fields {
        query: &query,
        form: &form,
    };
    match route {
        Route::MessageStatus => message_status(&fields),
        Route::CallTwiml => Ok(Event::CallAnswered {
            call: call_ref(&fields)?,
            answered_by: fields.form("AnsweredBy").map(answered_by),
        }),
        Route::CallGather => keys_pressed(&fields),
        Route::CallStatus => call_status(&fields),
    }
}

/// The form fields of a Twilio webhook POSTed to `url` with `body`, when
/// `signature` (its `X-Twilio-Signature`) is valid for them under one of
/// `tokens`. Public for the fuzz targets in fuzz/.
pub fn verified_form(
    tokens: &[&str],
    url: &str,
    signature: &str,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    signature::is_valid(tokens, url, &params, signature).then_some(params)
}

fn query_of(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// A request's query (what verifyd put in the URL) and form (what Twilio
/// sent), both covered by the signature.
struct Fields<'a> {
    query: &'a [(String, String)],
    form: &'a [(String, String)],
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Fields<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        find(self.query, name)
    }

    fn form(&self, name: &str) -> Option<&str> {
        find(self.form, name)
    }

    fn verification(&self) -> Result<(TenantId, VerificationId), Refused> {
        let tenant = self
            .query("tenant")
            .and_then(TenantId::parse)
            .ok_or_else(|| invalid("tenant", "missing or malformed"))?;
        let id = self
            .query("verification")
            .and_then(VerificationId::parse)
            .ok_or_else(|| invalid("verification", "missing or malformed"))?;
        Ok((tenant, id))
    }
}

/// Twilio's message status callback: `MessageSid`, `MessageStatus`,
/// `ErrorCode`.
fn message_status(fields: &Fields<'_>) -> Result<Event, Refused> {
    let (tenant, id) = fields.verification()?;
    let reference = fields
        .form("MessageSid")
        .filter(|sid| is_sid(sid, &["SM", "MM"]))
        .ok_or_else(|| invalid("MessageSid", "missing or malformed"))?;
    let status = fields
        .form("MessageStatus")
        .filter(|s| is_status_word(s, b"_-"))
        .ok_or_else(|| invalid("MessageStatus", "missing or malformed"))?;
    let error_code = match fields.form("ErrorCode") {
        None | Some("") => None,
        Some(code) if code.len() <= 8 && code.bytes().all(|b| b.is_ascii_digit()) => {
            Some(code.to_owned())
        }
        Some(_) => return Err(invalid("ErrorCode", "must be digits")),
    };
    Ok(Event::MessageStatus {
        tenant,
        id,
        report: DeliveryReport {
            reference: reference.to_owned(),
            status: status.to_owned(),
            error_code,
        },
    })
}

/// What every call webhook carries: the verification and call token from
/// the URL verifyd gave Twilio, and the CallSid Twilio sends.
fn call_ref(fields: &Fields<'_>) -> Result<CallRef, Refused> {
    let (tenant, id) = fields.verification()?;
    let token = fields
        .query("token")
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid("token", "missing or malformed"))?;
    let call_sid = fields
        .form("CallSid")
        .filter(|sid| is_sid(sid, &["CA"]))
        .ok_or_else(|| invalid("CallSid", "missing or malformed"))?;
    Ok(CallRef {
        tenant,
        id,
        key: CallKey {
            token: token.to_owned(),
            call_sid: call_sid.to_owned(),
        },
    })
}

fn keys_pressed(fields: &Fields<'_>) -> Result<Event, Refused> {
    let call = call_ref(fields)?;
    let menu = match fields.query("menu") {
        Some("main") => Menu::Main,
        Some("fraud") => Menu::Fraud,
        _ => return Err(invalid("menu", "must be main or fraud")),
    };
    let step = fields
        .query("step")
        .filter(|s| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("step", "missing or malformed"))?;
    let digits = fields
        .form("Digits")
        .filter(|d| {
            d.len() <= 16
                && d.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'#' || b == b'*')
        })
        .ok_or_else(|| invalid("Digits", "missing or malformed"))?;
    Ok(Event::KeysPressed {
        call,
        menu,
        step,
        digits: digits.to_owned(),
    })
}

/// Twilio's call status callback: `CallStatus` (initiated, ringing,
/// answered, completed, busy, no-answer, failed, canceled) and, once
/// detection has concluded, `AnsweredBy`.
fn call_status(fields: &Fields<'_>) -> Result<Event, Refused> {
    let call = call_ref(fields)?;
    let status = fields
        .form("CallStatus")
        .filter(|s| is_status_word(s, b"-"))
        .ok_or_else(|| invalid("CallStatus", "missing or malformed"))?;
    let report = DeliveryReport {
        reference: call.key.call_sid.clone(),
        status: status.to_owned(),
        error_code: None,
    };
    Ok(Event::CallStatus {
        call,
        report,
        answered_by: fields.form("AnsweredBy").map(answered_by),
    })
}

/// Twilio's `AnsweredBy` values: `human`, `machine_start`,
/// `machine_end_beep`, `machine_end_silence`, `machine_end_other`, `fax`,
/// `unknown`.
fn answered_by(word: &str) -> AnsweredBy {
    match word {
        "machine_start"
        | "machine_end_beep"
        | "machine_end_silence"
        | "machine_end_other"
        | "fax" => AnsweredBy::Machine,
        "unknown" => AnsweredBy::Unknown,
        _ => AnsweredBy::Person,
    }
}

/// A status word: 1 to 32 lowercase letters and `separators`.
fn is_status_word(word: &str, separators: &[u8]) -> bool {
    (1..=32).contains(&word.len())
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || separators.contains(&b))
}

/// Two letters from `prefixes` and 32 hex digits.
fn is_sid(sid: &str, prefixes: &[&str]) -> bool {
    sid.len() == 34
        && prefixes.iter().any(|p| sid.starts_with(p))
        && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The TwiML of a call step; a gather posts back to `provider`'s gather
/// route with the same verification and token. It may say a code, so it is
/// wiped when dropped.
pub fn render(
    public_base: &Url,
    provider: &str,
    call: &CallRef,
    step: &CallStep,
) -> Zeroizing<String> {
    let language = twiml::say_language(step.locale.as_deref());
    let mut verbs: Vec<Verb<'_>> = step.say.iter().map(|s| Verb::Say(s.as_str())).collect();
    match &step.next {
        Next::Hangup => verbs.push(Verb::Hangup),
        &Next::Gather {
            menu,
            step,
            one_key,
            ref prompt,
            ref goodbye,
            timeout_secs,
        } => {
            let action = url(
                public_base,
                provider,
                Route::CallGather,
                &call.tenant,
                &call.id,
                Some(&call.key.token),
                Some((menu, step)),
            )
            .expect("the public base URL is an absolute http(s) URL");
            verbs.push(Verb::Gather(Gather {
                action: action.into(),
                num_digits: one_key.then_some(1),
                // One key: `#` must arrive as a key, not end the input.
                finish_on_key: if one_key { "" } else { "#" },
                timeout_secs,
                prompt,
            }));
            // Reached only when the gather timed out without a key.
            if !goodbye.is_empty() {
                verbs.push(Verb::Say(goodbye));
            }
            verbs.push(Verb::Hangup);
        }
    }
    twiml::response(language, &verbs)
}
