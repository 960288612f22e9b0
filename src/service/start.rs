//! Starting a verification: idempotency, rate limits, the pending lookup or
//! creation, the code, the send, and recording it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{
    Verifier,
    errors::StartError,
    start_request::{IdempotencyKey, StartRequest},
};
use crate::{
    delivery::{Dispatch, FailureKind, Message},
    domain::{
        Channel, Code, DeliveryStatus, Destination, SendAttempt, TenantId, Verification, VoiceMode,
        destination::PhoneNumber,
        verification::{Delivery, SendRefused},
        voice::{CallToken, VoiceCall},
    },
    ratelimit::{Limit, LimitError},
    store::{Blocked, CompletedSend, Fingerprint, IDEMPOTENCY_LEASE, Idempotency, Reservation},
};

impl StartRequest {
    /// Everything the request asks for, so a reused key with another
    /// request is told apart from a retry.
    fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        let ip = self
            .end_user_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let fields = [
            self.to.as_str(),
            self.purpose.as_str(),
            self.delivery.channel.as_str(),
            self.delivery.voice_mode.map_or("", VoiceMode::as_str),
            self.delivery.locale.as_ref().map_or("", |l| l.as_str()),
            &ip,
        ];
        for field in fields {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.finalize().into()
    }
}

impl Verifier {
    /// Starts a verification or resends on the pending one.
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
        let deadline = deadline.map(|d| d.checked_sub(RECORDING_MARGIN).unwrap_or(d));
        let this = Arc::clone(self);
        // The task stays in the RPC's span (and so in the caller's trace).
        let task = tokio::spawn(
            async move { this.start_idempotent(&tenant, &request, deadline).await }
                .in_current_span(),
        );
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => Err(StartError::Interrupted),
        }
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(%tenant, to = %request.to.masked(), channel = request.delivery.channel.as_str())
    )]
    async fn start_idempotent(
        &self,
        tenant: &TenantId,
        request: &StartRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let asked = request;
        let settings = self.settings.tenants.get(tenant);
        if !settings.allows(asked.delivery.channel) {
            return Err(StartError::ChannelNotAllowed(asked.delivery.channel));
        }
        if self.dispatcher.route(asked.delivery.channel).is_none() {
            return Err(StartError::ChannelDisabled(asked.delivery.channel));
        }
        // A call's mode: the one asked for, else the tenant's default, and
        // one the tenant's policy allows; settled beside the channel,
        // before anything is looked up or spent.
        let with_mode;
        let request = match asked.delivery.channel {
            Channel::Voice => {
                let mode = settings
                    .voice
                    .mode_policy()
                    .resolve(asked.delivery.voice_mode)
                    .map_err(StartError::VoiceModeNotAllowed)?;
                with_mode = StartRequest {
                    delivery: Delivery {
                        voice_mode: Some(mode),
                        ..asked.delivery.clone()
                    },
                    ..asked.clone()
                };
                &with_mode
            }
            Channel::Sms | Channel::Email => asked,
        };
        // The idempotency lookup comes before every rate limit, so a retried
        // success is never refused.
        let Some(key) = &request.idempotency_key else {
            self.limits.request(tenant)?;
            return self.start_once(tenant, request, deadline).await;
        };
        if let Claim::Replay(stored) = self
            // What the caller sent, so that a retry matches whatever the
            // default mode has become since.
            .claim_idempotency_key(tenant, key, asked.fingerprint(), deadline)
            .await?
        {
            tracing::info!(verification = %stored.id, "idempotent replay");
            return Ok(*stored);
        }
        let result = match self.limits.request(tenant) {
            Ok(()) => self.start_once(tenant, request, deadline).await,
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

    async fn start_once(
        &self,
        tenant: &TenantId,
        request: &StartRequest,
        deadline: Option<Instant>,
    ) -> Result<Verification, StartError> {
        let now = self.clock.now();
        let channel = request.delivery.channel;
        // Countries and number types that must never get a code: refused
        // before anything is spent or looked up.
        let plan = self.settings.fraud.screen(channel, &request.to)?;
        // A destination whose user reported a call as fraud gets nothing
        // more for a while; checked before any budget is spent.
        if let Some(blocked_until) = self
            .store
            .blocked_until(tenant, Blocked::Destination(&request.to), now)
            .await?
        {
            return Err(StartError::Blocked {
                retry_after: until(blocked_until, now),
            });
        }
        if let (Some(plan), Destination::Phone(phone)) = (plan, &request.to) {
            self.guard_prefix(tenant, phone, plan.calling_code, now)
                .await?;
        }
        let start_quota = self
            .limits
            .start(tenant, &request.to, request.end_user_ip)
            .await?;
        let candidate = Verification::new(
            self.store.new_id(tenant, &request.to),
            tenant.clone(),
            request.to.clone(),
            request.purpose,
            request.delivery.clone(),
            &self.policy,
            now,
        );
        let (v, is_new) = match self
            .store
            .reserve_send(candidate, &self.policy, start_quota, now)
            .await?
        {
            Reservation::Granted {
                verification,
                is_new,
            } => (verification, is_new),
            Reservation::Refused {
                reason: SendRefused::Cooldown { retry_at },
                ..
            } => {
                return Err(StartError::Cooldown {
                    retry_after: until(retry_at, now),
                });
            }
            Reservation::Refused {
                verification,
                reason: SendRefused::SendLimitReached,
            } => {
                return Err(StartError::SendLimitReached {
                    retry_after: until(verification.expires_at, now),
                });
            }
            Reservation::Limited { retry_after } => {
                return Err(self.limits.start_refused(tenant, retry_after).into());
            }
        };
        tracing::debug!(verification = %v.id, resend = !is_new, "send reserved");
        // A resend replaces any call still ringing or running.
        self.end_live_call(&v);

        let code = Code::generate(self.policy.code_length);
        let hash = self.keys.hash(tenant, &v.id, &code);
        let call_token = (request.delivery.channel == Channel::Voice).then(CallToken::generate);
        let message = Message {
            tenant: tenant.clone(),
            verification_id: v.id.clone(),
            to: v.to.clone(),
            purpose: v.purpose,
            delivery: request.delivery.clone(),
            code,
            match_digits: v.match_digits.clone(),
            call_token: call_token.clone(),
            valid_for: self.policy.code_ttl,
            app_name: self.settings.tenants.get(tenant).app_name.clone(),
        };
        let budget = deadline.map_or(self.settings.send_timeout, |d| {
            d.saturating_duration_since(Instant::now())
                .min(self.settings.send_timeout)
        });
        let carries_code = message.carries_code();
        let dispatch = self.dispatch(&message, budget).await;
        // The plaintext code goes no further than the providers.
        drop(message);

        let sent_at = self.clock.now();
        let channel = request.delivery.channel;
        let attempts = dispatch
            .attempts
            .iter()
            .map(|a| SendAttempt {
                channel,
                status: match a.result {
                    Ok(_) => DeliveryStatus::Accepted,
                    Err(_) => DeliveryStatus::Failed,
                },
                provider: a.provider.clone(),
                at: a.at,
                error_reason: a.result.as_ref().err().map(|e| e.reason.clone()),
                reference: a.result.as_ref().ok().and_then(|r| r.reference.clone()),
                provider_status: None,
            })
            .collect();
        let recorded = self
            .store
            .complete_send(
                tenant,
                &v.id,
                CompletedSend {
                    delivery: request.delivery.clone(),
                    attempts,
                    // Press-# and number-matching calls deliver no code, so
                    // none is kept: only the call can approve them.
                    new_hash: carries_code.then_some(hash),
                    call: match (&dispatch.result, &call_token) {
                        (Ok(receipt), Some(token)) => {
                            let mut call = VoiceCall::new(token);
                            call.call_sid.clone_from(&receipt.reference);
                            Some(call)
                        }
                        _ => None,
                    },
                },
                &self.policy,
                sent_at,
            )
            .await?
            .unwrap_or(v);
        self.status_changed(
            &recorded,
            // A resend is granted on a pending verification only.
            (!is_new).then_some(crate::domain::Status::Pending),
            if is_new { "started" } else { "resent" },
        );
        if recorded.status == crate::domain::Status::Pending && !self.store.keeps_deadlines() {
            self.expiry
                .schedule(recorded.expires_at, tenant.clone(), recorded.id.clone());
        }
        match dispatch.result {
            Ok(receipt) => {
                // The audit event says it started; metrics count sends.
                tracing::debug!(
                    verification = %recorded.id,
                    provider = receipt.provider,
                    tries = dispatch.attempts.len(),
                    resend = !is_new,
                    "code sent"
                );
                Ok(recorded)
            }
            Err(error) => {
                tracing::warn!(
                    verification = %recorded.id,
                    %error,
                    tries = dispatch.attempts.len(),
                    status = recorded.status.as_str(),
                    "send failed"
                );
                Err(StartError::Delivery {
                    error,
                    verification: recorded.id,
                })
            }
        }
    }

    /// SMS pumping: a number range (prefix) or a country getting more
    /// starts than any real user base would. A prefix that trips its budget
    /// is blocked for `fraud.prefix_block`, and the security team hears of
    /// it.
    async fn guard_prefix(
        &self,
        tenant: &TenantId,
        phone: &PhoneNumber,
        calling_code: u16,
        now: std::time::SystemTime,
    ) -> Result<(), StartError> {
        let prefix = phone.prefix();
        if let Some(blocked_until) = self
            .store
            .blocked_until(tenant, Blocked::Prefix(prefix), now)
            .await?
        {
            return Err(StartError::PrefixBlocked {
                retry_after: until(blocked_until, now),
            });
        }
        match self.limits.phone_start(tenant, prefix, calling_code).await {
            Err(LimitError::Limited(limited)) if limited.limit == Limit::StartsPerPrefix => {
                let block = self.settings.fraud.prefix_block;
                self.settings.metrics.prefix_blocked(tenant);
                self.store
                    .block(tenant, Blocked::Prefix(prefix), now + block, now)
                    .await?;
                tracing::warn!(
                    target: "verifyd::audit",
                    event = "prefix_blocked",
                    %tenant,
                    calling_code,
                    prefix = %mask_prefix(prefix),
                    blocked_for_secs = block.as_secs(),
                    "a number prefix exceeded its start budget (suspected SMS pumping); it is blocked"
                );
                Err(limited.into())
            }
            other => Ok(other?),
        }
    }

    /// Renders the message and hands it to the channel's route.
    async fn dispatch(&self, message: &Message, budget: Duration) -> Dispatch {
        let channel = message.delivery.channel;
        let Some(route) = self.dispatcher.route(channel) else {
            // Checked before anything was reserved; kept total for safety.
            return Dispatch::failed(
                "none",
                FailureKind::Rejected,
                "channel disabled",
                self.clock.now(),
            );
        };
        let templates = self
            .settings
            .tenants
            .get(&message.tenant)
            .templates(&self.dispatcher.templates);
        match templates.render(message) {
            Ok(content) => route.send(message, &content, budget).await,
            Err(error) => {
                tracing::error!(%error, "cannot render the message");
                Dispatch::failed(
                    "templates",
                    FailureKind::Rejected,
                    "message template failed",
                    self.clock.now(),
                )
            }
        }
    }
}

/// A prefix for logs: its first four characters (the country code and a
/// digit or two), the rest hidden.
fn mask_prefix(prefix: &str) -> String {
    let shown: String = prefix.chars().take(4).collect();
    format!("{shown}{}", "*".repeat(prefix.len().saturating_sub(4)))
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

/// Kept back from the caller's deadline for recording the send, so the
/// answer reaches the caller before it gives up.
const RECORDING_MARGIN: Duration = Duration::from_millis(50);

enum Claim {
    Fresh,
    Replay(Box<Verification>),
}
