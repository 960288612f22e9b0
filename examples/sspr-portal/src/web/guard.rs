//! What every response carries and every POST passes before a handler
//! sees it.

use axum::{
    Form,
    body::Body,
    extract::{FromRequest as _, Request, State},
    http::{
        HeaderName, HeaderValue, Method, StatusCode,
        header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS},
    },
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use serde::Deserialize;

use super::{Session, View};
use crate::AppState;

/// Only this site's own files; no inline script or style (so an injected
/// `<script>` or `style=` does nothing), no framing, forms post here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest form the portal takes.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Sets the security headers on every response, pages, redirects, event
/// streams and static files alike. `no-store`: pages show masked methods
/// and forms with tokens, which no cache (nor the back button after
/// signing out) should keep.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set: [(HeaderName, &'static str); 4] = [
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize)]
struct CsrfField {
    csrf: String,
}

/// Every POST carries its session's CSRF token in the `csrf` field, or is
/// answered 403 before any handler runs: a check in one place cannot be
/// forgotten by a new form. The body is read here and handed on intact.
pub async fn csrf_guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let session = request.extensions().get::<Session>().cloned();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let token = Form::<CsrfField>::from_request(probe, &()).await.ok();
    let valid = match (&session, token) {
        (Some(session), Some(Form(field))) => session.csrf_matches(&field.csrf),
        _ => false,
    };
    if !valid {
        return expired_form(&app);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A POST without a live session or with the wrong token: the session
/// timed out, the portal restarted, or another site sent the form.
fn expired_form(app: &AppState) -> Response {
    app.plain(
        View::new("expired.html", "This form has expired")
            .error("This form has expired. Go back and try again.")
            .status(StatusCode::FORBIDDEN),
    )
}
