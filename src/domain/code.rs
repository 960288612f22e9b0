//! One-time codes: drawn from the operating system's CSPRNG, kept in memory
//! only until handed to a sender, and stored only as an HMAC bound to the
//! tenant and verification they were issued for.

use std::{collections::BTreeMap, fmt, sync::Arc};

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{RngCore as _, TryRngCore as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{tenant::TenantId, verification_id::VerificationId};
use crate::secret::Secret;

pub const MIN_CODE_LENGTH: u8 = 6;
pub const MAX_CODE_LENGTH: u8 = 10;
/// An HMAC-SHA256 key shorter than its output adds no strength and hints at
/// a typo or a placeholder.
pub const MIN_KEY_LEN: usize = 32;

/// Domain separation, so this MAC can never be confused with one computed
/// for another purpose under the same key.
const CODE_MAC_CONTEXT: &[u8] = b"verifyd.code.v1";

/// Draws `len` decimal digits uniformly from the OS CSPRNG.
///
/// One read of the OS generator fills a pool of bytes (one system call,
/// where sampling digit by digit made one per draw). Bytes of 250 and above
/// are rejected: 250 is a multiple of 10, so every digit is equally likely
/// (no modulo bias). A pool of 32 bytes holds enough for 10 digits unless
/// more than 22 are rejected, which happens about once in 10^24 draws; then
/// it is refilled.
fn random_digits(len: usize) -> String {
    let mut rng = OsRng.unwrap_err();
    let mut digits = String::with_capacity(len);
    let mut pool = [0u8; 32];
    while digits.len() < len {
        rng.fill_bytes(&mut pool);
        for byte in pool.iter().filter(|&&b| b < 250).take(len - digits.len()) {
            digits.push(char::from(b'0' + byte % 10));
        }
    }
    pool.zeroize();
    digits
}

/// A code's length, within what users can type and attackers cannot guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLength(u8);

impl CodeLength {
    pub fn new(len: u8) -> Option<Self> {
        (MIN_CODE_LENGTH..=MAX_CODE_LENGTH)
            .contains(&len)
            .then_some(Self(len))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A plaintext code. It has no `Display`, its `Debug` is redacted, and its
/// memory is wiped on drop: the digits are reachable only through
/// [`Code::expose`], which the delivery layer calls to render a message.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Code(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("is required")]
    Empty,
    #[error("must be {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} digits")]
    Malformed,
}

impl Code {
    pub fn generate(len: CodeLength) -> Self {
        Self(random_digits(usize::from(len.get())))
    }

    /// Parses what a user typed. Only the shape is checked here; whether it
    /// is right is for the HMAC comparison.
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        if input.is_empty() {
            return Err(CodeError::Empty);
        }
        let len_ok =
            (usize::from(MIN_CODE_LENGTH)..=usize::from(MAX_CODE_LENGTH)).contains(&input.len());
        if !len_ok || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::Malformed);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

/// The digits a user keys in during a number-matching call. They are shown
/// on the caller's screen, so they prove the person on the phone is looking
/// at that screen; they are a challenge, not a secret like a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchDigits(String);

impl MatchDigits {
    pub fn generate(len: u8) -> Self {
        Self(random_digits(usize::from(len)))
    }

    /// Digits a store kept, as `as_str` gave them.
    pub fn from_stored(digits: &str) -> Self {
        Self(digits.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names an HMAC key, so stored hashes say which key made them and keys can
/// rotate. Shared (`Arc`): every code hash carries its key's id, and a copy
/// costs a reference count, not a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// Key ids are short and plain, since they are stored beside every hash.
    pub fn parse(id: &str) -> Option<Self> {
        let ok = (1..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(id.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret HMAC key. `Debug` is redacted and the bytes are wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey {
    #[zeroize(skip)]
    id: KeyId,
    secret: Vec<u8>,
    /// HMAC's keyed state (the key already hashed into the inner and outer
    /// pads), made once and cloned for each MAC instead of keying afresh on
    /// every code. It is as secret as the key and lives exactly as long; the
    /// `hmac` crate gives no way to zeroize it.
    #[zeroize(skip)]
    keyed: Hmac<Sha256>,
}

impl HmacKey {
    /// # Errors
    /// When the secret is shorter than [`MIN_KEY_LEN`] bytes.
    pub fn new(id: KeyId, secret: Vec<u8>) -> Result<Self, KeyTooShort> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyTooShort);
        }
        Ok(Self::keyed(id, secret))
    }

    fn keyed(id: KeyId, secret: Vec<u8>) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC accepts any key length");
        Self { id, secret, keyed }
    }

    /// A random key for dev mode, gone when the process exits.
    pub fn ephemeral() -> Self {
        let mut secret = vec![0u8; MIN_KEY_LEN];
        OsRng.unwrap_err().fill_bytes(&mut secret);
        Self::keyed(KeyId("ephemeral".into()), secret)
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// A subkey for another purpose (`label` says which), so that one
    /// configured secret serves several uses without their outputs ever
    /// being comparable.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, tenant: &TenantId, id: &VerificationId, code: &Code) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        // Tenant ids and verification ids cannot contain '|', so the
        // concatenation is unambiguous.
        for part in [
            CODE_MAC_CONTEXT,
            tenant.as_str().as_bytes(),
            id.as_str().as_bytes(),
            code.expose().as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"|");
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be at least {MIN_KEY_LEN} bytes")]
pub struct KeyTooShort;

/// What the store keeps of a code: `HMAC-SHA256(key, tenant | id | code)`
/// and the id of the key that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeHash {
    pub key_id: KeyId,
    pub mac: [u8; 32],
}

impl CodeHash {
    /// Constant time in the MAC, so response timing says nothing about how
    /// close a guess came.
    pub fn matches(&self, other: &CodeHash) -> bool {
        self.matches_parts(other.key_id.as_str(), &other.mac)
    }

    /// [`CodeHash::matches`] against a hash a store keeps in parts (the
    /// memory store interns key ids).
    pub fn matches_parts(&self, key_id: &str, mac: &[u8; 32]) -> bool {
        self.key_id.as_str() == key_id && bool::from(self.mac.ct_eq(mac))
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeHash")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The keys a service holds: one active key that hashes new codes, and
/// older keys that still check codes issued before a rotation but never
/// hash a new one. Key ids are unique in the ring, so a stored hash names
/// exactly one key.
#[derive(Debug, Clone)]
pub struct KeyRing {
    active: HmacKey,
    previous: Vec<HmacKey>,
}

/// Two keys of one ring share an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key id {0:?} appears more than once in the key ring")]
pub struct DuplicateKeyId(pub KeyId);

impl KeyRing {
    /// A ring of one key.
    pub fn new(active: HmacKey) -> Self {
        Self {
            active,
            previous: Vec::new(),
        }
    }

    /// A ring whose `previous` keys still check codes they hashed.
    ///
    /// # Errors
    /// When two keys (active or previous) share an id.
    pub fn with_previous(active: HmacKey, previous: Vec<HmacKey>) -> Result<Self, DuplicateKeyId> {
        let mut seen = vec![&active.id];
        for key in &previous {
            if seen.contains(&&key.id) {
                return Err(DuplicateKeyId(key.id.clone()));
            }
            seen.push(&key.id);
        }
        Ok(Self { active, previous })
    }

    /// The key new codes are hashed with.
    pub fn active(&self) -> &HmacKey {
        &self.active
    }

    /// The older keys, accepted only for checking.
    pub fn previous(&self) -> &[HmacKey] {
        &self.previous
    }

    /// The hash to store for a newly issued code.
    pub fn hash(&self, tenant: &TenantId, id: &VerificationId, code: &Code) -> CodeHash {
        Self::hash_with(&self.active, tenant, id, code)
    }

    /// The hashes a typed code would have under each key still accepted
    /// (the active key first), for the store to compare with what it holds.
    /// Every key's MAC is computed every time, so the work done does not
    /// depend on which key made the stored hash.
    pub fn candidates(&self, tenant: &TenantId, id: &VerificationId, code: &Code) -> Vec<CodeHash> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .map(|key| Self::hash_with(key, tenant, id, code))
            .collect()
    }

    fn hash_with(key: &HmacKey, tenant: &TenantId, id: &VerificationId, code: &Code) -> CodeHash {
        CodeHash {
            key_id: key.id.clone(),
            mac: key.mac(tenant, id, code),
        }
    }
}

/// `[hmac]`: the keys [`HmacConfig::key_ring`] holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacConfig {
    /// Stored beside every code hash.
    pub key_id: String,
    /// At least 32 bytes. Best set through `VERIFYD_HMAC__KEY_FILE`.
    pub key: Option<Secret>,
    /// Older keys by id: they still check codes they hashed before a
    /// rotation, and never hash a new one. Each best set through
    /// `VERIFYD_HMAC__PREVIOUS_KEYS__<ID>_FILE`; ids set through the
    /// environment arrive lowercased, so key ids are best lowercase.
    pub previous_keys: BTreeMap<String, Secret>,
}

/// The most older keys `hmac.previous_keys` holds. Each costs one more HMAC
/// per check; a rotation needs one.
pub const MAX_PREVIOUS_KEYS: usize = 8;

impl Default for HmacConfig {
    fn default() -> Self {
        Self {
            key_id: "k1".to_owned(),
            key: None,
            previous_keys: BTreeMap::new(),
        }
    }
}

impl HmacConfig {
    /// The first problem with the keys: its key and why. Outside dev mode
    /// `hmac.key` is required. Never names a secret's value.
    pub fn problem(&self, dev_mode: bool) -> Option<(String, String)> {
        if KeyId::parse(&self.key_id).is_none() {
            return Some((
                "hmac.key_id".to_owned(),
                "must be 1 to 32 of [A-Za-z0-9_-]".to_owned(),
            ));
        }
        match &self.key {
            Some(key) if key.expose().len() < MIN_KEY_LEN => {
                return Some((
                    "hmac.key".to_owned(),
                    format!("must be at least {MIN_KEY_LEN} bytes"),
                ));
            }
            None if !dev_mode => {
                return Some((
                    "hmac.key".to_owned(),
                    "is required outside dev mode (set VERIFYD_HMAC__KEY_FILE to a file holding at least 32 characters of random text, e.g. from `openssl rand -hex 32`)".to_owned(),
                ));
            }
            _ => {}
        }
        self.previous_keys_problem()
    }

    fn previous_keys_problem(&self) -> Option<(String, String)> {
        if self.previous_keys.len() > MAX_PREVIOUS_KEYS {
            return Some((
                "hmac.previous_keys".to_owned(),
                format!(
                    "at most {MAX_PREVIOUS_KEYS} keys (remove those older than the longest code ttl plus the longest resend window)"
                ),
            ));
        }
        for (id, secret) in &self.previous_keys {
            let key = format!("hmac.previous_keys.{id}");
            if KeyId::parse(id).is_none() {
                return Some((key, "key ids are 1 to 32 of [A-Za-z0-9_-]".to_owned()));
            }
            if *id == self.key_id {
                return Some((
                    key,
                    "is the active key id (hmac.key_id); a key is either active or previous"
                        .to_owned(),
                ));
            }
            if secret.expose().len() < MIN_KEY_LEN {
                return Some((key, format!("must be at least {MIN_KEY_LEN} bytes")));
            }
        }
        None
    }

    /// The HMAC keys: `hmac.key` active (in dev mode without a key, an
    /// ephemeral one) and `hmac.previous_keys` for checking only. Keys that
    /// configuration validation would refuse are left out.
    pub fn key_ring(&self) -> KeyRing {
        let key = |id: &str, secret: &Secret| {
            HmacKey::new(KeyId::parse(id)?, secret.expose().as_bytes().to_vec()).ok()
        };
        let active = self
            .key
            .as_ref()
            .and_then(|secret| key(&self.key_id, secret))
            .unwrap_or_else(HmacKey::ephemeral);
        let mut previous: Vec<HmacKey> = Vec::new();
        for (id, secret) in &self.previous_keys {
            if let Some(k) = key(id, secret)
                && k.id() != active.id()
                && previous.len() < MAX_PREVIOUS_KEYS
            {
                previous.push(k);
            }
        }
        KeyRing::with_previous(active, previous)
            .expect("ids are unique: map keys, not the active id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let id = KeyId::parse("k1").expect("valid id");
        KeyRing::new(HmacKey::new(id, vec![7; 32]).expect("long enough"))
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).expect("valid tenant")
    }

    fn vid() -> VerificationId {
        VerificationId::generate()
    }

    #[test]
    fn generated_codes_have_the_configured_length_and_only_digits() {
        for len in MIN_CODE_LENGTH..=MAX_CODE_LENGTH {
            let code = Code::generate(CodeLength::new(len).expect("in range"));
            assert_eq!(code.expose().len(), usize::from(len));
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
        assert_eq!(CodeLength::new(5), None);
        assert_eq!(CodeLength::new(11), None);
    }

    /// Pearson's chi-square test of each digit position against the uniform
    /// distribution. With 9 degrees of freedom, P(X² > 33.72) = 1e-4, so a
    /// fair generator fails one position in ten thousand runs; a modulo bias
    /// or a stuck digit pushes X² into the hundreds.
    #[test]
    fn each_digit_position_is_uniform() {
        const SAMPLES: usize = 100_000;
        const CRITICAL: f64 = 33.72;
        let len = CodeLength::new(6).expect("in range");
        let mut counts = [[0u32; 10]; 6];
        for _ in 0..SAMPLES {
            let code = Code::generate(len);
            for (pos, digit) in code.expose().bytes().enumerate() {
                counts[pos][usize::from(digit - b'0')] += 1;
            }
        }
        let expected = SAMPLES as f64 / 10.0;
        for (pos, row) in counts.iter().enumerate() {
            let chi2: f64 = row
                .iter()
                .map(|&n| (f64::from(n) - expected).powi(2) / expected)
                .sum();
            assert!(
                chi2 < CRITICAL,
                "position {pos}: chi-square {chi2:.1} for {row:?}"
            );
        }
    }

    #[test]
    fn a_code_verifies_only_for_its_own_verification_and_tenant() {
        let ring = ring();
        let code = Code::parse("123456").expect("well formed");
        let (acme, other) = (tenant("acme"), tenant("globex"));
        let (id, other_id) = (vid(), vid());
        let stored = ring.hash(&acme, &id, &code);

        let matches = |t: &TenantId, v: &VerificationId, c: &Code| {
            ring.candidates(t, v, c).iter().any(|h| stored.matches(h))
        };
        assert!(matches(&acme, &id, &code));
        assert!(!matches(&other, &id, &code), "another tenant");
        assert!(!matches(&acme, &other_id, &code), "another verification");
        let wrong = Code::parse("123457").expect("well formed");
        assert!(!matches(&acme, &id, &wrong), "another code");
    }

    #[test]
    fn a_hash_from_another_key_never_matches() {
        let code = Code::parse("123456").expect("well formed");
        let (t, id) = (tenant("acme"), vid());
        let other_key =
            HmacKey::new(KeyId::parse("k2").expect("valid"), vec![8; 32]).expect("long enough");
        let stored = ring().hash(&t, &id, &code);
        let candidate = KeyRing::new(other_key).hash(&t, &id, &code);
        assert!(!stored.matches(&candidate));
    }

    fn key(id: &str, byte: u8) -> HmacKey {
        HmacKey::new(KeyId::parse(id).expect("valid id"), vec![byte; 32]).expect("long enough")
    }

    fn matches(
        ring: &KeyRing,
        stored: &CodeHash,
        t: &TenantId,
        v: &VerificationId,
        c: &Code,
    ) -> bool {
        ring.candidates(t, v, c).iter().any(|h| stored.matches(h))
    }

    #[test]
    fn after_a_rotation_codes_hashed_under_a_previous_key_still_match() {
        let code = Code::parse("123456").expect("well formed");
        let (t, id) = (tenant("acme"), vid());
        let before = KeyRing::new(key("k1", 7));
        let stored = before.hash(&t, &id, &code);

        let rotated = KeyRing::with_previous(key("k2", 8), vec![key("k1", 7)]).expect("unique ids");
        assert!(matches(&rotated, &stored, &t, &id, &code));
        let wrong = Code::parse("123457").expect("well formed");
        assert!(!matches(&rotated, &stored, &t, &id, &wrong), "another code");
        assert!(
            !matches(&rotated, &stored, &tenant("globex"), &id, &code),
            "another tenant"
        );

        let ids: Vec<_> = rotated
            .candidates(&t, &id, &code)
            .into_iter()
            .map(|h| h.key_id.as_str().to_owned())
            .collect();
        assert_eq!(
            ids,
            ["k2", "k1"],
            "the active key first, then each previous key"
        );
    }

    #[test]
    fn new_codes_are_hashed_only_with_the_active_key() {
        let code = Code::parse("123456").expect("well formed");
        let (t, id) = (tenant("acme"), vid());
        let ring = KeyRing::with_previous(key("k2", 8), vec![key("k1", 7), key("k0", 6)])
            .expect("unique ids");
        let stored = ring.hash(&t, &id, &code);
        assert_eq!(stored.key_id.as_str(), "k2");
        assert_eq!(ring.active().id().as_str(), "k2");
        assert_eq!(ring.previous().len(), 2);
        assert!(matches(&ring, &stored, &t, &id, &code));
        // A ring that no longer holds k2 cannot check it.
        let old = KeyRing::with_previous(key("k1", 7), vec![key("k0", 6)]).expect("unique ids");
        assert!(!matches(&old, &stored, &t, &id, &code));
    }

    #[test]
    fn a_code_from_a_removed_key_no_longer_matches() {
        let code = Code::parse("123456").expect("well formed");
        let (t, id) = (tenant("acme"), vid());
        let stored = KeyRing::new(key("k1", 7)).hash(&t, &id, &code);
        let removed = KeyRing::new(key("k2", 8));
        assert!(!matches(&removed, &stored, &t, &id, &code));
        // A key re-using the old id with another secret does not match either.
        let reused = KeyRing::with_previous(key("k2", 8), vec![key("k1", 9)]).expect("unique ids");
        assert!(!matches(&reused, &stored, &t, &id, &code));
    }

    #[test]
    fn key_ids_are_unique_in_a_ring() {
        let err = KeyRing::with_previous(key("k1", 7), vec![key("k1", 8)]).expect_err("duplicate");
        assert_eq!(err.0.as_str(), "k1");
        let err = KeyRing::with_previous(key("k2", 7), vec![key("k1", 8), key("k1", 9)])
            .expect_err("duplicate");
        assert_eq!(err.0.as_str(), "k1");
        KeyRing::with_previous(key("k2", 7), Vec::new()).expect("no previous keys is fine");
    }

    #[test]
    fn typed_codes_must_be_six_to_ten_digits() {
        assert_eq!(Code::parse(""), Err(CodeError::Empty));
        for bad in ["12345", "12345678901", "12345a", "１２３４５６", " 123456"] {
            assert_eq!(Code::parse(bad), Err(CodeError::Malformed), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn only_six_to_ten_ascii_digits_parse(input in "\\PC{0,12}") {
            let well_formed = (6..=10).contains(&input.len()) && input.bytes().all(|b| b.is_ascii_digit());
            proptest::prop_assert_eq!(Code::parse(&input).is_ok(), well_formed);
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let code = Code::parse("987654").expect("well formed");
        assert!(!format!("{code:?}").contains("987654"));
        let key = HmacKey::new(
            KeyId::parse("k1").expect("valid"),
            b"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".to_vec(),
        )
        .expect("long enough");
        assert!(!format!("{key:?}").contains("s3cr3t"));
        assert_eq!(
            HmacKey::new(KeyId::parse("k1").expect("valid"), vec![1; 31]).err(),
            Some(KeyTooShort)
        );
    }
}
