//! Shared deadlines: every verification's expiry is announced (its
//! `expired` audit event, its live call ended) by some replica, even after
//! the one that sent its code is gone.
//!
//! - **The index.** The scripts keep one sorted set per hash tag (65,536,
//!   shared by all tenants), in the verifications' own slot: "id tenant"
//!   scored by `expires_at` while the verification may expire
//!   (prelude.lua's `index_deadline`), written in the same step as the
//!   verification.
//! - **Buckets by lease.** The tags are read in [`BUCKETS`] buckets, which
//!   the replicas alive share fairly by lease (deadlines_lease.lua). Each
//!   replica renews its buckets and reads all their tags every
//!   [`SCAN_EVERY`]; a replica's buckets pass to the others once its leases
//!   lapse ([`LEASE`]). So each tag is read at least every
//!   `SCAN_EVERY + LEASE` (30 s), whichever replica is lost, and every
//!   `SCAN_EVERY` (10 s) while none is.
//! - **Claims.** A due entry is claimed (scored at now + [`CLAIM`]) and
//!   removed only once its expiry was announced (deadlines_release.lua),
//!   unless its expiry moved meanwhile; a replica that dies in between
//!   leaves it due again when the claim runs out. An expiry may so be
//!   announced twice, never not at all.
//!
//! Times are the service clock's, as everywhere in the store: the leases
//! and claims are decided against the `now` each script is given.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use rand::{RngCore as _, TryRngCore as _};

use super::{
    RedisStore,
    record::{millis, millis_of},
    scripts::{Invocation, SCRIPTS},
};
use crate::{
    domain::{TenantId, VerificationId},
    store::port::{DeadlineClaim, DueExpiry, StoreError},
};

/// How often each replica renews its buckets and reads their tags.
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(10);
/// How long a bucket stays a replica's without a renewal: two scans, so
/// one late scan does not lose it.
const LEASE: Duration = Duration::from_secs(20);
/// How long a claimed entry waits for its announcement before another
/// replica may claim it.
const CLAIM: Duration = Duration::from_secs(30);
/// The buckets the 65,536 tags are read in, 256 tags each.
const BUCKETS: u16 = 256;
const TAGS_PER_BUCKET: u16 = 256;
/// The most entries one tag gives per scan; the rest wait for the next.
const CLAIMS_PER_TAG: u32 = 100;

/// This replica's part in the shared deadlines.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// Names this replica in the leases.
    owner: String,
    /// When the next scan is due (the epoch: at once).
    next_scan: Mutex<SystemTime>,
}

impl Deadlines {
    pub(super) fn new() -> Self {
        let mut id = [0u8; 8];
        rand::rngs::OsRng.unwrap_err().fill_bytes(&mut id);
        Self {
            owner: hex::encode(id),
            next_scan: Mutex::new(SystemTime::UNIX_EPOCH),
        }
    }

    pub(super) fn next_scan(&self) -> SystemTime {
        *self
            .next_scan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a scan is due at `now`; if so, the next one is scheduled.
    fn scan_due(&self, now: SystemTime) -> bool {
        let mut next = self
            .next_scan
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if now < *next {
            return false;
        }
        *next = now + SCAN_EVERY;
        true
    }
}

impl RedisStore {
    /// When the next scan of the deadline index is due.
    pub(in crate::store) fn next_deadline(&self) -> SystemTime {
        self.inner.deadlines.next_scan()
    }

    /// The expiries due at `now` in this replica's buckets, claimed, when
    /// a scan is due (else none).
    pub(in crate::store) async fn expire_due(
        &self,
        now: SystemTime,
    ) -> Result<Vec<DueExpiry>, StoreError> {
        if !self.inner.deadlines.scan_due(now) {
            return Ok(Vec::new());
        }
        let mut due = Vec::new();
        for bucket in self.lease_buckets(now).await? {
            // A bucket's tags are read at once: the connection pipelines
            // the reads (on a cluster, each to its tag's node).
            let first = bucket.saturating_mul(TAGS_PER_BUCKET);
            let mut peeks = tokio::task::JoinSet::new();
            for tag in first..first.saturating_add(TAGS_PER_BUCKET) {
                let store = self.clone();
                peeks.spawn(async move { store.peek(tag, now).await });
            }
            let waiting: Vec<u16> = peeks.join_all().await.into_iter().flatten().collect();
            for tag in waiting {
                due.extend(self.claim(tag, now).await?);
            }
        }
        Ok(due)
    }

    /// Releases an announced expiry's claim.
    pub(in crate::store) async fn release(&self, claim: &DeadlineClaim) -> Result<(), StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.deadlines_release);
        invocation
            .key(&claim.index)
            .arg(&claim.entry)
            .arg(claim.score);
        self.run::<u8>("deadlines_release", invocation)
            .await
            .map(drop)
    }

    /// Renews this replica's fair share of the buckets: the ones it holds.
    async fn lease_buckets(&self, now: SystemTime) -> Result<Vec<u16>, StoreError> {
        let [leases, replicas] = self.inner.keys.deadline_leases();
        let mut invocation = Invocation::of(&SCRIPTS.deadlines_lease);
        invocation
            .key(leases)
            .key(replicas)
            .arg(&self.inner.deadlines.owner)
            .arg(millis(now))
            .arg(millis_of(LEASE))
            .arg(BUCKETS);
        self.run("deadlines_lease", invocation).await
    }

    /// `Some(tag)` when the tag's index has an entry due at `now` (a
    /// plain read: most have none). A tag that cannot be read is read at
    /// the next scan.
    async fn peek(&self, tag: u16, now: SystemTime) -> Option<u16> {
        let mut command = redis::cmd("ZRANGEBYSCORE");
        command
            .arg(self.inner.keys.deadlines(tag))
            .arg("-inf")
            .arg(millis(now))
            .arg("LIMIT")
            .arg(0)
            .arg(1);
        let due: Vec<String> = self.query("deadlines_peek", &command).await.ok()?;
        (!due.is_empty()).then_some(tag)
    }

    /// Claims the tag's due entries.
    async fn claim(&self, tag: u16, now: SystemTime) -> Result<Vec<DueExpiry>, StoreError> {
        let index = self.inner.keys.deadlines(tag);
        let mut invocation = Invocation::of(&SCRIPTS.deadlines_claim);
        invocation
            .key(&index)
            .arg(millis(now))
            .arg(millis_of(CLAIM))
            .arg(CLAIMS_PER_TAG);
        let (score, entries): (u64, Vec<String>) = self.run("deadlines_claim", invocation).await?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| {
                let (id, tenant) = entry.split_once(' ')?;
                let (id, tenant) = (VerificationId::parse(id)?, TenantId::parse(tenant)?);
                Some(DueExpiry {
                    tenant,
                    id,
                    claim: Some(DeadlineClaim {
                        index: index.clone(),
                        entry,
                        score,
                    }),
                })
            })
            .collect())
    }
}
