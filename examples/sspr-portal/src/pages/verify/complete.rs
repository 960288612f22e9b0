//! Finishing a step: POST `/verify/complete` asks verifyd whether the call
//! was answered (the page's button posts here, and so does the script, with
//! the same form, on an `approved` event), and `finish` does what an
//! approval means for the flow, once. A GET only goes back to `/verify`:
//! finishing changes state, which takes a POST and its CSRF token.

use axum::{
    Extension,
    extract::State,
    response::{IntoResponse as _, Redirect, Response},
};

use super::{set_ended, shown};
use crate::{
    App, AppState,
    accounts::Account,
    flow::{Flow, SessionData, Target, VerificationId},
    proto::VerificationStatus,
    verify::explain,
    web::Session,
};

/// GET /verify/complete (an old bookmark, a link): the page itself.
pub async fn to_verify() -> Redirect {
    Redirect::to("/verify")
}

/// POST /verify/complete.
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

/// What the session holds for an approval.
enum Claim {
    /// The step, taken out of the session: it is finished exactly once.
    Step(Flow),
    /// Nothing pending under this id: finished already, or replaced.
    Gone,
    /// The approval's purpose is not the step's: left as it is.
    WrongPurpose,
}

/// Takes the pending step if `id` is its verification and `purpose` its
/// purpose. Whatever arrives next finds it gone.
fn claim(d: &mut SessionData, id: &VerificationId, purpose: i32) -> Claim {
    let Some(pending) = d
        .pending
        .as_ref()
        .filter(|p| matches!(&p.target, Target::Real(pending) if pending == id))
    else {
        return Claim::Gone;
    };
    if i32::from(pending.flow.purpose()) != purpose {
        return Claim::WrongPurpose;
    }
    d.pending
        .take()
        .map_or(Claim::Gone, |p| Claim::Step(p.flow))
}

/// Does what the approval of verification `id` means for its flow, and
/// answers the redirect to the flow's next page.
pub(super) fn finish(session: &Session, app: &App, id: &VerificationId, purpose: i32) -> Response {
    let flow = match session.with(|d| claim(d, id, purpose)) {
        Some(Claim::Step(flow)) => flow,
        Some(Claim::WrongPurpose) => {
            // An approval for another purpose (an enrollment's code used on
            // a reset, say) authorizes nothing, and changes nothing.
            tracing::error!("an approved verification's purpose is not its step's");
            return Redirect::to("/").into_response();
        }
        Some(Claim::Gone) | None => return already_finished(session),
    };
    let next = match flow {
        Flow::EnrollPhone { account, phone } => {
            enroll(app, session, &account, "/register/email", |a| {
                a.phone = Some(phone);
            })
        }
        Flow::EnrollEmail { account, email } => {
            enroll(app, session, &account, "/register/done", |a| {
                a.email = Some(email);
            })
        }
        Flow::Reset { account } => authorize_reset(session, &account),
    };
    session.with(|d| d.finished_next = Some(next));
    Redirect::to(next).into_response()
}

