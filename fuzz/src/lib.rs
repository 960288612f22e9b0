//! What each fuzz target does with its input: run it through verifyd's own
//! parsing and validation, which must never panic, and check one cheap
//! property of the result.
//!
//! The targets in fuzz/fuzz_targets/ are one line each over these
//! functions, and tests/api/fuzz_regressions.rs replays the kept inputs
//! (fuzz/regressions/<target>/, and the seeds in fuzz/corpus/<target>/)
//! through this same file, so this file uses only what verifyd's own tests
//! can: verifyd and its dependencies.

use prost::Message as _;
use verifyd::{
    config::Config,
    delivery::twilio::{
        signature,
        webhook::{self, Refused, Request, Route, WebhookTokens, verified_form},
    },
    domain::{Channel, Destination, VerificationId, verification::Locale},
    grpc::convert,
    proto,
    secret::Secret,
    service::IdempotencyKey,
};

/// A target: its name (the name of its directories under fuzz/) and what
/// it does with an input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("request_validation", request_validation),
    ("webhook", webhook),
    ("config", config),
];

/// The fields StartVerificationRequest validation may name.
const START_FIELDS: &[&str] = &[
    "to",
    "channel",
    "purpose",
    "voice_mode",
    "locale",
    "idempotency_key",
    "end_user_ip",
    "reference",
    "tags",
    "extension",
    "fallback.channels",
    "fallback.step_timeout",
];

/// The fields ResendVerificationRequest validation may name.
const RESEND_FIELDS: &[&str] = &[
    "id",
    "channel",
    "voice_mode",
    "locale",
    "idempotency_key",
    "end_user_ip",
];

/// The bytes as each request message the API takes (protobuf, as they
/// arrive over gRPC), through the gRPC layer's validation.
pub fn request_validation(data: &[u8]) {
    if let Ok(req) = proto::StartVerificationRequest::decode(data) {
        start_request(&req);
    }
    if let Ok(req) = proto::ResendVerificationRequest::decode(data) {
        match convert::resend_request(&req) {
            Ok(resend) => {
                assert!(VerificationId::parse(resend.id.as_str()) == Some(resend.id.clone()));
                assert!(
                    resend.delivery.voice_mode.is_none()
                        || resend.delivery.channel == Channel::Voice
                );
            }
            Err(bad) => {
                assert!(!bad.0.is_empty());
                assert!(
                    bad.0
                        .iter()
                        .all(|v| RESEND_FIELDS.contains(&v.field.as_str()))
                );
            }
        }
    }
    if let Ok(req) = proto::CheckVerificationRequest::decode(data) {
        match convert::check_request(&req) {
            Ok((id, code)) => {
                assert!(VerificationId::parse(id.as_str()) == Some(id));
                assert_eq!(code.expose(), req.code);
            }
            Err(bad) => {
                assert!(!bad.0.is_empty());
                assert!(bad.0.iter().all(|v| v.field == "id" || v.field == "code"));
            }
        }
    }
    // Get, Cancel and Watch all carry only an id.
    let ids = [
        proto::GetVerificationRequest::decode(data).map(|r| r.id),
        proto::CancelVerificationRequest::decode(data).map(|r| r.id),
        proto::WatchVerificationRequest::decode(data).map(|r| r.id),
    ];
    for id in ids.into_iter().flatten() {
        match convert::verification_id("id", &id) {
            Ok(parsed) => assert!(parsed.as_str() == id),
            Err(bad) => assert!(bad.0.len() == 1 && bad.0[0].field == "id"),
        }
    }
}

