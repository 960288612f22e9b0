//! `[voice]` and `[tenants.NAME.voice]`: how calls re-prompt, how long a
//! fraud report blocks, what an unknown answerer counts as, how long a
//! gather waits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What `AnsweredBy = unknown` counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAnswer {
    #[default]
    Person,
    Machine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceSettings {
    /// How often a call asks again after a wrong key.
    pub max_reprompts: u8,
    /// How long a destination stays blocked for the tenant after a fraud
    /// report.
    #[serde(with = "humantime_serde")]
    pub fraud_block: Duration,
    pub unknown_answer: UnknownAnswer,
    /// Seconds a gather waits for a key.
    pub gather_timeout_secs: u8,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            max_reprompts: 2,
            fraud_block: Duration::from_secs(24 * 3600),
            unknown_answer: UnknownAnswer::Person,
            gather_timeout_secs: 8,
        }
    }
}

impl VoiceSettings {
    /// The first setting out of range: its key under `[voice]` and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.max_reprompts > 5 {
            return Some(("max_reprompts", "must be at most 5"));
        }
        if !(1..=30).contains(&self.gather_timeout_secs) {
            return Some(("gather_timeout_secs", "must be 1 to 30"));
        }
        if self.fraud_block > Duration::from_secs(30 * 24 * 3600) {
            return Some(("fraud_block", "must be at most 30 days"));
        }
        None
    }
}

/// `[tenants.NAME.voice]`: a tenant's own voice settings, each replacing
/// the server's (`[voice]`) for that tenant's calls; those left out stay
/// the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceOverrides {
    pub max_reprompts: Option<u8>,
    #[serde(with = "humantime_serde")]
    pub fraud_block: Option<Duration>,
    pub unknown_answer: Option<UnknownAnswer>,
    pub gather_timeout_secs: Option<u8>,
}

impl VoiceOverrides {
    /// The settings in effect: these over the server's.
    pub fn over(&self, server: &VoiceSettings) -> VoiceSettings {
        VoiceSettings {
            max_reprompts: self.max_reprompts.unwrap_or(server.max_reprompts),
            fraud_block: self.fraud_block.unwrap_or(server.fraud_block),
            unknown_answer: self.unknown_answer.unwrap_or(server.unknown_answer),
            gather_timeout_secs: self
                .gather_timeout_secs
                .unwrap_or(server.gather_timeout_secs),
        }
    }
}
