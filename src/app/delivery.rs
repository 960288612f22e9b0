//! The delivery side, built from `[delivery]`, `[providers]` and each
//! tenant's `templates_dir`: the templates, every named provider, a route
//! per channel, and the tokens Twilio's webhooks are signed with. Anything
//! that cannot be set up stops startup with one line naming the provider.
//! The number lookup (`[lookup]`) borrows a Twilio provider's account.
//! `verifyd send-test` builds its routes here too.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use url::Url;

use crate::{
    clock::Clock,
    delivery::{
        ConsoleSender, Dispatcher, Provider, Route, TemplateError, Templates,
        config::{CONSOLE_PROVIDER, DeliveryConfig, ProviderConfig},
        dev_phone::DevPhone,
        http::HttpSms,
        lookup::{Lookup, LookupConfig},
        smtp::SmtpSender,
        twilio::{Twilio, lookup::TwilioLookup, webhook::WebhookTokens},
        web,
    },
    domain::{Channel, TenantId},
    secret::Secret,
    service::TenantConfig,
    telemetry::Metrics,
};

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

/// The senders that need no `[providers]` entry, which a route names
/// `console`: the console itself, and in dev mode the simulated phone,
/// which takes the console's calls.
#[derive(Debug, Clone)]
pub struct BuiltIn {
    pub console: ConsoleSender,
    pub phone: Option<DevPhone>,
}

impl BuiltIn {
    /// The console alone (no simulated phone).
    pub fn console(console: ConsoleSender) -> Self {
        Self {
            console,
            phone: None,
        }
    }

    /// What `console` sends `channel` through.
    fn on(&self, channel: Channel) -> Provider {
        match (&self.phone, channel) {
            (Some(phone), Channel::Voice) => Provider::DevPhone(phone.clone()),
            _ => Provider::Console(self.console.clone()),
        }
    }
}

/// The templates and a route per channel, from the `providers` that
/// `delivery` names for it. Twilio requests its callbacks under `callbacks`
/// (`webhooks.public_base_url`), when set.
pub fn dispatcher(
    d: &DeliveryConfig,
    providers: &BTreeMap<String, ProviderConfig>,
    lookup: Option<&LookupConfig>,
    callbacks: Option<&Url>,
    built_in: &BuiltIn,
    clock: &Clock,
    metrics: &Arc<Metrics>,
) -> Result<Dispatcher, SetupError> {
    let http = web::http_client().map_err(|problem| SetupError::Provider {
        name: "http".to_owned(),
        problem,
    })?;
    let provider = |name: &String, channel: Channel| -> Result<Provider, SetupError> {
        let setup = |problem: String| SetupError::Provider {
            name: name.clone(),
            problem,
        };
        match providers.get(name) {
            None if name == CONSOLE_PROVIDER => Ok(built_in.on(channel)),
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
    let route = |channel: Channel, names: &[String]| -> Result<Option<Route>, SetupError> {
        if names.is_empty() {
            return Ok(None);
        }
        let providers: Vec<Provider> = names
            .iter()
            .map(|name| provider(name, channel))
            .collect::<Result<_, _>>()?;
        Ok(Some(Route::new(
            providers,
            d.retry,
            d.breaker,
            clock.clone(),
            Arc::clone(metrics),
        )))
    };
    let voice = route(Channel::Voice, &d.voice)?;
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
    let lookup = lookup
        .map(|config| match providers.get(&config.provider) {
            Some(ProviderConfig::Twilio(twilio)) => Ok(Lookup::new(
                TwilioLookup::new(twilio, &config.base_url, http.clone()),
                config,
            )),
            _ => Err(SetupError::Provider {
                name: config.provider.clone(),
                problem: "lookup.provider must name a [providers.NAME] of kind twilio".to_owned(),
            }),
        })
        .transpose()?;
    Ok(Dispatcher {
        templates: Templates::load(d.templates_dir.as_deref(), d.webotp_domain.clone())?,
        sms: route(Channel::Sms, &d.sms)?,
        voice,
        email: route(Channel::Email, &d.email)?,
        lookup,
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
/// current one and, during a rotation, the previous one. The simulated
/// phone speaks Twilio's webhooks with a token of its own.
pub fn twilio_webhook_tokens(
    providers: &BTreeMap<String, ProviderConfig>,
    phone: Option<&DevPhone>,
) -> WebhookTokens {
    let phone = phone.map(|phone| (DevPhone::PROVIDER.to_owned(), vec![phone.token().clone()]));
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
        .chain(phone)
        .collect()
}
