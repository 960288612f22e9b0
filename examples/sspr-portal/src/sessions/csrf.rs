//! The per-session anti-forgery token. Every POST form carries it in a
//! hidden `csrf` field; a request whose field does not match its session's
//! token does nothing (the SameSite=Strict cookie already keeps other sites'
//! forms from carrying the session; the token also covers browsers that
//! ignore SameSite, and a same-site page on another port or subdomain).

use std::fmt;

use subtle::ConstantTimeEq;

use super::random_hex;

#[derive(Clone)]
pub struct CsrfToken(String);

impl CsrfToken {
    pub fn new() -> Self {
        CsrfToken(random_hex())
    }

    /// What the hidden field carries.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compared in constant time, so response times cannot be used to
    /// guess the token byte by byte. Lengths are public: the token's is
    /// fixed.
    pub fn matches(&self, given: &str) -> bool {
        let expected = self.0.as_bytes();
        let given = given.as_bytes();
        expected.len() == given.len() && bool::from(expected.ct_eq(given))
    }
}

impl Default for CsrfToken {
    fn default() -> Self {
        CsrfToken::new()
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_matches() {
        let token = CsrfToken::new();
        assert_eq!(token.as_str().len(), 64);
        assert!(token.matches(token.as_str()));
        assert!(!token.matches(""));
        assert!(!token.matches(&token.as_str()[..63]));
        assert!(!token.matches(&format!("{}0", token.as_str())));
        assert!(!token.matches(CsrfToken::new().as_str()));
        let mut flipped = token.as_str().to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'a' { b'b' } else { b'a' };
        assert!(!token.matches(&String::from_utf8(flipped).expect("ascii")));
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let token = CsrfToken::new();
        assert!(!format!("{token:?}").contains(token.as_str()));
    }
}
