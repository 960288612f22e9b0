//! Where a code goes: a phone number or an email address, canonicalized
//! once at the edge so that every lookup, limit and key sees one spelling.

use std::{fmt, sync::Arc};

use phonenumber::{Mode, Type as PhoneType};

/// At most this many bytes of input are parsed (RFC 5321 caps a path at 256
/// octets; a phone number is far shorter).
const MAX_INPUT_LEN: usize = 320;

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Phone(PhoneNumber),
    Email(EmailAddress),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("is required")]
    Empty,
    #[error("is longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    #[error("must be an E.164 phone number (+ and country code) or an email address")]
    Unrecognized,
    #[error("is not a valid phone number")]
    InvalidPhone,
    #[error("is not a valid email address")]
    InvalidEmail,
}

impl Destination {
    /// Parses and canonicalizes: a leading `+` means a phone number, an `@`
    /// an email address.
    pub fn parse(input: &str) -> Result<Self, DestinationError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(DestinationError::Empty);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(DestinationError::TooLong);
        }
        if input.starts_with('+') {
            PhoneNumber::parse(input).map(Self::Phone)
        } else if input.contains('@') {
            EmailAddress::parse(input).map(Self::Email)
        } else {
            Err(DestinationError::Unrecognized)
        }
    }

    /// The canonical form: E.164, or the address with an ASCII domain.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Phone(p) => &p.0,
            Self::Email(e) => &e.0,
        }
    }

    /// Rebuilds a destination a store wrote from `as_str`, without parsing
    /// it again: the store holds only canonical forms this process (or a
    /// replica) produced.
    pub fn from_stored(canonical: &str) -> Self {
        if canonical.starts_with('+') {
            Self::Phone(PhoneNumber(canonical.into()))
        } else {
            Self::Email(EmailAddress(canonical.into()))
        }
    }

    /// A form safe for logs and traces: enough to tell destinations apart
    /// when debugging, not enough to contact anyone.
    pub fn masked(&self) -> String {
        match self {
            Self::Phone(p) => p.masked(),
            Self::Email(e) => e.masked(),
        }
    }
}

