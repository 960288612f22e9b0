//! Tenants: the services that call verifyd, each with its own credentials,
//! channels and app name, and optionally its own rate limits, code and
//! voice settings and message templates over the server's. A verification
//! belongs to the tenant that started it; the stores key everything by
//! tenant, so another tenant's id is as unknown as an id that never
//! existed.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

pub use super::{channel_name::ChannelName, voice_settings::VoiceOverrides};
use super::{
    fallback_settings::{FallbackConfig, FallbackOverrides},
    voice_settings::VoiceSettings,
};
use crate::{
    delivery::{
        Templates,
        lookup::{LookupConfig, LookupOverrides},
    },
    domain::{
        Channel, Policy, TenantId,
        fallback::Workflow,
        lookup::LookupPolicy,
        policy::{CodeConfig, CodeOverrides},
    },
    ratelimit::{LimitsConfig, PartialLimits, Quotas},
};

/// `[tenants.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// SHA-256 digests (hex) of the tenant's API keys; the keys themselves
    /// are never configured. Several allow rotating a key without downtime.
    pub api_key_sha256: Vec<String>,
    /// DNS names or IP addresses: a client certificate (verified against
    /// `server.tls.client_ca_path`) whose subject alternative names include
    /// one of them exactly (wildcards name no one) authenticates the call
    /// as this tenant.
    pub client_cert_sans: Vec<String>,
    /// The channels this tenant may use; empty means every channel the
    /// server has providers for.
    pub channels: Vec<ChannelName>,
    /// The name users know this tenant's app by, in its messages; empty
    /// means the server's `app_name`.
    pub app_name: String,
    /// `[tenants.NAME.limits.QUOTA]`: quotas replacing the server's
    /// `[limits.QUOTA]` for this tenant.
    pub limits: PartialLimits,
    /// `[tenants.NAME.voice]`: voice settings replacing the server's
    /// `[voice]` ones for this tenant's calls.
    pub voice: VoiceOverrides,
    /// `[tenants.NAME.code]`: code settings replacing the server's
    /// `[code]` ones for this tenant's verifications.
    pub code: CodeOverrides,
    /// `[tenants.NAME.lookup]`: whether this tenant's phone sends are
    /// looked up, and its policy, over the server's `[lookup]`.
    pub lookup: LookupOverrides,
    /// `[tenants.NAME.fallback]`: this tenant's default fallback workflow,
    /// over the server's `[fallback]`.
    pub fallback: FallbackOverrides,
    /// Template overrides for this tenant's messages and calls, laid over
    /// the server's (`delivery.templates_dir`, then the built-in ones);
    /// same layout.
    pub templates_dir: Option<PathBuf>,
}

impl TenantConfig {
    /// The first problem with this tenant's own settings: its key under
    /// `[tenants.NAME]` and why. What spans tenants (a digest or a
    /// certificate name in two of them) or other sections (the server's
    /// TLS and voice settings) is the configuration's to check.
    pub fn problem(&self) -> Option<(String, &'static str)> {
        if self.api_key_sha256.is_empty() && self.client_cert_sans.is_empty() {
            return Some((
                "api_key_sha256".to_owned(),
                "list at least one digest (printf %s \"$KEY\" | sha256sum), or client_cert_sans",
            ));
        }
        let hex = |d: &String| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
        if !self.api_key_sha256.iter().all(hex) {
            return Some((
                "api_key_sha256".to_owned(),
                "each entry must be a SHA-256 digest: 64 hex digits",
            ));
        }
        if let Some((limit, problem)) = self.limits.problem() {
            return Some((format!("limits.{limit}"), problem));
        }
        if self
            .templates_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Some((
                "templates_dir".to_owned(),
                "name a directory, or leave it out",
            ));
        }
        None
    }
}

