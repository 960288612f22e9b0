//! A verification as the memory store keeps it: the same facts as
//! [`Verification`], laid out to hold a million pending ones in a few
//! hundred megabytes.
//!
//! - the id as its 128 bits, not a shared string;
//! - times as 8-byte [`Stamp`]s, not 16-byte `SystemTime`s;
//! - send attempts inline (a pending verification usually has one), with
//!   provider names and key ids interned ([`Names`]) and the rarely set
//!   strings (error, provider reference and status) out of line;
//! - what most verifications never have (a locale, number-matching
//!   digits, a live call, an extension, the caller's reference and tags,
//!   a fallback workflow) out of line, behind one pointer.
//!
//! The domain's transitions run on a [`Verification`] made from a record
//! ([`Record::verification`]) and are written back ([`Record::set`], or
//! [`Record::set_check_state`] for those that touch only the status and the
//! check counter), so the rules stay in one place.

use std::{
    num::{NonZeroU16, NonZeroU64},
    time::{Duration, SystemTime},
};

use smallvec::SmallVec;
use zeroize::Zeroize as _;

use crate::domain::{
    CallerRef, Channel, CodeHash, DeliveryStatus, Destination, Extension, MatchDigits, PendingKind,
    Purpose, SendAttempt, Status, TenantId, Verification, VerificationId,
    fallback::Fallback,
    starts::RecentStarts,
    verification::{Delivery, Locale, VoiceMode},
    voice::VoiceCall,
};

/// A point in time in 8 bytes: nanoseconds since the Unix epoch, plus one,
/// so that `Option<Stamp>` takes 8 bytes too. Exact for every time from
/// 1970 to 2554; the service clock never reads earlier, and earlier would
/// read as the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp(NonZeroU64);

impl Stamp {
    pub(super) fn of(time: SystemTime) -> Self {
        let nanos = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self(NonZeroU64::new(nanos.saturating_add(1)).unwrap_or(NonZeroU64::MAX))
    }

    pub(super) fn time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.0.get() - 1)
    }
}

/// An interned string: an index into [`Names`], plus one, so that
/// `Option<Name>` takes 2 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Name(NonZeroU16);

/// The strings many records repeat: provider names and HMAC key ids. Both
/// come from the configuration, so there are a few dozen at most, and a
/// scan finds one faster than a hash would.
#[derive(Debug, Default)]
pub(super) struct Names(Vec<Box<str>>);

impl Names {
    fn intern(&mut self, name: &str) -> Name {
        let index = self
            .0
            .iter()
            .position(|known| &**known == name)
            .unwrap_or_else(|| {
                self.0.push(name.into());
                self.0.len() - 1
            });
        u16::try_from(index + 1)
            .ok()
            .and_then(NonZeroU16::new)
            .map(Name)
            .expect("configured names number far fewer than 65,535")
    }

    fn get(&self, name: Name) -> &str {
        &self.0[usize::from(name.0.get()) - 1]
    }
}

/// One provider try, as [`SendAttempt`] holds it.
#[derive(Debug)]
struct Attempt {
    at: Stamp,
    provider: Name,
    channel: Channel,
    status: DeliveryStatus,
    /// Only some tries have any of these; most console and failed tries
    /// have none.
    detail: Option<Box<AttemptDetail>>,
}

#[derive(Debug)]
struct AttemptDetail {
    error_reason: Option<String>,
    reference: Option<String>,
    provider_status: Option<String>,
}

/// What most verifications never have.
#[derive(Debug, Default)]
struct Rare {
    locale: Option<Locale>,
    match_digits: Option<MatchDigits>,
    call: Option<VoiceCall>,
    extension: Option<Extension>,
    caller_ref: Option<Box<CallerRef>>,
    fallback: Option<Box<Fallback>>,
    /// A second code checked beside the record's: a later send's whose
    /// outcome is unknown (a timeout, a 5xx: the user may hold it), until
    /// the next accepted send; or the previous fallback step's, which the
    /// user may still be reading when the next step's arrives.
    unconfirmed: Option<(Name, [u8; 32])>,
}

