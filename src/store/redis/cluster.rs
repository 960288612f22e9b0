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
//!   not exist yet), in a migration under way. It is sent again after a
//!   short pause, until the migration ends.
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

/// Where Redis said to send a command again.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    /// By the slot map, which the crate rebuilds after a MOVED.
    BySlot,
    Moved {
        host: String,
        port: u16,
    },
    Ask {
        host: String,
        port: u16,
    },
    /// By the slot map, after a pause.
    Later,
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
                Some(node().map_or(Self::BySlot, |(host, port)| Self::Moved { host, port }))
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

    /// The first redirect among a transaction's replies. A MULTI whose
    /// commands were redirected is aborted by its EXEC, so none of it ran.
    fn in_replies(replies: &[Value]) -> Option<Self> {
        replies.iter().find_map(|reply| match reply {
            Value::ServerError(error) => Self::of(&RedisError::from(error.clone())),
            _ => None,
        })
    }
}

impl FollowingCluster {
    pub(super) fn new(connection: ClusterConnection) -> Self {
        Self { connection }
    }

    /// Sends `cmd` as Redis last said to.
    async fn send(&mut self, cmd: &Cmd, redirect: &Redirect) -> RedisResult<Value> {
        match redirect {
            Redirect::BySlot | Redirect::Later => self.connection.req_packed_command(cmd).await,
            Redirect::Moved { host, port } => {
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                self.connection
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(node))
                    .await
            }
            Redirect::Ask { host, port } => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").add_command(cmd.clone());
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                let mut replies = self.connection.route_pipeline(asking, 0, 2, node).await?;
                let reply = replies.pop().unwrap_or(Value::Nil);
                match reply {
                    Value::ServerError(error) => Err(error.into()),
                    value => Ok(value),
                }
            }
        }
    }

    /// Sends a transaction (MULTI … EXEC) as Redis last said to.
    async fn send_all(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
        redirect: &Redirect,
    ) -> RedisResult<Vec<Value>> {
        let node = |host: &String, port: &u16| SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        };
        match redirect {
            Redirect::BySlot | Redirect::Later => {
                self.connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }
            Redirect::Moved { host, port } => {
                self.connection
                    .route_pipeline(pipeline.clone(), offset, count, node(host, port))
                    .await
            }
            Redirect::Ask { host, port } => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING");
                for command in pipeline.cmd_iter() {
                    asking.add_command(command.clone());
                }
                let mut replies = self
                    .connection
                    .route_pipeline(asking, offset + 1, count, node(host, port))
                    .await?;
                // ASKING's OK is not among the replies asked for: the
                // offset skipped it. Keep the shape the caller expects.
                replies.truncate(count);
                Ok(replies)
            }
        }
    }
}

/// Where the next try of one command goes, and how many are left.
struct Follower {
    redirect: Redirect,
    left: u32,
    pause: Duration,
}

impl Follower {
    fn new() -> Self {
        Self {
            redirect: Redirect::BySlot,
            left: MAX_REDIRECTS,
            pause: FIRST_PAUSE,
        }
    }

    /// Whether to try again, as `found` (the redirect in the last answer)
    /// says; pauses first for a `Later`.
    async fn again(&mut self, found: Option<Redirect>) -> bool {
        match found {
            None => return false,
            Some(Redirect::Later) => {
                tokio::time::sleep(self.pause).await;
                self.pause = (self.pause * 2).min(LONGEST_PAUSE);
            }
            Some(_) if self.left == 0 => return false,
            Some(_) => self.left -= 1,
        }
        self.redirect = found.unwrap_or(Redirect::BySlot);
        true
    }
}

impl ConnectionLike for FollowingCluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut follower = Follower::new();
            loop {
                let result = self.send(cmd, &follower.redirect).await;
                let found = result.as_ref().err().and_then(Redirect::of);
                if !follower.again(found).await {
                    return result;
                }
            }
        })
    }

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
                    .send_all(pipeline, offset, count, &follower.redirect)
                    .await;
                let found = match &result {
                    Ok(replies) => Redirect::in_replies(replies),
                    Err(error) => Redirect::of(error),
                };
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
