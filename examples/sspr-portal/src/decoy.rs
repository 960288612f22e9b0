//! Anti-enumeration for the reset flow: when nothing is sent (an unknown
//! account, a method it lacks, a number or address that is not its own),
//! the session gets a decoy "verification" that answers like a real one:
//! wrong codes count down, resends wait, it expires, a call "rings" until
//! then. The method page itself shows nothing of the account (see
//! pages/reset.rs), so the decoy only has to match what follows it.
//!
//! It cannot be perfect: verifyd's own refusals (a destination that got a
//! code moments ago) only ever answer real sends, and a real send takes
//! longer. Both show only to someone who typed the account's full number
//! or address. A real deployment also limits resets per account name.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use rand::Rng as _;

use crate::proto::{Channel, Verification, VerificationStatus};

/// verifyd's defaults for `code.resend_cooldown` and
/// `code.max_send_attempts`: set these to your tenant's, so a decoy's
/// resends are refused when a real one's would be.
const RESEND_COOLDOWN: Duration = Duration::from_secs(30);
const MAX_SENDS: u32 = 5;
/// Until a real verification was seen: verifyd's default `code.ttl` and
/// `code.max_check_attempts`.
const DEFAULT_TTL_SECS: u64 = 600;
const DEFAULT_CHECK_ATTEMPTS: u32 = 5;

/// Remembers what real verifications look like, and makes decoys of that
/// shape.
#[derive(Debug)]
pub struct Decoys {
    check_attempts: AtomicU32,
    ttl_secs: AtomicU64,
    /// How many match digits the latest real call showed (0: none).
    match_len: AtomicUsize,
}

impl Default for Decoys {
    fn default() -> Self {
        Decoys {
            check_attempts: AtomicU32::new(DEFAULT_CHECK_ATTEMPTS),
            ttl_secs: AtomicU64::new(DEFAULT_TTL_SECS),
            match_len: AtomicUsize::new(0),
        }
    }
}

impl Decoys {
    /// Remembers a real start's shape: its check attempts, its code's
    /// lifetime and, for a call, whether it showed match digits. Only from
    /// a verification still pending: a replayed start answers one as it
    /// stands now, with tries spent or its code expired, which would give
    /// decoys a shape no new verification has.
    pub fn learn(&self, v: &Verification, match_digits: &str) {
        if v.status() != VerificationStatus::Pending {
            return;
        }
        if v.check_attempts_remaining > 0 {
            self.check_attempts
                .store(v.check_attempts_remaining, Ordering::Relaxed);
        }
        if let (Some(created), Some(expires)) = (&v.created_at, &v.expires_at)
            && let Ok(secs) = u64::try_from(expires.seconds - created.seconds)
            && secs > 0
        {
            self.ttl_secs.store(secs, Ordering::Relaxed);
        }
        if v.channel() == Channel::Voice {
            self.match_len.store(match_digits.len(), Ordering::Relaxed);
        }
    }

    /// Digits for a decoy call, when real calls show them.
    pub fn match_digits(&self) -> Option<String> {
        let len = self.match_len.load(Ordering::Relaxed).min(12);
        let mut rng = rand::rng();
        (len > 0).then(|| {
            (0..len)
                .map(|_| char::from(b'0' + rng.random_range(0..10)))
                .collect()
        })
    }

    /// A decoy verification, sent "now".
    pub fn shadow(&self, now: Instant) -> Shadow {
        let ttl = Duration::from_secs(self.ttl_secs.load(Ordering::Relaxed));
        Shadow {
            checks_left: self.check_attempts.load(Ordering::Relaxed),
            sends: 1,
            last_send: now,
            expires_at: now + ttl,
            ttl,
        }
    }
}

/// A verification that was never sent, answering as one that was.
#[derive(Debug, Clone)]
pub struct Shadow {
    checks_left: u32,
    sends: u32,
    last_send: Instant,
    expires_at: Instant,
    ttl: Duration,
}

/// What a decoy answers a resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowResend {
    Sent,
    /// Refused, as verifyd's cooldown and send limit refuse: retry after.
    Wait(Duration),
    Ended(VerificationStatus),
}

