//! What a page shows of a phone number or an email address: enough for its
//! owner to recognise it, too little for anyone else to use it.

/// Stands in for each hidden character.
pub const DOT: char = '•';

/// `+1 ••••••••00`: the calling code, a dot for each hidden digit of the
/// national number, and its last two digits. The count of dots is kept so
/// the owner sees the number's shape; the country is no secret either.
pub fn phone(calling_code: &str, national: &str) -> String {
    format!("+{calling_code} {}", last_two(national))
}

/// `••••••••00`: a dot for each digit but the last two.
pub fn last_two(digits: &str) -> String {
    let hidden = digits.chars().count().saturating_sub(2);
    let mut masked: String = std::iter::repeat_n(DOT, hidden).collect();
    masked.extend(digits.chars().skip(hidden));
    masked
}

/// `a•••@example.com`: the first character and the domain. Always three
/// dots, so the length of the name is not told.
pub fn email(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return "•••".to_owned();
    };
    let first: String = local.chars().take(1).collect();
    format!("{first}•••@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_shows_its_calling_code_and_last_two_digits() {
        assert_eq!(phone("1", "4155550100"), "+1 ••••••••00");
        assert_eq!(phone("44", "7700900123"), "+44 ••••••••23");
        assert_eq!(phone("33", "612345678"), "+33 •••••••78");
    }

    #[test]
    fn digits_keep_only_their_last_two() {
        assert_eq!(last_two("4155550142"), "••••••••42");
        assert_eq!(last_two("42"), "42");
    }

    #[test]
    fn a_short_number_hides_nothing_it_cannot() {
        assert_eq!(phone("1", "12"), "+1 12");
        assert_eq!(phone("1", ""), "+1 ");
    }

    #[test]
    fn an_email_shows_its_first_character_and_domain() {
        assert_eq!(email("alice@example.com"), "a•••@example.com");
        assert_eq!(email("b@example.org"), "b•••@example.org");
        // The last @ separates the domain.
        assert_eq!(email("\"odd@name\"@example.com"), "\"•••@example.com");
        assert_eq!(email("élodie@exemple.fr"), "é•••@exemple.fr");
        assert_eq!(email("no-at-sign"), "•••");
    }
}
