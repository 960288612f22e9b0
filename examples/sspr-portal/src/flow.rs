//! What a session remembers between pages: who is signed in, the one
//! verification in progress, and where the reset flow stands. All of it
//! stays on the server; the browser only holds the session id.

use std::fmt;

use rand::Rng as _;
use tokio::sync::oneshot;

use crate::{decoy::Shadow, phone::Phone, proto};

/// How a code reaches the user, as the forms name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms,
    Voice,
    Email,
}

impl Channel {
    /// The `channel` or `method` field's value.
    pub fn from_form(value: &str) -> Option<Self> {
        match value {
            "sms" => Some(Channel::Sms),
            "voice" => Some(Channel::Voice),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }

    pub fn proto(self) -> proto::Channel {
        match self {
            Channel::Sms => proto::Channel::Sms,
            Channel::Voice => proto::Channel::Voice,
            Channel::Email => proto::Channel::Email,
        }
    }
}

/// The step a verification belongs to, and what its approval does.
/// Enrollments name the account that started them: approval saves the
/// method there only if that account is still the one signed in, so a
/// verification begun under one account never lands on another.
#[derive(Debug, Clone)]
pub enum Flow {
    /// Approval saves this phone on `account`.
    EnrollPhone { account: String, phone: Phone },
    /// Approval saves this email on `account`.
    EnrollEmail { account: String, email: String },
    /// Approval lets this session set the account's new password.
    Reset { account: String },
}

impl Flow {
    pub fn purpose(&self) -> proto::Purpose {
        match self {
            Flow::EnrollPhone { .. } | Flow::EnrollEmail { .. } => proto::Purpose::Enrollment,
            Flow::Reset { .. } => proto::Purpose::PasswordReset,
        }
    }

    /// Where the user asks for a new verification once this one ended.
    pub fn start_page(&self) -> &'static str {
        match self {
            Flow::EnrollPhone { .. } => "/register/phone",
            Flow::EnrollEmail { .. } => "/register/email",
            Flow::Reset { .. } => "/reset/method",
        }
    }

    pub fn is_reset(&self) -> bool {
        matches!(self, Flow::Reset { .. })
    }
}

/// A verifyd verification id: the capability to check, watch and resend
/// it. It lives only here, in the server-side session: never in a page, a
/// URL, a cookie or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationId(String);

impl VerificationId {
    pub fn new(id: String) -> Self {
        VerificationId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerificationId(<redacted>)")
    }
}

/// What the pending step verifies with.
#[derive(Debug)]
pub enum Target {
    /// A verification verifyd started.
    Real(VerificationId),
    /// Nothing was sent (a reset for an unknown account, or a method that
    /// did not match): the page behaves as if something had been.
    Decoy(Shadow),
}

/// The verification in progress; one per session.
#[derive(Debug)]
pub struct Pending {
    pub flow: Flow,
    /// The channel of the latest send.
    pub channel: Channel,
    /// The masked destination the page names.
    pub shown_to: String,
    pub target: Target,
    /// Number matching: the digits the user keys in on the call.
    pub match_digits: Option<String>,
    /// Set once it is known to be over without approval: what to say.
    pub ended: Option<String>,
}

/// Where the reset flow stands.
#[derive(Debug)]
pub struct Reset {
    /// The account name typed, known or not.
    pub account: String,
    /// A verification for the account was approved in this session.
    pub authorized: bool,
}

/// The reset flow's bot check: a sum to work out. Stands in for a real
/// CAPTCHA, which needs an outside service.
#[derive(Debug)]
pub struct Challenge {
    pub question: String,
    answer: u32,
}

impl Challenge {
    pub fn new() -> Self {
        let mut rng = rand::rng();
        let (a, b) = (rng.random_range(2..=9), rng.random_range(2..=9));
        Challenge {
            question: format!("What is {a} plus {b}?"),
            answer: a + b,
        }
    }

    pub fn is_answered_by(&self, typed: &str) -> bool {
        typed.trim().parse::<u32>() == Ok(self.answer)
    }
}

impl Default for Challenge {
    fn default() -> Self {
        Challenge::new()
    }
}

/// A message for the next page shown (post/redirect/get).
#[derive(Debug, Default)]
pub struct Flash {
    pub notice: Option<String>,
    pub error: Option<String>,
}

/// The session's one live event stream (`GET /verify/events`). Dropping
/// it ends the stream: a new stream replaces the handle, so the one before
/// stops, and the session's end (sign-out, expiry, eviction) stops it too.
/// One per session keeps a single user from holding many of verifyd's
/// WatchVerification streams open.
#[derive(Debug)]
pub struct LiveStream {
    /// Never sent on: only its drop is the signal.
    _ends_on_drop: oneshot::Sender<()>,
}

impl LiveStream {
    /// A handle, and what the stream waits on: it resolves once the handle
    /// is dropped.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (LiveStream { _ends_on_drop: tx }, rx)
    }
}

/// Everything a session holds besides its id and CSRF token.
#[derive(Debug, Default)]
pub struct SessionData {
    /// The signed-in account.
    pub account: Option<String>,
    pub pending: Option<Pending>,
    pub reset: Option<Reset>,
    pub challenge: Option<Challenge>,
    pub flash: Flash,
    /// Where the last finished verification led, for a second request that
    /// finds it already finished (the page's script and the user's click).
    pub finished_next: Option<&'static str>,
    /// The call page's event stream, while one is open.
    pub live_stream: Option<LiveStream>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_takes_its_sum() {
        let c = Challenge::new();
        let words: Vec<&str> = c.question.split(' ').collect();
        let a: u32 = words[2].parse().expect("a");
        let b: u32 = words[4].trim_end_matches('?').parse().expect("b");
        assert!(c.is_answered_by(&format!(" {} ", a + b)));
        assert!(!c.is_answered_by(&format!("{}", a + b + 1)));
        assert!(!c.is_answered_by(""));
    }

    #[test]
    fn dropping_a_live_stream_handle_ends_its_stream() {
        let (handle, mut ended) = LiveStream::new();
        assert_eq!(ended.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        let mut data = SessionData {
            live_stream: Some(handle),
            ..SessionData::default()
        };
        let (next, mut next_ended) = LiveStream::new();
        data.live_stream = Some(next);
        assert_eq!(ended.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        drop(data);
        assert_eq!(
            next_ended.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
    }

    #[test]
    fn debug_does_not_show_a_verification_id() {
        let id = VerificationId::new("VEsecret".into());
        assert!(!format!("{id:?}").contains("VEsecret"));
    }
}
