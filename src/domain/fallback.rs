//! Automatic channel fallback: a verification that is still pending when
//! its step's time is up (or whose text is reported undelivered) sends on
//! the next channel of its workflow by itself, "the SMS never came; call
//! me instead" without the user asking.
//!
//! A workflow stays on the one number: its channels are SMS and voice,
//! each different from the one before. Each step after the first is a
//! resend: it waits out the resend cooldown and spends a send, and a step
//! that may not send ends the workflow. The step number is the claim: a
//! store runs a step only while the verification is still at the step
//! before, so whichever replica gets there first runs it, once.

use std::time::{Duration, SystemTime};

use super::{channel::Channel, policy::Policy};

/// The most channels a workflow names: the first send and two fallbacks.
pub const MAX_STEPS: usize = 3;
/// The shortest wait before the next step.
pub const MIN_STEP_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait before the next step.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The channels a verification tries in order, and how long each step
/// waits for a check before the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    channels: Box<[Channel]>,
    step_timeout: Duration,
}

/// Why a workflow is refused, naming the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("must name 2 to {MAX_STEPS} channels, each SMS or voice, each unlike the one before")]
    Channels,
    #[error("must be between 1s and 10m")]
    StepTimeoutRange,
    #[error("must begin with the start's own channel")]
    FirstChannel,
    #[error("is at least the resend wait its last step meets ({0:?}), and below the code's life")]
    StepTimeoutPolicy(Duration),
    #[error("has more steps than the verification has sends ({0})")]
    TooManySteps(u32),
    #[error(
        "must be voice only: an extension is dialed by a call, a text would reach the switchboard"
    )]
    Extension,
}

impl WorkflowError {
    /// The request field the problem is with.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Channels | Self::FirstChannel | Self::TooManySteps(_) | Self::Extension => {
                "fallback.channels"
            }
            Self::StepTimeoutRange | Self::StepTimeoutPolicy(_) => "fallback.step_timeout",
        }
    }
}

impl Workflow {
    /// A workflow of this shape: 2 to [`MAX_STEPS`] channels, SMS or voice,
    /// none the same as the one before, and a timeout within bounds.
    ///
    /// # Errors
    /// Which of these it is not.
    pub fn new(channels: Vec<Channel>, step_timeout: Duration) -> Result<Self, WorkflowError> {
        let phone = channels
            .iter()
            .all(|c| matches!(c, Channel::Sms | Channel::Voice));
        let alternating = channels.windows(2).all(|pair| pair[0] != pair[1]);
        if !(2..=MAX_STEPS).contains(&channels.len()) || !phone || !alternating {
            return Err(WorkflowError::Channels);
        }
        if !(MIN_STEP_TIMEOUT..=MAX_STEP_TIMEOUT).contains(&step_timeout) {
            return Err(WorkflowError::StepTimeoutRange);
        }
        Ok(Self {
            channels: channels.into(),
            step_timeout,
        })
    }

