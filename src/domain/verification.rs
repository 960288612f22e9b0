//! The verification entity and its state machine.
//!
//! Stores call these transitions inside their atomic step (the memory store
//! under its lock; the Redis store mirrors them in Lua), so the rules live
//! in one place and are tested here without I/O.

use std::time::SystemTime;

use super::{
    caller_ref::CallerRef, channel::Channel, code::MatchDigits, destination::Destination,
    extension::Extension, fallback::Fallback, policy::Policy, tenant::TenantId,
    verification_id::VerificationId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Enrollment,
    PasswordReset,
    MethodUpdate,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrollment => "enrollment",
            Self::PasswordReset => "password_reset",
            Self::MethodUpdate => "method_update",
        }
    }
}

/// What a voice call asks the user to do. Configuration spells the modes
/// `confirm`, `match` and `code`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VoiceMode {
    /// Press # to approve.
    #[default]
    Confirm,
    /// Key in the digits shown on screen, then #.
    Match,
    /// The code is read aloud.
    Code,
}

impl VoiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Match => "match",
            Self::Code => "code",
        }
    }
}

/// A BCP 47 language tag such as `fr-CA`, checked for shape and with the
/// usual case (language lower, region upper). Which languages have
/// messages is the templates' business, with their own fallback.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

impl Locale {
    pub fn parse(input: &str) -> Option<Self> {
        if input.len() > 35 {
            return None;
        }
        let mut canonical = Vec::new();
        for (i, subtag) in input.split('-').enumerate() {
            let alnum = subtag.bytes().all(|b| b.is_ascii_alphanumeric());
            let ok = match i {
                0 => {
                    (2..=8).contains(&subtag.len())
                        && subtag.bytes().all(|b| b.is_ascii_alphabetic())
                }
                _ => (1..=8).contains(&subtag.len()) && alnum,
            };
            if !ok {
                return None;
            }
            canonical.push(if i > 0 && subtag.len() == 2 {
                subtag.to_ascii_uppercase()
            } else {
                subtag.to_ascii_lowercase()
            });
        }
        Some(Self(canonical.join("-")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Approved,
    Canceled,
    Expired,
    MaxAttemptsReached,
    Failed,
    Denied,
    /// A newer verification for the same destination and purpose replaced
    /// it: whatever it sent can approve nothing.
    Superseded,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        self != Self::Pending
    }

    /// The status a verification stored as `self` has at `now`: pending
    /// stops at `expires_at`, whether or not anything has settled it yet.
    pub fn as_of(self, expires_at: SystemTime, now: SystemTime) -> Self {
        if self == Self::Pending && now >= expires_at {
            Self::Expired
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
            Self::MaxAttemptsReached => "max_attempts_reached",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// A provider took the message (queued or sending on its side).
    Accepted,
    /// No provider took it, or the provider reports it failed.
    Failed,
    /// The provider handed it to the carrier.
    Sent,
    Delivered,
    Undelivered,
}

/// The rank from which a status is final.
const FINAL_RANK: u8 = 4;

/// A provider's report on a message it took, from a status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The provider's id for the message or call.
    pub reference: String,
    /// The status, as a word of verifyd's status vocabulary ([`Self::rank`]),
    /// e.g. `delivered`. It is recorded as given, even when unknown.
    pub status: String,
    pub error_code: Option<String>,
}

impl DeliveryReport {
    /// Where a status sits in a message's or call's life, and what it means
    /// here. Callbacks arrive late, repeated and out of order; a report only
    /// applies when it moves the attempt forward. Unknown words rank 0.
    ///
    /// These words are verifyd's status vocabulary, stored in every
    /// attempt's `provider_status` (and so shared by every version of a
    /// fleet). They are the Messages and Calls API's words, so the Twilio
    /// adapter passes its words through as they come; another provider's
    /// adapter maps its own words onto them at its edge.
    pub fn rank(status: &str) -> (u8, Option<DeliveryStatus>) {
        match status {
            "accepted" | "scheduled" | "queued" => (1, Some(DeliveryStatus::Accepted)),
            "sending" => (2, Some(DeliveryStatus::Accepted)),
            "sent" => (3, Some(DeliveryStatus::Sent)),
            "delivered" => (4, Some(DeliveryStatus::Delivered)),
            "undelivered" => (4, Some(DeliveryStatus::Undelivered)),
            "failed" | "canceled" => (4, Some(DeliveryStatus::Failed)),
            "read" => (5, Some(DeliveryStatus::Delivered)),
            // Calls.
            "initiated" => (1, Some(DeliveryStatus::Accepted)),
            "ringing" => (2, Some(DeliveryStatus::Accepted)),
            "in-progress" => (3, Some(DeliveryStatus::Sent)),
            "completed" => (4, Some(DeliveryStatus::Delivered)),
            "busy" | "no-answer" => (4, Some(DeliveryStatus::Undelivered)),
            Self::ANSWERED_BY_MACHINE => (4, Some(DeliveryStatus::Failed)),
            _ => (0, None),
        }
    }
}

impl DeliveryReport {
    /// What verifyd records when a call's answering-machine detection found
    /// no person: the call is over, and failed.
    pub const ANSWERED_BY_MACHINE: &str = "answered-by-machine";

    /// Whether a status word ends the message's or call's life: nothing
    /// more will happen to it.
    pub fn is_final(status: &str) -> bool {
        Self::rank(status).0 >= FINAL_RANK
    }

    /// The reason recorded on an attempt this report marks failed.
    pub fn failure_reason(&self) -> Option<String> {
        let (_, status) = Self::rank(&self.status);
        if !matches!(
            status,
            Some(DeliveryStatus::Failed | DeliveryStatus::Undelivered)
        ) {
            return None;
        }
        Some(match &self.error_code {
            Some(code) => format!("provider reports {} (error {code})", self.status),
            None => format!("provider reports {}", self.status),
        })
    }
}

/// One message or call, whether or not a sender took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAttempt {
    pub channel: Channel,
    pub status: DeliveryStatus,
    pub provider: String,
    pub at: SystemTime,
    /// Why no sender took it. Never contains the code.
    pub error_reason: Option<String>,
    /// The provider's id for the message or call, to match its callbacks.
    pub reference: Option<String>,
    /// The provider's latest status word from its callbacks, kept as sent
    /// even when verifyd does not know it.
    pub provider_status: Option<String>,
}

/// What a send is for: the channel and how to word the message. A resend
/// may change all of these; they become the verification's once a sender
/// accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub channel: Channel,
    pub voice_mode: Option<VoiceMode>,
    pub locale: Option<Locale>,
}

impl Delivery {
    /// This delivery, in `locale` if it names none (the number's country's
    /// language, say).
    #[must_use]
    pub fn or_locale(self, locale: Option<Locale>) -> Self {
        Self {
            locale: self.locale.or(locale),
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub id: VerificationId,
    pub tenant: TenantId,
    pub to: Destination,
    /// An office phone's extension, dialed once the call connects; only
    /// on verifications reached by voice.
    pub extension: Option<Extension>,
    pub purpose: Purpose,
    pub delivery: Delivery,
    pub status: Status,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    pub checks_remaining: u32,
    pub sends_remaining: u32,
    /// When the latest send was reserved; the resend cooldown counts from it.
    pub last_send_at: Option<SystemTime>,
    /// While a send is under way (until it is recorded, or this time
    /// passes), no other send starts.
    pub sending_until: Option<SystemTime>,
    pub send_attempts: Vec<SendAttempt>,
    pub match_digits: Option<MatchDigits>,
    /// The live voice call, when the latest accepted send was one.
    pub call: Option<super::call::VoiceCall>,
    /// Whether any provider ever accepted a send. Delivery reports may later
    /// mark an accepted attempt failed; that does not make the next send
    /// the first.
    pub accepted_once: bool,
    /// The caller's reference and tags, as the start gave them; never
    /// changed.
    pub caller_ref: CallerRef,
    /// The automatic channel fallback, when the start asked for one (or
    /// its tenant does by default). Boxed: most verifications have none.
    pub fallback: Option<Box<Fallback>>,
}

/// What a destination holds one pending verification of: a new one of the
/// same kind supersedes it. An extension's keys (pauses stripped) make a
/// kind of their own, so a verification to one desk of an office number
/// never ends another desk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingKind<'a> {
    pub purpose: Purpose,
    /// The extension's digits ([`Extension::keys`]).
    pub extension: Option<&'a str>,
}

/// How a send ended, as far as verifyd can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// A provider took it.
    Accepted,
    /// No provider took it, yet one may have sent it all the same: a
    /// timeout, a dropped connection, a 5xx, an answer verifyd cannot use.
    /// The user may hold its code.
    Unknown,
    /// Nothing went out: every provider refused, or none was tried.
    Refused,
}

/// Why a send on a verification is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefused {
    /// It has ended: only a pending verification sends.
    NotPending(Status),
    Cooldown {
        retry_at: SystemTime,
    },
    SendLimitReached,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Approved,
    /// Wrong code; the verification may have just run out of attempts.
    Rejected,
    /// Not pending (any more): nothing is compared and nothing approves.
    NotPending(Status),
}

