//! "Forgot my password": an account name and a bot check, then a method
//! to receive a code, then a new password.
//!
//! Nothing here may tell whether an account exists. The method page shows
//! nothing of the account: the same three choices for any name, and a
//! field for the method's full number or address (masked methods are shown
//! only to a signed-in user, on /account). A code goes out only when the
//! account exists, has the method, and the user typed it; otherwise the
//! same verification page follows, with a decoy that answers every code
//! "That code isn't right." without calling verifyd.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Extension, Form,
    extract::{ConnectInfo, State},
    response::{IntoResponse as _, Redirect, Response},
};
use serde::Deserialize;

use super::{
    blocking, new_idem,
    register::{check_email, message, show_problem, too_many},
    verify,
};
use crate::{
    App, AppState,
    accounts::{self, Account},
    flow::{Challenge, Channel, Flow, Pending, Reset, SessionData, Target},
    mask, password, phone,
    verify::Problem,
    web::{Session, View},
};

#[derive(Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    challenge: String,
}

/// The account page, with a new question (the answer stays in the session).
fn account_view(session: &Session, account: &str) -> View {
    session.ensure();
    let challenge = Challenge::new();
    let question = challenge.question.clone();
    session.with(|d| d.challenge = Some(challenge));
    View::new("reset.html", "Reset your password")
        .set("question", question)
        .form(&[("account", account)])
}

pub async fn show(State(app): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let typed = session
        .with(|d| d.reset.as_ref().map(|r| r.account.clone()))
        .flatten()
        .unwrap_or_default();
    app.page(&session, account_view(&session, &typed))
}

pub async fn submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<AccountForm>,
) -> Response {
    if let Err(wait) = app.reset_limit.attempt(client.ip(), Instant::now()) {
        return too_many(&app, &session, account_view(&session, &form.account), wait);
    }
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let name = accounts::normalize_name(&form.account)
        .map_err(|e| errors.push(("account", e.to_owned())))
        .ok();
    // One try per question, right or wrong.
    let answered = session
        .with(|d| {
            d.challenge
                .take()
                .is_some_and(|c| c.is_answered_by(&form.challenge))
        })
        .unwrap_or(false);
    if !answered {
        errors.push((
            "challenge",
            "That answer isn't right. Try this one.".to_owned(),
        ));
    }
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        let view = account_view(&session, &form.account).field_errors(&errors);
        return app.page(&session, view);
    };
    session.with(|d| {
        d.reset = Some(Reset {
            account: name,
            authorized: false,
        });
        d.pending = None;
    });
    Redirect::to("/reset/method").into_response()
}

/// The account name this session is resetting, if it got that far.
fn resetting(session: &Session) -> Option<String> {
    session
        .with(|d| d.reset.as_ref().map(|r| r.account.clone()))
        .flatten()
}

/// The same page for every account name: it is shown before anything is
/// verified, so it must not show anything derived from the account's
/// methods (masked hints of real methods beside decoys for missing ones
/// tell the two apart, in their distribution if not one by one).
fn method_view(method: &str, confirm: &str) -> View {
    View::new("reset_method.html", "Choose where to get a code")
        .set("idem", new_idem())
        .form(&[("method", method), ("confirm", confirm)])
}

pub async fn method_show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    if resetting(&session).is_none() {
        return Redirect::to("/reset").into_response();
    }
    app.page(&session, method_view("", ""))
}

#[derive(Deserialize)]
pub struct MethodForm {
    #[serde(default)]
    method: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    idem: String,
}

/// What the verification page names: what the user typed, masked, if it
/// has the shape of the method's destination; else the words for the
/// confirm field. It depends on the typed value alone, never the account.
fn typed_destination(channel: Channel, confirm: &str) -> Result<String, &'static str> {
    if confirm.is_empty() {
        return Err("Type the full number or address of the method you chose.");
    }
    match channel {
        Channel::Sms | Channel::Voice => {
            phone::mask_typed(confirm).ok_or("Type the full phone number, like +1 415 555 0142.")
        }
        Channel::Email => check_email(confirm).map(|()| mask::email(confirm)),
    }
}

