//! A verification's live voice call: the random token every webhook URL of
//! the call carries (only its hash is kept, so a store dump cannot forge
//! webhooks), the provider's id for the call, and the re-prompts it used.
//! What the call's keys do is in `voice`.

use rand::{RngCore as _, TryRngCore as _, rngs::OsRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// What a call's webhook presents: the token from its URL and the CallSid
/// the provider sent.
#[derive(Clone)]
pub struct CallKey {
    pub token: String,
    pub call_sid: String,
}

impl std::fmt::Debug for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallKey")
            .field("token", &"<redacted>")
            .field("call_sid", &self.call_sid)
            .finish()
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
    /// Key presses acted on so far. Each gather's URL carries the count it
    /// expects ([`VoiceCall::expects`]), and acting on a press moves it on,
    /// so a signed gather request replayed later (Twilio's signature has no
    /// timestamp) is refused rather than acted on twice.
    pub presses: u8,
}

impl VoiceCall {
    pub fn new(token: &CallToken) -> Self {
        Self {
            token_hash: CallToken::hash(token.as_str()),
            call_sid: None,
            reprompts: 0,
            presses: 0,
        }
    }

    /// The SHA-256 of the call's token, for a store to keep.
    pub fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }

    /// Rebuilds a call from what a store kept.
    pub fn from_stored(
        token_hash: [u8; 32],
        call_sid: Option<String>,
        reprompts: u8,
        presses: u8,
    ) -> Self {
        Self {
            token_hash,
            call_sid,
            reprompts,
            presses,
        }
    }

    /// Whether a gather answering step `step` is the one the call waits
    /// for now. A call that has run out of steps (255 presses, far past
    /// what its re-prompts allow) waits for none: the count never wraps or
    /// sticks, so a replay can never match.
    pub fn expects(&self, step: u8) -> bool {
        self.presses == step && self.presses < u8::MAX
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
