//! Finishing a step: `/verify/complete` asks verifyd whether the call was
//! answered (the script comes here on an `approved` event; the no-script
//! button posts here), and `finish` does what an approval means for the
//! flow, once.

use axum::{
    Extension,
    extract::State,
    response::{IntoResponse as _, Redirect, Response},
};

use super::{set_ended, shown};
use crate::{
    App, AppState,
    accounts::Account,
    flow::{Flow, Target, VerificationId},
    proto::VerificationStatus,
    verify::explain,
    web::Session,
};

pub async fn complete(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let Some(pending) = shown(&session) else {
        return already_finished(&session);
    };
    if pending.ended.is_some() {
        return Redirect::to("/verify").into_response();
    }
    let Some(id) = pending.real else {
        // A decoy is never answered.
        not_yet(&session);
        return Redirect::to("/verify").into_response();
    };
    match app.verifyd.get(&id).await {
        Ok(v) => match v.status() {
            VerificationStatus::Approved => finish(&session, &app, &id, v.purpose),
            VerificationStatus::Pending => {
                not_yet(&session);
                Redirect::to("/verify").into_response()
            }
            // /verify shows how it ended.
            _ => Redirect::to("/verify").into_response(),
        },
        Err(status) => {
            let problem = explain(&status, &[]);
            let words = problem.message.unwrap_or_default();
            if problem.ended {
                set_ended(&session, &words);
            } else {
                session.with(|d| d.flash.error = Some(words));
            }
            Redirect::to("/verify").into_response()
        }
    }
}

fn not_yet(session: &Session) {
    session.with(|d| d.flash.notice = Some("We haven't seen your answer yet.".to_owned()));
}

/// A second request for a step already finished (the script and a click
/// together) goes where the first went.
fn already_finished(session: &Session) -> Response {
    let next = session.with(|d| d.finished_next).flatten().unwrap_or("/");
    Redirect::to(next).into_response()
}

/// Does what the approval of verification `id` means for its flow, and
/// answers the redirect to the flow's next page.
pub(super) fn finish(session: &Session, app: &App, id: &VerificationId, purpose: i32) -> Response {
    // Take the pending verification out of the session first: whatever
    // arrives next finds it gone, so the step is finished exactly once.
    let taken = session
        .with(|d| match &d.pending {
            Some(p) if matches!(&p.target, Target::Real(pending) if pending == id) => {
                d.pending.take()
            }
            _ => None,
        })
        .flatten();
    let Some(pending) = taken else {
        return already_finished(session);
    };
    if i32::from(pending.flow.purpose()) != purpose {
        tracing::error!("an approved verification's purpose is not its step's");
        return Redirect::to("/").into_response();
    }
    let next = match pending.flow {
        Flow::EnrollPhone(phone) => {
            enroll(app, session, "/register/email", |a| a.phone = Some(phone))
        }
        Flow::EnrollEmail(email) => {
            enroll(app, session, "/register/done", |a| a.email = Some(email))
        }
        Flow::Reset { account } => authorize_reset(session, &account),
    };
    session.with(|d| d.finished_next = Some(next));
    Redirect::to(next).into_response()
}

/// Saves the method on the signed-in account: only now, once approved.
fn enroll(
    app: &App,
    session: &Session,
    next: &'static str,
    save: impl FnOnce(&mut Account),
) -> &'static str {
    let saved = session
        .account()
        .and_then(|name| app.accounts.update(&name, save));
    match saved {
        Some(()) => {
            tracing::info!("method enrolled");
            next
        }
        None => "/login",
    }
}

/// Lets this session set the account's new password.
fn authorize_reset(session: &Session, account: &str) -> &'static str {
    let authorized = session
        .with(|d| match d.reset.as_mut() {
            Some(reset) if reset.account == account => {
                reset.authorized = true;
                true
            }
            _ => false,
        })
        .unwrap_or(false);
    if !authorized {
        return "/reset";
    }
    // This session may now change a password: a new id, against fixation.
    session.rotate();
    tracing::info!("password reset verified");
    "/reset/password"
}
