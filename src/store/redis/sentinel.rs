//! A primary found through Redis Sentinel, the way the usual Helm charts
//! and operators run Redis: one primary, its replicas, and three or more
//! sentinels that promote a replica when the primary fails.
//!
//! verifyd asks the sentinels for the primary, checks that it says it is
//! one (`ROLE`), and keeps one multiplexed connection to it. It leaves
//! that connection, and asks the sentinels again on the next request:
//! - when the sentinels announce a new primary (`+switch-master`, heard on
//!   every sentinel), since an old primary that is still alive keeps
//!   taking writes until the sentinels demote it, and those writes are
//!   lost when it resyncs from the new one;
//! - when the connection fails: an I/O error, or no answer within the
//!   command timeout (a frozen or partitioned node);
//! - when the node answers `READONLY` (it was demoted).
//!
//! A command refused with `READONLY` did not run, so it alone is sent
//! again, once, to the primary found anew; any other failure may have run
//! the command and fails the request (UNAVAILABLE, fail closed) rather
//! than run it twice. The pub/sub connection (`changes`) follows the same
//! announcements.
//!
//! One lookup runs at a time, in a task of its own bounded by the connect
//! and command timeouts, and every request waiting for a primary waits for
//! it: a request that gives up does not cancel it, so a slow sentinel
//! costs one lookup rather than every request's. The `redis` crate reads
//! the sentinels' answers in the order they are listed, so a lookup that
//! fails moves the first sentinel to the end of the list: one that does
//! not answer cannot hold up every lookup.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsMode, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;

/// A client that asks the sentinels for the primary (the commands'
/// connection and the pub/sub one each have their own), starting with the
/// sentinel `rotation` places down the list.
pub(super) fn client(config: &RedisConfig, rotation: usize) -> RedisResult<SentinelClient> {
    let sentinel = &config.sentinel;
    let mut addresses = sentinel
        .nodes
        .iter()
        .map(|url| {
            redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map(|info| info.addr().clone())
        })
        .collect::<RedisResult<Vec<_>>>()?;
    if !addresses.is_empty() {
        let first = rotation % addresses.len();
        addresses.rotate_left(first);
    }
    let mut builder =
        SentinelClientBuilder::new(addresses, &sentinel.master_name, SentinelServerType::Master)?;
    if let Some(user) = &sentinel.username {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &sentinel.password {
        builder = builder.set_client_to_sentinel_password(password.expose());
    }
    if let Some(user) = &config.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &config.password {
        builder = builder.set_client_to_redis_password(password.expose());
    }
    if sentinel.tls {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
    }
    if let Some(certificates) = config.certificates() {
        if sentinel.tls {
            builder = builder.set_client_to_redis_certificates(certificates.clone());
        }
        if sentinel.nodes.iter().any(|u| u.starts_with("rediss://")) {
            builder = builder.set_client_to_sentinel_certificates(certificates);
        }
    }
    builder.build()
}

/// How many times the sentinels have announced a new primary since
/// verifyd started; it changes at each announcement.
pub(super) type Switches = watch::Receiver<u64>;

/// How often an idle subscription to a sentinel is checked.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Follows the sentinels' `+switch-master` announcements for the
/// configured master, on every sentinel at once, until `stop`: one that
/// is gone or frozen cannot make verifyd miss a switch the others
/// announce.
pub(super) fn follow_switches(config: &RedisConfig, stop: CancellationToken) -> Switches {
    let (announce, switches) = watch::channel(0);
    let announcer = Arc::new(Announcer {
        announce,
        last: Mutex::new(String::new()),
    });
    for url in &config.sentinel.nodes {
        let (config, url, announcer, stop) = (
            config.clone(),
            url.clone(),
            Arc::clone(&announcer),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    heard = listen_on(&config, &url, &announcer) => {
                        if heard {
                            pause = Duration::from_millis(50);
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
    }
    switches
}

/// Counts each switch once, however many sentinels announce it.
struct Announcer {
    announce: watch::Sender<u64>,
    /// The switch last announced, "old address new address": the whole
    /// of it, so a switch back to an earlier primary is a new one even if
    /// the switch between was missed.
    last: Mutex<String>,
}

impl Announcer {
    fn switched(&self, switch: &str) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if *last != switch {
            switch.clone_into(&mut last);
            drop(last);
            tracing::warn!("the sentinels announced a new Redis primary");
            self.announce.send_modify(|n| *n += 1);
        }
    }
}

/// Subscribes to `+switch-master` on one sentinel and relays what it
/// announces until the connection drops or a ping goes unanswered;
/// whether it subscribed at all.
async fn listen_on(config: &RedisConfig, url: &str, announcer: &Announcer) -> bool {
    let subscribed = async {
        let (mut sink, stream) = config
            .sentinel_client(url)?
            .get_async_pubsub()
            .await?
            .split();
        sink.subscribe("+switch-master").await?;
        Ok::<_, RedisError>((sink, stream))
    };
    let deadline = config.connect_timeout + config.timeout;
    let Ok(Ok((mut sink, mut stream))) = tokio::time::timeout(deadline, subscribed).await else {
        return false;
    };
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let pong = tokio::time::timeout(config.timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return true;
                }
            }
            message = stream.next() => {
                let Some(message) = message else { return true };
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let payload: String = message.get_payload().unwrap_or_default();
                let fields: Vec<&str> = payload.split(' ').collect();
                if let [name, old_ip, old_port, ip, port] = fields[..]
                    && name == config.sentinel.master_name
                {
                    announcer.switched(&format!("{old_ip}:{old_port} {ip}:{port}"));
                }
            }
        }
    }
}

