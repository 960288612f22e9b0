//! Status changes for watchers: one broadcast channel per watched
//! verification, created on the first subscription and dropped with the
//! last one, so unwatched verifications cost nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::broadcast;

use crate::domain::{TenantId, Verification, VerificationId};

/// A verification changes a handful of times in its life; a watcher that
/// falls this far behind re-reads the store instead.
const CAPACITY: usize = 16;

type Key = (TenantId, VerificationId);

#[derive(Debug, Default)]
pub struct Feed {
    channels: Mutex<HashMap<Key, broadcast::Sender<Verification>>>,
}

impl Feed {
    pub fn subscribe(self: &Arc<Self>, tenant: &TenantId, id: &VerificationId) -> Subscription {
        let key = (tenant.clone(), id.clone());
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = channels
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            key,
            feed: Arc::clone(self),
        }
    }

    pub fn publish(&self, v: &Verification) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = channels.get(&(v.tenant.clone(), v.id.clone())) {
            // No receivers left means the last one is being dropped and will
            // remove the entry itself.
            let _ = tx.send(v.clone());
        }
    }

    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[derive(Debug)]
pub struct Subscription {
    rx: Option<broadcast::Receiver<Verification>>,
    key: Key,
    feed: Arc<Feed>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Verification, broadcast::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut channels = self
            .feed
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if channels
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::domain::{Channel, Destination, Policy, Purpose, Status, verification::Delivery};

    fn verification() -> Verification {
        Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::Enrollment,
            Delivery {
                channel: Channel::Sms,
                voice_mode: None,
                locale: None,
            },
            &Policy::default(),
            SystemTime::UNIX_EPOCH,
        )
    }

    #[tokio::test]
    async fn subscribers_get_changes_and_the_channel_goes_with_the_last_one() {
        let feed = Arc::new(Feed::default());
        let mut v = verification();
        let mut first = feed.subscribe(&v.tenant, &v.id);
        let second = feed.subscribe(&v.tenant, &v.id);
        assert_eq!(feed.watched(), 1);
        v.status = Status::Canceled;
        feed.publish(&v);
        assert_eq!(first.recv().await.expect("change").status, Status::Canceled);
        drop(first);
        assert_eq!(feed.watched(), 1, "one subscriber left");
        drop(second);
        assert_eq!(feed.watched(), 0);
        feed.publish(&v);
    }
}
