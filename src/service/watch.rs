//! WatchVerification: the current state, then every change, ending after a
//! terminal status or at shutdown.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::{LookupError, Verifier};
use crate::{
    domain::{TenantId, Verification, VerificationId},
    telemetry::Metrics,
};

/// Counts open streams per tenant against a cap, so one caller cannot hold
/// unbounded server resources.
#[derive(Debug)]
pub(super) struct WatchSlots {
    max_per_tenant: u32,
    open: Mutex<HashMap<TenantId, u32>>,
    /// The open streams per tenant, as a gauge.
    metrics: Arc<Metrics>,
}

impl WatchSlots {
    pub(super) fn new(max_per_tenant: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            max_per_tenant,
            open: Mutex::default(),
            metrics,
        }
    }

    fn acquire(self: &Arc<Self>, tenant: &TenantId) -> Option<WatchSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(tenant.clone()).or_default();
        if *count >= self.max_per_tenant {
            return None;
        }
        *count += 1;
        self.metrics.set_watch_streams(tenant, *count);
        Some(WatchSlot {
            slots: Arc::clone(self),
            tenant: tenant.clone(),
        })
    }
}

#[derive(Debug)]
struct WatchSlot {
    slots: Arc<WatchSlots>,
    tenant: TenantId,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.tenant) {
            *count -= 1;
            self.slots.metrics.set_watch_streams(&self.tenant, *count);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// The states a watcher receives. Dropping it (the client went away) stops
/// the task feeding it.
#[derive(Debug)]
pub struct WatchStream(mpsc::Receiver<Result<Verification, LookupError>>);

impl Stream for WatchStream {
    type Item = Result<Verification, LookupError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

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
