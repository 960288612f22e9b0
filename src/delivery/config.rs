//! The `[delivery]` and `[providers]` settings. The application builds the
//! delivery side from them (`app::delivery`).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    dev_phone::DevPhone,
    http::HttpConfig,
    route::{BreakerConfig, RetryPolicy},
    smtp::SmtpConfig,
    twilio::TwilioConfig,
};

/// The built-in dev-only provider: writes messages, codes included, to
/// stdout. Needs no `[providers]` entry.
pub const CONSOLE_PROVIDER: &str = "console";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The longest one send (all retries and failover) may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// The most starts and resends this process runs at once. Past it, a
    /// start is refused before it takes anything, so a provider that hangs
    /// ties up at most this many requests, not every caller.
    pub max_sends_in_flight: u32,
    /// A directory of templates that replace the built-in ones.
    pub templates_dir: Option<PathBuf>,
    /// When set, SMS bodies end with the WebOTP line `@domain #code`, so
    /// browsers on that origin can fill the code in.
    pub webotp_domain: Option<String>,
    /// Provider names in order of preference (keys of `[providers]`, or
    /// `console`); empty means the channel is off (dev mode: console).
    pub sms: Vec<String>,
    pub voice: Vec<String>,
    pub email: Vec<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            max_sends_in_flight: 1000,
            templates_dir: None,
            webotp_domain: None,
            sms: Vec::new(),
            voice: Vec::new(),
            email: Vec::new(),
        }
    }
}

impl DeliveryConfig {
    /// The first problem with these settings: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        // A send must end well within the idempotency lease (60s), so a
        // retry never runs while the first attempt is still sending.
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(50) {
            return Some(("delivery.timeout", "must be above zero and at most 50s"));
        }
        if self.sms.is_empty() && self.voice.is_empty() && self.email.is_empty() {
            return Some((
                "delivery",
                "list providers for at least one of delivery.sms, delivery.voice, delivery.email",
            ));
        }
        if self.retry.attempt_timeout.is_zero() {
            return Some(("delivery.retry.attempt_timeout", "must be above zero"));
        }
        if self.retry.retries > 10 {
            return Some(("delivery.retry.retries", "must be at most 10"));
        }
        if !(1..=100_000).contains(&self.max_sends_in_flight) {
            return Some(("delivery.max_sends_in_flight", "must be from 1 to 100000"));
        }
        if self.breaker.failures == 0 {
            return Some(("delivery.breaker.failures", "must be above zero"));
        }
        None
    }
}

/// The first `[providers.NAME]` whose name is not plain (1 to 32 of
/// `[a-z0-9-]`) or is a built-in sender's (the console, dev mode's
/// simulated phone): its key and why.
pub fn providers_problem(
    providers: &BTreeMap<String, ProviderConfig>,
) -> Option<(String, &'static str)> {
    providers
        .keys()
        .find(|name| {
            let plain = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            !plain || *name == CONSOLE_PROVIDER || *name == DevPhone::PROVIDER
        })
        .map(|name| {
            (
                format!("providers.{name}"),
                "provider names are 1 to 32 of [a-z0-9-], and neither \"console\" nor \"dev-phone\"",
            )
        })
}

/// A configured provider, by kind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Twilio's Messages API (SMS).
    Twilio(TwilioConfig),
    /// An in-house SMS gateway: a signed JSON POST.
    Http(HttpConfig),
    Smtp(SmtpConfig),
}

impl ProviderConfig {
    /// Whether this kind of provider can send on `channel`.
    pub fn serves(&self, channel: &str) -> bool {
        match self {
            Self::Twilio(_) => channel == "sms" || channel == "voice",
            Self::Http(_) => channel == "sms",
            Self::Smtp(_) => channel == "email",
        }
    }
}
