//! A Redis Cluster connection that follows the cluster's redirects itself.
//!
//! The `redis` crate has one retry counter for redirects and for I/O
//! errors, and a command whose connection broke may have run: sending it
//! again could spend a second attempt or budget cell. So the crate's
//! connection is built with no retries (`retries(0)`), and this wrapper
//! retries only what Redis says did not run:
//! - `MOVED slot host:port`: the slot lives elsewhere now (a failover, a
//!   finished migration). The command goes to that node, and the crate
//!   refreshes its slot map.
//! - `ASK slot host:port`: the slot is being migrated and the keys are on
//!   the target already. The command goes there, after `ASKING`, in one
//!   pipeline on one connection.
//! - `TRYAGAIN`: some of the command's keys have moved and some not (or do
//!   not exist yet), in a migration under way. It is sent again to the
//!   same node (after an ASK, the target, with `ASKING`) after a short
//!   pause, until the migration ends.
//! - `CLUSTERDOWN`: the cluster refuses every command for now (a primary
//!   lost and not yet replaced). Sent again after a short pause.
//!
//! MOVED and ASK targets are reached over verifyd's own connections: the
//! crate routes by address only to nodes already in its slot map, and a
//! migration's target may be a node added since.
//!
//! Every other error, a broken connection above all, is returned: the
//! request fails closed (UNAVAILABLE) and is never sent again. All of
//! this runs within the store's command timeout, which the caller's
//! deadline bounds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster_async::ClusterConnection,
};

use super::config::RedisConfig;

/// The most MOVED and ASK one command follows: a slot moves once per
/// migration, so more means the map is flapping.
const MAX_REDIRECTS: u32 = 5;

/// The first pause before sending again after TRYAGAIN or CLUSTERDOWN; it
/// doubles each time, up to [`LONGEST_PAUSE`]. These go on until the
/// migration or the failover ends, or the command timeout does.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub(super) struct FollowingCluster {
    connection: ClusterConnection,
    targets: Arc<Targets>,
}

/// verifyd's own connections to the nodes that redirects name. The crate
/// routes by address only to the nodes of its slot map, and a migration's
/// target may be a node added to the cluster since, which owns no slot
/// yet; asking the crate for one it lacks makes it reconnect from the seed
/// nodes, stalling every request.
struct Targets {
    config: RedisConfig,
    connection_config: AsyncConnectionConfig,
    /// `rediss` when the seeds are: every node speaks what they speak.
    scheme: &'static str,
    open: Mutex<HashMap<(String, u16), MultiplexedConnection>>,
}

impl Targets {
    /// The connection to `host:port`, made on first use.
    async fn to(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        let key = (host.to_owned(), port);
        if let Some(connection) = self.lock().get(&key) {
            return Ok(connection.clone());
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let client = self
            .config
            .client(&format!("{}://{host}:{port}", self.scheme))?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.connection_config)
            .await?;
        self.lock().insert(key, connection.clone());
        Ok(connection)
    }

    /// Every connection open now.
    fn all(&self) -> Vec<MultiplexedConnection> {
        self.lock().values().cloned().collect()
    }

    /// Forgets the connection to `host:port` after it failed.
    fn broke(&self, host: &str, port: u16) {
        self.lock().remove(&(host.to_owned(), port));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), MultiplexedConnection>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a command is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The slot's node in the crate's map.
    BySlot,
    /// The node a MOVED named.
    Node { host: String, port: u16 },
    /// The node an ASK named, after `ASKING`.
    Asking { host: String, port: u16 },
}

/// What an error says about a command that did not run.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Moved {
        host: String,
        port: u16,
    },
    Ask {
        host: String,
        port: u16,
    },
    /// TRYAGAIN, CLUSTERDOWN: the same place, after a pause. After an ASK
    /// that is the migration's target, which refuses until its keys are
    /// all there.
    Later,
    /// A MOVED without a node verifyd can read: by the slot map, which
    /// the crate refreshes after a MOVED, after a pause.
    Remap,
}

