//! One log line per period for events that come in floods.
//!
//! Some events can be caused by anyone on the network at any rate: a
//! webhook with a bad signature, an accept that fails while the process is
//! out of file descriptors. Each still counts in a metric; a log line for
//! each would let the sender fill the disk and bury everything else. The
//! first event logs, then at most one per period, saying how many were held
//! back in between.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the next event may log; none before the first.
    next_at: Option<SystemTime>,
    held_back: u64,
}

impl LogThrottle {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(State {
                next_at: None,
                held_back: 0,
            }),
        }
    }

    /// Whether the event at `now` logs: `Some` with how many events were
    /// held back since the last one that did, `None` to stay quiet.
    pub fn admit(&self, now: SystemTime) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.next_at.is_some_and(|at| now < at) {
            state.held_back += 1;
            return None;
        }
        // A clock that jumps back holds lines back for as long as it
        // jumped; every event is still counted by its metric.
        state.next_at = now.checked_add(self.every);
        Some(std::mem::take(&mut state.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_logs_then_one_per_period_with_the_count_held_back() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let throttle = LogThrottle::new(Duration::from_secs(60));
        assert_eq!(throttle.admit(t0), Some(0));
        for s in 1..60 {
            assert_eq!(throttle.admit(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(throttle.admit(t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(61)), None);
        assert_eq!(throttle.admit(t0 + Duration::from_secs(600)), Some(1));
    }
}
