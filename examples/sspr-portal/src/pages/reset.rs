//! "Forgot my password": an account name and a bot check, then a method
//! to receive a code, then a new password.
//!
//! Nothing here may tell whether an account exists. The method page looks
//! the same for any name (decoys for unknown ones); a code goes out only
//! when the account exists and the user typed the method's full number or
//! address, and otherwise the same verification page follows, answering
//! every code "That code isn't right." without calling verifyd.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Extension, Form,
    extract::{ConnectInfo, State},
    response::{IntoResponse as _, Redirect, Response},
};
use serde::Deserialize;

use super::{
    blocking, new_idem,
    register::{message, show_problem},
    verify,
};
use crate::{
    App, AppState,
    accounts::{self, Account},
    decoy::Hints,
    flow::{Challenge, Channel, Flow, Pending, Reset, SessionData, Target},
    password,
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
    Form(form): Form<AccountForm>,
) -> Response {
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

fn method_view(hints: &Hints, method: &str, confirm: &str) -> View {
    View::new("reset_method.html", "Choose where to get a code")
        .set("phone", hints.phone.clone())
        .set("email", hints.email.clone())
        .set("idem", new_idem())
        .form(&[("method", method), ("confirm", confirm)])
}

pub async fn method_show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let Some(name) = resetting(&session) else {
        return Redirect::to("/reset").into_response();
    };
    let hints = app
        .decoys
        .hints_for(&name, app.accounts.get(&name).as_ref());
    app.page(&session, method_view(&hints, "", ""))
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

pub async fn method_submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<MethodForm>,
) -> Response {
    let Some(name) = resetting(&session) else {
        return Redirect::to("/reset").into_response();
    };
    let account = app.accounts.get(&name);
    let hints = app.decoys.hints_for(&name, account.as_ref());
    let reshow = |problem: Problem| {
        show_problem(
            &app,
            &session,
            method_view(&hints, &form.method, &form.confirm),
            problem,
        )
    };
    let (channel, shown_to) = match Channel::from_form(&form.method) {
        Some(c @ (Channel::Sms | Channel::Voice)) => (c, hints.phone.clone()),
        Some(Channel::Email) if hints.email.is_some() => {
            (Channel::Email, hints.email.clone().unwrap_or_default())
        }
        _ => return reshow(field("method", "Choose one of the methods shown.")),
    };
    let confirm = form.confirm.trim();
    if confirm.is_empty() {
        return reshow(field(
            "confirm",
            "Type the full number or address of the method you chose.",
        ));
    }
    let Some(to) = account.and_then(|a| matching(&a, channel, confirm)) else {
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
    session.with(|d| d.reset = None);
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
