//! `[voice]` and `[tenants.NAME.voice]`: which voice modes calls may use,
//! how calls re-prompt, how long a fraud report blocks, what an unknown
//! answerer counts as, how long a gather waits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{
    VoiceMode,
    voice::{ModePolicy, VoiceModes},
};

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
    /// The modes a start may ask for.
    pub modes: VoiceModes,
    /// The mode of a start that asks for none; one of `modes`.
    pub default_mode: VoiceMode,
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
            modes: VoiceModes::ALL,
            default_mode: VoiceMode::Confirm,
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
        if self.modes.is_empty() {
            return Some(("modes", "list at least one of confirm, match, code"));
        }
        if !self.modes.contains(self.default_mode) {
            return Some(("default_mode", "must be one of modes"));
        }
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

    pub fn mode_policy(&self) -> ModePolicy {
        ModePolicy {
            allowed: self.modes,
            default: self.default_mode,
        }
    }
}

/// `[tenants.NAME.voice]`: a tenant's own voice settings, each replacing
/// the server's (`[voice]`) for that tenant's calls; those left out stay
/// the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceOverrides {
    pub modes: Option<VoiceModes>,
    pub default_mode: Option<VoiceMode>,
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
            modes: self.modes.unwrap_or(server.modes),
            default_mode: self.default_mode.unwrap_or(server.default_mode),
            max_reprompts: self.max_reprompts.unwrap_or(server.max_reprompts),
            fraud_block: self.fraud_block.unwrap_or(server.fraud_block),
            unknown_answer: self.unknown_answer.unwrap_or(server.unknown_answer),
            gather_timeout_secs: self
                .gather_timeout_secs
                .unwrap_or(server.gather_timeout_secs),
        }
    }
}
