//! The language a phone number's country suggests, for a start or resend
//! that names no locale: a text to a Polish number is written in Polish
//! unless the caller says otherwise, as Twilio Verify does.
//!
//! One language per country, the one most of its people read. Where a
//! country has several, the table says which it chose (below); the
//! caller's `locale` is the way to reach the others. The locale's own
//! fallback chain (`nl-BE` → `nl` → `en`) still applies, so a template
//! directory may add a country's variant.

use super::{destination::NumberPlan, verification::Locale};

/// The language a number's country reads, for a send that names none.
pub fn locale_for(plan: &NumberPlan) -> Option<Locale> {
    plan.region.and_then(|id| locale_for_region(id.as_ref()))
}

/// The locale for a country (an ISO 3166-1 alpha-2 code, as libphonenumber
/// names regions), or `None` for English, the default.
///
/// Multilingual countries: Belgium reads Dutch (the majority; French for
/// Wallonia and Brussels only by `locale`), Switzerland German, Canada
/// English (Quebec by `locale = "fr-CA"`), Luxembourg French, Finland
/// Finnish, Kazakhstan Russian; Taiwan and Hong Kong are left in English
/// rather than the mainland's simplified script.
pub fn locale_for_region(region: &str) -> Option<Locale> {
    let (language, _) = LANGUAGES
        .iter()
        .find(|(_, regions)| regions.contains(&region))?;
    Locale::parse(language)
}

/// Each language and the countries that read it.
pub const LANGUAGES: &[(&str, &[&str])] = &[
    (
        "es",
        &[
            "ES", "MX", "AR", "CO", "CL", "PE", "VE", "EC", "GT", "CU", "BO", "DO", "HN", "PY",
            "SV", "NI", "CR", "PA", "UY", "PR", "GQ",
        ],
    ),
    (
        "fr",
        &[
            "FR", "MC", "LU", "SN", "CI", "ML", "BF", "NE", "GN", "BJ", "TG", "GA", "CG", "CD",
            "MG", "HT", "GP", "MQ", "GF", "RE", "YT", "PF", "NC",
        ],
    ),
    ("de", &["DE", "AT", "CH", "LI"]),
    ("pt", &["BR", "PT", "AO", "MZ", "CV", "GW", "ST"]),
    ("it", &["IT", "SM", "VA"]),
    ("nl", &["NL", "BE", "SR", "AW", "CW", "SX", "BQ"]),
    ("pl", &["PL"]),
    ("sv", &["SE", "AX"]),
    ("da", &["DK", "FO"]),
    ("nb", &["NO", "SJ"]),
    ("fi", &["FI"]),
    ("cs", &["CZ"]),
    ("tr", &["TR"]),
    ("ru", &["RU", "BY", "KZ", "KG"]),
    ("uk", &["UA"]),
    ("ja", &["JP"]),
    ("zh", &["CN"]),
    ("ko", &["KR"]),
    ("id", &["ID"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_country_picks_its_language_and_english_is_the_default() {
        let of = |region| locale_for_region(region).map(|l| l.as_str().to_owned());
        assert_eq!(of("PL").as_deref(), Some("pl"));
        assert_eq!(of("BR").as_deref(), Some("pt"));
        assert_eq!(of("BE").as_deref(), Some("nl"), "the documented choice");
        assert_eq!(of("CH").as_deref(), Some("de"), "the documented choice");
        assert_eq!(of("CA"), None, "English, the documented choice");
        assert_eq!(of("US"), None);
        assert_eq!(of("TW"), None);
        assert_eq!(of("ZZ"), None);
    }

    #[test]
    fn no_country_is_listed_twice() {
        let mut all: Vec<&str> = LANGUAGES
            .iter()
            .flat_map(|(_, r)| r.iter().copied())
            .collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
