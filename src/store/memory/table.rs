//! The memory store's verifications: records in one slab, found by id,
//! while pending by (tenant, destination, purpose), and as the latest new
//! verification of (tenant, destination), with one queue of deadlines (each
//! verification's expiry, then the end of its retention) and one of
//! fallback steps.
//!
//! The indexes hold 4-byte slots rather than copies of their keys: a
//! lookup hashes the key it was given and compares against the record the
//! slot names. So a pending verification costs its record plus a few
//! dozen bytes of index and queue, where a map per index cost a key, a
//! value and spare capacity each.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{BuildHasher, RandomState},
};

use hashbrown::HashTable;
use slab::Slab;

use super::record::{Record, Stamp};
use crate::domain::{Destination, PendingKind, TenantId};

/// Where a record lives in the slab.
pub(super) type Slot = u32;

/// The most records a table holds: slots are 4 bytes.
pub(super) const MAX_RECORDS: usize = Slot::MAX as usize;

/// A time at which a record's slot has something due. `tag` is the low
/// bits of the record's id: a slot freed and reused holds another record,
/// and the entries its first record left are then skipped. (A tag that
/// matches by chance, one in 2^32, only makes the new record's deadline
/// be looked at once more than needed: what is due is always decided
/// against the record's own times.)
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at: Stamp,
    slot: Slot,
    tag: u32,
}

#[derive(Debug, Default)]
pub(super) struct Table {
    records: Slab<Record>,
    by_id: HashTable<Slot>,
    /// The one pending verification per (tenant, destination, purpose).
    pending: HashTable<Slot>,
    /// The latest new verification per (tenant, destination): its creation
    /// time and run count are the destination's recent starts, for the
    /// least gap. Dropped with the record, after its retention.
    latest: HashTable<Slot>,
    deadlines: BinaryHeap<Reverse<Deadline>>,
    /// When fallback steps fall due. An entry is pushed each time a
    /// record's next step moves; one whose record has moved on since is
    /// skipped when it comes up.
    steps: BinaryHeap<Reverse<Deadline>>,
    /// How many records each tenant holds, for its share of the store.
    per_tenant: HashMap<TenantId, usize>,
    /// SipHash with a key of this process's: destinations are the callers'
    /// choice, so the pending index must resist hash flooding (ids are
    /// random, but share the hasher rather than need a reason not to).
    hasher: RandomState,
}

fn id_hash(hasher: &RandomState, id: u128) -> u64 {
    hasher.hash_one(id)
}

fn pending_hash(
    hasher: &RandomState,
    tenant: &TenantId,
    to: &Destination,
    kind: PendingKind<'_>,
) -> u64 {
    hasher.hash_one((tenant, to, kind))
}

fn record_pending_hash(hasher: &RandomState, r: &Record) -> u64 {
    pending_hash(hasher, &r.tenant, &r.to, r.pending_kind())
}

fn destination_hash(hasher: &RandomState, tenant: &TenantId, to: &Destination) -> u64 {
    hasher.hash_one((tenant, to))
}

fn index(slot: Slot) -> usize {
    slot as usize
}

fn tag(record: &Record) -> u32 {
    // The low 32 of the id's 128 random bits.
    record.id() as u32
}

impl Table {
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// The records `tenant` holds.
    pub(super) fn tenant_len(&self, tenant: &TenantId) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// The slot of verification `id`, if it is the tenant's.
    pub(super) fn find(&self, tenant: &TenantId, id: u128) -> Option<Slot> {
        let records = &self.records;
        let slot = *self
            .by_id
            .find(id_hash(&self.hasher, id), |&s| records[index(s)].id() == id)?;
        (records[index(slot)].tenant == *tenant).then_some(slot)
    }

    /// The slot of the pending verification of this kind for (tenant, to).
    pub(super) fn pending(
        &self,
        tenant: &TenantId,
        to: &Destination,
        kind: PendingKind<'_>,
    ) -> Option<Slot> {
        let records = &self.records;
        let hash = pending_hash(&self.hasher, tenant, to, kind);
        self.pending
            .find(hash, |&s| {
                let r = &records[index(s)];
                r.tenant == *tenant && r.to == *to && r.pending_kind() == kind
            })
            .copied()
    }

    /// The slot of the latest new verification of (tenant, to), if it is
    /// still held.
    pub(super) fn latest(&self, tenant: &TenantId, to: &Destination) -> Option<Slot> {
        let records = &self.records;
        let hash = destination_hash(&self.hasher, tenant, to);
        self.latest
            .find(hash, |&s| {
                let r = &records[index(s)];
                r.tenant == *tenant && r.to == *to
            })
            .copied()
    }

