//! A local stand-in for Twilio's Messages API, at the HTTP level, written
//! from Twilio's public API reference (it shares no code with `src/`):
//! form-encoded POSTs with Basic auth, 201 with the message resource, 4xx
//! and 5xx with Twilio's JSON error body.

use std::{collections::BTreeMap, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "fake-auth-token-0123456789abcdef";
pub const FROM: &str = "+15005550006";

pub struct FakeTwilio {
    pub server: MockServer,
}

/// Twilio SIDs: two letters and 32 hex digits.
pub fn sid(prefix: &str, n: u32) -> String {
    format!("{prefix}{n:032x}")
}

impl FakeTwilio {
    pub async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    pub fn messages_path() -> String {
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    }

    fn messages() -> wiremock::MockBuilder {
        let credentials = STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
        Mock::given(method("POST"))
            .and(path(Self::messages_path()))
            .and(header(
                "authorization",
                format!("Basic {credentials}").as_str(),
            ))
            .and(header("content-type", "application/x-www-form-urlencoded"))
    }

    /// Accepts messages as Twilio does: 201 and the queued message.
    pub async fn accept(&self, message_sid: &str) {
        Self::messages()
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "sid": message_sid,
                "account_sid": ACCOUNT_SID,
                "status": "queued",
                "direction": "outbound-api",
            })))
            .mount(&self.server)
            .await;
    }

    /// Answers the next `times` messages with a Twilio error.
    pub async fn fail(&self, status: u16, code: u32, message: &str, times: u64) {
        Self::messages()
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "code": code,
                "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status,
            })))
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Refuses every message but those to `except` with Twilio's error
    /// `code`, each after `delay`.
    pub async fn refuse_all_but(&self, except: &str, code: u32, message: &str, delay: Duration) {
        let except = format!(
            "To={}",
            url::form_urlencoded::byte_serialize(except.as_bytes()).collect::<String>()
        );
        Self::messages()
            .and(move |request: &wiremock::Request| {
                !String::from_utf8_lossy(&request.body).contains(&except)
            })
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_json(json!({
                        "code": code,
                        "message": message,
                        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                        "status": 400,
                    }))
                    .set_delay(delay),
            )
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Accepts messages as `accept` does, each after `delay`.
    pub async fn accept_after(&self, message_sid: &str, delay: Duration) {
        Self::messages()
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({
                        "sid": message_sid,
                        "account_sid": ACCOUNT_SID,
                        "status": "queued",
                        "direction": "outbound-api",
                    }))
                    .set_delay(delay),
            )
            .mount(&self.server)
            .await;
    }

    /// Takes longer than any sane attempt timeout.
    pub async fn hang(&self) {
        Self::messages()
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(30)))
            .mount(&self.server)
            .await;
    }

    /// Takes longer than any sane attempt timeout over the next `times`
    /// messages; later ones go on to the other answers mounted.
    pub async fn hang_next(&self, times: u64) {
        Self::messages()
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(30)))
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// The form fields of every message request received.
    pub async fn sent(&self) -> Vec<BTreeMap<String, String>> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == Self::messages_path())
            .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
            .collect()
    }
}

