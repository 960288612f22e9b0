//! Connections to Redis: one multiplexed connection to a standalone server
//! (reconnecting by itself), a cluster connection that follows the slot
//! map, or one to the primary Redis Sentinel names (`sentinel`). All are
//! lazy, so verifyd starts, and reports itself not ready, while Redis is
//! down; and every command is bounded by a timeout, so an outage fails
//! requests fast instead of hanging them.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClientBuilder, ClusterConfig},
};

use super::{
    cluster::FollowingCluster,
    config::RedisConfig,
    sentinel::{SentinelConnection, Switches},
};

#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    Cluster(FollowingCluster),
    Sentinel(SentinelConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Standalone(_) => "Connection::Standalone",
            Self::Cluster(_) => "Connection::Cluster",
            Self::Sentinel(_) => "Connection::Sentinel",
        })
    }
}

impl Connection {
    /// `switches` are the sentinels' announcements of a new primary, when
    /// the primary is found through them.
    pub(super) fn open(
        config: &RedisConfig,
        switches: Option<Switches>,
    ) -> redis::RedisResult<Self> {
        if let Some(switches) = switches {
            return SentinelConnection::open(config, switches).map(Self::Sentinel);
        }
        if let Some(url) = &config.url {
            let client = config.client(url)?;
            let manager = ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.timeout))
                .set_connection_timeout(Some(config.connect_timeout))
                // Reconnects back off up to a second, so a returning Redis
                // is picked up quickly.
                .set_max_delay(Duration::from_secs(1))
                .set_number_of_retries(2);
            return ConnectionManager::new_lazy_with_config(client, manager).map(Self::Standalone);
        }
        let nodes = config
            .cluster
            .iter()
            .map(|url| config.connection_info(url))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let mut builder = ClusterClientBuilder::new(nodes)
            .response_timeout(config.timeout)
            .connection_timeout(config.connect_timeout)
            // No resending by the crate, whose one retry counter covers
            // broken connections too: a script whose reply was lost may
            // have run, and running it again would spend a second attempt
            // or budget cell. `FollowingCluster` follows the redirects,
            // which say the command did not run; the rest fail closed.
            .retries(0);
        if let Some(certificates) = config.certificates() {
            builder = builder.certs(certificates);
        }
        let client = builder.build()?;
        Ok(Self::Cluster(FollowingCluster::new(
            client.get_pending_async_connection_with_config(
                ClusterConfig::new()
                    .set_response_timeout(config.timeout)
                    .set_connection_timeout(config.connect_timeout),
            ),
            config,
        )))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}
