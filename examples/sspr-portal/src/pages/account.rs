//! Signing in and out, and the pages that list an account's methods.

use axum::{
    Extension, Form,
    extract::State,
    response::{IntoResponse as _, Redirect, Response},
};
use minijinja::Value;
use serde::Deserialize;

use super::{blocking, register::sign_in, to_login};
use crate::{
    AppState, accounts, password,
    web::{Session, View},
};

pub async fn login_show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    app.page(&session, View::new("login.html", "Sign in"))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    password: String,
}

pub async fn login_submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<LoginForm>,
) -> Response {
    let name = accounts::normalize_name(&form.account).ok();
    let stored = name
        .as_deref()
        .and_then(|n| app.accounts.get(n))
        .map(|a| a.password_hash);
    let known = stored.is_some();
    // An unknown account is checked against a dummy hash, so it takes as
    // long as a known one: the time to answer tells nothing.
    let phc = stored.unwrap_or_else(|| app.dummy_hash.clone());
    let typed = form.password;
    let matched = blocking(move || password::verify(&typed, &phc))
        .await
        .unwrap_or(false);
    match name.filter(|_| known && matched) {
        Some(name) => {
            tracing::info!("signed in");
            sign_in(&session, name);
            Redirect::to("/account").into_response()
        }
        None => {
            let view = View::new("login.html", "Sign in")
                .form(&[("account", form.account.trim())])
                .error("Wrong account name or password.")
                .status(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            app.page(&session, view)
        }
    }
}

/// The account's methods, masked.
fn methods(app: &AppState, name: &str) -> Value {
    app.accounts
        .get(name)
        .map(|a| a.masked_methods())
        .unwrap_or_default()
        .into_iter()
        .map(Value::from)
        .collect()
}

pub async fn show(State(app): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let Some(name) = session.account() else {
        return to_login();
    };
    let view = View::new("methods.html", "Your account")
        .set("methods", methods(&app, &name))
        .set("account", name);
    app.page(&session, view)
}

/// GET /register/done.
pub async fn done(State(app): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let Some(name) = session.account() else {
        return to_login();
    };
    let view = View::new("methods.html", "You're all set")
        .set("methods", methods(&app, &name))
        .set("done", true);
    app.page(&session, view)
}

pub async fn logout(Extension(session): Extension<Session>) -> Response {
    session.end();
    Redirect::to("/").into_response()
}
