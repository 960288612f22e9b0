//! What operators read and change: each tenant's safe-list, shared by
//! every replica (one set in the tenant's slot, `safe`, of keyed hashes:
//! `keys::safe_list_member`), and a destination's recent verifications
//! (its history, `h:DIGEST`, which create.lua keeps).

use std::{collections::HashSet, time::SystemTime};

use super::RedisStore;
use crate::{
    domain::{Destination, TenantId, Verification, VerificationId},
    store::port::{SafeListed, StoreError},
};

impl RedisStore {
    pub(in crate::store) fn safe_list_member(
        &self,
        tenant: &TenantId,
        entry: SafeListed<'_>,
    ) -> String {
        self.inner.keys.safe_list_member(tenant, entry)
    }

    /// Adds (`true`) or removes (`false`) an entry; whether that changed
    /// the list.
    pub(in crate::store) async fn set_safe_listed(
        &self,
        tenant: &TenantId,
        entry: SafeListed<'_>,
        listed: bool,
    ) -> Result<bool, StoreError> {
        let mut command = redis::cmd(if listed { "SADD" } else { "SREM" });
        command
            .arg(self.inner.keys.safe_list(tenant))
            .arg(self.safe_list_member(tenant, entry));
        let changed: u32 = self.query("safe_list_change", &command).await?;
        Ok(changed == 1)
    }

    pub(in crate::store) async fn safe_list(
        &self,
        tenant: &TenantId,
    ) -> Result<HashSet<String>, StoreError> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(self.inner.keys.safe_list(tenant));
        self.query("safe_list", &command).await
    }
}

impl RedisStore {
    /// The destination's newest verifications, newest first, at most
    /// `limit`, from its history (create.lua); those past their retention
    /// are left out.
    pub(in crate::store) async fn recent_of(
        &self,
        tenant: &TenantId,
        to: &Destination,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<Verification>, StoreError> {
        let mut command = redis::cmd("ZREVRANGE");
        command
            .arg(self.inner.keys.history(tenant, to))
            .arg(0)
            .arg(limit.saturating_sub(1));
        let ids: Vec<String> = self.query("history", &command).await?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids.iter().filter_map(|id| VerificationId::parse(id)) {
            if let Some(v) = self.read(tenant, &id, now).await? {
                found.push(v);
            }
        }
        Ok(found)
    }
}
