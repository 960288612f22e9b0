//! Use-case errors → gRPC statuses, in one place. Messages name what went
//! wrong for the caller and never carry a code, key or full destination.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::convert::{Violations, status as status_name};
use crate::{
    delivery::FailureKind,
    domain::{
        Status as VerificationStatus,
        limit::{Limit, RateLimited},
    },
    service::{CheckError, LookupError, StartError},
    store::StoreError,
};

pub fn invalid_argument(violations: Violations) -> Status {
    let fields: Vec<&str> = violations.0.iter().map(|v| v.field.as_str()).collect();
    let message = format!("invalid {}", fields.join(", "));
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations.0),
    )
}

fn retry_later(message: impl Into<String>, retry_after: Duration) -> Status {
    // Whole seconds, rounded up: retrying a little late is fine, early is not.
    let retry_after =
        Duration::from_secs(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0));
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

fn rate_limited(e: RateLimited) -> Status {
    retry_later(
        format!("rate limit {} reached", e.limit.as_str()),
        e.retry_after,
    )
}

fn not_pending(status: VerificationStatus) -> Status {
    Status::failed_precondition(format!(
        "verification is {}",
        status_name(status).as_str_name()
    ))
}

pub(super) fn store(e: StoreError) -> Status {
    tracing::error!(error = %e, "store error");
    match e {
        StoreError::Full => Status::unavailable("verifyd is at capacity; retry later"),
        StoreError::Unavailable(_) => Status::unavailable("the store is unavailable"),
    }
}

/// What a start answers when its destination's state refuses it: one
/// status and one message for every such cause, so a caller without a
/// verification for the number cannot tell which.
pub const DESTINATION_BUSY: &str =
    "this destination cannot get a new verification now; retry after the delay given";

/// A start's refusal. The refusals that come from the destination's own
/// state (the least gap after its latest new verification, its start
/// budget, a fraud report's block) answer alike, RESOURCE_EXHAUSTED with
/// [`DESTINATION_BUSY`] and the delay: told apart, they would say whether
/// someone was sent a code lately, and whether its user reported a call
/// as fraud, to a caller who may not even know them. The delay itself
/// still says something; `docs/security.md` says what. Every other refusal
/// answers as [`From<StartError>`] does. A resend's caller holds the
/// verification already and gets the detail.
pub fn start_refused(e: StartError) -> Status {
    match e {
        StartError::TooSoon { retry_after } | StartError::Blocked { retry_after } => {
            retry_later(DESTINATION_BUSY, retry_after)
        }
        StartError::RateLimited(limited) if limited.limit == Limit::StartsPerDestination => {
            retry_later(DESTINATION_BUSY, limited.retry_after)
        }
        other => other.into(),
    }
}

impl From<StartError> for Status {
    fn from(e: StartError) -> Self {
        match e {
            StartError::NotFound => Status::not_found(e.to_string()),
            StartError::NotPending(s) => not_pending(s),
            StartError::ChannelUnreachable(_) => {
                invalid_argument(Violations(vec![tonic_types::FieldViolation::new(
                    "channel",
                    e.to_string(),
                )]))
            }
            StartError::Fallback(problem) => {
                invalid_argument(Violations(vec![tonic_types::FieldViolation::new(
                    problem.field(),
                    problem.to_string(),
                )]))
            }
            StartError::TooSoon { retry_after } => retry_later(e.to_string(), retry_after),
            StartError::ChannelDisabled(_) => Status::failed_precondition(e.to_string()),
            StartError::ChannelNotAllowed(_) | StartError::VoiceModeNotAllowed(_) => {
                Status::permission_denied(e.to_string())
            }
            StartError::RateLimited(limited) => rate_limited(limited),
            StartError::Refused(_) | StartError::LookupRefused(_) => {
                Status::permission_denied(e.to_string())
            }
            StartError::Blocked { retry_after } | StartError::PrefixBlocked { retry_after } => {
                Status::with_error_details(
                    Code::PermissionDenied,
                    e.to_string(),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            StartError::Cooldown { retry_after } => retry_later(e.to_string(), retry_after),
            StartError::SendLimitReached { retry_after } => retry_later(e.to_string(), retry_after),
            StartError::SendsInFlight { retry_after } => retry_later(e.to_string(), retry_after),
            StartError::IdempotencyMismatch => {
                invalid_argument(Violations(vec![tonic_types::FieldViolation::new(
                    "idempotency_key",
                    e.to_string(),
                )]))
            }
            StartError::IdempotencyInFlight => Status::aborted(e.to_string()),
            StartError::Interrupted => Status::unavailable(e.to_string()),
            // The provider refused the destination itself: the caller can
            // only fix it with another `to`.
            StartError::Delivery {
                ref error,
                ref verification,
                may_have_sent,
            } => {
                let mut details = ErrorDetails::new();
                // Names the verification, so the caller can read its send
                // attempts with GetVerification.
                details.set_resource_info(
                    "verifyd.v1.Verification",
                    verification.as_str(),
                    "",
                    "the verification this send was for",
                );
                // A refused destination is the caller's to fix, unless an
                // earlier try may have reached it: then the verification is
                // pending, and the caller should keep it.
                if error.kind == FailureKind::Destination && !may_have_sent {
                    details.add_bad_request_violation(
                        "to",
                        format!("refused by the provider: {}", error.reason),
                    );
                    Status::with_error_details(Code::InvalidArgument, "invalid to", details)
                } else {
                    Status::with_error_details(Code::Unavailable, e.to_string(), details)
                }
            }
            StartError::Store(s) => store(s),
        }
    }
}

impl From<CheckError> for Status {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::NotFound => Status::not_found(e.to_string()),
            CheckError::NotPending(s) => not_pending(s),
            CheckError::RateLimited(limited) => rate_limited(limited),
            CheckError::Store(s) => store(s),
        }
    }
}

impl From<LookupError> for Status {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound => Status::not_found(e.to_string()),
            LookupError::NotPending(s) => not_pending(s),
            LookupError::TooManyWatches => Status::resource_exhausted(e.to_string()),
            LookupError::RateLimited(limited) => rate_limited(limited),
            LookupError::Store(s) => store(s),
        }
    }
}
