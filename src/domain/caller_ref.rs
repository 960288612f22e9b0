//! What a caller ties a verification to, for its own audit and support: a
//! reference (an account, a reset session, a ticket) and a few tags, as
//! Twilio's `Tags` and Vonage's `client_ref` are.
//!
//! verifyd stores them with the verification and returns them on it. They
//! are the caller's words, not verifyd's: they are never sent to a
//! provider, never part of a key, and logged only on the audit line. So
//! they are bounded (a verification's size stays known) and printable
//! ASCII (a log line cannot be forged or garbled through them).

use std::collections::BTreeMap;

/// A caller's reference and tags; empty unless the start named some.
/// `Debug` says only whether there are any: they go to the audit line and
/// nowhere else, so a log that formats a verification must not print them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallerRef {
    pub reference: Option<String>,
    /// Sorted by key, so that equal tags always store and fingerprint alike.
    pub tags: BTreeMap<String, String>,
}

impl CallerRef {
    /// The longest reference, in characters.
    pub const MAX_REFERENCE_LEN: usize = 128;
    /// The most tags a verification carries.
    pub const MAX_TAGS: usize = 10;
    /// The longest tag key, in characters.
    pub const MAX_TAG_KEY_LEN: usize = 32;
    /// The longest tag value, in characters.
    pub const MAX_TAG_VALUE_LEN: usize = 128;
    /// The most bytes a reference and tags can add to a verification.
    pub const MAX_BYTES: usize = Self::MAX_REFERENCE_LEN
        + Self::MAX_TAGS * (Self::MAX_TAG_KEY_LEN + Self::MAX_TAG_VALUE_LEN);

    /// A reference: 1 to 128 printable ASCII characters (space included).
    pub fn parse_reference(input: &str) -> Option<String> {
        ((1..=Self::MAX_REFERENCE_LEN).contains(&input.len()) && printable(input))
            .then(|| input.to_owned())
    }

    /// Tags: at most 10; each key 1 to 32 ASCII letters, digits, `_`, `-`,
    /// `.` or `:`; each value at most 128 printable ASCII characters. The
    /// error says which rule a tag broke, without echoing it.
    pub fn parse_tags<'a>(
        input: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    ) -> Result<BTreeMap<String, String>, String> {
        if input.len() > Self::MAX_TAGS {
            return Err(format!("at most {} tags", Self::MAX_TAGS));
        }
        let mut tags = BTreeMap::new();
        for (key, value) in input {
            let key_ok = (1..=Self::MAX_TAG_KEY_LEN).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
            if !key_ok {
                return Err(format!(
                    "each key must be 1 to {} ASCII letters, digits, '_', '-', '.' or ':'",
                    Self::MAX_TAG_KEY_LEN
                ));
            }
            if value.len() > Self::MAX_TAG_VALUE_LEN || !printable(value) {
                return Err(format!(
                    "each value must be at most {} printable ASCII characters",
                    Self::MAX_TAG_VALUE_LEN
                ));
            }
            tags.insert(key.clone(), value.clone());
        }
        Ok(tags)
    }

    pub fn is_empty(&self) -> bool {
        self.reference.is_none() && self.tags.is_empty()
    }

    /// The tags as one JSON object text, as the audit line and the Redis
    /// store write them; `None` without tags.
    pub fn tags_json(&self) -> Option<String> {
        (!self.tags.is_empty())
            .then(|| serde_json::to_string(&self.tags).expect("string maps always serialize"))
    }
}

impl std::fmt::Debug for CallerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerRef")
            .field("reference", &self.reference.as_ref().map(|_| "<redacted>"))
            .field("tags", &self.tags.len())
            .finish()
    }
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Result<BTreeMap<String, String>, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CallerRef::parse_tags(map.iter())
    }

    #[test]
    fn a_reference_is_bounded_printable_ascii() {
        assert_eq!(
            CallerRef::parse_reference("reset 4f1c/acct-77").as_deref(),
            Some("reset 4f1c/acct-77")
        );
        assert_eq!(CallerRef::parse_reference(""), None);
        assert!(CallerRef::parse_reference(&"r".repeat(128)).is_some());
        assert_eq!(CallerRef::parse_reference(&"r".repeat(129)), None);
        assert_eq!(CallerRef::parse_reference("line\nbreak"), None);
        assert_eq!(CallerRef::parse_reference("caf\u{e9}"), None);
        assert_eq!(CallerRef::parse_reference("\u{202e}evil"), None);
    }

    #[test]
    fn tags_are_bounded_in_number_keys_and_values() {
        let ok =
            tags(&[("ticket", "HD-1"), ("app:region", ""), ("a.b-c_d", "x y")]).expect("valid");
        assert_eq!(ok.len(), 3);
        let eleven: Vec<(String, String)> =
            (0..11).map(|i| (format!("k{i}"), String::new())).collect();
        let eleven: Vec<(&str, &str)> = eleven
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(tags(&eleven).expect_err("refused").contains("at most 10"));
        assert!(tags(&eleven[..10]).is_ok());
        for key in ["", "has space", "caf\u{e9}", &"k".repeat(33)] {
            assert!(
                tags(&[(key, "v")]).expect_err("refused").contains("key"),
                "{key:?}"
            );
        }
        for value in ["tab\there", &"v".repeat(129)] {
            assert!(
                tags(&[("k", value)])
                    .expect_err("refused")
                    .contains("value"),
                "{value:?}"
            );
        }
    }

    #[test]
    fn tags_are_kept_sorted_and_written_as_one_json_object() {
        let caller = CallerRef {
            reference: None,
            tags: tags(&[("b", "2"), ("a", "\"1\"")]).expect("valid"),
        };
        assert_eq!(
            caller.tags_json().expect("tags"),
            r#"{"a":"\"1\"","b":"2"}"#
        );
        assert_eq!(CallerRef::default().tags_json(), None);
        assert!(CallerRef::default().is_empty());
        let shown = format!("{caller:?}");
        assert!(!shown.contains('1') && !shown.contains('b'), "{shown}");
        assert_eq!(CallerRef::MAX_BYTES, 1728);
    }
}
