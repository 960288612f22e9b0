//! Change signals for watchers: one `tokio::sync::watch` channel per watched
//! verification, created with the first subscription and dropped with the
//! last, so unwatched verifications cost nothing.
//!
//! A signal carries no data: it says "re-read", so a watcher that misses
//! some signals still ends up at the current state, and a resync after a
//! lost connection is one more signal.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::{mpsc, watch};

#[derive(Debug)]
pub struct Feed<K> {
    channels: Mutex<HashMap<K, watch::Sender<()>>>,
    /// Told each key whose last subscription ended, when someone outside
    /// (a Redis subscriber) keeps state per key.
    unwatched: Option<mpsc::UnboundedSender<K>>,
}

impl<K: Hash + Eq + Clone> Feed<K> {
    pub fn new() -> Self {
        Self {
            channels: Mutex::default(),
            unwatched: None,
        }
    }

    /// A feed that sends each key whose last subscription ended to
    /// `unwatched`.
    pub fn reporting_unwatched(unwatched: mpsc::UnboundedSender<K>) -> Self {
        Self {
            channels: Mutex::default(),
            unwatched: Some(unwatched),
        }
    }

    pub fn subscribe(self: &Arc<Self>, key: K) -> Subscription<K> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = channels
            .entry(key.clone())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        Subscription {
            rx,
            key: Some(key),
            feed: Arc::clone(self),
        }
    }

    /// Tells the key's subscribers to re-read.
    pub fn notify(&self, key: &K) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = channels.get(key) {
            tx.send_replace(());
        }
    }

    /// Tells every subscriber to re-read, e.g. after changes may have been
    /// missed.
    pub fn notify_all(&self) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for tx in channels.values() {
            tx.send_replace(());
        }
    }

    pub fn watched(&self) -> Vec<K> {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.keys().cloned().collect()
    }

    pub fn is_watched(&self, key: &K) -> bool {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.contains_key(key)
    }
}

impl<K: Hash + Eq + Clone> Default for Feed<K> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
pub struct Subscription<K: Hash + Eq + Clone> {
    rx: watch::Receiver<()>,
    key: Option<K>,
    feed: Arc<Feed<K>>,
}

impl<K: Hash + Eq + Clone> Subscription<K> {
    /// Resolves at the next signal after the previous call (or after
    /// subscribing).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives as long as any subscription, this one
            // included, so this cannot happen; never spin if it does.
            std::future::pending::<()>().await;
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Subscription<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut channels = self
            .feed
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This subscription's receiver still counts: it is the last one
        // when the count is one.
        if channels
            .get(&key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            channels.remove(&key);
            drop(channels);
            if let Some(unwatched) = &self.feed.unwatched {
                let _ = unwatched.send(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_are_signalled_and_the_channel_goes_with_the_last_one() {
        let (tx, mut unwatched) = mpsc::unbounded_channel();
        let feed = Arc::new(Feed::reporting_unwatched(tx));
        let mut first = feed.subscribe("a");
        let second = feed.subscribe("a");
        assert_eq!(feed.watched(), vec!["a"]);
        feed.notify(&"a");
        first.changed().await;
        drop(first);
        assert!(feed.is_watched(&"a"), "one subscriber left");
        assert!(unwatched.try_recv().is_err());
        drop(second);
        assert!(!feed.is_watched(&"a"));
        assert_eq!(unwatched.try_recv().ok(), Some("a"));
        feed.notify(&"a");
    }
}
