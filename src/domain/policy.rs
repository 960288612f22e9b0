//! The lifecycle limits of a verification, validated once from config.

use std::time::Duration;

use super::CodeLength;

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
    /// Minimum time between two sends on one verification, whatever the
    /// channel.
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
