//! The service's timers: expiries settled and announced and fallback steps
//! run as they fall due, and the periodic purge of what has outlived its
//! retention.

use std::{sync::Arc, time::SystemTime};

use tokio::task::JoinSet;

use super::Verifier;
use crate::{domain::Status, store::DueDeadline};

/// How many expiries are announced at once.
const ANNOUNCED_AT_ONCE: usize = 32;

impl Verifier {
    /// Moves each verification to EXPIRED when the clock reaches its
    /// `expires_at`, tells its watchers, logs the `expired` event and ends
    /// its live call; runs each fallback step when it falls due. The deadlines are the store's: the memory store
    /// queues them (and drops each verification at the end of its
    /// retention on this timer); Redis keeps an index every replica shares,
    /// so a verification's expiry is announced even after the replica that
    /// sent its code is gone. Runs until shutdown.
    pub async fn run_expiry_timer(self: Arc<Self>) {
        loop {
            let next = self.store.next_deadline();
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    self.store.stop_keeping_deadlines().await;
                    return;
                }
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
            // Announced a few at a time: ending a call waits on its provider.
            let mut announcing = JoinSet::new();
            for due in due {
                if announcing.len() >= ANNOUNCED_AT_ONCE {
                    announcing.join_next().await;
                }
                let this = Arc::clone(&self);
                announcing.spawn(async move { this.handle_deadline(due, now).await });
            }
            while announcing.join_next().await.is_some() {}
        }
    }

    /// Handles one due deadline, then hands it back to the store, which
    /// forgets it. An expiry is announced: settled (watchers told), the
    /// `expired` event logged, the live call ended. A fallback step is run
    /// (`fallback`). One not handed back (Redis unreachable, the provider
    /// not ending the call) comes up again later, on this replica or
    /// another.
    async fn handle_deadline(&self, due: DueDeadline, now: SystemTime) {
        let (tenant, id) = (&due.tenant, &due.id);
        let done = match self.store.get(tenant, id, now).await {
            Ok(Some(v)) if v.status == Status::Expired => {
                tracing::info!(%tenant, verification = %id, "verification expired");
                self.status_changed(&v, Some(Status::Pending), "expired");
                self.hang_up_live_call(&v).await
            }
            // Never handed back: the step's own write (its claim, or the
            // workflow's end) scores the verification's entry anew, for its
            // next step or its expiry, and a claim's score may be just that.
            Ok(Some(v))
                if v.status == Status::Pending
                    && v.fallback.as_ref().is_some_and(|f| f.is_due(now)) =>
            {
                if let Err(error) = self.take_fallback_step(&v, now).await {
                    tracing::warn!(%error, verification = %id, "could not run a fallback step; it comes up again");
                }
                false
            }
            // Nothing due yet (a replica whose clock runs ahead claimed
            // it): kept, to come up again.
            Ok(Some(v)) if v.status == Status::Pending => false,
            Ok(_) => true,
            Err(error) => {
                // Still expired for every reader (transitions settle expiry
                // first); only the announcement is late.
                tracing::warn!(%error, verification = %id, "could not expire verification");
                false
            }
        };
        if done {
            self.store.deadline_handled(&due).await;
        }
    }

    /// Frees what has outlived its retention and idle limiter state.
    pub async fn purge(&self) {
        self.store.purge(self.clock.now()).await;
        self.limits.prune();
    }
}
