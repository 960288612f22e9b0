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
//! - No connection to the node a redirect names (one added to the cluster
//!   since the map was read): sent again by the slot map after a pause,
//!   once the crate has connected (it reconnects from the seed nodes).
//! - `CLUSTERDOWN`: the cluster refuses every command for now (a primary
//!   lost and not yet replaced). Sent again after a short pause.
//!
//! Every other error, a broken connection above all, is returned: the
//! request fails closed (UNAVAILABLE) and is never sent again. All of
//! this runs within the store's command timeout, which the caller's
//! deadline bounds.

use std::time::Duration;

use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::ConnectionLike,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

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
    /// No connection to the node named (one added to the cluster since the
    /// map was read): by the slot map, after a pause for the crate to
    /// connect.
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
            // The crate found no connection for the route: nothing was
            // sent.
            ErrorKind::ClusterConnectionNotFound => Some(Self::Remap),
            _ => None,
        }
    }
}

impl FollowingCluster {
    pub(super) fn new(connection: ClusterConnection) -> Self {
        Self { connection }
    }

    /// `commands` on the node an ASK named, after `ASKING`, in one
    /// pipeline on one connection; their replies, ASKING's left out.
    async fn asking(
        &mut self,
        commands: impl IntoIterator<Item = Cmd>,
        host: &str,
        port: u16,
    ) -> RedisResult<Vec<Value>> {
        let mut pipeline = redis::pipe();
        pipeline.cmd("ASKING");
        for command in commands {
            pipeline.add_command(command);
        }
        let count = pipeline.len();
        let node = SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        };
        let mut replies = self
            .connection
            .route_pipeline(pipeline, 0, count, node)
            .await?;
        // Refused (an ACL without ASKING): the command ran without it and
        // was redirected again, or refused; either way it did not run.
        match replies.first() {
            Some(Value::Okay) => Ok(replies.split_off(1)),
            Some(Value::ServerError(error)) => Err(error.clone().into()),
            _ => Err(RedisError::from((
                ErrorKind::Client,
                "ASKING got an unexpected reply",
            ))),
        }
    }

    /// Sends `cmd` to `place`.
    async fn send(&mut self, cmd: &Cmd, place: &Place) -> RedisResult<Value> {
        match place {
            Place::BySlot => self.connection.req_packed_command(cmd).await,
            Place::Node { host, port } => {
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                self.connection
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(node))
                    .await
            }
            Place::Asking { host, port } => {
                let reply = self.asking([cmd.clone()], host, *port).await?.pop();
                match reply {
                    Some(Value::ServerError(error)) => Err(error.into()),
                    Some(value) => Ok(value),
                    None => Err(RedisError::from((ErrorKind::Client, "no reply"))),
                }
            }
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
        match place {
            Place::BySlot => {
                self.connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }
            Place::Node { host, port } => {
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                self.connection
                    .route_pipeline(pipeline.clone(), offset, count, node)
                    .await
            }
            // Rebuilt with ASKING in front, which keeps a plain pipeline's
            // shape only: an atomic one (`.atomic()`, whose replies are
            // sliced by offset) would lose its MULTI. verifyd sends none.
            Place::Asking { host, port }
                if !pipeline.is_transaction() && offset == 0 && count == pipeline.len() =>
            {
                self.asking(pipeline.cmd_iter().cloned(), host, *port).await
            }
            Place::Asking { .. } => Err(RedisError::from((
                ErrorKind::Client,
                "cannot follow ASK with this pipeline",
            ))),
        }
    }
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

impl ConnectionLike for FollowingCluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
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
        let unknown_node = RedisError::from((
            ErrorKind::ClusterConnectionNotFound,
            "Requested connection not found",
        ));
        assert_eq!(Redirect::of(&unknown_node), Some(Redirect::Remap));
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