impl Redirect {
    /// What `error` says about a command that did not run, or `None` when
    /// it may have run (or failed for good).
    fn of(error: &RedisError) -> Option<Self> {
        let node = || {
            let (address, _slot) = error.redirect_node()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        };
        match error.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => {
                Some(node().map_or(Self::Remap, |(host, port)| Self::Moved { host, port }))
            }
            ErrorKind::Server(ServerErrorKind::Ask) => {
                node().map(|(host, port)| Self::Ask { host, port })
            }
            ErrorKind::Server(ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown) => {
                Some(Self::Later)
            }
            _ => None,
        }
    }
}

impl FollowingCluster {
    pub(super) fn new(connection: ClusterConnection, config: &RedisConfig) -> Self {
        let tls = config
            .cluster
            .iter()
            .any(|url| url.starts_with("rediss://"));
        Self {
            connection,
            targets: Arc::new(Targets {
                config: config.clone(),
                connection_config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.timeout)),
                scheme: if tls { "rediss" } else { "redis" },
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `pipeline` on `host:port`, over verifyd's own connection to it, with
    /// `ASKING` in front when `asking`; every reply but ASKING's.
    async fn on_node(
        &self,
        pipeline: &Pipeline,
        host: &str,
        port: u16,
        asking: bool,
    ) -> RedisResult<Vec<Value>> {
        let mut sent = redis::pipe();
        if asking {
            sent.cmd("ASKING");
        }
        for command in pipeline.cmd_iter() {
            sent.add_command(command.clone());
        }
        let mut connection = self.targets.to(host, port).await?;
        let mut replies = match connection.req_packed_commands(&sent, 0, sent.len()).await {
            Ok(replies) => replies,
            Err(error) => {
                if error.is_io_error() || error.is_connection_dropped() {
                    self.targets.broke(host, port);
                }
                return Err(error);
            }
        };
        if asking {
            // Refused (an ACL without ASKING): the command then ran without
            // it and was redirected or refused; either way it did not run.
            match replies.first() {
                Some(Value::Okay) => {
                    replies.remove(0);
                }
                Some(Value::ServerError(error)) => return Err(error.clone().into()),
                _ => {
                    return Err(RedisError::from((
                        ErrorKind::Client,
                        "ASKING got an unexpected reply",
                    )));
                }
            }
        }
        // A redirect or refusal among the replies, as the crate reports
        // one (a MULTI whose command was redirected is aborted by EXEC).
        if let Some(error) = replies.iter().find_map(|reply| match reply {
            Value::ServerError(error) if error.kind().is_some_and(is_redirect) => {
                Some(error.clone())
            }
            _ => None,
        }) {
            return Err(error.into());
        }
        Ok(replies)
    }

    /// Sends `cmd` to `place`.
    async fn send(&mut self, cmd: &Cmd, place: &Place) -> RedisResult<Value> {
        let (host, port, asking) = match place {
            Place::BySlot => return self.connection.req_packed_command(cmd).await,
            Place::Node { host, port } => (host, *port, false),
            Place::Asking { host, port } => (host, *port, true),
        };
        let mut one = redis::pipe();
        one.add_command(cmd.clone());
        let reply = self.on_node(&one, host, port, asking).await?.pop();
        match reply {
            Some(Value::ServerError(error)) => Err(error.into()),
            Some(value) => Ok(value),
            None => Err(RedisError::from((ErrorKind::Client, "no reply"))),
        }
    }

    /// Sends a plain pipeline (`store::redis::transaction`'s MULTI … EXEC,
    /// every reply wanted) to `place`.
    async fn send_all(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
        place: &Place,
    ) -> RedisResult<Vec<Value>> {
        let (host, port, asking) = match place {
            Place::BySlot => {
                return self
                    .connection
                    .req_packed_commands(pipeline, offset, count)
                    .await;
            }
            Place::Node { host, port } => (host, *port, false),
            Place::Asking { host, port } => (host, *port, true),
        };
        // Rebuilt on verifyd's own connection, which keeps a plain
        // pipeline's shape only: an atomic one (`.atomic()`, whose replies
        // are sliced by offset) would lose its MULTI. verifyd sends none.
        if pipeline.is_transaction() || offset != 0 || count != pipeline.len() {
            return Err(RedisError::from((
                ErrorKind::Client,
                "cannot follow a redirect with this pipeline",
            )));
        }
        self.on_node(pipeline, host, port, asking).await
    }
}

/// Whether a reply's error is one the crate would have turned into an
/// error needing action (a redirect, or a refusal for now).
fn is_redirect(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
    )
}

/// Where the next try of one command goes, and how many redirects are
/// left.
struct Follower {
    place: Place,
    left: u32,
    pause: Duration,
}

impl Follower {
    fn new() -> Self {
        Self {
            place: Place::BySlot,
            left: MAX_REDIRECTS,
            pause: FIRST_PAUSE,
        }
    }