impl Rare {
    /// What `v` has of these, with the store's own `unconfirmed` code.
    fn of(v: &Verification, unconfirmed: Option<(Name, [u8; 32])>) -> Option<Box<Self>> {
        Self {
            locale: v.delivery.locale.clone(),
            match_digits: v.match_digits.clone(),
            call: v.call.clone(),
            extension: v.extension.clone(),
            caller_ref: (!v.caller_ref.is_empty()).then(|| Box::new(v.caller_ref.clone())),
            fallback: v.fallback.clone(),
            unconfirmed,
        }
        .boxed()
    }

    /// Boxed if it holds anything: a record without any keeps no box.
    fn boxed(self) -> Option<Box<Self>> {
        let any = self.locale.is_some()
            || self.match_digits.is_some()
            || self.call.is_some()
            || self.extension.is_some()
            || self.caller_ref.is_some()
            || self.fallback.is_some()
            || self.unconfirmed.is_some();
        any.then(|| Box::new(self))
    }
}

#[derive(Debug)]
pub(super) struct Record {
    /// The id's bits ([`Record::id`]), as bytes: a `u128` field would align
    /// the record to 16 bytes and pad it.
    id: [u8; 16],
    pub(super) tenant: TenantId,
    pub(super) to: Destination,
    created_at: Stamp,
    pub(super) expires_at: Stamp,
    last_send_at: Option<Stamp>,
    sending_until: Option<Stamp>,
    checks_remaining: u32,
    sends_remaining: u32,
    attempts: SmallVec<[Attempt; 1]>,
    rare: Option<Box<Rare>>,
    /// The MAC of the code last accepted by a sender, made with the key
    /// `code_key` names; no key, no code (before the first accepted send,
    /// and once the verification has finished).
    code_mac: [u8; 32],
    code_key: Option<Name>,
    pub(super) purpose: Purpose,
    channel: Channel,
    voice_mode: Option<VoiceMode>,
    pub(super) status: Status,
    accepted_once: bool,
    /// How many new verifications of its destination came in a row with
    /// this one ([`RecentStarts::count`]), this one included; its creation
    /// time is the run's latest. One byte: the gap stops doubling after
    /// four, so a run saturates long before it would tell more.
    run: u8,
}

impl Record {
    /// A record of `v`, with no code yet.
    pub(super) fn new(v: &Verification, names: &mut Names) -> Self {
        let mut record = Self {
            id: v.id.to_bits().to_ne_bytes(),
            tenant: v.tenant.clone(),
            to: v.to.clone(),
            created_at: Stamp::of(v.created_at),
            expires_at: Stamp::of(v.expires_at),
            last_send_at: None,
            sending_until: None,
            checks_remaining: 0,
            sends_remaining: 0,
            attempts: SmallVec::new(),
            rare: None,
            code_mac: [0; 32],
            code_key: None,
            purpose: v.purpose,
            channel: v.delivery.channel,
            voice_mode: None,
            status: v.status,
            accepted_once: false,
            run: 1,
        };
        record.set(v, names);
        record
    }

    /// Writes back everything a transition may have changed in `v` (all
    /// but the id, tenant, destination, purpose and creation time, which
    /// never change).
    pub(super) fn set(&mut self, v: &Verification, names: &mut Names) {
        self.expires_at = Stamp::of(v.expires_at);
        self.last_send_at = v.last_send_at.map(Stamp::of);
        self.sending_until = v.sending_until.map(Stamp::of);
        self.set_check_state(v);
        self.sends_remaining = v.sends_remaining;
        self.attempts.clear();
        // Exactly what is needed: growing by the default rule would reserve
        // room for more attempts than a verification usually makes.
        self.attempts.reserve_exact(v.send_attempts.len());
        self.attempts
            .extend(v.send_attempts.iter().map(|a| Attempt::of(a, names)));
        let unconfirmed = self.rare.as_ref().and_then(|r| r.unconfirmed);
        self.wipe_unconfirmed();
        self.rare = Rare::of(v, unconfirmed);
        self.channel = v.delivery.channel;
        self.voice_mode = v.delivery.voice_mode;
        self.accepted_once = v.accepted_once;
    }

