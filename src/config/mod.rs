//! One typed configuration: built-in defaults, then an optional TOML file,
//! then `VERIFYD_*` environment variables (`__` separates levels, so
//! `VERIFYD_CODE__TTL=5m` sets `code.ttl`). Any variable ending in `_FILE`
//! names a file holding the value (for Kubernetes Secrets):
//! `VERIFYD_HMAC__KEY_FILE=/run/secrets/hmac` sets `hmac.key`.
//!
//! With no file and no `VERIFYD_*` variable at all, verifyd runs in dev mode.
//! Everything is parsed and validated here, once, at startup; an invalid
//! setting is one error line naming the key.
//!
//! Each section's type lives with the module that reads it (`[store]` is
//! `store::StoreConfig`, `[delivery]` is `delivery::config::DeliveryConfig`,
//! ...; `[server]` and `[webhooks]`, which the application binds, in
//! `server`), and checks itself: its `problem` method gives the first key
//! out of range and why (the key in full, or within the section for those
//! found at several places, `[voice]` and `[limits]`). This module only
//! assembles them into [`Config`], loads, and validates: each section, then
//! the rules that span sections (providers for the channels, tenants'
//! credentials and certificate names against the server's listener, dev
//! mode on loopback). The imports point one way: nothing below it imports
//! it.

mod error;
mod server;
mod tenants;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

use self::error::{check, check_under, invalid};
pub use self::{
    error::ConfigError,
    server::{AdminApiConfig, ServerConfig, WebhooksConfig},
};
use crate::{
    delivery::{
        config::{CONSOLE_PROVIDER, DeliveryConfig, ProviderConfig, providers_problem},
        lookup::LookupConfig,
    },
    domain::{
        Policy,
        code::HmacConfig,
        fraud::FraudRules,
        policy::{CodeConfig, MAX_RESEND_DOUBLINGS},
    },
    ratelimit::LimitsConfig,
    service::{FallbackConfig, FallbackOverrides, TenantConfig, VoiceSettings},
    store::StoreConfig,
    telemetry::{LogConfig, TracingConfig},
};

const ENV_PREFIX: &str = "VERIFYD_";
/// Names the config file; not itself a setting.
pub const CONFIG_PATH_VAR: &str = "VERIFYD_CONFIG";
/// The endpoint `verifyd client` calls; not a server setting.
pub const CLIENT_ADDR_VAR: &str = "VERIFYD_ADDR";
/// The API key `verifyd client` sends; not a server setting either.
pub const CLIENT_API_KEY_VAR: &str = "VERIFYD_API_KEY";
/// The PEM file of the CA `verifyd client` trusts for `https://`.
pub const CLIENT_CA_VAR: &str = "VERIFYD_CLIENT_CA";
/// The PEM certificate and key `verifyd client` presents (mutual TLS).
pub const CLIENT_CERT_VAR: &str = "VERIFYD_CLIENT_CERT";
pub const CLIENT_KEY_VAR: &str = "VERIFYD_CLIENT_KEY";
/// The operator API endpoint `verifyd admin` calls.
pub const ADMIN_ADDR_VAR: &str = "VERIFYD_ADMIN_ADDR";
/// The operator token `verifyd admin` sends.
pub const ADMIN_TOKEN_VAR: &str = "VERIFYD_ADMIN_TOKEN";
/// Every `VERIFYD_` variable that is not a server setting. Set in the
/// shell that also runs `verifyd serve`, none may become one (the config
/// refuses unknown keys).
const NOT_SETTINGS: [&str; 8] = [
    CONFIG_PATH_VAR,
    CLIENT_ADDR_VAR,
    CLIENT_API_KEY_VAR,
    CLIENT_CA_VAR,
    CLIENT_CERT_VAR,
    CLIENT_KEY_VAR,
    ADMIN_ADDR_VAR,
    ADMIN_TOKEN_VAR,
];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Loopback only, in-memory store, console senders, ephemeral HMAC key,
    /// unauthenticated callers. On by itself when nothing is configured.
    pub dev_mode: bool,
    /// The name users know the service by, used in message texts.
    /// Empty means "verifyd" ("verifyd (dev)" in dev mode).
    pub app_name: String,
    pub server: ServerConfig,
    /// The operator API (AdminService), off unless its address is set.
    pub admin_api: AdminApiConfig,
    pub code: CodeConfig,
    pub hmac: HmacConfig,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    /// Named providers that `delivery.sms`, `.voice` and `.email` list.
    pub providers: BTreeMap<String, ProviderConfig>,
    pub webhooks: WebhooksConfig,
    /// How voice calls behave (keys, re-prompts, fraud reports).
    pub voice: VoiceSettings,
    /// The services that may call verifyd, by tenant id, with their API
    /// keys. None configured: every caller is the tenant `default`, which
    /// only a loopback listener (or dev mode) allows.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Who may receive codes at all: countries per channel, number types,
    /// the block after a prefix trips its budget.
    pub fraud: FraudRules,
    /// Risk signals before phone sends: a live lookup of the number.
    pub lookup: LookupConfig,
    /// The automatic channel fallback a start runs when it names none.
    pub fallback: FallbackConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

