//! The steps that send: create.lua (a verification with its first send
//! reserved), resend.lua and complete.lua.

use std::time::{Duration, SystemTime};

use super::{
    RedisStore,
    checks::unacknowledged,
    record,
    record::{Reply, attempt_json, decode, millis, millis_of},
    scripts::{Invocation, SCRIPTS, quota_args},
};
use crate::{
    domain::{
        Destination, Policy, SendOutcome, TenantId, Verification, VerificationId,
        limit::{Budget, Limit},
        starts::RecentStarts,
        verification::SendRefused,
    },
    store::port::{Blocked, BudgetKey, CompletedSend, Creation, Reservation, StoreError},
};

impl RedisStore {
    /// What [`Self::create`] would refuse a start to `to` with now, read
    /// without writing anything: a block, the least gap (create.lua's
    /// reading of `s:`), the destination's budget.
    pub(in crate::store) async fn peek_start(
        &self,
        tenant: &TenantId,
        to: &Destination,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Creation>, StoreError> {
        if let Some(until) = self
            .blocked_until(tenant, Blocked::Destination(to), now)
            .await?
        {
            return Ok(Some(Creation::Blocked { until }));
        }
        let mut hmget = redis::cmd("HMGET");
        hmget
            .arg(self.inner.keys.recent_starts(tenant, to))
            .arg("last")
            .arg("count");
        let (last, count): (Option<u64>, Option<u32>) = self.query("peek_start", &hmget).await?;
        let recent = last.map(|ms| RecentStarts {
            last_at: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
            count: count.unwrap_or(1),
        });
        if let Err(retry_at) = RecentStarts::admit(recent, policy, now) {
            return Ok(Some(Creation::TooSoon { retry_at }));
        }
        let wait = self
            .cell_wait(
                tenant,
                BudgetKey::Destination(budget.limit, to),
                budget.quota,
                now,
            )
            .await?;
        Ok((!wait.is_zero()).then(|| Creation::Limited(budget.refused(wait))))
    }

    pub(in crate::store) async fn create(
        &self,
        mut candidate: Verification,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Creation, StoreError> {
        // The candidate goes with its first send reserved, as the memory
        // store keeps it; the reply need not carry it back.
        candidate
            .reserve_send(policy, now)
            .expect("a new verification may always send once");
        let keys = &self.inner.keys;
        let (tenant, to) = (&candidate.tenant, &candidate.to);
        let [hash, attempts] = keys.verification(tenant, &candidate.id);
        let mut invocation = Invocation::of(&SCRIPTS.create);
        invocation
            .key(keys.pending(tenant, to, candidate.pending_kind()))
            .key(hash)
            .key(attempts)
            .key(keys.destination_budget(budget.limit.as_str(), tenant, to))
            .key(keys.recent_starts(tenant, to))
            .key(keys.block(tenant, Blocked::Destination(to)))
            .key(keys.history(tenant, to))
            .declare(keys.deadlines_in(candidate.id.shard()))
            .arg(millis(now))
            .arg(keys.base(candidate.id.shard(), tenant))
            .arg(millis_of(policy.resend_cooldown))
            .arg(millis_of(policy.starts_window))
            .arg(keys.destination_budget(FAILED_CHECKS, tenant, to));
        quota_args(&mut invocation, Some(budget.quota));
        let watch = keys.watch(tenant, &candidate.id);
        for (name, value) in record::fields(&candidate, self.inner.retention, &watch) {
            invocation.arg(name).arg(value);
        }
        let (outcome, detail): (String, String) = self.run("create", invocation).await?;
        let bad = || StoreError::Unavailable("unexpected reply from the create script".into());
        let millis_in = |detail: &str| detail.parse().map(Duration::from_millis).map_err(|_| bad());
        Ok(match outcome.as_str() {
            "created" => Creation::Created {
                verification: candidate,
                superseded: (!detail.is_empty()).then(|| decode(&detail)).transpose()?,
            },
            "blocked" => Creation::Blocked {
                until: SystemTime::UNIX_EPOCH + millis_in(&detail)?,
            },
            "too_soon" => Creation::TooSoon {
                retry_at: SystemTime::UNIX_EPOCH + millis_in(&detail)?,
            },
            "limited" => Creation::Limited(budget.refused(millis_in(&detail)?)),
            _ => return Err(bad()),
        })
    }

    pub(in crate::store) async fn reserve_resend(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        to: &Destination,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Reservation>, StoreError> {
        self.reserve(tenant, id, to, None, policy, budget, now)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn reserve_step(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        to: &Destination,
        after: u8,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Reservation>, StoreError> {
        self.reserve(tenant, id, to, Some(after), policy, budget, now)
            .await
    }

    pub(in crate::store) async fn end_fallback(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        after: u8,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.on_verification(&SCRIPTS.fallback_end, tenant, id);
        invocation.arg(millis(now)).arg(after);
        let ended: u8 = self.run("fallback_end", invocation).await?;
        Ok(ended == 1)
    }

    /// resend.lua: a caller's resend (`step` none), or the claim of the
    /// fallback step after `step`.
    #[allow(clippy::too_many_arguments)]
    async fn reserve(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        to: &Destination,
        step: Option<u8>,
        policy: &Policy,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<Reservation>, StoreError> {
        let keys = &self.inner.keys;
        let mut invocation = self.on_verification(&SCRIPTS.resend, tenant, id);
        invocation
            .key(keys.destination_budget(budget.limit.as_str(), tenant, to))
            .arg(millis(now))
            .arg(millis_of(policy.resend_cooldown))
            .arg(millis_of(policy.send_lease))
            .arg(policy.max_send_attempts);
        quota_args(&mut invocation, Some(budget.quota));
        invocation
            .arg(keys.destination_budget(FAILED_CHECKS, tenant, to))
            .arg(step.map(|s| s.to_string()).unwrap_or_default());
        let reply: Option<Vec<String>> = self.run("resend", invocation).await?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        let bad = || StoreError::Unavailable("unexpected reply from the resend script".into());
        let refused = |reason, verification: &str| -> Result<Reservation, StoreError> {
            Ok(Reservation::Refused {
                verification: decode(verification)?,
                reason,
            })
        };
        Ok(Some(match reply.as_slice() {
            [outcome, v] if outcome == "granted" => Reservation::Granted(decode(v)?),
            [outcome, wait] if outcome == "limited" => Reservation::Limited(
                budget.refused(Duration::from_millis(wait.parse().map_err(|_| bad())?)),
            ),
            [outcome, status, v] if outcome == "not_pending" => refused(
                SendRefused::NotPending(record::status(status).ok_or_else(bad)?),
                v,
            )?,
            [outcome, retry_at, v] if outcome == "cooldown" => refused(
                SendRefused::Cooldown {
                    retry_at: SystemTime::UNIX_EPOCH
                        + Duration::from_millis(retry_at.parse().map_err(|_| bad())?),
                },
                v,
            )?,
            [outcome, _, v] if outcome == "send_limit" => {
                refused(SendRefused::SendLimitReached, v)?
            }
            _ => return Err(bad()),
        }))
    }

    pub(in crate::store) async fn complete_send(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        send: CompletedSend,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let match_digits = crate::domain::MatchDigits::generate(policy.match_digits);
        let mut invocation = self.on_verification(&SCRIPTS.complete, tenant, id);
        let (code_key, code_mac) = send.new_hash.as_ref().map_or_else(Default::default, |h| {
            (h.key_id.as_str().to_owned(), hex::encode(h.mac))
        });
        let (call_token, call_sid) = send.call.as_ref().map_or_else(Default::default, |c| {
            (
                hex::encode(c.token_hash()),
                c.call_sid.clone().unwrap_or_default(),
            )
        });
        invocation
            .arg(millis(now))
            .arg(millis_of(policy.code_ttl))
            .arg(match send.outcome {
                SendOutcome::Accepted => "accepted",
                SendOutcome::Unknown => "unknown",
                SendOutcome::Refused => "refused",
            })
            .arg(send.delivery.channel.as_str())
            .arg(send.delivery.voice_mode.map_or("", |m| m.as_str()))
            .arg(send.delivery.locale.as_ref().map_or("", |l| l.as_str()))
            .arg(code_key)
            .arg(code_mac)
            .arg(call_token)
            .arg(call_sid)
            .arg(match_digits.as_str())
            .arg(if send.fallback_step { "1" } else { "" });
        for attempt in &send.attempts {
            invocation.arg(attempt_json(attempt));
        }
        // The caller is told of the send, and of the verification it
        // superseded (create.lua, on the primary before this: a WAIT
        // counts every write up to its connection's last).
        let (reply, acknowledged): (Option<(Reply,)>, bool) =
            self.run_durably("complete", invocation).await?;
        if !acknowledged {
            return Err(unacknowledged(
                "the send is recorded but the Redis replicas did not acknowledge it in time",
            ));
        }
        reply.map(|(r,)| decode(&r)).transpose()
    }
}

/// The failed-check budget a verification names for check.lua (create.lua
/// and resend.lua write it into the record).
const FAILED_CHECKS: &str = Limit::FailedChecksPerDestination.as_str();
