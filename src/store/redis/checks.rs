//! Reads and the transitions a caller or a provider asks for: check.lua,
//! get.lua, cancel.lua, delivery.lua and press.lua.

use std::time::{Duration, SystemTime};

use super::{
    RedisStore, record,
    record::{Reply, decode, millis, millis_of},
    scripts::{SCRIPTS, quota_args},
};
use crate::{
    domain::{
        CheckOutcome, CodeHash, DeliveryReport, Destination, Policy, Status, TenantId,
        Verification, VerificationId,
        limit::Budget,
        voice::{KeyOutcome, KeyPress, Menu, VoiceCall},
    },
    store::port::{BudgetedCheck, StoreError},
};

impl RedisStore {
    pub(in crate::store) async fn check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        now: SystemTime,
    ) -> Result<Option<(CheckOutcome, Verification)>, StoreError> {
        match self.run_check(tenant, id, candidates, None, now).await? {
            None => Ok(None),
            Some(BudgetedCheck::Checked(outcome, v)) => Ok(Some((outcome, v))),
            Some(_) => Err(StoreError::Unavailable(
                "the check script answered for a budget it was not given".into(),
            )),
        }
    }

    pub(in crate::store) async fn check_within_budget(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        budget: Budget,
        now: SystemTime,
    ) -> Result<Option<BudgetedCheck>, StoreError> {
        self.run_check(tenant, id, candidates, Some(budget), now)
            .await
    }

    /// check.lua, taking a cell of the failed-check budget when there is
    /// one.
    async fn run_check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        budget: Option<Budget>,
        now: SystemTime,
    ) -> Result<Option<BudgetedCheck>, StoreError> {
        let mut invocation = self.on_verification(&SCRIPTS.check, tenant, id);
        invocation.arg(millis(now));
        quota_args(&mut invocation, budget.map(|b| b.quota));
        invocation.arg(if self.durable() { "1" } else { "" });
        for c in candidates {
            invocation.arg(c.key_id.as_str()).arg(hex::encode(c.mac));
        }
        let bad_check = || StoreError::Unavailable("unexpected reply from the check script".into());
        let (reply, acknowledged): (Option<(String, u64, Reply)>, bool) =
            self.run_durably("check", invocation).await?;
        let Some((outcome, detail, reply)) = reply else {
            return Ok(None);
        };
        let checked = |outcome, reply: &str| Ok(BudgetedCheck::Checked(outcome, decode(reply)?));
        Ok(Some(match outcome.as_str() {
            "approved" if !acknowledged => return Err(unacknowledged(UNACKNOWLEDGED_APPROVAL)),
            "approved" if self.durable() => match self.acknowledge(tenant, id, now).await? {
                Some((true, v)) => BudgetedCheck::Checked(CheckOutcome::Approved, v),
                // Another check acknowledged it first, and told its caller.
                Some((false, v)) => BudgetedCheck::Checked(CheckOutcome::NotPending(v.status), v),
                None => return Ok(None),
            },
            "approved" => checked(CheckOutcome::Approved, &reply)?,
            "unacknowledged" => return Err(unacknowledged(UNACKNOWLEDGED_APPROVAL)),
            "rejected" if !acknowledged => return Err(unacknowledged(UNACKNOWLEDGED_ATTEMPT)),
            "rejected" => checked(CheckOutcome::Rejected, &reply)?,
            "not_pending" => {
                let v = decode(&reply)?;
                BudgetedCheck::Checked(CheckOutcome::NotPending(v.status), v)
            }
            "limited" => match budget {
                Some(budget) => {
                    BudgetedCheck::Limited(budget.refused(Duration::from_millis(detail)))
                }
                None => return Err(bad_check()),
            },
            "unbudgeted" => BudgetedCheck::Unbudgeted,
            _ => return Err(bad_check()),
        }))
    }

    /// Ends an approval's wait for its replicas (acknowledge.lua), once a
    /// WAIT has covered it: `true` when this call ended it (its caller is
    /// the one told), `false` when another had.
    async fn acknowledge(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(bool, Verification)>, StoreError> {
        let mut invocation = self.on_verification(&SCRIPTS.acknowledge, tenant, id);
        invocation.arg(millis(now));
        // Waited for too, so that a failover seldom undoes the end of the
        // wait; the approval itself is durable already, so the caller is
        // told of it either way (a failover that undoes this lets the same
        // code approve once more, and nothing else).
        let (reply, _): (Option<(u8, Reply)>, bool) =
            self.run_durably("acknowledge", invocation).await?;
        reply
            .map(|(ended, r)| Ok((ended == 1, decode(&r)?)))
            .transpose()
    }

    pub(in crate::store) async fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let mut invocation = self.on_verification(&SCRIPTS.get, tenant, id);
        invocation.arg(millis(now));
        let reply: Option<(Reply,)> = self.run("get", invocation).await?;
        reply.map(|(r,)| decode(&r)).transpose()
    }

    /// A verification as of `now`, read without writing: its public
    /// fields and its attempts, the status as [`Status::as_of`] has it.
    /// No script: the two reads go in a MULTI/EXEC, which costs Redis about
    /// half what a script does (every argument and reply element of a
    /// script crosses into Lua and back). Writing the expiry back is left
    /// to the expiry timer and the next transition.
    pub(in crate::store) async fn read(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let [hash, attempts] = self.inner.keys.verification(tenant, id);
        let mut fields = redis::cmd("HMGET");
        fields.arg(hash).arg(&record::READ_FIELDS);
        let mut listed = redis::cmd("LRANGE");
        listed.arg(attempts).arg(0).arg(-1);
        let (values, attempts): (Vec<Option<String>>, Vec<String>) =
            self.transaction("read", [fields, listed]).await?;
        record::read_of(&values, &attempts, now)
    }

    /// What a check needs to know first, read without a script: one HMGET
    /// of four fields rather than the whole verification.
    pub(in crate::store) async fn status_and_destination(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Status, Destination)>, StoreError> {
        let [hash, _] = self.inner.keys.verification(tenant, id);
        let mut command = redis::cmd("HMGET");
        command.arg(hash).arg(&record::STATUS_FIELDS);
        let fields = self.query("status", &command).await?;
        record::status_of(fields, now)
    }

    pub(in crate::store) async fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Verification, bool)>, StoreError> {
        let mut invocation = self.on_verification(&SCRIPTS.cancel, tenant, id);
        invocation.arg(millis(now));
        let reply: Option<(u8, Reply)> = self.run("cancel", invocation).await?;
        reply.map(|(c, r)| Ok((decode(&r)?, c == 1))).transpose()
    }

    pub(in crate::store) async fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<(bool, Verification)>, StoreError> {
        let (rank, status) = DeliveryReport::rank(&report.status);
        let mut invocation = self.on_verification(&SCRIPTS.delivery, tenant, id);
        invocation
            .arg(millis(now))
            .arg(&report.reference)
            .arg(&report.status)
            .arg(rank)
            .arg(status.map_or("", record::delivery_status_str))
            .arg(report.failure_reason().unwrap_or_default())
            .arg(millis_of(policy.resend_cooldown))
            .arg(policy.max_send_attempts);
        let reply: Option<(u8, Reply)> = self.run("delivery", invocation).await?;
        reply.map(|(c, r)| Ok((c == 1, decode(&r)?))).transpose()
    }

    pub(in crate::store) async fn press(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        press: KeyPress<'_>,
        now: SystemTime,
    ) -> Result<Option<(Option<KeyOutcome>, Verification)>, StoreError> {
        let KeyPress {
            call,
            menu,
            digits,
            max_reprompts,
            step,
            reveal,
        } = press;
        let mut invocation = self.on_verification(&SCRIPTS.press, tenant, id);
        invocation
            .arg(millis(now))
            .arg(hex::encode(VoiceCall::hash_token(&call.token)))
            .arg(&call.call_sid)
            .arg(match menu {
                Menu::Main => "main",
                Menu::Fraud => "fraud",
            })
            .arg(digits)
            .arg(max_reprompts)
            .arg(step)
            .arg(reveal.key_id.as_str())
            .arg(hex::encode(reveal.mac))
            .arg(if self.durable() { "1" } else { "" });
        let (reply, acknowledged): (Option<(String, Reply)>, bool) =
            self.run_durably("press", invocation).await?;
        let Some((outcome, reply)) = reply else {
            return Ok(None);
        };
        let v = decode(&reply)?;
        let outcome = match outcome.as_str() {
            "forbidden" => None,
            // An approval the replicas did not hold in time: the user is
            // asked to press again, and the approval waits for that press.
            // The other keys' outcomes are told at once: a wrong guess
            // asks again anyway, and a fraud report only ever ends a
            // verification.
            "approved" if !acknowledged => Some(KeyOutcome::Unacknowledged),
            "approved" if self.durable() => {
                return match self.acknowledge(tenant, id, now).await? {
                    Some((true, v)) => Ok(Some((Some(KeyOutcome::Approved), v))),
                    Some((false, v)) => Ok(Some((Some(KeyOutcome::NotPending(v.status)), v))),
                    None => Ok(None),
                };
            }
            "approved" => Some(KeyOutcome::Approved),
            "reprompt" => Some(KeyOutcome::Reprompt),
            "wrong_digits" => Some(KeyOutcome::WrongDigits),
            "hangup" => Some(KeyOutcome::Hangup),
            "reveal" => Some(KeyOutcome::Reveal),
            "fraud_menu" => Some(KeyOutcome::FraudMenu),
            "back_to_main" => Some(KeyOutcome::BackToMain),
            "denied" => Some(KeyOutcome::Denied),
            "not_pending" => Some(KeyOutcome::NotPending(v.status)),
            _ => {
                return Err(StoreError::Unavailable(
                    "unexpected reply from the press script".into(),
                ));
            }
        };
        Ok(Some((outcome, v)))
    }
}

/// What a check is told when its change stands on the primary but fewer
/// replicas than `store.redis.wait_replicas` acknowledged it in time.
const UNACKNOWLEDGED_APPROVAL: &str = "the approval is stored but the Redis replicas did not acknowledge it in time; check the same code again";
const UNACKNOWLEDGED_ATTEMPT: &str =
    "the attempt is counted but the Redis replicas did not acknowledge it in time";

pub(super) fn unacknowledged(what: &str) -> StoreError {
    StoreError::Unavailable(what.to_owned())
}
