//! WatchVerification across replicas: every script that changes a
//! verification publishes on its channel in the same atomic step, and each
//! replica keeps one pub/sub connection subscribed to the channels its own
//! watchers follow.
//!
//! `subscribe` returns once Redis has confirmed the subscription, so a
//! watcher that subscribes and then reads misses nothing. When the
//! connection drops (Redis restarted, `CLIENT KILL`), the task reconnects,
//! subscribes again to every watched channel, and tells every watcher to
//! re-read: changes made meanwhile are then picked up.

use std::{sync::Arc, time::Duration};

use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{config::RedisConfig, sentinel::Switches};
use crate::store::{
    feed::{Feed, Subscription},
    port::StoreError,
};

pub(super) type Channel = String;

/// How often an idle pub/sub connection is checked.
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Command {
    Subscribe(Channel, oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub(super) struct Changes {
    feed: Arc<Feed<Channel>>,
    commands: mpsc::Sender<Command>,
    timeout: Duration,
}

impl Changes {
    /// Starts the subscriber task; it ends when `stop` is cancelled.
    /// `switches`, with Sentinel, are its announcements of a new primary:
    /// the subscriber leaves the old one at each.
    pub(super) fn start(
        config: &RedisConfig,
        switches: Option<Switches>,
        stop: CancellationToken,
    ) -> Self {
        let (unwatched_tx, unwatched_rx) = mpsc::unbounded_channel();
        let feed = Arc::new(Feed::reporting_unwatched(unwatched_tx));
        let (commands, commands_rx) = mpsc::channel(1024);
        let task = Subscriber {
            config: config.clone(),
            failed_connects: 0,
            feed: Arc::clone(&feed),
            commands: commands_rx,
            unwatched: unwatched_rx,
            switches,
        };
        tokio::spawn(task.run(stop));
        Self {
            feed,
            commands,
            timeout: config.timeout + config.connect_timeout,
        }
    }

    /// Follows `channel`; resolves once Redis confirmed the subscription.
    pub(super) async fn subscribe(
        &self,
        channel: Channel,
    ) -> Result<Subscription<Channel>, StoreError> {
        let subscription = self.feed.subscribe(channel.clone());
        let (ack, acked) = oneshot::channel();
        let confirmed = async {
            self.commands
                .send(Command::Subscribe(channel, ack))
                .await
                .ok()?;
            acked.await.ok()
        };
        match tokio::time::timeout(self.timeout, confirmed).await {
            Ok(Some(())) => Ok(subscription),
            _ => Err(StoreError::Unavailable(
                "cannot subscribe to changes".to_owned(),
            )),
        }
    }
}

struct Subscriber {
    config: RedisConfig,
    /// Connections that failed so far (Sentinel: how far to rotate the
    /// sentinels' list, so one that does not answer is asked last).
    failed_connects: usize,
    feed: Arc<Feed<Channel>>,
    commands: mpsc::Receiver<Command>,
    unwatched: mpsc::UnboundedReceiver<Channel>,
    switches: Option<Switches>,
}

impl Subscriber {
    async fn run(mut self, stop: CancellationToken) {
        let mut pause = Duration::from_millis(50);
        // An outage is logged once, not on every retry.
        let mut reported = false;
        loop {
            let connected = tokio::select! {
                () = stop.cancelled() => return,
                connected = self.connect() => connected,
            };
            match connected {
                Ok((sink, stream)) => {
                    pause = Duration::from_millis(50);
                    if reported {
                        tracing::info!("Redis pub/sub connection is back");
                        reported = false;
                    }
                    // Whatever happened while disconnected: re-read.
                    self.feed.notify_all();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = self.serve(sink, stream) => {}
                    }
                    tracing::warn!("lost the Redis pub/sub connection; reconnecting");
                }
                Err(error) => {
                    if !reported {
                        tracing::warn!(%error, "cannot connect to Redis for pub/sub; retrying");
                        reported = true;
                    }
                    // Nobody may wait on a confirmation that cannot come.
                    while let Ok(command) = self.commands.try_recv() {
                        drop(command);
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The nodes to try, in order: the standalone server, the cluster's
    /// seeds (messages published on any node reach every node), or the
    /// primary the sentinels name now, so that after a failover the
    /// subscription follows the new primary.
    async fn clients(&self) -> redis::RedisResult<Vec<redis::Client>> {
        if self.config.sentinel.is_used() {
            let mut sentinels = super::sentinel::client(&self.config, self.failed_connects)?;
            return Ok(vec![sentinels.async_get_client().await?]);
        }
        let urls = self.config.url.iter().chain(&self.config.cluster);
        urls.map(|url| self.config.client(url)).collect()
    }

    /// Connects to the first node that answers and subscribes to every
    /// watched channel.
    async fn connect(&mut self) -> Result<(PubSubSink, PubSubStream), redis::RedisError> {
        let connected = self.try_connect().await;
        if connected.is_err() {
            // With Sentinel, the next try starts with the next sentinel.
            self.failed_connects = self.failed_connects.wrapping_add(1);
        }
        connected
    }

    async fn try_connect(&self) -> Result<(PubSubSink, PubSubStream), redis::RedisError> {
        // With Sentinel, a lookup: asking the sentinels, then the primary
        // its role.
        let lookup = 2 * (self.config.connect_timeout + self.config.timeout);
        let deadline = self.config.connect_timeout + self.config.timeout;
        let clients = match tokio::time::timeout(lookup, self.clients()).await {
            Ok(clients) => clients?,
            Err(_) => return Err(timed_out()),
        };
        let mut last_error = None;
        for client in clients {
            let attempt = async {
                let (mut sink, stream) = client.get_async_pubsub().await?.split();
                let watched = self.feed.watched();
                if !watched.is_empty() {
                    sink.subscribe(&watched).await?;
                }
                Ok::<_, redis::RedisError>((sink, stream))
            };
            match tokio::time::timeout(deadline, attempt).await {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => last_error = Some(timed_out()),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no Redis URL configured"))
        }))
    }

    /// Relays messages and (un)subscribes until the connection drops.
    async fn serve(&mut self, mut sink: PubSubSink, mut stream: PubSubStream) {
        // A connection can die without a word (a frozen server, a lost
        // network path): a ping that goes unanswered ends it. Subscribed,
        // RESP2 answers PING with ["pong", ""], not a simple string: any
        // reply will do.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                // The sentinels named a new primary: subscribe there.
                () = switched(self.switches.as_mut()) => return,
                _ = heartbeat.tick() => {
                    let pong = tokio::time::timeout(self.config.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { return };
                    self.feed.notify(&message.get_channel_name().to_owned());
                }
                Some(command) = self.commands.recv() => {
                    let Command::Subscribe(channel, ack) = command;
                    // Its caller gave up and left: subscribing now would
                    // follow a channel nobody watches.
                    if !self.feed.is_watched(&channel) {
                        continue;
                    }
                    let subscribed = tokio::time::timeout(self.config.timeout, sink.subscribe(&channel)).await;
                    if !matches!(subscribed, Ok(Ok(()))) {
                        return;
                    }
                    let _ = ack.send(());
                }
                Some(channel) = self.unwatched.recv() => {
                    // A watcher may have come back since.
                    if !self.feed.is_watched(&channel) {
                        let unsubscribed = tokio::time::timeout(self.config.timeout, sink.unsubscribe(&channel)).await;
                        if !matches!(unsubscribed, Ok(Ok(()))) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Resolves at the next announcement of a new primary; never without
/// Sentinel, or once its follower has stopped.
async fn switched(switches: Option<&mut Switches>) {
    if let Some(switches) = switches
        && switches.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use redis::{FromRedisValue as _, Value};

    #[test]
    fn the_heartbeat_takes_a_subscribed_connections_pong_in_any_shape() {
        // Subscribed, RESP2 answers PING with ["pong", ""]: read as a
        // string it fails, and every ping would end the connection.
        let pong = Value::Array(vec![
            Value::BulkString(b"pong".to_vec()),
            Value::BulkString(Vec::new()),
        ]);
        assert!(String::from_redis_value(pong.clone()).is_err());
        assert!(Value::from_redis_value(pong).is_ok());
    }
}
