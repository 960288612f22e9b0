//! The `[delivery]` and `[providers]` settings. The application builds the
//! delivery side from them (`app::delivery`).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
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
            templates_dir: None,
            webotp_domain: None,
            sms: Vec::new(),
            voice: Vec::new(),
            email: Vec::new(),
        }
    }
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
