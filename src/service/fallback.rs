//! Automatic channel fallback (`domain::fallback`): the workflow a start
//! runs, asked for or its tenant's default, and each later step, which the
//! deadline timer runs when it falls due, on whichever replica claims it.
//!
//! A step is a resend the service makes by itself: the same gates (the
//! fraud screen, blocks, the shared budgets, the lookup), then the claim
//! in the verification's own store step (pending, at the step before, due;
//! the resend wait, the send lease and the send budget, as a resend's),
//! then the send. A step that a gate or the store refuses ends the
//! workflow; the verification stays pending with the code it has.

use std::time::SystemTime;

use super::{
    Verifier,
    errors::StartError,
    risk::Screening,
    send::{Gate, SendPlan},
    start_request::{FallbackAsk, StartRequest},
};
use crate::{
    domain::{
        Channel, Status, TenantId, Verification,
        fallback::{Workflow, WorkflowError},
        verification::Delivery,
    },
    store::{Reservation, StoreError},
};

impl Verifier {
    /// The workflow a start runs: the one it asks for, checked against the
    /// tenant's policy and channels (a problem is the caller's to fix), or
    /// the tenant's default when the start asks for none and its channel
    /// is where the default begins (a default that does not fit the start
    /// is left out).
    pub(super) fn workflow_for(
        &self,
        tenant: &TenantId,
        request: &StartRequest,
    ) -> Result<Option<Workflow>, StartError> {
        let settings = self.settings.tenants.get(tenant);
        let (workflow, asked) = match &request.fallback {
            FallbackAsk::Off => return Ok(None),
            FallbackAsk::Workflow(workflow) => (workflow, true),
            FallbackAsk::TenantDefault => match &settings.fallback {
                Some(workflow) if workflow.channels()[0] == request.delivery.channel => {
                    (workflow, false)
                }
                _ => return Ok(None),
            },
        };
        let fits = || -> Result<(), StartError> {
            workflow
                .fits(request.delivery.channel, |c| settings.policy.for_channel(c))
                .map_err(StartError::Fallback)?;
            if request.extension.is_some()
                && workflow.channels().iter().any(|&c| c != Channel::Voice)
            {
                return Err(StartError::Fallback(WorkflowError::Extension));
            }
            for &channel in &workflow.channels()[1..] {
                let delivery = Delivery {
                    channel,
                    voice_mode: None,
                    locale: None,
                };
                self.settle_delivery(tenant, &delivery)?;
            }
            Ok(())
        };
        match fits() {
            Ok(()) => Ok(Some(workflow.clone())),
            Err(problem) if asked => Err(problem),
            Err(_) => Ok(None),
        }
    }

    /// Runs the fallback step due on `v` (as read at `now`). Errors only
    /// when the store could not be asked: the step was not claimed, and
    /// comes up again. Once claimed, a step never runs again, whatever
    /// its send's outcome.
    pub(super) async fn take_fallback_step(
        &self,
        v: &Verification,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        if v.status != Status::Pending {
            return Ok(());
        }
        let Some((after, channel)) = v
            .fallback
            .as_deref()
            .and_then(|f| Some((f.step, f.next_channel()?)))
        else {
            return Ok(());
        };
        let tenant = &v.tenant;
        let asked = Delivery {
            channel,
            voice_mode: None,
            locale: v.delivery.locale.clone(),
        };
        // The tenant's channels or voice policy may have changed since the
        // start.
        let delivery = match self.settle_delivery(tenant, &asked) {
            Ok(delivery) if v.reachable_by(channel) => delivery,
            _ => {
                return self
                    .end_fallback(v, after, channel, "not_allowed", now)
                    .await;
            }
        };
        let screening = Screening {
            tenant,
            to: &v.to,
            channel,
            purpose: v.purpose,
            deadline: None,
            now,
            resending: Some(v),
        };
        let gate = match self.pass_gates(screening, None, false).await {
            Ok(gate) => gate,
            Err(StartError::Store(error)) => return Err(error),
            Err(_) => return self.end_fallback(v, after, channel, "refused", now).await,
        };
        self.claim_and_send(v, after, delivery, gate, now).await
    }

    /// The store step that claims the step (the gates passed), then its
    /// send.
    async fn claim_and_send(
        &self,
        v: &Verification,
        after: u8,
        delivery: Delivery,
        gate: Gate,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (tenant, channel) = (&v.tenant, delivery.channel);
        // The gates may have taken a while (a lookup): the claim, its
        // lease and its cooldown count from now.
        let now = self.clock.now().max(now);
        let policy = self.policy(tenant, channel);
        let reserved = self
            .store
            .reserve_step(tenant, &v.id, &v.to, after, &policy, gate.start_budget, now)
            .await;
        let claimed = match reserved {
            Ok(Some(Reservation::Granted(claimed))) => claimed,
            other => {
                self.give_back(tenant, gate.shared).await;
                let outcome = match other? {
                    // Another replica's, or it moved on meanwhile.
                    None => return Ok(()),
                    Some(Reservation::Limited(_)) => "limited",
                    Some(_) => "refused",
                };
                // The store ended the workflow in the same step.
                self.fallback_stepped(v, after, channel, outcome);
                return Ok(());
            }
        };
        // A step replaces any call still ringing or running.
        self.end_live_call(&claimed);
        let delivery = delivery.or_locale(gate.locale);
        let sent = self
            .send(SendPlan {
                tenant,
                verification: claimed,
                delivery: &delivery,
                shared: gate.shared,
                first: false,
                fallback_step: true,
                deadline: None,
            })
            .await;
        let outcome = match &sent {
            Ok(_) => "sent",
            Err(StartError::Delivery {
                may_have_sent: true,
                ..
            }) => "unknown",
            Err(_) => "failed",
        };
        if let Err(error) = &sent {
            tracing::warn!(%error, verification = %v.id, "a fallback step's send failed");
        }
        self.fallback_stepped(v, after, channel, outcome);
        Ok(())
    }

    /// A gate refused the step before it was claimed: the workflow ends
    /// here, if it still stands at the step (else whoever moved it on
    /// said what happened).
    async fn end_fallback(
        &self,
        v: &Verification,
        after: u8,
        channel: Channel,
        outcome: &'static str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        if self
            .store
            .end_fallback(&v.tenant, &v.id, after, now)
            .await?
        {
            self.fallback_stepped(v, after, channel, outcome);
        }
        Ok(())
    }

    /// Counts and audits a step that was run (`sent`, `unknown` or
    /// `failed`, by its send's outcome) or that ended the workflow
    /// (`not_allowed`, `refused`, `limited`).
    fn fallback_stepped(
        &self,
        v: &Verification,
        after: u8,
        channel: Channel,
        outcome: &'static str,
    ) {
        self.metrics().fallback_step(&v.tenant, channel, outcome);
        tracing::info!(
            target: "verifyd::audit",
            event = "fallback_step",
            tenant = v.tenant.as_str(),
            verification = v.id.as_str(),
            channel = channel.as_str(),
            step = u32::from(after) + 1,
            outcome,
            destination = v.masked_destination().as_str(),
            "automatic fallback step"
        );
    }
}
