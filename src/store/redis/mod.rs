//! The shared store: Redis or Redis Cluster, so that several replicas act
//! as one service.
//!
//! Every operation that reads and then writes is one Lua script, run
//! atomically by Redis: the scripts in `lua/` mirror the transitions of
//! `domain::Verification` one for one (`prelude.lua` says which). Nothing is
//! read into Rust, changed and written back. Time is the service clock's,
//! passed to each script, so a test's manual clock drives this store as it
//! drives the memory store; Redis TTLs only clean up.
//!
//! Redis holds codes only as HMACs (the key stays in verifyd's
//! configuration), call tokens only as SHA-256, and destinations only inside
//! values, never in key names (see `keys`).

mod changes;
pub(super) mod connection;
mod keys;
mod record;

use std::{
    sync::{Arc, LazyLock},
    time::{Duration, SystemTime},
};

pub use connection::RedisConfig;
use redis::{FromRedisValue, Script, ScriptInvocation, aio::ConnectionLike as _};
use tokio_util::sync::CancellationToken;

use self::{
    changes::Changes,
    connection::Connection,
    keys::Keys,
    record::{Reply, attempt_json, decode, millis, millis_of},
};
use super::{
    feed::Subscription,
    port::{
        Blocked, BudgetKey, BudgetedCheck, CompletedSend, Creation, Fingerprint, IDEMPOTENCY_LEASE,
        IDEMPOTENCY_WINDOW, Idempotency, Reservation, StoreError,
    },
};
use crate::domain::{
    CheckOutcome, CodeHash, DeliveryReport, Destination, Policy, Status, TenantId, Verification,
    VerificationId,
    limit::{Budget, Limit, Quota},
    verification::SendRefused,
    voice::{KeyOutcome, KeyPress, Menu, VoiceCall},
};
use crate::telemetry::Metrics;

/// The failed-check budget a verification names for check.lua (create.lua
/// and resend.lua write it into the record).
const FAILED_CHECKS: &str = Limit::FailedChecksPerDestination.as_str();

const PRELUDE: &str = include_str!("lua/prelude.lua");
const BUDGET: &str = include_str!("lua/budget.lua");

/// The scripts. `Script` runs EVALSHA and, when a node answers NOSCRIPT
/// (fresh or restarted), loads the script with SCRIPT LOAD and runs it again.
struct Scripts {
    create: Script,
    resend: Script,
    complete: Script,
    check: Script,
    get: Script,
    cancel: Script,
    delivery: Script,
    press: Script,
    block: Script,
    idempotency_begin: Script,
    idempotency_finish: Script,
    idempotency_abandon: Script,
    gcra: Script,
    gcra_return: Script,
    gcra_wait: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
    let with_budget = |body: &str| format!("{BUDGET}\n{body}");
    Scripts {
        create: with_prelude(&with_budget(include_str!("lua/create.lua"))),
        resend: with_prelude(&with_budget(include_str!("lua/resend.lua"))),
        complete: with_prelude(include_str!("lua/complete.lua")),
        check: with_prelude(&with_budget(include_str!("lua/check.lua"))),
        get: with_prelude(include_str!("lua/get.lua")),
        cancel: with_prelude(include_str!("lua/cancel.lua")),
        delivery: with_prelude(include_str!("lua/delivery.lua")),
        press: with_prelude(include_str!("lua/press.lua")),
        block: Script::new(include_str!("lua/block.lua")),
        idempotency_begin: Script::new(include_str!("lua/idempotency_begin.lua")),
        idempotency_finish: Script::new(include_str!("lua/idempotency_finish.lua")),
        idempotency_abandon: Script::new(include_str!("lua/idempotency_abandon.lua")),
        gcra: Script::new(&with_budget(include_str!("lua/gcra.lua"))),
        gcra_return: Script::new(&with_budget(include_str!("lua/gcra_return.lua"))),
        gcra_wait: Script::new(&with_budget(include_str!("lua/gcra_wait.lua"))),
    }
});

