//! The voice call of a verification: what the user's keys do.
//!
//! The provider fetches call instructions and posts the keys the user
//! pressed; these rules decide what each press means. Every webhook URL of a
//! call carries a random token whose hash the call keeps (`call`), so only
//! the live call of this verification can act on it.
//!
//! A read-aloud (CODE) call says no code until a person presses a key: only
//! then is a code drawn, its HMAC swapped into the store in the same step
//! as the press, and the code said. An answering machine, which presses
//! nothing, never hears one, and no code exists before someone asks.

// The call's own data lives in `call`, which `Verification` holds; named
// here too, with the rest of what callers of the voice rules use.
pub use super::call::{CallKey, CallToken, VoiceCall};
use super::{
    code::CodeHash,
    verification::{Status, Verification, VoiceMode},
};
use zeroize::Zeroizing;

/// Which question the keys answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    /// Press # (CONFIRM) or the digits on screen then # (MATCH); 0 reports
    /// fraud.
    Main,
    /// Press # to report the call as fraud, anything else to go back.
    Fraud,
}

/// Keys pressed on a verification's live call, as its webhook reported
/// them: the call they claim to come from, the menu they answer, and the
/// re-prompts the tenant allows a call.
#[derive(Debug, Clone, Copy)]
pub struct KeyPress<'a> {
    pub call: &'a CallKey,
    pub menu: Menu,
    pub digits: &'a str,
    pub max_reprompts: u8,
    /// The step the gather answered, from its URL: the call's presses when
    /// the gather was asked ([`VoiceCall::expects`]).
    pub step: u8,
    /// The hash of the code a read-aloud call would say if this press
    /// reveals one ([`KeyOutcome::Reveal`]): drawn before the store step,
    /// so that the store swaps it in within the same step as the press.
    pub reveal: &'a CodeHash,
}

/// What the call says, then what it does: what the voice use cases answer
/// each call webhook with. The provider's adapter turns it into its own
/// call instructions (Twilio: TwiML). A read-aloud call's step says the
/// code, so what it says is wiped when the step is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct CallStep {
    pub locale: Option<String>,
    pub say: Vec<Zeroizing<String>>,
    pub next: Next,
}

/// What is said may be a code: `Debug` counts it only.
impl std::fmt::Debug for CallStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStep")
            .field("locale", &self.locale)
            .field("says", &self.say.len())
            .field("next", &self.next)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask for keys; `prompt` is spoken while waiting. No input ends the
    /// call with `goodbye`.
    Gather {
        menu: Menu,
        /// The call's presses when it is asked: its URL carries it, and only
        /// the next press answers it.
        step: u8,
        one_key: bool,
        prompt: String,
        goodbye: String,
        timeout_secs: u8,
    },
    Hangup,
}

/// Who answered a call, as the provider's answering-machine detection
/// concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredBy {
    Person,
    /// A machine or a fax: no person is listening.
    Machine,
    /// Detection could not tell.
    Unknown,
}

/// What a keypress did, and so what the call says next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    Approved,
    /// Not what was asked: ask again.
    Reprompt,
    /// Wrong number-matching digits, counted as a failed check; ask again.
    WrongDigits,
    /// Out of re-prompts or attempts: say goodbye, nothing approved.
    Hangup,
    /// A read-aloud call's key: the store swapped in the code the press
    /// carried ([`KeyPress::reveal`]); say it.
    Reveal,
    FraudMenu,
    BackToMain,
    /// Reported as fraud: the verification is DENIED.
    Denied,
    /// The verification has ended: the keys change nothing.
    NotPending(Status),
    /// The store kept the approval the keys made but could not make it
    /// durable in time (Redis's `wait_replicas`): ask for a key again,
    /// which approves it again.
    Unacknowledged,
}

/// The lone key that opens the fraud report, as Entra's fraud alert does.
const FRAUD_KEY: &str = "0";

/// A set of voice modes; a list in configuration.
#[derive(Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(from = "Vec<VoiceMode>", into = "Vec<VoiceMode>")]
pub struct VoiceModes(u8);

impl VoiceModes {
    pub const ALL: Self = Self(0b111);

    fn bit(mode: VoiceMode) -> u8 {
        match mode {
            VoiceMode::Confirm => 1,
            VoiceMode::Match => 2,
            VoiceMode::Code => 4,
        }
    }

