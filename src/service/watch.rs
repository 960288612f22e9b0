//! WatchVerification: the current state, then every change, ending after a
//! terminal status or at shutdown.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Verifier, errors::LookupError, watch_streams::WatchStream};
use crate::domain::{TenantId, VerificationId};

impl Verifier {
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn watch(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<WatchStream, LookupError> {
        self.limits.request(tenant)?;
        let slot = self
            .watch_slots
            .acquire(tenant)
            .ok_or(LookupError::TooManyWatches)?;
        // Subscribe before reading, so no change falls between the two.
        let mut changes = self.store.subscribe(tenant, id).await?;
        let current = self
            .store
            .get(tenant, id, self.clock.now())
            .await?
            .ok_or(LookupError::NotFound)?;

        let (tx, rx) = mpsc::channel(4);
        let this = Arc::clone(self);
        let (tenant, id) = (tenant.clone(), id.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut last = current;
            if tx.send(Ok(last.clone())).await.is_err() || last.status.is_terminal() {
                return;
            }
            loop {
                // Each signal means "re-read"; the expiry is watched here
                // too, so EXPIRED arrives on time even if the replica that
                // sent the code is gone.
                tokio::select! {
                    () = tx.closed() => return,
                    () = this.shutdown.cancelled() => {
                        // Shutting down: one last current state, then end.
                        if let Ok(Some(v)) = this.store.get(&tenant, &id, this.clock.now()).await
                            && v != last
                        {
                            // Never wait on a client that stopped reading.
                            let _ = tx.try_send(Ok(v));
                        }
                        return;
                    }
                    () = changes.changed() => {}
                    () = this.clock.sleep_until(last.expires_at) => {}
                }
                let v = match this.store.get(&tenant, &id, this.clock.now()).await {
                    Ok(Some(v)) => v,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if v == last {
                    continue;
                }
                let terminal = v.status.is_terminal();
                last = v.clone();
                // A client that stops reading must not hold up shutdown.
                let sent = tokio::select! {
                    sent = tx.send(Ok(v)) => sent.is_ok(),
                    () = this.shutdown.cancelled() => false,
                };
                if !sent || terminal {
                    return;
                }
            }
        });
        Ok(WatchStream(rx))
    }
}
