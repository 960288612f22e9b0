//! `[lookup]`: risk signals before a phone send, from a live lookup of the
//! number (Twilio Lookup v2 through a configured Twilio provider's
//! account), and the policy that reads them ([`LookupPolicy`]). Off by
//! default: each lookup is a paid call.
//!
//! A tenant may turn it on or off and set its own policy
//! (`[tenants.NAME.lookup]`, [`LookupOverrides`]).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use url::Url;

use super::twilio::lookup::{DEFAULT_BASE_URL, TwilioLookup};
use crate::domain::{
    destination::PhoneNumber,
    lookup::{LineKind, LookupPolicy, OnFailure, Signals},
};

/// `[lookup]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// Look numbers up before SMS and voice sends. A tenant may say
    /// otherwise for itself.
    pub enabled: bool,
    /// The `[providers.NAME]` (kind `twilio`) whose account pays.
    pub provider: String,
    /// Lookup v2's address; tests point it at a fake.
    pub base_url: Url,
    /// The longest a lookup may take (within the caller's deadline and
    /// `delivery.timeout`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a number's signals are kept (per tenant; on Redis shared
    /// by every replica and keyed by the number's keyed hash). At least
    /// the longest least gap between starts, so a start that gap refuses
    /// is never looked up again for nothing.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Line types refused an SMS.
    pub refuse_sms: Vec<LineKind>,
    /// Line types refused a call.
    pub refuse_voice: Vec<LineKind>,
    /// Refuse a password reset or method update by SMS or voice to a mobile
    /// whose SIM changed this recently; `0s` asks no SIM change.
    #[serde(with = "humantime_serde")]
    pub sim_swap_within: Duration,
    /// What a send gets when the lookup cannot answer, per purpose.
    pub on_failure: FailurePolicy,
}

/// The policy's settings, resolved for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyConfig {
    refuse_sms: Vec<LineKind>,
    refuse_voice: Vec<LineKind>,
    sim_swap_within: Duration,
    on_failure: FailurePolicy,
}

/// `[lookup.on_failure]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailurePolicy {
    pub enrollment: OnFailure,
    pub password_reset: OnFailure,
    pub method_update: OnFailure,
}

impl Default for FailurePolicy {
    /// A reset or a method update is what an attacker who took the number
    /// over wants: without the signals that would have caught it, it is
    /// refused. An enrollment proves a number the user is adding while
    /// signed in, and a refusal would only block sign-up during an outage.
    fn default() -> Self {
        Self {
            enrollment: OnFailure::Proceed,
            password_reset: OnFailure::Refuse,
            method_update: OnFailure::Refuse,
        }
    }
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            provider: String::new(),
            base_url: Url::parse(DEFAULT_BASE_URL).expect("a valid URL"),
            timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(3_600),
            refuse_sms: vec![
                LineKind::Landline,
                LineKind::FixedVoip,
                LineKind::TollFree,
                LineKind::Premium,
                LineKind::SharedCost,
                LineKind::Uan,
                LineKind::Voicemail,
                LineKind::Pager,
            ],
            refuse_voice: vec![
                LineKind::Premium,
                LineKind::SharedCost,
                LineKind::Pager,
                LineKind::Voicemail,
            ],
            sim_swap_within: Duration::from_secs(7 * 86_400),
            on_failure: FailurePolicy::default(),
        }
    }
}

impl PolicyConfig {
    fn policy(&self) -> LookupPolicy {
        LookupPolicy {
            refuse_sms: self.refuse_sms.clone(),
            refuse_voice: self.refuse_voice.clone(),
            sim_swap_within: (!self.sim_swap_within.is_zero()).then_some(self.sim_swap_within),
            on_failure_enrollment: self.on_failure.enrollment,
            on_failure_password_reset: self.on_failure.password_reset,
            on_failure_method_update: self.on_failure.method_update,
        }
    }
}

/// `[tenants.NAME.lookup]`: whether this tenant's sends are looked up, and
/// its own policy, each setting over the server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refuse_sms: Option<Vec<LineKind>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refuse_voice: Option<Vec<LineKind>>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub sim_swap_within: Option<Duration>,
    pub on_failure: PartialFailurePolicy,
}

/// `[tenants.NAME.lookup.on_failure]`: each purpose over the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialFailurePolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<OnFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_reset: Option<OnFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method_update: Option<OnFailure>,
}