    /// Whether to try again, as `found` (the redirect in the last answer)
    /// says; pauses first for a `Later` or a `Remap`.
    async fn again(&mut self, found: Option<Redirect>) -> bool {
        let next = match found {
            None => return false,
            Some(Redirect::Later) => None,
            Some(Redirect::Remap) => Some(Place::BySlot),
            Some(_) if self.left == 0 => return false,
            Some(Redirect::Moved { host, port }) => {
                self.left -= 1;
                self.place = Place::Node { host, port };
                return true;
            }
            Some(Redirect::Ask { host, port }) => {
                self.left -= 1;
                self.place = Place::Asking { host, port };
                return true;
            }
        };
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        if let Some(place) = next {
            self.place = place;
        }
        true
    }
}

/// Whether `cmd` is `SCRIPT LOAD`.
fn loads_a_script(cmd: &Cmd) -> bool {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => bytes.to_ascii_uppercase(),
        _ => Vec::new(),
    });
    args.next().as_deref() == Some(b"SCRIPT") && args.next().as_deref() == Some(b"LOAD")
}

impl ConnectionLike for FollowingCluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            // A script missing on a redirect's target (NOSCRIPT, which ran
            // nothing) is loaded by the `redis` crate through here: on the
            // nodes of its map, and on the targets verifyd reaches itself,
            // which may not be in the map.
            if loads_a_script(cmd) {
                let loaded = self.connection.req_packed_command(cmd).await;
                for mut target in self.targets.all() {
                    let _ = target.req_packed_command(cmd).await;
                }
                return loaded;
            }
            let mut follower = Follower::new();
            loop {
                let result = self.send(cmd, &follower.place).await;
                let found = result.as_ref().err().and_then(Redirect::of);
                if !follower.again(found).await {
                    return result;
                }
            }
        })
    }

    /// A redirect inside a MULTI comes back as an error too: the crate
    /// reads the replies and returns the first that needs acting on, and
    /// EXEC aborted the transaction, so none of it ran.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut follower = Follower::new();
            loop {
                let result = self
                    .send_all(pipeline, offset, count, &follower.place)
                    .await;
                let found = result.as_ref().err().and_then(Redirect::of);
                if !follower.again(found).await {
                    return result;
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(kind: ServerErrorKind, detail: &str) -> RedisError {
        RedisError::from((ErrorKind::Server(kind), "redirect", detail.to_owned()))
    }

    #[test]
    fn a_script_load_is_told_apart() {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg("return 1");
        assert!(loads_a_script(&load));
        let mut flush = redis::cmd("script");
        flush.arg("flush");
        assert!(!loads_a_script(&flush));
        assert!(!loads_a_script(&redis::cmd("EVALSHA")));
    }

    #[test]
    fn only_what_redis_says_did_not_run_is_sent_again() {
        assert_eq!(
            Redirect::of(&server_error(ServerErrorKind::Moved, "3999 127.0.0.1:6381")),
            Some(Redirect::Moved {
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(
            Redirect::of(&server_error(ServerErrorKind::Ask, "3999 10.0.0.2:6379")),
            Some(Redirect::Ask {
                host: "10.0.0.2".into(),
                port: 6379
            })
        );
        assert_eq!(
            Redirect::of(&server_error(ServerErrorKind::TryAgain, "")),
            Some(Redirect::Later)
        );
        // The crate's "no connection" may follow a send it gave up on.
        let no_connection =
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "No connections found"));
        assert_eq!(Redirect::of(&no_connection), None);
        // A broken connection, a script's own error: may have run.
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Redirect::of(&dropped), None);
        let non_local = server_error(
            ServerErrorKind::ResponseError,
            "Script attempted to access a non local key in a cluster node",
        );
        assert_eq!(Redirect::of(&non_local), None);
    }
}
