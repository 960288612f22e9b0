//! `[store.redis]`: where Redis is (a standalone server, a cluster's
//! seeds, or the sentinels of a primary), how to sign in and trust it, and
//! how long a command may take.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[store.redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// A standalone server: `redis://host:6379/0`, or `rediss://` for TLS.
    pub url: Option<String>,
    /// The seed nodes of a Redis Cluster, instead of `url`.
    pub cluster: Vec<String>,
    /// A primary found through Redis Sentinel, instead of `url`.
    pub sentinel: SentinelConfig,
    pub username: Option<String>,
    /// Best set through `VERIFYD_STORE__REDIS__PASSWORD_FILE`; never in the
    /// URL, where it would show in logs.
    pub password: Option<Secret>,
    /// PEM certificates of the CAs to trust for `rediss://`, instead of the
    /// system's roots (a cluster-internal Redis usually has a private CA).
    /// Best set from a file: `VERIFYD_STORE__REDIS__CA_CERT_FILE`.
    pub ca_cert: Option<String>,
    /// The secret that hashes destinations, IP addresses and idempotency
    /// keys into key names: at least 32 bytes, the same on every replica,
    /// and kept when `hmac.key` rotates (changing it frees every fraud
    /// block, idempotency key and rate-limit budget at once). Best set
    /// through `VERIFYD_STORE__REDIS__INDEX_KEY_FILE`. Dev mode derives one
    /// from the HMAC key when unset.
    pub index_key: Option<Secret>,
    /// The longest one command may take before the request fails with
    /// UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Durable acknowledgements: how many replicas must hold a change a
    /// caller is told about (an approval, a spent attempt, a fraud report,
    /// a new or superseding send) before it is told. 0 (the default): none,
    /// Redis's asynchronous replication as it is. See docs/redis.md.
    pub wait_replicas: u32,
    /// How long a change waits for `wait_replicas` before the request
    /// answers UNAVAILABLE (an approval is kept unacknowledged until a
    /// retry's wait covers it). Below `timeout`.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Starts every key, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster: Vec::new(),
            sentinel: SentinelConfig::default(),
            username: None,
            password: None,
            ca_cert: None,
            index_key: None,
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(200),
            key_prefix: "verifyd".to_owned(),
        }
    }
}

impl RedisConfig {
    /// The problem with these settings, as (key, problem).
    pub fn problem(&self, dev_mode: bool) -> Option<(&'static str, String)> {
        match &self.index_key {
            Some(key) if key.expose().len() < MIN_INDEX_KEY_LEN => {
                return Some((
                    "store.redis.index_key",
                    format!("must be at least {MIN_INDEX_KEY_LEN} bytes"),
                ));
            }
            None if !dev_mode => {
                return Some((
                    "store.redis.index_key",
                    "is required with the redis store outside dev mode (set VERIFYD_STORE__REDIS__INDEX_KEY_FILE to a file holding at least 32 characters of random text, the same on every replica)".to_owned(),
                ));
            }
            _ => {}
        }
        if let Some(problem) = self.urls_problem() {
            return Some(problem);
        }
        if let Some(pem) = &self.ca_cert {
            if let Err(problem) = check_ca(pem) {
                return Some(("store.redis.ca_cert", problem));
            }
            let tls = if self.sentinel.is_used() {
                self.sentinel.uses_tls()
            } else {
                self.url
                    .iter()
                    .chain(&self.cluster)
                    .all(|u| u.starts_with("rediss://"))
            };
            if !tls {
                return Some((
                    "store.redis.ca_cert",
                    "is set, but the Redis URLs are not rediss:// (TLS)".to_owned(),
                ));
            }
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Some((
                "store.redis.timeout",
                "timeouts must be above zero".to_owned(),
            ));
        }
        if let Some(problem) = self.wait_problem() {
            return Some(problem);
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !prefix_ok {
            return Some((
                "store.redis.key_prefix",
                "must be 1 to 64 of [A-Za-z0-9_.:-]".to_owned(),
            ));
        }
        None
    }

    /// The problem with the Redis URLs: none, both kinds, or one that is
    /// not a password-free redis:// or rediss:// URL.
    fn urls_problem(&self) -> Option<(&'static str, String)> {
        let kinds = [
            self.url.is_some(),
            !self.cluster.is_empty(),
            self.sentinel.is_used(),
        ];
        match kinds.iter().filter(|set| **set).count() {
            0 => {
                return Some((
                    "store.redis.url",
                    "is required when store.backend is \"redis\" (or list store.redis.cluster seed URLs, or store.redis.sentinel.nodes)".to_owned(),
                ));
            }
            1 => {}
            _ => {
                let key = if self.sentinel.is_used() {
                    "store.redis.sentinel.nodes"
                } else {
                    "store.redis.cluster"
                };
                return Some((
                    key,
                    "set only one of store.redis.url, store.redis.cluster and store.redis.sentinel.nodes".to_owned(),
                ));
            }
        }
        let key = if self.url.is_some() {
            "store.redis.url"
        } else if self.sentinel.is_used() {
            "store.redis.sentinel.nodes"
        } else {
            "store.redis.cluster"
        };
        let urls = self
            .url
            .iter()
            .chain(&self.cluster)
            .chain(&self.sentinel.nodes);
        for raw in urls {
            let Ok(url) = url::Url::parse(raw) else {
                return Some((key, "must be a redis:// or rediss:// URL".to_owned()));
            };
            if !matches!(url.scheme(), "redis" | "rediss") {
                return Some((key, "must be a redis:// or rediss:// URL".to_owned()));
            }
            if self.sentinel.is_used() && (url.password().is_some() || !url.username().is_empty()) {
                return Some((
                    key,
                    "must not hold credentials: set store.redis.sentinel.username and store.redis.sentinel.password (or VERIFYD_STORE__REDIS__SENTINEL__PASSWORD_FILE)".to_owned(),
                ));
            }
            if url.password().is_some() {
                return Some((
                    key,
                    "must not hold a password: set store.redis.password (or VERIFYD_STORE__REDIS__PASSWORD_FILE)".to_owned(),
                ));
            }
        }
        if self.sentinel.is_used() {
            return self.sentinel.problem();
        }
        None
    }

    /// The problem with the durable acknowledgement settings.
    fn wait_problem(&self) -> Option<(&'static str, String)> {
        if self.wait_replicas > MAX_WAIT_REPLICAS {
            return Some((
                "store.redis.wait_replicas",
                format!("must be 0 to {MAX_WAIT_REPLICAS}"),
            ));
        }
        // The script and its WAIT share one command timeout, and Redis
        // notices a WAIT's timeout only at its next tick (`hz`, 10 a
        // second by default): the wait leaves room for both, within the
        // 90 % of the timeout after which Sentinel mode gives a silent
        // primary up (`sentinel::STALL_SHARE`).
        let room = (self.timeout * 9 / 10).saturating_sub(WAIT_LATENESS);
        let wait_ok = self.wait_timeout >= Duration::from_millis(1) && self.wait_timeout <= room;
        if self.wait_replicas > 0 && !wait_ok {
            return Some((
                "store.redis.wait_timeout",
                format!(
                    "must be at least 1ms and at most 90% of store.redis.timeout less {WAIT_LATENESS:?} ({room:?}): Redis may answer a WAIT that much late"
                ),
            ));
        }
        None
    }

    /// The durable acknowledgement settings, when used.
    pub(super) fn durability(&self) -> Option<Durability> {
        (self.wait_replicas > 0).then_some(Durability {
            replicas: self.wait_replicas,
            timeout: self.wait_timeout,
        })
    }

    /// A client for one node.
    pub(super) fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info(url)?;
        match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
    }

