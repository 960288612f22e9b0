//! Tenants: the services that call verifyd. Every verification, store key,
//! rate-limit key and code HMAC includes the tenant, so tenants never see
//! each other's verifications.

use std::{fmt, sync::Arc};

/// A tenant's id: 1 to 64 characters of `[A-Za-z0-9._-]`, so it is safe in
/// keys, logs and the HMAC input without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The tenant every caller acts as until caller authentication exists.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(id: &str) -> Option<Self> {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| Self(Arc::from(id)))
    }

    pub fn default_tenant() -> Self {
        Self(Arc::from(Self::DEFAULT))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_plain_and_bounded() {
        assert!(TenantId::parse("billing-svc.prod_1").is_some());
        for bad in ["", "a|b", "a b", "ä", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_none(), "{bad}");
        }
    }
}