    /// Writes back what a check, a cancel or a settled expiry changes.
    pub(super) fn set_check_state(&mut self, v: &Verification) {
        self.status = v.status;
        self.checks_remaining = v.checks_remaining;
    }

    /// The verification this record holds.
    pub(super) fn verification(&self, names: &Names) -> Verification {
        let rare = self.rare.as_deref();
        Verification {
            id: self.verification_id(),
            tenant: self.tenant.clone(),
            to: self.to.clone(),
            extension: self.extension().cloned(),
            purpose: self.purpose,
            delivery: Delivery {
                channel: self.channel,
                voice_mode: self.voice_mode,
                locale: rare.and_then(|r| r.locale.clone()),
            },
            status: self.status,
            created_at: self.created_at.time(),
            expires_at: self.expires_at.time(),
            checks_remaining: self.checks_remaining,
            sends_remaining: self.sends_remaining,
            last_send_at: self.last_send_at.map(Stamp::time),
            sending_until: self.sending_until.map(Stamp::time),
            send_attempts: self.attempts.iter().map(|a| a.attempt(names)).collect(),
            match_digits: rare.and_then(|r| r.match_digits.clone()),
            call: rare.and_then(|r| r.call.clone()),
            accepted_once: self.accepted_once,
            caller_ref: rare
                .and_then(|r| r.caller_ref.as_deref().cloned())
                .unwrap_or_default(),
            fallback: rare.and_then(|r| r.fallback.clone()),
        }
    }

    /// When its next fallback step falls due, if one is to run.
    pub(super) fn next_step_at(&self) -> Option<Stamp> {
        self.rare
            .as_deref()
            .and_then(|r| r.fallback.as_ref()?.next_at)
            .map(Stamp::of)
    }

    pub(super) fn extension(&self) -> Option<&Extension> {
        self.rare.as_deref().and_then(|r| r.extension.as_ref())
    }

