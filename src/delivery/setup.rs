//! The `[delivery]` and `[providers]` settings, and the delivery side built
//! from them: the templates, every named provider, and a route per channel.
//! Anything that cannot be set up stops startup with one line naming the
//! provider.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    console::ConsoleSender,
    dispatcher::Dispatcher,
    http::{HttpConfig, HttpSms},
    provider::Provider,
    route::{BreakerConfig, RetryPolicy, Route},
    smtp::{SmtpConfig, SmtpSender},
    templates::{TemplateError, Templates},
    twilio::{Twilio, TwilioConfig},
    web,
};
use crate::{
    clock::Clock, domain::TenantId, secret::Secret, service::TenantConfig, telemetry::Metrics,
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

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("provider {name}: {problem}")]
    Provider { name: String, problem: String },
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error("tenants.{tenant}.templates_dir: {source}")]
    TenantTemplates {
        tenant: String,
        source: TemplateError,
    },
}

/// The templates and a route per channel, from the `providers` that
/// `delivery` names for it. Twilio requests its callbacks under `callbacks`
/// (`webhooks.public_base_url`), when set.
pub fn dispatcher(
    d: &DeliveryConfig,
    providers: &BTreeMap<String, ProviderConfig>,
    callbacks: Option<&Url>,
    console: &ConsoleSender,
    clock: &Clock,
    metrics: &Arc<Metrics>,
) -> Result<Dispatcher, SetupError> {
    let http = web::http_client().map_err(|problem| SetupError::Provider {
        name: "http".to_owned(),
        problem,
    })?;
    let provider = |name: &String| -> Result<Provider, SetupError> {
        let setup = |problem: String| SetupError::Provider {
            name: name.clone(),
            problem,
        };
        match providers.get(name) {
            None if name == CONSOLE_PROVIDER => Ok(Provider::Console(console.clone())),
            None => Err(setup("not configured".to_owned())),
            Some(ProviderConfig::Twilio(c)) => Twilio::new(name, c, http.clone(), callbacks)
                .map(Provider::Twilio)
                .map_err(setup),
            Some(ProviderConfig::Http(c)) => HttpSms::new(name, c, http.clone(), clock.clone())
                .map(Provider::Http)
                .map_err(setup),
            Some(ProviderConfig::Smtp(smtp)) => SmtpSender::new(name, smtp)
                .map(Provider::Smtp)
                .map_err(setup),
        }
    };
    let route = |names: &[String]| -> Result<Option<Route>, SetupError> {
        if names.is_empty() {
            return Ok(None);
        }
        let providers: Vec<Provider> = names.iter().map(provider).collect::<Result<_, _>>()?;
        Ok(Some(Route::new(
            providers,
            d.retry,
            d.breaker,
            clock.clone(),
            Arc::clone(metrics),
        )))
    };
    let voice = route(&d.voice)?;
    for (provider, _) in voice.iter().flat_map(Route::providers) {
        if let Provider::Twilio(twilio) = provider {
            twilio
                .check_voice()
                .map_err(|problem| SetupError::Provider {
                    name: provider.name().to_owned(),
                    problem,
                })?;
        }
    }
    Ok(Dispatcher {
        templates: Templates::load(d.templates_dir.as_deref(), d.webotp_domain.clone())?,
        sms: route(&d.sms)?,
        voice,
        email: route(&d.email)?,
    })
}

/// The templates of each tenant with a `templates_dir`: its directory laid
/// over the server's (`delivery.templates_dir`), then the built-in
/// templates, each checked as the server's are.
pub fn tenant_templates(
    d: &DeliveryConfig,
    tenants: &BTreeMap<String, TenantConfig>,
) -> Result<HashMap<TenantId, Arc<Templates>>, SetupError> {
    tenants
        .iter()
        .filter_map(|(name, t)| Some((name, TenantId::parse(name)?, t.templates_dir.as_deref()?)))
        .map(|(name, id, dir)| {
            let layers: Vec<&Path> = d
                .templates_dir
                .as_deref()
                .into_iter()
                .chain([dir])
                .collect();
            let templates =
                Templates::load_layers(&layers, d.webotp_domain.clone()).map_err(|source| {
                    SetupError::TenantTemplates {
                        tenant: name.clone(),
                        source,
                    }
                })?;
            Ok((id, Arc::new(templates)))
        })
        .collect()
}

/// The auth tokens each Twilio provider's webhooks are signed with: the
/// current one and, during a rotation, the previous one.
pub fn twilio_webhook_tokens(
    providers: &BTreeMap<String, ProviderConfig>,
) -> crate::http::webhooks::TwilioTokens {
    providers
        .iter()
        .filter_map(|(name, provider)| match provider {
            ProviderConfig::Twilio(t) => {
                let tokens: Vec<Secret> = std::iter::once(t.auth_token.clone())
                    .chain(t.previous_auth_token.clone())
                    .collect();
                Some((name.clone(), tokens))
            }
            _ => None,
        })
        .collect()
}
