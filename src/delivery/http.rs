//! A generic HTTP provider for in-house SMS gateways: verifyd POSTs a JSON
//! body and signs it so the gateway can tell the request came from verifyd.
//!
//! Signature header: `X-Verifyd-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex>` is HMAC-SHA256(secret, "<t>.<body>"). The timestamp lets a
//! gateway refuse replays older than a few minutes.
//!
//! Answers: 2xx accepted (an optional JSON `{"id": "..."}` is kept as the
//! reference); 422 refuses the destination itself; other 4xx refuse the
//! request (next provider); 429, 5xx and timeouts are retried.

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use url::Url;
use zeroize::Zeroizing;

use super::{
    message::{Content, FailureKind, Message, Receipt, SendError},
    web::{exchange, retried_status, wiped},
};
use crate::{clock::Clock, secret::Secret};

pub const SIGNATURE_HEADER: &str = "X-Verifyd-Signature";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: Url,
    /// At least 32 bytes; shared with the gateway.
    pub signing_secret: Secret,
}

/// What the gateway is sent. It holds the code, so it has no `Debug`.
#[derive(Serialize)]
struct Request<'a> {
    to: &'a str,
    channel: &'static str,
    body: &'a str,
    verification_id: &'a str,
    locale: Option<&'a str>,
}

impl Request<'_> {
    /// The longest this can be as JSON: every byte of its texts escaped
    /// (at most six bytes, `\u00XX`), and room for the names and
    /// punctuation.
    fn most_json_bytes(&self) -> usize {
        let texts = self.to.len()
            + self.channel.len()
            + self.body.len()
            + self.verification_id.len()
            + self.locale.map_or(0, str::len);
        texts * 6 + 128
    }
}

#[derive(Debug, Deserialize)]
struct Accepted {
    id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpSms {
    name: String,
    url: Url,
    secret: Secret,
    http: reqwest::Client,
    clock: Clock,
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], at: SystemTime, body: &[u8]) -> String {
    let t = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl HttpSms {
    pub fn new(
        name: &str,
        config: &HttpConfig,
        http: reqwest::Client,
        clock: Clock,
    ) -> Result<Self, String> {
        if !matches!(config.url.scheme(), "http" | "https") {
            return Err("url must be http or https".to_owned());
        }
        if config.signing_secret.expose().len() < 32 {
            return Err("signing_secret must be at least 32 bytes".to_owned());
        }
        Ok(Self {
            name: name.to_owned(),
            url: config.url.clone(),
            secret: config.signing_secret.clone(),
            http,
            clock,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, kind: FailureKind, reason: impl Into<String>) -> SendError {
        SendError::new(&self.name, kind, reason)
    }

    pub async fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        let request = Request {
            to: message.to.as_str(),
            channel: message.delivery.channel.as_str(),
            body: content.text(),
            verification_id: message.verification_id.as_str(),
            locale: message.delivery.locale.as_ref().map(|l| l.as_str()),
        };
        // The JSON carries the code: written into a buffer reserved for the
        // most it can take, so that it never moves, and wiped once sent.
        let mut body = Zeroizing::new(Vec::with_capacity(request.most_json_bytes()));
        serde_json::to_writer(&mut *body, &request).map_err(|e| {
            self.error(
                FailureKind::Rejected,
                format!("cannot encode the request: {e}"),
            )
        })?;
        let signature = sign(self.secret.expose().as_bytes(), self.clock.now(), &body);
        let request = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(wiped(body));
        let (status, answer) = exchange(request)
            .await
            .map_err(|(kind, reason)| self.error(kind, reason))?;
        if status.is_success() {
            return Ok(Receipt {
                provider: self.name.clone(),
                reference: serde_json::from_slice::<Accepted>(&answer)
                    .ok()
                    .and_then(|a| a.id),
                code_withheld: false,
            });
        }
        let kind = match status.as_u16() {
            422 => FailureKind::Destination,
            _ => retried_status(status).unwrap_or(FailureKind::Rejected),
        };
        Err(self.error(kind, format!("HTTP {}", status.as_u16())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn signatures_bind_the_time_and_the_body() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sig = sign(b"0123456789abcdef0123456789abcdef", at, b"{\"a\":1}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(
            sig,
            sign(b"0123456789abcdef0123456789abcdef", at, b"{\"a\":2}")
        );
        assert_ne!(
            sig,
            sign(
                b"0123456789abcdef0123456789abcdef",
                at + Duration::from_secs(1),
                b"{\"a\":1}"
            )
        );
    }
}
