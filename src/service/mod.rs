//! The use cases: start, resend, check, get, cancel, watch, over the ports
//! (store, rate limits, senders, clock). Transports call these and
//! translate.

pub mod admin;
mod audit;
mod cancel;
mod channel_name;
mod check;
mod errors;
mod fallback;
mod fallback_settings;
mod get;
mod housekeeping;
mod resend;
mod risk;
mod safe_list;
mod send;
mod start;
mod start_request;
pub mod tenants;
mod voice;
mod voice_settings;
mod watch;
mod watch_streams;

use std::{sync::Arc, time::Duration};

pub use errors::{CallError, CheckError, LookupError, StartError};
pub use fallback_settings::{FallbackConfig, FallbackOverrides};
pub use start_request::{FallbackAsk, IdempotencyKey, ResendRequest, StartRequest};
pub use tenants::{ServerDefaults, TenantConfig, Tenants};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
pub use voice_settings::{UnknownAnswer, VoiceSettings};
pub use watch_streams::WatchStream;

use self::watch_streams::WatchSlots;
use crate::{
    clock::Clock,
    delivery::Dispatcher,
    domain::{
        Channel, KeyRing, Policy, Status, TenantId, Verification, fraud::FraudRules,
        limit::RateLimited,
    },
    ratelimit::RateLimits,
    store::Store,
    telemetry::Metrics,
};

/// Settings of the service itself, beyond the verification policy.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Each tenant's channels, app name, templates and voice settings.
    pub tenants: Tenants,
    pub fraud: FraudRules,
    /// The longest a send may take, whatever the caller's deadline.
    pub send_timeout: Duration,
    pub max_watch_streams_per_tenant: u32,
    /// The most starts and resends this process runs at once.
    pub max_sends_in_flight: u32,
    /// Where the service counts what it does.
    pub metrics: Arc<Metrics>,
}

#[derive(Debug)]
pub struct Verifier {
    store: Arc<Store>,
    /// Over the same store, which keeps the shared budgets.
    limits: RateLimits<Arc<Store>>,
    dispatcher: Dispatcher,
    keys: KeyRing,
    settings: ServiceSettings,
    clock: Clock,
    watch_slots: Arc<WatchSlots>,
    /// One permit per start or resend running, its send included: a
    /// provider that hangs ties up this many requests at most.
    send_slots: Arc<Semaphore>,
    /// Cancelled when the server begins to shut down: watch streams send
    /// the current state and end.
    shutdown: CancellationToken,
    /// This replica's copies of the tenants' safe-lists.
    safe_lists: safe_list::SafeListCopies,
}

/// What the use cases work through: the store, the rate limits (over the
/// same store, which keeps the shared budgets) and the delivery routes.
#[derive(Debug)]
pub struct Ports {
    pub store: Arc<Store>,
    pub limits: RateLimits<Arc<Store>>,
    pub dispatcher: Dispatcher,
}

impl Verifier {
    pub fn new(
        ports: Ports,
        keys: KeyRing,
        settings: ServiceSettings,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let Ports {
            store,
            limits,
            dispatcher,
        } = ports;
        Arc::new(Self {
            store,
            limits,
            dispatcher,
            keys,
            watch_slots: Arc::new(WatchSlots::new(
                settings.max_watch_streams_per_tenant,
                Arc::clone(&settings.metrics),
            )),
            send_slots: Arc::new(Semaphore::new(settings.max_sends_in_flight as usize)),
            settings,
            clock,
            shutdown,
            safe_lists: safe_list::SafeListCopies::default(),
        })
    }

    /// The tenant's policy (its own code settings over the server's) for a
    /// send on `channel`.
    fn policy(&self, tenant: &TenantId, channel: Channel) -> Policy {
        self.settings
            .tenants
            .get(tenant)
            .policy
            .for_channel(channel)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.settings.metrics
    }

    /// The service's one source of time, for the transports' own timers.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub async fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled() && self.store.is_ready().await
    }

    /// Counts a refusal by a budget the store took from in its own step, as
    /// the rate limits count their own.
    fn refused_by_store(&self, tenant: &TenantId, limited: RateLimited) -> RateLimited {
        self.settings
            .metrics
            .rate_limited(tenant, limited.limit.as_str());
        limited
    }

    /// Records a status change in the audit log and the metrics.
    fn status_changed(&self, v: &Verification, from: Option<Status>, reason: &'static str) {
        audit::status_changed(v, from, reason);
        self.settings
            .metrics
            .status_changed(&v.tenant, v.delivery.channel, from, v.status);
    }
}
