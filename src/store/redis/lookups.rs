//! The lookup cache, shared by every replica: a number's signals as JSON
//! under its tenant and keyed hash (`lk:DIGEST`, never the number), with
//! the cache's life as the key's.

use std::time::Duration;

use super::{RedisStore, record::millis_of};
use crate::{
    domain::{Destination, TenantId, lookup::Signals},
    store::port::StoreError,
};

impl RedisStore {
    pub(in crate::store) async fn cached_lookup(
        &self,
        tenant: &TenantId,
        to: &Destination,
    ) -> Result<Option<Signals>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.inner.keys.lookup(tenant, to));
        let cached: Option<String> = self.query("lookup_cached", &get).await?;
        // An entry this version cannot read is no entry: the lookup runs.
        Ok(cached.and_then(|json| serde_json::from_str(&json).ok()))
    }

    pub(in crate::store) async fn cache_lookup(
        &self,
        tenant: &TenantId,
        to: &Destination,
        signals: &Signals,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.inner.keys.lookup(tenant, to))
            .arg(serde_json::to_string(signals).expect("signals always serialize"))
            .arg("PX")
            .arg(millis_of(ttl).max(1));
        self.query::<()>("lookup_cache", &set).await
    }
}