    /// The kind of pending verification it is for its destination
    /// ([`Verification::pending_kind`]).
    pub(super) fn pending_kind(&self) -> PendingKind<'_> {
        PendingKind {
            purpose: self.purpose,
            extension: self.extension().map(Extension::keys),
        }
    }

    /// The run of new verifications of its destination that this one
    /// ends, were it the latest.
    pub(super) fn recent_starts(&self) -> RecentStarts {
        RecentStarts {
            last_at: self.created_at.time(),
            count: u32::from(self.run),
        }
    }

    pub(super) fn set_run(&mut self, starts: RecentStarts) {
        self.run = u8::try_from(starts.count).unwrap_or(u8::MAX);
    }

    pub(super) fn id(&self) -> u128 {
        u128::from_ne_bytes(self.id)
    }

    pub(super) fn verification_id(&self) -> VerificationId {
        VerificationId::from_bits(self.id())
    }

    /// The status as of `now` ([`Verification::status_at`]).
    pub(super) fn status_at(&self, now: SystemTime) -> Status {
        self.status.as_of(self.expires_at.time(), now)
    }

    /// The code an accepted send delivered: the one the user holds now,
    /// and the only one.
    pub(super) fn set_code(&mut self, hash: CodeHash, names: &mut Names) {
        self.code_key = Some(names.intern(hash.key_id.as_str()));
        self.code_mac = hash.mac;
        self.set_unconfirmed(None);
    }

    fn set_unconfirmed(&mut self, unconfirmed: Option<(Name, [u8; 32])>) {
        // The old MAC is wiped where it lies, on the heap, before the box
        // can be freed.
        self.wipe_unconfirmed();
        let mut rare = self.rare.take().map_or_else(Rare::default, |r| *r);
        rare.unconfirmed = unconfirmed;
        self.rare = rare.boxed();
    }

    fn wipe_unconfirmed(&mut self) {
        if let Some((_, mac)) = self
            .rare
            .as_deref_mut()
            .and_then(|r| r.unconfirmed.as_mut())
        {
            mac.zeroize();
        }
    }

    /// A fallback step's code: the user may still be reading the previous
    /// step's, so that one is kept beside it (in place of any unknown
    /// send's), and the two check until the verification ends or a send
    /// outside the workflow is accepted. A step that delivers no code (a
    /// call) keeps the previous step's code checking.
    pub(super) fn add_step_code(&mut self, hash: Option<CodeHash>, names: &mut Names) {
        let Some(previous) = self.code_key.map(|key| (key, self.code_mac)) else {
            // No code of its own yet (an unconfirmed one, perhaps, from
            // the step before): the new one goes beside it.
            if let Some(hash) = hash {
                self.code_key = Some(names.intern(hash.key_id.as_str()));
                self.code_mac = hash.mac;
            }
            return;
        };
        // The previous step's code moves beside, and the new one (none
        // yet for a call: a read-aloud call's comes with its key press,
        // `reveal_code`) takes its place.
        self.code_key = hash.as_ref().map(|h| names.intern(h.key_id.as_str()));
        self.code_mac = hash.map_or([0; 32], |h| h.mac);
        self.set_unconfirmed(Some(previous));
    }

    /// The code a read-aloud call just said: the user's now. It replaces
    /// the record's codes, but for a fallback step's call, which holds no
    /// code of its own yet and keeps the previous step's beside it
    /// (`add_step_code`), the first code it says goes beside that one.
    pub(super) fn reveal_code(&mut self, hash: CodeHash, names: &mut Names) {
        if self.code_key.is_some() {
            self.set_code(hash, names);
            return;
        }
        self.code_key = Some(names.intern(hash.key_id.as_str()));
        self.code_mac = hash.mac;
    }

    /// The code of a send whose outcome is unknown: kept beside the last
    /// accepted one (replacing an earlier unknown one), so that whichever
    /// the user got checks.
    pub(super) fn set_unconfirmed_code(&mut self, hash: CodeHash, names: &mut Names) {
        let key = names.intern(hash.key_id.as_str());
        self.set_unconfirmed(Some((key, hash.mac)));
    }

    /// Forgets the codes: after a press-# call, which delivers none, and
    /// once the verification has finished, since it can never approve
    /// again and its hashes are not kept for the retention period.
    pub(super) fn drop_code(&mut self) {
        self.code_key = None;
        self.code_mac = [0; 32];
        self.set_unconfirmed(None);
    }

    /// Whether a stored code's hash is one of `candidates` (one per key in
    /// the ring), compared in constant time in the MAC. Both stored codes
    /// are always compared, so the time does not tell which matched.
    pub(super) fn code_matches(&self, candidates: &[CodeHash], names: &Names) -> bool {
        let matches = |key: Name, mac: &[u8; 32]| {
            let key = names.get(key);
            candidates.iter().any(|c| c.matches_parts(key, mac))
        };
        let accepted = self
            .code_key
            .is_some_and(|key| matches(key, &self.code_mac));
        let unconfirmed = self
            .rare
            .as_ref()
            .and_then(|r| r.unconfirmed.as_ref())
            .is_some_and(|(key, mac)| matches(*key, mac));
        accepted | unconfirmed
    }

    /// Whether a hash is held, for tests.
    #[cfg(test)]
    pub(super) fn has_code(&self) -> bool {
        self.code_key.is_some() || self.rare.as_ref().is_some_and(|r| r.unconfirmed.is_some())
    }
}

impl Attempt {
    fn of(a: &SendAttempt, names: &mut Names) -> Self {
        let has_detail =
            a.error_reason.is_some() || a.reference.is_some() || a.provider_status.is_some();
        Self {
            at: Stamp::of(a.at),
            provider: names.intern(&a.provider),
            channel: a.channel,
            status: a.status,
            detail: has_detail.then(|| {
                Box::new(AttemptDetail {
                    error_reason: a.error_reason.clone(),
                    reference: a.reference.clone(),
                    provider_status: a.provider_status.clone(),
                })
            }),
        }
    }

