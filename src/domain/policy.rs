//! The lifecycle limits of a verification, validated once from config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{channel::Channel, code::CodeLength};

/// How codes and verifications behave. The defaults are the documented ones;
/// `config` builds this from the operator's settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub code_length: CodeLength,
    /// How long a code stays valid after it is sent.
    pub code_ttl: Duration,
    /// A code's life by the channel that sent it, in place of `code_ttl`
    /// (see [`Policy::for_channel`]).
    pub ttl_by_channel: ChannelTtls,
    /// How long a run of new verifications for one destination is
    /// remembered (the least gap doubles within it): the longest a code
    /// can live, by any channel. Judged by the channel of the start at
    /// hand, a run of starts on a short-lived channel would be forgotten
    /// before its gap could grow.
    pub starts_window: Duration,
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
    /// This policy for a send on `channel`: `code_ttl` is that channel's.
    /// The service resolves it once per request; the stores and the domain
    /// read `code_ttl` only.
    pub fn for_channel(&self, channel: Channel) -> Self {
        Self {
            code_ttl: self.ttl_by_channel.get(channel).unwrap_or(self.code_ttl),
            ..self.clone()
        }
    }

    /// This policy with `code`'s code settings (a tenant's, merged over the
    /// server's: [`CodeConfig::overridden`]); match digits, retention and
    /// the send lease stay the server's.
    pub fn with_code(&self, code: &CodeConfig) -> Self {
        Self {
            // Validated; an unvalidated one keeps this policy's length, as
            // Config::policy did before tenants had their own.
            code_length: CodeLength::new(code.length).unwrap_or(self.code_length),
            code_ttl: code.ttl,
            ttl_by_channel: code.ttl_by_channel,
            starts_window: code.ttl_by_channel.longest(code.ttl),
            max_check_attempts: code.max_check_attempts,
            max_send_attempts: code.max_send_attempts,
            resend_cooldown: code.resend_cooldown,
            ..self.clone()
        }
    }

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
            ttl_by_channel: ChannelTtls::default(),
            starts_window: Duration::from_secs(10 * 60),
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
    /// `[code.ttl_by_channel]`: `ttl` for the codes one channel sends.
    pub ttl_by_channel: ChannelTtls,
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
        if !TTL_RANGE.contains(&self.ttl) {
            return Some(("code.ttl", "must be 1s to 24h"));
        }
        for (channel, ttl) in self.ttl_by_channel.set() {
            if !TTL_RANGE.contains(&ttl) {
                return Some((ttl_key(channel), "must be 1s to 24h"));
            }
            if self.resend_cooldown > ttl {
                return Some((
                    "code.resend_cooldown",
                    "must not exceed any code.ttl_by_channel",
                ));
            }
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
            ttl_by_channel: p.ttl_by_channel,
            max_check_attempts: p.max_check_attempts,
            max_send_attempts: p.max_send_attempts,
            resend_cooldown: p.resend_cooldown,
            match_digits: p.match_digits,
            retention: p.retention,
        }
    }
}

/// A code's life from 1 s to a day.
const TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// A code's life by the channel that sends it (`[code.ttl_by_channel]`):
/// an email is read later than a text, a call's code is said at once.
/// Unset channels use `ttl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelTtls {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub sms: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub voice: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub email: Option<Duration>,
}

impl ChannelTtls {
    pub fn get(&self, channel: Channel) -> Option<Duration> {
        match channel {
            Channel::Sms => self.sms,
            Channel::Voice => self.voice,
            Channel::Email => self.email,
        }
    }

    /// The channels set, with their TTL.
    fn set(&self) -> impl Iterator<Item = (Channel, Duration)> {
        [Channel::Sms, Channel::Voice, Channel::Email]
            .into_iter()
            .filter_map(|c| Some((c, self.get(c)?)))
    }

    /// Each channel's own, else `fallback`'s.
    fn or(self, fallback: Self) -> Self {
        Self {
            sms: self.sms.or(fallback.sms),
            voice: self.voice.or(fallback.voice),
            email: self.email.or(fallback.email),
        }
    }

    /// The longest a code can live, by any channel or `ttl`.
    pub fn longest(&self, ttl: Duration) -> Duration {
        self.set().map(|(_, t)| t).fold(ttl, Duration::max)
    }
}

fn ttl_key(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "code.ttl_by_channel.sms",
        Channel::Voice => "code.ttl_by_channel.voice",
        Channel::Email => "code.ttl_by_channel.email",
    }
}

/// `[tenants.NAME.code]`: a tenant's own code settings, each replacing the
/// server's `[code]` one. A tenant's `ttl` replaces the server's
/// `ttl_by_channel` too; its own `ttl_by_channel` comes before both.
/// Match digits and retention stay the server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u8>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    pub ttl_by_channel: ChannelTtls,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_check_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_send_attempts: Option<u32>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub resend_cooldown: Option<Duration>,
}

impl CodeConfig {
    /// The server's settings with a tenant's `overrides` over them; check
    /// the result with [`CodeConfig::problem`].
    pub fn overridden(&self, overrides: &CodeOverrides) -> Self {
        let server_by_channel = if overrides.ttl.is_some() {
            ChannelTtls::default()
        } else {
            self.ttl_by_channel
        };
        Self {
            length: overrides.length.unwrap_or(self.length),
            ttl: overrides.ttl.unwrap_or(self.ttl),
            ttl_by_channel: overrides.ttl_by_channel.or(server_by_channel),
            max_check_attempts: overrides
                .max_check_attempts
                .unwrap_or(self.max_check_attempts),
            max_send_attempts: overrides
                .max_send_attempts
                .unwrap_or(self.max_send_attempts),
            resend_cooldown: overrides.resend_cooldown.unwrap_or(self.resend_cooldown),
            ..self.clone()
        }
    }
}