impl Verification {
    /// A new pending verification, before its first send.
    pub fn new(
        id: VerificationId,
        tenant: TenantId,
        to: Destination,
        purpose: Purpose,
        delivery: Delivery,
        policy: &Policy,
        now: SystemTime,
    ) -> Self {
        let match_digits = (delivery.voice_mode == Some(VoiceMode::Match))
            .then(|| MatchDigits::generate(policy.match_digits));
        Self {
            id,
            tenant,
            to,
            extension: None,
            purpose,
            delivery,
            status: Status::Pending,
            created_at: now,
            expires_at: now + policy.code_ttl,
            checks_remaining: policy.max_check_attempts,
            sends_remaining: policy.max_send_attempts,
            last_send_at: None,
            sending_until: None,
            send_attempts: Vec::new(),
            match_digits,
            call: None,
            accepted_once: false,
            caller_ref: CallerRef::default(),
            fallback: None,
        }
    }

    /// The kind of pending verification this is, for its destination.
    pub fn pending_kind(&self) -> PendingKind<'_> {
        PendingKind {
            purpose: self.purpose,
            extension: self.extension.as_ref().map(Extension::keys),
        }
    }

    /// Whether a send on `channel` reaches this verification's user: the
    /// channel must reach the destination, and an extension is dialed only
    /// by a call (a text to the office number would reach someone else).
    pub fn reachable_by(&self, channel: Channel) -> bool {
        channel.reaches(&self.to) && (self.extension.is_none() || channel == Channel::Voice)
    }

    /// The destination as logs and audit lines show it: masked, with the
    /// extension masked too.
    pub fn masked_destination(&self) -> String {
        super::extension::masked_destination(&self.to, self.extension.as_ref())
    }

    /// The status as of `now`: a pending verification past its expiry is
    /// expired, whether or not anything has settled it yet.
    pub fn status_at(&self, now: SystemTime) -> Status {
        self.status.as_of(self.expires_at, now)
    }

    /// Moves a pending verification past its expiry to EXPIRED. Returns
    /// whether anything changed. Every transition below calls it first, so a
    /// verification never acts as pending after `expires_at`, whether or not
    /// the expiry timer has fired yet.
    pub fn settle(&mut self, now: SystemTime) -> bool {
        if self.status_at(now) != self.status {
            self.status = Status::Expired;
            return true;
        }
        false
    }

    /// Takes one send from the budget, or says why not. The wait after a
    /// send holds whatever the channel and grows with each resend
    /// ([`Policy::resend_wait`]); concurrent resends are serialized by the
    /// send lease.
    pub fn reserve_send(&mut self, policy: &Policy, now: SystemTime) -> Result<(), SendRefused> {
        self.settle(now);
        if self.status != Status::Pending {
            return Err(SendRefused::NotPending(self.status));
        }
        if let Some(until) = self.sending_until
            && now < until
        {
            return Err(SendRefused::Cooldown { retry_at: until });
        }
        if let Some(last) = self.last_send_at {
            let sends_made = policy
                .max_send_attempts
                .saturating_sub(self.sends_remaining);
            let retry_at = last + policy.resend_wait(sends_made);
            if now < retry_at {
                return Err(SendRefused::Cooldown { retry_at });
            }
        }
        if self.sends_remaining == 0 {
            return Err(SendRefused::SendLimitReached);
        }
        self.sends_remaining -= 1;
        self.last_send_at = Some(now);
        self.sending_until = Some(now + policy.send_lease);
        Ok(())
    }

    /// Whether the fallback step after step `after` is due at `now`: the
    /// verification is pending, still at that step, and the step's time
    /// has come. What a store checks before it lets a replica claim the
    /// step ([`Self::reserve_step`]).
    pub fn step_due(&self, after: u8, now: SystemTime) -> bool {
        self.status_at(now) == Status::Pending
            && self
                .fallback
                .as_ref()
                .is_some_and(|f| f.step == after && f.is_due(now))
    }

    /// Claims the due fallback step: its send reserved as a resend's is
    /// ([`Self::reserve_send`]), and the workflow moved on to it. A step
    /// that may not send ends the workflow: the verification stays as it
    /// is, its last code still checkable.
    pub fn reserve_step(&mut self, policy: &Policy, now: SystemTime) -> Result<(), SendRefused> {
        let reserved = self.reserve_send(policy, now);
        if let Some(fallback) = self.fallback.as_mut() {
            match reserved {
                Ok(()) => fallback.advance(now),
                Err(_) => fallback.end(),
            }
        }
        reserved
    }

    /// Ends the automatic fallback: no step runs any more. Returns whether
    /// one was still to run.
    pub fn end_fallback(&mut self) -> bool {
        match self.fallback.as_mut() {
            Some(fallback) if fallback.next_at.is_some() => {
                fallback.end();
                true
            }
            _ => false,
        }
    }

    /// After `report` was applied: when it reports the latest send failed or
    /// undelivered (a text that never arrived, a call nobody answered),
    /// the next fallback step falls due as soon as the resend wait allows.
    /// Returns whether that moved it.
    pub fn hasten_fallback(
        &mut self,
        report: &DeliveryReport,
        policy: &Policy,
        now: SystemTime,
    ) -> bool {
        let latest_failed = self.send_attempts.last().is_some_and(|a| {
            a.reference.as_deref() == Some(report.reference.as_str())
                && matches!(
                    a.status,
                    DeliveryStatus::Failed | DeliveryStatus::Undelivered
                )
        });
        if self.status_at(now) != Status::Pending || !latest_failed {
            return false;
        }
        let sends_made = policy
            .max_send_attempts
            .saturating_sub(self.sends_remaining);
        let cooled = self
            .last_send_at
            .map_or(now, |last| last + policy.resend_wait(sends_made));
        let Some(fallback) = self.fallback.as_mut() else {
            return false;
        };
        fallback.hasten(cooled.max(now))
    }

    /// Records how a reserved send went: every provider try, and its
    /// `outcome`. An accepted send makes its delivery the verification's and
    /// restarts the validity window (the store swaps in the new code's hash
    /// in the same step). A send whose outcome is unknown may have reached
    /// the user, so it fails nothing: the verification stays pending, its
    /// window restarts, and the store keeps the send's code beside the last
    /// accepted one until the next accepted send. A first send that surely
    /// went nowhere fails the verification; a refused resend leaves it as
    /// it was, so the previous code stays valid. Retries and failover
    /// inside one send use one send from the budget, which `reserve_send`
    /// already took.
    pub fn record_send(
        &mut self,
        delivery: Delivery,
        attempts: Vec<SendAttempt>,
        call: Option<super::call::VoiceCall>,
        outcome: SendOutcome,
        policy: &Policy,
        now: SystemTime,
    ) {
        let first_send = !self.accepted_once;
        self.sending_until = None;
        // Exactly what is needed: a pending verification is usually held
        // with one attempt, and growing by the default rule would reserve
        // room for four (hundreds of bytes per verification kept).
        self.send_attempts.reserve_exact(attempts.len());
        self.send_attempts.extend(attempts);
        if self.settle(now) || self.status != Status::Pending {
            return;
        }
        if outcome == SendOutcome::Unknown {
            // The code may be on its way: give the user its full window.
            self.expires_at = now + policy.code_ttl;
        } else if outcome == SendOutcome::Accepted {
            self.accepted_once = true;
            // A resend may switch to number matching; the digits are made
            // once and kept across later resends.
            if delivery.voice_mode == Some(VoiceMode::Match) && self.match_digits.is_none() {
                self.match_digits = Some(MatchDigits::generate(policy.match_digits));
            }
            self.delivery = delivery;
            // The new send's call, if any, replaces the previous one.
            self.call = call;
            self.expires_at = now + policy.code_ttl;
        } else if first_send {
            self.status = Status::Failed;
        }
    }

    /// Applies a provider's delivery report to the send attempt it names.
    /// Returns whether anything changed: a repeated, stale or unknown
    /// report after a known one changes nothing.
    pub fn record_delivery(&mut self, report: &DeliveryReport) -> bool {
        let Some(attempt) = self
            .send_attempts
            .iter_mut()
            .rev()
            .find(|a| a.reference.as_deref() == Some(report.reference.as_str()))
        else {
            return false;
        };
        let current = attempt
            .provider_status
            .as_deref()
            .map_or(0, |s| DeliveryReport::rank(s).0);
        let (rank, status) = DeliveryReport::rank(&report.status);
        let moves_forward = rank > current || (current == 0 && attempt.provider_status.is_none());
        if !moves_forward || attempt.provider_status.as_deref() == Some(report.status.as_str()) {
            return false;
        }
        attempt.provider_status = Some(report.status.clone());
        if let Some(status) = status {
            attempt.status = status;
        }
        if let Some(reason) = report.failure_reason() {
            attempt.error_reason = Some(reason);
        }
        true
    }

    /// Applies one check. `code_matches` is the constant-time comparison of
    /// the typed code's HMAC with the stored one.
    pub fn check(&mut self, code_matches: bool, now: SystemTime) -> CheckOutcome {
        self.settle(now);
        if self.status != Status::Pending {
            return CheckOutcome::NotPending(self.status);
        }
        if code_matches {
            self.status = Status::Approved;
            return CheckOutcome::Approved;
        }
        self.checks_remaining = self.checks_remaining.saturating_sub(1);
        if self.checks_remaining == 0 {
            self.status = Status::MaxAttemptsReached;
        }
        CheckOutcome::Rejected
    }

    /// Ends a pending verification that a newer one for its destination
    /// and purpose replaces. Returns whether it did: one that has already
    /// ended (expired included) stays as it is.
    pub fn supersede(&mut self, now: SystemTime) -> bool {
        self.settle(now);
        if self.status != Status::Pending {
            return false;
        }
        self.status = Status::Superseded;
        true
    }

    /// # Errors
    /// With the current status when the verification is not pending.
    pub fn cancel(&mut self, now: SystemTime) -> Result<(), Status> {
        self.settle(now);
        if self.status != Status::Pending {
            return Err(self.status);
        }
        self.status = Status::Canceled;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn sms() -> Delivery {
        Delivery {
            channel: Channel::Sms,
            voice_mode: None,
            locale: None,
        }
    }

    fn attempt(status: DeliveryStatus, at: SystemTime) -> SendAttempt {
        SendAttempt {
            channel: Channel::Sms,
            status,
            provider: "console".into(),
            at,
            error_reason: None,
            reference: None,
            provider_status: None,
        }
    }

    fn pending(policy: &Policy) -> Verification {
        let mut v = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::PasswordReset,
            sms(),
            policy,
            T0,
        );
        v.reserve_send(policy, T0).expect("first send");
        v.record_send(
            sms(),
            vec![attempt(DeliveryStatus::Accepted, T0)],
            None,
            SendOutcome::Accepted,
            policy,
            T0,
        );
        v
    }

    #[test]
    fn right_code_approves_once() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        assert_eq!(v.check(true, T0), CheckOutcome::Approved);
        assert_eq!(
            v.check(true, T0),
            CheckOutcome::NotPending(Status::Approved)
        );
    }

    #[test]
    fn the_last_wrong_code_exhausts_attempts_and_then_even_the_right_code_fails() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        for left in (0..policy.max_check_attempts).rev() {
            assert_eq!(v.check(false, T0), CheckOutcome::Rejected);
            assert_eq!(v.checks_remaining, left);
        }
        assert_eq!(v.status, Status::MaxAttemptsReached);
        assert_eq!(
            v.check(true, T0),
            CheckOutcome::NotPending(Status::MaxAttemptsReached)
        );
    }

    #[test]
    fn expiry_is_applied_by_every_transition() {
        let policy = Policy::default();
        let at_expiry = T0 + policy.code_ttl;
        let mut v = pending(&policy);
        assert!(!v.clone().settle(at_expiry - Duration::from_millis(1)));
        assert_eq!(
            v.check(true, at_expiry),
            CheckOutcome::NotPending(Status::Expired)
        );
        let mut v = pending(&policy);
        assert_eq!(v.cancel(at_expiry), Err(Status::Expired));
    }

    #[test]
    fn resends_respect_the_cooldown_and_the_send_budget() {
        // Codes that outlive every wait: an expired one would refuse first.
        let policy = Policy {
            code_ttl: Duration::from_secs(3_600),
            ..Policy::default()
        };
        let mut v = pending(&policy);
        let retry_at = T0 + policy.resend_cooldown;
        assert_eq!(
            v.reserve_send(&policy, retry_at - Duration::from_secs(1)),
            Err(SendRefused::Cooldown { retry_at })
        );
        let mut now = retry_at;
        for sends_made in 1..policy.max_send_attempts {
            v.reserve_send(&policy, now).expect("within budget");
            // The wait doubles with each resend: 30 s, 1 min, 2 min, 4 min.
            let wait = policy.resend_wait(sends_made + 1);
            assert_eq!(
                v.reserve_send(&policy, now + wait - Duration::from_secs(1)),
                Err(SendRefused::Cooldown {
                    retry_at: now + wait
                })
            );
            now += wait;
        }
        assert_eq!(
            policy.resend_wait(5),
            policy.resend_cooldown * 8,
            "it stops doubling"
        );
        assert_eq!(v.sends_remaining, 0);
        assert_eq!(
            v.reserve_send(&policy, now),
            Err(SendRefused::SendLimitReached)
        );
    }

    #[test]
    fn a_send_under_way_holds_off_others_even_without_a_cooldown() {
        let policy = Policy {
            resend_cooldown: Duration::ZERO,
            ..Policy::default()
        };
        let mut v = pending(&policy);
        v.reserve_send(&policy, T0).expect("no cooldown");
        assert_eq!(
            v.reserve_send(&policy, T0),
            Err(SendRefused::Cooldown {
                retry_at: T0 + policy.send_lease
            })
        );
        v.record_send(
            sms(),
            vec![attempt(DeliveryStatus::Accepted, T0)],
            None,
            SendOutcome::Accepted,
            &policy,
            T0,
        );
        v.reserve_send(&policy, T0).expect("recorded: free again");
    }

    #[test]
    fn an_accepted_resend_switches_channel_and_restarts_validity_but_keeps_attempts() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        assert_eq!(v.check(false, T0), CheckOutcome::Rejected);
        let later = T0 + Duration::from_secs(60);
        v.reserve_send(&policy, later).expect("after cooldown");
        let voice = Delivery {
            channel: Channel::Voice,
            voice_mode: Some(VoiceMode::Code),
            locale: None,
        };
        v.record_send(
            voice.clone(),
            vec![attempt(DeliveryStatus::Accepted, later)],
            None,
            SendOutcome::Accepted,
            &policy,
            later,
        );
        assert_eq!(v.delivery, voice);
        assert_eq!(v.expires_at, later + policy.code_ttl);
        assert_eq!(v.checks_remaining, policy.max_check_attempts - 1);
    }

    #[test]
    fn a_failed_resend_leaves_the_verification_pending_and_a_failed_first_send_fails_it() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        let later = T0 + Duration::from_secs(60);
        v.reserve_send(&policy, later).expect("after cooldown");
        v.record_send(
            sms(),
            vec![attempt(DeliveryStatus::Failed, later)],
            None,
            SendOutcome::Refused,
            &policy,
            later,
        );
        assert_eq!(v.status, Status::Pending);
        assert_eq!(v.expires_at, T0 + policy.code_ttl);

        let mut fresh = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::Enrollment,
            sms(),
            &policy,
            T0,
        );
        fresh.reserve_send(&policy, T0).expect("first send");
        fresh.record_send(
            sms(),
            vec![attempt(DeliveryStatus::Failed, T0)],
            None,
            SendOutcome::Refused,
            &policy,
            T0,
        );
        assert_eq!(fresh.status, Status::Failed);
    }

    #[test]
    fn a_send_whose_outcome_is_unknown_fails_nothing_and_restarts_the_window() {
        let policy = Policy::default();
        let mut fresh = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::Enrollment,
            sms(),
            &policy,
            T0,
        );
        fresh.reserve_send(&policy, T0).expect("first send");
        let later = T0 + Duration::from_secs(5);
        fresh.record_send(
            sms(),
            vec![attempt(DeliveryStatus::Failed, later)],
            None,
            SendOutcome::Unknown,
            &policy,
            later,
        );
        assert_eq!(fresh.status, Status::Pending, "the SMS may have arrived");
        assert_eq!(fresh.expires_at, later + policy.code_ttl);
        assert!(!fresh.accepted_once, "nothing was accepted");
        assert_eq!(fresh.sending_until, None, "the send is over");
    }

    #[test]
    fn only_pending_verifications_cancel() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        assert_eq!(v.cancel(T0), Ok(()));
        assert_eq!(v.cancel(T0), Err(Status::Canceled));
        assert_eq!(
            v.check(true, T0),
            CheckOutcome::NotPending(Status::Canceled)
        );
    }

    #[test]
    fn match_digits_exist_only_for_number_matching_calls() {
        let policy = Policy::default();
        let matching = Delivery {
            channel: Channel::Voice,
            voice_mode: Some(VoiceMode::Match),
            locale: None,
        };
        let to = Destination::parse("+14155550100").expect("valid");
        let v = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            to.clone(),
            Purpose::Enrollment,
            matching,
            &policy,
            T0,
        );
        let digits = v.match_digits.expect("match digits");
        assert_eq!(digits.as_str().len(), usize::from(policy.match_digits));
        let v = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            to,
            Purpose::Enrollment,
            sms(),
            &policy,
            T0,
        );
        assert_eq!(v.match_digits, None);
    }

    #[test]
    fn a_resend_switching_to_number_matching_gets_digits_once() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        assert_eq!(v.match_digits, None);
        let matching = Delivery {
            channel: Channel::Voice,
            voice_mode: Some(VoiceMode::Match),
            locale: None,
        };
        let later = T0 + policy.resend_cooldown;
        v.reserve_send(&policy, later).expect("after cooldown");
        v.record_send(
            matching.clone(),
            vec![attempt(DeliveryStatus::Accepted, later)],
            None,
            SendOutcome::Accepted,
            &policy,
            later,
        );
        let digits = v.match_digits.clone().expect("digits made on the switch");
        let later = later + policy.resend_wait(2);
        v.reserve_send(&policy, later).expect("after cooldown");
        v.record_send(
            matching,
            vec![attempt(DeliveryStatus::Accepted, later)],
            None,
            SendOutcome::Accepted,
            &policy,
            later,
        );
        assert_eq!(v.match_digits, Some(digits), "kept across resends");
    }

    #[test]
    fn a_failed_delivery_report_does_not_make_the_next_send_the_first() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        v.send_attempts[0].reference = Some("CA1".into());
        let machine = DeliveryReport {
            reference: "CA1".into(),
            status: "answered-by-machine".into(),
            error_code: None,
        };
        assert!(v.record_delivery(&machine));
        let later = T0 + policy.resend_cooldown;
        v.reserve_send(&policy, later).expect("after cooldown");
        v.record_send(
            sms(),
            vec![attempt(DeliveryStatus::Failed, later)],
            None,
            SendOutcome::Refused,
            &policy,
            later,
        );
        assert_eq!(
            v.status,
            Status::Pending,
            "a failed resend leaves it pending"
        );
    }

    #[test]
    fn delivery_reports_only_move_an_attempt_forward() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        v.send_attempts[0].reference = Some("SM1".into());
        let report = |status: &str| DeliveryReport {
            reference: "SM1".into(),
            status: status.into(),
            error_code: (status == "undelivered").then(|| "30003".into()),
        };
        assert!(v.record_delivery(&report("sent")));
        assert_eq!(v.send_attempts[0].status, DeliveryStatus::Sent);
        assert!(
            !v.record_delivery(&report("queued")),
            "late and out of order"
        );
        assert!(!v.record_delivery(&report("sent")), "repeated");
        assert!(v.record_delivery(&report("undelivered")));
        assert_eq!(v.send_attempts[0].status, DeliveryStatus::Undelivered);
        assert_eq!(
            v.send_attempts[0].error_reason.as_deref(),
            Some("provider reports undelivered (error 30003)")
        );
        assert!(
            !v.record_delivery(&report("delivered")),
            "final stays final"
        );
        let other = DeliveryReport {
            reference: "SM2".into(),
            ..report("delivered")
        };
        assert!(!v.record_delivery(&other), "unknown reference");
    }

    #[test]
    fn an_unknown_provider_status_is_recorded_not_rejected() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        v.send_attempts[0].reference = Some("SM1".into());
        let report = |status: &str| DeliveryReport {
            reference: "SM1".into(),
            status: status.into(),
            error_code: None,
        };
        assert!(v.record_delivery(&report("partially_delivered")));
        assert_eq!(
            v.send_attempts[0].provider_status.as_deref(),
            Some("partially_delivered")
        );
        assert_eq!(v.send_attempts[0].status, DeliveryStatus::Accepted);
        assert!(v.record_delivery(&report("delivered")));
        assert_eq!(v.send_attempts[0].status, DeliveryStatus::Delivered);
    }

    #[test]
    fn a_superseded_verification_approves_nothing_and_sends_nothing_more() {
        let policy = Policy::default();
        let mut v = pending(&policy);
        assert!(v.supersede(T0));
        assert_eq!(v.status, Status::Superseded);
        assert_eq!(
            v.check(true, T0),
            CheckOutcome::NotPending(Status::Superseded)
        );
        let later = T0 + Duration::from_secs(3_600);
        assert_eq!(
            v.reserve_send(&policy, later),
            Err(SendRefused::NotPending(Status::Superseded))
        );
        assert!(!v.supersede(T0), "once");
        // An expired one stays expired.
        let mut old = pending(&policy);
        assert!(!old.supersede(old.expires_at));
        assert_eq!(old.status, Status::Expired);
    }

    #[test]
    fn locales_are_checked_and_cased() {
        assert_eq!(Locale::parse("fr-ca").map(|l| l.0), Some("fr-CA".into()));
        assert_eq!(
            Locale::parse("zh-Hant-TW").map(|l| l.0),
            Some("zh-hant-TW".into())
        );
        for bad in ["", "f", "fr_CA", "fr--CA", "1r", &"a".repeat(36)] {
            assert_eq!(Locale::parse(bad), None, "{bad}");
        }
    }
}
