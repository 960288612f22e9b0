//! Twilio Lookup v2: a number's live line type and its last SIM change,
//! as `GET {base}/v2/PhoneNumbers/{E.164}?Fields=...` with HTTP Basic auth
//! (the account's, or its API key's), documented in twilio-oai's
//! `twilio_lookups_v2.json`. A paid call per number: the service caches
//! what it answers.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use url::Url;

use super::TwilioConfig;
use crate::{
    delivery::web::exchange,
    domain::{
        destination::PhoneNumber,
        lookup::{LineKind, Signals, SimSwap, parse_iso_duration},
    },
    secret::Secret,
};

/// Where Lookup v2 answers, unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://lookups.twilio.com";

#[derive(Debug, Clone)]
pub struct TwilioLookup {
    base_url: Url,
    user: String,
    password: Secret,
    http: reqwest::Client,
}

/// The parts of Lookup's answer verifyd reads.
#[derive(Debug, Deserialize)]
struct Answer {
    /// `false` for a number outside any assignable range.
    valid: Option<bool>,
    line_type_intelligence: Option<LineTypeIntelligence>,
    sim_swap: Option<SimSwapAnswer>,
}

#[derive(Debug, Deserialize)]
struct LineTypeIntelligence {
    #[serde(rename = "type")]
    kind: Option<String>,
    error_code: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct SimSwapAnswer {
    last_sim_swap: Option<LastSimSwap>,
    error_code: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct LastSimSwap {
    last_sim_swap_date: Option<String>,
    swapped_period: Option<String>,
    swapped_in_period: Option<bool>,
}

impl TwilioLookup {
    /// With the credentials of a configured Twilio provider.
    pub fn new(config: &TwilioConfig, base_url: &Url, http: reqwest::Client) -> Self {
        let (user, password) = match (&config.api_key_sid, &config.api_key_secret) {
            (Some(sid), Some(secret)) => (sid.clone(), secret.clone()),
            _ => (config.account_sid.clone(), config.auth_token.clone()),
        };
        Self {
            base_url: base_url.clone(),
            user,
            password,
            http,
        }
    }

    /// The number's signals: its line type, and its last SIM change when
    /// `sim_swap`. `Err` says why there is no answer, without the number.
    pub async fn signals(
        &self,
        phone: &PhoneNumber,
        sim_swap: bool,
        timeout: Duration,
        now: SystemTime,
    ) -> Result<Signals, String> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| "bad base URL".to_owned())?
            .pop_if_empty()
            .extend(["v2", "PhoneNumbers", phone.as_str()]);
        // As Twilio documents it: the fields comma-separated, as written.
        url.set_query(Some(if sim_swap {
            "Fields=line_type_intelligence,sim_swap"
        } else {
            "Fields=line_type_intelligence"
        }));
        let request = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .timeout(timeout);
        let (status, body) = exchange(request).await.map_err(|(_, reason)| reason)?;
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|_| "unreadable answer".to_owned())?;
        Ok(signals(&answer, sim_swap, now))
    }
}

/// What an answer says; a part with an error code, or a number Lookup
/// finds invalid, says nothing.
fn signals(answer: &Answer, asked_sim_swap: bool, now: SystemTime) -> Signals {
    let line = answer
        .line_type_intelligence
        .as_ref()
        .filter(|l| l.error_code.is_none() && answer.valid != Some(false))
        .and_then(|l| l.kind.as_deref())
        .map(LineKind::parse);
    let sim_swap = answer
        .sim_swap
        .as_ref()
        .filter(|s| asked_sim_swap && s.error_code.is_none())
        .and_then(|s| s.last_sim_swap.as_ref())
        .map(|last| SimSwap {
            last_swapped_at: last
                .last_sim_swap_date
                .as_deref()
                .and_then(|d| humantime::parse_rfc3339_weak(d.trim_end_matches('Z')).ok())
                .filter(|t| *t > SystemTime::UNIX_EPOCH),
            period: last.swapped_period.as_deref().and_then(parse_iso_duration),
            swapped_in_period: last.swapped_in_period,
        });
    Signals {
        line,
        sim_swap_asked: asked_sim_swap,
        sim_swap,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str, sim_swap: bool) -> Signals {
        signals(
            &serde_json::from_str(json).expect("json"),
            sim_swap,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn the_documented_answers_read_as_signals() {
        let lti = read(
            r#"{"line_type_intelligence":{"error_code":null,"mobile_country_code":"240",
                "mobile_network_code":"38","carrier_name":"Twilio","type":"nonFixedVoip"},
                "sim_swap":null}"#,
            false,
        );
        assert_eq!(lti.line, Some(LineKind::NonFixedVoip));
        assert_eq!(lti.sim_swap, None);

        let swapped = read(
            r#"{"line_type_intelligence":null,"sim_swap":{"last_sim_swap":{
                "last_sim_swap_date":"2020-04-27T10:18:50Z","swapped_period":"PT15282H33M44S",
                "swapped_in_period":true},"carrier_name":"Vodafone UK","error_code":null}}"#,
            true,
        );
        let swap = swapped.sim_swap.expect("a SIM change");
        assert_eq!(
            swap.last_swapped_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_587_982_730))
        );
        assert_eq!(
            swap.period,
            Some(Duration::from_secs(15_282 * 3_600 + 33 * 60 + 44))
        );
        assert_eq!(swap.swapped_in_period, Some(true));

        let no_date = read(
            r#"{"sim_swap":{"last_sim_swap":{"last_sim_swap_date":null,
                "swapped_period":"PT24H","swapped_in_period":false},"error_code":null}}"#,
            true,
        );
        assert_eq!(
            no_date.sim_swap,
            Some(SimSwap {
                last_swapped_at: None,
                period: Some(Duration::from_secs(86_400)),
                swapped_in_period: Some(false),
            })
        );
    }

    #[test]
    fn a_part_with_an_error_code_says_nothing() {
        let failed = read(
            r#"{"line_type_intelligence":{"type":"mobile","error_code":60600},
                "sim_swap":{"last_sim_swap":null,"error_code":60606}}"#,
            true,
        );
        assert_eq!(failed.line, None);
        assert_eq!(failed.sim_swap, None);
        assert!(failed.sim_swap_asked, "asked, and no answer");
        let invalid = read(
            r#"{"valid":false,"validation_errors":["TOO_LONG"],
                "line_type_intelligence":{"type":"mobile","error_code":null}}"#,
            false,
        );
        assert_eq!(invalid.line, None);
    }
}
