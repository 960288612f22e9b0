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
//!   replica renews its buckets, then reads all their tags, every
//!   [`SCAN_EVERY`]; a replica's buckets pass to the others once its leases
//!   lapse ([`LEASE`]), or at once when it stops. So each tag is read at
//!   least every `2 × SCAN_EVERY + LEASE` (40 s: read, renewed, then the
//!   replica lost), whichever replica is lost, and every `SCAN_EVERY`
//!   (10 s) while none is.
//! - **Reads.** On one Redis (standalone or Sentinel), one script per
//!   bucket reads and claims its 256 tags; on a cluster, where each tag is
//!   in its own slot, each tag is read alone and claimed by a script of
//!   its own when it has anything due. A scan hands back one bucket's
//!   expiries at a time, so each is announced well within its claim.
//! - **Claims.** A due entry is claimed (scored at now + [`CLAIM`]) and
//!   removed only once its expiry was announced (deadlines_release.lua),
//!   unless its expiry moved meanwhile; a replica that dies in between
//!   leaves it due again when the claim runs out. An expiry may so be
//!   announced twice, never not at all.
//!
//! Times are the service clock's, as everywhere in the store: the leases
//! and claims are decided against the `now` each script is given.

use std::time::{Duration, SystemTime};

use super::{
    RedisStore, evaluate,
    record::{millis, millis_of},
    scripts::{Invocation, SCRIPTS},
};
use crate::{
    domain::{TenantId, VerificationId},
    store::port::{DeadlineClaim, DueDeadline, StoreError},
    telemetry::LogThrottle,
};

/// How often each replica renews its buckets and reads their tags.
const SCAN_EVERY: Duration = Duration::from_secs(10);
/// How long a bucket stays a replica's without a renewal: two scans, so
/// one late scan does not lose it.
const LEASE: Duration = Duration::from_secs(20);
/// How long a claimed entry waits for its announcement before another
/// replica may claim it.
const CLAIM: Duration = Duration::from_secs(30);
/// The buckets the 65,536 tags are read in, 256 tags each.
const BUCKETS: u32 = 256;
const TAGS_PER_BUCKET: u32 = 256;
/// The most entries one tag gives per scan; the rest wait for the next.
const CLAIMS_PER_TAG: u32 = 100;
/// How many tags a cluster scan reads at once.
const READS_AT_ONCE: usize = 32;

/// Failed reads are logged once a minute; the next scan reads again.
static FAILED_READS: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// The tags of one bucket.
fn tags_of(bucket: u32) -> impl Iterator<Item = u16> {
    let first = bucket * TAGS_PER_BUCKET;
    (first..first + TAGS_PER_BUCKET).filter_map(|tag| u16::try_from(tag).ok())
}

impl RedisStore {
    /// When the deadline index is next to be read: at once while a scan
    /// is under way, else at the next scan.
    pub(in crate::store) fn next_deadline(&self) -> SystemTime {
        let scan = self.inner.deadlines.scan();
        match scan.next {
            Some(next) if scan.left.is_empty() => next,
            _ => SystemTime::UNIX_EPOCH,
        }
    }

