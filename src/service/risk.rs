//! Risk signals before a phone send (`[lookup]`): the number's live line
//! type and last SIM change, cached per tenant, paid for from the tenant's
//! own lookup budget, and read by the tenant's [`LookupPolicy`].
//!
//! It runs last among the gates, after every refusal that costs nothing,
//! and before the store step that reserves the send; before a start's
//! lookup is paid for, a look that writes nothing at the least gap, the
//! destination's block and its budget refuses the start those would
//! refuse. A refusal here gives the shared cells back as any start that
//! sends nothing does. The lookup
//! budget is never given back (the call was paid for) and never blocks a
//! prefix.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Verifier, errors::StartError};
use crate::{
    domain::{
        Channel, Destination, Purpose, TenantId, Verification,
        destination::PhoneNumber,
        limit::{Budget, Limit},
        lookup::{LookupPolicy, LookupRefusal, Signals},
    },
    store::{BudgetKey, BudgetStore as _},
};

/// Less time than this left for a lookup, and none is made.
const MIN_LOOKUP_TIME: Duration = Duration::from_millis(100);

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
    /// The verification a resend sends on; `None` for a start.
    pub(super) resending: Option<&'a Verification>,
}

impl Verifier {
    /// Screens an SMS or voice send to a phone number with the tenant's
    /// lookup policy, if it has one.
    ///
    /// Before a lookup is paid for, a look that writes nothing at what the
    /// store step would refuse the send with anyway (a start: the number's
    /// block, least gap and `budget`; a resend: its verification's
    /// cooldown and send limit, and `budget`), which it is then refused
    /// with.
    pub(super) async fn screen_by_lookup(
        &self,
        s: Screening<'_>,
        budget: Budget,
    ) -> Result<(), StartError> {
        let (Destination::Phone(phone), Channel::Sms | Channel::Voice) = (s.to, s.channel) else {
            return Ok(());
        };
        let Some(policy) = &self.settings.tenants.get(s.tenant).lookup else {
            return Ok(());
        };
        let (signals, source) = match self.cached(&s, policy).await {
            Some(cached) => (Some(cached), Source::Cached),
            None => {
                self.refuse_ahead(&s, budget).await?;
                self.fetch(&s, phone, policy).await
            }
        };
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
        decision.map_err(StartError::LookupRefused)
    }

    /// The number's cached signals, if they answer what this send asks.
    async fn cached(&self, s: &Screening<'_>, policy: &LookupPolicy) -> Option<Signals> {
        let cached = match self.store.cached_lookup(s.tenant, s.to, s.now).await {
            Ok(cached) => cached,
            Err(error) => {
                tracing::warn!(%error, "cannot read the lookup cache");
                None
            }
        };
        cached.filter(|c| c.answer(policy.asks_sim_swap(s.purpose), s.now))
    }

    /// What the store step would refuse this send with anyway, looked at
    /// without writing.
    async fn refuse_ahead(&self, s: &Screening<'_>, budget: Budget) -> Result<(), StartError> {
        let code_policy = self.policy(s.tenant, s.channel);
        let Some(resending) = s.resending else {
            return match self
                .store
                .peek_start(s.tenant, s.to, &code_policy, budget, s.now)
                .await?
            {
                Some(refused) => Err(self.start_refused(s.tenant, &code_policy, refused, s.now)),
                None => Ok(()),
            };
        };
        if let Err(refused) = resending.clone().reserve_send(&code_policy, s.now) {
            return Err(StartError::of_send_refused(
                refused,
                resending.expires_at,
                s.now,
            ));
        }
        let wait = self
            .store
            .cell_wait(
                s.tenant,
                BudgetKey::Destination(budget.limit, s.to),
                budget.quota,
                s.now,
            )
            .await?;
        if wait.is_zero() {
            Ok(())
        } else {
            Err(self.refused_by_store(s.tenant, budget.refused(wait)).into())
        }
    }

    /// The number's signals, looked up (from the tenant's budget), else
    /// none.
    async fn fetch(
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
        let budget = s.deadline.map_or(self.settings.send_timeout, |d| {
            d.saturating_duration_since(Instant::now())
                .min(self.settings.send_timeout)
        });
        if budget < MIN_LOOKUP_TIME {
            // No time for an answer: no cell is spent on asking.
            return (None, Source::Failed);
        }
        if self
            .limits
            .tenant(s.tenant, &[Limit::LookupsPerTenant])
            .await
            .is_err()
        {
            return (None, Source::BudgetSpent);
        }
        match lookup.signals(phone, asks_sim_swap, budget, s.now).await {
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
                // Kept briefly as an answer that says nothing: a probe
                // repeated at once pays no second call, and is answered as
                // fast as any cached answer.
                let failed = Signals::none(asks_sim_swap, s.now);
                if let Err(error) = self
                    .store
                    .cache_lookup(s.tenant, s.to, &failed, Signals::FAILURE_FRESH, s.now)
                    .await
                {
                    tracing::warn!(%error, "cannot cache a number lookup");
                }
                (None, Source::Failed)
            }
        }
    }
}