/// Whether a `VERIFYD_` variable (`name` is what follows the prefix) is
/// one of the "service links" Kubernetes puts in every pod for each Service
/// in its namespace: for a Service named `verifyd`, `VERIFYD_SERVICE_HOST`,
/// `VERIFYD_SERVICE_PORT[_<port name>]`, `VERIFYD_PORT` and
/// `VERIFYD_PORT_50051_TCP[_PROTO|_PORT|_ADDR]` (and likewise for
/// `verifyd-redis`, say). No setting is named like them, and refusing them
/// as unknown keys would stop every pod started after the Service.
fn is_service_link(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    if name.contains("__") {
        // A nested key: settings only.
        return false;
    }
    let parts: Vec<&str> = name.split('_').collect();
    parts.last() == Some(&"PORT")
        || parts
            .windows(2)
            .any(|w| w[0] == "SERVICE" && matches!(w[1], "HOST" | "PORT"))
        || parts.windows(3).any(|w| {
            w[0] == "PORT"
                && w[1].bytes().all(|b| b.is_ascii_digit())
                && matches!(w[2], "TCP" | "UDP" | "SCTP")
        })
}

impl Config {
    /// Loads from the file named by `path` (or `VERIFYD_CONFIG`) and the
    /// process environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_PATH_VAR).map(PathBuf::from));
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with(ENV_PREFIX)
                    && !NOT_SETTINGS.contains(&k.as_str())
                    && !is_service_link(&k[ENV_PREFIX.len()..])
            })
            .collect();
        let configured = path.is_some() || !env.is_empty();

        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if !configured {
            figment = figment.merge(("dev_mode", true));
        }
        if let Some(path) = &path {
            if !path.is_file() {
                return Err(invalid(
                    CONFIG_PATH_VAR,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|k| {
                    let name = k.as_str().to_ascii_uppercase();
                    !name.ends_with("_FILE")
                        && !NOT_SETTINGS.contains(&format!("{ENV_PREFIX}{name}").as_str())
                        && !is_service_link(k.as_str())
                })
                .split("__"),
        );
        for (var, file) in env.iter().filter(|(k, _)| k.ends_with("_FILE")) {
            let key = var[ENV_PREFIX.len()..var.len() - "_FILE".len()]
                .to_ascii_lowercase()
                .replace("__", ".");
            let value = std::fs::read_to_string(file)
                .map_err(|e| invalid(var, format!("cannot read {file}: {e}")))?;
            figment = figment.merge((key, value.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Self::extract(figment)
    }

    /// Loads from TOML text as [`Config::load`] loads a file when no
    /// `VERIFYD_*` variable is set, without reading the environment or any
    /// file, then validates. For the fuzz targets in fuzz/.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    /// The configuration `figment` holds, with mode defaults, validated.
    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let mut problem = e.kind.to_string();
            if let Some(source) = &e.metadata.and_then(|m| m.source) {
                problem.push_str(&format!(" (from {source})"));
            }
            invalid(if key.is_empty() { "config" } else { &key }, problem)
        })?;
        config.apply_mode_defaults();
        config.validate()?;
        Ok(config)
    }

    /// Fills in defaults that depend on the mode: dev mode supplies what
    /// production must configure explicitly.
    fn apply_mode_defaults(&mut self) {
        // Webhook URLs are joined onto the base: without a trailing slash
        // its last path segment would be dropped.
        if let Some(url) = &mut self.webhooks.public_base_url
            && !url.path().ends_with('/')
        {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        if self.app_name.is_empty() {
            self.app_name = if self.dev_mode {
                "verifyd (dev)"
            } else {
                "verifyd"
            }
            .to_owned();
        }
        if self.dev_mode {
            let d = &mut self.delivery;
            for channel in [&mut d.sms, &mut d.voice, &mut d.email] {
                if channel.is_empty() {
                    channel.push(CONSOLE_PROVIDER.to_owned());
                }
            }
        }
    }

    /// Each section's own check, then the rules that span sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(self.code.problem())?;
        check(self.hmac.problem(self.dev_mode))?;
        check_under("limits", self.limits.problem())?;
        check(self.store.problem(self.dev_mode))?;
        check(self.delivery.problem())?;
        check(self.webhooks.problem())?;
        check(providers_problem(&self.providers))?;
        self.validate_routes()?;
        check(self.tracing.problem())?;
        check(self.server.problem())?;
        check(self.admin_api.problem(
            self.dev_mode,
            self.tenants.values().flat_map(|t| &t.api_key_sha256),
        ))?;
        check(self.log.problem())?;
        check_under("voice", self.voice.problem())?;
        tenants::validate(&self.tenants, &self.server, &self.voice, &self.code)?;
        self.validate_credentials()?;
        check(self.fraud.problem())?;
        self.validate_lookup()?;
        self.validate_fallback()?;
        self.validate_dev_mode()
    }

    /// Every provider a channel lists (`delivery.sms`, ...) is configured
    /// in `[providers]` and can send on that channel.
    fn validate_routes(&self) -> Result<(), ConfigError> {
        let d = &self.delivery;
        for (channel, names) in [("sms", &d.sms), ("voice", &d.voice), ("email", &d.email)] {
            let key = format!("delivery.{channel}");
            for name in names {
                if name == CONSOLE_PROVIDER {
                    continue;
                }
                let Some(provider) = self.providers.get(name) else {
                    return Err(invalid(
                        &key,
                        format!("no provider named {name:?} in [providers]"),
                    ));
                };
                if !provider.serves(channel) {
                    return Err(invalid(
                        &key,
                        format!("provider {name:?} cannot send {channel}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[fallback]`, and each tenant's over it, against the code policy
    /// and the channels of whoever runs it.
    fn validate_fallback(&self) -> Result<(), ConfigError> {
        let policy = self.policy();
        if let Some((key, problem)) = self.fallback.problem(&policy, &[]) {
            return Err(invalid(&format!("fallback.{key}"), problem));
        }
        for (name, tenant) in &self.tenants {
            // The server's workflow is not run for a tenant it does not
            // fit (its channels, its code settings); a tenant's own must.
            if tenant.fallback == FallbackOverrides::default() {
                continue;
            }
            let policy = policy.with_code(&self.code.overridden(&tenant.code));
            let fallback = self.fallback.over(&tenant.fallback);
            if let Some((key, problem)) = fallback.problem(&policy, &tenant.channels) {
                return Err(invalid(&format!("tenants.{name}.fallback.{key}"), problem));
            }
        }
        Ok(())
    }

    /// `[lookup]`, when any tenant is looked up: its own settings, a Twilio
    /// provider to pay with, and a cache that outlasts every least gap.
    fn validate_lookup(&self) -> Result<(), ConfigError> {
        let lookup = &self.lookup;
        if !lookup.in_use(self.tenants.values().map(|t| &t.lookup)) {
            return Ok(());
        }
        let longest_gap = self
            .tenants
            .values()
            .map(|t| self.code.overridden(&t.code).resend_cooldown)
            .fold(self.code.resend_cooldown, Duration::max)
            * 2u32.pow(MAX_RESEND_DOUBLINGS);
        if let Some((key, problem)) = lookup.problem(longest_gap, self.delivery.timeout) {
            return Err(invalid(&format!("lookup.{key}"), problem));
        }
        if !matches!(
            self.providers.get(&lookup.provider),
            Some(ProviderConfig::Twilio(_))
        ) {
            return Err(invalid(
                "lookup.provider",
                "name a [providers.NAME] of kind twilio: its account pays for the lookups",
            ));
        }
        Ok(())
    }

    /// Without credentials every caller is `default`: acceptable beside
    /// the caller on one host, never on a network.
    fn validate_credentials(&self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() && !self.dev_mode && !self.server.grpc_addr.ip().is_loopback() {
            return Err(invalid(
                "tenants",
                "a non-loopback server.grpc_addr needs caller credentials: configure [tenants.NAME] with api_key_sha256",
            ));
        }
        Ok(())
    }

    /// Dev mode (unauthenticated, codes on the console) stays on the host.
    fn validate_dev_mode(&self) -> Result<(), ConfigError> {
        if self.dev_mode {
            for (key, addr) in [
                ("server.grpc_addr", self.server.grpc_addr),
                ("server.admin_addr", self.server.admin_addr),
                ("webhooks.addr", self.webhooks.addr),
            ] {
                if !addr.ip().is_loopback() {
                    return Err(invalid(key, "dev mode binds loopback addresses only"));
                }
            }
            if self.admin_api.addr.is_some_and(|a| !a.ip().is_loopback()) {
                return Err(invalid(
                    "admin_api.addr",
                    "dev mode binds loopback addresses only",
                ));
            }
        }
        Ok(())
    }

    pub fn policy(&self) -> Policy {
        Policy {
            match_digits: self.code.match_digits,
            retention: self.code.retention,
            send_lease: self.delivery.timeout + Duration::from_secs(1),
            ..Policy::default()
        }
        .with_code(&self.code)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return its large error
mod tests {
    use figment::Jail;

    use super::*;
    use crate::{
        domain::{KeyRing, VoiceMode, code::MAX_PREVIOUS_KEYS},
        secret::Secret,
        store::StoreBackend,
    };

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn load_err() -> ConfigError {
        Config::load(None).expect_err("should be refused")
    }

    #[test]
    fn no_configuration_at_all_means_dev_mode() {
        Jail::expect_with(|_| {
            let config = Config::load(None).expect("dev defaults are valid");
            assert!(config.dev_mode);
            assert_eq!(config.delivery.sms, [CONSOLE_PROVIDER]);
            assert!(config.server.grpc_addr.ip().is_loopback());
            Ok(())
        });
    }

    #[test]
    fn the_clients_variables_are_no_settings() {
        Jail::expect_with(|jail| {
            // A shell that runs both `verifyd client` and `verifyd serve`.
            for var in NOT_SETTINGS.iter().skip(1) {
                jail.set_env(var, "/etc/verifyd/client.pem");
            }
            let config = Config::load(None).expect("the client's variables are ignored");
            assert!(config.dev_mode, "and do not count as configuration");
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_then_secret_files_layer_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "verifyd.toml",
                r#"
                app_name = "Acme"
                [code]
                length = 8
                ttl = "5m"
                [delivery]
                email = ["console"]
                "#,
            )?;
            jail.create_file("hmac.key", &format!("{KEY}\n"))?;
            jail.set_env("VERIFYD_CODE__TTL", "7m");
            jail.set_env("VERIFYD_HMAC__KEY_FILE", "hmac.key");
            let config = Config::load(Some(Path::new("verifyd.toml"))).expect("valid");
            assert!(!config.dev_mode);
            assert_eq!(config.app_name, "Acme");
            assert_eq!(config.code.length, 8);
            assert_eq!(
                config.code.ttl,
                Duration::from_secs(420),
                "env wins over the file"
            );
            assert_eq!(
                config.hmac.key.as_ref().map(Secret::expose),
                Some(KEY),
                "newline trimmed"
            );
            assert!(
                !format!("{config:?}").contains(KEY),
                "Debug redacts the key"
            );
            Ok(())
        });
    }

    #[test]
    fn the_servers_fallback_binds_only_the_tenants_it_fits_and_a_tenants_own_must_fit() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "verifyd.toml",
                r#"
                dev_mode = true
                [fallback]
                channels = ["sms", "voice"]
                [tenants.mail]
                api_key_sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"]
                channels = ["email"]
                "#,
            )?;
            Config::load(Some(Path::new("verifyd.toml")))
                .expect("the server's is not the mail tenant's");
            jail.set_env("VERIFYD_TENANTS__MAIL__FALLBACK__STEP_TIMEOUT", "90s");
            let err = Config::load(Some(Path::new("verifyd.toml"))).expect_err("its own must fit");
            assert_eq!(err.key, "tenants.mail.fallback.channels");
            Ok(())
        });
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        Jail::expect_with(|jail| {
            // What a pod sees for Services named verifyd and verifyd-redis.
            for (var, value) in [
                ("VERIFYD_SERVICE_HOST", "10.0.0.7"),
                ("VERIFYD_SERVICE_PORT", "50051"),
                ("VERIFYD_SERVICE_PORT_GRPC", "50051"),
                ("VERIFYD_PORT", "tcp://10.0.0.7:50051"),
                ("VERIFYD_PORT_50051_TCP", "tcp://10.0.0.7:50051"),
                ("VERIFYD_PORT_50051_TCP_PROTO", "tcp"),
                ("VERIFYD_PORT_50051_TCP_PORT", "50051"),
                ("VERIFYD_PORT_50051_TCP_ADDR", "10.0.0.7"),
                ("VERIFYD_REDIS_SERVICE_HOST", "10.0.0.8"),
                ("VERIFYD_REDIS_PORT_6379_TCP", "tcp://10.0.0.8:6379"),
            ] {
                jail.set_env(var, value);
            }
            let config = Config::load(None).expect("service links are ignored");
            assert!(config.dev_mode, "and do not count as configuration");
            jail.set_env("VERIFYD_CODE__TTLL", "5m");
            assert!(
                load_err().to_string().contains("ttll"),
                "other keys still do"
            );
            Ok(())
        });
    }

    #[test]
    fn outside_dev_mode_an_hmac_key_is_required() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            assert_eq!(load_err().key, "hmac.key");
            jail.set_env("VERIFYD_HMAC__KEY", "too-short");
            let err = load_err();
            assert_eq!(err.key, "hmac.key");
            assert!(err.problem.contains("32 bytes"), "{err}");
            assert!(
                !err.to_string().contains("too-short"),
                "the value is not echoed"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.set_env("VERIFYD_CODE__LENGTH", "12");
            assert_eq!(load_err().key, "code.length");
            jail.set_env("VERIFYD_CODE__LENGTH", "six");
            assert_eq!(load_err().key, "code.length");
            jail.set_env("VERIFYD_CODE__LENGTH", "6");
            jail.set_env("VERIFYD_CODE__TTLL", "5m");
            let err = load_err();
            assert!(err.to_string().contains("ttll"), "{err}");
            jail.clear_env();
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.set_env("VERIFYD_DELIVERY__MAX_SENDS_IN_FLIGHT", "0");
            assert_eq!(load_err().key, "delivery.max_sends_in_flight");
            Ok(())
        });
    }

    /// A self-signed CA certificate (no key kept anywhere), valid to 2126.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBmTCCAT+gAwIBAgIUZA+meWV6IuN1LIFZjNEdmyi4pPIwCgYIKoZIzj0EAwIw\nITEfMB0GA1UEAwwWdmVyaWZ5ZCBjb25maWcgdGVzdCBDQTAgFw0yNjExMjgwOTUy\nNTFaGA8yMTI2MTEwNDA5NTI1MVowITEfMB0GA1UEAwwWdmVyaWZ5ZCBjb25maWcg\ndGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABCS9VcSeKwPtbe/XODc6\nSh4a3cPXE+AWUvsVNd5Hiwjy9/Yo2TWrKrwuRUl1CY4aTzow4D4xeqPVtr9YUG2F\nQ/yjUzBRMB0GA1UdDgQWBBR0O4yojnyR00yY2wVDMuT7pTK9NjAfBgNVHSMEGDAW\ngBR0O4yojnyR00yY2wVDMuT7pTK9NjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49\nBAMCA0gAMEUCIFf5UZB+qcWVgaP75sPXt2+rnnkmeav6nSRIraooGhrMAiEAtksV\nwDV8yTiKtJoa+n/SS3R7zAyy8nJ6EXhobthYRTE=\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_redis_store_needs_one_url_without_a_password_and_reads_the_password_from_a_file() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.set_env("VERIFYD_STORE__BACKEND", "redis");
            assert_eq!(load_err().key, "store.redis.index_key");
            jail.set_env("VERIFYD_STORE__REDIS__INDEX_KEY", "too short");
            assert_eq!(load_err().key, "store.redis.index_key");
            jail.set_env("VERIFYD_STORE__REDIS__INDEX_KEY", KEY);
            assert_eq!(load_err().key, "store.redis.url");
            jail.set_env("VERIFYD_STORE__REDIS__URL", "redis://:hunter2@redis:6379");
            let err = load_err();
            assert_eq!(err.key, "store.redis.url");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            jail.set_env("VERIFYD_STORE__REDIS__URL", "http://redis:6379");
            assert_eq!(load_err().key, "store.redis.url");
            jail.set_env("VERIFYD_STORE__REDIS__URL", "rediss://redis:6379/0");
            jail.set_env("VERIFYD_STORE__REDIS__CLUSTER", "[redis://a:6379]");
            assert_eq!(load_err().key, "store.redis.cluster");
            jail.set_env("VERIFYD_STORE__REDIS__CLUSTER", "[]");
            jail.create_file("ca.pem", "not a certificate")?;
            jail.set_env("VERIFYD_STORE__REDIS__CA_CERT_FILE", "ca.pem");
            assert_eq!(load_err().key, "store.redis.ca_cert");
            jail.create_file(
                "ca.pem",
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            )?;
            assert_eq!(load_err().key, "store.redis.ca_cert", "not a certificate");
            jail.create_file("ca.pem", TEST_CA)?;
            jail.set_env("VERIFYD_STORE__REDIS__URL", "redis://redis:6379/0");
            assert_eq!(load_err().key, "store.redis.ca_cert", "CA without TLS");
            jail.set_env("VERIFYD_STORE__REDIS__URL", "rediss://redis:6379/0");
            jail.create_file("redis.pass", "s3cret")?;
            jail.set_env("VERIFYD_STORE__REDIS__PASSWORD_FILE", "redis.pass");
            let config = Config::load(None).expect("valid");
            assert_eq!(config.store.backend, StoreBackend::Redis);
            assert_eq!(
                config.store.redis.password.as_ref().map(Secret::expose),
                Some("s3cret")
            );
            assert!(!format!("{config:?}").contains("s3cret"));

            // Sentinel instead of a URL: its own credentials, and TLS to
            // the primary it names.
            jail.set_env(
                "VERIFYD_STORE__REDIS__SENTINEL__NODES",
                "[redis://s1:26379]",
            );
            assert_eq!(load_err().key, "store.redis.sentinel.nodes", "and a URL");
            jail.clear_env();
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.set_env("VERIFYD_STORE__BACKEND", "redis");
            jail.set_env("VERIFYD_STORE__REDIS__INDEX_KEY", KEY);
            jail.set_env("VERIFYD_STORE__REDIS__CA_CERT_FILE", "ca.pem");
            jail.set_env(
                "VERIFYD_STORE__REDIS__SENTINEL__NODES",
                "[redis://s1:26379]",
            );
            assert_eq!(load_err().key, "store.redis.sentinel.master_name");
            jail.set_env("VERIFYD_STORE__REDIS__SENTINEL__MASTER_NAME", "my primary");
            assert_eq!(load_err().key, "store.redis.sentinel.master_name");
            jail.set_env("VERIFYD_STORE__REDIS__SENTINEL__MASTER_NAME", "verifyd");
            assert_eq!(load_err().key, "store.redis.ca_cert", "CA without TLS");
            jail.set_env("VERIFYD_STORE__REDIS__SENTINEL__TLS", "true");
            jail.create_file("sentinel.pass", "s3ntinel")?;
            jail.set_env(
                "VERIFYD_STORE__REDIS__SENTINEL__PASSWORD_FILE",
                "sentinel.pass",
            );
            let config = Config::load(None).expect("valid");
            let sentinel = &config.store.redis.sentinel;
            assert_eq!(sentinel.nodes, ["redis://s1:26379"]);
            assert_eq!(
                sentinel.password.as_ref().map(Secret::expose),
                Some("s3ntinel")
            );
            assert!(!format!("{config:?}").contains("s3ntinel"));
            for with_credentials in ["[redis://:pw@s1:26379]", "[redis://user@s1:26379]"] {
                jail.set_env("VERIFYD_STORE__REDIS__SENTINEL__NODES", with_credentials);
                let err = load_err();
                assert_eq!(err.key, "store.redis.sentinel.nodes");
                assert!(
                    err.problem.contains("store.redis.sentinel.password"),
                    "{err}"
                );
            }

            // Durable acknowledgements: a wait that fits in the command
            // timeout, for a plausible number of replicas.
            jail.set_env(
                "VERIFYD_STORE__REDIS__SENTINEL__NODES",
                "[redis://s1:26379]",
            );
            jail.set_env("VERIFYD_STORE__REDIS__WAIT_REPLICAS", "1");
            jail.set_env("VERIFYD_STORE__REDIS__WAIT_TIMEOUT", "351ms");
            assert_eq!(
                load_err().key,
                "store.redis.wait_timeout",
                "no room left in the timeout"
            );
            jail.set_env("VERIFYD_STORE__REDIS__WAIT_TIMEOUT", "0s");
            assert_eq!(load_err().key, "store.redis.wait_timeout");
            jail.set_env("VERIFYD_STORE__REDIS__WAIT_TIMEOUT", "100ms");
            jail.set_env("VERIFYD_STORE__REDIS__WAIT_REPLICAS", "17");
            assert_eq!(load_err().key, "store.redis.wait_replicas");
            jail.set_env("VERIFYD_STORE__REDIS__WAIT_REPLICAS", "2");
            let config = Config::load(None).expect("valid");
            assert_eq!(config.store.redis.wait_replicas, 2);
            Ok(())
        });
    }

    #[test]
    fn a_provider_table_loads_with_a_password_file_and_its_errors_name_the_provider() {
        use crate::delivery::smtp::SmtpTls;

        Jail::expect_with(|jail| {
            jail.create_file(
                "verifyd.toml",
                r#"
                [hmac]
                key = "0123456789abcdef0123456789abcdef"
                [delivery]
                email = ["mail"]
                [providers.mail]
                kind = "smtp"
                host = "smtp.example.com"
                tls = "implicit"
                username = "apikey"
                from = "Acme <no-reply@acme.example>"
                timeout = "3s"
                "#,
            )?;
            jail.create_file("smtp.password", "s3cret-value\n")?;
            jail.set_env("VERIFYD_PROVIDERS__MAIL__PASSWORD_FILE", "smtp.password");
            let config = Config::load(Some(Path::new("verifyd.toml"))).expect("valid");
            let Some(ProviderConfig::Smtp(smtp)) = config.providers.get("mail") else {
                panic!("an smtp provider");
            };
            assert_eq!(smtp.tls, SmtpTls::Implicit);
            assert_eq!(smtp.timeout, Duration::from_secs(3));
            assert_eq!(
                smtp.password.as_ref().map(Secret::expose),
                Some("s3cret-value")
            );
            assert!(
                !format!("{config:?}").contains("s3cret"),
                "Debug redacts it"
            );

            jail.set_env("VERIFYD_PROVIDERS__MAIL__TLS", "ssl");
            let err = Config::load(Some(Path::new("verifyd.toml"))).expect_err("unknown mode");
            let line = err.to_string();
            assert!(line.contains("providers.mail"), "{line}");
            assert!(
                line.contains("ssl") && line.contains("starttls") && line.contains("implicit"),
                "{line}"
            );

            jail.set_env("VERIFYD_PROVIDERS__MAIL__TLS", "none");
            jail.set_env("VERIFYD_PROVIDERS__MAIL__POOL_SIZE", "4");
            let err = Config::load(Some(Path::new("verifyd.toml"))).expect_err("unknown key");
            assert!(err.to_string().contains("pool_size"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_example_config_loads() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_PROVIDERS__TWILIO__AUTH_TOKEN", "token");
            jail.set_env("VERIFYD_PROVIDERS__GATEWAY__SIGNING_SECRET", KEY);
            let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("verifyd.example.toml");
            let config = Config::load(Some(&example)).expect("the example is valid");
            assert!(!config.dev_mode);
            Ok(())
        });
    }

    #[test]
    fn the_production_overlay_loads_and_places_no_press_pound_calls() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_STORE__REDIS__INDEX_KEY", KEY);
            jail.set_env("VERIFYD_PROVIDERS__TWILIO__AUTH_TOKEN", "token");
            let prod = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/overlays/prod/verifyd.toml");
            let config = Config::load(Some(&prod)).expect("the overlay is valid");
            let modes = config.voice.mode_policy();
            assert_eq!(modes.resolve(None), Ok(VoiceMode::Match));
            assert_eq!(
                modes.resolve(Some(VoiceMode::Confirm)),
                Err(VoiceMode::Confirm)
            );
            Ok(())
        });
    }

    #[test]
    fn a_default_voice_mode_outside_the_modes_is_refused_naming_its_key() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.set_env("VERIFYD_VOICE__MODES", "[match, code]");
            assert_eq!(load_err().key, "voice.default_mode");
            jail.set_env("VERIFYD_VOICE__DEFAULT_MODE", "match");
            jail.set_env(
                "VERIFYD_TENANTS__ACME__API_KEY_SHA256",
                format!("[{}]", "ab".repeat(32)),
            );
            jail.set_env("VERIFYD_TENANTS__ACME__VOICE__MODES", "[confirm]");
            assert_eq!(load_err().key, "tenants.acme.voice.default_mode");
            jail.set_env("VERIFYD_TENANTS__ACME__VOICE__DEFAULT_MODE", "confirm");
            let config = Config::load(None).expect("valid");
            assert_eq!(config.voice.default_mode, VoiceMode::Match);
            Ok(())
        });
    }

    #[test]
    fn a_webhook_base_with_a_query_fragment_or_user_info_is_refused() {
        for base in [
            "https://hooks.example.com/verifyd/?x=1",
            "https://hooks.example.com/verifyd/#top",
            "https://user:pass@hooks.example.com/verifyd/",
        ] {
            Jail::expect_with(|jail| {
                jail.set_env("VERIFYD_HMAC__KEY", KEY);
                jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
                jail.set_env("VERIFYD_WEBHOOKS__PUBLIC_BASE_URL", base);
                let err = load_err();
                assert_eq!(err.key, "webhooks.public_base_url", "{base}");
                assert!(err.to_string().contains("no query"), "{err}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_quota_past_what_a_budget_holds_is_refused_naming_its_limit() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_LIMITS__STARTS_PER_IP__BURST", "4294967295");
            let err = load_err();
            assert_eq!(err.key, "limits.starts_per_ip");
            assert!(err.to_string().contains("at most"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_client_endpoint_variable_is_not_server_configuration() {
        Jail::expect_with(|jail| {
            jail.set_env(CLIENT_ADDR_VAR, "http://127.0.0.1:50051");
            let config = Config::load(None).expect("ignored");
            assert!(config.dev_mode);
            Ok(())
        });
    }

    const OLD_KEY: &str = "old-key-0123456789abcdef0123456789";
    const OLDER_KEY: &str = "older-key-0123456789abcdef01234567";

    fn ring_ids(ring: &KeyRing) -> (String, Vec<String>) {
        (
            ring.active().id().as_str().to_owned(),
            ring.previous()
                .iter()
                .map(|k| k.id().as_str().to_owned())
                .collect(),
        )
    }

    #[test]
    fn previous_hmac_keys_come_from_the_file_and_from_secret_files() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "verifyd.toml",
                &format!(
                    r#"
                    [hmac]
                    key_id = "k2"
                    [hmac.previous_keys]
                    k0 = "{OLDER_KEY}"
                    [delivery]
                    sms = ["console"]
                    "#
                ),
            )?;
            jail.create_file("hmac-k1", &format!("{OLD_KEY}\n"))?;
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            // Figment lowercases variable names: K1 arrives as the id k1.
            jail.set_env("VERIFYD_HMAC__PREVIOUS_KEYS__K1_FILE", "hmac-k1");
            let config = Config::load(Some(Path::new("verifyd.toml"))).expect("valid");
            assert_eq!(
                config.hmac.previous_keys.get("k1").map(Secret::expose),
                Some(OLD_KEY),
                "newline trimmed, id lowercased"
            );
            let debug = format!("{config:?}");
            assert!(
                !debug.contains(OLD_KEY) && !debug.contains(OLDER_KEY),
                "redacted"
            );
            assert_eq!(
                ring_ids(&config.hmac.key_ring()),
                ("k2".to_owned(), vec!["k0".to_owned(), "k1".to_owned()])
            );
            Ok(())
        });
    }

    #[test]
    fn without_previous_keys_the_ring_holds_the_active_key_alone() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            let config = Config::load(None).expect("valid");
            assert_eq!(
                ring_ids(&config.hmac.key_ring()),
                ("k1".to_owned(), Vec::new())
            );
            Ok(())
        });
    }

    #[test]
    fn bad_previous_hmac_keys_name_their_key_and_never_echo_the_secret() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");

            jail.set_env("VERIFYD_HMAC__PREVIOUS_KEYS__K0", "short-s3cret");
            let err = load_err();
            assert_eq!(err.key, "hmac.previous_keys.k0");
            assert_eq!(err.problem, "must be at least 32 bytes");
            assert!(!err.to_string().contains("short-s3cret"), "{err}");

            jail.set_env("VERIFYD_HMAC__PREVIOUS_KEYS__K0", OLD_KEY);
            Config::load(None).expect("valid");
            jail.set_env("VERIFYD_HMAC__PREVIOUS_KEYS__K1", OLDER_KEY);
            let err = load_err();
            assert_eq!(err.key, "hmac.previous_keys.k1", "the active id");
            assert!(err.problem.contains("hmac.key_id"), "{err}");
            assert!(!err.to_string().contains(OLDER_KEY), "{err}");
            Ok(())
        });
    }

    #[test]
    fn previous_hmac_key_ids_are_checked_and_counted() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.create_file(
                "bad-id.toml",
                &format!("[hmac.previous_keys]\n\"old key\" = \"{OLD_KEY}\"\n"),
            )?;
            let err = Config::load(Some(Path::new("bad-id.toml"))).expect_err("refused");
            assert_eq!(err.key, "hmac.previous_keys.old key");
            assert!(!err.to_string().contains(OLD_KEY), "{err}");

            let mut toml = String::from("[hmac.previous_keys]\n");
            for i in 0..MAX_PREVIOUS_KEYS {
                toml.push_str(&format!("k{} = \"{OLD_KEY}\"\n", i + 10));
            }
            jail.create_file("eight.toml", &toml)?;
            let config = Config::load(Some(Path::new("eight.toml"))).expect("at the limit");
            assert_eq!(config.hmac.key_ring().previous().len(), MAX_PREVIOUS_KEYS);
            toml.push_str(&format!("k99 = \"{OLD_KEY}\"\n"));
            jail.create_file("nine.toml", &toml)?;
            let err = Config::load(Some(Path::new("nine.toml"))).expect_err("one too many");
            assert_eq!(err.key, "hmac.previous_keys");
            assert!(!err.to_string().contains(OLD_KEY), "{err}");
            Ok(())
        });
    }

    #[test]
    fn key_ring_leaves_out_what_validation_refuses() {
        let mut config = Config::default();
        config.hmac.key = Some(Secret::new(KEY));
        config
            .hmac
            .previous_keys
            .insert("k1".to_owned(), Secret::new(OLD_KEY));
        config
            .hmac
            .previous_keys
            .insert("k0".to_owned(), Secret::new("short"));
        config
            .hmac
            .previous_keys
            .insert("bad id".to_owned(), Secret::new(OLD_KEY));
        config
            .hmac
            .previous_keys
            .insert("k9".to_owned(), Secret::new(OLDER_KEY));
        assert_eq!(
            ring_ids(&config.hmac.key_ring()),
            ("k1".to_owned(), vec!["k9".to_owned()])
        );
    }

    #[test]
    fn dev_mode_refuses_non_loopback_addresses() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_DEV_MODE", "true");
            jail.set_env("VERIFYD_SERVER__GRPC_ADDR", "0.0.0.0:50051");
            assert_eq!(load_err().key, "server.grpc_addr");
            Ok(())
        });
    }

    #[test]
    fn a_network_listener_needs_tenants_with_key_digests() {
        Jail::expect_with(|jail| {
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            jail.set_env("VERIFYD_SERVER__GRPC_ADDR", "0.0.0.0:50051");
            assert_eq!(load_err().key, "tenants");
            jail.set_env("VERIFYD_TENANTS__ACME__API_KEY_SHA256", "[not-a-digest]");
            assert_eq!(load_err().key, "tenants.acme.api_key_sha256");
            let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
            jail.set_env(
                "VERIFYD_TENANTS__ACME__API_KEY_SHA256",
                format!("[{digest}]"),
            );
            jail.set_env(
                "VERIFYD_TENANTS__GLOBEX__API_KEY_SHA256",
                format!("[{digest}]"),
            );
            let err = load_err();
            assert_eq!(
                err.key, "tenants.globex.api_key_sha256",
                "one tenant per key"
            );
            jail.set_env("VERIFYD_TENANTS__GLOBEX__API_KEY_SHA256", "[]");
            assert_eq!(load_err().key, "tenants.globex.api_key_sha256");
            jail.set_env(
                "VERIFYD_TENANTS__GLOBEX__API_KEY_SHA256",
                "[60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752]",
            );
            jail.set_env("VERIFYD_TENANTS__GLOBEX__CHANNELS", "[email]");
            let config = Config::load(None).expect("valid");
            assert_eq!(config.tenants.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn client_certificate_names_are_exact_and_belong_to_one_tenant() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "verifyd.toml",
                r#"
                [server.tls]
                cert_path = "server.pem"
                key_path = "server.key"
                client_ca_path = "ca.pem"
                [tenants.acme]
                client_cert_sans = ["*.ns.svc"]
                "#,
            )?;
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            let load = || Config::load(Some(Path::new("verifyd.toml")));
            let err = load().expect_err("a wildcard");
            assert_eq!(err.key, "tenants.acme.client_cert_sans");
            assert!(err.problem.contains("wildcard"), "{err}");

            jail.set_env("VERIFYD_TENANTS__ACME__CLIENT_CERT_SANS", "[sspr.ns.svc.]");
            let err = load().expect_err("a trailing dot: a second spelling");
            assert_eq!(err.key, "tenants.acme.client_cert_sans");

            jail.set_env("VERIFYD_TENANTS__ACME__CLIENT_CERT_SANS", "[sspr.ns.svc]");
            jail.set_env("VERIFYD_TENANTS__GLOBEX__CLIENT_CERT_SANS", "[SSPR.ns.svc]");
            let err = load().expect_err("one name, two tenants");
            assert_eq!(err.key, "tenants.globex.client_cert_sans");
            assert!(err.problem.contains("one tenant"), "{err}");

            jail.set_env(
                "VERIFYD_TENANTS__GLOBEX__CLIENT_CERT_SANS",
                "[\"10.0.0.7\", \"::ffff:10.0.0.7\"]",
            );
            let err = load().expect_err("one IPv4 address, written twice");
            assert_eq!(err.key, "tenants.globex.client_cert_sans");

            jail.set_env(
                "VERIFYD_TENANTS__GLOBEX__CLIENT_CERT_SANS",
                "[\"10.0.0.7\"]",
            );
            let config = load().expect("a DNS name and an IP address");
            assert_eq!(config.tenants.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn a_tenant_override_is_checked_and_named_by_its_key() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "verifyd.toml",
                r#"
                [tenants.acme]
                api_key_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
                [tenants.acme.limits.starts_per_destination]
                burst = 0
                period = "1m"
                "#,
            )?;
            jail.set_env("VERIFYD_HMAC__KEY", KEY);
            jail.set_env("VERIFYD_DELIVERY__SMS", "[console]");
            let load = || Config::load(Some(Path::new("verifyd.toml")));
            let err = load().expect_err("burst 0");
            assert_eq!(err.key, "tenants.acme.limits.starts_per_destination");
            assert!(err.problem.contains("burst"), "{err}");

            jail.set_env(
                "VERIFYD_TENANTS__ACME__LIMITS__STARTS_PER_DESTINATION__BURST",
                "1",
            );
            jail.set_env("VERIFYD_TENANTS__ACME__VOICE__MAX_REPROMPTS", "9");
            assert_eq!(
                load().expect_err("too many").key,
                "tenants.acme.voice.max_reprompts"
            );
            jail.set_env("VERIFYD_TENANTS__ACME__VOICE__MAX_REPROMPTS", "0");
            jail.set_env("VERIFYD_TENANTS__ACME__VOICE__FRAUD_BLOCK", "1h");
            let config = load().expect("valid");
            let acme = &config.tenants["acme"];
            assert_eq!(acme.limits.starts_per_destination.map(|q| q.burst), Some(1));
            assert_eq!(acme.limits.starts_per_ip, None, "the server's");
            let voice = acme.voice.over(&config.voice);
            assert_eq!(voice.max_reprompts, 0);
            assert_eq!(voice.fraud_block, Duration::from_secs(3600));
            assert_eq!(
                voice.gather_timeout_secs, config.voice.gather_timeout_secs,
                "left out: the server's"
            );
            Ok(())
        });
    }
}
