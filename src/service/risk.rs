//! Risk signals before a phone send (`[lookup]`): the number's live line
//! type and last SIM change, cached per tenant, paid for from the tenant's
//! own lookup budget, and read by the tenant's [`LookupPolicy`].
//!
//! It runs last among the gates, after every refusal that costs nothing,
//! and before the store step that reserves the send: a refusal here gives
//! the shared cells back as any start that sends nothing does. The lookup
//! budget is never given back (the call was paid for) and never blocks a
//! prefix.

use std::time::SystemTime;

use tokio::time::Instant;

use super::Verifier;
use crate::domain::{
    Channel, Destination, Purpose, TenantId,
    destination::PhoneNumber,
    limit::Limit,
    lookup::{LookupPolicy, LookupRefusal, Signals},
};

/// Where a lookup's answer came from, as counted and audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Cached,
    Fetched,
    Failed,
    BudgetSpent,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Fetched => "fetched",
            Self::Failed => "failed",
            Self::BudgetSpent => "budget_spent",
        }
    }
}

/// One send's screening: what is sent where, and why.
pub(super) struct Screening<'a> {
    pub(super) tenant: &'a TenantId,
    pub(super) to: &'a Destination,
    pub(super) channel: Channel,
    pub(super) purpose: Purpose,
    pub(super) deadline: Option<Instant>,
    pub(super) now: SystemTime,
}

impl Verifier {
    /// Screens an SMS or voice send to a phone number with the tenant's
    /// lookup policy, if it has one.
    pub(super) async fn screen_by_lookup(&self, s: Screening<'_>) -> Result<(), LookupRefusal> {
        let (Destination::Phone(phone), Channel::Sms | Channel::Voice) = (s.to, s.channel) else {
            return Ok(());
        };
        let Some(policy) = &self.settings.tenants.get(s.tenant).lookup else {
            return Ok(());
        };
        let (signals, source) = self.signals(&s, phone, policy).await;
        let decision = policy.decide(signals.as_ref(), s.channel, s.purpose, s.now);
        let decided = decision.err().map_or("proceed", LookupRefusal::as_str);
        self.settings
            .metrics
            .lookup(s.tenant, source.as_str(), decided);
        // Every refusal, and every send that went on without an answer, is
        // an audit event; a plain pass is only counted.
        if decision.is_err() || matches!(source, Source::Failed | Source::BudgetSpent) {
            tracing::info!(
                target: "verifyd::audit",
                event = "lookup",
                tenant = s.tenant.as_str(),
                destination = s.to.masked().as_str(),
                channel = s.channel.as_str(),
                purpose = s.purpose.as_str(),
                source = source.as_str(),
                line = signals.and_then(|s| s.line).map_or("none", |l| l.as_str()),
                decision = decided,
                "number lookup before a send"
            );
        }
        decision
    }

    /// The number's signals: cached, else looked up (from the tenant's
    /// budget), else none.
    async fn signals(
        &self,
        s: &Screening<'_>,
        phone: &PhoneNumber,
        policy: &LookupPolicy,
    ) -> (Option<Signals>, Source) {
        let Some(lookup) = &self.dispatcher.lookup else {
            // Configuration makes one whenever a tenant has a policy; kept
            // total, and closed, all the same.
            return (None, Source::Failed);
        };
        let asks_sim_swap = policy.asks_sim_swap(s.purpose);
        let cached = match self.store.cached_lookup(s.tenant, s.to, s.now).await {
            Ok(cached) => cached,
            Err(error) => {
                tracing::warn!(%error, "cannot read the lookup cache");
                None
            }
        };
        if let Some(signals) = cached.filter(|c| !asks_sim_swap || c.sim_swap.is_some()) {
            return (Some(signals), Source::Cached);
        }
        if self
            .limits
            .tenant(s.tenant, &[Limit::LookupsPerTenant])
            .await
            .is_err()
        {
            return (None, Source::BudgetSpent);
        }
        let budget = s.deadline.map_or(self.settings.send_timeout, |d| {
            d.saturating_duration_since(Instant::now())
                .min(self.settings.send_timeout)
        });
        match lookup.signals(phone, asks_sim_swap, budget).await {
            Ok(signals) => {
                if let Err(error) = self
                    .store
                    .cache_lookup(s.tenant, s.to, &signals, lookup.cache_ttl, s.now)
                    .await
                {
                    tracing::warn!(%error, "cannot cache a number lookup");
                }
                (Some(signals), Source::Fetched)
            }
            Err(reason) => {
                tracing::warn!(%reason, "the number lookup failed");
                (None, Source::Failed)
            }
        }
    }
}