    fn attempt(&self, names: &Names) -> SendAttempt {
        let detail = self.detail.as_deref();
        SendAttempt {
            channel: self.channel,
            status: self.status,
            provider: names.get(self.provider).to_owned(),
            at: self.at.time(),
            error_reason: detail.and_then(|d| d.error_reason.clone()),
            reference: detail.and_then(|d| d.reference.clone()),
            provider_status: detail.and_then(|d| d.provider_status.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Policy, code::KeyId, voice::CallToken};

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn verification(delivery: Delivery) -> Verification {
        Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::PasswordReset,
            delivery,
            &Policy::default(),
            T0 + Duration::new(1_764_000_000, 123_456_789),
        )
    }

    fn attempt(provider: &str, reference: Option<&str>) -> SendAttempt {
        SendAttempt {
            channel: Channel::Voice,
            status: DeliveryStatus::Accepted,
            provider: provider.into(),
            at: T0 + Duration::new(1_764_000_001, 1),
            error_reason: None,
            reference: reference.map(str::to_owned),
            provider_status: reference.map(|_| "queued".to_owned()),
        }
    }

    #[test]
    fn a_record_gives_back_the_verification_it_was_made_of() {
        let mut names = Names::default();
        let plain = verification(Delivery {
            channel: Channel::Sms,
            voice_mode: None,
            locale: None,
        });
        assert_eq!(Record::new(&plain, &mut names).verification(&names), plain);

        let mut full = verification(Delivery {
            channel: Channel::Voice,
            voice_mode: Some(VoiceMode::Match),
            locale: Locale::parse("pt-BR"),
        });
        full.send_attempts = vec![
            attempt("twilio", Some("CA0123")),
            attempt("backup", None),
            attempt("twilio", None),
        ];
        full.call = Some(VoiceCall::new(&CallToken::generate()));
        full.last_send_at = Some(T0 + Duration::from_nanos(1));
        full.sending_until = Some(T0);
        full.checks_remaining = 2;
        full.sends_remaining = 1;
        full.accepted_once = true;
        full.status = Status::Denied;
        full.extension = Extension::parse("ww4711");
        full.caller_ref = CallerRef {
            reference: Some("reset-42".into()),
            tags: [("ticket".into(), "HD-1".into())].into(),
        };
        assert!(full.match_digits.is_some());
        let record = Record::new(&full, &mut names);
        assert_eq!(record.verification(&names), full);
        assert_eq!(names.0.len(), 2, "provider names are held once");
    }

    #[test]
    fn the_code_is_compared_against_its_key_and_forgotten() {
        let mut names = Names::default();
        let v = verification(Delivery {
            channel: Channel::Sms,
            voice_mode: None,
            locale: None,
        });
        let mut record = Record::new(&v, &mut names);
        let hash = |key: &str, b: u8| CodeHash {
            key_id: KeyId::parse(key).expect("id"),
            mac: [b; 32],
        };
        assert!(
            !record.code_matches(&[hash("k1", 1)], &names),
            "no code yet"
        );
        record.set_code(hash("k1", 1), &mut names);
        assert_eq!(names.get(record.code_key.expect("set")), "k1");
        assert!(record.code_matches(&[hash("k2", 1), hash("k1", 1)], &names));
        assert!(
            !record.code_matches(&[hash("k2", 1)], &names),
            "another key"
        );
        assert!(
            !record.code_matches(&[hash("k1", 2)], &names),
            "another MAC"
        );
        record.drop_code();
        assert!(!record.code_matches(&[hash("k1", 1)], &names));
    }

    #[test]
    fn stamps_are_exact_and_fit_an_option_in_eight_bytes() {
        for t in [
            T0,
            T0 + Duration::from_nanos(1),
            T0 + Duration::new(1_764_000_000, 999_999_999),
        ] {
            assert_eq!(Stamp::of(t).time(), t);
        }
        assert!(Stamp::of(T0 + Duration::from_secs(1)) > Stamp::of(T0));
        assert_eq!(size_of::<Option<Stamp>>(), 8);
    }

    /// The layout is the point of this module: a record that grows past
    /// this costs every pending verification (docs/performance.md).
    #[test]
    fn a_record_stays_compact() {
        assert!(
            size_of::<Record>() <= 176,
            "Record is {} bytes",
            size_of::<Record>()
        );
        assert!(
            size_of::<Attempt>() <= 24,
            "Attempt is {} bytes",
            size_of::<Attempt>()
        );
    }
}
