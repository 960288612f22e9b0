//! The verification step every flow shares: `/verify` shows the pending
//! verification (a code to type, or a call to answer), checks codes,
//! resends, and finishes the flow's step once verifyd says approved.
//!
//! The verification id never leaves the server-side session: each request
//! finds it there, so a page, a URL or a cookie never carries it.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Extension, Form,
    extract::State,
    response::{IntoResponse as _, Redirect, Response},
};
use serde::Deserialize;

mod complete;
mod resend;

use complete::finish;
pub use complete::{complete, to_verify};
pub use resend::resend;

use super::new_idem;
use crate::{
    App, AppState,
    flow::{Channel, Flow, Pending, Target, VerificationId},
    proto::{StartVerificationRequest, VerificationStatus},
    verify::{Problem, ended_wording, explain},
    web::{Session, View},
};

/// A verification to start for a flow.
#[derive(Debug)]
pub(super) struct Start<'a> {
    pub flow: Flow,
    pub channel: Channel,
    /// E.164 or the email address.
    pub to: String,
    /// The masked destination the page will name.
    pub shown_to: String,
    /// The form's `idem` value.
    pub idem: &'a str,
    pub ip: SocketAddr,
}

/// Starts a verification and keeps it in the session, answering the
/// redirect to `/verify`; or the problem for the form to show. `fields`
/// maps request fields to the form's (`to` → the number or email field).
pub(super) async fn start(
    app: &App,
    session: &Session,
    start: Start<'_>,
    fields: &[(&str, &'static str)],
) -> Result<Response, Problem> {
    let Some(idempotency_key) = session.idempotency_key(start.idem) else {
        return Err(Problem {
            message: Some("This form has expired. Try again.".to_owned()),
            ..Problem::default()
        });
    };
    let request = StartVerificationRequest {
        to: start.to,
        channel: start.channel.proto().into(),
        purpose: start.flow.purpose().into(),
        idempotency_key,
        end_user_ip: start.ip.ip().to_string(),
        // No `reference`: it lands on verifyd's audit lines, which must not
        // carry a destination, and an account name here may be an email
        // address. A real deployment passes its opaque user id.
        ..StartVerificationRequest::default()
    };
    let (id, match_digits, error) = match app.verifyd.start(request).await {
        Ok(response) => {
            let v = response.verification.unwrap_or_default();
            if !v.id.is_empty() && v.status() != VerificationStatus::Pending {
                // A repeated idempotency key: verifyd answers the first
                // start's verification as it stands now, approved perhaps.
                // Kept here, an approved one would finish this step without
                // a code: only a pending one is this form's new step.
                return Err(Problem {
                    message: Some("This form was already sent. Start again.".to_owned()),
                    ..Problem::default()
                });
            }
            app.decoys.learn(&v, &response.match_digits);
            (v.id, non_empty(response.match_digits), None)
        }
        Err(status) => {
            let problem = explain(&status, fields);
            // The send may have gone out: keep the verification, so the
            // user can still type the code or ask again.
            let Some(id) = problem.kept_id.clone() else {
                return Err(problem);
            };
            (id, None, problem.message)
        }
    };
    if id.is_empty() {
        tracing::error!("verifyd started a verification without an id");
        return Err(Problem {
            message: Some("Something went wrong. Try again in a moment.".to_owned()),
            ..Problem::default()
        });
    }
    let pending = Pending {
        flow: start.flow,
        channel: start.channel,
        shown_to: start.shown_to,
        target: Target::Real(VerificationId::new(id)),
        match_digits,
        ended: None,
    };
    keep(session, pending, error);
    Ok(Redirect::to("/verify").into_response())
}

/// Keeps a new pending verification, replacing any before it.
pub(super) fn keep(session: &Session, pending: Pending, error: Option<String>) {
    session.with(|d| {
        d.pending = Some(pending);
        d.finished_next = None;
        d.flash.error = error;
    });
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// What the page needs of the pending verification.
#[derive(Debug, Clone)]
struct Shown {
    flow: Flow,
    channel: Channel,
    shown_to: String,
    real: Option<VerificationId>,
    match_digits: Option<String>,
    ended: Option<String>,
}

fn shown(session: &Session) -> Option<Shown> {
    session
        .with(|d| {
            d.pending.as_ref().map(|p| Shown {
                flow: p.flow.clone(),
                channel: p.channel,
                shown_to: p.shown_to.clone(),
                real: match &p.target {
                    Target::Real(id) => Some(id.clone()),
                    Target::Decoy(_) => None,
                },
                match_digits: p.match_digits.clone(),
                ended: p.ended.clone(),
            })
        })
        .flatten()
}

/// Marks the pending verification ended, with what to tell the user.
fn set_ended(session: &Session, words: &str) {
    session.with(|d| {
        if let Some(p) = d.pending.as_mut() {
            p.ended = Some(words.to_owned());
        }
    });
}

/// GET /verify: the pending verification as it stands. A verification
/// that ended shows how; one approved meanwhile (the call was answered)
/// offers the button that finishes it: a GET changes nothing.
pub async fn show(State(app): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let Some(pending) = shown(&session) else {
        return Redirect::to("/").into_response();
    };
    if pending.ended.is_none() {
        let instead = match &pending.real {
            Some(id) => refresh(&app, &session, id).await,
            None => {
                refresh_decoy(&session);
                None
            }
        };
        if let Some(response) = instead {
            return response;
        }
    }
    render(&app, &session, Problem::default())
}

/// Asks verifyd where the verification stands and notes it in the
/// session; answers the response to give instead of the page, if any.
async fn refresh(app: &App, session: &Session, id: &VerificationId) -> Option<Response> {
    match app.verifyd.get(id).await {
        Ok(v) => match v.status() {
            VerificationStatus::Approved => Some(render_approved(app, session)),
            VerificationStatus::Pending => {
                // A fallback step may have moved it to another channel.
                update_channel(session, v.channel());
                None
            }
            ended => {
                set_ended(session, ended_wording(ended));
                None
            }
        },
        Err(status) => {
            let problem = explain(&status, &[]);
            if problem.ended {
                set_ended(session, problem.message.as_deref().unwrap_or_default());
                None
            } else {
                Some(render(app, session, problem))
            }
        }
    }
}

/// A decoy ends as a real one would: expired, or out of tries.
fn refresh_decoy(session: &Session) {
    let now = Instant::now();
    let status = session.with(|d| match d.pending.as_ref().map(|p| &p.target) {
        Some(Target::Decoy(shadow)) => shadow.status(now),
        _ => VerificationStatus::Pending,
    });
    if let Some(ended) = status.filter(|s| *s != VerificationStatus::Pending) {
        set_ended(session, ended_wording(ended));
    }
}

fn update_channel(session: &Session, channel: crate::proto::Channel) {
    let channel = match channel {
        crate::proto::Channel::Sms => Channel::Sms,
        crate::proto::Channel::Voice => Channel::Voice,
        crate::proto::Channel::Email => Channel::Email,
        crate::proto::Channel::Unspecified => return,
    };
    session.with(|d| {
        if let Some(p) = d.pending.as_mut() {
            p.channel = channel;
        }
    });
}

/// An approved verification whose step is not finished yet (the page was
/// reloaded after the call was answered): the page offers the POST that
/// finishes it, with its CSRF token.
fn render_approved(app: &App, session: &Session) -> Response {
    let view = View::new("verify.html", "You're verified")
        .set("approved", true)
        .set("intro", "Continue to finish this step.");
    app.page(session, view)
}

/// The verification page, with a problem to show if any.
fn render(app: &App, session: &Session, problem: Problem) -> Response {
    let Some(pending) = shown(session) else {
        return Redirect::to("/").into_response();
    };
    let reset = pending.flow.is_reset();
    // The reset flow says the same whether or not anything was sent.
    let (title, intro) = match (pending.channel, reset) {
        (Channel::Voice, false) => (
            "Answer the call",
            format!("We're calling {}.", pending.shown_to),
        ),
        (Channel::Voice, true) => (
            "Answer the call",
            format!(
                "If this matches our records, we're calling {}.",
                pending.shown_to
            ),
        ),
        (_, false) => (
            "Enter your code",
            format!("We sent a code to {}.", pending.shown_to),
        ),
        (_, true) => (
            "Enter your code",
            format!(
                "If this matches our records, we've sent a code to {}.",
                pending.shown_to
            ),
        ),
    };
    let mut view = View::new("verify.html", title)
        .set(
            "channel",
            if pending.channel == Channel::Voice {
                "voice"
            } else {
                "text"
            },
        )
        .set("intro", intro)
        .set("match_digits", pending.match_digits)
        .set("start_page", pending.flow.start_page())
        .set("ended", pending.ended.is_some())
        // The script watches only a call still pending: once it ended, a
        // reload must not start watching again.
        .set(
            "watch",
            pending.channel == Channel::Voice && pending.ended.is_none(),
        )
        .set("idem", new_idem())
        .set("idem_sms", new_idem())
        .field_errors(&problem.fields);
    if let Some(message) = problem.message.or(pending.ended) {
        view = view.error(message);
    }
    app.page(session, view)
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// POST /verify: checks a code.
pub async fn check(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<CodeForm>,
) -> Response {
    let Some(pending) = shown(&session) else {
        return Redirect::to("/").into_response();
    };
    // The code's shape is judged before real and decoy part ways, so that
    // a malformed code gets the same answer from both: verifyd would answer
    // INVALID_ARGUMENT for one a decoy would call wrong.
    let code = match code_shape(&form.code) {
        Ok(code) => code,
        Err(words) => return render(&app, &session, field_problem("code", words)),
    };
    if pending.ended.is_some() {
        // The page shows how it ended.
        return render(&app, &session, Problem::default());
    }
    let Some(id) = pending.real else {
        return check_decoy(&app, &session);
    };
    match app.verifyd.check(&id, &code).await {
        Ok(response) if response.approved => {
            let purpose = response.verification.map(|v| v.purpose).unwrap_or_default();
            finish(&session, &app, &id, purpose)
        }
        Ok(response) => {
            let v = response.verification.unwrap_or_default();
            match v.status() {
                VerificationStatus::Pending => render(
                    &app,
                    &session,
                    Problem {
                        message: Some(wrong_code(v.check_attempts_remaining)),
                        ..Problem::default()
                    },
                ),
                ended => {
                    set_ended(&session, ended_wording(ended));
                    render(&app, &session, Problem::default())
                }
            }
        }
        Err(status) => {
            let problem = explain(&status, &[("code", "code")]);
            if problem.ended {
                set_ended(&session, problem.message.as_deref().unwrap_or_default());
            }
            render(&app, &session, problem)
        }
    }
}

/// The code typed, spaces dropped, if it has the shape of one: 6 to 10
/// digits, as verifyd takes (whatever length the tenant sends).
fn code_shape(typed: &str) -> Result<String, &'static str> {
    let code: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() {
        Err("Enter the code we sent you.")
    } else if (6..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err("The code is the 6 to 10 digits we sent you.")
    }
}

/// A decoy's answer to a code: always wrong, counting down like a real one.
fn check_decoy(app: &App, session: &Session) -> Response {
    let now = Instant::now();
    let outcome = session
        .with(|d| match d.pending.as_mut().map(|p| &mut p.target) {
            Some(Target::Decoy(shadow)) => Some(shadow.check(now)),
            _ => None,
        })
        .flatten();
    match outcome {
        Some(Ok(left)) => render(
            app,
            session,
            Problem {
                message: Some(wrong_code(left)),
                ..Problem::default()
            },
        ),
        Some(Err(ended)) => {
            set_ended(session, ended_wording(ended));
            render(app, session, Problem::default())
        }
        None => Redirect::to("/").into_response(),
    }
}

fn wrong_code(left: u32) -> String {
    match left {
        1 => "That code isn't right. 1 try left.".to_owned(),
        n => format!("That code isn't right. {n} tries left."),
    }
}

fn field_problem(field: &'static str, words: &str) -> Problem {
    Problem {
        fields: vec![(field, words.to_owned())],
        ..Problem::default()
    }
}

#[cfg(test)]
mod tests {
    use super::code_shape;

    #[test]
    fn a_code_is_6_to_10_digits() {
        assert_eq!(code_shape(" 123 456 ").as_deref(), Ok("123456"));
        assert_eq!(code_shape("1234567890").as_deref(), Ok("1234567890"));
        assert_eq!(code_shape(""), Err("Enter the code we sent you."));
        for bad in ["12345", "12345678901", "12345a", "١٢٣٤٥٦"] {
            assert_eq!(
                code_shape(bad),
                Err("The code is the 6 to 10 digits we sent you."),
                "{bad}"
            );
        }
    }
}
