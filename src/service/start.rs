//! Starting a verification: always a new one, superseding the one still
//! pending for the destination and purpose; and the idempotency that a
//! start and a resend share.

use std::{borrow::Cow, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tracing::Instrument as _;

use super::{
    Verifier,
    errors::StartError,
    risk::Screening,
    send::{SendPlan, SharedCells, leave_time_to_record, until},
    start_request::{FallbackAsk, IdempotencyKey, StartRequest},
};
use crate::{
    domain::{
        Policy, Status, TenantId, Verification, VoiceMode,
        extension::masked_destination,
        fallback::{Fallback, Workflow},
    },
    store::{Creation, Fingerprint, IDEMPOTENCY_LEASE, Idempotency},
    telemetry::Metrics,
};

/// The wait a start refused for want of a send slot is told: sends end
/// within `delivery.timeout`, and most far sooner.
const SEND_SLOT_RETRY: Duration = Duration::from_secs(1);

/// A place among the starts and resends this process runs at once, held
/// to the end of one, and counted in `verifyd_sends_in_flight` meanwhile.
pub(super) struct SendSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for SendSlot {
    fn drop(&mut self) {
        self.metrics.send_ended();
    }
}

impl StartRequest {
    /// Everything the request asks for, so a reused key with another
    /// request is told apart from a retry.
    fn fingerprint(&self) -> Fingerprint {
        let ip = self
            .end_user_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let tags = self.caller_ref.tags_json();
        let mut fields = vec![
            self.to.as_str(),
            self.purpose.as_str(),
            self.delivery.channel.as_str(),
            self.delivery.voice_mode.map_or("", VoiceMode::as_str),
            self.delivery.locale.as_ref().map_or("", |l| l.as_str()),
            &ip,
        ];
        // Fields added later come named, and only when given: a start
        // without them keeps the fingerprint an earlier version stored, so
        // its retry is still a retry across an upgrade.
        let fallback = match &self.fallback {
            FallbackAsk::TenantDefault => None,
            FallbackAsk::Off => Some(String::new()),
            FallbackAsk::Workflow(w) => Some(format!(
                "{}/{}",
                w.channels_str(),
                w.step_timeout().as_millis()
            )),
        };
        let later = [
            ("extension", self.extension.as_ref().map(|e| e.as_str())),
            ("reference", self.caller_ref.reference.as_deref()),
            ("tags", tags.as_deref()),
            ("fallback", fallback.as_deref()),
        ];
        for (name, value) in later {
            if let Some(value) = value {
                fields.extend([name, value]);
            }
        }
        fingerprint(&fields)
    }
}

/// A digest of a request's fields, each framed by its length.
pub(super) fn fingerprint(fields: &[&str]) -> Fingerprint {
    let mut h = Sha256::new();
    for field in fields {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

impl Verifier {
    /// Creates a verification and sends its first code (or places its
    /// call). The verification still pending for the same destination and
    /// purpose, if any, is superseded: a start never hands out a
    /// verification it did not create, so its id is the session's
    /// capability.
    ///
    /// The work runs in its own task: once a send has begun, it and its
    /// record complete even if the caller goes away, so the stored state
    /// always matches what was sent. `deadline` is when the caller gives up;
    /// the send never runs past it (less a margin for recording) or the
    /// configured timeout.
    pub async fn start(
        self: &Arc<Self>,
        tenant: TenantId,
        request: StartRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let deadline = leave_time_to_record(deadline);
        let slot = self.send_slot(&tenant)?;
        let this = Arc::clone(self);
        self.in_own_task(slot, async move {
            this.start_idempotent(&tenant, &request, deadline).await
        })
        .await
    }

    /// A place among the starts and resends this process runs at once,
    /// taken before anything else (idempotency key, budgets), so a refusal
    /// leaves nothing behind and a retry finds everything as it was.
    pub(super) fn send_slot(&self, tenant: &TenantId) -> Result<SendSlot, StartError> {
        let metrics = &self.settings.metrics;
        let Ok(permit) = Arc::clone(&self.send_slots).try_acquire_owned() else {
            metrics.rate_limited(tenant, "sends_in_flight");
            return Err(StartError::SendsInFlight {
                retry_after: SEND_SLOT_RETRY,
            });
        };
        metrics.send_began();
        Ok(SendSlot {
            _permit: permit,
            metrics: Arc::clone(metrics),
        })
    }

    /// Runs a start or a resend to its end in a task of its own, in the
    /// RPC's span (and so in the caller's trace), holding its send slot
    /// until the end.
    pub(super) async fn in_own_task(
        &self,
        slot: SendSlot,
        work: impl Future<Output = Result<Verification, StartError>> + Send + 'static,
    ) -> Result<Verification, StartError> {
        let work = async move {
            let _slot = slot;
            work.await
        };
        match tokio::spawn(work.in_current_span()).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => Err(StartError::Interrupted),
        }
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(
            %tenant,
            to = %masked_destination(&asked.to, asked.extension.as_ref()),
            channel = asked.delivery.channel.as_str())
    )]
    async fn start_idempotent(
        &self,
        tenant: &TenantId,
        asked: &StartRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let delivery = self.settle_delivery(tenant, &asked.delivery)?;
        let workflow = self.workflow_for(tenant, asked)?;
        // A copy only when the policy filled something in (a call's mode):
        // an SMS or email start goes as asked.
        let request = if delivery == asked.delivery {
            Cow::Borrowed(asked)
        } else {
            Cow::Owned(StartRequest {
                delivery,
                ..asked.clone()
            })
        };
        // What the caller sent, so that a retry matches whatever the
        // default voice mode has become since.
        let key = asked.idempotency_key.as_ref();
        self.idempotently(
            tenant,
            key,
            || asked.fingerprint(),
            deadline,
            || self.start_once(tenant, &request, workflow, deadline),
        )
        .await
    }

    /// Runs `once` under the idempotency key, if there is one: a retry with
    /// the key gets the verification the first request answered with, as
    /// it stands now (superseded, perhaps), and nothing runs again. The
    /// lookup comes before every rate limit, so a retried success is never
    /// refused.
    pub(super) async fn idempotently<F>(
        &self,
        tenant: &TenantId,
        key: Option<&IdempotencyKey>,
        fingerprint: impl FnOnce() -> Fingerprint,
        deadline: Option<Instant>,
        once: impl FnOnce() -> F,
    ) -> Result<Verification, StartError>
    where
        F: Future<Output = Result<Verification, StartError>>,
    {
        let Some(key) = key else {
            self.limits.request(tenant)?;
            return once().await;
        };
        if let Claim::Replay(stored) = self
            .claim_idempotency_key(tenant, key, fingerprint(), deadline)
            .await?
        {
            tracing::info!(verification = %stored.id, "idempotent replay");
            return self.replayed(tenant, *stored).await;
        }
        let result = match self.limits.request(tenant) {
            Ok(()) => once().await,
            Err(limited) => Err(limited.into()),
        };
        let now = self.clock.now();
        let recorded = match &result {
            Ok(v) => {
                self.store
                    .finish_idempotent(tenant, key.as_str(), v, now)
                    .await
            }
            Err(_) => self.store.abandon_idempotent(tenant, key.as_str()).await,
        };
        if let Err(error) = recorded {
            // The start itself stands; a retry with this key will run again
            // once the lease runs out.
            tracing::warn!(%error, "could not record the idempotency key");
        }
        result
    }

    /// The verification a replayed request answered with, as it stands
    /// now; the answer as stored (its expiry settled) once the
    /// verification itself is past its retention.
    async fn replayed(
        &self,
        tenant: &TenantId,
        mut stored: Verification,
    ) -> Result<Verification, StartError> {
        let now = self.clock.now();
        match self.store.read(tenant, &stored.id, now).await? {
            Some(current) => Ok(current),
            None => {
                stored.settle(now);
                Ok(stored)
            }
        }
    }

    /// Takes the key for this request, or finds the answer of the request
    /// that took it first (waiting while that one is still running).
    async fn claim_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        deadline: Option<Instant>,
    ) -> Result<Claim, StartError> {
        let lease_end = Instant::now() + IDEMPOTENCY_LEASE;
        let give_up = deadline.map_or(lease_end, |d| d.min(lease_end));
        let mut pause = Duration::from_millis(5);
        loop {
            match self
                .store
                .begin_idempotent(tenant, key.as_str(), fingerprint, self.clock.now())
                .await?
            {
                Idempotency::Started => return Ok(Claim::Fresh),
                Idempotency::Replay(v) => return Ok(Claim::Replay(v)),
                Idempotency::Mismatch => return Err(StartError::IdempotencyMismatch),
                Idempotency::InFlight => {
                    // Another request with this key is sending; its answer
                    // is ours. Stores may be shared by replicas, so poll
                    // rather than wait on something in-process.
                    if Instant::now() + pause > give_up {
                        return Err(StartError::IdempotencyInFlight);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// One start: reserve (the gates, then a new verification with its
    /// first send reserved), then send, which records how it went.
    async fn start_once(
        &self,
        tenant: &TenantId,
        request: &StartRequest,
        workflow: Option<Workflow>,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let (verification, shared) = self
            .reserve_start(tenant, request, workflow, deadline)
            .await?;
        // The delivery the verification was created with: the request's,
        // in the number's language if it named none.
        let delivery = verification.delivery.clone();
        self.send(SendPlan {
            tenant,
            verification,
            delivery: &delivery,
            shared,
            first: true,
            fallback_step: false,
            deadline,
        })
        .await
    }

    /// Everything before the send: the gates, then the store step that
    /// creates the verification (the least gap, the destination's budget,
    /// the one it supersedes). What it superseded is announced and its call
    /// ended here; a refusal gives the shared cells back.
    async fn reserve_start(
        &self,
        tenant: &TenantId,
        request: &StartRequest,
        workflow: Option<Workflow>,
        deadline: Option<Instant>,
    ) -> Result<(Verification, SharedCells), StartError> {
        let now = self.clock.now();
        let channel = request.delivery.channel;
        let policy = self.policy(tenant, channel);
        let screening = Screening {
            tenant,
            to: &request.to,
            channel,
            purpose: request.purpose,
            deadline,
            now,
            resending: None,
        };
        let gate = self
            .pass_gates(screening, request.end_user_ip, true)
            .await?;
        let candidate = Verification {
            extension: request.extension.clone(),
            caller_ref: request.caller_ref.clone(),
            fallback: workflow.map(|w| Box::new(Fallback::begin(w, now))),
            ..Verification::new(
                self.store.new_id(tenant, &request.to),
                tenant.clone(),
                request.to.clone(),
                request.purpose,
                request.delivery.clone().or_locale(gate.locale.clone()),
                &policy,
                now,
            )
        };
        let created = self
            .store
            .create(candidate, &policy, gate.start_budget, now)
            .await;
        let (v, superseded) = match created {
            Ok(Creation::Created {
                verification,
                superseded,
            }) => (verification, superseded),
            refused => {
                // Nothing was created, so nothing will be sent.
                self.give_back(tenant, gate.shared).await;
                return Err(self.start_refused(tenant, &policy, refused?, now));
            }
        };
        tracing::debug!(verification = %v.id, "verification created");
        if let Some(old) = &superseded {
            self.status_changed(
                old,
                Some(Status::Pending),
                "superseded by a new verification",
            );
            self.end_live_call(old);
        }
        Ok((v, gate.shared))
    }
}

impl Verifier {
    /// What a start refused by the store step (or by a look ahead at it,
    /// [`Store::peek_start`](crate::store::Store::peek_start)) is told.
    pub(super) fn start_refused(
        &self,
        tenant: &TenantId,
        policy: &Policy,
        refused: Creation,
        now: std::time::SystemTime,
    ) -> StartError {
        match refused {
            Creation::Blocked {
                until: blocked_until,
            } => StartError::Blocked {
                retry_after: self.start_wait(policy, until(blocked_until, now)),
            },
            Creation::TooSoon { retry_at } => StartError::TooSoon {
                retry_after: until(retry_at, now),
            },
            Creation::Limited(limited) => self.refused_by_store(tenant, limited).into(),
            Creation::Created { .. } => {
                unreachable!("a refusal is never a creation")
            }
        }
    }
}

enum Claim {
    Fresh,
    Replay(Box<Verification>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CallerRef, Channel, Destination, Extension, Purpose, verification::Delivery,
    };

    fn request() -> StartRequest {
        StartRequest {
            to: Destination::parse("+14155550100").expect("valid"),
            extension: None,
            purpose: Purpose::PasswordReset,
            delivery: Delivery {
                channel: Channel::Voice,
                voice_mode: Some(VoiceMode::Confirm),
                locale: None,
            },
            idempotency_key: None,
            end_user_ip: None,
            caller_ref: CallerRef::default(),
            fallback: FallbackAsk::TenantDefault,
        }
    }

    #[test]
    fn a_start_without_the_later_fields_keeps_its_earlier_fingerprint() {
        let plain = request();
        assert_eq!(
            plain.fingerprint(),
            fingerprint(&["+14155550100", "password_reset", "voice", "confirm", "", ""]),
            "the six fields the earlier version stored"
        );
        let mut prints = vec![plain.fingerprint()];
        let mut desk = request();
        desk.extension = Extension::parse("4711");
        prints.push(desk.fingerprint());
        let mut referenced = request();
        referenced.caller_ref.reference = Some("4711".into());
        prints.push(referenced.fingerprint());
        let mut tagged = request();
        tagged.caller_ref.tags = [("extension".into(), "4711".into())].into();
        prints.push(tagged.fingerprint());
        prints.sort_unstable();
        prints.dedup();
        assert_eq!(prints.len(), 4, "each field is told apart from the others");
    }
}
