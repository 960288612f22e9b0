//! The public webhook listener: what providers reach through the ingress.
//!
//! Every request must carry a valid provider signature over the public URL
//! it was sent to; anything else gets 403 and changes nothing. Fields are
//! validated before anything is applied, and a bad one gets 400 naming it.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, Uri},
    routing::post,
};
use url::Url;

use crate::{
    config::Secret,
    delivery::twilio::signature,
    domain::{DeliveryReport, TenantId, VerificationId},
    service::{LookupError, Verifier},
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
}

pub fn router(verifier: Arc<Verifier>, public_base: Url, twilio: TwilioTokens) -> Router {
    Router::new()
        .route(
            "/webhooks/twilio/{provider}/message-status",
            post(twilio_message_status),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Webhooks {
            verifier,
            public_base,
            twilio: Arc::new(twilio),
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
        let forbidden = || (StatusCode::FORBIDDEN, "invalid signature\n".to_owned());
        let Some(tokens) = self.twilio.get(provider) else {
            return Err((StatusCode::NOT_FOUND, "unknown provider\n".to_owned()));
        };
        let signature = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(forbidden)?;
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let tokens: Vec<&str> = tokens.iter().map(Secret::expose).collect();
        if !signature::is_valid(&tokens, &self.public_url(uri), &params, signature) {
            tracing::warn!(provider, "webhook refused: bad signature");
            return Err(forbidden());
        }
        Ok(params)
    }
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

/// Two letters from `prefixes` and 32 hex digits.
fn is_twilio_sid(sid: &str, prefixes: &[&str]) -> bool {
    sid.len() == 34
        && prefixes.iter().any(|p| sid.starts_with(p))
        && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}
