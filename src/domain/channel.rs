//! The channels a code travels by. A module of its own because both the
//! verification and the policy (a code's life by channel) name it.

use super::destination::Destination;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Voice,
    Email,
}

impl Channel {
    /// Whether this channel can reach the destination at all.
    pub fn reaches(self, to: &Destination) -> bool {
        matches!(
            (self, to),
            (Self::Sms | Self::Voice, Destination::Phone(_)) | (Self::Email, Destination::Email(_))
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Voice => "voice",
            Self::Email => "email",
        }
    }
}
