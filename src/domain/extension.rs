//! An office phone's extension, dialed once a call is answered (Entra
//! SSPR's "Office phone" method): keys, with `w` for a half-second pause,
//! as Twilio's `SendDigits` takes them.
//!
//! The extension is not part of the destination. The number alone keys the
//! rate limits, the prefix budgets, the blocks, the least gap and the
//! store's hash tag, so `1`, `w1` and `ww1` cannot multiply a number's
//! budget or dodge its block. Only the pending slot tells extensions apart
//! ([`Extension::keys`], pauses stripped), so a verification to one
//! extension supersedes only another to the same extension.

use std::fmt;

use super::destination::Destination;

/// A validated extension, as it is dialed: 1 to 32 of `0-9`, `*`, `#` and
/// `w`, with at least one key that is not a pause.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Extension(Box<str>);

impl Extension {
    pub const MAX_LEN: usize = 32;

    pub fn parse(input: &str) -> Option<Self> {
        let ok = (1..=Self::MAX_LEN).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'w'))
            && input.bytes().any(|b| b != b'w');
        ok.then(|| Self(input.into()))
    }

    /// What the provider dials after the call connects, pauses included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keys pressed, pauses stripped: what tells one extension's
    /// pending verification from another's.
    pub fn keys(&self) -> String {
        self.0.chars().filter(|&c| c != 'w').collect()
    }

    /// As logs and audit lines show it: every key masked, so only its
    /// length shows.
    pub fn masked(&self) -> String {
        format!("ext. {}", "*".repeat(self.keys().len()))
    }
}

/// A destination and its extension as logs and audit lines show them: both
/// masked.
pub fn masked_destination(to: &Destination, extension: Option<&Extension>) -> String {
    match extension {
        Some(extension) => format!("{} {}", to.masked(), extension.masked()),
        None => to.masked(),
    }
}

/// Masked, as the destination's `Debug` is: a derived `Debug` would print
/// the keys into any log that formats a verification.
impl fmt::Debug for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_is_keys_and_pauses() {
        for ok in ["1234", "ww1234#", "*9", "w1", &"1".repeat(32)] {
            assert_eq!(
                Extension::parse(ok).map(|e| e.as_str().to_owned()),
                Some(ok.to_owned())
            );
        }
        for bad in [
            "",
            "w",
            "www",
            "12a4",
            "12 34",
            "1-2",
            "W1",
            "+1",
            &"1".repeat(33),
        ] {
            assert!(Extension::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn pauses_do_not_make_another_extension() {
        let keys = |s: &str| Extension::parse(s).expect("valid").keys();
        assert_eq!(keys("1"), keys("w1"));
        assert_eq!(keys("ww1"), "1");
        assert_eq!(keys("w1w2#"), "12#");
        assert_ne!(keys("12"), keys("1"));
    }

    #[test]
    fn masked_shows_only_how_many_keys() {
        let e = Extension::parse("ww4711").expect("valid");
        assert_eq!(e.masked(), "ext. ****");
        assert_eq!(format!("{e:?}"), "ext. ****");
    }
}
