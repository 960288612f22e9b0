//! The service's one source of time.
//!
//! Every rule that depends on time (expiry, cooldowns, rate limits, the
//! expiry timer) reads it from a [`Clock`], and stores receive the current
//! time as an argument. Production uses the system clock; tests use a manual
//! clock they move forward, so an expiry test runs in milliseconds and never
//! sleeps (tokio's paused time misfires with real sockets and cannot reach an
//! external store).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

/// A cheaply cloneable handle on the current time.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    /// Moves only when [`Clock::advance`] is called. The watch channel wakes
    /// timers waiting in [`Clock::sleep_until`].
    Manual {
        now: Mutex<SystemTime>,
        ticks: watch::Sender<SystemTime>,
    },
}

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that stands still at `start` until advanced. For tests.
    pub fn manual(start: SystemTime) -> Self {
        let (ticks, _) = watch::channel(start);
        Self(Arc::new(Source::Manual {
            now: Mutex::new(start),
            ticks,
        }))
    }

    pub fn now(&self) -> SystemTime {
        match &*self.0 {
            Source::System => SystemTime::now(),
            Source::Manual { now, .. } => *now.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Moves a manual clock forward and wakes the timers it passes.
    ///
    /// # Panics
    /// On the system clock, which cannot be moved.
    pub fn advance(&self, by: Duration) {
        match &*self.0 {
            Source::System => panic!("the system clock cannot be advanced"),
            Source::Manual { now, ticks } => {
                let mut now = now.lock().unwrap_or_else(PoisonError::into_inner);
                *now += by;
                ticks.send_replace(*now);
            }
        }
    }

    /// Resolves once the clock reads `deadline` or later.
    pub async fn sleep_until(&self, deadline: SystemTime) {
        match &*self.0 {
            Source::System => {
                if let Ok(wait) = deadline.duration_since(SystemTime::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            Source::Manual { ticks, .. } => {
                let mut ticks = ticks.subscribe();
                // The sender lives as long as `self`, so this cannot fail.
                let _ = ticks.wait_for(|now| *now >= deadline).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_past_their_deadline() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = Clock::manual(start);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(start + Duration::from_secs(60)).await }
        });
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(Duration::from_secs(1));
        sleeper.await.expect("sleeper task");
        assert_eq!(clock.now(), start + Duration::from_secs(60));
    }
}
