//! The service's timers: expiries settled and announced as they fall due,
//! and the periodic purge of what has outlived its retention.

use std::sync::Arc;

use super::Verifier;
use crate::domain::Status;

impl Verifier {
    /// Moves each verification to EXPIRED when the clock reaches its
    /// `expires_at`, tells its watchers, logs the `expired` event and ends
    /// its live call. The deadlines are the store's: the memory store
    /// queues them (and drops each verification at the end of its
    /// retention on this timer); Redis keeps an index every replica shares,
    /// so a verification's expiry is announced even after the replica that
    /// sent its code is gone. Runs until shutdown.
    pub async fn run_expiry_timer(self: Arc<Self>) {
        loop {
            let next = self.store.next_deadline();
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.store.deadline_moved() => continue,
                () = async {
                    match next {
                        Some(at) => self.clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let now = self.clock.now();
            let due = match self.store.expire_due(now).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "could not read the due expiries; the next scan tries again");
                    continue;
                }
            };
            for due in due {
                let (tenant, id) = (&due.tenant, &due.id);
                match self.store.get(tenant, id, now).await {
                    Ok(Some(v)) if v.status == Status::Expired => {
                        tracing::info!(%tenant, verification = %id, "verification expired");
                        self.status_changed(&v, Some(Status::Pending), "expired");
                        self.end_live_call(&v);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // Still expired for every reader (transitions settle
                        // expiry first); only the announcement is late: the
                        // claim runs out and a scan takes it again.
                        tracing::warn!(%error, verification = %id, "could not expire verification");
                        continue;
                    }
                }
                self.store.expiry_announced(&due).await;
            }
        }
    }

    /// Frees what has outlived its retention and idle limiter state.
    pub async fn purge(&self) {
        self.store.purge(self.clock.now()).await;
        self.limits.prune();
    }
}
