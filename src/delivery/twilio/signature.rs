//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + each form
//! parameter's name and value, names sorted)). Twilio signs the URL it
//! requested, which behind an ingress is the public URL, not the pod's.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use url::Url;

/// The signature Twilio sends for a form POST to `url` with `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Stable on equal names, so repeated parameters keep their order.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is valid for any of `tokens` (the current auth token
/// and, during rotation, the previous one). Like Twilio's own validators,
/// accepts the URL with or without the scheme's default port.
pub fn is_valid(tokens: &[&str], url: &str, params: &[(String, String)], signature: &str) -> bool {
    let urls = url_variants(url);
    let mut valid = false;
    for token in tokens {
        for candidate in &urls {
            let expected = compute(token, candidate, params);
            // Evaluate every combination: no early exit to time.
            valid |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
        }
    }
    valid
}

/// The URL as given, plus the same URL with its default port added or
/// removed.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Ok(parsed) = Url::parse(url) else {
        return variants;
    };
    let Some(default_port) = parsed.port_or_known_default() else {
        return variants;
    };
    let host = parsed.host_str().unwrap_or_default();
    let scheme = parsed.scheme();
    let with_port = format!("{scheme}://{host}:{default_port}");
    let without_port = format!("{scheme}://{host}");
    for (from, to) in [(&with_port, &without_port), (&without_port, &with_port)] {
        if let Some(rest) = url.strip_prefix(from.as_str())
            && (rest.is_empty() || rest.starts_with(['/', '?']))
        {
            variants.push(format!("{to}{rest}"));
            break;
        }
    }
    variants
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    /// Computed with Twilio's own Python helper library (an independent
    /// implementation).
    const VECTORS: &str = include_str!("../../../tests/data/twilio-signatures.json");

    #[derive(Deserialize)]
    struct Vectors {
        auth_token: String,
        cases: Vec<Case>,
        port_variants: PortVariants,
    }

    #[derive(Deserialize)]
    struct Case {
        url: String,
        params: BTreeMap<String, String>,
        signature: String,
    }

    #[derive(Deserialize)]
    struct PortVariants {
        params: BTreeMap<String, String>,
        signed_without_port: String,
        signed_with_port: String,
    }

    fn pairs(params: &BTreeMap<String, String>) -> Vec<(String, String)> {
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn matches_twilios_own_signatures() {
        let v: Vectors = serde_json::from_str(VECTORS).expect("vectors parse");
        for case in &v.cases {
            assert_eq!(
                compute(&v.auth_token, &case.url, &pairs(&case.params)),
                case.signature,
                "{}",
                case.url
            );
            assert!(is_valid(
                &[&v.auth_token],
                &case.url,
                &pairs(&case.params),
                &case.signature
            ));
        }
    }

    #[test]
    fn accepts_either_port_form_and_a_previous_token() {
        let v: Vectors = serde_json::from_str(VECTORS).expect("vectors parse");
        let url = "https://verifyd.example.com/webhooks/twilio/message-status";
        let params = pairs(&v.port_variants.params);
        for signature in [
            &v.port_variants.signed_with_port,
            &v.port_variants.signed_without_port,
        ] {
            assert!(is_valid(&[&v.auth_token], url, &params, signature));
            assert!(
                is_valid(&["new-token", &v.auth_token], url, &params, signature),
                "rotation"
            );
        }
    }

    #[test]
    fn refuses_tampered_requests() {
        let v: Vectors = serde_json::from_str(VECTORS).expect("vectors parse");
        let case = &v.cases[0];
        let mut params = pairs(&case.params);
        assert!(!is_valid(
            &["wrong-token"],
            &case.url,
            &params,
            &case.signature
        ));
        assert!(!is_valid(
            &[&v.auth_token],
            &format!("{}x", case.url),
            &params,
            &case.signature
        ));
        params[0].1.push('1');
        assert!(!is_valid(
            &[&v.auth_token],
            &case.url,
            &params,
            &case.signature
        ));
        assert!(!is_valid(
            &[&v.auth_token],
            &case.url,
            &pairs(&case.params),
            ""
        ));
    }
}
