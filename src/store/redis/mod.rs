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
//!
//! The operations, by what they do: [`sends`] (create, resend, record a
//! send), [`checks`] (reads, checks, cancels, delivery reports, key
//! presses), [`idempotency`], [`limits`] (blocks and shared budgets),
//! [`deadlines`] (expiries announced by whichever replica is alive); the
//! scripts themselves in [`scripts`].

mod changes;
mod checks;
mod cluster;
pub(super) mod config;
mod connection;
mod deadlines;
mod idempotency;
mod keys;
mod limits;
mod lookups;
mod operators;
mod record;
mod scanner;
mod scripts;
mod sends;
mod sentinel;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

pub use config::{RedisConfig, SentinelConfig};
use redis::{
    ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind, Value,
    aio::ConnectionLike as _,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use self::{
    changes::Changes, config::Durability, connection::Connection, keys::Keys, record::millis_of,
    scanner::Deadlines, scripts::Invocation,
};
use super::{feed::Subscription, port::StoreError};
use crate::domain::{Destination, TenantId, VerificationId};
use crate::telemetry::{LogThrottle, Metrics};

#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: Connection,
    /// Durable acknowledgements (`store.redis.wait_replicas`), when used.
    durable: Option<Durable>,
    keys: Keys,
    changes: Changes,
    deadlines: Deadlines,
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
        let switches = config
            .sentinel
            .is_used()
            .then(|| sentinel::follow_switches(config, stop.clone()));
        let open = || {
            Connection::open(config, switches.clone())
                .map_err(|e| StoreError::Unavailable(format!("cannot configure Redis: {e}")))
        };
        let connection = open()?;
        let deadlines = Deadlines::new(!config.cluster.is_empty(), open()?);
        let durable = config
            .durability()
            .map(|settings| Durable::open(settings, open))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                durable,
                keys: Keys::new(&config.key_prefix, index_key),
                changes: Changes::start(config, switches, stop),
                deadlines,
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
        invocation: Invocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.inner.connection.clone();
        self.bounded(operation, evaluate(&mut connection, &invocation))
            .await
    }

    /// Runs a script whose change a caller is told about, then, with
    /// durable acknowledgements, waits for the replicas to hold it: `true`
    /// when they do (or none are asked for). Its reply either way: the
    /// change stands on the primary, acknowledged or not.
    async fn run_durably<T: FromRedisValue>(
        &self,
        operation: &'static str,
        invocation: Invocation<'_>,
    ) -> Result<(T, bool), StoreError> {
        let Some(durable) = &self.inner.durable else {
            return Ok((self.run(operation, invocation).await?, true));
        };
        let pipeline = durable.pipeline(&invocation);
        let mut sent = self.bounded(operation, durable.send(&pipeline)).await?;
        if sent.is_none() {
            // The WAIT behind a NOSCRIPT may have used its whole wait (a
            // replica down acknowledges nothing), so the second try has a
            // timeout of its own. Scripts are loaded node-wide: any
            // connection will do.
            let mut connection = self.inner.connection.clone();
            self.bounded(operation, invocation.script().load_async(&mut connection))
                .await?;
            sent = self.bounded(operation, durable.send(&pipeline)).await?;
        }
        let Some((reply, acknowledged)) = sent else {
            return Err(StoreError::Unavailable(
                "Redis lost a script as soon as it was loaded".into(),
            ));
        };
        let reply = T::from_redis_value(reply)
            .map_err(|error| StoreError::Unavailable(describe(&error.into())))?;
        if !acknowledged {
            self.inner.metrics.store_unacknowledged(operation);
        }
        Ok((reply, acknowledged))
    }

    /// Whether a script's change must be acknowledged by replicas: the
    /// scripts keep an approval unacknowledged until then (check.lua).
    fn durable(&self) -> bool {
        self.inner.durable.is_some()
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
    /// attempts list are the keys, and its deadline index is declared.
    fn on_verification<'a>(
        &self,
        script: &'a Script,
        tenant: &TenantId,
        id: &VerificationId,
    ) -> Invocation<'a> {
        let mut invocation = Invocation::of(script);
        for key in self.inner.keys.verification(tenant, id) {
            invocation.key(key);
        }
        invocation.declare(self.inner.keys.deadlines_in(id.shard()));
        invocation
    }

    /// A new verification id in the shard of its destination.
    pub fn new_id(&self, tenant: &TenantId, to: &Destination) -> VerificationId {
        VerificationId::generate_in(self.inner.keys.destination(tenant, to).shard())
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

    pub(super) async fn is_ready(&self) -> bool {
        self.query::<String>("ping", &redis::cmd("PING"))
            .await
            .is_ok()
    }
}

