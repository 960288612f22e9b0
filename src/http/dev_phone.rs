//! The simulated phone's page, on dev mode's loopback webhook listener: a
//! developer sees the calls verifyd places, answers them, and presses
//! keys, which the phone ([`DevPhone`]) sends to verifyd's webhooks as
//! Twilio would. Plain HTML forms that refresh themselves; no script.
//!
//! The page shows what calls say, codes included, as the console does, so
//! it answers only requests addressed to a loopback host that no proxy
//! forwarded (a DNS-rebinding page or a tunnel cannot read it), and its
//! forms carry a token made at startup and must come from its own origin
//! (a page on another origin cannot press keys).

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use minijinja::{Environment, context};
use rand::Rng as _;
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use crate::delivery::dev_phone::{Call, DevPhone, End, Line, State as CallState};

const PAGE: &str = "/dev/phone";

#[derive(Clone)]
struct Page {
    phone: DevPhone,
    /// Every form carries it.
    csrf: Arc<str>,
    templates: Arc<Environment<'static>>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page").finish_non_exhaustive()
    }
}

/// The page and its forms, for the webhook listener's router.
pub fn router(phone: DevPhone) -> Router {
    let mut templates = Environment::new();
    templates
        .add_template("phone.html", include_str!("dev_phone.html"))
        .expect("the phone's template parses");
    let page = Page {
        phone,
        csrf: hex::encode(rand::rng().random::<[u8; 16]>()).into(),
        templates: Arc::new(templates),
    };
    Router::new()
        .route(PAGE, get(show))
        .route("/dev/phone/calls/{sid}", post(act))
        .with_state(page)
}

async fn show(State(page): State<Page>, headers: HeaderMap, uri: Uri) -> Response {
    if !from_this_machine(&headers) {
        return misdirected();
    }
    let calls: Vec<minijinja::Value> = page
        .phone
        .calls()
        .iter()
        .map(|call| minijinja::Value::from(minijinja::value::Serde(CallView::of(call))))
        .collect();
    let html = page.templates.get_template("phone.html").and_then(|t| {
        t.render(context! {
            calls,
            csrf => &*page.csrf,
            // `?refresh=0` stops the page refreshing itself.
            refresh => uri.query() != Some("refresh=0"),
        })
    });
    match html {
        Ok(html) => with_page_headers(Html(html).into_response()),
        Err(error) => {
            tracing::error!(%error, "the simulated phone's page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render\n",
            )
                .into_response()
        }
    }
}

/// One form on a call: an action (`answer`, `voicemail`, `decline`,
/// `ring-out`, `time-out`, `hang-up`) or a key.
async fn act(
    State(page): State<Page>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !from_this_machine(&headers) {
        return misdirected();
    }
    // A browser says where a form came from: only the page itself (or
    // the address bar) may press keys.
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|site| site != "same-origin" && site != "none") {
        return (
            StatusCode::FORBIDDEN,
            "forms come from the phone's own page\n",
        )
            .into_response();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let csrf_ok =
        field("csrf").is_some_and(|t| bool::from(t.as_bytes().ct_eq(page.csrf.as_bytes())));
    if !csrf_ok {
        return (
            StatusCode::FORBIDDEN,
            "this form is stale: reload the page\n",
        )
            .into_response();
    }
    let phone = &page.phone;
    let done = match (field("action"), field("key")) {
        (_, Some(key)) => match single_char(key) {
            Some(key) => phone.press(&sid, key).await,
            None => return (StatusCode::BAD_REQUEST, "invalid key\n").into_response(),
        },
        (Some("answer"), None) => phone.answer(&sid, false).await,
        (Some("voicemail"), None) => phone.answer(&sid, true).await,
        (Some("decline" | "hang-up"), None) => phone.hang_up(&sid).await,
        (Some("ring-out"), None) => phone.ring_out(&sid).await,
        (Some("time-out"), None) => phone.let_time_out(&sid).await,
        _ => return (StatusCode::BAD_REQUEST, "invalid action\n").into_response(),
    };
    if let Err(error) = done {
        // The page shows where the call stands; a stale click is no fault.
        tracing::debug!(%error, "simulated phone: nothing done");
    }
    with_page_headers(Redirect::to(PAGE).into_response())
}

fn single_char(text: &str) -> Option<char> {
    let mut chars = text.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// Whether the request came straight from this machine: addressed to a
/// loopback host, with no proxy's forwarding headers (a tunnel that
/// rewrites the Host header still adds them).
fn from_this_machine(headers: &HeaderMap) -> bool {
    let forwarded = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    ]
    .iter()
    .any(|name| headers.contains_key(*name));
    !forwarded && addressed_to_loopback(headers)
}

/// Whether the request names a loopback host (`127.0.0.1`, `[::1]`,
/// `localhost`), as a browser on the developer's machine does.
fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn misdirected() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        "the simulated phone answers on a loopback address only\n",
    )
        .into_response()
}

/// No caching (the page shows codes), no framing, no scripts.
fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A call as the page shows it: what it said may be a code, so it has no
/// `Debug`.
#[derive(Serialize)]
struct CallView {
    sid: String,
    to: String,
    state: String,
    lines: Vec<LineView>,
    ringing: bool,
    waits_for_keys: bool,
    live: bool,
    typed: String,
}

#[derive(Serialize)]
struct LineView {
    kind: &'static str,
    text: String,
}

impl CallView {
    fn of(call: &Call) -> Self {
        Self {
            sid: call.sid.clone(),
            to: call.to.clone(),
            state: state_text(call),
            lines: call
                .transcript
                .iter()
                .map(|line| match line {
                    Line::Said(text) => LineView {
                        kind: "said",
                        text: text.to_string(),
                    },
                    Line::Pressed(keys) => LineView {
                        kind: "pressed",
                        text: format!("You pressed {keys}"),
                    },
                })
                .collect(),
            ringing: call.state == CallState::Ringing,
            waits_for_keys: call.waits_for_keys(),
            live: call.is_live(),
            typed: call.typed().to_owned(),
        }
    }
}

fn state_text(call: &Call) -> String {
    match &call.state {
        CallState::Ringing => "ringing".to_owned(),
        CallState::Connecting => "connecting".to_owned(),
        CallState::Connected if call.waits_for_keys() => "waiting for keys".to_owned(),
        CallState::Connected => "on the call".to_owned(),
        CallState::Ended(end) => match end {
            End::HungUp => "ended: you hung up".to_owned(),
            End::EndedByVerifyd => "ended by verifyd".to_owned(),
            End::Declined => "ended: declined".to_owned(),
            End::NotAnswered => "ended: not answered".to_owned(),
            End::Finished => "ended".to_owned(),
            End::Failed(reason) => format!("failed: {reason}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn only_loopback_hosts_see_the_page() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(addressed_to_loopback(&host(ok)), "{ok}");
        }
        for refused in [
            "attacker.example:8080",
            "10.0.0.1:8080",
            "localhost.attacker.example",
        ] {
            assert!(!addressed_to_loopback(&host(refused)), "{refused}");
        }
        assert!(!addressed_to_loopback(&HeaderMap::new()));
        let mut tunneled = host("127.0.0.1:8080");
        tunneled.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert!(!from_this_machine(&tunneled), "a proxy forwarded it");
        assert!(from_this_machine(&host("127.0.0.1:8080")));
    }
}
