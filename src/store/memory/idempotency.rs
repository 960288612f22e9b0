//! Idempotency records: a start with a key runs once; a retry with the
//! same key gets its answer again.

use std::{collections::hash_map::Entry, time::SystemTime};

use super::{
    MemoryStore,
    state::{IdempotencyRecord, IdempotencyState, Purgeable},
};
use crate::{
    domain::{TenantId, Verification},
    store::port::{Fingerprint, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, Idempotency, StoreError},
};

impl MemoryStore {
    pub(in crate::store) fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Result<Idempotency, StoreError> {
        let mut state = self.state();
        let entries = state.idempotency.len();
        let state = &mut *state;
        match state.idempotency.entry((tenant.clone(), key.to_owned())) {
            Entry::Occupied(mut entry) => {
                let record = entry.get_mut();
                if record.expires_at <= now {
                    // Past its window: the key is free again.
                    *record = new_in_flight(fingerprint, now, record.queued_at);
                    return Ok(Idempotency::Started);
                }
                if record.fingerprint != fingerprint {
                    return Ok(Idempotency::Mismatch);
                }
                match &record.state {
                    IdempotencyState::Done(v) => Ok(Idempotency::Replay(v.clone())),
                    IdempotencyState::InFlight { lease_until } if *lease_until > now => {
                        Ok(Idempotency::InFlight)
                    }
                    IdempotencyState::InFlight { .. } => {
                        *record = new_in_flight(fingerprint, now, record.queued_at);
                        Ok(Idempotency::Started)
                    }
                }
            }
            Entry::Vacant(entry) => {
                let held = state
                    .idempotency_per_tenant
                    .entry(tenant.clone())
                    .or_default();
                if entries >= self.max_entries || *held >= self.per_tenant {
                    return Err(StoreError::Full);
                }
                let expires_at = now + IDEMPOTENCY_WINDOW;
                let record = new_in_flight(fingerprint, now, expires_at);
                state.purge_queue.insert((
                    expires_at,
                    Purgeable::Idempotency(tenant.clone(), key.to_owned()),
                ));
                entry.insert(record);
                *held += 1;
                Ok(Idempotency::Started)
            }
        }
    }

    pub(in crate::store) fn finish_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &Verification,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(record) = state.idempotency.get_mut(&(tenant.clone(), key.to_owned())) {
            record.state = IdempotencyState::Done(Box::new(response.clone()));
            record.expires_at = now + IDEMPOTENCY_WINDOW;
        }
        Ok(())
    }

    pub(in crate::store) fn abandon_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (tenant.clone(), key.to_owned());
        if let Some(IdempotencyRecord {
            state: IdempotencyState::InFlight { .. },
            queued_at,
            ..
        }) = state.idempotency.get(&key)
        {
            let queued = (
                *queued_at,
                Purgeable::Idempotency(key.0.clone(), key.1.clone()),
            );
            state.purge_queue.remove(&queued);
            state.drop_idempotency(&key);
        }
        Ok(())
    }
}

fn new_in_flight(
    fingerprint: Fingerprint,
    now: SystemTime,
    queued_at: SystemTime,
) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint,
        state: IdempotencyState::InFlight {
            lease_until: now + IDEMPOTENCY_LEASE,
        },
        expires_at: now + IDEMPOTENCY_WINDOW,
        queued_at,
    }
}
