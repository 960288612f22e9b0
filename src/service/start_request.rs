//! What a caller asks a start or a resend for, validated by the transport:
//! the destination and purpose (a start) or the verification (a resend),
//! the delivery, and an optional idempotency key. (Each request's
//! fingerprint, which only its use case takes, is defined with it.)

use std::net::IpAddr;

use crate::domain::{
    CallerRef, Destination, Extension, Purpose, VerificationId, fallback::Workflow,
    verification::Delivery,
};

/// A caller's idempotency key: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(input: &str) -> Option<Self> {
        let ok = (1..=Self::MAX_LEN).contains(&input.len())
            && input.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated StartVerification.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub to: Destination,
    pub extension: Option<Extension>,
    pub purpose: Purpose,
    pub delivery: Delivery,
    pub idempotency_key: Option<IdempotencyKey>,
    pub end_user_ip: Option<IpAddr>,
    pub caller_ref: CallerRef,
    pub fallback: FallbackAsk,
}

/// What a start asks of automatic channel fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FallbackAsk {
    /// Nothing: the tenant's default workflow, if it has one and it
    /// begins on the start's channel.
    #[default]
    TenantDefault,
    /// No fallback, whatever the tenant's default.
    Off,
    Workflow(Workflow),
}

/// A validated ResendVerification.
#[derive(Debug, Clone)]
pub struct ResendRequest {
    pub id: VerificationId,
    pub delivery: Delivery,
    pub idempotency_key: Option<IdempotencyKey>,
    pub end_user_ip: Option<IpAddr>,
}
