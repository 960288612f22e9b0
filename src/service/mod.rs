//! The use cases: start, resend, check, get, cancel, watch, over the ports
//! (store, rate limits, senders, clock). Transports call these and
//! translate.

mod audit;
mod errors;
mod expiry;
mod resend;
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
pub use start_request::{IdempotencyKey, ResendRequest, StartRequest};
pub use tenants::{TenantConfig, Tenants};
use tokio_util::sync::CancellationToken;
pub use voice_settings::{UnknownAnswer, VoiceSettings};
pub use watch_streams::WatchStream;

use self::{expiry::ExpiryQueue, watch_streams::WatchSlots};
use crate::{
    clock::Clock,
    delivery::Dispatcher,
    domain::{
        CheckOutcome, Code, DeliveryReport, KeyRing, Policy, Status, TenantId, Verification,
        VerificationId, fraud::FraudRules, limit::RateLimited,
    },
    ratelimit::RateLimits,
    store::{BudgetedCheck, Store},
    telemetry::{Metrics, metrics::CheckCount},
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
    policy: Policy,
    settings: ServiceSettings,
    clock: Clock,
    expiry: ExpiryQueue,
    watch_slots: Arc<WatchSlots>,
    /// Cancelled when the server begins to shut down: watch streams send
    /// the current state and end.
    shutdown: CancellationToken,
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
        policy: Policy,
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
            policy,
            watch_slots: Arc::new(WatchSlots::new(
                settings.max_watch_streams_per_tenant,
                Arc::clone(&settings.metrics),
            )),
            settings,
            clock,
            expiry: ExpiryQueue::default(),
            shutdown,
        })
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

    /// Checks a code. A wrong code is `Ok((false, _))` with one attempt
    /// fewer; only a pending, unexpired verification ever approves.
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        code: &Code,
    ) -> Result<(bool, Verification), CheckError> {
        let checked = self.check_code(tenant, id, code).await;
        let outcome = match &checked {
            Ok((true, _)) => CheckCount::Approved,
            Ok((false, _)) => CheckCount::Rejected,
            Err(CheckError::NotPending(_)) => CheckCount::NotPending,
            Err(CheckError::NotFound) => CheckCount::NotFound,
            Err(CheckError::RateLimited(_)) => CheckCount::RateLimited,
            Err(CheckError::Store(_)) => CheckCount::Unavailable,
        };
        self.settings.metrics.check(tenant, outcome);
        checked
    }

    async fn check_code(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        code: &Code,
    ) -> Result<(bool, Verification), CheckError> {
        self.limits.request(tenant)?;
        let now = self.clock.now();
        let candidates = self.keys.candidates(tenant, id, code);
        // The store reads, takes from the destination's budget and compares
        // in one step: one script in Redis, one lookup in memory.
        let budget = self.limits.check_budget(tenant);
        match self
            .store
            .check_within_budget(tenant, id, &candidates, budget, now)
            .await?
            .ok_or(CheckError::NotFound)?
        {
            BudgetedCheck::Checked(outcome, v) => {
                return self.checked(outcome, v, Status::Pending);
            }
            BudgetedCheck::Limited(limited) => {
                return Err(self.refused_by_store(tenant, limited).into());
            }
            BudgetedCheck::Unbudgeted => {}
        }
        let (status, to) = self
            .store
            .status_and_destination(tenant, id, now)
            .await?
            .ok_or(CheckError::NotFound)?;
        if status.is_terminal() {
            return Err(CheckError::NotPending(status));
        }
        self.limits.check(tenant, &to).await?;
        let (outcome, v) = self
            .store
            .check(tenant, id, &candidates, now)
            .await?
            .ok_or(CheckError::NotFound)?;
        self.checked(outcome, v, status)
    }

    /// What a compared code leads to, `from` being the status before.
    fn checked(
        &self,
        outcome: CheckOutcome,
        v: Verification,
        from: Status,
    ) -> Result<(bool, Verification), CheckError> {
        let approved = match outcome {
            CheckOutcome::Approved => true,
            CheckOutcome::Rejected => false,
            // Nothing was compared: it had already ended.
            CheckOutcome::NotPending(status) => return Err(CheckError::NotPending(status)),
        };
        self.status_changed(&v, Some(from), "code checked");
        if v.status.is_terminal() {
            // Approved, or out of attempts: a call still ringing can no
            // longer do anything.
            self.end_live_call(&v);
        }
        tracing::debug!(
            outcome = if approved { "approved" } else { "rejected" },
            attempts_remaining = v.checks_remaining,
            status = v.status.as_str(),
            "verification checked"
        );
        Ok((approved, v))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<Verification, LookupError> {
        self.limits.request(tenant)?;
        self.store
            .read(tenant, id, self.clock.now())
            .await?
            .ok_or(LookupError::NotFound)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<Verification, LookupError> {
        self.limits.request(tenant)?;
        let (v, canceled) = self
            .store
            .cancel(tenant, id, self.clock.now())
            .await?
            .ok_or(LookupError::NotFound)?;
        if !canceled {
            return Err(LookupError::NotPending(v.status));
        }
        tracing::info!("verification canceled");
        self.status_changed(&v, Some(Status::Pending), "canceled by the caller");
        self.end_live_call(&v);
        Ok(v)
    }

    /// Applies a provider's delivery report (from a signed status callback)
    /// and tells watchers when it changed something. Reports for unknown or
    /// purged verifications are dropped: the provider cannot do better.
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
    ) -> Result<(), LookupError> {
        match self
            .store
            .record_delivery(tenant, id, report, self.clock.now())
            .await?
        {
            Some((true, _)) => {
                tracing::info!(provider_status = %report.status, "delivery status");
                Ok(())
            }
            Some((false, _)) => Ok(()),
            None => Err(LookupError::NotFound),
        }
    }

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
