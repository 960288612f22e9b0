//! verifyd's errors in the user's words, in one place. The rule: show the
//! user what they can act on (a field to fix, a wait, another method) and
//! never raw gRPC text, which is written for developers; the operator gets
//! the rest in the log.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::proto::VerificationStatus;

/// PERMISSION_DENIED messages written for end users (verifyd's docs list
/// them): shown as they are.
const USER_FACING: [&str; 3] = [
    "this number cannot receive text messages",
    "this number cannot take verification calls",
    "this number cannot be used to verify now; use another method",
];

/// The ResourceInfo type verifyd names a verification with.
const VERIFICATION_RESOURCE: &str = "verifyd.v1.Verification";

/// What a failed call means for the page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The page-level error, shown in `#error`.
    pub message: Option<String>,
    /// Errors shown beside form fields: (form field name, words).
    pub fields: Vec<(&'static str, String)>,
    /// UNAVAILABLE on a start, naming a verification whose send may have
    /// gone out: keep its id, so the user can still type the code.
    pub kept_id: Option<String>,
    /// The verification is over or gone: the user must start again.
    pub ended: bool,
}

impl Problem {
    fn message(message: impl Into<String>) -> Self {
        Problem {
            message: Some(message.into()),
            ..Problem::default()
        }
    }
}