pub async fn method_submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<MethodForm>,
) -> Response {
    let Some(name) = resetting(&session) else {
        return Redirect::to("/reset").into_response();
    };
    let reshow = |problem: Problem| {
        show_problem(
            &app,
            &session,
            method_view(&form.method, &form.confirm),
            problem,
        )
    };
    // Everything the form can get wrong is judged before the account is
    // looked up, so that it is answered alike for every name.
    let Some(channel) = Channel::from_form(&form.method) else {
        return reshow(field("method", "Choose where to get a code."));
    };
    let confirm = form.confirm.trim();
    let shown_to = match typed_destination(channel, confirm) {
        Ok(shown_to) => shown_to,
        Err(words) => return reshow(field("confirm", words)),
    };
    if session.idempotency_key(&form.idem).is_none() {
        return reshow(message("This form has expired. Try again."));
    }
    let to = app
        .accounts
        .get(&name)
        .and_then(|a| matching(&a, channel, confirm));
    let Some(to) = to else {
        pretend(&app, &session, name, channel, shown_to);
        return Redirect::to("/verify").into_response();
    };
    let start = verify::Start {
        flow: Flow::Reset {
            account: name.clone(),
        },
        channel,
        to,
        shown_to,
        idem: &form.idem,
        ip: client,
    };
    match verify::start(&app, &session, start, &[("to", "confirm")]).await {
        Ok(next) => next,
        Err(problem) => reshow(problem),
    }
}

/// The destination to send to: the account's method on that channel, if
/// what the user typed is it.
fn matching(account: &Account, channel: Channel, confirm: &str) -> Option<String> {
    match channel {
        Channel::Sms | Channel::Voice => account
            .phone
            .as_ref()
            .filter(|p| p.matches(confirm))
            .map(|p| p.e164()),
        Channel::Email => account
            .email
            .clone()
            .filter(|e| e.to_lowercase() == confirm.to_lowercase()),
    }
}

/// No code goes out, but the session goes on as if one had.
fn pretend(app: &App, session: &Session, name: String, channel: Channel, shown_to: String) {
    let match_digits = if channel == Channel::Voice {
        app.decoys.match_digits()
    } else {
        None
    };
    let pending = Pending {
        flow: Flow::Reset { account: name },
        channel,
        shown_to,
        target: Target::Decoy(app.decoys.shadow(Instant::now())),
        match_digits,
        ended: None,
    };
    verify::keep(session, pending, None);
}

fn field(name: &'static str, words: &str) -> Problem {
    Problem {
        fields: vec![(name, words.to_owned())],
        ..Problem::default()
    }
}

/// The account whose reset this session verified.
fn authorized(session: &Session) -> Option<String> {
    session
        .with(|d| {
            d.reset
                .as_ref()
                .filter(|r| r.authorized)
                .map(|r| r.account.clone())
        })
        .flatten()
}

pub async fn password_show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    if authorized(&session).is_none() {
        return Redirect::to("/reset").into_response();
    }
    app.page(
        &session,
        View::new("reset_password.html", "Choose a new password"),
    )
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

pub async fn password_submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let Some(name) = authorized(&session) else {
        return Redirect::to("/reset").into_response();
    };
    let reshow = |problem: Problem| {
        show_problem(
            &app,
            &session,
            View::new("reset_password.html", "Choose a new password"),
            problem,
        )
    };
    if let Err((field_name, words)) = password::check_new(&form.password, &form.password2) {
        return reshow(field(field_name, words));
    }
    let typed = form.password;
    let Some(Ok(hash)) = blocking(move || password::hash(&typed)).await else {
        return reshow(message("Something went wrong. Try again."));
    };
    if app
        .accounts
        .update(&name, |a| a.password_hash = hash)
        .is_none()
    {
        return reshow(message("Something went wrong. Try again."));
    }
    // Whoever was signed in with the old password is signed out.
    let ended = app
        .sessions
        .remove_where(|d: &SessionData| d.account.as_deref() == Some(name.as_str()));
    // And this session ends too: its approval is spent, and nothing of it
    // (the verification, its idempotency keys) may carry a second reset.
    session.restart();
    tracing::info!(sessions_ended = ended, "password reset");
    Redirect::to("/reset/done").into_response()
}

pub async fn done(State(app): State<AppState>) -> Response {
    app.plain(
        View::new("message.html", "Your password has been reset")
            .set("message", "You can sign in with your new password now.")
            .set("link", "/login")
            .set("link_id", "login")
            .set("link_text", "Sign in"),
    )
}
