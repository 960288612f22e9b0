//! The voice call of a verification: what the user's keys do.
//!
//! The provider fetches call instructions and posts the keys the user
//! pressed; these rules decide what each press means. Every webhook URL of a
//! call carries a random token whose hash is kept here, so only the live
//! call of this verification can act on it.

use rand::{RngCore as _, TryRngCore as _, rngs::OsRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Status, Verification, VoiceMode};

/// The secret in a call's webhook URLs: 128 bits from the OS CSPRNG.
#[derive(Clone, PartialEq, Eq)]
pub struct CallToken(String);

impl CallToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.unwrap_err().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hash(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }
}

impl std::fmt::Debug for CallToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallToken(<redacted>)")
    }
}

/// The live call of a verification. A resend by voice replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceCall {
    /// SHA-256 of the call's token: a store dump cannot forge webhooks.
    token_hash: [u8; 32],
    /// The provider's id for the call (Twilio's CallSid), once known.
    pub call_sid: Option<String>,
    /// Re-prompts used on this call.
    pub reprompts: u8,
}

impl VoiceCall {
    pub fn new(token: &CallToken) -> Self {
        Self {
            token_hash: CallToken::hash(token.as_str()),
            call_sid: None,
            reprompts: 0,
        }
    }

    /// The SHA-256 of the call's token, for a store to keep.
    pub fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }

    /// Rebuilds a call from what a store kept.
    pub fn from_stored(token_hash: [u8; 32], call_sid: Option<String>, reprompts: u8) -> Self {
        Self {
            token_hash,
            call_sid,
            reprompts,
        }
    }

    /// What a store compares a webhook's token with: its SHA-256.
    pub fn hash_token(token: &str) -> [u8; 32] {
        CallToken::hash(token)
    }

    /// Whether a webhook's token and CallSid belong to this call.
    pub fn admits(&self, token: &str, call_sid: &str) -> bool {
        let token_ok = bool::from(CallToken::hash(token).ct_eq(&self.token_hash));
        token_ok && self.call_sid.as_deref() == Some(call_sid)
    }
}

/// Which question the keys answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    /// Press # (CONFIRM) or the digits on screen then # (MATCH); 0 reports
    /// fraud.
    Main,
    /// Press # to report the call as fraud, anything else to go back.
    Fraud,
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
    FraudMenu,
    BackToMain,
    /// Reported as fraud: the verification is DENIED.
    Denied,
    /// The verification has ended: the keys change nothing.
    NotPending(Status),
}

/// The lone key that opens the fraud report, as Entra's fraud alert does.
const FRAUD_KEY: &str = "0";

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
        match menu {
            Menu::Fraud if digits == "#" => {
                self.status = Status::Denied;
                KeyOutcome::Denied
            }
            Menu::Fraud => KeyOutcome::BackToMain,
            Menu::Main if digits == FRAUD_KEY => KeyOutcome::FraudMenu,
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
                // A read-aloud call asks for no keys.
                VoiceMode::Code => KeyOutcome::Hangup,
                VoiceMode::Confirm => self.reprompt(max_reprompts, KeyOutcome::Reprompt),
            },
        }
    }

    fn approve(&mut self) -> KeyOutcome {
        self.status = Status::Approved;
        KeyOutcome::Approved
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
        Channel, Destination, Policy, Purpose, TenantId, VerificationId, verification::Delivery,
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
    fn webhooks_must_carry_the_calls_token_and_sid() {
        let (v, token) = call(VoiceMode::Confirm);
        let live = v.call.as_ref().expect("call");
        assert!(live.admits(token.as_str(), "CA1"));
        assert!(!live.admits(token.as_str(), "CA2"));
        assert!(!live.admits(CallToken::generate().as_str(), "CA1"));
        assert!(!format!("{token:?}").contains(token.as_str()));
    }
}
