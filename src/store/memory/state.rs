//! What the memory store's lock guards: the verifications, idempotency
//! records and blocks, and the queue that drops the latter two on time.

use std::{
    collections::{BTreeSet, HashMap},
    time::SystemTime,
};

use super::{record::Names, table::Table};
use crate::{
    domain::{TenantId, Verification},
    store::port::{Blocked, Fingerprint},
};

pub(super) type IdempotencyKey = (TenantId, String);

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) verifications: Table,
    pub(super) names: Names,
    pub(super) idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// How many idempotency records each tenant holds, for its share.
    pub(super) idempotency_per_tenant: HashMap<TenantId, usize>,
    /// Destinations blocked after a fraud report, per tenant, until when.
    pub(super) blocks: HashMap<(TenantId, String), SystemTime>,
    /// Idempotency records and blocks by the time they may be dropped. A
    /// record's time can move later, so a popped entry that is not yet due
    /// is queued again rather than kept in step on every write.
    pub(super) purge_queue: BTreeSet<(SystemTime, Purgeable)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Purgeable {
    Idempotency(TenantId, String),
    Block(TenantId, String),
}

#[derive(Debug)]
pub(super) struct IdempotencyRecord {
    pub(super) fingerprint: Fingerprint,
    pub(super) state: IdempotencyState,
    pub(super) expires_at: SystemTime,
    /// Where this record stands in the purge queue, so dropping the record
    /// drops its entry too.
    pub(super) queued_at: SystemTime,
}

#[derive(Debug)]
pub(super) enum IdempotencyState {
    InFlight { lease_until: SystemTime },
    Done(Box<Verification>),
}

impl State {
    /// When `what` is blocked until for the tenant, if it still is.
    pub(super) fn blocked_until(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Option<SystemTime> {
        self.blocks
            .get(&(tenant.clone(), what.subject()))
            .copied()
            .filter(|until| *until > now)
    }

    /// Drops an idempotency record, and counts it out of its tenant's.
    pub(super) fn drop_idempotency(&mut self, key: &IdempotencyKey) {
        if self.idempotency.remove(key).is_none() {
            return;
        }
        if let Some(held) = self.idempotency_per_tenant.get_mut(&key.0) {
            debug_assert!(*held > 0, "a tenant's count follows its records");
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.idempotency_per_tenant.remove(&key.0);
            }
        }
    }
}
