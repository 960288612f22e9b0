//! The public webhook listener: what providers reach through the ingress.
//!
//! Every request must carry a valid provider signature over the public URL
//! it was sent to; anything else gets 403 and changes nothing. Fields are
//! validated before anything is applied, and a bad one gets 400 naming it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, Uri},
    routing::post,
};
use url::Url;

use crate::{
    delivery::twilio::{
        signature,
        twiml::{self, Gather, Verb},
    },
    domain::{DeliveryReport, TenantId, VerificationId, voice::Menu},
    secret::Secret,
    service::{CallError, CallStep, LookupError, Next, Verifier},
    store::CallKey,
    telemetry::LogThrottle,
};

/// Callbacks are a few hundred bytes of form fields.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The auth tokens each Twilio provider's webhooks are signed with: the
/// current one, and the previous one during a rotation.
pub type TwilioTokens = HashMap<String, Vec<Secret>>;

#[derive(Debug, Clone)]
struct Webhooks {
    verifier: Arc<Verifier>,
    public_base: Url,
    twilio: Arc<TwilioTokens>,
    /// Anyone can post a bad signature, at any rate: each is counted, and
    /// logged at most once a minute.
    bad_signatures: Arc<LogThrottle>,
}

pub fn router(verifier: Arc<Verifier>, public_base: Url, twilio: TwilioTokens) -> Router {
    Router::new()
        .route(
            "/webhooks/twilio/{provider}/message-status",
            post(twilio_message_status),
        )
        .route(
            "/webhooks/twilio/{provider}/voice/twiml",
            post(twilio_voice_twiml),
        )
        .route(
            "/webhooks/twilio/{provider}/voice/gather",
            post(twilio_voice_gather),
        )
        .route(
            "/webhooks/twilio/{provider}/voice/status",
            post(twilio_voice_status),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Webhooks {
            verifier,
            public_base,
            twilio: Arc::new(twilio),
            bad_signatures: Arc::new(LogThrottle::new(Duration::from_secs(60))),
        })
}

type Reply = (StatusCode, String);

fn bad(field: &str, problem: &str) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        format!("invalid {field}: {problem}\n"),
    )
}

impl Webhooks {
    /// The URL the provider requested: the public base and the path and
    /// query as received (an ingress forwards them unchanged).
    fn public_url(&self, uri: &Uri) -> String {
        let base = self.public_base.as_str().trim_end_matches('/');
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{base}{path}")
    }

