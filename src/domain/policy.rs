//! The lifecycle limits of a verification, validated once from config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::code::CodeLength;

/// How codes and verifications behave. The defaults are the documented ones;
/// `config` builds this from the operator's settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub code_length: CodeLength,
    /// How long a code stays valid after it is sent.
    pub code_ttl: Duration,
    /// Wrong codes allowed per verification, across resends.
    pub max_check_attempts: u32,
    /// Sends (first and resends) allowed per verification.
    pub max_send_attempts: u32,
    /// Minimum time between the first send on a verification and the
    /// next, whatever the channel; it doubles with each resend (see
    /// [`Policy::resend_wait`]).
    pub resend_cooldown: Duration,
    /// Digits shown for number matching on voice calls (2 or 3).
    pub match_digits: u8,
    /// How long a verification stays readable after its expiry time, before
    /// it is purged.
    pub retention: Duration,
    /// The longest a send may hold a verification: no other send on it
    /// starts meanwhile, whatever the cooldown. Longer than a send may take.
    pub send_lease: Duration,
}

/// How often the resend wait doubles, at most: 30 s, 1 min, 2 min, 4 min,
/// then 4 min again with the default cooldown.
pub const MAX_RESEND_DOUBLINGS: u32 = 3;

impl Policy {
    /// The least time from a send to the next, after `sends_made` sends on
    /// a verification: `resend_cooldown`, doubling with each resend (up to
    /// `MAX_RESEND_DOUBLINGS` times), so a script hammering resends gets
    /// ever fewer messages out.
    pub fn resend_wait(&self, sends_made: u32) -> std::time::Duration {
        let doublings = sends_made.saturating_sub(1).min(MAX_RESEND_DOUBLINGS);
        self.resend_cooldown * 2u32.pow(doublings)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            code_length: CodeLength::new(6).expect("6 is a valid code length"),
            code_ttl: Duration::from_secs(10 * 60),
            max_check_attempts: 5,
            max_send_attempts: 5,
            resend_cooldown: Duration::from_secs(30),
            match_digits: 2,
            retention: Duration::from_secs(60 * 60),
            send_lease: Duration::from_secs(11),
        }
    }
}

/// `[code]`, as set: configuration validates it and builds the [`Policy`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeConfig {
    pub length: u8,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_check_attempts: u32,
    pub max_send_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub resend_cooldown: Duration,
    pub match_digits: u8,
    /// How long a verification stays readable after its expiry time.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl CodeConfig {
    /// The first setting out of range: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if CodeLength::new(self.length).is_none() {
            return Some(("code.length", "must be 6 to 10"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&self.ttl) {
            return Some(("code.ttl", "must be 1s to 24h"));
        }
        if !(1..=20).contains(&self.max_check_attempts) {
            return Some(("code.max_check_attempts", "must be 1 to 20"));
        }
        if !(1..=20).contains(&self.max_send_attempts) {
            return Some(("code.max_send_attempts", "must be 1 to 20"));
        }
        if self.resend_cooldown > self.ttl {
            return Some(("code.resend_cooldown", "must not exceed code.ttl"));
        }
        if self.retention > Duration::from_secs(30 * 24 * 3600) {
            return Some(("code.retention", "must be at most 30 days"));
        }
        if !(2..=3).contains(&self.match_digits) {
            return Some(("code.match_digits", "must be 2 or 3"));
        }
        None
    }
}

impl Default for CodeConfig {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            length: p.code_length.get(),
            ttl: p.code_ttl,
            max_check_attempts: p.max_check_attempts,
            max_send_attempts: p.max_send_attempts,
            resend_cooldown: p.resend_cooldown,
            match_digits: p.match_digits,
            retention: p.retention,
        }
    }
}
