//! Phone numbers as the user types them (a country and a national number)
//! and as verifyd takes them (E.164). A small table rather than a full
//! numbering library: verifyd validates the number properly and answers
//! INVALID_ARGUMENT on `to`, which the form shows beside the field.

use std::fmt;

use crate::mask;

/// A country the form offers.
#[derive(Debug, PartialEq, Eq)]
pub struct Region {
    /// ISO 3166 code, the `<option>` value.
    pub code: &'static str,
    pub name: &'static str,
    /// The country calling code, without `+`.
    pub calling_code: &'static str,
    /// The digit dialed before a national number inside the country and
    /// dropped from the international form (`0` in most of Europe, `1` in
    /// North America), if any. Italy keeps its leading 0: it has none.
    pub trunk_prefix: Option<char>,
}

const fn region(
    code: &'static str,
    name: &'static str,
    calling_code: &'static str,
    trunk_prefix: Option<char>,
) -> Region {
    Region {
        code,
        name,
        calling_code,
        trunk_prefix,
    }
}

/// The countries the form offers, the first being the default.
pub const REGIONS: &[Region] = &[
    region("US", "United States", "1", Some('1')),
    region("CA", "Canada", "1", Some('1')),
    region("GB", "United Kingdom", "44", Some('0')),
    region("IE", "Ireland", "353", Some('0')),
    region("FR", "France", "33", Some('0')),
    region("DE", "Germany", "49", Some('0')),
    region("NL", "Netherlands", "31", Some('0')),
    region("BE", "Belgium", "32", Some('0')),
    region("ES", "Spain", "34", None),
    region("IT", "Italy", "39", None),
    region("CH", "Switzerland", "41", Some('0')),
    region("SE", "Sweden", "46", Some('0')),
    region("AU", "Australia", "61", Some('0')),
    region("NZ", "New Zealand", "64", Some('0')),
    region("IN", "India", "91", Some('0')),
    region("JP", "Japan", "81", Some('0')),
];

pub fn find_region(code: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.code == code)
}

/// A phone number: its country and its national significant number (the
/// digits after the calling code, no trunk prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    pub region: &'static Region,
    pub national: String,
}

/// Why a typed number was refused, in the words the form shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneError {
    Region,
    Empty,
    Characters,
    TooShort,
    TooLong,
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PhoneError::Region => "Choose a country from the list.",
            PhoneError::Empty => "Enter your phone number.",
            PhoneError::Characters => {
                "Use digits only (spaces, dashes and brackets are fine); pick the country above."
            }
            PhoneError::TooShort => "That number is too short.",
            PhoneError::TooLong => "That number is too long.",
        })
    }
}

/// Shortest national number accepted here; verifyd checks properly.
const MIN_NATIONAL: usize = 4;
/// E.164 allows 15 digits, calling code included.
const MAX_E164_DIGITS: usize = 15;

impl Phone {
    /// The country picked and the number typed, as the user wrote it:
    /// digits, with spaces, dashes and brackets stripped. One leading trunk
    /// prefix is dropped (`07700 900123` in the UK is `+44 7700 900123`).
    pub fn parse(region_code: &str, typed: &str) -> Result<Phone, PhoneError> {
        let region = find_region(region_code).ok_or(PhoneError::Region)?;
        let digits = strip(typed).ok_or(PhoneError::Characters)?;
        if digits.is_empty() {
            return Err(PhoneError::Empty);
        }
        let national = match region.trunk_prefix {
            Some(trunk) => digits.strip_prefix(trunk).unwrap_or(&digits),
            None => &digits,
        };
        if national.len() < MIN_NATIONAL {
            return Err(PhoneError::TooShort);
        }
        if region.calling_code.len() + national.len() > MAX_E164_DIGITS {
            return Err(PhoneError::TooLong);
        }
        Ok(Phone {
            region,
            national: national.to_owned(),
        })
    }

    /// The E.164 form verifyd takes: `+`, calling code, national number.
    pub fn e164(&self) -> String {
        format!("+{}{}", self.region.calling_code, self.national)
    }

    pub fn masked(&self) -> String {
        mask::phone(self.region.calling_code, &self.national)
    }

    /// Whether the user typed this number, in its international form
    /// (`+44 7700 900123`, `0044…` is not accepted) or its national one
    /// (`07700 900123`, or without the trunk prefix). Compared by digits.
    pub fn matches(&self, typed: &str) -> bool {
        let typed = typed.trim();
        let typed = typed.strip_prefix('+').unwrap_or(typed);
        let Some(digits) = strip(typed) else {
            return false;
        };
        let international = format!("{}{}", self.region.calling_code, self.national);
        let with_trunk = self
            .region
            .trunk_prefix
            .map(|trunk| format!("{trunk}{}", self.national));
        digits == international || digits == self.national || Some(&digits) == with_trunk.as_ref()
    }
}

