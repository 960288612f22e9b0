//! TLS for the gRPC listener, with rustls (ring), reloading the certificate
//! when its files change, as cert-manager rotates them, without a restart.
//!
//! tonic's own TLS configuration is fixed at startup, so connections are
//! accepted by [`super::listener`] and handed to tonic already encrypted,
//! with this module's configuration. Each handshake
//! looks at the files' modification times (one `stat` each, cheap next to
//! the handshake) and loads the new pair when they changed; a pair that does
//! not load is logged and the previous one stays in use. With a client CA,
//! client certificates are verified (and offered to the tenant mapping) but
//! not required, so API keys keep working.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};

use super::listener::HandshakeLimits;

/// `[server.tls]`. Paths, not `*_file` keys: a `_FILE` suffix means "read
/// this setting from a file" everywhere else in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key of the leaf.
    pub key_path: PathBuf,
    /// PEM CAs whose client certificates are verified and may map to a
    /// tenant (`tenants.NAME.client_cert_sans`).
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
    /// The most handshakes under way at once; more connections wait in the
    /// kernel's backlog until one ends.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// The most of those one client address may hold; its connections past
    /// that are closed at once.
    #[serde(default = "default_max_handshakes_per_ip")]
    pub max_handshakes_per_ip: usize,
}

fn default_max_handshakes() -> usize {
    256
}

fn default_max_handshakes_per_ip() -> usize {
    16
}

impl TlsConfig {
    /// The first setting out of range: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        // Zero would accept no connection at all.
        if !(1..=65_536).contains(&self.max_handshakes) {
            return Some(("server.tls.max_handshakes", "must be 1 to 65536"));
        }
        if !(1..=self.max_handshakes).contains(&self.max_handshakes_per_ip) {
            return Some((
                "server.tls.max_handshakes_per_ip",
                "must be 1 to server.tls.max_handshakes",
            ));
        }
        None
    }

    pub fn handshake_limits(&self) -> HandshakeLimits {
        HandshakeLimits {
            total: self.max_handshakes,
            per_ip: self.max_handshakes_per_ip,
        }
    }
}

/// The TLS side of the gRPC listener.
///
/// # Errors
/// When the certificate, key or client CA cannot be loaded.
pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    // One crypto provider across every crate: ring.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.client_ca_path {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let resolver = ReloadingCert::load(&config.cert_path, &config.key_path)?;
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(server))
}

/// The server certificate, reloaded when its files change.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    key: Arc<CertifiedKey>,
}

/// What tells a changed file: modification time and length of both.
type Stamp = [(Option<SystemTime>, u64); 2];

impl ReloadingCert {
    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let stamp = stamp(cert_path, key_path);
        let key = certified_key(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: Mutex::new(Loaded { stamp, key }),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(&self.cert_path, &self.key_path);
        if now != current.stamp {
            match certified_key(&self.cert_path, &self.key_path) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                    current.key = key;
                }
                // Half-written files during a rotation: keep serving the
                // old pair and try again on the next handshake.
                Err(error) => tracing::warn!(%error, "TLS certificate not reloaded"),
            }
            current.stamp = now;
        }
        Some(Arc::clone(&current.key))
    }
}

fn stamp(cert_path: &Path, key_path: &Path) -> Stamp {
    [cert_path, key_path]
        .map(|path| fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len())))
}

fn certified_key(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = CertifiedKey::new(certs, signer);
    key.keys_match().map_err(|e| {
        format!(
            "{}: does not match the certificate: {e}",
            key_path.display()
        )
    })?;
    Ok(Arc::new(key))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}