    /// The expiries due at `now` in the next bucket of this replica's
    /// scan, claimed; a scan begins (renewing the buckets) when one is due.
    /// Nothing when neither is.
    pub(in crate::store) async fn expire_due(
        &self,
        now: SystemTime,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        let deadlines = &self.inner.deadlines;
        let begins = {
            let mut scan = deadlines.scan();
            let Some(next) = scan.next else {
                scan.next = Some(now + SCAN_EVERY);
                return Ok(Vec::new());
            };
            let begins = scan.left.is_empty() && now >= next;
            if begins {
                scan.next = Some(now + SCAN_EVERY);
            }
            begins
        };
        if begins {
            let mut held = self.lease_buckets(now).await?;
            held.reverse();
            deadlines.scan().left = held;
        }
        let Some(bucket) = deadlines.scan().left.pop() else {
            return Ok(Vec::new());
        };
        let claimed = if deadlines.cluster {
            self.claim_tag_by_tag(bucket, now).await
        } else {
            let keys: Vec<String> = tags_of(bucket)
                .map(|t| self.inner.keys.deadlines(t))
                .collect();
            self.claim(keys, now).await
        };
        claimed.or_else(|error| {
            if let Some(held_back) = FAILED_READS.admit(SystemTime::now()) {
                tracing::warn!(%error, held_back, "could not read the deadline index; the next scan reads it again");
            }
            Ok(Vec::new())
        })
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

    /// Gives this replica's buckets up, as it stops.
    pub(in crate::store) async fn leave_deadlines(&self) {
        let [leases, replicas] = self.inner.keys.deadline_leases();
        let mut invocation = Invocation::of(&SCRIPTS.deadlines_leave);
        invocation
            .key(leases)
            .key(replicas)
            .arg(&self.inner.deadlines.owner);
        if let Err(error) = self.run::<u32>("deadlines_leave", invocation).await {
            tracing::warn!(%error, "could not give the deadline buckets up; they pass on when their leases lapse");
        }
    }

    /// Renews this replica's fair share of the buckets: the ones it holds.
    async fn lease_buckets(&self, now: SystemTime) -> Result<Vec<u32>, StoreError> {
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

    /// A bucket on Redis Cluster: each tag read alone, all at once (the
    /// connection pipelines them to their nodes), and claimed when it has
    /// anything due.
    async fn claim_tag_by_tag(
        &self,
        bucket: u32,
        now: SystemTime,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        let mut peeks = tokio::task::JoinSet::new();
        let mut waiting = Vec::new();
        let mut tags = tags_of(bucket);
        loop {
            while peeks.len() < READS_AT_ONCE
                && let Some(tag) = tags.next()
            {
                let store = self.clone();
                peeks.spawn(async move { (tag, store.has_due(tag, now).await) });
            }
            let Some(peeked) = peeks.join_next().await else {
                break;
            };
            let (tag, has_due) = peeked.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if has_due? {
                waiting.push(tag);
            }
        }
        let mut due = Vec::new();
        for tag in waiting {
            due.extend(
                self.claim(vec![self.inner.keys.deadlines(tag)], now)
                    .await?,
            );
        }
        Ok(due)
    }

    /// Whether the tag's index has an entry due at `now`: a plain read,
    /// and most have none.
    async fn has_due(&self, tag: u16, now: SystemTime) -> Result<bool, StoreError> {
        let mut command = redis::cmd("ZRANGEBYSCORE");
        command
            .arg(self.inner.keys.deadlines(tag))
            .arg("-inf")
            .arg(millis(now))
            .arg("LIMIT")
            .arg(0)
            .arg(1);
        let mut connection = self.inner.deadlines.connection.clone();
        let due: Vec<String> = self
            .bounded("deadlines_peek", command.query_async(&mut connection))
            .await?;
        Ok(!due.is_empty())
    }

    /// Claims the due entries of the indexes `keys`.
    async fn claim(
        &self,
        keys: Vec<String>,
        now: SystemTime,
    ) -> Result<Vec<DueDeadline>, StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.deadlines_claim);
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(millis(now))
            .arg(millis_of(CLAIM))
            .arg(CLAIMS_PER_TAG);
        let mut connection = self.inner.deadlines.connection.clone();
        let (score, flat): (u64, Vec<String>) = self
            .bounded("deadlines_claim", evaluate(&mut connection, &invocation))
            .await?;
        let mut due = Vec::new();
        for pair in flat.chunks_exact(2) {
            let [position, entry] = pair else { continue };
            let Some(index) = position
                .parse::<usize>()
                .ok()
                .and_then(|p| keys.get(p.checked_sub(1)?))
            else {
                continue;
            };
            let claim = DeadlineClaim {
                index: index.clone(),
                entry: entry.clone(),
                score,
            };
            let parsed = entry.split_once(' ').and_then(|(id, tenant)| {
                Some((VerificationId::parse(id)?, TenantId::parse(tenant)?))
            });
            match parsed {
                Some((id, tenant)) => due.push(DueDeadline {
                    tenant,
                    id,
                    claim: Some(claim),
                }),
                // Not one verifyd wrote: dropped, not claimed forever.
                None => self.release(&claim).await?,
            }
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buckets_cover_every_tag_once() {
        let mut seen = vec![false; 1 << 16];
        for bucket in 0..BUCKETS {
            for tag in tags_of(bucket) {
                assert!(!seen[usize::from(tag)], "tag {tag} in two buckets");
                seen[usize::from(tag)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s), "every tag, 0xffff included");
    }
}