    /// Checks `X-Twilio-Signature` and returns the form fields.
    fn verify_twilio(
        &self,
        provider: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, Reply> {
        let metrics = self.verifier.metrics();
        let Some(tokens) = self.twilio.get(provider) else {
            metrics.webhook_refused("", "provider");
            return Err((StatusCode::NOT_FOUND, "unknown provider\n".to_owned()));
        };
        let signature = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        let tokens: Vec<&str> = tokens.iter().map(Secret::expose).collect();
        signature
            .and_then(|signature| twilio_form(&tokens, &self.public_url(uri), signature, body))
            .ok_or_else(|| {
                metrics.webhook_refused(provider, "signature");
                let now = self.verifier.clock().now();
                if let Some(held_back) = self.bad_signatures.admit(now) {
                    tracing::warn!(
                        provider,
                        not_logged_since_last = held_back,
                        "webhook refused: signature missing or bad \
                         (logged at most once a minute; verifyd_webhooks_refused_total counts each)"
                    );
                }
                (StatusCode::FORBIDDEN, "invalid signature\n".to_owned())
            })
    }
}

/// The form fields of a Twilio webhook POSTed to `url` with `body`, when
/// `signature` (its `X-Twilio-Signature`) is valid for them under one of
/// `tokens`. Public for the fuzz targets in fuzz/.
pub fn twilio_form(
    tokens: &[&str],
    url: &str,
    signature: &str,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    signature::is_valid(tokens, url, &params, signature).then_some(params)
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Twilio's message status callback: `MessageSid`, `MessageStatus`,
/// `ErrorCode`; verifyd put the tenant and verification id in the callback
/// URL's query, which the signature covers.
async fn twilio_message_status(
    State(hooks): State<Webhooks>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let params = match hooks.verify_twilio(&provider, &uri, &headers, &body) {
        Ok(params) => params,
        Err(reply) => return reply,
    };
    let Some(tenant) = query(&uri, "tenant").as_deref().and_then(TenantId::parse) else {
        return bad("tenant", "missing or malformed");
    };
    let Some(id) = query(&uri, "verification")
        .as_deref()
        .and_then(VerificationId::parse)
    else {
        return bad("verification", "missing or malformed");
    };
    let reference = match field(&params, "MessageSid") {
        Some(sid) if is_twilio_sid(sid, &["SM", "MM"]) => sid.to_owned(),
        _ => return bad("MessageSid", "missing or malformed"),
    };
    let status = match field(&params, "MessageStatus") {
        Some(s)
            if (1..=32).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-') =>
        {
            s.to_owned()
        }
        _ => return bad("MessageStatus", "missing or malformed"),
    };
    let error_code = match field(&params, "ErrorCode") {
        None | Some("") => None,
        Some(code) if code.len() <= 8 && code.bytes().all(|b| b.is_ascii_digit()) => {
            Some(code.to_owned())
        }
        Some(_) => return bad("ErrorCode", "must be digits"),
    };
    let report = DeliveryReport {
        reference,
        status,
        error_code,
    };
    match hooks.verifier.record_delivery(&tenant, &id, &report).await {
        // A callback for a verification that is gone needs no retry.
        Ok(()) | Err(LookupError::NotFound) => (StatusCode::NO_CONTENT, String::new()),
        Err(error) => {
            tracing::error!(%error, "cannot record a delivery status");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "try again later\n".to_owned(),
            )
        }
    }
}

/// What every call webhook carries: the verification and call token from
/// the URL verifyd gave Twilio, and the CallSid Twilio sends.
struct CallRequest {
    tenant: TenantId,
    id: VerificationId,
    key: CallKey,
    params: Vec<(String, String)>,
}

impl Webhooks {
    fn call_request(
        &self,
        provider: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallRequest, Reply> {
        let params = self.verify_twilio(provider, uri, headers, body)?;
        let tenant = query(uri, "tenant")
            .as_deref()
            .and_then(TenantId::parse)
            .ok_or_else(|| bad("tenant", "missing or malformed"))?;
        let id = query(uri, "verification")
            .as_deref()
            .and_then(VerificationId::parse)
            .ok_or_else(|| bad("verification", "missing or malformed"))?;
        let token = query(uri, "token")
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("token", "missing or malformed"))?;
        let call_sid = field(&params, "CallSid")
            .filter(|sid| is_twilio_sid(sid, &["CA"]))
            .ok_or_else(|| bad("CallSid", "missing or malformed"))?
            .to_owned();
        Ok(CallRequest {
            tenant,
            id,
            key: CallKey { token, call_sid },
            params,
        })
    }