impl Shadow {
    pub fn status(&self, now: Instant) -> VerificationStatus {
        if self.checks_left == 0 {
            VerificationStatus::MaxAttemptsReached
        } else if now >= self.expires_at {
            VerificationStatus::Expired
        } else {
            VerificationStatus::Pending
        }
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// A code typed: always wrong. Ok(tries left), or the status it ended in.
    pub fn check(&mut self, now: Instant) -> Result<u32, VerificationStatus> {
        match self.status(now) {
            VerificationStatus::Pending => {
                self.checks_left -= 1;
                match self.checks_left {
                    0 => Err(VerificationStatus::MaxAttemptsReached),
                    left => Ok(left),
                }
            }
            ended => Err(ended),
        }
    }

    /// verifyd's schedule: the cooldown doubles with each send, up to 8
    /// times; past the send limit, nothing until the verification expires.
    pub fn resend(&mut self, now: Instant) -> ShadowResend {
        let status = self.status(now);
        if status != VerificationStatus::Pending {
            return ShadowResend::Ended(status);
        }
        if self.sends >= MAX_SENDS {
            return ShadowResend::Wait(self.expires_at - now);
        }
        let wait = RESEND_COOLDOWN * 2u32.pow((self.sends - 1).min(3));
        let ready = self.last_send + wait;
        if now < ready {
            return ShadowResend::Wait(ready - now);
        }
        self.sends += 1;
        self.last_send = now;
        self.expires_at = now + self.ttl;
        ShadowResend::Sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pending_verification_teaches_the_shape() {
        let decoys = Decoys::default();
        let seen = |status: VerificationStatus, tries: u32| Verification {
            status: status.into(),
            check_attempts_remaining: tries,
            channel: Channel::Voice.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1000,
                nanos: 0,
            }),
            expires_at: Some(prost_types::Timestamp {
                seconds: 1300,
                nanos: 0,
            }),
            ..Verification::default()
        };
        // A replayed start's approved verification, one try spent.
        decoys.learn(&seen(VerificationStatus::Approved, 2), "1234");
        let shadow = decoys.shadow(Instant::now());
        assert_eq!(shadow.checks_left, DEFAULT_CHECK_ATTEMPTS);
        assert_eq!(shadow.ttl, Duration::from_secs(DEFAULT_TTL_SECS));
        assert_eq!(decoys.match_digits(), None);

        decoys.learn(&seen(VerificationStatus::Pending, 3), "1234");
        let shadow = decoys.shadow(Instant::now());
        assert_eq!(shadow.checks_left, 3);
        assert_eq!(shadow.ttl, Duration::from_secs(300));
        assert_eq!(decoys.match_digits().map(|d| d.len()), Some(4));
    }

    #[test]
    fn a_shadow_counts_wrong_codes_down_and_expires() {
        let decoys = Decoys::default();
        let t0 = Instant::now();
        let mut shadow = decoys.shadow(t0);
        assert_eq!(shadow.check(t0), Ok(4));
        assert_eq!(shadow.check(t0), Ok(3));
        assert_eq!(shadow.check(t0), Ok(2));
        assert_eq!(shadow.check(t0), Ok(1));
        assert_eq!(
            shadow.check(t0),
            Err(VerificationStatus::MaxAttemptsReached)
        );
        assert_eq!(
            shadow.check(t0),
            Err(VerificationStatus::MaxAttemptsReached)
        );

        let mut shadow = decoys.shadow(t0);
        let later = t0 + Duration::from_secs(DEFAULT_TTL_SECS);
        assert_eq!(shadow.status(later), VerificationStatus::Expired);
        assert_eq!(shadow.check(later), Err(VerificationStatus::Expired));
    }

    #[test]
    fn a_shadow_resends_on_verifyds_schedule() {
        let decoys = Decoys::default();
        let t0 = Instant::now();
        let mut shadow = decoys.shadow(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            shadow.resend(at(5)),
            ShadowResend::Wait(Duration::from_secs(25))
        );
        assert_eq!(shadow.resend(at(30)), ShadowResend::Sent);
        assert_eq!(
            shadow.resend(at(60)),
            ShadowResend::Wait(Duration::from_secs(30))
        );
        assert_eq!(shadow.resend(at(90)), ShadowResend::Sent);
        assert_eq!(shadow.resend(at(210)), ShadowResend::Sent);
        assert_eq!(shadow.resend(at(450)), ShadowResend::Sent);
        // The fifth send was the last.
        assert_eq!(
            shadow.resend(at(700)),
            ShadowResend::Wait(Duration::from_secs(350))
        );
        assert_eq!(
            shadow.resend(at(2000)),
            ShadowResend::Ended(VerificationStatus::Expired)
        );
    }
}
