//! Risk signals before a phone send, and what they decide: a live line type
//! (static numbering data cannot tell a US landline from a mobile) and
//! when the number's SIM last changed (a SIM swap is the main takeover path
//! for SMS resets; NIST SP 800-63B 5.1.3.3 says to check for it).
//!
//! The words are Twilio Lookup v2's, as its `line_type_intelligence.type`
//! and `sim_swap.last_sim_swap` give them; the rules here are pure, so they
//! are tested without the provider.

use std::time::{Duration, SystemTime};

use super::{channel::Channel, verification::Purpose};

/// A line's type, as a live lookup reports it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum LineKind {
    Mobile,
    Landline,
    FixedVoip,
    NonFixedVoip,
    Personal,
    TollFree,
    Premium,
    SharedCost,
    Uan,
    Voicemail,
    Pager,
    Unknown,
}

impl LineKind {
    pub const ALL: [Self; 12] = [
        Self::Mobile,
        Self::Landline,
        Self::FixedVoip,
        Self::NonFixedVoip,
        Self::Personal,
        Self::TollFree,
        Self::Premium,
        Self::SharedCost,
        Self::Uan,
        Self::Voicemail,
        Self::Pager,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Landline => "landline",
            Self::FixedVoip => "fixedVoip",
            Self::NonFixedVoip => "nonFixedVoip",
            Self::Personal => "personal",
            Self::TollFree => "tollFree",
            Self::Premium => "premium",
            Self::SharedCost => "sharedCost",
            Self::Uan => "uan",
            Self::Voicemail => "voicemail",
            Self::Pager => "pager",
            Self::Unknown => "unknown",
        }
    }

    /// A provider's word; one verifyd does not know reads as unknown.
    pub fn parse(word: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == word)
            .unwrap_or(Self::Unknown)
    }
}

/// What a lookup says of the number's last SIM change: the time, when the
/// carrier gives it, else whether it happened within a period the carrier
/// chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct SimSwap {
    pub last_swapped_at: Option<SystemTime>,
    pub period: Option<Duration>,
    pub swapped_in_period: Option<bool>,
}

impl SimSwap {
    /// Whether the SIM changed within `window` before `now`: `None` when
    /// the carrier's answer cannot tell (a swap "within 30 days" says
    /// nothing of the last 7).
    pub fn within(&self, window: Duration, now: SystemTime) -> Option<bool> {
        if let Some(at) = self.last_swapped_at {
            return Some(now.duration_since(at).unwrap_or_default() < window);
        }
        match (self.swapped_in_period?, self.period?) {
            (true, period) if period <= window => Some(true),
            (false, period) if period >= window => Some(false),
            _ => None,
        }
    }
}

/// The signals a lookup gave for one number, as cached. A lookup that
/// failed is cached too, briefly, as signals that say nothing: a probe
/// repeated at once costs no second paid call, and a refusal for a SIM
/// change cannot be told from one for a failure by how fast it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Signals {
    pub line: Option<LineKind>,
    /// Whether the SIM change was asked (a reset's or method update's
    /// lookup), whatever the answer.
    pub sim_swap_asked: bool,
    pub sim_swap: Option<SimSwap>,
    /// When the lookup answered.
    pub at: SystemTime,
}

impl Signals {
    /// How long a SIM answer holds: a "no change" read before a reset
    /// started must not vouch for a swap made since, so a send after this
    /// asks again (the line type holds for the cache's life).
    pub const SIM_SWAP_FRESH: Duration = Duration::from_secs(60);

    /// How long a failed lookup (signals that say nothing) is remembered.
    pub const FAILURE_FRESH: Duration = Duration::from_secs(60);

    /// Whether these signals answer a send that does (or does not) ask the
    /// SIM change, at `now`.
    pub fn answer(&self, asks_sim_swap: bool, now: SystemTime) -> bool {
        let age = now.duration_since(self.at).unwrap_or_default();
        if self.line.is_none() && self.sim_swap.is_none() && age > Self::FAILURE_FRESH {
            return false;
        }
        !asks_sim_swap || (self.sim_swap_asked && age <= Self::SIM_SWAP_FRESH)
    }

    /// Signals that say nothing: a failed lookup's.
    pub fn none(sim_swap_asked: bool, at: SystemTime) -> Self {
        Self {
            line: None,
            sim_swap_asked,
            sim_swap: None,
            at,
        }
    }
}

/// What to do with a send when the lookup cannot answer: it failed, timed
/// out, its budget is spent, or its answer cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Proceed,
    Refuse,
}

/// The lookup policy for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupPolicy {
    pub refuse_sms: Vec<LineKind>,
    pub refuse_voice: Vec<LineKind>,
    /// Refuse a reset or a method update by SMS or voice when the SIM
    /// changed this recently; `None`: SIM changes are not asked.
    pub sim_swap_within: Option<Duration>,
    pub on_failure_enrollment: OnFailure,
    pub on_failure_password_reset: OnFailure,
    pub on_failure_method_update: OnFailure,
}