/// Translates a failed call. `fields` maps request fields to the form's
/// fields, e.g. `[("to", "number")]`: a BadRequest violation on one of
/// them is shown beside that field, with verifyd's description.
pub fn explain(status: &Status, fields: &[(&str, &'static str)]) -> Problem {
    match status.code() {
        Code::InvalidArgument => invalid_argument(status, fields),
        Code::PermissionDenied => {
            let message = status.message();
            if USER_FACING.contains(&message) {
                Problem::message(message)
            } else {
                // A channel or voice mode the tenant may not use, a fraud
                // block: the operator's to look at, the user's to work around.
                tracing::warn!(message, "verifyd refused the method");
                Problem::message("This method can't be used right now. Try another.")
            }
        }
        Code::ResourceExhausted => Problem::message(match status.get_details_retry_info() {
            Some(info) => retry_wording(info.retry_delay.unwrap_or_default()),
            None => "Too many attempts. Try again later.".to_owned(),
        }),
        Code::Unavailable => Problem {
            kept_id: status
                .get_details_resource_info()
                .filter(|r| r.resource_type == VERIFICATION_RESOURCE && !r.resource_name.is_empty())
                .map(|r| r.resource_name),
            ..Problem::message("We couldn't reach the messaging service. Try again in a moment.")
        },
        Code::NotFound => Problem {
            ended: true,
            ..Problem::message("This request is no longer available. Start again.")
        },
        Code::FailedPrecondition => failed_precondition(status),
        Code::Unauthenticated => {
            tracing::error!(
                "verifyd refused the portal's credentials: check SSPR_VERIFYD_API_KEY against \
                 verifyd's [tenants]"
            );
            Problem::message("The portal is misconfigured.")
        }
        Code::Aborted => {
            Problem::message("Your request is still being sent. Reload the page in a moment.")
        }
        code => {
            tracing::warn!(?code, message = status.message(), "verifyd call failed");
            Problem::message("Something went wrong. Try again in a moment.")
        }
    }
}

fn invalid_argument(status: &Status, fields: &[(&str, &'static str)]) -> Problem {
    let mut problem = Problem::default();
    let violations = status
        .get_details_bad_request()
        .map(|b| b.field_violations)
        .unwrap_or_default();
    for violation in violations {
        if let Some(&(_, field)) = fields.iter().find(|(name, _)| *name == violation.field) {
            problem.fields.push((field, violation.description));
        } else if violation.field == "idempotency_key" {
            problem.message =
                Some("This form was already sent. Reload the page and try again.".to_owned());
        } else {
            // A field the user did not type: the portal's bug, not theirs.
            tracing::warn!(field = violation.field, "verifyd refused a request field");
        }
    }
    if problem.fields.is_empty() && problem.message.is_none() {
        problem.message =
            Some("Something in this form isn't right. Check it and try again.".to_owned());
    }
    problem
}

/// Not pending any more: verifyd's message names the status
/// (`verification is VERIFICATION_STATUS_EXPIRED`). A start on a channel
/// with no sender configured is FAILED_PRECONDITION too.
fn failed_precondition(status: &Status) -> Problem {
    let ended = status
        .message()
        .strip_prefix("verification is ")
        .and_then(VerificationStatus::from_str_name);
    match ended {
        Some(ended) => Problem {
            ended: true,
            ..Problem::message(ended_wording(ended))
        },
        None => {
            tracing::warn!(message = status.message(), "verifyd cannot use the method");
            Problem::message("This method can't be used right now. Try another.")
        }
    }
}

/// "You can ask for another code in 25 seconds." Whole seconds, rounded up
/// (early is refused again); minutes past 60 s.
pub fn retry_wording(delay: Duration) -> String {
    let secs = (delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).max(1);
    let unit = |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let wait = match (secs / 60, secs % 60) {
        (0, s) => unit(s, "second"),
        (m, 0) => unit(m, "minute"),
        (m, s) => format!("{} {}", unit(m, "minute"), unit(s, "second")),
    };
    format!("You can ask for another code in {wait}.")
}

/// What to tell the user about a verification that ended unapproved.
pub fn ended_wording(status: VerificationStatus) -> &'static str {
    match status {
        VerificationStatus::Expired => "This code has expired. Send a new one.",
        VerificationStatus::MaxAttemptsReached => "Too many wrong codes. Start again.",
        VerificationStatus::Canceled => "This request was canceled. Start again.",
        VerificationStatus::Superseded => "A newer request replaced this one. Start again.",
        VerificationStatus::Denied => "The call was reported as unexpected.",
        VerificationStatus::Failed => "We couldn't send the code. Try another method.",
        VerificationStatus::Approved => "This code was already used.",
        VerificationStatus::Pending | VerificationStatus::Unspecified => {
            "This request has ended. Start again."
        }
    }
}

/// The word the event stream sends for a status (`max_attempts`, …).
pub fn status_word(status: VerificationStatus) -> Option<&'static str> {
    Some(match status {
        VerificationStatus::Pending => "pending",
        VerificationStatus::Approved => "approved",
        VerificationStatus::Denied => "denied",
        VerificationStatus::Canceled => "canceled",
        VerificationStatus::Expired => "expired",
        VerificationStatus::Failed => "failed",
        VerificationStatus::Superseded => "superseded",
        VerificationStatus::MaxAttemptsReached => "max_attempts",
        VerificationStatus::Unspecified => return None,
    })
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, FieldViolation};

    use super::*;

    const PHONE_FORM: &[(&str, &str)] = &[("to", "number")];

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn bad_fields_are_shown_beside_the_form_field() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid to, locale",
            ErrorDetails::with_bad_request(vec![
                FieldViolation::new("to", "not a valid phone number"),
                FieldViolation::new("locale", "not a BCP 47 tag"),
            ]),
        );
        let problem = explain(&status, PHONE_FORM);
        assert_eq!(
            problem.fields,
            vec![("number", "not a valid phone number".to_owned())]
        );
        assert_eq!(problem.message, None);

        let code = Status::with_error_details(
            Code::InvalidArgument,
            "invalid code",
            ErrorDetails::with_bad_request(vec![FieldViolation::new("code", "must be digits")]),
        );
        assert_eq!(
            explain(&code, &[("code", "code")]).fields,
            vec![("code", "must be digits".to_owned())]
        );
    }

    #[test]
    fn a_bad_field_the_user_did_not_type_is_not_shown() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid locale",
            ErrorDetails::with_bad_request(vec![FieldViolation::new("locale", "raw text")]),
        );
        let problem = explain(&status, PHONE_FORM);
        assert!(problem.fields.is_empty());
        let message = problem.message.expect("a message");
        assert!(!message.contains("raw text"));
        // Without details at all, too.
        assert!(
            explain(&Status::invalid_argument("invalid to"), PHONE_FORM)
                .message
                .is_some()
        );
        // A reused idempotency key.
        let reused = Status::with_error_details(
            Code::InvalidArgument,
            "invalid idempotency_key",
            ErrorDetails::with_bad_request(vec![FieldViolation::new(
                "idempotency_key",
                "mismatch",
            )]),
        );
        assert_eq!(
            explain(&reused, PHONE_FORM).message.as_deref(),
            Some("This form was already sent. Reload the page and try again.")
        );
    }

    #[test]
    fn documented_refusals_are_shown_others_are_not() {
        for message in USER_FACING {
            let problem = explain(&Status::permission_denied(message), PHONE_FORM);
            assert_eq!(problem.message.as_deref(), Some(message));
        }
        let problem = explain(
            &Status::permission_denied("channel voice is not allowed"),
            PHONE_FORM,
        );
        assert_eq!(
            problem.message.as_deref(),
            Some("This method can't be used right now. Try another.")
        );
    }

    #[test]
    fn a_wait_is_told_in_words() {
        let status = Status::with_error_details(
            Code::ResourceExhausted,
            "this destination cannot get a new verification now; retry after the delay given",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(25))),
        );
        assert_eq!(
            explain(&status, PHONE_FORM).message.as_deref(),
            Some("You can ask for another code in 25 seconds.")
        );
        assert_eq!(
            explain(&Status::resource_exhausted("too many watches"), PHONE_FORM)
                .message
                .as_deref(),
            Some("Too many attempts. Try again later.")
        );
    }

    #[test]
    fn waits_round_up_and_turn_into_minutes() {
        let say = retry_wording;
        assert_eq!(say(secs(1)), "You can ask for another code in 1 second.");
        assert_eq!(
            say(Duration::new(24, 1)),
            "You can ask for another code in 25 seconds."
        );
        assert_eq!(say(secs(0)), "You can ask for another code in 1 second.");
        assert_eq!(say(secs(60)), "You can ask for another code in 1 minute.");
        assert_eq!(
            say(secs(65)),
            "You can ask for another code in 1 minute 5 seconds."
        );
        assert_eq!(
            say(secs(121)),
            "You can ask for another code in 2 minutes 1 second."
        );
        assert_eq!(
            say(Duration::from_millis(29_100)),
            "You can ask for another code in 30 seconds."
        );
    }

    #[test]
    fn unavailable_keeps_a_verification_that_may_have_been_sent() {
        let mut details = ErrorDetails::new();
        details.set_resource_info(VERIFICATION_RESOURCE, "VE123", "", "the verification");
        let status = Status::with_error_details(
            Code::Unavailable,
            "no provider accepted the message: timeout",
            details,
        );
        let problem = explain(&status, PHONE_FORM);
        assert_eq!(problem.kept_id.as_deref(), Some("VE123"));
        assert_eq!(
            problem.message.as_deref(),
            Some("We couldn't reach the messaging service. Try again in a moment.")
        );
        let plain = explain(&Status::unavailable("the store is unavailable"), PHONE_FORM);
        assert_eq!(plain.kept_id, None);
        assert_eq!(plain.message, problem.message);
    }

    #[test]
    fn an_ended_verification_is_named_in_words() {
        let cases = [
            (
                "verification is VERIFICATION_STATUS_EXPIRED",
                "This code has expired. Send a new one.",
            ),
            (
                "verification is VERIFICATION_STATUS_DENIED",
                "The call was reported as unexpected.",
            ),
            (
                "verification is VERIFICATION_STATUS_SUPERSEDED",
                "A newer request replaced this one. Start again.",
            ),
            (
                "verification is VERIFICATION_STATUS_MAX_ATTEMPTS_REACHED",
                "Too many wrong codes. Start again.",
            ),
        ];
        for (message, words) in cases {
            let problem = explain(&Status::failed_precondition(message), &[]);
            assert_eq!(problem.message.as_deref(), Some(words));
            assert!(problem.ended);
        }
        let no_sender = explain(
            &Status::failed_precondition("channel voice has no sender"),
            &[],
        );
        assert!(!no_sender.ended);
        assert_eq!(
            no_sender.message.as_deref(),
            Some("This method can't be used right now. Try another.")
        );
    }

    #[test]
    fn other_failures_never_show_grpc_text() {
        let gone = explain(&Status::not_found("verification VE1 not found"), &[]);
        assert!(gone.ended);
        assert_eq!(
            gone.message.as_deref(),
            Some("This request is no longer available. Start again.")
        );
        assert_eq!(
            explain(&Status::unauthenticated("unknown API key"), &[])
                .message
                .as_deref(),
            Some("The portal is misconfigured.")
        );
        for status in [
            Status::internal("boom: details"),
            Status::unknown("h2 protocol error"),
        ] {
            let message = explain(&status, &[]).message.expect("a message");
            assert!(
                !message.contains("boom") && !message.contains("h2"),
                "{message}"
            );
        }
    }

    #[test]
    fn every_status_has_a_word() {
        assert_eq!(
            status_word(VerificationStatus::MaxAttemptsReached),
            Some("max_attempts")
        );
        assert_eq!(status_word(VerificationStatus::Unspecified), None);
    }
}
