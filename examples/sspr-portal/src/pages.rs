//! The routes, one module per flow. Every form is a plain HTML POST: on
//! success it answers 303 to the next page (post/redirect/get, so a reload
//! does not send it again); on an error it shows the form again, errors
//! beside their fields, the other values kept (never a password).

mod account;
mod assets;
mod events;
mod register;
mod reset;
mod verify;

use axum::{
    Extension, Router,
    extract::State,
    middleware::{from_fn_with_state, map_response},
    response::{IntoResponse as _, Redirect, Response},
    routing::{get, post},
};
use rand::Rng as _;

use crate::{
    AppState,
    web::{Session, View, csrf_guard, security_headers, session_layer},
};

pub fn router(app: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(home))
        .route("/register", get(register::show).post(register::submit))
        .route(
            "/register/phone",
            get(register::phone_show).post(register::phone_submit),
        )
        .route(
            "/register/email",
            get(register::email_show).post(register::email_submit),
        )
        .route("/register/done", get(account::done))
        .route("/verify", get(verify::show).post(verify::check))
        .route("/verify/resend", post(verify::resend))
        .route("/verify/events", get(events::stream))
        // Finishing a step changes state: a POST, with its CSRF token (the
        // script submits the page's own form). A GET only goes to /verify.
        .route(
            "/verify/complete",
            get(verify::to_verify).post(verify::complete),
        )
        .route("/reset", get(reset::show).post(reset::submit))
        .route(
            "/reset/method",
            get(reset::method_show).post(reset::method_submit),
        )
        .route(
            "/reset/password",
            get(reset::password_show).post(reset::password_submit),
        )
        .route("/reset/done", get(reset::done))
        .route(
            "/login",
            get(account::login_show).post(account::login_submit),
        )
        .route("/account", get(account::show))
        .route("/logout", post(account::logout))
        .fallback(not_found)
        // Layers run outside in: the session first, then the CSRF check,
        // which needs it.
        .layer(from_fn_with_state(app.clone(), csrf_guard))
        .layer(from_fn_with_state(app.clone(), session_layer));
    Router::new()
        .merge(pages)
        // Static files need no session.
        .route("/static/site.css", get(assets::css))
        .route("/static/verify.js", get(assets::js))
        .layer(map_response(security_headers))
        .with_state(app)
}

async fn home(State(app): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let signed_in = session.account();
    app.plain(View::new("home.html", "Account help").set("signed_in", signed_in))
}

async fn not_found(State(app): State<AppState>) -> Response {
    app.plain(
        View::new("message.html", "Page not found")
            .set("message", "There is no such page here.")
            .status(axum::http::StatusCode::NOT_FOUND),
    )
}

/// Where a page that needs a signed-in account sends anyone else.
fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// A fresh random `idem` value for a form that starts or resends: a double
/// submit of the same form carries the same value, and verifyd answers the
/// second with the first's verification instead of sending again.
fn new_idem() -> String {
    hex::encode(rand::rng().random::<[u8; 16]>())
}

/// Runs blocking work (password hashing) off the async threads.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            None
        }
    }
}
