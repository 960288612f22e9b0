//! Registration: an account name and password, then an authentication
//! phone and an alternate email, each saved only once a code sent to it
//! (or a call to it) was approved.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    Extension, Form,
    extract::{ConnectInfo, State},
    response::{IntoResponse as _, Redirect, Response},
};
use minijinja::Value;
use serde::Deserialize;

use super::{blocking, new_idem, to_login, verify};
use crate::{
    App, AppState,
    accounts::{self, NameTaken},
    flow::{Channel, Flow},
    limit, mask, password,
    phone::{Phone, PhoneError, REGIONS},
    verify::Problem,
    web::{Session, View},
};

#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

pub async fn show(State(app): State<AppState>, Extension(session): Extension<Session>) -> Response {
    app.page(&session, View::new("register.html", "Create an account"))
}

pub async fn submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<RegisterForm>,
) -> Response {
    // The form must say when a name is taken, which tells that an account
    // exists: a limit per client keeps that from being asked in bulk.
    if let Err(wait) = app.register_limit.attempt(client.ip(), Instant::now()) {
        let view = View::new("register.html", "Create an account")
            .form(&[("account", form.account.trim())]);
        return too_many(&app, &session, view, wait);
    }
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let name = accounts::normalize_name(&form.account)
        .map_err(|e| errors.push(("account", e.to_owned())))
        .ok();
    if let Some(name) = &name
        && app.accounts.exists(name)
    {
        errors.push(("account", "this account name is taken".to_owned()));
    }
    if let Err((field, words)) = password::check_new(&form.password, &form.password2) {
        errors.push((field, words.to_owned()));
    }
    let typed = name.clone().unwrap_or_else(|| form.account.clone());
    let reshow = |errors: &[(&'static str, String)]| {
        app.page(
            &session,
            View::new("register.html", "Create an account")
                .form(&[("account", &typed)])
                .field_errors(errors),
        )
    };
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return reshow(&errors);
    };
    let typed = form.password;
    let Some(Ok(hash)) = blocking(move || password::hash(&typed)).await else {
        return reshow(&[("password", "Something went wrong. Try again.".to_owned())]);
    };
    // Checked again with the insert: another registration may have won.
    if app.accounts.create(&name, hash) == Err(NameTaken) {
        return reshow(&[("account", "this account name is taken".to_owned())]);
    }
    tracing::info!("account registered");
    sign_in(&session, name);
    Redirect::to("/register/phone").into_response()
}

/// A limited form refused: the form again, with how long to wait.
pub(super) fn too_many(app: &App, session: &Session, view: View, wait: Duration) -> Response {
    let view = view
        .error(limit::wording(wait))
        .status(axum::http::StatusCode::TOO_MANY_REQUESTS);
    app.page(session, view)
}

/// Signs the session in to the account, under a new session id.
pub(super) fn sign_in(session: &Session, name: String) {
    session.ensure();
    session.with(|d| {
        d.account = Some(name);
        d.pending = None;
        d.reset = None;
    });
    session.rotate();
}

#[derive(Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    region: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    idem: String,
}

/// The phone form, with the country picked and the number typed kept.
fn phone_view(region: &str, number: &str) -> View {
    let regions: Value = REGIONS
        .iter()
        .map(|r| {
            Value::from_pairs([
                ("code", Value::from(r.code)),
                (
                    "label",
                    Value::from(format!("{} (+{})", r.name, r.calling_code)),
                ),
                ("selected", Value::from(r.code == region)),
            ])
        })
        .collect();
    View::new("register_phone.html", "Add your phone")
        .set("regions", regions)
        .set("idem", new_idem())
        .form(&[("number", number)])
}

pub async fn phone_show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    if session.account().is_none() {
        return to_login();
    }
    app.page(&session, phone_view(REGIONS[0].code, ""))
}

pub async fn phone_submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<PhoneForm>,
) -> Response {
    let Some(account) = session.account() else {
        return to_login();
    };
    let reshow = |problem: Problem| {
        show_problem(
            &app,
            &session,
            phone_view(&form.region, &form.number),
            problem,
        )
    };
    let channel = match Channel::from_form(&form.channel) {
        Some(channel @ (Channel::Sms | Channel::Voice)) => channel,
        _ => return reshow(message("Choose Text me or Call me.")),
    };
    let phone = match Phone::parse(&form.region, &form.number) {
        Ok(phone) => phone,
        Err(e) => {
            let field = if e == PhoneError::Region {
                "region"
            } else {
                "number"
            };
            return reshow(Problem {
                fields: vec![(field, e.to_string())],
                ..Problem::default()
            });
        }
    };
    let start = verify::Start {
        to: phone.e164(),
        shown_to: phone.masked(),
        flow: Flow::EnrollPhone { account, phone },
        channel,
        idem: &form.idem,
        ip: client,
    };
    match verify::start(&app, &session, start, &[("to", "number")]).await {
        Ok(next) => next,
        Err(problem) => reshow(problem),
    }
}

#[derive(Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    idem: String,
}

fn email_view(email: &str) -> View {
    View::new("register_email.html", "Add an alternate email")
        .set("idem", new_idem())
        .form(&[("email", email)])
}

pub async fn email_show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    if session.account().is_none() {
        return to_login();
    }
    app.page(&session, email_view(""))
}

pub async fn email_submit(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<EmailForm>,
) -> Response {
    let Some(account) = session.account() else {
        return to_login();
    };
    let email = form.email.trim();
    let reshow = |problem: Problem| show_problem(&app, &session, email_view(email), problem);
    if let Err(words) = check_email(email) {
        return reshow(Problem {
            fields: vec![("email", words.to_owned())],
            ..Problem::default()
        });
    }
    // Domains are case-insensitive (the name before @ may not be): keep
    // the domain in lower case, as verifyd does.
    let email = match email.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => email.to_owned(),
    };
    let start = verify::Start {
        to: email.clone(),
        shown_to: mask::email(&email),
        flow: Flow::EnrollEmail { account, email },
        channel: Channel::Email,
        idem: &form.idem,
        ip: client,
    };
    match verify::start(&app, &session, start, &[("to", "email")]).await {
        Ok(next) => next,
        Err(problem) => reshow(problem),
    }
}

/// A first look at an address; verifyd checks it properly and answers a
/// bad one with a BadRequest on `to`, shown beside the field.
pub(super) fn check_email(email: &str) -> Result<(), &'static str> {
    if email.is_empty() {
        return Err("Enter your email address.");
    }
    let well_formed = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if well_formed {
        Ok(())
    } else {
        Err("Enter an address like name@example.com.")
    }
}

/// A form shown again with what went wrong.
pub(super) fn show_problem(app: &App, session: &Session, view: View, problem: Problem) -> Response {
    let mut view = view.field_errors(&problem.fields);
    if let Some(message) = problem.message {
        view = view
            .error(message)
            .status(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    }
    app.page(session, view)
}

pub(super) fn message(words: &str) -> Problem {
    Problem {
        message: Some(words.to_owned()),
        ..Problem::default()
    }
}

#[cfg(test)]
mod tests {
    use super::check_email;

    #[test]
    fn emails_get_a_first_look() {
        assert!(check_email("a@example.com").is_ok());
        assert!(check_email("").is_err());
        assert!(check_email("a@localhost").is_err());
        assert!(check_email("@example.com").is_err());
        assert!(check_email("a b@example.com").is_err());
        assert!(check_email("a@example.").is_err());
    }
}