/// What Twilio puts in `X-Twilio-Signature`: base64(HMAC-SHA1(token, url +
/// sorted name/value pairs)).
pub fn sign(token: &str, url: &str, params: &BTreeMap<&str, &str>) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).expect("any key");
    mac.update(url.as_bytes());
    for (k, v) in params {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

impl FakeTwilio {
    pub fn calls_path() -> String {
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    }

    /// Places calls as Twilio does: 201 and the queued call.
    pub async fn accept_calls(&self, call_sid: &str) {
        Self::calls_as(call_sid, Duration::ZERO)
            .mount(&self.server)
            .await;
        self.call_updates_of(call_sid).await;
    }

    /// Places the next call only, as `call_sid`, after `delay`; later calls
    /// go to the mocks mounted with [`Self::accept_calls`].
    pub async fn accept_next_call(&self, call_sid: &str, delay: Duration) {
        Self::calls_as(call_sid, delay)
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.server)
            .await;
        self.call_updates_of(call_sid).await;
    }

    /// Calls placed as `call_sid`: 201 and the queued call, after `delay`.
    fn calls_as(call_sid: &str, delay: Duration) -> Mock {
        let credentials = STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
        Mock::given(method("POST"))
            .and(path(Self::calls_path()))
            .and(header(
                "authorization",
                format!("Basic {credentials}").as_str(),
            ))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({
                        "sid": call_sid,
                        "account_sid": ACCOUNT_SID,
                        "status": "queued",
                        "direction": "outbound-api",
                    }))
                    .set_delay(delay),
            )
    }

    /// Updating a call (Status=completed ends it).
    async fn call_updates_of(&self, call_sid: &str) {
        Mock::given(method("POST"))
            .and(path(format!(
                "/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "sid": call_sid,
                "status": "completed",
            })))
            .mount(&self.server)
            .await;
    }

    /// Every field of every call request, repeated fields included.
    pub async fn placed_calls(&self) -> Vec<Vec<(String, String)>> {
        self.requests_to(&Self::calls_path()).await
    }

    /// Updates to one call, such as `Status=completed`.
    pub async fn call_updates(&self, call_sid: &str) -> Vec<Vec<(String, String)>> {
        self.requests_to(&format!(
            "/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json"
        ))
        .await
    }

    async fn requests_to(&self, wanted: &str) -> Vec<Vec<(String, String)>> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == wanted)
            .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
            .collect()
    }
}

/// Checks a request body verifyd sent Twilio against Twilio's OpenAPI
/// description of `operation` (`CreateCall`, `CreateMessage`,
/// `UpdateCall`), as `tests/data/twilio-openapi-requests.json` holds it
/// (trimmed from twilio/twilio-oai): every field is one the operation
/// takes, of its type, format and values; every required field is there;
/// a field that is not a list comes once.
pub fn assert_conforms(operation: &str, form: &[(String, String)]) {
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../data/twilio-openapi-requests.json"))
            .expect("the trimmed description parses");
    let op = &spec["operations"][operation];
    let fields = op["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no operation {operation}"));
    let sent = |name: &str| form.iter().filter(|(k, _)| k == name).count();
    for required in op["required"].as_array().expect("required") {
        let name = required.as_str().expect("a name");
        assert_eq!(sent(name), 1, "{operation} needs {name}: {form:?}");
    }
    if operation == "CreateCall" {
        // "Either Url, Twiml or ApplicationSid is required" (Twilio's docs;
        // the description cannot say it).
        let how = ["Url", "Twiml", "ApplicationSid"].map(sent);
        assert_eq!(how.iter().sum::<usize>(), 1, "{form:?}");
    }
    for (name, value) in form {
        let field = fields
            .get(name)
            .unwrap_or_else(|| panic!("{operation} takes no field {name}"));
        let one = if field["type"] == "array" {
            &field["items"]
        } else {
            assert_eq!(sent(name), 1, "{operation}: {name} is not a list");
            field
        };
        let fits = match (one["type"].as_str(), one["format"].as_str()) {
            (Some("integer"), _) => value.parse::<i64>().is_ok(),
            (Some("boolean"), _) => value == "true" || value == "false",
            (Some("string"), Some("uri")) => {
                url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }
            (Some("string"), Some("twiml")) => roxmltree::Document::parse(value)
                .is_ok_and(|d| d.root_element().has_tag_name("Response")),
            (Some("string"), _) => !value.is_empty(),
            other => panic!("{operation}.{name}: no check for {other:?}"),
        };
        assert!(fits, "{operation}.{name} = {value:?} is not {one}");
        if let Some(values) = one["enum"].as_array() {
            assert!(
                values.iter().any(|v| v == value.as_str()),
                "{operation}.{name} = {value:?}, not one of {values:?}"
            );
        }
    }
}
