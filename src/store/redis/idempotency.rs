//! Idempotency records, one per (tenant, key), each changed by a script.

use std::time::SystemTime;

use redis::FromRedisValue;

use super::{
    RedisStore, record,
    record::{decode, millis, millis_of},
    scripts::{Invocation, SCRIPTS},
};
use crate::{
    domain::{TenantId, Verification},
    store::port::{Fingerprint, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, Idempotency, StoreError},
};

impl RedisStore {
    pub(in crate::store) async fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Result<Idempotency, StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.idempotency_begin);
        invocation
            .key(self.inner.keys.idempotency(tenant, key))
            .arg(millis(now))
            .arg(hex::encode(fingerprint))
            .arg(millis_of(IDEMPOTENCY_LEASE))
            .arg(millis_of(IDEMPOTENCY_WINDOW));
        let reply: redis::Value = self.run("idempotency_begin", invocation).await?;
        let bad = || StoreError::Unavailable("unexpected reply from the idempotency script".into());
        if let Ok((word, response)) = <(String, String)>::from_redis_value(reply.clone()) {
            return match word.as_str() {
                "replay" => Ok(Idempotency::Replay(Box::new(decode(&response)?))),
                _ => Err(bad()),
            };
        }
        match String::from_redis_value(reply).map_err(|_| bad())?.as_str() {
            "started" => Ok(Idempotency::Started),
            "mismatch" => Ok(Idempotency::Mismatch),
            "in_flight" => Ok(Idempotency::InFlight),
            _ => Err(bad()),
        }
    }

    pub(in crate::store) async fn finish_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &Verification,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.idempotency_finish);
        invocation
            .key(self.inner.keys.idempotency(tenant, key))
            .arg(millis(now))
            .arg(record::to_json(response))
            .arg(millis_of(IDEMPOTENCY_WINDOW));
        self.run::<u8>("idempotency_finish", invocation)
            .await
            .map(drop)
    }

    pub(in crate::store) async fn abandon_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.idempotency_abandon);
        invocation.key(self.inner.keys.idempotency(tenant, key));
        self.run::<u8>("idempotency_abandon", invocation)
            .await
            .map(drop)
    }
}
