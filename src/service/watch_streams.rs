//! What WatchVerification hands out: the stream a watcher reads, and the cap
//! on how many a tenant holds open. The Verifier holds the cap; `watch`
//! feeds the streams.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::errors::LookupError;
use crate::{
    domain::{TenantId, Verification},
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

    pub(super) fn acquire(self: &Arc<Self>, tenant: &TenantId) -> Option<WatchSlot> {
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
pub(super) struct WatchSlot {
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
pub struct WatchStream(pub(super) mpsc::Receiver<Result<Verification, LookupError>>);

impl Stream for WatchStream {
    type Item = Result<Verification, LookupError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
