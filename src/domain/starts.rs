//! The least gap between new verifications for one destination.
//!
//! Every start creates a verification and supersedes the one still pending
//! for the destination and purpose. Without a gap, anyone who knows a
//! user's number could end that user's session as fast as they can call.
//! The gap is the resend cooldown, doubling with each new verification in a
//! row as a resend's wait does ([`Policy::resend_wait`]), whatever the
//! purpose; a destination with no new verification for a code's lifetime
//! starts over.

use std::time::SystemTime;

use super::policy::Policy;

/// The new verifications of one destination in a row: when the latest was
/// created, and how many there have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentStarts {
    pub last_at: SystemTime,
    pub count: u32,
}

impl RecentStarts {
    /// Admits a new verification at `now` after `recent`, returning what to
    /// keep; or refuses it, with when one may come.
    ///
    /// # Errors
    /// The time the gap ends, when `now` is inside it.
    pub fn admit(
        recent: Option<Self>,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Self, SystemTime> {
        let Some(recent) = recent.filter(|r| now < r.forgotten_at(policy)) else {
            return Ok(Self {
                last_at: now,
                count: 1,
            });
        };
        let retry_at = recent.last_at + policy.resend_wait(recent.count);
        if now < retry_at {
            return Err(retry_at);
        }
        Ok(Self {
            last_at: now,
            count: recent.count.saturating_add(1),
        })
    }

    /// When the run is forgotten: the longest a code can live after the
    /// latest, and never before its gap has ended.
    pub fn forgotten_at(&self, policy: &Policy) -> SystemTime {
        self.last_at + policy.starts_window.max(policy.resend_wait(self.count))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn a_run_is_remembered_for_the_longest_code_life_whatever_the_starts_channel() {
        // A 2-minute channel (voice) in a policy whose longest code lives
        // 10 minutes: the run must not be forgotten after 2 minutes, or
        // starts on that channel would never wait more than 2 minutes.
        let policy = Policy {
            code_ttl: Duration::from_secs(120),
            starts_window: Duration::from_secs(600),
            ..Policy::default()
        };
        let s = |secs| T0 + Duration::from_secs(secs);
        let mut run = RecentStarts::admit(None, &policy, T0).expect("the first");
        for at in [30, 90, 210] {
            run = RecentStarts::admit(Some(run), &policy, s(at)).expect("after its gap");
        }
        assert_eq!(run.count, 4);
        assert_eq!(RecentStarts::admit(Some(run), &policy, s(449)), Err(s(450)));
    }

    #[test]
    fn the_gap_is_the_cooldown_doubling_in_a_row_and_forgotten_after_a_codes_lifetime() {
        let policy = Policy::default(); // 30 s cooldown, 10 min codes
        let s = |secs| T0 + Duration::from_secs(secs);
        let first = RecentStarts::admit(None, &policy, T0).expect("the first");
        assert_eq!(RecentStarts::admit(Some(first), &policy, s(29)), Err(s(30)));
        let second = RecentStarts::admit(Some(first), &policy, s(30)).expect("after 30 s");
        assert_eq!(second.count, 2);
        assert_eq!(
            RecentStarts::admit(Some(second), &policy, s(89)),
            Err(s(90)),
            "then 60 s"
        );
        let third = RecentStarts::admit(Some(second), &policy, s(90)).expect("after 60 s");
        assert_eq!(third.forgotten_at(&policy), s(690));
        let fresh = RecentStarts::admit(Some(third), &policy, s(690)).expect("forgotten");
        assert_eq!(fresh.count, 1);
    }

    #[test]
    fn no_cooldown_means_no_gap() {
        let policy = Policy {
            resend_cooldown: Duration::ZERO,
            ..Policy::default()
        };
        let mut recent = None;
        for _ in 0..10 {
            recent = Some(RecentStarts::admit(recent, &policy, T0).expect("no gap"));
        }
    }
}
