//! A primary found through Redis Sentinel, the way the usual Helm charts
//! and operators run Redis: one primary, its replicas, and three or more
//! sentinels that promote a replica when the primary fails.
//!
//! verifyd asks the sentinels for the primary, checks that it says it is
//! one (`ROLE`), and keeps one multiplexed connection to it. It leaves
//! that connection, and asks the sentinels again on the next request:
//! - when the sentinels announce a new primary (`+switch-master`, followed
//!   on one sentinel at a time), since an old primary that is still alive
//!   keeps taking writes until the sentinels demote it, and those writes
//!   are lost when it resyncs from the new one;
//! - when the connection fails: an I/O error, or no answer within the
//!   command timeout (a frozen or partitioned node);
//! - when the node answers `READONLY` (it was demoted).
//!
//! A command refused with `READONLY` did not run, so it alone is sent
//! again, once, to the primary found anew; any other failure may have run
//! the command and fails the request (UNAVAILABLE, fail closed) rather
//! than run it twice. The pub/sub connection (`changes`) follows the same
//! announcements.

use std::{
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, Instant},
};

use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsMode, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;

/// A client that asks the sentinels for the primary: for the commands'
/// connection and for the pub/sub one, each with its own.
pub(super) fn client(config: &RedisConfig) -> RedisResult<SentinelClient> {
    let sentinel = &config.sentinel;
    let addresses = sentinel
        .nodes
        .iter()
        .map(|url| {
            redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map(|info| info.addr().clone())
        })
        .collect::<RedisResult<Vec<_>>>()?;
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

/// Follows the sentinels' `+switch-master` announcements for the
/// configured master, until `stop`.
pub(super) fn follow_switches(config: &RedisConfig, stop: CancellationToken) -> Switches {
    let (announce, switches) = watch::channel(0);
    let config = config.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = listen_for_switches(&config, &announce) => {}
        }
    });
    switches
}

/// Subscribes on the first sentinel that answers, and on another when it
/// goes. An announcement missed while no sentinel was listened to is made
/// up for: each new subscription counts as one, so the connections are
/// made anew.
async fn listen_for_switches(config: &RedisConfig, announce: &watch::Sender<u64>) {
    let sentinel = &config.sentinel;
    let mut pause = Duration::from_millis(50);
    let mut listened_before = false;
    loop {
        for url in &sentinel.nodes {
            let subscribed = async {
                let mut pubsub = sentinel_node(config, url)?.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                Ok::<_, RedisError>(pubsub)
            };
            let deadline = config.connect_timeout + config.timeout;
            let Ok(Ok(pubsub)) = tokio::time::timeout(deadline, subscribed).await else {
                continue;
            };
            pause = Duration::from_millis(50);
            if listened_before {
                announce.send_modify(|n| *n += 1);
            }
            listened_before = true;
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(sentinel.master_name.as_str()) {
                    tracing::warn!("the sentinels announced a new Redis primary");
                    announce.send_modify(|n| *n += 1);
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A client for one sentinel, with the sentinels' own credentials.
fn sentinel_node(config: &RedisConfig, url: &str) -> RedisResult<redis::Client> {
    let sentinel = &config.sentinel;
    let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &sentinel.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &sentinel.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    match config.certificates() {
        Some(certificates) if url.starts_with("rediss://") => {
            redis::Client::build_with_tls(info, certificates)
        }
        _ => redis::Client::open(info),
    }
}

/// The commands' connection to the primary the sentinels name.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// Asking the sentinels is serialized: one lookup at a time, and the
    /// requests that wait for it use what it found.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    primary: Mutex<Option<Primary>>,
    connection_config: AsyncConnectionConfig,
    /// How long a command may take before its node is presumed gone.
    timeout: Duration,
}

#[derive(Clone)]
struct Primary {
    /// Tells this connection from the one a later lookup makes, so a late
    /// failure cannot drop a newer connection.
    generation: u64,
    connection: MultiplexedConnection,
}

impl SentinelConnection {
    /// A connection made on the first request; it is left at each of
    /// `switches`.
    pub(super) fn open(config: &RedisConfig, mut switches: Switches) -> RedisResult<Self> {
        let inner = Arc::new(Inner {
            sentinels: tokio::sync::Mutex::new(client(config)?),
            primary: Mutex::new(None),
            connection_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.timeout)),
            timeout: config.timeout,
        });
        // Leaves the old primary at once, not at the next request: until
        // then it would hold the connection open for nothing.
        let left: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while switches.changed().await.is_ok() {
                let Some(inner) = left.upgrade() else { return };
                let this = Self { inner };
                if let Some(primary) = this.current() {
                    this.forget(primary.generation);
                }
            }
        });
        Ok(Self { inner })
    }

    /// The connection to the primary, asking the sentinels for it first if
    /// there is none.
    async fn primary(&self) -> RedisResult<Primary> {
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        let mut sentinels = self.inner.sentinels.lock().await;
        // Another request may have looked it up while this one waited.
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        let client = sentinels.async_get_client().await?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.inner.connection_config)
            .await?;
        let mut slot = self.lock();
        let generation = slot.as_ref().map_or(0, |p| p.generation + 1);
        let primary = Primary {
            generation,
            connection,
        };
        *slot = Some(primary.clone());
        tracing::info!("connected to the Redis primary the sentinels name");
        Ok(primary)
    }

    fn current(&self) -> Option<Primary> {
        self.lock().clone()
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
            // Keep the generation counting up past the dropped connection.
            *slot = None;
            drop(slot);
            tracing::warn!("dropped the Redis primary connection; asking the sentinels again");
        }
    }

    /// Runs `request` on the primary. A failure that says the node is gone
    /// or no longer the primary drops the connection; `READONLY`, which
    /// ran nothing, is sent again once to the primary found anew.
    /// `failure_in` reads a failure out of a reply that is not an error
    /// (a pipeline's).
    async fn on_primary<'a, T>(
        &self,
        request: impl Fn(MultiplexedConnection) -> RedisFuture<'a, T>,
        failure_in: impl Fn(&T) -> Option<Failure>,
    ) -> RedisResult<T> {
        let mut resent = false;
        loop {
            let primary = self.primary().await?;
            let mut unanswered = Unanswered {
                connection: self,
                generation: primary.generation,
                since: Instant::now(),
                answered: false,
            };
            let result = request(primary.connection).await;
            unanswered.answered = true;
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

/// Drops the connection when a request on it is given up after the
/// command timeout without an answer: the node is frozen or cut off, and
/// the sentinels may have promoted another. A request dropped sooner (its
/// caller left) says nothing about the node.
struct Unanswered<'a> {
    connection: &'a SentinelConnection,
    generation: u64,
    since: Instant,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered && self.since.elapsed() >= self.connection.inner.timeout {
            self.connection.forget(self.generation);
        }
    }
}

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
