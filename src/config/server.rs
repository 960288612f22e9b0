//! `[server]` and `[webhooks]`: the listeners. They stay with the
//! configuration: the application, above it, binds them and hands the
//! parts on.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::grpc::tls::TlsConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// How long in-flight RPCs may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub max_watch_streams_per_tenant: u32,
    /// Whether gRPC server reflection answers (without credentials, like
    /// health). It describes the API, nothing more; turn it off to expose
    /// less.
    pub reflection: bool,
    /// TLS on the gRPC listener; plaintext when unset.
    pub tls: Option<TlsConfig>,
    /// The longest a client's HTTP/2 connection lives before the server
    /// asks it (GOAWAY) to reconnect, so that clients behind a Kubernetes
    /// Service spread over new pods. Unset: no limit.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            shutdown_grace: Duration::from_secs(10),
            max_watch_streams_per_tenant: 1_000,
            reflection: true,
            tls: None,
            max_connection_age: None,
        }
    }
}

impl ServerConfig {
    /// The first setting out of range: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self
            .max_connection_age
            .is_some_and(|age| age < Duration::from_secs(1))
        {
            return Some(("server.max_connection_age", "must be at least 1s"));
        }
        if self.shutdown_grace > Duration::from_secs(600) {
            return Some(("server.shutdown_grace", "must be at most 10m"));
        }
        if self.max_watch_streams_per_tenant == 0 {
            return Some(("server.max_watch_streams_per_tenant", "must be above zero"));
        }
        self.tls.as_ref().and_then(TlsConfig::problem)
    }

    /// Whether the gRPC listener verifies client certificates, which
    /// `tenants.NAME.client_cert_sans` needs.
    pub fn verifies_clients(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.client_ca_path.is_some())
    }
}

/// `[admin_api]`: the operator gRPC API (AdminService), on a listener of
/// its own. Off unless `addr` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminApiConfig {
    pub addr: Option<SocketAddr>,
    /// SHA-256 digests (hex) of the operators' tokens, sent as
    /// `authorization: Bearer`; none may be a tenant's key digest.
    pub token_sha256: Vec<String>,
    /// TLS on the listener: required outside dev mode.
    pub tls: Option<TlsConfig>,
}

impl AdminApiConfig {
    /// The first problem: its key and why. `tenant_digests` are the
    /// tenants' API key digests, which no operator token may share.
    pub fn problem<'a>(
        &self,
        dev_mode: bool,
        mut tenant_digests: impl Iterator<Item = &'a String>,
    ) -> Option<(&'static str, &'static str)> {
        self.addr?;
        let hex = |d: &String| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
        if self.token_sha256.is_empty() || !self.token_sha256.iter().all(hex) {
            return Some((
                "admin_api.token_sha256",
                "list the SHA-256 digest (64 hex digits) of each operator token: printf %s \"$TOKEN\" | sha256sum",
            ));
        }
        if tenant_digests.any(|t| self.token_sha256.iter().any(|o| o.eq_ignore_ascii_case(t))) {
            return Some((
                "admin_api.token_sha256",
                "an operator token must not also be a tenant's API key",
            ));
        }
        match &self.tls {
            None if !dev_mode => Some((
                "admin_api.tls",
                "the operator API needs TLS outside dev mode: set cert_path and key_path",
            )),
            // The same checks as the gRPC listener's, named under this one.
            Some(tls) => tls.problem().map(|(key, problem)| {
                let key = match key {
                    "server.tls.max_handshakes" => "admin_api.tls.max_handshakes",
                    "server.tls.max_handshakes_per_ip" => "admin_api.tls.max_handshakes_per_ip",
                    _ => "admin_api.tls",
                };
                (key, problem)
            }),
            None => None,
        }
    }
}

/// The public listener for providers' webhooks (delivery status callbacks,
/// voice call instructions). It is what a telephony provider reaches
/// through the ingress, apart from the API and the admin listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub addr: SocketAddr,
    /// The URL providers use to reach `addr` (behind an ingress, not the
    /// pod's address). Webhook signatures are checked against it. Unset: no
    /// callbacks are requested.
    pub public_base_url: Option<url::Url>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
        }
    }
}

impl WebhooksConfig {
    /// The problem with these settings: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        let Some(url) = &self.public_base_url else {
            return None;
        };
        if !matches!(url.scheme(), "https" | "http") {
            return Some(("webhooks.public_base_url", "must be an http(s) URL"));
        }
        // Providers sign the URL they request: the base is joined with
        // each webhook's path and query, and anything else in it would
        // make every signature fail.
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Some((
                "webhooks.public_base_url",
                "must be a scheme, host and path only: no query, fragment or user info",
            ));
        }
        None
    }
}