/// Saves the method on `account`, the account that started the
/// enrollment: only now, once approved, and only while that account is
/// still the one signed in.
fn enroll(
    app: &App,
    session: &Session,
    account: &str,
    next: &'static str,
    save: impl FnOnce(&mut Account),
) -> &'static str {
    if session.account().as_deref() != Some(account) {
        tracing::warn!("an enrollment finished under another account: not saved");
        return "/login";
    }
    match app.accounts.update(account, save) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::header::LOCATION;
    use tokio::sync::watch;

    use super::*;
    use crate::{
        Config,
        flow::{Channel, Pending, Reset},
        phone::Phone,
        proto::Purpose,
    };

    /// A portal's state (its verifyd is never called here) and a session
    /// in it, signed in to `alice` with a reset of `alice` under way.
    async fn setup() -> (App, Session) {
        let config = Config::new(
            "127.0.0.1:0".parse().expect("addr"),
            "http://127.0.0.1:9",
            None,
        );
        let app = App::new(&config, watch::channel(false).1)
            .await
            .expect("the app");
        for name in ["alice", "bob"] {
            app.accounts
                .create(name, String::new())
                .expect("a new name");
        }
        let session = Session::new(Arc::clone(&app.sessions), None);
        session.ensure();
        session.with(|d| {
            d.account = Some("alice".to_owned());
            d.reset = Some(Reset {
                account: "alice".to_owned(),
                authorized: false,
            });
        });
        (app, session)
    }

    fn id() -> VerificationId {
        VerificationId::new("VE0123".to_owned())
    }

    fn pending(session: &Session, flow: Flow) {
        session.with(|d| {
            d.pending = Some(Pending {
                flow,
                channel: Channel::Sms,
                shown_to: String::new(),
                target: Target::Real(id()),
                match_digits: None,
                ended: None,
            });
        });
    }

    fn location(response: &Response) -> Option<&str> {
        response.headers().get(LOCATION)?.to_str().ok()
    }

    fn authorized(session: &Session) -> bool {
        session
            .with(|d| d.reset.as_ref().is_some_and(|r| r.authorized))
            .unwrap_or(false)
    }

    fn phone() -> Phone {
        Phone::parse("US", "4155550142").expect("a number")
    }

    #[tokio::test]
    async fn an_approval_for_another_accounts_reset_does_not_authorize() {
        let (app, session) = setup().await;
        let flow = Flow::Reset {
            account: "bob".to_owned(),
        };
        pending(&session, flow);
        let answer = finish(&session, &app, &id(), Purpose::PasswordReset.into());
        assert_eq!(location(&answer), Some("/reset"));
        assert!(!authorized(&session));
    }

    #[tokio::test]
    async fn a_purpose_mismatch_changes_nothing() {
        let (app, session) = setup().await;
        let enroll = Flow::EnrollPhone {
            account: "alice".to_owned(),
            phone: phone(),
        };
        pending(&session, enroll);
        let answer = finish(&session, &app, &id(), Purpose::PasswordReset.into());
        assert_eq!(location(&answer), Some("/"));
        assert_eq!(app.accounts.get("alice").and_then(|a| a.phone), None);
        assert!(!authorized(&session));
        // The step is still there, as it was.
        assert_eq!(session.with(|d| d.pending.is_some()), Some(true));

        let reset = Flow::Reset {
            account: "alice".to_owned(),
        };
        pending(&session, reset);
        let answer = finish(&session, &app, &id(), Purpose::Enrollment.into());
        assert_eq!(location(&answer), Some("/"));
        assert!(!authorized(&session));
    }

    #[tokio::test]
    async fn an_enrollment_is_saved_only_on_the_account_that_started_it() {
        let (app, session) = setup().await;
        let bobs = Flow::EnrollEmail {
            account: "bob".to_owned(),
            email: "bob@example.com".to_owned(),
        };
        pending(&session, bobs);
        let answer = finish(&session, &app, &id(), Purpose::Enrollment.into());
        assert_eq!(location(&answer), Some("/login"));
        for name in ["alice", "bob"] {
            assert_eq!(app.accounts.get(name).and_then(|a| a.email), None);
        }

        let alices = Flow::EnrollPhone {
            account: "alice".to_owned(),
            phone: phone(),
        };
        pending(&session, alices);
        let answer = finish(&session, &app, &id(), Purpose::Enrollment.into());
        assert_eq!(location(&answer), Some("/register/email"));
        assert_eq!(
            app.accounts.get("alice").and_then(|a| a.phone),
            Some(phone())
        );
        // Finished once: the same approval again goes where it went.
        let again = finish(&session, &app, &id(), Purpose::Enrollment.into());
        assert_eq!(location(&again), Some("/register/email"));
    }

    #[tokio::test]
    async fn a_reset_approval_authorizes_its_own_account() {
        let (app, session) = setup().await;
        let flow = Flow::Reset {
            account: "alice".to_owned(),
        };
        pending(&session, flow);
        let answer = finish(&session, &app, &id(), Purpose::PasswordReset.into());
        assert_eq!(location(&answer), Some("/reset/password"));
        assert!(authorized(&session));
    }
}
