//! Connections to Redis: one multiplexed connection to a standalone server
//! (reconnecting by itself) or a cluster connection that follows the slot
//! map. Both are lazy, so verifyd starts, and reports itself not ready,
//! while Redis is down; and every command is bounded by a timeout, so an
//! outage fails requests fast instead of hanging them.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
};
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
    /// Starts every key, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster: Vec::new(),
            username: None,
            password: None,
            ca_cert: None,
            index_key: None,
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
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
            let tls = self
                .url
                .iter()
                .chain(&self.cluster)
                .all(|u| u.starts_with("rediss://"));
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
        let urls: Vec<&String> = self.url.iter().chain(&self.cluster).collect();
        if urls.is_empty() {
            return Some((
                "store.redis.url",
                "is required when store.backend is \"redis\" (or list store.redis.cluster seed URLs)".to_owned(),
            ));
        }
        if self.url.is_some() && !self.cluster.is_empty() {
            return Some((
                "store.redis.cluster",
                "cannot be set together with store.redis.url".to_owned(),
            ));
        }
        for raw in urls {
            let key = if self.url.is_some() {
                "store.redis.url"
            } else {
                "store.redis.cluster"
            };
            let Ok(url) = url::Url::parse(raw) else {
                return Some((key, "must be a redis:// or rediss:// URL".to_owned()));
            };
            if !matches!(url.scheme(), "redis" | "rediss") {
                return Some((key, "must be a redis:// or rediss:// URL".to_owned()));
            }
            if url.password().is_some() {
                return Some((
                    key,
                    "must not hold a password: set store.redis.password (or VERIFYD_STORE__REDIS__PASSWORD_FILE)".to_owned(),
                ));
            }
        }
        None
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
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_cert.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.as_bytes().to_vec()),
        })
    }

    /// The connection details of one URL, with the credentials set apart.
    pub(super) fn connection_info(&self, url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &self.password {
            redis_info = redis_info.set_password(password.expose());
        }
        info = info.set_redis_settings(redis_info);
        Ok(info)
    }
}

/// The shortest index key accepted, as for the HMAC key.
const MIN_INDEX_KEY_LEN: usize = 32;

#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Standalone(_) => "Connection::Standalone",
            Self::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl Connection {
    pub(super) fn open(config: &RedisConfig) -> redis::RedisResult<Self> {
        if let Some(url) = &config.url {
            let client = config.client(url)?;
            let manager = ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.timeout))
                .set_connection_timeout(Some(config.connect_timeout))
                // Reconnects back off up to a second, so a returning Redis
                // is picked up quickly.
                .set_max_delay(Duration::from_secs(1))
                .set_number_of_retries(2);
            return ConnectionManager::new_lazy_with_config(client, manager).map(Self::Standalone);
        }
        let nodes = config
            .cluster
            .iter()
            .map(|url| config.connection_info(url))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let mut builder = ClusterClientBuilder::new(nodes)
            .response_timeout(config.timeout)
            .connection_timeout(config.connect_timeout)
            // No resending: a script whose reply was lost may have run, and
            // running it again would spend a second attempt or budget cell.
            // A request caught by a failover or a slot move fails with
            // UNAVAILABLE instead, and the caller retries.
            .retries(0);
        if let Some(certificates) = config.certificates() {
            builder = builder.certs(certificates);
        }
        let client = builder.build()?;
        Ok(Self::Cluster(
            client.get_pending_async_connection_with_config(
                ClusterConfig::new()
                    .set_response_timeout(config.timeout)
                    .set_connection_timeout(config.connect_timeout),
            ),
        ))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
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
