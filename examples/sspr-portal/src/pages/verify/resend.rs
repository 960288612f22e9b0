//! POST /verify/resend: another code, or another call, on the same
//! verification, by its id (ResendVerification), never by destination. On
//! a call, `channel=sms` asks for a text instead.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Extension, Form,
    extract::{ConnectInfo, State},
    response::{IntoResponse as _, Redirect, Response},
};
use serde::Deserialize;

use super::{non_empty, render, set_ended, shown};
use crate::{
    App, AppState,
    decoy::ShadowResend,
    flow::{Channel, Target},
    proto::ResendVerificationRequest,
    verify::{Problem, ended_wording, explain, retry_wording},
    web::Session,
};

#[derive(Deserialize)]
pub struct ResendForm {
    #[serde(default)]
    idem: String,
    #[serde(default)]
    channel: String,
}

pub async fn resend(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<ResendForm>,
) -> Response {
    let Some(pending) = shown(&session) else {
        return Redirect::to("/").into_response();
    };
    if pending.ended.is_some() {
        return Redirect::to("/verify").into_response();
    }
    // A phone's verification may switch between text and call; an
    // email's stays an email.
    let channel = match (pending.channel, Channel::from_form(&form.channel)) {
        (Channel::Sms | Channel::Voice, Some(other @ (Channel::Sms | Channel::Voice))) => other,
        (current, _) => current,
    };
    // Judged before real and decoy part ways, so both answer a bad value
    // alike.
    let Some(idempotency_key) = session.idempotency_key(&form.idem) else {
        return render(&app, &session, message("This form has expired. Try again."));
    };
    let Some(id) = pending.real else {
        return resend_decoy(&app, &session, channel);
    };
    let request = ResendVerificationRequest {
        id: id.as_str().to_owned(),
        channel: channel.proto().into(),
        idempotency_key,
        end_user_ip: client.ip().to_string(),
        ..ResendVerificationRequest::default()
    };
    match app.verifyd.resend(request).await {
        Ok(response) => {
            sent(&session, channel, non_empty(response.match_digits));
            Redirect::to("/verify").into_response()
        }
        Err(status) => {
            let problem = explain(&status, &[]);
            if problem.ended {
                set_ended(&session, problem.message.as_deref().unwrap_or_default());
            }
            render(&app, &session, problem)
        }
    }
}

/// A decoy resends on verifyd's schedule, so its refusals match a real
/// verification's.
fn resend_decoy(app: &App, session: &Session, channel: Channel) -> Response {
    let now = Instant::now();
    let outcome = session
        .with(|d| match d.pending.as_mut().map(|p| &mut p.target) {
            Some(Target::Decoy(shadow)) => Some(shadow.resend(now)),
            _ => None,
        })
        .flatten();
    match outcome {
        Some(ShadowResend::Sent) => {
            let digits = if channel == Channel::Voice {
                app.decoys.match_digits()
            } else {
                None
            };
            sent(session, channel, digits);
            Redirect::to("/verify").into_response()
        }
        Some(ShadowResend::Wait(wait)) => render(app, session, message(&retry_wording(wait))),
        Some(ShadowResend::Ended(status)) => {
            set_ended(session, ended_wording(status));
            render(app, session, Problem::default())
        }
        None => Redirect::to("/").into_response(),
    }
}

/// Records the send and says so on the next page.
fn sent(session: &Session, channel: Channel, match_digits: Option<String>) {
    session.with(|d| {
        if let Some(p) = d.pending.as_mut() {
            p.channel = channel;
            p.match_digits = match_digits;
        }
        d.flash.notice = Some(
            match channel {
                Channel::Voice => "We're calling again.",
                Channel::Sms | Channel::Email => "We sent a new code.",
            }
            .to_owned(),
        );
    });
}

fn message(words: &str) -> Problem {
    Problem {
        message: Some(words.to_owned()),
        ..Problem::default()
    }
}