    /// The CAs of `ca_cert`, when set.
    pub(super) fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_cert.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.as_bytes().to_vec()),
        })
    }

    /// The connection details of one data node's URL, with the
    /// credentials set apart.
    pub(super) fn connection_info(&self, url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        signed_in(url, self.username.as_deref(), self.password.as_ref())
    }

    /// A client for one sentinel, with the sentinels' own credentials.
    pub(super) fn sentinel_client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        let sentinel = &self.sentinel;
        let info = signed_in(
            url,
            sentinel.username.as_deref(),
            sentinel.password.as_ref(),
        )?;
        match self.certificates() {
            Some(certificates) if url.starts_with("rediss://") => {
                redis::Client::build_with_tls(info, certificates)
            }
            _ => redis::Client::open(info),
        }
    }
}

/// The connection details of `url`, signed in as `username` with
/// `password` (which never go in a URL, where they would reach logs).
fn signed_in(
    url: &str,
    username: Option<&str>,
    password: Option<&Secret>,
) -> redis::RedisResult<redis::ConnectionInfo> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = username {
        settings = settings.set_username(user);
    }
    if let Some(password) = password {
        settings = settings.set_password(password.expose());
    }
    Ok(info.set_redis_settings(settings))
}

/// What a change a caller is told about waits for: `WAIT replicas
/// timeout` after its script.
#[derive(Debug, Clone, Copy)]
pub(super) struct Durability {
    pub(super) replicas: u32,
    pub(super) timeout: Duration,
}

/// How late Redis may answer a WAIT past its timeout: one tick at the
/// default `hz` of 10.
const WAIT_LATENESS: Duration = Duration::from_millis(100);

/// More replicas than any deployment runs: a typo, not a setting.
const MAX_WAIT_REPLICAS: u32 = 16;

/// The shortest index key accepted, as for the HMAC key.
const MIN_INDEX_KEY_LEN: usize = 32;

/// `[store.redis.sentinel]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary by (`sentinel monitor
    /// NAME host port quorum`).
    pub master_name: String,
    /// The sentinels: `redis://host:26379`, or `rediss://` for TLS. Empty:
    /// Sentinel is not used.
    pub nodes: Vec<String>,
    /// The sentinels' own credentials, which are often not the data
    /// nodes' (those are `store.redis.username` and `password`).
    pub username: Option<String>,
    /// Best set through `VERIFYD_STORE__REDIS__SENTINEL__PASSWORD_FILE`.
    pub password: Option<Secret>,
    /// Whether the primary and its replicas speak TLS: the sentinels
    /// report only a host and a port. Trusted with `store.redis.ca_cert`.
    pub tls: bool,
}

impl SentinelConfig {
    pub(super) fn is_used(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The problem with these settings, as (key, problem), when used.
    pub(super) fn problem(&self) -> Option<(&'static str, String)> {
        let name_ok = !self.master_name.is_empty()
            && self.master_name.len() <= 128
            && self.master_name.bytes().all(|b| b.is_ascii_graphic());
        if !name_ok {
            return Some((
                "store.redis.sentinel.master_name",
                "is required with store.redis.sentinel.nodes: the name the sentinels monitor the primary by (1 to 128 printable characters, no spaces)".to_owned(),
            ));
        }
        None
    }

    /// Whether anything in the deployment speaks TLS.
    pub(super) fn uses_tls(&self) -> bool {
        self.tls || self.nodes.iter().any(|u| u.starts_with("rediss://"))
    }
}

/// Checks that `pem` holds at least one certificate rustls can trust.
fn check_ca(pem: &str) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("is not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("holds a certificate that cannot be trusted: {e}"))?;
    }
    if roots.is_empty() {
        return Err("must hold PEM certificates (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(())
}
