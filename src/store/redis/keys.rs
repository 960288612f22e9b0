//! Key names. Every key of one verification (its hash, its attempts, its
//! pending slot, its destination's block and budgets) carries the same hash
//! tag, `{ssss}`: four hex digits of a keyed hash of (tenant, destination),
//! which the verification id repeats. So each script touches one slot and
//! works unchanged on Redis Cluster, and a lookup by id alone finds it.
//!
//! No key holds personal data: destinations, IP addresses and idempotency
//! keys appear only as keyed hashes, so a dump of the key space says nothing
//! about who was verified. The hashing key is derived from
//! `store.redis.index_key` and never leaves verifyd.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::{
    domain::{Destination, PendingKind, TenantId, VerificationId},
    store::port::{Blocked, SafeListed},
};

const INDEX_KEY_LABEL: &str = "verifyd.redis-index.v1";

#[derive(Clone)]
pub(super) struct Keys {
    prefix: String,
    index_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The keyed hash of one subject, e.g. a destination: its first two bytes
/// pick the shard.
#[derive(Clone, Copy)]
pub(super) struct Digest([u8; 16]);

impl Digest {
    pub(super) fn shard(self) -> [u8; 2] {
        [self.0[0], self.0[1]]
    }

    fn tag(self) -> String {
        hex::encode(self.shard())
    }

    fn hex(self) -> String {
        hex::encode(self.0)
    }
}

impl Keys {
    /// `secret` is `store.redis.index_key`; the key that hashes is derived
    /// from it, so the secret itself is used for nothing else.
    pub(super) fn new(prefix: &str, secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(INDEX_KEY_LABEL.as_bytes());
        Self {
            prefix: prefix.to_owned(),
            index_key: mac.finalize().into_bytes().into(),
        }
    }

    /// `kind` keeps the subjects apart: a destination and an IP address
    /// with the same spelling never share a digest.
    fn digest(&self, kind: &str, tenant: &TenantId, subject: &str) -> Digest {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.index_key).expect("HMAC accepts any key length");
        for part in [kind, tenant.as_str(), subject] {
            mac.update(part.as_bytes());
            // None of the parts can contain a NUL, so the framing is
            // unambiguous.
            mac.update(b"\0");
        }
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        Digest(digest)
    }

    pub(super) fn destination(&self, tenant: &TenantId, to: &Destination) -> Digest {
        self.digest("destination", tenant, to.as_str())
    }

    /// Where this tenant's verifications in a shard live:
    /// `prefix:{ssss}:tenant:`.
    pub(super) fn base(&self, shard: &str, tenant: &TenantId) -> String {
        format!("{}:{{{shard}}}:{}:", self.prefix, tenant.as_str())
    }

    /// The verification's hash and its attempts list.
    pub(super) fn verification(&self, tenant: &TenantId, id: &VerificationId) -> [String; 2] {
        let base = self.base(id.shard(), tenant);
        [format!("{base}v:{id}"), format!("{base}a:{id}")]
    }

    /// The one pending verification per (tenant, destination, kind). An
    /// extension's keys extend the name, hashed with the destination as
    /// the destination is, within the destination's hash tag.
    pub(super) fn pending(
        &self,
        tenant: &TenantId,
        to: &Destination,
        kind: PendingKind<'_>,
    ) -> String {
        let digest = self.destination(tenant, to);
        let mut key = format!(
            "{}p:{}:{}",
            self.base(&digest.tag(), tenant),
            digest.hex(),
            kind.purpose.as_str()
        );
        if let Some(keys) = kind.extension {
            let extension = self.digest("extension", tenant, &format!("{} {keys}", to.as_str()));
            key.push_str(":x");
            key.push_str(&extension.hex());
        }
        key
    }

    /// The destination's latest new verifications, whatever their purpose,
    /// for the least gap between them: a hash of `last` (ms) and `count`.
    pub(super) fn recent_starts(&self, tenant: &TenantId, to: &Destination) -> String {
        let digest = self.destination(tenant, to);
        format!("{}s:{}", self.base(&digest.tag(), tenant), digest.hex())
    }

    /// A destination's recent verifications, for the operators' listing:
    /// ids by creation time, in the destination's slot.
    pub(super) fn history(&self, tenant: &TenantId, to: &Destination) -> String {
        let digest = self.destination(tenant, to);
        format!("{}h:{}", self.base(&digest.tag(), tenant), digest.hex())
    }

    /// A tenant's safe-list: one set, in the tenant's own slot.
    pub(super) fn safe_list(&self, tenant: &TenantId) -> String {
        let slot = self.digest("tenant", tenant, "");
        format!("{}safe", self.base(&slot.tag(), tenant))
    }

    /// A safe-list entry as the set holds it: keyed hashes, so a dump
    /// shows no number (a "prefix" may be a whole number too).
    pub(super) fn safe_list_member(&self, tenant: &TenantId, entry: SafeListed<'_>) -> String {
        match entry {
            SafeListed::Number(to) => format!("n:{}", self.destination(tenant, to).hex()),
            SafeListed::Prefix(prefix) => {
                format!("p:{}", self.digest("safe_prefix", tenant, prefix).hex())
            }
        }
    }

    /// A number's cached lookup signals, in the number's slot.
    pub(super) fn lookup(&self, tenant: &TenantId, to: &Destination) -> String {
        let digest = self.destination(tenant, to);
        format!("{}lk:{}", self.base(&digest.tag(), tenant), digest.hex())
    }

