//! One error enum per use case. The gRPC layer maps each to a status in one
//! place (`grpc::status`); nothing here knows about transports.

use std::time::{Duration, SystemTime};

use crate::{
    delivery::SendError,
    domain::{
        Channel, Status, VerificationId, VoiceMode, fallback::WorkflowError, fraud::Refusal,
        limit::RateLimited, lookup::LookupRefusal, verification::SendRefused,
    },
    ratelimit::LimitError,
    store::StoreError,
};

impl StartError {
    /// What a resend its verification refuses (the store step, or a look
    /// ahead at it) is told; `expires_at` is the verification's.
    pub(super) fn of_send_refused(
        refused: SendRefused,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Self {
        let until = |at: SystemTime| at.duration_since(now).unwrap_or_default();
        match refused {
            SendRefused::NotPending(status) => Self::NotPending(status),
            SendRefused::Cooldown { retry_at } => Self::Cooldown {
                retry_after: until(retry_at),
            },
            SendRefused::SendLimitReached => Self::SendLimitReached {
                retry_after: until(expires_at),
            },
        }
    }
}

fn lookup_refusal(refusal: LookupRefusal) -> &'static str {
    match refusal {
        LookupRefusal::LineType {
            channel: Channel::Voice,
            ..
        } => "this number cannot take verification calls",
        LookupRefusal::LineType { .. } => "this number cannot receive text messages",
        LookupRefusal::SimSwapped | LookupRefusal::Unanswered => {
            "this number cannot be used to verify now; use another method"
        }
    }
}

/// Why a start or a resend sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A resend's id names no verification of the tenant's.
    #[error("verification not found")]
    NotFound,
    /// A resend's verification has ended.
    #[error("verification is {}", .0.as_str())]
    NotPending(Status),
    /// A resend's channel cannot reach the verification's destination.
    #[error("{} cannot reach this verification's destination", .0.as_str())]
    ChannelUnreachable(Channel),
    #[error("a verification for this destination was started less than the least gap ago")]
    TooSoon { retry_after: Duration },
    #[error("the {} channel is not enabled on this server", .0.as_str())]
    ChannelDisabled(Channel),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("sends to this number range are paused after unusual volume")]
    PrefixBlocked { retry_after: Duration },
    /// The number's lookup refused the send. What the caller reads is
    /// what the SSPR page can show: a SIM change reads as a lookup that
    /// could not answer, never as itself.
    #[error("{}", lookup_refusal(*.0))]
    LookupRefused(LookupRefusal),
    #[error("this caller may not use the {} channel", .0.as_str())]
    ChannelNotAllowed(Channel),
    /// Asked for, or the default where none was asked for.
    #[error("voice_mode {} is not allowed for this caller", .0.as_str())]
    VoiceModeNotAllowed(VoiceMode),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// The fallback workflow the start asked for cannot run.
    #[error("{}: {}", .0.field(), .0)]
    Fallback(WorkflowError),
    #[error("a verification call to this destination was reported as fraud; it is blocked for now")]
    Blocked { retry_after: Duration },
    #[error("a code was sent less than the resend cooldown ago")]
    Cooldown { retry_after: Duration },
    #[error("this verification has used all its sends")]
    SendLimitReached { retry_after: Duration },
    #[error("the idempotency key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this idempotency key is still running")]
    IdempotencyInFlight,
    #[error("no provider accepted the message: {error}")]
    Delivery {
        error: SendError,
        /// The verification the send was for, so the caller can read its
        /// send attempts.
        verification: VerificationId,
        /// Whether the message may have gone out all the same (the send's
        /// outcome is unknown): the verification is still pending.
        may_have_sent: bool,
    },
    /// This process runs as many starts and resends as it may at once
    /// (`delivery.max_sends_in_flight`); nothing was taken or claimed.
    #[error(
        "this server is sending as many messages as it may at once; retry after the delay given"
    )]
    SendsInFlight { retry_after: Duration },
    #[error("verifyd is shutting down")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("verification not found")]
    NotFound,
    #[error("verification is {}", .0.as_str())]
    NotPending(Status),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// For get, cancel and watch.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("verification not found")]
    NotFound,
    #[error("verification is {}", .0.as_str())]
    NotPending(Status),
    #[error("too many open watch streams for this tenant")]
    TooManyWatches,
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("verification not found")]
    NotFound,
    /// The token or CallSid is not this verification's live call's.
    #[error("not this verification's call")]
    Forbidden,
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Templates(#[from] crate::delivery::TemplateError),
}

impl From<LimitError> for StartError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(limited) => Self::RateLimited(limited),
            LimitError::Store(store) => Self::Store(store),
        }
    }
}

impl From<LimitError> for CheckError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(limited) => Self::RateLimited(limited),
            LimitError::Store(store) => Self::Store(store),
        }
    }
}