    /// Turns a call step into TwiML; a gather posts back to this provider's
    /// gather route with the same verification and token.
    fn twiml(&self, provider: &str, call: &CallRequest, step: CallStep) -> Reply {
        let language = twiml::say_language(step.locale.as_deref());
        let mut verbs: Vec<Verb> = step.say.into_iter().map(Verb::Say).collect();
        match step.next {
            Next::Hangup => verbs.push(Verb::Hangup),
            Next::Gather {
                menu,
                one_key,
                prompt,
                goodbye,
                timeout_secs,
            } => {
                let mut action = self.public_base.clone();
                action.set_path(&format!(
                    "{}/webhooks/twilio/{provider}/voice/gather",
                    self.public_base.path().trim_end_matches('/')
                ));
                action
                    .query_pairs_mut()
                    .append_pair("tenant", call.tenant.as_str())
                    .append_pair("verification", call.id.as_str())
                    .append_pair("token", &call.key.token)
                    .append_pair(
                        "menu",
                        match menu {
                            Menu::Main => "main",
                            Menu::Fraud => "fraud",
                        },
                    );
                verbs.push(Verb::Gather(Gather {
                    action: action.into(),
                    num_digits: one_key.then_some(1),
                    // One key: `#` must arrive as a key, not end the input.
                    finish_on_key: if one_key { "" } else { "#" },
                    timeout_secs,
                    prompt,
                }));
                // Reached only when the gather timed out without a key.
                verbs.push(Verb::Say(goodbye));
                verbs.push(Verb::Hangup);
            }
        }
        (StatusCode::OK, twiml::response(language, &verbs))
    }
}

fn call_error(error: &CallError) -> Reply {
    match error {
        CallError::Forbidden => (StatusCode::FORBIDDEN, "not this call\n".to_owned()),
        CallError::NotFound | CallError::Lookup(LookupError::NotFound) => {
            (StatusCode::NOT_FOUND, "unknown verification\n".to_owned())
        }
        error => {
            tracing::error!(%error, "call webhook failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "try again later\n".to_owned(),
            )
        }
    }
}

type Xml = ([(axum::http::HeaderName, &'static str); 1], Reply);

fn xml(reply: Reply) -> Xml {
    let content_type = if reply.0 == StatusCode::OK {
        "text/xml; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], reply)
}

/// The common shape of the call routes that answer with TwiML: check the
/// request, run `step`, and speak its result.
async fn answer_call(
    hooks: &Webhooks,
    provider: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    step: impl AsyncFnOnce(&CallRequest) -> Result<Result<CallStep, CallError>, Reply>,
) -> Xml {
    let call = match hooks.call_request(provider, uri, headers, body) {
        Ok(call) => call,
        Err(reply) => return xml(reply),
    };
    xml(match step(&call).await {
        Ok(Ok(step)) => hooks.twiml(provider, &call, step),
        Ok(Err(e)) => call_error(&e),
        Err(bad_input) => bad_input,
    })
}

/// Twilio fetches what an answered call says.
async fn twilio_voice_twiml(
    State(hooks): State<Webhooks>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Xml {
    answer_call(&hooks, &provider, &uri, &headers, &body, async |call| {
        let answered_by = field(&call.params, "AnsweredBy");
        Ok(hooks
            .verifier
            .call_answered(&call.tenant, &call.id, &call.key, answered_by)
            .await)
    })
    .await
}

/// Twilio posts the keys the user pressed.
async fn twilio_voice_gather(
    State(hooks): State<Webhooks>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Xml {
    answer_call(&hooks, &provider, &uri, &headers, &body, async |call| {
        let menu = match query(&uri, "menu").as_deref() {
            Some("main") => Menu::Main,
            Some("fraud") => Menu::Fraud,
            _ => return Err(bad("menu", "must be main or fraud")),
        };
        let digits = field(&call.params, "Digits")
            .filter(|d| {
                d.len() <= 16
                    && d.bytes()
                        .all(|b| b.is_ascii_digit() || b == b'#' || b == b'*')
            })
            .ok_or_else(|| bad("Digits", "missing or malformed"))?;
        Ok(hooks
            .verifier
            .call_keys(&call.tenant, &call.id, &call.key, menu, digits)
            .await)
    })
    .await
}

/// Twilio reports the call's progress: initiated, ringing, answered,
/// completed (or busy, no-answer, failed, canceled).
async fn twilio_voice_status(
    State(hooks): State<Webhooks>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let call = match hooks.call_request(&provider, &uri, &headers, &body) {
        Ok(call) => call,
        Err(reply) => return reply,
    };
    let status = match field(&call.params, "CallStatus") {
        Some(s)
            if (1..=32).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') =>
        {
            s.to_owned()
        }
        _ => return bad("CallStatus", "missing or malformed"),
    };
    let answered_by = field(&call.params, "AnsweredBy").map(str::to_owned);
    match hooks
        .verifier
        .call_status(
            &call.tenant,
            &call.id,
            &call.key,
            &status,
            answered_by.as_deref(),
        )
        .await
    {
        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
        Err(e) => call_error(&e),
    }
}

/// Two letters from `prefixes` and 32 hex digits.
fn is_twilio_sid(sid: &str, prefixes: &[&str]) -> bool {
    sid.len() == 34
        && prefixes.iter().any(|p| sid.starts_with(p))
        && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}
