//! Passwords: the rules a new one meets, and argon2id hashing with the
//! crate's default parameters, stored as PHC strings (`$argon2id$v=19$…`),
//! which carry their own salt and parameters.
//!
//! Hashing is deliberately slow (tens of milliseconds), so callers run it
//! on the blocking pool, never on the async runtime's threads.

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use rand::Rng as _;

/// NIST SP 800-63B asks for at least 8; the portal asks for 12.
pub const MIN_CHARS: usize = 12;
/// Long enough for any passphrase, short enough to bound the work.
pub const MAX_BYTES: usize = 1024;

/// Why a new password was refused: the field to show it by, and the words.
pub fn check_new(password: &str, again: &str) -> Result<(), (&'static str, &'static str)> {
    if password.chars().count() < MIN_CHARS {
        return Err(("password", "Use at least 12 characters."));
    }
    if password.len() > MAX_BYTES {
        return Err(("password", "Use at most 1024 characters."));
    }
    if password != again {
        return Err(("password2", "The two passwords are not the same."));
    }
    Ok(())
}

/// A PHC string for the password, salted afresh.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    // 16 random bytes, the salt length the PHC format recommends.
    let salt = SaltString::encode_b64(&rand::rng().random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether the password matches the PHC string. A malformed string
/// matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .and_then(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
        // Salted: the same password hashes differently.
        assert_ne!(phc, hash("correct horse battery").expect("hash"));
    }

    #[test]
    fn new_passwords_are_checked() {
        assert_eq!(
            check_new("short", "short"),
            Err(("password", "Use at least 12 characters."))
        );
        assert_eq!(
            check_new("long enough pass", "long enough pasS"),
            Err(("password2", "The two passwords are not the same."))
        );
        assert_eq!(check_new("long enough pass", "long enough pass"), Ok(()));
        // Characters, not bytes.
        assert!(check_new("ééééééééééé", "ééééééééééé").is_err());
        let huge = "x".repeat(MAX_BYTES + 1);
        assert!(check_new(&huge, &huge).is_err());
    }
}