/// The commands' connection to the primary the sentinels name.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    /// The sentinels' client, and how far its list is rotated. Only the
    /// lookup in flight holds it.
    sentinels: tokio::sync::Mutex<(SentinelClient, usize)>,
    primary: Mutex<Option<Primary>>,
    /// Numbers each connection made, so a late failure on an old one
    /// cannot drop a newer one.
    generations: AtomicU64,
    /// Whether a lookup is in flight; `looked_up` wakes its waiters.
    looking_up: AtomicBool,
    looked_up: Notify,
    /// Why the last lookup failed, for the requests that waited on it.
    lookup_failure: Mutex<String>,
    /// The sentinels' announcements of a new primary.
    switches: Switches,
    connection_config: AsyncConnectionConfig,
    /// How long a command may take before its node is presumed gone.
    timeout: Duration,
    /// How long one lookup may take: asking the sentinels, then connecting
    /// to the primary they name and asking it its role.
    lookup_timeout: Duration,
}

#[derive(Clone)]
struct Primary {
    generation: u64,
    /// The count of switches announced when its lookup began: a primary
    /// looked up before the latest switch is not used, since a sentinel
    /// that had not heard of it yet may have named the old one.
    switches: u64,
    connection: MultiplexedConnection,
}

impl SentinelConnection {
    /// A connection made on the first request; it is left at each of
    /// `switches`.
    pub(super) fn open(config: &RedisConfig, switches: Switches) -> RedisResult<Self> {
        let mut announced = switches.clone();
        let inner = Arc::new(Inner {
            config: config.clone(),
            sentinels: tokio::sync::Mutex::new((client(config, 0)?, 0)),
            primary: Mutex::new(None),
            generations: AtomicU64::new(0),
            looking_up: AtomicBool::new(false),
            looked_up: Notify::new(),
            lookup_failure: Mutex::new(String::new()),
            switches,
            connection_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.timeout)),
            timeout: config.timeout,
            lookup_timeout: 2 * config.connect_timeout + 2 * config.timeout,
        });
        // Leaves the old primary at once, not at the next request: until
        // then it would hold the connection open for nothing.
        let left: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while announced.changed().await.is_ok() {
                let Some(inner) = left.upgrade() else { return };
                let this = Self { inner };
                let held = this.lock().as_ref().map(|p| p.generation);
                if let Some(generation) = held {
                    this.forget(generation);
                }
            }
        });
        Ok(Self { inner })
    }

    /// The connection to the primary, waiting for a lookup if there is
    /// none (and starting one if none is in flight).
    async fn primary(&self) -> RedisResult<Primary> {
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        let looked_up = self.inner.looked_up.notified();
        tokio::pin!(looked_up);
        // Registered before the flag is read, so a lookup that ends in
        // between still wakes this request.
        looked_up.as_mut().enable();
        // A lookup may have ended since the first look.
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        if !self.inner.looking_up.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move { this.look_up().await });
        }
        looked_up.await;
        self.current().ok_or_else(|| {
            let why = self
                .inner
                .lookup_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            RedisError::from((ErrorKind::Io, "no Redis primary found", why))
        })
    }

    /// Asks the sentinels for the primary and connects to it, within the
    /// lookup timeout, then wakes every request waiting.
    async fn look_up(&self) {
        let inner = &self.inner;
        // However the lookup ends (a panic in the crate included), the
        // next request may start another, and every waiter wakes.
        let _done = LookupDone(inner);
        let switches = *inner.switches.borrow();
        let mut sentinels = inner.sentinels.lock().await;
        let (sentinel_client, rotation) = &mut *sentinels;
        let found = tokio::time::timeout(inner.lookup_timeout, async {
            let node = sentinel_client.async_get_client().await?;
            node.get_multiplexed_async_connection_with_config(&inner.connection_config)
                .await
        })
        .await;
        match found {
            Ok(Ok(connection)) => {
                let generation = inner.generations.fetch_add(1, Ordering::Relaxed);
                *self.lock() = Some(Primary {
                    generation,
                    switches,
                    connection,
                });
                tracing::info!("connected to the Redis primary the sentinels name");
            }
            failed => {
                let why = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {:?}", inner.lookup_timeout),
                };
                tracing::warn!(%why, "cannot find the Redis primary through the sentinels");
                *inner
                    .lookup_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = why;
                // The next lookup starts with the next sentinel.
                *rotation += 1;
                if let Ok(rotated) = client(&inner.config, *rotation) {
                    *sentinel_client = rotated;
                }
            }
        }
    }

    /// The primary to use: none before the first lookup, after a failure,
    /// or when it was looked up before the latest announced switch.
    fn current(&self) -> Option<Primary> {
        let switches = *self.inner.switches.borrow();
        self.lock().clone().filter(|p| p.switches == switches)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Primary>> {
        self.inner
            .primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the connection `generation`, if it is still the current one,
    /// so the next request asks the sentinels again.
    fn forget(&self, generation: u64) {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|p| p.generation == generation) {
            *slot = None;
            drop(slot);
            tracing::warn!("dropped the Redis primary connection; asking the sentinels again");
        }
    }

    /// Runs `request` on the primary. A failure that says the node is gone
    /// or no longer the primary drops the connection; `READONLY`, which
    /// ran nothing, is sent again once to the primary found anew. No
    /// answer within most of the command timeout counts as the node gone
    /// (frozen or cut off): the request would fail anyway, and the next
    /// one should not wait on the same node. `failure_in` reads a failure
    /// out of a reply that is not an error (a pipeline's).
    async fn on_primary<'a, T>(
        &self,
        request: impl Fn(MultiplexedConnection) -> RedisFuture<'a, T>,
        failure_in: impl Fn(&T) -> Option<Failure>,
    ) -> RedisResult<T> {
        let stalled_after = self.inner.timeout.mul_f64(STALL_SHARE);
        let mut resent = false;
        loop {
            let primary = self.primary().await?;
            let result = tokio::time::timeout(stalled_after, request(primary.connection))
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                });
            let failure = match &result {
                Ok(value) => failure_in(value),
                Err(error) => Some(Failure::of(error)),
            };
            match failure {
                Some(Failure::NotPrimary) => {
                    self.forget(primary.generation);
                    if resent {
                        return result;
                    }
                    resent = true;
                }
                Some(Failure::NodeGone) => {
                    self.forget(primary.generation);
                    return result;
                }
                None | Some(Failure::Other) => return result,
            }
        }
    }
}