/// Why a lookup refused a send. The caller is told only what the SSPR page
/// can show: a line that cannot take the channel, or a number that cannot
/// be used now (a SIM change and a lookup that could not answer read the
/// same, so a refusal never says "SIM swap").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupRefusal {
    LineType { channel: Channel, line: LineKind },
    SimSwapped,
    Unanswered,
}

impl LookupRefusal {
    /// The metric's and the audit line's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LineType { .. } => "line_type",
            Self::SimSwapped => "sim_swap",
            Self::Unanswered => "lookup_unavailable",
        }
    }
}

impl LookupPolicy {
    /// Whether this purpose needs the SIM-change signal.
    pub fn asks_sim_swap(&self, purpose: Purpose) -> bool {
        self.sim_swap_within.is_some() && purpose != Purpose::Enrollment
    }

    pub fn on_failure(&self, purpose: Purpose) -> OnFailure {
        match purpose {
            Purpose::Enrollment => self.on_failure_enrollment,
            Purpose::PasswordReset => self.on_failure_password_reset,
            Purpose::MethodUpdate => self.on_failure_method_update,
        }
    }

    /// The decision for a send on `channel` for `purpose`, from the
    /// lookup's signals (`None`: it could not answer).
    pub fn decide(
        &self,
        signals: Option<&Signals>,
        channel: Channel,
        purpose: Purpose,
        now: SystemTime,
    ) -> Result<(), LookupRefusal> {
        let unanswered = || match self.on_failure(purpose) {
            OnFailure::Proceed => Ok(()),
            OnFailure::Refuse => Err(LookupRefusal::Unanswered),
        };
        let Some(signals) = signals else {
            return unanswered();
        };
        let refused = match channel {
            Channel::Sms => &self.refuse_sms,
            Channel::Voice => &self.refuse_voice,
            Channel::Email => return Ok(()),
        };
        match signals.line {
            Some(line) if refused.contains(&line) => {
                return Err(LookupRefusal::LineType { channel, line });
            }
            Some(_) => {}
            None => unanswered()?,
        }
        // A SIM can be swapped on a mobile, and on a line whose type
        // cannot be told (unknown, or a personal number that forwards to
        // one); a fixed line or a VoIP number has none.
        if let Some(window) = self.sim_swap_within
            && self.asks_sim_swap(purpose)
            && signals.line.is_none_or(|l| {
                matches!(l, LineKind::Mobile | LineKind::Personal | LineKind::Unknown)
            })
        {
            match signals.sim_swap.and_then(|s| s.within(window, now)) {
                Some(true) => return Err(LookupRefusal::SimSwapped),
                Some(false) => {}
                None => unanswered()?,
            }
        }
        Ok(())
    }
}