fn start_request(req: &proto::StartVerificationRequest) {
    match convert::start_request(req) {
        Ok(start) => {
            assert!(!req.to.trim().is_empty(), "accepted an empty `to`");
            let channel = start.delivery.channel;
            assert!(channel.reaches(&start.to));
            assert!(start.delivery.voice_mode.is_none() || channel == Channel::Voice);
            assert!(start.extension.is_none() || channel == Channel::Voice);
            assert_eq!(
                start.extension.as_ref().map(|e| e.as_str()),
                Some(req.extension.as_str()).filter(|e| !e.is_empty())
            );
            // The canonical form is a fixed point: what verifyd stores and
            // answers with parses back to the same destination.
            assert!(
                Destination::parse(start.to.as_str()).as_ref() == Ok(&start.to),
                "{:?} does not parse back to itself",
                start.to
            );
            assert_ne!(start.to.masked(), start.to.as_str());
            if let Some(locale) = &start.delivery.locale {
                assert!(Locale::parse(locale.as_str()).as_ref() == Some(locale));
            }
            assert_eq!(
                start.idempotency_key.as_ref().map(IdempotencyKey::as_str),
                Some(req.idempotency_key.as_str()).filter(|k| !k.is_empty())
            );
            // The caller's words are kept as given, and printable ASCII.
            assert_eq!(
                start.caller_ref.reference.as_deref(),
                Some(req.reference.as_str()).filter(|r| !r.is_empty())
            );
            assert!(start.caller_ref.tags.len() == req.tags.len());
            for (key, value) in &start.caller_ref.tags {
                assert!(req.tags.get(key) == Some(value));
                assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)));
            }
        }
        Err(bad) => {
            assert!(!bad.0.is_empty());
            for v in &bad.0 {
                assert!(START_FIELDS.contains(&v.field.as_str()), "{}", v.field);
            }
            if req.to.trim().is_empty() {
                assert!(bad.0.iter().any(|v| v.field == "to"));
            }
        }
    }
}

const TOKEN: &str = "fuzz-auth-token";
const OTHER_TOKEN: &str = "another-auth-token";

/// Twilio webhook signature checking and form parsing. The input is split
/// at NUL bytes: the URL, the `X-Twilio-Signature` value, the raw form body,
/// then names and values of a form the harness signs itself.
pub fn webhook(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let given_signature = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    // Anything at all: a verdict, never a panic; and no token, no form.
    let _ = verified_form(&[TOKEN], &url, &given_signature, body);
    assert!(verified_form(&[], &url, &given_signature, body).is_none());

    // A form signed as Twilio signs it is accepted under its token (also
    // beside another, as during a rotation), and its fields come back as
    // they were sent; under another token, or with the signature changed,
    // it is refused.
    let rest: Vec<String> = parts
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let params: Vec<(String, String)> = rest
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
        .collect();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let signed = signature::compute(TOKEN, &url, &params);
    assert!(
        verified_form(&[OTHER_TOKEN, TOKEN], &url, &signed, body.as_bytes()).as_ref()
            == Some(&params),
        "a correctly signed form was refused or changed"
    );
    assert!(verified_form(&[OTHER_TOKEN], &url, &signed, body.as_bytes()).is_none());
    let mut tampered = signed.clone();
    let first = if tampered.starts_with('A') { "B" } else { "A" };
    tampered.replace_range(..1, first);
    assert!(verified_form(&[TOKEN], &url, &tampered, body.as_bytes()).is_none());

    // Read as a webhook on every route: the signed request is never refused
    // for its signature (only, perhaps, for a field, which is named); the
    // tampered one always is, before any field is read.
    let tokens: WebhookTokens = [("p".to_owned(), vec![Secret::new(TOKEN)])].into();
    for route in Route::ALL {
        let request = |signature| Request {
            provider: "p",
            url: &url,
            signature: Some(signature),
            body: body.as_bytes(),
        };
        match webhook::read(&tokens, route, &request(&signed)) {
            Ok(_) => {}
            Err(Refused::Invalid { field, .. }) => assert!(!field.is_empty()),
            Err(other) => panic!("a signed request was refused: {other:?}"),
        }
        assert_eq!(
            webhook::read(&tokens, route, &request(&tampered)).err(),
            Some(Refused::Signature)
        );
    }
}

/// The config loader on TOML text: any input is a valid configuration or
/// one ConfigError naming a key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            if let Err(e) = config.validate() {
                panic!("a loaded configuration fails validation: {e}");
            }
            assert!(config.dev_mode || config.hmac.key.is_some());
            let _ = config.policy();
            let _ = config.hmac.key_ring();
        }
        Err(e) => assert!(!e.key.is_empty() && !e.problem.is_empty()),
    }
}