    pub fn contains(self, mode: VoiceMode) -> bool {
        self.0 & Self::bit(mode) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn iter(self) -> impl Iterator<Item = VoiceMode> {
        [VoiceMode::Confirm, VoiceMode::Match, VoiceMode::Code]
            .into_iter()
            .filter(move |&m| self.contains(m))
    }
}

impl From<Vec<VoiceMode>> for VoiceModes {
    fn from(modes: Vec<VoiceMode>) -> Self {
        Self(modes.into_iter().fold(0, |set, m| set | Self::bit(m)))
    }
}

impl From<VoiceModes> for Vec<VoiceMode> {
    fn from(modes: VoiceModes) -> Self {
        modes.iter().collect()
    }
}

impl std::fmt::Debug for VoiceModes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(VoiceMode::as_str))
            .finish()
    }
}

/// Which voice modes a tenant's calls may use, and the one a start that
/// names none gets.
///
/// CONFIRM carries no secret: a user who presses # on a call they did not
/// expect approves whoever started it (push fatigue). MATCH binds the call
/// to the screen that shows the digits; CODE to the screen the code is
/// typed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModePolicy {
    pub allowed: VoiceModes,
    pub default: VoiceMode,
}

impl ModePolicy {
    /// The mode a call uses: the one asked for, else the default. `Err`
    /// with the mode when the policy does not allow it.
    pub fn resolve(&self, asked: Option<VoiceMode>) -> Result<VoiceMode, VoiceMode> {
        let mode = asked.unwrap_or(self.default);
        if self.allowed.contains(mode) {
            Ok(mode)
        } else {
            Err(mode)
        }
    }
}

impl Verification {
    /// Applies the keys pressed on the live call. `max_reprompts` bounds
    /// how often a call asks again.
    pub fn press(
        &mut self,
        menu: Menu,
        digits: &str,
        max_reprompts: u8,
        now: std::time::SystemTime,
    ) -> KeyOutcome {
        self.settle(now);
        if self.status != Status::Pending {
            return KeyOutcome::NotPending(self.status);
        }
        if let Some(call) = &mut self.call {
            // Stores admit no press at 255 (`VoiceCall::expects`).
            call.presses = call.presses.saturating_add(1);
        }
        match menu {
            Menu::Fraud if digits == "#" => {
                self.status = Status::Denied;
                KeyOutcome::Denied
            }
            // Back to the question is a round of the menu like any other
            // re-prompt: otherwise 0, any key, 0, any key… holds the line
            // open for as long as the caller cares to pay for.
            Menu::Fraud => self.reprompt(max_reprompts, KeyOutcome::BackToMain),
            Menu::Main if digits == FRAUD_KEY => KeyOutcome::FraudMenu,
            // No key before the gather ended (Twilio may post that): ask
            // again, spending a re-prompt but no attempt, revealing nothing.
            Menu::Main if digits.is_empty() => self.reprompt(max_reprompts, KeyOutcome::Reprompt),
            Menu::Main => match self.delivery.voice_mode.unwrap_or_default() {
                VoiceMode::Confirm if digits == "#" => self.approve(),
                VoiceMode::Match
                    if self
                        .match_digits
                        .as_ref()
                        .is_some_and(|m| m.as_str() == digits) =>
                {
                    self.approve()
                }
                VoiceMode::Match => {
                    // A guess at the digits: it costs an attempt like a
                    // wrong code.
                    self.checks_remaining = self.checks_remaining.saturating_sub(1);
                    if self.checks_remaining == 0 {
                        self.status = Status::MaxAttemptsReached;
                        return KeyOutcome::Hangup;
                    }
                    self.reprompt(max_reprompts, KeyOutcome::WrongDigits)
                }
                VoiceMode::Code => self.reveal(max_reprompts),
                VoiceMode::Confirm => self.reprompt(max_reprompts, KeyOutcome::Reprompt),
            },
        }
    }

    fn approve(&mut self) -> KeyOutcome {
        self.status = Status::Approved;
        KeyOutcome::Approved
    }