/// Runs a script: EVALSHA, and when the node does not have it (fresh,
/// restarted, or just promoted), SCRIPT LOAD and EVALSHA again; NOSCRIPT
/// ran nothing.
async fn evaluate<T: FromRedisValue>(
    connection: &mut Connection,
    invocation: &Invocation<'_>,
) -> RedisResult<T> {
    let command = invocation.command();
    match command.query_async(connection).await {
        Err(error) if is_no_script(&error) => {
            invocation.script().load_async(connection).await?;
            command.query_async(connection).await
        }
        result => result,
    }
}

fn is_no_script(error: &redis::RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// How many scripts with their WAIT one process runs at once.
const DURABLE_CONNECTIONS: usize = 8;

/// Durable acknowledgements: `WAIT` after each script whose change a
/// caller is told about.
///
/// Redis reads nothing more from a connection while a WAIT on it waits.
/// So these scripts have connections of their own, and reads, budgets and
/// idempotency keys never queue behind a WAIT; and each of those carries
/// one script and its WAIT at a time, so the scripts queue here, each
/// within its command timeout, rather than on the server, where a script
/// queued behind a slow WAIT would run late with the `now` it was sent.
#[derive(Debug)]
struct Durable {
    idle: Mutex<Vec<Connection>>,
    /// One permit per idle connection.
    lendable: Semaphore,
    settings: Durability,
}

/// A durable connection lent to one script and its WAIT, given back when
/// dropped (a request cut short by its timeout gives it back while its
/// WAIT may still run: the next one waits that out on the server).
struct Lent<'a> {
    durable: &'a Durable,
    connection: Option<Connection>,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.durable.idle().push(connection);
        }
    }
}

impl Durable {
    fn open(
        settings: Durability,
        mut open: impl FnMut() -> Result<Connection, StoreError>,
    ) -> Result<Self, StoreError> {
        let idle = (0..DURABLE_CONNECTIONS)
            .map(|_| open())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Mutex::new(idle),
            lendable: Semaphore::new(DURABLE_CONNECTIONS),
            settings,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, once one is.
    async fn lend(&self) -> RedisResult<Lent<'_>> {
        let permit =
            self.lendable.acquire().await.map_err(|_| {
                redis::RedisError::from((ErrorKind::Client, "no durable connection"))
            })?;
        Ok(Lent {
            durable: self,
            connection: self.idle().pop(),
            _permit: permit,
        })
    }

    /// The script and `WAIT replicas timeout` in one pipeline, so that
    /// both travel on one connection: WAIT counts the writes of its own
    /// connection only, and a reconnect between the two would make it
    /// count none and answer at once.
    fn pipeline(&self, invocation: &Invocation<'_>) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        pipeline.add_command(invocation.command());
        pipeline
            .cmd("WAIT")
            .arg(self.settings.replicas)
            .arg(millis_of(self.settings.timeout));
        pipeline
    }

    /// Sends `pipeline`: the script's reply and whether enough replicas
    /// acknowledged it, or `None` when the node did not have the script
    /// (NOSCRIPT ran nothing). A pipeline that fails may have run the
    /// script, and is not sent again.
    async fn send(&self, pipeline: &redis::Pipeline) -> RedisResult<Option<(Value, bool)>> {
        let mut lent = self.lend().await?;
        let Some(connection) = lent.connection.as_mut() else {
            return Err(redis::RedisError::from((
                ErrorKind::Client,
                "no durable connection",
            )));
        };
        let replies = match connection.req_packed_commands(pipeline, 0, 2).await {
            Err(error) if is_no_script(&error) => return Ok(None),
            result => result?,
        };
        let mut replies = replies.into_iter();
        let (Some(script), Some(wait)) = (replies.next(), replies.next()) else {
            return Err(redis::RedisError::from((
                ErrorKind::Client,
                "Redis answered a script and its WAIT in part",
            )));
        };
        if let Value::ServerError(error) = script {
            let error = redis::RedisError::from(error);
            return if is_no_script(&error) {
                Ok(None)
            } else {
                Err(error)
            };
        }
        let acknowledged = match wait {
            Value::Int(count) => count >= i64::from(self.settings.replicas),
            // An ACL without WAIT, or a node that is a replica now: the
            // change stands unacknowledged, which fails the caller closed.
            Value::ServerError(error) => {
                if let Some(held_back) = REFUSED_WAITS.admit(std::time::SystemTime::now()) {
                    tracing::warn!(%error, held_back, "WAIT refused: changes cannot be acknowledged");
                }
                false
            }
            _ => false,
        };
        Ok(Some((script, acknowledged)))
    }
}

/// A refused WAIT (an ACL without it) is logged once a minute, not once a
/// request; the metric counts each.
static REFUSED_WAITS: LogThrottle = LogThrottle::new(Duration::from_secs(60));

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