/// Ends a lookup: clears the flag, then wakes the requests waiting.
struct LookupDone<'a>(&'a Inner);

impl Drop for LookupDone<'_> {
    fn drop(&mut self) {
        self.0.looking_up.store(false, Ordering::Release);
        self.0.looked_up.notify_waiters();
    }
}

/// The share of the command timeout after which a command without an
/// answer counts its node as gone: less than the whole, so that it is
/// seen here before the store's own timeout cancels the request.
const STALL_SHARE: f64 = 0.9;

/// What a failed command says about the node it ran on.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// `READONLY`: a replica now; the command did not run.
    NotPrimary,
    /// The connection broke or the node did not answer in time: the
    /// command may have run.
    NodeGone,
    /// Anything else (a script's own error, an ACL refusal): the node is
    /// fine.
    Other,
}

impl Failure {
    fn of(error: &RedisError) -> Self {
        if error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
            Self::NotPrimary
        } else if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
        {
            Self::NodeGone
        } else {
            Self::Other
        }
    }
}

/// A `READONLY` among a pipeline's replies: MULTI answered OK but each
/// write was refused and EXEC aborted, so nothing ran.
fn readonly_reply(replies: &[Value]) -> Option<Failure> {
    replies
        .iter()
        .any(|reply| {
            matches!(reply, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly))
        })
        .then_some(Failure::NotPrimary)
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.on_primary(
                |mut c| Box::pin(async move { c.req_packed_command(cmd).await }),
                |_| None,
            )
            .await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.on_primary(
                |mut c| {
                    Box::pin(async move { c.req_packed_commands(pipeline, offset, count).await })
                },
                |replies| readonly_reply(replies),
            )
            .await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_readonly_is_sent_again_and_only_a_broken_node_is_dropped() {
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert_eq!(Failure::of(&readonly), Failure::NotPrimary);
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Failure::of(&dropped), Failure::NodeGone);
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(Failure::of(&timed_out), Failure::NodeGone);
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR user_script:1: something",
        ));
        assert_eq!(Failure::of(&script), Failure::Other);
        let noperm = RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "NOPERM"));
        assert_eq!(Failure::of(&noperm), Failure::Other);
    }
}