    /// A destination's block shares the destination's hash tag; a
    /// prefix's has its own.
    pub(super) fn block(&self, tenant: &TenantId, what: Blocked<'_>) -> String {
        let digest = match what {
            Blocked::Destination(to) => self.destination(tenant, to),
            Blocked::Prefix(prefix) => self.digest("prefix", tenant, prefix),
        };
        format!("{}b:{}", self.base(&digest.tag(), tenant), digest.hex())
    }

    pub(super) fn idempotency(&self, tenant: &TenantId, key: &str) -> String {
        let digest = self.digest("idempotency", tenant, key);
        format!("{}i:{}", self.base(&digest.tag(), tenant), digest.hex())
    }

    /// A shared rate-limit budget: `limit` names it, `subject` is what it
    /// counts (a destination, an IP block).
    pub(super) fn budget(&self, limit: &str, tenant: &TenantId, subject: &str) -> String {
        let digest = self.digest(limit, tenant, subject);
        self.budget_in(digest, limit, tenant, digest)
    }

    /// One of a tenant's own budgets. They share the tenant's slot, so a
    /// send takes all of its tenant's cells in one script.
    pub(super) fn tenant_budget(&self, limit: &str, tenant: &TenantId) -> String {
        let slot = self.digest("tenant", tenant, "");
        self.budget_in(
            slot,
            limit,
            tenant,
            self.digest(limit, tenant, tenant.as_str()),
        )
    }

    /// A budget per destination (its starts, its failed checks). Unlike
    /// the other budgets it carries the destination's hash tag, so the
    /// reserve and check scripts take from it in the verification's slot.
    pub(super) fn destination_budget(
        &self,
        limit: &str,
        tenant: &TenantId,
        to: &Destination,
    ) -> String {
        let digest = self.digest(limit, tenant, to.as_str());
        self.budget_in(self.destination(tenant, to), limit, tenant, digest)
    }

    /// A budget's key, named by `digest` and placed in `slot`'s shard.
    fn budget_in(&self, slot: Digest, limit: &str, tenant: &TenantId, digest: Digest) -> String {
        format!(
            "{}rl:{limit}:{}",
            self.base(&slot.tag(), tenant),
            digest.hex()
        )
    }

    /// The deadline index of one hash tag (prelude.lua's
    /// `index_deadline` names it from a verification's key).
    pub(super) fn deadlines(&self, tag: u16) -> String {
        self.deadlines_in(&hex::encode(tag.to_be_bytes()))
    }

    /// The deadline index of the shard `ssss` (a verification id's).
    pub(super) fn deadlines_in(&self, shard: &str) -> String {
        format!("{}:{{{shard}}}:deadlines", self.prefix)
    }

    /// The leases of the deadline index's buckets, and the replicas alive
    /// that share them (deadlines_lease.lua): one slot for both.
    pub(super) fn deadline_leases(&self) -> [String; 2] {
        [
            format!("{}:{{deadlines}}:leases", self.prefix),
            format!("{}:{{deadlines}}:replicas", self.prefix),
        ]
    }

    /// The pub/sub channel a verification's changes are published on.
    pub(super) fn watch(&self, tenant: &TenantId, id: &VerificationId) -> String {
        format!("{}:watch:{}:{id}", self.prefix, tenant.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Purpose;

    #[test]
    fn a_verification_and_its_pending_slot_share_a_hash_tag_and_hide_the_destination() {
        let keys = Keys::new("verifyd", &[7; 32]);
        let tenant = TenantId::default_tenant();
        let to = Destination::parse("+14155550100").expect("valid");
        let id = VerificationId::generate_in(keys.destination(&tenant, &to).shard());
        fn kind(extension: Option<&str>) -> PendingKind<'_> {
            PendingKind {
                purpose: Purpose::Enrollment,
                extension,
            }
        }
        let pending = keys.pending(&tenant, &to, kind(None));
        let desk = keys.pending(&tenant, &to, kind(Some("4711")));
        assert_ne!(desk, pending, "an extension has a slot of its own");
        assert_ne!(desk, keys.pending(&tenant, &to, kind(Some("4712"))));
        assert!(!desk.contains("4711"), "{desk}");
        let [hash, attempts] = keys.verification(&tenant, &id);
        let tag =
            |key: &str| key[key.find('{').expect("tag")..=key.find('}').expect("tag")].to_owned();
        assert_eq!(tag(&pending), tag(&hash));
        assert_eq!(tag(&desk), tag(&hash));
        assert_eq!(tag(&hash), tag(&attempts));
        assert_eq!(
            tag(&keys.block(&tenant, Blocked::Destination(&to))),
            tag(&hash)
        );
        let check_budget = keys.destination_budget("failed_checks_per_destination", &tenant, &to);
        assert_eq!(tag(&check_budget), tag(&hash));
        let start_budget = keys.destination_budget("starts_per_destination", &tenant, &to);
        assert_eq!(tag(&start_budget), tag(&hash));
        for key in [
            &pending,
            &hash,
            &keys.block(&tenant, Blocked::Destination(&to)),
            &check_budget,
            &start_budget,
        ] {
            assert!(!key.contains("4155550100"), "{key}");
        }
        let other = TenantId::parse("other").expect("valid");
        assert_ne!(
            keys.destination(&tenant, &to).hex(),
            keys.destination(&other, &to).hex(),
            "tenants cannot correlate destinations"
        );
    }
}
