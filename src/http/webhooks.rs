//! The public webhook listener: what providers reach through the ingress.
//!
//! The routes are Twilio's ([`twilio::webhook`] reads each request into an
//! event and renders the TwiML a call step becomes); this module mounts
//! them, passes each event to the service, and answers in HTTP. A request
//! without a valid signature over the public URL it was sent to gets 403
//! and changes nothing; a bad field gets 400 naming it.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::post,
};
use url::Url;
use zeroize::Zeroizing;

use crate::{
    delivery::twilio::webhook::{self, CallRef, Event, Refused, Request, Route, WebhookTokens},
    domain::voice::CallStep,
    service::{CallError, LookupError, Verifier},
    telemetry::LogThrottle,
};

/// Callbacks are a few hundred bytes of form fields.
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
struct Webhooks {
    verifier: Arc<Verifier>,
    public_base: Url,
    twilio: Arc<WebhookTokens>,
    /// Anyone can post a bad signature, at any rate: each is counted, and
    /// logged at most once a minute.
    bad_signatures: Arc<LogThrottle>,
}

pub fn router(verifier: Arc<Verifier>, public_base: Url, twilio: WebhookTokens) -> Router {
    let hooks = Webhooks {
        verifier,
        public_base,
        twilio: Arc::new(twilio),
        bad_signatures: Arc::new(LogThrottle::new(Duration::from_secs(60))),
    };
    Route::ALL
        .into_iter()
        .fold(Router::new(), |router, route| {
            let handler = move |hooks, provider, uri, headers, body| {
                twilio_webhook(route, hooks, provider, uri, headers, body)
            };
            router.route(&route.pattern(), post(handler))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(hooks)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

fn try_again_later() -> Response {
    plain(StatusCode::SERVICE_UNAVAILABLE, "try again later\n")
}

async fn twilio_webhook(
    route: Route,
    State(hooks): State<Webhooks>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let url = hooks.public_url(&uri);
    let request = Request {
        provider: &provider,
        url: &url,
        signature: headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok()),
        body: &body,
    };
    let event = match webhook::read(&hooks.twilio, route, &request) {
        Ok(event) => event,
        Err(refused) => return hooks.refused(&provider, refused),
    };
    let verifier = &hooks.verifier;
    match event {
        Event::MessageStatus { tenant, id, report } => {
            match verifier.record_delivery(&tenant, &id, &report).await {
                // A callback for a verification that is gone needs no retry.
                Ok(()) | Err(LookupError::NotFound) => plain(StatusCode::NO_CONTENT, ""),
                Err(error) => {
                    tracing::error!(%error, "cannot record a delivery status");
                    try_again_later()
                }
            }
        }
        Event::CallAnswered { call, answered_by } => {
            let step = verifier
                .call_answered(&call.tenant, &call.id, &call.key, answered_by)
                .await;
            hooks.speak(&provider, &call, step)
        }
        Event::KeysPressed {
            call,
            menu,
            step,
            digits,
        } => {
            let step = verifier
                .call_keys(&call.tenant, &call.id, &call.key, (menu, step), &digits)
                .await;
            hooks.speak(&provider, &call, step)
        }
        Event::CallStatus {
            call,
            report,
            answered_by,
        } => match verifier
            .call_status(&call.tenant, &call.id, &call.key, report, answered_by)
            .await
        {
            Ok(()) => plain(StatusCode::NO_CONTENT, ""),
            Err(e) => call_error(&e),
        },
    }
}

impl Webhooks {
    /// The URL the provider requested: the public base and the path and
    /// query as received (an ingress forwards them unchanged).
    fn public_url(&self, uri: &Uri) -> String {
        let base = self.public_base.as_str().trim_end_matches('/');
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{base}{path}")
    }

    /// Answers a request that was not read, counting it.
    fn refused(&self, provider: &str, refused: Refused) -> Response {
        let metrics = self.verifier.metrics();
        match refused {
            Refused::UnknownProvider => {
                metrics.webhook_refused("", "provider");
                plain(StatusCode::NOT_FOUND, "unknown provider\n")
            }
            Refused::Signature => {
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
                plain(StatusCode::FORBIDDEN, "invalid signature\n")
            }
            Refused::Invalid { field, problem } => (
                StatusCode::BAD_REQUEST,
                format!("invalid {field}: {problem}\n"),
            )
                .into_response(),
        }
    }

    /// A call step as TwiML, or the error as plain text.
    fn speak(&self, provider: &str, call: &CallRef, step: Result<CallStep, CallError>) -> Response {
        match step {
            Ok(step) => {
                let twiml = webhook::render(&self.public_base, provider, call, &step);
                (
                    [(CONTENT_TYPE, "text/xml; charset=utf-8")],
                    wiped_body(twiml),
                )
                    .into_response()
            }
            Err(e) => call_error(&e),
        }
    }
}

/// A response body that is wiped once the server is done with it: a
/// read-aloud call's TwiML says the code. The body's bytes are the
/// document's own (no copy); what hyper and the kernel copy on the way out
/// is theirs (docs/security.md).
fn wiped_body(mut document: Zeroizing<String>) -> Body {
    let bytes = Zeroizing::new(std::mem::take(&mut *document).into_bytes());
    Body::from(Bytes::from_owner(bytes))
}

fn call_error(error: &CallError) -> Response {
    match error {
        CallError::Forbidden => plain(StatusCode::FORBIDDEN, "not this call\n"),
        CallError::NotFound | CallError::Lookup(LookupError::NotFound) => {
            plain(StatusCode::NOT_FOUND, "unknown verification\n")
        }
        error => {
            tracing::error!(%error, "call webhook failed");
            try_again_later()
        }
    }
}
