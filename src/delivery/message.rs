//! What a send carries and how it ends: the [`Message`] and its rendered
//! [`Content`] going to a provider, the [`Receipt`] or [`SendError`] (with
//! its [`FailureKind`]) coming back.

use std::{fmt, time::Duration};

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::domain::destination::mask_phone_numbers;

use crate::domain::{
    Channel, Code, Destination, Extension, MatchDigits, Purpose, TenantId, VerificationId,
    VoiceMode, verification::Delivery, voice::CallToken,
};

/// What one send carries. `Debug` leaves the code out.
pub struct Message {
    pub tenant: TenantId,
    pub verification_id: VerificationId,
    pub to: Destination,
    /// For a call: the extension to dial once it connects.
    pub extension: Option<Extension>,
    pub purpose: Purpose,
    pub delivery: Delivery,
    pub code: Code,
    pub match_digits: Option<MatchDigits>,
    /// For a voice call: the secret in its webhook URLs.
    pub call_token: Option<CallToken>,
    /// How long the code stays valid, for the message text.
    pub valid_for: Duration,
    /// The name the user knows the service by, for the message text.
    pub app_name: String,
}

impl Message {
    /// Whether the message carries the code: every channel but press-# and
    /// number-matching calls, which ask for keys instead. A provider that
    /// has a read-aloud call fetch its instructions leaves it out and says
    /// so ([`Receipt::code_withheld`]).
    pub fn carries_code(&self) -> bool {
        self.delivery.channel != Channel::Voice
            || self.delivery.voice_mode.unwrap_or_default() == VoiceMode::Code
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("verification_id", &self.verification_id)
            .field("to", &self.to)
            .field("channel", &self.delivery.channel)
            .finish_non_exhaustive()
    }
}

/// What the user receives, rendered once per send. It usually contains the
/// code, so `Debug` is redacted and the text is wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub enum Content {
    /// An SMS body.
    Text(String),
    /// What a voice call says.
    Speech(String),
    Email {
        subject: String,
        text: String,
        html: String,
    },
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text(_) => "Content::Text(<redacted>)",
            Self::Speech(_) => "Content::Speech(<redacted>)",
            Self::Email { .. } => "Content::Email(<redacted>)",
        })
    }
}

impl Content {
    /// The main text: the SMS body, the speech, or the email's plain part.
    pub fn text(&self) -> &str {
        match self {
            Self::Text(t) | Self::Speech(t) => t,
            Self::Email { text, .. } => text,
        }
    }
}

/// A provider's answer when it took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The configured provider name, e.g. `twilio`.
    pub provider: String,
    /// The provider's id for the message or call (a Twilio SID), used to
    /// match status callbacks.
    pub reference: Option<String>,
    /// The message went without its code: a read-aloud call that fetches
    /// its instructions says a code only once a person presses a key for
    /// it (drawn then, in the same step as its hash is stored), so the
    /// send keeps none.
    pub code_withheld: bool,
}

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The destination itself is refused (invalid, unreachable, blocked):
    /// no retry and no failover, since no provider will do better.
    Destination,
    /// This provider refused the request (credentials, configuration):
    /// no retry, but the next provider may work.
    Rejected,
    /// A timeout, a 5xx, a dropped connection: retry with backoff, then fail
    /// over. The provider may have sent it all the same.
    Transient,
    /// Retried like [`Self::Transient`], but surely nothing went out: the
    /// provider was never reached (connection refused, name not resolved,
    /// TLS handshake failed), or it answered that it took nothing for now
    /// (HTTP 429, an SMTP 4xx reply).
    Unsent,
    /// The provider answered that it took the request, in a way verifyd
    /// cannot use (a call with no CallSid to bind its webhooks to): no
    /// retry, the next provider may work, and it may have gone out.
    Unconfirmed,
    /// The provider was not asked at all: its circuit is open, or no time
    /// was left for it.
    NotTried,
}

impl FailureKind {
    /// Whether the destination may have received something all the same.
    pub fn may_have_sent(self) -> bool {
        matches!(self, Self::Transient | Self::Unconfirmed)
    }
}

/// Why a provider did not take a message. The reason is recorded on the send
/// attempt and may reach callers, so it never includes the code, and
/// [`SendError::new`] masks any phone number in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {reason}")]
pub struct SendError {
    pub provider: String,
    pub kind: FailureKind,
    pub reason: String,
}

impl SendError {
    /// The one way failures are made: providers' texts often echo the
    /// number they refused, so every reason is masked here.
    pub fn new(provider: impl Into<String>, kind: FailureKind, reason: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            kind,
            reason: mask_phone_numbers(&reason.into()),
        }
    }

    /// Masks `secret` in the reason too, where the provider may have echoed
    /// a field of the request that [`mask_phone_numbers`] cannot know (an
    /// extension). Only whole words are masked: an extension `1` leaves the
    /// `1` in `error 21211` alone.
    #[must_use]
    pub fn masking(mut self, secret: &str, masked: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let reason = &self.reason;
        let mut out = String::with_capacity(reason.len());
        let mut rest = 0;
        for (at, _) in reason.match_indices(secret) {
            let end = at + secret.len();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            if at < rest
                || word(reason[..at].chars().next_back())
                || word(reason[end..].chars().next())
            {
                continue;
            }
            out.push_str(&reason[rest..at]);
            out.push_str(masked);
            rest = end;
        }
        out.push_str(&reason[rest..]);
        self.reason = out;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_replaces_whole_words_only() {
        let e = SendError::new(
            "twilio",
            FailureKind::Rejected,
            "error 21211: SendDigits 1 or w1 (1)",
        )
        .masking("1", "ext. *");
        assert_eq!(e.reason, "error 21211: SendDigits ext. * or w1 (ext. *)");
        let e = SendError::new("twilio", FailureKind::Rejected, "4711/4711x").masking("4711", "*");
        assert_eq!(e.reason, "*/4711x");
    }
}
