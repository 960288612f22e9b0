//! A channel as configuration spells it: a tenant's channels, a fallback
//! workflow's.

use serde::{Deserialize, Serialize};

use crate::domain::Channel;

/// A channel as configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Sms,
    Voice,
    Email,
}

impl From<ChannelName> for Channel {
    fn from(c: ChannelName) -> Self {
        match c {
            ChannelName::Sms => Self::Sms,
            ChannelName::Voice => Self::Voice,
            ChannelName::Email => Self::Email,
        }
    }
}
