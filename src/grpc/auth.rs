//! Who is calling: `authorization: Bearer <API key>`, looked up by the
//! key's SHA-256 among the configured tenants (configuration holds only
//! digests, so a leaked config file holds no key), or else a client
//! certificate verified in the TLS handshake whose names map to a tenant.
//! A certificate's names match exactly: a wildcard name stands for no
//! tenant, since a CA shared across a mesh or cluster may issue
//! `*.ns.svc` to anyone in the namespace.
//!
//! With no tenants configured (allowed on a loopback listener or in dev
//! mode only; config validation refuses it elsewhere) every caller is the
//! `default` tenant.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use rustls::pki_types::{CertificateDer, DnsName};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer as _};

use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

use crate::{domain::TenantId, service::TenantConfig};

#[derive(Debug, Clone)]
pub struct Authenticator {
    /// Tenants by the SHA-256 of their API keys.
    by_key_digest: Arc<HashMap<[u8; 32], TenantId>>,
    /// Tenants by the names their client certificates carry.
    by_cert_name: Arc<Vec<(ClientName, TenantId)>>,
}

/// A name a client certificate carries for its tenant: a DNS name (ASCII,
/// compared without case, no trailing dot) or an IP address (an IPv4
/// address written as IPv6 is that IPv4 address), never a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientName {
    Dns(String),
    Ip(IpAddr),
}

impl ClientName {
    /// A configured `client_cert_sans` entry: an IP address, or a DNS name
    /// without a wildcard.
    pub fn parse(name: &str) -> Option<Self> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Some(Self::Ip(ip.to_canonical()));
        }
        // A trailing dot is one spelling too many: `a.b.` and `a.b` could
        // otherwise be configured for two tenants.
        let exact = !name.contains('*') && !name.ends_with('.');
        (exact && DnsName::try_from(name).is_ok()).then(|| Self::Dns(name.to_ascii_lowercase()))
    }
}

/// The names among a client certificate's subject alternative names (its
/// chain was verified in the handshake). Wildcard DNS names are left out:
/// they name no one in particular. An unreadable certificate names no one.
pub fn client_names(cert: &CertificateDer<'_>) -> Vec<ClientName> {
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            // A DNS-type name that reads as an IP address is not one.
            GeneralName::DNSName(dns) => {
                ClientName::parse(dns).filter(|n| matches!(n, ClientName::Dns(_)))
            }
            GeneralName::IPAddress(bytes) => {
                let ip = match <[u8; 4]>::try_from(*bytes) {
                    Ok(v4) => IpAddr::from(v4),
                    Err(_) => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                };
                Some(ClientName::Ip(ip.to_canonical()))
            }
            _ => None,
        })
        .collect()
}

impl Authenticator {
    /// From the validated `[tenants]` configuration.
    pub fn new(tenants: &BTreeMap<String, TenantConfig>) -> Self {
        let mut by_key_digest = HashMap::new();
        let mut by_cert_name = Vec::new();
        for (name, tenant) in tenants {
            let Some(id) = TenantId::parse(name) else {
                continue;
            };
            for san in &tenant.client_cert_sans {
                if let Some(name) = ClientName::parse(san) {
                    by_cert_name.push((name, id.clone()));
                }
            }
            for digest in &tenant.api_key_sha256 {
                let mut bytes = [0u8; 32];
                if hex::decode_to_slice(digest, &mut bytes).is_ok() {
                    by_key_digest.insert(bytes, id.clone());
                }
            }
        }
        Self {
            by_key_digest: Arc::new(by_key_digest),
            by_cert_name: Arc::new(by_cert_name),
        }
    }

    /// Whether callers need no credentials.
    pub fn is_open(&self) -> bool {
        self.by_key_digest.is_empty() && self.by_cert_name.is_empty()
    }

    /// The tenant the request acts for.
    ///
    /// # Errors
    /// UNAUTHENTICATED when the key is missing, malformed or unknown; the
    /// message says which, never echoing the key.
    pub fn tenant<T>(&self, request: &Request<T>) -> Result<TenantId, Status> {
        if self.is_open() {
            return Ok(TenantId::default_tenant());
        }
        let Some(value) = request.metadata().get("authorization") else {
            return self.by_certificate(request).ok_or_else(|| {
                Status::unauthenticated(
                    "missing credentials: send authorization: Bearer <API key>, or a client certificate",
                )
            });
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("malformed credentials: expected Bearer <API key>")
            })?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_key_digest
            .get(&digest)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown API key"))
    }

    /// The tenant whose names the (verified) client certificate carries.
    /// A certificate naming two tenants is neither: which one it acts for
    /// would otherwise depend on how their names sort.
    fn by_certificate<T>(&self, request: &Request<T>) -> Option<TenantId> {
        let certs = request.peer_certs()?;
        let presented = client_names(certs.first()?);
        let mut tenants = self
            .by_cert_name
            .iter()
            .filter(|(name, _)| presented.contains(name))
            .map(|(_, tenant)| tenant);
        let tenant = tenants.next()?;
        if tenants.any(|other| other != tenant) {
            tracing::warn!("a client certificate names two tenants: refused");
            return None;
        }
        Some(tenant.clone())
    }
}
