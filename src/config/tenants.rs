//! `[tenants]` as a whole: each tenant's own settings check themselves
//! (`TenantConfig::problem`); here are the rules that span tenants (a key
//! digest or a certificate name belongs to one of them only) or reach
//! other sections (certificate names need the server to verify client
//! certificates; a tenant's voice and code settings are checked over the
//! server's).

use std::collections::{BTreeMap, HashSet};

use super::{
    error::{ConfigError, check_under, invalid},
    server::ServerConfig,
};
use crate::{
    domain::{TenantId, policy::CodeConfig},
    grpc::ClientName,
    service::{TenantConfig, VoiceSettings},
};

/// The first problem with any tenant, named by its key under
/// `tenants.NAME`.
pub(super) fn validate(
    tenants: &BTreeMap<String, TenantConfig>,
    server: &ServerConfig,
    voice: &VoiceSettings,
    code: &CodeConfig,
) -> Result<(), ConfigError> {
    let mut digests = HashSet::new();
    let mut cert_names = HashSet::new();
    for (name, tenant) in tenants {
        let prefix = format!("tenants.{name}");
        if TenantId::parse(name).is_none() {
            return Err(invalid(&prefix, "tenant ids are 1 to 64 of [A-Za-z0-9._-]"));
        }
        check_under(&prefix, tenant.problem())?;
        let key = |field: &str| format!("{prefix}.{field}");
        if !tenant.client_cert_sans.is_empty() && !server.verifies_clients() {
            return Err(invalid(
                &key("client_cert_sans"),
                "needs server.tls.client_ca_path, to verify client certificates",
            ));
        }
        for san in &tenant.client_cert_sans {
            let Some(name) = ClientName::parse(san) else {
                return Err(invalid(
                    &key("client_cert_sans"),
                    "each entry must be a DNS name or an IP address, matched exactly: a wildcard names no one",
                ));
            };
            if !cert_names.insert(name) {
                return Err(invalid(
                    &key("client_cert_sans"),
                    "a name may belong to one tenant only",
                ));
            }
        }
        for digest in &tenant.api_key_sha256 {
            if !digests.insert(digest.to_ascii_lowercase()) {
                return Err(invalid(
                    &key("api_key_sha256"),
                    "a digest may belong to one tenant only",
                ));
            }
        }
        check_under(&key("voice"), tenant.voice.over(voice).problem())?;
        // Named as the server's keys are (`code.ttl`), under the tenant's.
        check_under(&prefix, code.overridden(&tenant.code).problem())?;
    }
    Ok(())
}