    /// A read-aloud call says a new code for any key: each code said spends
    /// a re-prompt, the first being the answer to the opening question, so
    /// a call says at most `1 + max_reprompts` codes, each replacing the
    /// last.
    fn reveal(&mut self, max_reprompts: u8) -> KeyOutcome {
        let Some(call) = &mut self.call else {
            return KeyOutcome::Hangup;
        };
        if call.reprompts > max_reprompts {
            return KeyOutcome::Hangup;
        }
        call.reprompts += 1;
        KeyOutcome::Reveal
    }

    /// Whether a read-aloud call may still say another code.
    pub fn may_reveal_again(&self, max_reprompts: u8) -> bool {
        self.call
            .as_ref()
            .is_some_and(|call| call.reprompts <= max_reprompts)
    }

    fn reprompt(&mut self, max_reprompts: u8, outcome: KeyOutcome) -> KeyOutcome {
        let Some(call) = &mut self.call else {
            return KeyOutcome::Hangup;
        };
        if call.reprompts >= max_reprompts {
            return KeyOutcome::Hangup;
        }
        call.reprompts += 1;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::domain::{
        channel::Channel,
        destination::Destination,
        policy::Policy,
        tenant::TenantId,
        verification::{Delivery, Purpose},
        verification_id::VerificationId,
    };

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn call(mode: VoiceMode) -> (Verification, CallToken) {
        let policy = Policy::default();
        let mut v = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::PasswordReset,
            Delivery {
                channel: Channel::Voice,
                voice_mode: Some(mode),
                locale: None,
            },
            &policy,
            T0,
        );
        let token = CallToken::generate();
        let mut live = VoiceCall::new(&token);
        live.call_sid = Some("CA1".into());
        v.call = Some(live);
        (v, token)
    }

    #[test]
    fn pound_approves_a_confirm_call_and_other_keys_reprompt_twice() {
        let (mut v, _) = call(VoiceMode::Confirm);
        assert_eq!(v.press(Menu::Main, "5", 2, T0), KeyOutcome::Reprompt);
        assert_eq!(v.press(Menu::Main, "*", 2, T0), KeyOutcome::Reprompt);
        assert_eq!(v.press(Menu::Main, "1", 2, T0), KeyOutcome::Hangup);
        assert_eq!(v.status, Status::Pending, "nothing approved, nothing spent");
        assert_eq!(v.checks_remaining, 5);
        assert_eq!(v.press(Menu::Main, "#", 2, T0), KeyOutcome::Approved);
        assert_eq!(
            v.press(Menu::Main, "#", 2, T0),
            KeyOutcome::NotPending(Status::Approved)
        );
    }

    #[test]
    fn only_the_exact_match_digits_approve_and_wrong_ones_cost_attempts() {
        let (mut v, _) = call(VoiceMode::Match);
        let digits = v.match_digits.clone().expect("digits").as_str().to_owned();
        let wrong = if digits == "99" { "98" } else { "99" };
        assert_eq!(v.press(Menu::Main, wrong, 2, T0), KeyOutcome::WrongDigits);
        assert_eq!(v.checks_remaining, 4);
        assert_eq!(v.press(Menu::Main, "#", 2, T0), KeyOutcome::WrongDigits);
        assert_eq!(v.press(Menu::Main, &digits, 2, T0), KeyOutcome::Approved);
    }

    #[test]
    fn zero_then_pound_reports_fraud_and_denies() {
        let (mut v, _) = call(VoiceMode::Confirm);
        assert_eq!(v.press(Menu::Main, "0", 2, T0), KeyOutcome::FraudMenu);
        assert_eq!(v.press(Menu::Fraud, "1", 2, T0), KeyOutcome::BackToMain);
        assert_eq!(v.press(Menu::Main, "0", 2, T0), KeyOutcome::FraudMenu);
        assert_eq!(v.press(Menu::Fraud, "#", 2, T0), KeyOutcome::Denied);
        assert_eq!(v.status, Status::Denied);
        assert_eq!(
            v.press(Menu::Main, "#", 2, T0),
            KeyOutcome::NotPending(Status::Denied)
        );
    }

