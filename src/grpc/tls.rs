//! TLS for the gRPC listener, with rustls (ring), reloading the certificate
//! when its files change, as cert-manager rotates them, without a restart.
//!
//! tonic's own TLS configuration is fixed at startup, so connections are
//! accepted here and handed to tonic already encrypted. Each handshake
//! looks at the files' modification times (one `stat` each, cheap next to
//! the handshake) and loads the new pair when they changed; a pair that does
//! not load is logged and the previous one stays in use. With a client CA,
//! client certificates are verified (and offered to the tenant mapping) but
//! not required, so API keys keep working.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

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
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Accepts TCP connections and completes their handshakes concurrently, so
/// a slow client holds up nobody; failed handshakes are dropped. Ends when
/// `stop` is cancelled or the receiver goes away.
pub fn incoming(
    listener: TcpListener,
    server_config: Arc<ServerConfig>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<tokio::net::TcpStream>>> {
    let acceptor = TlsAcceptor::from(server_config);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((tcp, peer)) = accepted else { continue };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
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

/// Whether a client certificate (DER) is valid for `name` (a DNS name or
/// IP address among its subject alternative names). The chain was already
/// verified in the handshake.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}