/// What the service knows of one tenant.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// `None`: every channel.
    channels: Option<Vec<Channel>>,
    pub app_name: String,
    /// The server's voice settings with the tenant's over them.
    pub voice: VoiceSettings,
    /// The server's code settings with the tenant's over them; resolve it
    /// for a send's channel with [`Policy::for_channel`].
    pub policy: Policy,
    /// `None`: the server's templates.
    templates: Option<Arc<Templates>>,
    /// `None`: this tenant's sends are not looked up.
    pub lookup: Option<LookupPolicy>,
    /// The workflow a start that names none runs, if it begins on the
    /// start's channel.
    pub fallback: Option<Workflow>,
}

impl TenantSettings {
    pub fn allows(&self, channel: Channel) -> bool {
        self.channels.as_ref().is_none_or(|c| c.contains(&channel))
    }

    /// The templates for the tenant's messages: its own, else `server`.
    pub fn templates<'a>(&'a self, server: &'a Templates) -> &'a Templates {
        self.templates.as_deref().unwrap_or(server)
    }
}

/// Every configured tenant's settings; a tenant not configured (the
/// `default` tenant of an unauthenticated server) gets the server's.
#[derive(Debug, Clone)]
pub struct Tenants {
    configured: HashMap<TenantId, TenantSettings>,
    /// A tenant not configured.
    unconfigured: TenantSettings,
}

/// The server's settings that a tenant's own go over.
#[derive(Debug, Clone, Copy)]
pub struct ServerDefaults<'a> {
    pub app_name: &'a str,
    pub voice: &'a VoiceSettings,
    pub policy: &'a Policy,
    pub code: &'a CodeConfig,
    pub lookup: &'a LookupConfig,
    pub fallback: &'a FallbackConfig,
}

impl Tenants {
    /// `tenants` must have been validated (names are tenant ids).
    /// `templates` holds the templates of the tenants with a
    /// `templates_dir`, loaded (see `app::delivery`).
    pub fn new(
        tenants: &BTreeMap<String, TenantConfig>,
        templates: &HashMap<TenantId, Arc<Templates>>,
        server: ServerDefaults<'_>,
    ) -> Self {
        let ServerDefaults {
            app_name,
            voice,
            policy,
            code,
            lookup,
            fallback,
        } = server;
        // Validated with the configuration: a workflow that cannot be made
        // there never gets here.
        let workflow = |f: FallbackConfig| f.workflow().ok().flatten();
        let configured = tenants
            .iter()
            .filter_map(|(name, t)| {
                let id = TenantId::parse(name)?;
                let settings = TenantSettings {
                    channels: (!t.channels.is_empty())
                        .then(|| t.channels.iter().map(|&c| c.into()).collect()),
                    app_name: if t.app_name.is_empty() {
                        app_name.to_owned()
                    } else {
                        t.app_name.clone()
                    },
                    voice: t.voice.over(voice),
                    policy: policy.with_code(&code.overridden(&t.code)),
                    templates: templates.get(&id).cloned(),
                    lookup: lookup.policy_for(&t.lookup),
                    fallback: workflow(fallback.over(&t.fallback)),
                };
                Some((id, settings))
            })
            .collect();
        Self {
            configured,
            unconfigured: TenantSettings {
                channels: None,
                app_name: app_name.to_owned(),
                voice: *voice,
                policy: policy.clone(),
                templates: None,
                lookup: lookup.policy_for(&LookupOverrides::default()),
                fallback: workflow(fallback.clone()),
            },
        }
    }

    /// Whether `tenant` is served: configured, or `default` on a server
    /// without tenants.
    pub fn knows(&self, tenant: &TenantId) -> bool {
        if self.configured.is_empty() {
            return *tenant == TenantId::default_tenant();
        }
        self.configured.contains_key(tenant)
    }

    pub fn get(&self, tenant: &TenantId) -> &TenantSettings {
        self.configured.get(tenant).unwrap_or(&self.unconfigured)
    }
}

/// The server's quotas and those the tenants set instead.
pub fn quotas(tenants: &BTreeMap<String, TenantConfig>, server: LimitsConfig) -> Quotas {
    Quotas::new(
        server,
        tenants
            .iter()
            .filter_map(|(name, t)| Some((TenantId::parse(name)?, t.limits))),
    )
}