#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: Connection,
    keys: Keys,
    changes: Changes,
    timeout: Duration,
    retention: Duration,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// Connects lazily: this succeeds while Redis is down, and requests fail
    /// with UNAVAILABLE until it is back. `index_key` hashes destinations
    /// into key names; `stop` ends the pub/sub task.
    ///
    /// # Errors
    /// When the configuration cannot make a client (e.g. a malformed URL).
    pub fn open(
        config: &RedisConfig,
        index_key: &[u8],
        retention: Duration,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        // rediss:// speaks rustls, with the one crypto provider used
        // everywhere: ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connection = Connection::open(config)
            .map_err(|e| StoreError::Unavailable(format!("cannot configure Redis: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                keys: Keys::new(&config.key_prefix, index_key),
                changes: Changes::start(config, stop),
                timeout: config.timeout,
                retention,
                metrics,
            }),
        })
    }

    /// Runs one script within the command timeout; `operation` names it in
    /// the store metrics.
    async fn run<T: FromRedisValue>(
        &self,
        operation: &'static str,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.inner.connection.clone();
        self.bounded(operation, invocation.invoke_async(&mut connection))
            .await
    }

    /// Runs one plain command within the command timeout.
    async fn query<T: FromRedisValue>(
        &self,
        operation: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut connection = self.inner.connection.clone();
        self.bounded(operation, command.query_async(&mut connection))
            .await
    }

    /// Whatever goes wrong (Redis down, frozen past the timeout, or
    /// answering nonsense) is `Unavailable`: the caller fails closed.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let began = std::time::Instant::now();
        let result = match tokio::time::timeout(self.inner.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::Unavailable(describe(&error))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.inner.timeout
            ))),
        };
        self.inner
            .metrics
            .store_operation("redis", operation, result.is_ok(), began.elapsed());
        result
    }

    /// An invocation of a script on one verification: its hash and its
    /// attempts list are the keys.
    fn on_verification<'a>(
        &self,
        script: &'a Script,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in self.inner.keys.verification(tenant, id) {
            invocation.key(key);
        }
        invocation
    }

    /// A new verification id in the shard of its destination.
    pub fn new_id(&self, tenant: &TenantId, to: &Destination) -> VerificationId {
        VerificationId::generate_in(self.inner.keys.destination(tenant, to).shard())
    }

    pub(super) async fn create(
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
        let mut invocation = SCRIPTS.create.prepare_invoke();
        invocation
            .key(keys.pending(tenant, to, candidate.purpose))
            .key(hash)
            .key(attempts)
            .key(keys.destination_budget(budget.limit.as_str(), tenant, to))
            .key(keys.recent_starts(tenant, to))
            .arg(millis(now))
            .arg(keys.base(candidate.id.shard(), tenant))
            .arg(millis_of(policy.resend_cooldown))
            .arg(millis_of(policy.code_ttl))
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
            "too_soon" => Creation::TooSoon {
                retry_at: SystemTime::UNIX_EPOCH + millis_in(&detail)?,
            },
            "limited" => Creation::Limited(budget.refused(millis_in(&detail)?)),
            _ => return Err(bad()),
        })
    }

    pub(super) async fn reserve_resend(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        to: &Destination,
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
        invocation.arg(keys.destination_budget(FAILED_CHECKS, tenant, to));
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

    pub(super) async fn complete_send(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        send: CompletedSend,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let accepted = send
            .attempts
            .last()
            .is_some_and(|a| a.status == crate::domain::DeliveryStatus::Accepted);
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
            .arg(if accepted { "1" } else { "0" })
            .arg(send.delivery.channel.as_str())
            .arg(send.delivery.voice_mode.map_or("", |m| m.as_str()))
            .arg(send.delivery.locale.as_ref().map_or("", |l| l.as_str()))
            .arg(code_key)
            .arg(code_mac)
            .arg(call_token)
            .arg(call_sid)
            .arg(match_digits.as_str());
        for attempt in &send.attempts {
            invocation.arg(attempt_json(attempt));
        }
        let reply: Option<(Reply,)> = self.run("complete", invocation).await?;
        reply.map(|(r,)| decode(&r)).transpose()
    }

    pub(super) async fn check(
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

    pub(super) async fn check_within_budget(
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
        for c in candidates {
            invocation.arg(c.key_id.as_str()).arg(hex::encode(c.mac));
        }
        let bad_check = || StoreError::Unavailable("unexpected reply from the check script".into());
        let reply: Option<(String, u64, Reply)> = self.run("check", invocation).await?;
        let Some((outcome, detail, reply)) = reply else {
            return Ok(None);
        };
        let checked = |outcome, reply: &str| Ok(BudgetedCheck::Checked(outcome, decode(reply)?));
        Ok(Some(match outcome.as_str() {
            "approved" => checked(CheckOutcome::Approved, &reply)?,
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

    pub(super) async fn get(
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
    pub(super) async fn read(
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

    /// Runs `commands` in a MULTI/EXEC and converts what EXEC answers; any
    /// refusal fails closed. MULTI, the commands and EXEC go as a plain
    /// pipeline, each reply read here, because redis-rs 1.8's own
    /// transactions break the connection when Redis refuses MULTI itself
    /// (an ACL without it, or `LOADING`): counting the replies underflows
    /// in the connection's task, and every request in flight on it fails
    /// (the ACL test `a_redis_that_refuses_multi…` tells the two apart).
    async fn transaction<T: FromRedisValue>(
        &self,
        operation: &'static str,
        commands: impl IntoIterator<Item = redis::Cmd>,
    ) -> Result<T, StoreError> {
        let mut pipeline = redis::pipe();
        pipeline.cmd("MULTI");
        for command in commands {
            pipeline.add_command(command);
        }
        pipeline.cmd("EXEC");
        let count = pipeline.len();
        let mut connection = self.inner.connection.clone();
        let mut replies = self
            .bounded(
                operation,
                connection.req_packed_commands(&pipeline, 0, count),
            )
            .await?;
        let refused = |value: &redis::Value| match value {
            redis::Value::ServerError(error) => Some(error.to_string()),
            _ => None,
        };
        if let Some(problem) = replies.iter().find_map(refused) {
            return Err(StoreError::Unavailable(problem));
        }
        if replies.len() != count {
            return Err(StoreError::Unavailable(
                "Redis answered a transaction in part".into(),
            ));
        }
        // Every reply but EXEC's is OK or QUEUED.
        let exec = replies.pop().unwrap_or(redis::Value::Nil);
        T::from_redis_value(exec).map_err(|_| StoreError::Unavailable(UNREADABLE.into()))
    }

    /// What a check needs to know first, read without a script: one HMGET
    /// of four fields rather than the whole verification.
    pub(super) async fn status_and_destination(
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

    pub(super) async fn cancel(
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

    pub(super) async fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
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
            .arg(report.failure_reason().unwrap_or_default());
        let reply: Option<(u8, Reply)> = self.run("delivery", invocation).await?;
        reply.map(|(c, r)| Ok((c == 1, decode(&r)?))).transpose()
    }

    pub(super) async fn press(
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
            .arg(max_reprompts);
        let reply: Option<(String, Reply)> = self.run("press", invocation).await?;
        let Some((outcome, reply)) = reply else {
            return Ok(None);
        };
        let v = decode(&reply)?;
        let outcome = match outcome.as_str() {
            "forbidden" => None,
            "approved" => Some(KeyOutcome::Approved),
            "reprompt" => Some(KeyOutcome::Reprompt),
            "wrong_digits" => Some(KeyOutcome::WrongDigits),
            "hangup" => Some(KeyOutcome::Hangup),
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

    pub(super) async fn block(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        until: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut invocation = SCRIPTS.block.prepare_invoke();
        invocation
            .key(self.inner.keys.block(tenant, what))
            .arg(millis(until))
            .arg(millis(now));
        self.run::<u8>("block", invocation).await.map(drop)
    }

    pub(super) async fn blocked_until(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.inner.keys.block(tenant, what));
        let until: Option<u64> = self.query("blocked_until", &get).await?;
        Ok(until
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            .filter(|until| *until > now))
    }

    pub(super) async fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Result<Idempotency, StoreError> {
        let mut invocation = SCRIPTS.idempotency_begin.prepare_invoke();
        invocation
            .key(self.inner.keys.idempotency(tenant, key))
            .arg(millis(now))
            .arg(hex::encode(fingerprint))
            .arg(millis_of(IDEMPOTENCY_LEASE))
            .arg(millis_of(IDEMPOTENCY_WINDOW));
        let reply: redis::Value = self.run("idempotency_begin", invocation).await?;
        let bad = || StoreError::Unavailable("unexpected reply from the idempotency script".into());
        if let Ok((word, response)) = <(String, String)>::from_redis_value(reply.clone()) {
            return match word.as_str() {
                "replay" => Ok(Idempotency::Replay(Box::new(decode(&response)?))),
                _ => Err(bad()),
            };
        }
        match String::from_redis_value(reply).map_err(|_| bad())?.as_str() {
            "started" => Ok(Idempotency::Started),
            "mismatch" => Ok(Idempotency::Mismatch),
            "in_flight" => Ok(Idempotency::InFlight),
            _ => Err(bad()),
        }
    }

    pub(super) async fn finish_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &Verification,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut invocation = SCRIPTS.idempotency_finish.prepare_invoke();
        invocation
            .key(self.inner.keys.idempotency(tenant, key))
            .arg(millis(now))
            .arg(record::to_json(response))
            .arg(millis_of(IDEMPOTENCY_WINDOW));
        self.run::<u8>("idempotency_finish", invocation)
            .await
            .map(drop)
    }

    pub(super) async fn abandon_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut invocation = SCRIPTS.idempotency_abandon.prepare_invoke();
        invocation.key(self.inner.keys.idempotency(tenant, key));
        self.run::<u8>("idempotency_abandon", invocation)
            .await
            .map(drop)
    }

    /// Follows a verification's changes, made on any replica.
    pub(super) async fn subscribe(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Result<Subscription<String>, StoreError> {
        self.inner
            .changes
            .subscribe(self.inner.keys.watch(tenant, id))
            .await
    }

    pub(super) async fn take_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<Option<Duration>, StoreError> {
        let mut invocation = SCRIPTS.gcra.prepare_invoke();
        invocation
            .key(self.budget_key(tenant, key))
            .arg(millis(now));
        quota_args(&mut invocation, Some(quota));
        let wait: u64 = self.run("gcra", invocation).await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    pub(super) async fn cell_wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<Duration, StoreError> {
        let mut invocation = SCRIPTS.gcra_wait.prepare_invoke();
        invocation
            .key(self.budget_key(tenant, key))
            .arg(millis(now));
        quota_args(&mut invocation, Some(quota));
        let wait: u64 = self.run("gcra_wait", invocation).await?;
        Ok(Duration::from_millis(wait))
    }

    pub(super) async fn give_back_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut invocation = SCRIPTS.gcra_return.prepare_invoke();
        invocation
            .key(self.budget_key(tenant, key))
            .arg(millis(now))
            .arg(millis_of(quota.period));
        self.run::<u8>("gcra_return", invocation).await.map(|_| ())
    }

    /// A budget's key: a destination's in its verifications' slot (the
    /// one the create, resend and check scripts take from), the others
    /// each in its own.
    fn budget_key(&self, tenant: &TenantId, key: BudgetKey<'_>) -> String {
        let keys = &self.inner.keys;
        let name = key.name();
        match key {
            BudgetKey::Destination(_, to) => keys.destination_budget(name, tenant, to),
            BudgetKey::Ip(block) => keys.budget(name, tenant, &block.to_string()),
            BudgetKey::Prefix(prefix) | BudgetKey::PrefixSends(prefix) => {
                keys.budget(name, tenant, prefix)
            }
            BudgetKey::Country(code) => keys.budget(name, tenant, &code.to_string()),
        }
    }

    pub(super) async fn is_ready(&self) -> bool {
        self.query::<String>("ping", &redis::cmd("PING"))
            .await
            .is_ok()
    }
}

/// What a store error says of a reply that did not convert. redis-rs's
/// own message quotes the whole reply, and a verification's holds its
/// destination in full; store errors are logged.
const UNREADABLE: &str = "Redis answered with a reply of an unexpected shape";

/// A Redis error as a store error tells it, without any reply's value.
fn describe(error: &redis::RedisError) -> String {
    match error.kind() {
        redis::ErrorKind::Parse => UNREADABLE.to_owned(),
        _ => error.to_string(),
    }
}

/// A budget's quota as budget.lua takes it: the period (ms) and the burst,
/// or two empty strings for no budget.
fn quota_args(invocation: &mut ScriptInvocation<'_>, quota: Option<Quota>) {
    match quota {
        Some(q) => invocation.arg(millis_of(q.period)).arg(q.burst),
        None => invocation.arg("").arg(""),
    };
}

#[cfg(test)]
mod tests {
    use redis::{FromRedisValue as _, Value};

    use super::{UNREADABLE, describe};

    #[test]
    fn a_reply_that_does_not_convert_is_described_without_its_value() {
        let destination = "+14155550100";
        let reply = Value::Array(vec![Value::BulkString(destination.into())]);
        let error: redis::RedisError = <(String, u64, String)>::from_redis_value(reply)
            .expect_err("one element, not three")
            .into();
        assert!(
            error.to_string().contains(destination),
            "redis-rs quotes the reply: {error}"
        );
        assert_eq!(describe(&error), UNREADABLE);
    }
}