    /// Every record held.
    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().map(|(_, r)| r)
    }

    pub(super) fn get(&self, slot: Slot) -> &Record {
        &self.records[index(slot)]
    }

    pub(super) fn get_mut(&mut self, slot: Slot) -> &mut Record {
        &mut self.records[index(slot)]
    }

    /// Adds a pending verification: indexed by id, as its destination's
    /// pending one and as its latest new one, with its expiry queued.
    /// Returns its slot and whether its expiry is now the earliest
    /// deadline.
    ///
    /// # Panics
    /// When the table already holds [`MAX_RECORDS`]; the store refuses
    /// starts (full) well before.
    pub(super) fn insert(&mut self, record: Record) -> (Slot, bool) {
        let by_id = id_hash(&self.hasher, record.id());
        let pending = record_pending_hash(&self.hasher, &record);
        let destination = destination_hash(&self.hasher, &record.tenant, &record.to);
        if let Some(previous) = self.latest(&record.tenant, &record.to)
            && let Ok(entry) = self.latest.find_entry(destination, |&s| s == previous)
        {
            entry.remove();
        }
        let expires_at = record.expires_at;
        *self.per_tenant.entry(record.tenant.clone()).or_default() += 1;
        let slot = Slot::try_from(self.records.insert(record)).expect("the store caps its records");
        let (records, hasher) = (&self.records, &self.hasher);
        self.by_id
            .insert_unique(by_id, slot, |&s| id_hash(hasher, records[index(s)].id()));
        self.pending.insert_unique(pending, slot, |&s| {
            record_pending_hash(hasher, &records[index(s)])
        });
        self.latest.insert_unique(destination, slot, |&s| {
            let r = &records[index(s)];
            destination_hash(hasher, &r.tenant, &r.to)
        });
        let step_at = self.records[index(slot)].next_step_at();
        let mut earliest = self.schedule(slot, expires_at);
        if let Some(at) = step_at {
            earliest |= self.schedule_step(slot, at);
        }
        (slot, earliest)
    }

    /// Frees the (tenant, destination, purpose) slot once its verification
    /// has finished, so the next start creates a new verification.
    pub(super) fn unindex_pending(&mut self, slot: Slot) {
        let hash = record_pending_hash(&self.hasher, &self.records[index(slot)]);
        if let Ok(entry) = self.pending.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
    }

    /// Drops a record and its index entries; its queued deadlines are
    /// skipped when they come up.
    pub(super) fn remove(&mut self, slot: Slot) {
        self.unindex_pending(slot);
        let record = &self.records[index(slot)];
        let hash = id_hash(&self.hasher, record.id());
        let destination = destination_hash(&self.hasher, &record.tenant, &record.to);
        if let Ok(entry) = self.by_id.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        if let Ok(entry) = self.latest.find_entry(destination, |&s| s == slot) {
            entry.remove();
        }
        let record = self.records.remove(index(slot));
        if let Some(held) = self.per_tenant.get_mut(&record.tenant) {
            debug_assert!(*held > 0, "a tenant's count follows its records");
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.per_tenant.remove(&record.tenant);
            }
        }
    }

    /// Queues a deadline for `slot`. Returns whether it is now the earliest.
    pub(super) fn schedule(&mut self, slot: Slot, at: Stamp) -> bool {
        let earliest = self.deadlines.peek().is_none_or(|Reverse(d)| at < d.at);
        let tag = tag(&self.records[index(slot)]);
        self.deadlines.push(Reverse(Deadline { at, slot, tag }));
        earliest
    }

    /// Queues a fallback step for `slot`. Returns whether it is now the
    /// earliest deadline.
    pub(super) fn schedule_step(&mut self, slot: Slot, at: Stamp) -> bool {
        let earliest = self.next_deadline().is_none_or(|next| at < next);
        let tag = tag(&self.records[index(slot)]);
        self.steps.push(Reverse(Deadline { at, slot, tag }));
        earliest
    }

    pub(super) fn next_deadline(&self) -> Option<Stamp> {
        let expiry = self.deadlines.peek().map(|Reverse(d)| d.at);
        let step = self.steps.peek().map(|Reverse(d)| d.at);
        match (expiry, step) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the earliest fallback step if it is due at `now`, and returns
    /// the slot it is for, as [`Self::pop_due`] does.
    pub(super) fn pop_due_step(&mut self, now: Stamp) -> Option<Slot> {
        Self::pop_from(&mut self.steps, &self.records, now)
    }

    /// Takes the earliest deadline if it is due at `now`, and returns the
    /// slot it is for. Deadlines left by removed records are dropped on the
    /// way.
    pub(super) fn pop_due(&mut self, now: Stamp) -> Option<Slot> {
        Self::pop_from(&mut self.deadlines, &self.records, now)
    }

    fn pop_from(
        queue: &mut BinaryHeap<Reverse<Deadline>>,
        records: &Slab<Record>,
        now: Stamp,
    ) -> Option<Slot> {
        while queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(d) = queue.pop()?;
            if records.get(index(d.slot)).is_some_and(|r| tag(r) == d.tag) {
                return Some(d.slot);
            }
        }
        None
    }

    /// How many deadlines are queued, for tests.
    #[cfg(test)]
    pub(super) fn deadlines(&self) -> usize {
        self.deadlines.len() + self.steps.len()
    }
}
