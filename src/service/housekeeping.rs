//! The service's timers: expiries settled and announced as they fall due,
//! and the periodic purge of what has outlived its retention.

use std::{sync::Arc, time::Duration};

use super::Verifier;
use crate::domain::Status;

impl Verifier {
    /// Moves each verification to EXPIRED when the clock reaches its
    /// `expires_at`, and tells its watchers. The deadlines come from the
    /// store where it keeps them (the memory store, which also drops each
    /// verification at the end of its retention on this timer), else from
    /// the service's own queue. Runs until shutdown.
    pub async fn run_expiry_timer(self: Arc<Self>) {
        loop {
            let next = [self.expiry.next_due(), self.store.next_deadline()]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.expiry.changed() => continue,
                () = self.store.deadline_moved() => continue,
                () = async {
                    match next {
                        Some(at) => self.clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let now = self.clock.now();
            let mut due = self.expiry.pop_due(now);
            due.extend(self.store.expire_due(now));
            for (tenant, id) in due {
                match self.store.get(&tenant, &id, now).await {
                    Ok(Some(v)) if v.status == crate::domain::Status::Expired => {
                        tracing::info!(%tenant, verification = %id, "verification expired");
                        self.status_changed(&v, Some(Status::Pending), "expired");
                        self.end_live_call(&v);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // The verification is still expired for every reader
                        // (transitions settle expiry first); only the push to
                        // watchers is late. Try again shortly.
                        tracing::warn!(%error, verification = %id, "could not expire verification");
                        self.expiry
                            .schedule(now + Duration::from_secs(1), tenant, id);
                    }
                }
            }
        }
    }

    /// Frees what has outlived its retention and idle limiter state.
    pub async fn purge(&self) {
        self.store.purge(self.clock.now()).await;
        self.limits.prune();
    }
}