/// An ISO 8601 duration of days, hours, minutes and seconds, as Lookup's
/// `swapped_period` gives it (`PT24H`, `P7D`, `PT15282H33M44S`).
pub fn parse_iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((days, time)) => (days, time),
        None => (rest, ""),
    };
    let mut seconds = 0f64;
    let mut any = false;
    for (part, units) in [
        (days, &[('D', 86_400.0)][..]),
        (time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut rest = part;
        for &(unit, scale) in units {
            if let Some((number, after)) = rest.split_once(unit) {
                let value: f64 = number
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
                seconds += value * scale;
                rest = after;
                any = true;
            }
        }
        if !rest.is_empty() {
            return None;
        }
    }
    any.then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3_600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn policy() -> LookupPolicy {
        LookupPolicy {
            refuse_sms: vec![LineKind::Landline, LineKind::Premium],
            refuse_voice: vec![LineKind::Premium],
            sim_swap_within: Some(7 * DAY),
            on_failure_enrollment: OnFailure::Proceed,
            on_failure_password_reset: OnFailure::Refuse,
            on_failure_method_update: OnFailure::Refuse,
        }
    }

    fn mobile(sim_swap: Option<SimSwap>) -> Signals {
        Signals {
            line: Some(LineKind::Mobile),
            sim_swap_asked: true,
            sim_swap,
            at: now(),
        }
    }

    fn swapped(ago: Duration) -> SimSwap {
        SimSwap {
            last_swapped_at: Some(now() - ago),
            period: None,
            swapped_in_period: None,
        }
    }

    #[test]
    fn iso_durations_parse_as_lookup_writes_them() {
        assert_eq!(parse_iso_duration("PT24H"), Some(DAY));
        assert_eq!(parse_iso_duration("P7D"), Some(7 * DAY));
        assert_eq!(
            parse_iso_duration("PT15282H33M44S"),
            Some(Duration::from_secs(15_282 * 3_600 + 33 * 60 + 44))
        );
        assert_eq!(parse_iso_duration("P1DT12H"), Some(DAY + 12 * HOUR));
        for bad in ["", "P", "PT", "24H", "PT-1H", "PTxH", "P1Y", "PT1H2D"] {
            assert_eq!(parse_iso_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_line_the_channel_cannot_reach_is_refused_for_that_channel_only() {
        let landline = Signals {
            line: Some(LineKind::Landline),
            ..Signals::none(true, now())
        };
        let p = policy();
        assert_eq!(
            p.decide(Some(&landline), Channel::Sms, Purpose::Enrollment, now()),
            Err(LookupRefusal::LineType {
                channel: Channel::Sms,
                line: LineKind::Landline
            })
        );
        assert_eq!(
            p.decide(
                Some(&landline),
                Channel::Voice,
                Purpose::PasswordReset,
                now()
            ),
            Ok(()),
            "a landline's SIM is not asked about"
        );
    }

    #[test]
    fn a_recent_sim_change_refuses_resets_and_updates_but_not_enrollment() {
        let p = policy();
        let recent = mobile(Some(swapped(2 * DAY)));
        for purpose in [Purpose::PasswordReset, Purpose::MethodUpdate] {
            for channel in [Channel::Sms, Channel::Voice] {
                assert_eq!(
                    p.decide(Some(&recent), channel, purpose, now()),
                    Err(LookupRefusal::SimSwapped)
                );
            }
        }
        assert_eq!(
            p.decide(Some(&recent), Channel::Sms, Purpose::Enrollment, now()),
            Ok(())
        );
        let old = mobile(Some(swapped(30 * DAY)));
        assert_eq!(
            p.decide(Some(&old), Channel::Sms, Purpose::PasswordReset, now()),
            Ok(())
        );
    }

    #[test]
    fn a_carriers_period_decides_only_when_it_answers_the_window() {
        let within = |swapped_in_period, period| SimSwap {
            last_swapped_at: None,
            period: Some(period),
            swapped_in_period: Some(swapped_in_period),
        };
        let week = 7 * DAY;
        assert_eq!(within(true, DAY).within(week, now()), Some(true));
        assert_eq!(within(true, 30 * DAY).within(week, now()), None);
        assert_eq!(within(false, 30 * DAY).within(week, now()), Some(false));
        assert_eq!(within(false, DAY).within(week, now()), None);
        // Unanswerable: the failure policy, which refuses a reset.
        let p = policy();
        let vague = mobile(Some(within(true, 30 * DAY)));
        assert_eq!(
            p.decide(Some(&vague), Channel::Sms, Purpose::PasswordReset, now()),
            Err(LookupRefusal::Unanswered)
        );
        assert_eq!(
            p.decide(Some(&vague), Channel::Sms, Purpose::Enrollment, now()),
            Ok(())
        );
    }

    #[test]
    fn no_answer_follows_the_failure_policy_per_purpose() {
        let p = policy();
        assert_eq!(
            p.decide(None, Channel::Sms, Purpose::Enrollment, now()),
            Ok(())
        );
        assert_eq!(
            p.decide(None, Channel::Sms, Purpose::PasswordReset, now()),
            Err(LookupRefusal::Unanswered)
        );
        let no_line = Signals::none(true, now());
        assert_eq!(
            p.decide(Some(&no_line), Channel::Voice, Purpose::MethodUpdate, now()),
            Err(LookupRefusal::Unanswered)
        );
    }

    #[test]
    fn an_unknown_line_is_asked_its_sim_and_a_sim_answer_is_fresh_for_a_minute() {
        let p = policy();
        let unknown = Signals {
            line: Some(LineKind::Unknown),
            ..Signals::none(true, now())
        };
        assert_eq!(
            p.decide(Some(&unknown), Channel::Sms, Purpose::PasswordReset, now()),
            Err(LookupRefusal::Unanswered),
            "no SIM answer for a line that may have a SIM"
        );
        let answered = mobile(Some(swapped(30 * DAY)));
        assert!(answered.answer(true, now() + Signals::SIM_SWAP_FRESH));
        assert!(!answered.answer(true, now() + Signals::SIM_SWAP_FRESH + HOUR));
        assert!(
            answered.answer(false, now() + 30 * DAY),
            "the line type holds"
        );
        let line_only = Signals {
            sim_swap_asked: false,
            ..answered
        };
        assert!(!line_only.answer(true, now()));
        let failed = Signals::none(false, now());
        assert!(failed.answer(false, now() + Signals::FAILURE_FRESH));
        assert!(!failed.answer(false, now() + Signals::FAILURE_FRESH + HOUR));
    }

    #[test]
    fn unknown_words_read_as_unknown() {
        assert_eq!(LineKind::parse("nonFixedVoip"), LineKind::NonFixedVoip);
        assert_eq!(LineKind::parse("hologram"), LineKind::Unknown);
    }
}
