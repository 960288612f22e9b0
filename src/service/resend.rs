//! Sending again on a verification, by id: the only way to send a second
//! code for one session, since every start creates a verification of its
//! own. A resend passes the same gates as a start for its (possibly new)
//! channel, then the verification's own limits: the resend wait, doubling
//! with each resend, the send budget and the send lease.

use std::{borrow::Cow, sync::Arc};

use tokio::time::Instant;

use super::{
    Verifier,
    errors::StartError,
    risk::Screening,
    send::{SendPlan, leave_time_to_record},
    start::fingerprint,
    start_request::ResendRequest,
};
use crate::{
    domain::{Status, TenantId, Verification, VoiceMode},
    store::{Fingerprint, Reservation},
};

impl ResendRequest {
    /// The RPC, the id and every field: a key reused with another request,
    /// a start's included, is told apart from a retry.
    fn fingerprint(&self) -> Fingerprint {
        let ip = self
            .end_user_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        fingerprint(&[
            "ResendVerification",
            self.id.as_str(),
            self.delivery.channel.as_str(),
            self.delivery.voice_mode.map_or("", VoiceMode::as_str),
            self.delivery.locale.as_ref().map_or("", |l| l.as_str()),
            &ip,
        ])
    }
}

impl Verifier {
    /// Sends a new code on the verification `request.id` names (or places a
    /// new call), in a task of its own as a start does.
    pub async fn resend(
        self: &Arc<Self>,
        tenant: TenantId,
        request: ResendRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let deadline = leave_time_to_record(deadline);
        let slot = self.send_slot(&tenant)?;
        let this = Arc::clone(self);
        self.in_own_task(slot, async move {
            this.resend_idempotent(&tenant, &request, deadline).await
        })
        .await
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(%tenant, verification = %asked.id, channel = asked.delivery.channel.as_str())
    )]
    async fn resend_idempotent(
        &self,
        tenant: &TenantId,
        asked: &ResendRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let delivery = self.settle_delivery(tenant, &asked.delivery)?;
        let request = if delivery == asked.delivery {
            Cow::Borrowed(asked)
        } else {
            Cow::Owned(ResendRequest {
                delivery,
                ..asked.clone()
            })
        };
        let key = asked.idempotency_key.as_ref();
        self.idempotently(
            tenant,
            key,
            || asked.fingerprint(),
            deadline,
            || self.resend_once(tenant, &request, deadline),
        )
        .await
    }

    async fn resend_once(
        &self,
        tenant: &TenantId,
        request: &ResendRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let now = self.clock.now();
        let channel = request.delivery.channel;
        // The destination the gates screen; it never changes, so reading it
        // apart from the reservation below is safe.
        let current = self
            .store
            .read(tenant, &request.id, now)
            .await?
            .ok_or(StartError::NotFound)?;
        if current.status != Status::Pending {
            return Err(StartError::NotPending(current.status));
        }
        if !current.reachable_by(channel) {
            return Err(StartError::ChannelUnreachable(channel));
        }
        let screening = Screening {
            tenant,
            to: &current.to,
            channel,
            purpose: current.purpose,
            deadline,
            now,
            resending: Some(&current),
        };
        let gate = self
            .pass_gates(screening, request.end_user_ip, false)
            .await?;
        let reserved = self
            .store
            .reserve_resend(
                tenant,
                &request.id,
                &current.to,
                &self.policy(tenant, channel),
                gate.start_budget,
                now,
            )
            .await;
        let v = match reserved {
            Ok(Some(Reservation::Granted(v))) => v,
            refused => {
                // Nothing was reserved, so nothing will be sent.
                self.give_back(tenant, gate.shared).await;
                return Err(match refused? {
                    None => StartError::NotFound,
                    Some(Reservation::Refused {
                        reason,
                        verification,
                    }) => StartError::of_send_refused(reason, verification.expires_at, now),
                    Some(Reservation::Limited(limited)) => {
                        self.refused_by_store(tenant, limited).into()
                    }
                    Some(Reservation::Granted(_)) => unreachable!("matched above"),
                });
            }
        };
        tracing::debug!(verification = %v.id, "resend reserved");
        // A resend replaces any call still ringing or running.
        self.end_live_call(&v);
        let delivery = request.delivery.clone().or_locale(gate.locale);
        self.send(SendPlan {
            tenant,
            verification: v,
            delivery: &delivery,
            shared: gate.shared,
            first: false,
            fallback_step: false,
            deadline,
        })
        .await
    }
}
