//! What every HTTP provider shares: one client (rustls with ring), a
//! bounded read of answers, and failure reasons that name no URL.

use std::time::Duration;

use bytes::Bytes;
use zeroize::Zeroizing;

use super::message::FailureKind;

/// What went wrong on the wire, without the URL (which holds the account),
/// and whether the request may have reached the provider: a failure to
/// connect (refused, name not resolved, TLS handshake) sent nothing.
fn transport_failure(e: &reqwest::Error) -> (FailureKind, String) {
    let kind = if e.is_connect() {
        FailureKind::Unsent
    } else {
        FailureKind::Transient
    };
    (kind, transport_reason(e))
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the response broke off".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// The most of a provider's response body that is read: enough for any
/// real answer, so a provider streaming garbage costs memory for no more.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok(body)
}

/// One HTTP client for every provider: connection pooling, rustls with the
/// ring provider, and a connect timeout (attempt timeouts come from the
/// route).
pub fn http_client() -> Result<reqwest::Client, String> {
    // One rustls crypto provider across every crate: ring. Installing it
    // twice (tests build several apps) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Sends a request and reads its answer, bounded. A failure on the wire
/// comes back as its kind ([`FailureKind::Unsent`] or
/// [`FailureKind::Transient`]) and a reason that names no URL.
pub async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Vec<u8>), (FailureKind, String)> {
    let request = crate::telemetry::inject_trace_context(request);
    let response = request.send().await.map_err(|e| transport_failure(&e))?;
    let status = response.status();
    // The request went out: a body that breaks off is no proof it was not
    // taken.
    let body = read_limited(response)
        .await
        .map_err(|e| (FailureKind::Transient, transport_reason(&e)))?;
    Ok((status, body))
}

/// A request body that is wiped once reqwest and hyper let go of it: the
/// body of a message carries its code. It must be written in place (a
/// buffer that grew would leave copies behind); what the TLS and kernel
/// layers copy on the way out is theirs (docs/security.md).
pub fn wiped(bytes: Zeroizing<Vec<u8>>) -> reqwest::Body {
    reqwest::Body::from(Bytes::from_owner(bytes))
}

/// `fields` urlencoded into one buffer reserved for the most they can take
/// (every byte escaped as `%XX`), wiped as [`wiped`] is.
pub fn form_body(fields: &[(&str, &str)]) -> reqwest::Body {
    wiped(urlencoded(fields))
}

fn urlencoded(fields: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    let room = fields
        .iter()
        .map(|(name, value)| 3 * (name.len() + value.len()) + 2)
        .sum();
    let form = url::form_urlencoded::Serializer::new(String::with_capacity(room))
        .extend_pairs(fields)
        .finish();
    Zeroizing::new(form.into_bytes())
}

/// How an HTTP provider's error status is retried: 429 took nothing for
/// now; a 5xx may have come after the message was taken (a gateway timing
/// out behind a proxy).
pub fn retried_status(status: reqwest::StatusCode) -> Option<FailureKind> {
    match status.as_u16() {
        429 => Some(FailureKind::Unsent),
        500..=599 => Some(FailureKind::Transient),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_encoded_in_place_in_the_room_reserved_for_it() {
        let fields = [
            ("To", "+14155550100"),
            ("Body", "Your code: 123456 & \u{e9}\u{263a}"),
        ];
        let room: usize = fields
            .iter()
            .map(|(k, v)| 3 * (k.len() + v.len()) + 2)
            .sum();
        let form = urlencoded(&fields);
        // A buffer that grew would have left the code in the one it left.
        assert_eq!(form.capacity(), room);
        let decoded: Vec<(String, String)> =
            url::form_urlencoded::parse(&form).into_owned().collect();
        let expected: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(decoded, expected);
        // Every byte escaped: the most a form can take fits too.
        let worst = urlencoded(&[("\u{1}", "\u{ff}\u{ff}")]);
        assert_eq!(worst.len(), 3 * 5 + 1);
        assert_eq!(worst.capacity(), 3 * 5 + 2);
    }
}