impl LookupConfig {
    /// A tenant's policy: `None` when its sends are not looked up.
    pub fn policy_for(&self, overrides: &LookupOverrides) -> Option<LookupPolicy> {
        if !overrides.enabled.unwrap_or(self.enabled) {
            return None;
        }
        let server = self;
        Some(
            PolicyConfig {
                refuse_sms: overrides
                    .refuse_sms
                    .clone()
                    .unwrap_or_else(|| server.refuse_sms.clone()),
                refuse_voice: overrides
                    .refuse_voice
                    .clone()
                    .unwrap_or_else(|| server.refuse_voice.clone()),
                sim_swap_within: overrides.sim_swap_within.unwrap_or(server.sim_swap_within),
                on_failure: FailurePolicy {
                    enrollment: overrides
                        .on_failure
                        .enrollment
                        .unwrap_or(server.on_failure.enrollment),
                    password_reset: overrides
                        .on_failure
                        .password_reset
                        .unwrap_or(server.on_failure.password_reset),
                    method_update: overrides
                        .on_failure
                        .method_update
                        .unwrap_or(server.on_failure.method_update),
                },
            }
            .policy(),
        )
    }

    /// Whether any tenant may be looked up, given theirs.
    pub fn in_use<'a>(&self, tenants: impl IntoIterator<Item = &'a LookupOverrides>) -> bool {
        self.enabled || tenants.into_iter().any(|t| t.enabled == Some(true))
    }

    /// The first problem: its key under `[lookup]` and why. `longest_gap`
    /// is the longest least gap between starts any tenant can have.
    pub fn problem(
        &self,
        longest_gap: Duration,
        send_timeout: Duration,
    ) -> Option<(&'static str, String)> {
        if !matches!(self.base_url.scheme(), "http" | "https") {
            return Some(("base_url", "must be http or https".to_owned()));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(10)).contains(&self.timeout) {
            return Some(("timeout", "must be 100ms to 10s".to_owned()));
        }
        // A start's lookup and its send together must end well within the
        // idempotency lease (60s), as a send alone must.
        if self.timeout + send_timeout > Duration::from_secs(50) {
            return Some((
                "timeout",
                "with delivery.timeout, must be at most 50s".to_owned(),
            ));
        }
        if self.cache_ttl < longest_gap {
            return Some((
                "cache_ttl",
                format!(
                    "must be at least the longest least gap between starts ({}), so a start the gap refuses is not looked up again",
                    humantime::format_duration(longest_gap)
                ),
            ));
        }
        if self.cache_ttl > Duration::from_secs(30 * 86_400) {
            return Some((
                "cache_ttl",
                "must be at most 30d: a line changes hands".to_owned(),
            ));
        }
        None
    }
}

/// The lookup a service asks: a provider's client.
#[derive(Debug, Clone)]
pub struct Lookup {
    client: TwilioLookup,
    pub timeout: Duration,
    pub cache_ttl: Duration,
}

impl Lookup {
    pub fn new(client: TwilioLookup, config: &LookupConfig) -> Self {
        Self {
            client,
            timeout: config.timeout,
            cache_ttl: config.cache_ttl,
        }
    }

    /// The number's signals, within `budget`; `Err` says why there are none
    /// (never with the number in it).
    pub async fn signals(
        &self,
        phone: &PhoneNumber,
        sim_swap: bool,
        budget: Duration,
        now: SystemTime,
    ) -> Result<Signals, String> {
        self.client
            .signals(phone, sim_swap, budget.min(self.timeout), now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use figment::{
        Figment,
        providers::{Format, Serialized, Toml},
    };

    use super::*;

    fn load(toml: &str) -> Result<LookupConfig, String> {
        Figment::from(Serialized::defaults(LookupConfig::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_settings_read_as_documented_and_a_tenant_overrides_them() {
        let config = load(
            r#"
            enabled = true
            provider = "twilio"
            refuse_sms = ["landline", "nonFixedVoip"]
            sim_swap_within = "3d"
            on_failure = { enrollment = "refuse", password_reset = "refuse", method_update = "proceed" }
            "#,
        )
        .expect("valid");
        let policy = config.policy_for(&LookupOverrides::default()).expect("on");
        assert_eq!(
            policy.refuse_sms,
            [LineKind::Landline, LineKind::NonFixedVoip]
        );
        assert_eq!(policy.refuse_voice, LookupConfig::default().refuse_voice);
        assert_eq!(
            policy.sim_swap_within,
            Some(Duration::from_secs(3 * 86_400))
        );
        assert_eq!(policy.on_failure_enrollment, OnFailure::Refuse);
        assert_eq!(policy.on_failure_method_update, OnFailure::Proceed);

        let tenant = LookupOverrides {
            sim_swap_within: Some(Duration::ZERO),
            ..LookupOverrides::default()
        };
        assert_eq!(
            config.policy_for(&tenant).expect("on").sim_swap_within,
            None
        );
        let off = LookupOverrides {
            enabled: Some(false),
            ..LookupOverrides::default()
        };
        assert_eq!(config.policy_for(&off), None);
        assert!(config.in_use([&off]));
        assert!(!LookupConfig::default().in_use([&off]));
    }

    #[test]
    fn unknown_keys_and_words_are_refused() {
        assert!(load("bogus = 1").is_err());
        assert!(load(r#"refuse_sms = ["fax"]"#).is_err());
        assert!(load(r#"on_failure = { enrollment = "maybe" }"#).is_err());
    }
}