    #[test]
    fn going_back_from_the_fraud_menu_spends_a_reprompt_but_a_report_stays_open() {
        let (mut v, _) = call(VoiceMode::Confirm);
        for _ in 0..2 {
            assert_eq!(v.press(Menu::Main, "0", 2, T0), KeyOutcome::FraudMenu);
            assert_eq!(v.press(Menu::Fraud, "1", 2, T0), KeyOutcome::BackToMain);
        }
        assert_eq!(v.press(Menu::Main, "0", 2, T0), KeyOutcome::FraudMenu);
        assert_eq!(
            v.press(Menu::Fraud, "1", 2, T0),
            KeyOutcome::Hangup,
            "out of re-prompts"
        );
        assert_eq!(v.status, Status::Pending);
        // Whatever was spent, the user can still report the call.
        assert_eq!(v.press(Menu::Main, "0", 2, T0), KeyOutcome::FraudMenu);
        assert_eq!(v.press(Menu::Fraud, "#", 2, T0), KeyOutcome::Denied);
    }

    #[test]
    fn a_read_aloud_call_reveals_a_code_per_key_and_each_spends_a_reprompt() {
        let (mut v, _) = call(VoiceMode::Code);
        for _ in 0..3 {
            assert_eq!(v.press(Menu::Main, "5", 2, T0), KeyOutcome::Reveal);
        }
        assert!(!v.may_reveal_again(2));
        assert_eq!(v.press(Menu::Main, "#", 2, T0), KeyOutcome::Hangup);
        assert_eq!(v.status, Status::Pending, "only a typed code approves");
        // 0 still opens the fraud report.
        assert_eq!(v.press(Menu::Main, "0", 2, T0), KeyOutcome::FraudMenu);
        let (mut none, _) = call(VoiceMode::Code);
        assert_eq!(none.press(Menu::Main, "1", 0, T0), KeyOutcome::Reveal);
        assert_eq!(none.press(Menu::Main, "1", 0, T0), KeyOutcome::Hangup);
    }

    #[test]
    fn no_key_asks_again_spending_a_reprompt_but_no_attempt_and_revealing_nothing() {
        for mode in [VoiceMode::Confirm, VoiceMode::Match, VoiceMode::Code] {
            let (mut v, _) = call(mode);
            assert_eq!(
                v.press(Menu::Main, "", 1, T0),
                KeyOutcome::Reprompt,
                "{mode:?}"
            );
            assert_eq!(
                v.press(Menu::Main, "", 1, T0),
                KeyOutcome::Hangup,
                "{mode:?}"
            );
            assert_eq!(v.checks_remaining, 5, "{mode:?}");
            assert_eq!(v.call.as_ref().map(|c| c.presses), Some(2));
        }
    }

    #[test]
    fn a_call_out_of_steps_admits_no_press() {
        let token = CallToken::generate();
        let call = VoiceCall::from_stored([0; 32], Some("CA1".into()), 0, 7);
        assert!(call.expects(7) && !call.expects(6) && !call.expects(8));
        let spent = VoiceCall::from_stored([0; 32], Some("CA1".into()), 0, u8::MAX);
        assert!(!spent.expects(u8::MAX), "never sticks at the last step");
        assert!(!VoiceCall::new(&token).expects(1));
    }

    #[test]
    fn a_mode_policy_gives_the_default_and_refuses_what_it_does_not_allow() {
        let policy = ModePolicy {
            allowed: vec![VoiceMode::Match, VoiceMode::Code].into(),
            default: VoiceMode::Match,
        };
        assert_eq!(policy.resolve(None), Ok(VoiceMode::Match));
        assert_eq!(policy.resolve(Some(VoiceMode::Code)), Ok(VoiceMode::Code));
        assert_eq!(
            policy.resolve(Some(VoiceMode::Confirm)),
            Err(VoiceMode::Confirm)
        );
        let everything = ModePolicy {
            allowed: VoiceModes::ALL,
            default: VoiceMode::Confirm,
        };
        assert_eq!(everything.resolve(None), Ok(VoiceMode::Confirm));
        assert_eq!(format!("{:?}", policy.allowed), r#"{"match", "code"}"#);
    }

    #[test]
    fn webhooks_must_carry_the_calls_token_and_sid() {
        let (v, token) = call(VoiceMode::Confirm);
        let live = v.call.as_ref().expect("call");
        assert!(live.admits(token.as_str(), "CA1"));
        assert!(!live.admits(token.as_str(), "CA2"));
        assert!(!live.admits(CallToken::generate().as_str(), "CA1"));
        assert!(!format!("{token:?}").contains(token.as_str()));
    }
}
