//! Who is calling: `authorization: Bearer <API key>`, looked up by the
//! key's SHA-256 among the configured tenants (configuration holds only
//! digests, so a leaked config file holds no key), or else a client
//! certificate verified in the TLS handshake whose names map to a tenant.
//!
//! With no tenants configured (allowed on a loopback listener or in dev
//! mode only; config validation refuses it elsewhere) every caller is the
//! `default` tenant.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

use crate::{domain::TenantId, service::TenantConfig};

#[derive(Debug, Clone)]
pub struct Authenticator {
    /// Tenants by the SHA-256 of their API keys.
    by_key_digest: Arc<HashMap<[u8; 32], TenantId>>,
    /// Tenants by the names their client certificates carry.
    by_cert_name: Arc<Vec<(String, TenantId)>>,
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
                by_cert_name.push((san.clone(), id.clone()));
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
    fn by_certificate<T>(&self, request: &Request<T>) -> Option<TenantId> {
        let certs = request.peer_certs()?;
        let leaf = certs.first()?;
        self.by_cert_name
            .iter()
            .find(|(name, _)| super::tls::certificate_names(leaf, name))
            .map(|(_, tenant)| tenant.clone())
    }
}
