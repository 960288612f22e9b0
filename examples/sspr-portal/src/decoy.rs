//! Anti-enumeration for the reset flow. Whether an account exists, and
//! which methods it has, must not show: so an unknown account gets decoy
//! methods, derived from a keyed hash of its name so that every visit shows
//! the same ones, and a decoy "verification" that answers like a real one
//! (wrong codes count down, resends wait, it expires) without anything
//! being sent.
//!
//! It cannot be perfect: verifyd's own refusals (a destination that got a
//! code moments ago) only ever answer real sends, and a real send takes
//! longer. A real deployment also limits resets per account name.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use sha2::Sha256;

use crate::{accounts::Account, mask, phone::REGIONS, proto::VerificationStatus};

/// verifyd's defaults for `code.resend_cooldown` and
/// `code.max_send_attempts`: set these to your tenant's, so a decoy's
/// resends are refused when a real one's would be.
const RESEND_COOLDOWN: Duration = Duration::from_secs(30);
const MAX_SENDS: u32 = 5;
/// Until a real verification was seen: verifyd's default `code.ttl` and
/// `code.max_check_attempts`.
const DEFAULT_TTL_SECS: u64 = 600;
const DEFAULT_CHECK_ATTEMPTS: u32 = 5;

const EMAIL_DOMAINS: [&str; 6] = [
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "hotmail.com",
    "proton.me",
];

/// The methods the reset page offers for an account, masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hints {
    pub phone: String,
    pub email: Option<String>,
}

/// Derives decoys, and remembers what real verifications look like.
#[derive(Debug)]
pub struct Decoys {
    /// Random per process: decoys are stable while the portal runs, and
    /// nobody can compute them in advance.
    key: [u8; 32],
    check_attempts: AtomicU32,
    ttl_secs: AtomicU64,
    /// How many match digits the latest real call showed (0: none).
    match_len: AtomicUsize,
}

impl Default for Decoys {
    fn default() -> Self {
        Decoys::with_key(rand::rng().random())
    }
}

impl Decoys {
    pub fn with_key(key: [u8; 32]) -> Self {
        Decoys {
            key,
            check_attempts: AtomicU32::new(DEFAULT_CHECK_ATTEMPTS),
            ttl_secs: AtomicU64::new(DEFAULT_TTL_SECS),
            match_len: AtomicUsize::new(0),
        }
    }

    fn digest(&self, account: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(account.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The methods an unknown account "has": always a phone (every
    /// registration asks for one), an email or not, all from the name.
    pub fn hints(&self, account: &str) -> Hints {
        let d = self.digest(account);
        let region = &REGIONS[usize::from(d[0]) % REGIONS.len()];
        let last_two = format!("{:02}", d[1] % 100);
        let national = "0".repeat(region.typical_len - 2) + &last_two;
        let phone = mask::phone(region.calling_code, &national);
        let email = (!d[2].is_multiple_of(4)).then(|| {
            let initial = char::from(b'a' + d[3] % 26);
            let domain = EMAIL_DOMAINS[usize::from(d[4]) % EMAIL_DOMAINS.len()];
            mask::email(&format!("{initial}@{domain}"))
        });
        Hints { phone, email }
    }

    /// What the reset page shows for an account name: its real methods, a
    /// decoy in place of any it lacks, so that a known account looks like
    /// an unknown one (an account without a phone would stand out).
    pub fn hints_for(&self, name: &str, account: Option<&Account>) -> Hints {
        let decoy = self.hints(name);
        let Some(account) = account else {
            return decoy;
        };
        Hints {
            phone: account
                .phone
                .as_ref()
                .map_or(decoy.phone, |phone| phone.masked()),
            email: account.email.as_deref().map(mask::email).or(decoy.email),
        }
    }

    /// Remembers a real start's shape: its check attempts, its code's
    /// lifetime and, for a call, whether it showed match digits.
    pub fn learn(&self, start: &crate::proto::StartVerificationResponse) {
        let Some(v) = &start.verification else { return };
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
        if v.channel == crate::proto::Channel::Voice as i32 {
            self.match_len
                .store(start.match_digits.len(), Ordering::Relaxed);
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
    use crate::phone::Phone;

    fn shape(masked: &str) -> String {
        masked
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect()
    }

    #[test]
    fn decoys_are_deterministic_per_key_and_name() {
        let decoys = Decoys::with_key([7; 32]);
        assert_eq!(decoys.hints("mallory"), decoys.hints("mallory"));
        assert_eq!(
            decoys.hints("mallory"),
            Decoys::with_key([7; 32]).hints("mallory")
        );
        // Another key, other decoys (for some of these names at least).
        let other = Decoys::with_key([8; 32]);
        assert!(
            ["a1", "b2", "c3", "d4", "e5"]
                .iter()
                .any(|n| decoys.hints(n) != other.hints(n))
        );
    }

    #[test]
    fn decoys_look_like_real_methods() {
        let decoys = Decoys::default();
        let mut with_email = 0;
        for n in 0..200 {
            let hints = decoys.hints(&format!("user{n}"));
            let region = REGIONS
                .iter()
                .find(|r| hints.phone.starts_with(&format!("+{} ", r.calling_code)))
                .expect("a known calling code");
            // The shape a real number of that country masks to.
            let real = Phone {
                region,
                national: "1".repeat(region.typical_len),
            };
            assert_eq!(
                shape(&hints.phone),
                shape(&real.masked()),
                "{}",
                hints.phone
            );
            if let Some(email) = hints.email {
                with_email += 1;
                let (first, domain) = email.split_once("•••@").expect("masked email");
                assert_eq!(first.chars().count(), 1);
                assert!(first.chars().all(|c| c.is_ascii_lowercase()));
                assert!(EMAIL_DOMAINS.contains(&domain));
            }
        }
        // Some have an email, some not.
        assert!((100..200).contains(&with_email), "{with_email}");
    }

    #[test]
    fn a_known_account_fills_missing_methods_with_decoys() {
        let decoys = Decoys::default();
        let mut account = Account {
            name: "alice".into(),
            password_hash: String::new(),
            phone: None,
            email: Some("alice@example.com".into()),
        };
        let hints = decoys.hints_for("alice", Some(&account));
        assert_eq!(hints.phone, decoys.hints("alice").phone);
        assert_eq!(hints.email.as_deref(), Some("a•••@example.com"));
        account.phone = Some(Phone::parse("US", "4155550100").expect("valid"));
        let hints = decoys.hints_for("alice", Some(&account));
        assert_eq!(hints.phone, "+1 ••••••••00");
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
