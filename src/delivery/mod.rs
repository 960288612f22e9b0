//! The delivery seam: one [`Sender`] per channel, chosen from configuration.
//!
//! A sender gets a [`Message`] holding the plaintext code and must not keep
//! it: the message is dropped (and the code wiped) as soon as the send
//! returns. The dev-only console sender lives here; the SMS, voice and email
//! providers come with their own issues and plug into the same enum.

mod console;
mod text;

use std::{fmt, time::Duration};

pub use console::ConsoleSender;
pub use text::render;

use crate::domain::{
    Channel, Code, Destination, MatchDigits, Purpose, VerificationId, verification::Delivery,
};

/// What one send carries. `Debug` leaves the code out.
pub struct Message {
    pub verification_id: VerificationId,
    pub to: Destination,
    pub purpose: Purpose,
    pub delivery: Delivery,
    pub code: Code,
    pub match_digits: Option<MatchDigits>,
    /// How long the code stays valid, for the message text.
    pub valid_for: Duration,
    /// The name the user knows the service by, for the message text.
    pub app_name: String,
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

/// A sender's answer when it took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider: &'static str,
}

/// Why a sender did not take a message. The text is recorded on the send
/// attempt and may be returned to callers, so it never contains the code or
/// the full destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{provider} is unavailable: {reason}")]
    Unavailable {
        provider: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub enum Sender {
    Console(ConsoleSender),
}

impl Sender {
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Console(_) => ConsoleSender::PROVIDER,
        }
    }

    pub async fn send(&self, message: &Message) -> Result<Receipt, SendError> {
        match self {
            Self::Console(console) => console.send(message),
        }
    }
}

/// The sender configured for each channel; none means the channel is off.
#[derive(Debug, Clone)]
pub struct Senders {
    pub sms: Option<Sender>,
    pub voice: Option<Sender>,
    pub email: Option<Sender>,
}

impl Senders {
    pub fn for_channel(&self, channel: Channel) -> Option<&Sender> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Voice => self.voice.as_ref(),
            Channel::Email => self.email.as_ref(),
        }
    }
}