    /// Whether a start on `first` may run this workflow under `policy`
    /// (the tenant's, for the channels it crosses): it begins there, each
    /// step's wait covers the resend wait that step meets (so no step is
    /// refused by the cooldown) and is shorter than a code lives (so the
    /// verification is still pending when it falls due), and the sends
    /// suffice.
    ///
    /// # Errors
    /// Which of these fails.
    pub fn fits(
        &self,
        first: Channel,
        policy_of: impl Fn(Channel) -> Policy,
    ) -> Result<(), WorkflowError> {
        if self.channels[0] != first {
            return Err(WorkflowError::FirstChannel);
        }
        let policy = policy_of(first);
        let resends = u32::try_from(self.channels.len() - 1).unwrap_or(u32::MAX);
        if policy.max_send_attempts <= resends {
            return Err(WorkflowError::TooManySteps(policy.max_send_attempts));
        }
        let longest_wait = policy.resend_wait(resends);
        let shortest_life = self
            .channels
            .iter()
            .map(|&c| policy_of(c).code_ttl)
            .min()
            .unwrap_or_default();
        if self.step_timeout < longest_wait || self.step_timeout >= shortest_life {
            return Err(WorkflowError::StepTimeoutPolicy(longest_wait));
        }
        Ok(())
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    pub fn step_timeout(&self) -> Duration {
        self.step_timeout
    }

    /// The channels as stored: `sms,voice`.
    pub fn channels_str(&self) -> String {
        let names: Vec<&str> = self.channels.iter().map(|c| c.as_str()).collect();
        names.join(",")
    }

    /// A workflow as stored ([`Self::channels_str`]); `None` when it is not
    /// one this version would make.
    pub fn from_stored(channels: &str, step_timeout: Duration) -> Option<Self> {
        let channels = channels
            .split(',')
            .map(|c| match c {
                "sms" => Some(Channel::Sms),
                "voice" => Some(Channel::Voice),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Self::new(channels, step_timeout).ok()
    }
}

/// Where a verification stands in its workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub workflow: Workflow,
    /// The step whose send went last: 0 is the start's own.
    pub step: u8,
    /// When the next step falls due; `None` once the last step ran or the
    /// workflow ended (a step that could not send, a resend the caller
    /// asked for).
    pub next_at: Option<SystemTime>,
}

impl Fallback {
    /// A workflow's start, its first send reserved at `now`.
    pub fn begin(workflow: Workflow, now: SystemTime) -> Self {
        Self {
            next_at: Some(now + workflow.step_timeout),
            workflow,
            step: 0,
        }
    }

    /// The channel of the step that comes next, while one is due to.
    pub fn next_channel(&self) -> Option<Channel> {
        self.next_at?;
        self.workflow
            .channels
            .get(usize::from(self.step) + 1)
            .copied()
    }

    /// Whether the next step is due at `now`.
    pub fn is_due(&self, now: SystemTime) -> bool {
        self.next_at.is_some_and(|at| at <= now) && self.next_channel().is_some()
    }

    /// The next step was claimed at `now`: it is the current one, and the
    /// one after it (if any) falls due a step's time later.
    pub fn advance(&mut self, now: SystemTime) {
        self.step = self.step.saturating_add(1);
        let more = usize::from(self.step) + 1 < self.workflow.channels.len();
        self.next_at = more.then(|| now + self.workflow.step_timeout);
    }

    /// No step runs any more.
    pub fn end(&mut self) {
        self.next_at = None;
    }

    /// The current step's send is reported undelivered: the next one falls
    /// due as soon as the resend wait allows (`earliest`), if sooner.
    /// Returns whether that moved it.
    pub fn hasten(&mut self, earliest: SystemTime) -> bool {
        match self.next_at {
            Some(at) if earliest < at => {
                self.next_at = Some(earliest);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const MINUTE: Duration = Duration::from_secs(60);

    fn sms_then_voice() -> Workflow {
        Workflow::new(vec![Channel::Sms, Channel::Voice], MINUTE).expect("valid")
    }

    #[test]
    fn a_workflow_alternates_phone_channels_within_bounds() {
        use Channel::{Email, Sms, Voice};
        for bad in [
            vec![Sms],
            vec![Sms, Sms],
            vec![Sms, Email],
            vec![Sms, Voice, Sms, Voice],
        ] {
            assert_eq!(
                Workflow::new(bad.clone(), MINUTE),
                Err(WorkflowError::Channels),
                "{bad:?}"
            );
        }
        assert!(Workflow::new(vec![Voice, Sms, Voice], MINUTE).is_ok());
        for timeout in [Duration::ZERO, MAX_STEP_TIMEOUT + Duration::from_secs(1)] {
            assert_eq!(
                Workflow::new(vec![Sms, Voice], timeout),
                Err(WorkflowError::StepTimeoutRange)
            );
        }
    }

    #[test]
    fn a_workflow_fits_the_policy_only_if_no_step_meets_a_cooldown_or_a_dead_code() {
        let policy = Policy::default();
        let of = |_| Policy::default();
        assert_eq!(sms_then_voice().fits(Channel::Sms, of), Ok(()));
        assert_eq!(
            sms_then_voice().fits(Channel::Voice, of),
            Err(WorkflowError::FirstChannel)
        );
        // Three steps: the last meets the doubled wait (1 min by default).
        let three = |timeout| {
            Workflow::new(vec![Channel::Sms, Channel::Voice, Channel::Sms], timeout).expect("valid")
        };
        assert_eq!(
            three(policy.resend_cooldown).fits(Channel::Sms, of),
            Err(WorkflowError::StepTimeoutPolicy(policy.resend_wait(2)))
        );
        assert_eq!(three(policy.resend_wait(2)).fits(Channel::Sms, of), Ok(()));
        let short_lived = |_| Policy {
            code_ttl: MINUTE,
            ..Policy::default()
        };
        assert!(sms_then_voice().fits(Channel::Sms, short_lived).is_err());
        let one_send = |_| Policy {
            max_send_attempts: 1,
            ..Policy::default()
        };
        assert_eq!(
            sms_then_voice().fits(Channel::Sms, one_send),
            Err(WorkflowError::TooManySteps(1))
        );
    }

    #[test]
    fn steps_fall_due_in_turn_and_stop_after_the_last() {
        let mut f = Fallback::begin(
            Workflow::new(vec![Channel::Sms, Channel::Voice, Channel::Sms], MINUTE * 2)
                .expect("valid"),
            T0,
        );
        assert!(!f.is_due(T0 + MINUTE));
        assert!(f.is_due(T0 + MINUTE * 2));
        assert_eq!(f.next_channel(), Some(Channel::Voice));
        f.advance(T0 + MINUTE * 2);
        assert_eq!((f.step, f.next_at), (1, Some(T0 + MINUTE * 4)));
        assert_eq!(f.next_channel(), Some(Channel::Sms));
        f.advance(T0 + MINUTE * 4);
        assert_eq!((f.step, f.next_at, f.next_channel()), (2, None, None));
        assert!(!f.is_due(T0 + MINUTE * 60));
    }

    #[test]
    fn an_undelivered_text_brings_the_next_step_forward_never_back() {
        let mut f = Fallback::begin(sms_then_voice(), T0);
        assert!(!f.hasten(T0 + MINUTE * 2), "later than it was: unchanged");
        assert!(f.hasten(T0 + MINUTE / 2));
        assert_eq!(f.next_at, Some(T0 + MINUTE / 2));
        f.end();
        assert!(!f.hasten(T0), "an ended workflow stays ended");
        assert_eq!(f.next_channel(), None);
    }

    #[test]
    fn a_stored_workflow_reads_back_and_a_foreign_one_does_not() {
        let w = sms_then_voice();
        assert_eq!(
            Workflow::from_stored(&w.channels_str(), w.step_timeout()),
            Some(w)
        );
        assert_eq!(Workflow::from_stored("sms,email", MINUTE), None);
    }
}