/// A number typed without a country (the reset page's confirm field), as
/// the page may show it back: `+•••••••••42` for `+1 415 555 0142`, a
/// leading `+` if typed and a dot per digit but the last two. None unless
/// it has a number's shape. It says nothing of whose number it is: only
/// what the user typed is shown.
pub fn mask_typed(typed: &str) -> Option<String> {
    let typed = typed.trim();
    let (plus, rest) = match typed.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", typed),
    };
    let digits = strip(rest)?;
    (MIN_NATIONAL..=MAX_E164_DIGITS)
        .contains(&digits.len())
        .then(|| format!("{plus}{}", mask::last_two(&digits)))
}

/// The digits of a number as typed, or None if it holds anything but
/// digits, spaces, dashes and brackets.
fn strip(typed: &str) -> Option<String> {
    let mut digits = String::with_capacity(typed.len());
    for c in typed.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' => {}
            _ => return None,
        }
    }
    Some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(region: &str, typed: &str) -> Result<String, PhoneError> {
        Phone::parse(region, typed).map(|p| p.e164())
    }

    #[test]
    fn a_national_number_becomes_e164() {
        assert_eq!(e164("US", "(415) 555-0100").as_deref(), Ok("+14155550100"));
        assert_eq!(e164("ES", "612 34 56 78").as_deref(), Ok("+34612345678"));
        assert_eq!(e164("AU", "0412 345 678").as_deref(), Ok("+61412345678"));
    }

    #[test]
    fn one_trunk_zero_is_dropped_where_the_country_has_one() {
        assert_eq!(e164("GB", "07700 900123").as_deref(), Ok("+447700900123"));
        assert_eq!(e164("GB", "7700 900123").as_deref(), Ok("+447700900123"));
        assert_eq!(e164("DE", "030 1234567").as_deref(), Ok("+49301234567"));
        assert_eq!(e164("FR", "06 12 34 56 78").as_deref(), Ok("+33612345678"));
        // Only one: verifyd judges what is left.
        assert_eq!(
            e164("FR", "006 12 34 56 78").as_deref(),
            Ok("+330612345678")
        );
        // Italy keeps its leading zero.
        assert_eq!(e164("IT", "06 1234 5678").as_deref(), Ok("+390612345678"));
        // North America's trunk prefix is 1.
        assert_eq!(e164("US", "1-415-555-0100").as_deref(), Ok("+14155550100"));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(e164("XX", "4155550100"), Err(PhoneError::Region));
        assert_eq!(e164("US", " - "), Err(PhoneError::Empty));
        assert_eq!(e164("US", "+1 415 555 0100"), Err(PhoneError::Characters));
        assert_eq!(e164("US", "415.555.0100"), Err(PhoneError::Characters));
        assert_eq!(e164("US", "555"), Err(PhoneError::TooShort));
        assert_eq!(e164("US", "4155550100123456"), Err(PhoneError::TooLong));
    }

    #[test]
    fn a_number_matches_its_international_and_national_forms() {
        let uk = Phone::parse("GB", "07700 900123").expect("valid");
        assert!(uk.matches("+44 7700 900123"));
        assert!(uk.matches("447700900123"));
        assert!(uk.matches("07700 900123"));
        assert!(uk.matches("7700-900-123"));
        assert!(!uk.matches("07700 900124"));
        assert!(!uk.matches("+44 7700 900123 0"));
        assert!(!uk.matches("07700.900123"));
        assert!(!uk.matches(""));

        let us = Phone::parse("US", "415 555 0100").expect("valid");
        assert!(us.matches("+1 (415) 555-0100"));
        assert!(us.matches("415-555-0100"));
        assert!(us.matches("1 415 555 0100"));
    }

    #[test]
    fn a_typed_number_is_masked_as_typed() {
        assert_eq!(
            mask_typed(" +1 (415) 555-0142 ").as_deref(),
            Some("+•••••••••42")
        );
        assert_eq!(mask_typed("07700 900123").as_deref(), Some("•••••••••23"));
        assert_eq!(mask_typed("555"), None);
        assert_eq!(mask_typed("4155550100123456"), None);
        assert_eq!(mask_typed("415.555.0100"), None);
        assert_eq!(mask_typed("a@example.com"), None);
        assert_eq!(mask_typed("++4155550100"), None);
    }

    #[test]
    fn the_table_is_sane() {
        for r in REGIONS {
            assert_eq!(r.code.len(), 2, "{}", r.code);
            assert!(r.calling_code.chars().all(|c| c.is_ascii_digit()));
            assert_eq!(find_region(r.code), Some(r));
        }
    }
}
