//! What providers' webhooks tell verifyd, whichever provider sent them:
//! each provider's adapter reads its own requests into these events (and
//! renders its own call instructions from a [`CallStep`]), so the webhook
//! routes and the use cases never see a provider's words.
//!
//! [`CallStep`]: crate::domain::voice::CallStep

use crate::domain::{
    DeliveryReport, TenantId, VerificationId,
    call::CallKey,
    voice::{AnsweredBy, Menu},
};

/// Why a webhook request was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No provider of that name takes webhooks.
    UnknownProvider,
    /// The signature is missing or does not match.
    Signature,
    /// A field is missing or malformed.
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
}

/// A call's webhook, known to be about this verification's call.
#[derive(Debug, Clone)]
pub struct CallRef {
    pub tenant: TenantId,
    pub id: VerificationId,
    pub key: CallKey,
}

/// What a webhook tells verifyd.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message's delivery status moved.
    MessageStatus {
        tenant: TenantId,
        id: VerificationId,
        report: DeliveryReport,
    },
    /// The call was answered, and Twilio asks what to say.
    CallAnswered {
        call: CallRef,
        answered_by: Option<AnsweredBy>,
    },
    /// Keys pressed in answer to `menu`, at the call's step `step`.
    KeysPressed {
        call: CallRef,
        menu: Menu,
        step: u8,
        digits: String,
    },
    /// The call's progress (ringing, answered, completed, busy…).
    CallStatus {
        call: CallRef,
        report: DeliveryReport,
        answered_by: Option<AnsweredBy>,
    },
}
