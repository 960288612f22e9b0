//! An office phone's extension, dialed once a call is answered (Entra
//! SSPR's "Office phone" method): digits, with `w` for a half-second pause,
//! as Twilio's `SendDigits` takes them.
//!
//! The extension is not part of the destination. The number alone keys the
//! rate limits, the prefix budgets, the blocks, the least gap and the
//! store's hash tag, so `1`, `w1` and `ww1` cannot multiply a number's
//! budget or dodge its block. Only the pending slot tells extensions apart
//! ([`Extension::keys`], pauses stripped), so a verification to one
//! extension supersedes only another to the same extension.
//!
//! The end user types it, so it is kept to what an extension is: digits
//! only (no `*` or `#` to work a switchboard's menus or a voicemail box)
//! and at most eight of them (too few to dial an outside line through the
//! switchboard), on fixed lines only (checked with the number).

use std::fmt;

use super::destination::{Destination, LineType};

/// A validated extension: as it is dialed (digits and `w` pauses, at most
/// [`Self::MAX_LEN`] characters), and its digits alone (1 to
/// [`Self::MAX_DIGITS`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Extension {
    dialed: Box<str>,
    keys: Box<str>,
}

impl Extension {
    /// The longest extension, pauses included.
    pub const MAX_LEN: usize = 16;
    /// The most digits an extension has.
    pub const MAX_DIGITS: usize = 8;

    pub fn parse(input: &str) -> Option<Self> {
        if input.len() > Self::MAX_LEN || !input.bytes().all(|b| b.is_ascii_digit() || b == b'w') {
            return None;
        }
        let keys: String = input.chars().filter(char::is_ascii_digit).collect();
        (1..=Self::MAX_DIGITS).contains(&keys.len()).then(|| Self {
            dialed: input.into(),
            keys: keys.into(),
        })
    }

    /// What the provider dials after the call connects, pauses included.
    pub fn as_str(&self) -> &str {
        &self.dialed
    }

    /// The digits, pauses stripped: what tells one extension's pending
    /// verification from another's.
    pub fn keys(&self) -> &str {
        &self.keys
    }

    /// Whether a number of this line type may be given an extension: an
    /// office's, fixed or on a VoIP range (or, where the plan cannot tell
    /// fixed from mobile, either). A mobile has no switchboard, and an
    /// extension there would only turn off answering-machine detection.
    pub fn dialable_on(line: LineType) -> bool {
        matches!(
            line,
            LineType::FixedLine | LineType::FixedLineOrMobile | LineType::Voip
        )
    }

    /// As logs and audit lines show it: every digit masked, so only how
    /// many shows.
    pub fn masked(&self) -> String {
        format!("ext. {}", "*".repeat(self.keys.len()))
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
    fn an_extension_is_digits_and_pauses() {
        for ok in ["1234", "ww1234", "w1w2", "12345678", "wwwwwwww12345678"] {
            assert_eq!(
                Extension::parse(ok).map(|e| e.as_str().to_owned()),
                Some(ok.to_owned())
            );
        }
        let too_long = format!("w{}", "1".repeat(16));
        for bad in [
            "",
            "w",
            "www",
            "12a4",
            "12 34",
            "1-2",
            "W1",
            "+1",
            "*72",
            "1#",
            "123456789",
            &too_long,
        ] {
            assert!(Extension::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn only_office_lines_take_an_extension() {
        assert!(Extension::dialable_on(LineType::FixedLine));
        assert!(Extension::dialable_on(LineType::FixedLineOrMobile));
        assert!(!Extension::dialable_on(LineType::Mobile));
        assert!(!Extension::dialable_on(LineType::Voicemail));
        assert!(!Extension::dialable_on(LineType::Uan));
    }

    #[test]
    fn pauses_do_not_make_another_extension() {
        let keys = |s: &str| Extension::parse(s).expect("valid").keys().to_owned();
        assert_eq!(keys("1"), keys("w1"));
        assert_eq!(keys("ww1"), "1");
        assert_eq!(keys("w1w2"), "12");
        assert_ne!(keys("12"), keys("1"));
    }

    #[test]
    fn masked_shows_only_how_many_digits() {
        let e = Extension::parse("ww4711").expect("valid");
        assert_eq!(e.masked(), "ext. ****");
        assert_eq!(format!("{e:?}"), "ext. ****");
    }
}