/// Debug output is masked, so a destination that slips into a log or a
/// panic message does not leak.
impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks every phone number in a provider's free text (error messages
/// often echo the number they refused): a `+` and 7 to 15 digits are masked
/// as a destination is.
pub fn mask_phone_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(plus) = rest.find('+') {
        out.push_str(&rest[..plus]);
        let digits = rest[plus + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let number = &rest[plus..plus + 1 + digits];
        if (7..=15).contains(&digits) {
            out.push_str(&PhoneNumber(number.into()).masked());
        } else {
            out.push_str(number);
        }
        rest = &rest[plus + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// A phone number's place in its numbering plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberPlan {
    /// E.g. 1 for NANP, 44 for the UK.
    pub calling_code: u16,
    pub line: LineType,
    /// The country (region) the number belongs to, where the plan tells:
    /// `+1 416` is Canada, `+1 212` the USA.
    pub region: Option<phonenumber::country::Id>,
}

/// The line types the fraud rules tell apart (from libphonenumber's
/// metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineType {
    Mobile,
    FixedLine,
    /// Where the plan cannot tell (e.g. the USA).
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    Unknown,
    /// A number that follows its holder to whichever line they choose.
    PersonalNumber,
    Pager,
    /// A company's universal access number, routed on to its offices.
    Uan,
    /// A voicemail access number.
    Voicemail,
    /// Emergency, short codes, carrier-specific and the like.
    Other,
}

/// A phone number in E.164 form, valid for its country's numbering plan.
/// Shared (`Arc`): a pending verification's indexes and budgets each hold
/// a copy, which costs a reference count, not another string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(Arc<str>);

impl PhoneNumber {
    pub fn parse(input: &str) -> Result<Self, DestinationError> {
        let number = phonenumber::parse(None, input).map_err(|_| DestinationError::InvalidPhone)?;
        if !phonenumber::is_valid(&number) {
            return Err(DestinationError::InvalidPhone);
        }
        Ok(Self(number.format().mode(Mode::E164).to_string().into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the numbering plan says about the number: its country calling
    /// code and its line type. `None` if it no longer parses (a stored
    /// number from an older metadata version).
    pub fn plan(&self) -> Option<NumberPlan> {
        let number = phonenumber::parse(None, &self.0).ok()?;
        let line = match number.number_type(&phonenumber::metadata::DATABASE) {
            PhoneType::Mobile => LineType::Mobile,
            PhoneType::FixedLine => LineType::FixedLine,
            PhoneType::FixedLineOrMobile => LineType::FixedLineOrMobile,
            PhoneType::TollFree => LineType::TollFree,
            PhoneType::PremiumRate => LineType::PremiumRate,
            PhoneType::SharedCost => LineType::SharedCost,
            PhoneType::Voip => LineType::Voip,
            PhoneType::Unknown => LineType::Unknown,
            PhoneType::PersonalNumber => LineType::PersonalNumber,
            PhoneType::Pager => LineType::Pager,
            PhoneType::Uan => LineType::Uan,
            PhoneType::Voicemail => LineType::Voicemail,
            _ => LineType::Other,
        };
        Some(NumberPlan {
            calling_code: number.code().value(),
            line,
            region: number.country().id(),
        })
    }

    /// The number without its last four digits: numbers an SMS pumping
    /// operation controls usually share it.
    pub fn prefix(&self) -> &str {
        &self.0[..self.0.len().saturating_sub(4).max(1)]
    }

    /// `+141******00`: at least half the digits hidden (and all but six),
    /// keeping the start of the country code and the last digit or two,
    /// so short numbers are masked as well as long ones.
    fn masked(&self) -> String {
        let digits = self.0.trim_start_matches('+');
        let n = digits.len();
        let hidden = (n.saturating_sub(6)).max(n.div_ceil(2));
        let shown = n - hidden;
        let tail = if shown >= 4 { 2 } else { shown.min(1) };
        let head = shown - tail;
        format!(
            "+{}{}{}",
            &digits[..head],
            "*".repeat(hidden),
            &digits[n - tail..]
        )
    }
}

/// An email address whose domain is lowercased and in ASCII (IDNA). The
/// local part is kept as given: RFC 5321 lets servers treat it as
/// case-sensitive.
/// Shared, as a phone number is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(Arc<str>);

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, DestinationError> {
        let (local, domain) = input
            .rsplit_once('@')
            .ok_or(DestinationError::InvalidEmail)?;
        // Address literals (`user@[192.0.2.1]`) are legal but no real
        // mailbox a user enrolls uses them; refusing them keeps routing sane.
        if domain.starts_with('[') {
            return Err(DestinationError::InvalidEmail);
        }
        let domain = idna::domain_to_ascii(domain).map_err(|_| DestinationError::InvalidEmail)?;
        if domain.is_empty() || !domain.contains('.') {
            return Err(DestinationError::InvalidEmail);
        }
        let canonical = format!("{local}@{domain}");
        if !email_address::EmailAddress::is_valid(&canonical) {
            return Err(DestinationError::InvalidEmail);
        }
        Ok(Self(canonical.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `a***@example.com`: the first character of the mailbox and the domain.
    fn masked(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or(("", &self.0));
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_canonicalized_to_e164() {
        let d = Destination::parse(" +1 (415) 555-0100 ").expect("valid number");
        assert_eq!(d.as_str(), "+14155550100");
        assert!(matches!(d, Destination::Phone(_)));
    }

    #[test]
    fn invalid_phone_numbers_are_refused() {
        for bad in ["+1", "+999123", "+1415555010000000", "+44 abc"] {
            assert_eq!(
                Destination::parse(bad),
                Err(DestinationError::InvalidPhone),
                "{bad}"
            );
        }
    }

    #[test]
    fn email_domains_are_lowercased_and_converted_to_ascii() {
        let d = Destination::parse("Alice.Smith@BÜCHER.Example").expect("valid address");
        assert_eq!(d.as_str(), "Alice.Smith@xn--bcher-kva.example");
    }

    #[test]
    fn malformed_email_addresses_are_refused() {
        for bad in [
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@[192.0.2.1]",
        ] {
            assert_eq!(
                Destination::parse(bad),
                Err(DestinationError::InvalidEmail),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_input_is_refused_with_a_hint() {
        assert_eq!(Destination::parse(""), Err(DestinationError::Empty));
        assert_eq!(
            Destination::parse("4155550100"),
            Err(DestinationError::Unrecognized)
        );
        assert_eq!(
            Destination::parse(&"+1".repeat(200)),
            Err(DestinationError::TooLong)
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_canonical_forms_are_fixed_points(input in "\\PC{0,40}") {
            if let Ok(d) = Destination::parse(&input) {
                proptest::prop_assert_eq!(Destination::parse(d.as_str()), Ok(d.clone()));
                proptest::prop_assert!(!d.masked().contains(d.as_str()));
            }
        }

        #[test]
        fn every_valid_us_number_canonicalizes_to_one_e164_form(
            area in 201u32..990, exchange in 200u32..999, line in 0u32..9999,
        ) {
            let spaced = format!("+1 ({area}) {exchange}-{line:04}");
            let plain = format!("+1{area}{exchange}{line:04}");
            if let Ok(d) = Destination::parse(&spaced) {
                proptest::prop_assert_eq!(d.as_str(), plain.as_str());
            }
        }
    }

    #[test]
    fn phone_numbers_in_free_text_are_masked() {
        assert_eq!(
            mask_phone_numbers("The 'To' number +15005550001 is not valid; +1 and +12 stay"),
            "The 'To' number +150******01 is not valid; +1 and +12 stay"
        );
        assert_eq!(mask_phone_numbers("no numbers"), "no numbers");
    }

    #[test]
    fn masking_hides_the_middle_of_a_number_and_the_mailbox() {
        let phone = Destination::parse("+14155550100").expect("valid");
        assert_eq!(phone.masked(), "+141******00");
        assert_eq!(format!("{phone:?}"), "+141******00");
        // A short number (Saint Helena) keeps most of its digits hidden too.
        let short = PhoneNumber("+2902123".into());
        assert_eq!(short.masked(), "+29****3");
        let email = Destination::parse("alice@example.com").expect("valid");
        assert_eq!(email.masked(), "a***@example.com");
    }
}
