//! How a verification is laid out in Redis: a hash of string fields (absent
//! for `None`) and a list of JSON send attempts, the shapes the Lua scripts
//! read and write. Parsing here is strict: a field this version cannot read
//! is a store error, never a guess.

use std::{
    borrow::Cow,
    collections::HashMap,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::domain::{
    CallerRef, Channel, DeliveryStatus, Destination, Extension, Locale, MatchDigits, Purpose,
    SendAttempt, Status, TenantId, Verification, VerificationId, VoiceMode,
    fallback::{Fallback, Workflow},
    verification::Delivery,
    voice::VoiceCall,
};

use super::super::port::StoreError;

/// What a script replies for a verification (prelude.lua's `reply`), and
/// what an idempotency record keeps: one JSON text, `[[name, value, ...],
/// [attempt, ...]]`, each attempt itself a JSON text as the list stores it.
pub(super) type Reply = String;

/// One string of a reply, borrowed from the text unless it had escapes to
/// undo (serde's own `Cow<str>` always copies; `borrow` on a field does not).
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A reply parsed in place.
type Parsed<'a> = (Vec<Text<'a>>, Vec<Text<'a>>);

pub(super) fn millis(t: SystemTime) -> u64 {
    millis_of(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// A duration in whole milliseconds, as the scripts count.
pub(super) fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The fields of a new verification. `pending_key` and `watch` are the key
/// names the scripts need to unindex it and to publish its changes.
pub(super) fn fields(
    v: &Verification,
    retention: Duration,
    watch: &str,
) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("id", v.id.to_string()),
        ("tenant", v.tenant.as_str().to_owned()),
        ("to", v.to.as_str().to_owned()),
        ("purpose", v.purpose.as_str().to_owned()),
        ("channel", v.delivery.channel.as_str().to_owned()),
        ("status", v.status.as_str().to_owned()),
        ("created_at", millis(v.created_at).to_string()),
        ("expires_at", millis(v.expires_at).to_string()),
        ("retention", millis_of(retention).to_string()),
        ("checks_remaining", v.checks_remaining.to_string()),
        ("sends_remaining", v.sends_remaining.to_string()),
        ("watch", watch.to_owned()),
    ];
    if let Some(extension) = &v.extension {
        out.push(("extension", extension.as_str().to_owned()));
    }
    if let Some(mode) = v.delivery.voice_mode {
        out.push(("voice_mode", mode.as_str().to_owned()));
    }
    if let Some(locale) = &v.delivery.locale {
        out.push(("locale", locale.as_str().to_owned()));
    }
    if let Some(digits) = &v.match_digits {
        out.push(("match_digits", digits.as_str().to_owned()));
    }
    for (name, at) in [
        ("last_send_at", v.last_send_at),
        ("sending_until", v.sending_until),
    ] {
        if let Some(at) = at {
            out.push((name, millis(at).to_string()));
        }
    }
    if v.accepted_once {
        out.push(("accepted_once", "1".to_owned()));
    }
    if let Some(reference) = &v.caller_ref.reference {
        out.push(("reference", reference.clone()));
    }
    if let Some(tags) = v.caller_ref.tags_json() {
        out.push(("tags", tags));
    }
    if let Some(fallback) = &v.fallback {
        out.push(("fallback", fallback.workflow.channels_str()));
        out.push((
            "fallback_timeout",
            millis_of(fallback.workflow.step_timeout()).to_string(),
        ));
        out.push(("fallback_step", fallback.step.to_string()));
        if let Some(at) = fallback.next_at {
            out.push(("fallback_at", millis(at).to_string()));
        }
    }
    if let Some(call) = &v.call {
        out.push(("call_token", hex::encode(call.token_hash())));
        out.push(("call_reprompts", call.reprompts.to_string()));
        out.push(("call_presses", call.presses.to_string()));
        if let Some(sid) = &call.call_sid {
            out.push(("call_sid", sid.clone()));
        }
    }
    out
}

/// A whole verification as one JSON value (for idempotent replays), in
/// the reply's shape.
pub(super) fn to_json(v: &Verification) -> Reply {
    let flat: Vec<String> = fields(v, Duration::ZERO, "")
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect();
    let attempts: Vec<String> = v.send_attempts.iter().map(attempt_json).collect();
    serde_json::to_string(&(flat, attempts)).expect("verifications always serialize")
}

/// A send attempt as the list holds it. `rank` is where its provider
/// status sits in a message's life, so the delivery script can tell a
/// report that moves it forward without a table of its own.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredAttempt {
    channel: String,
    status: String,
    provider: String,
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_status: Option<String>,
    #[serde(default)]
    rank: u8,
}

pub(super) fn attempt_json(a: &SendAttempt) -> String {
    let stored = StoredAttempt {
        channel: a.channel.as_str().to_owned(),
        status: delivery_status_str(a.status).to_owned(),
        provider: a.provider.clone(),
        at: millis(a.at),
        error_reason: a.error_reason.clone(),
        reference: a.reference.clone(),
        provider_status: a.provider_status.clone(),
        rank: a
            .provider_status
            .as_deref()
            .map_or(0, |s| crate::domain::DeliveryReport::rank(s).0),
    };
    serde_json::to_string(&stored).expect("attempts always serialize")
}

pub(super) fn delivery_status_str(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Accepted => "accepted",
        DeliveryStatus::Failed => "failed",
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Undelivered => "undelivered",
    }
}

fn bad(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unreadable record in the store: {what}"))
}

/// Rebuilds a verification from a script's reply or an idempotency record.
pub(super) fn decode(reply: &str) -> Result<Verification, StoreError> {
    let (flat, attempts): Parsed<'_> =
        serde_json::from_str(reply).map_err(|_| bad("verification"))?;
    let mut f: HashMap<&str, &str> = HashMap::with_capacity(flat.len() / 2);
    let mut pairs = flat.iter();
    while let (Some(k), Some(v)) = (pairs.next(), pairs.next()) {
        f.insert(&k.0, &v.0);
    }
    from_fields(&f, attempts.iter().map(|a| &*a.0))
}

/// The fields a plain read (`read_of`) asks for, in its order: everything
/// a reply carries, and the retention to tell a purged verification.
pub(super) const READ_FIELDS: [&str; 29] = [
    "id",
    "tenant",
    "to",
    "purpose",
    "channel",
    "voice_mode",
    "locale",
    "status",
    "created_at",
    "expires_at",
    "retention",
    "checks_remaining",
    "sends_remaining",
    "last_send_at",
    "sending_until",
    "match_digits",
    "accepted_once",
    "call_token",
    "call_reprompts",
    "call_presses",
    "call_sid",
    "unacked",
    "reference",
    "tags",
    "extension",
    "fallback",
    "fallback_timeout",
    "fallback_step",
    "fallback_at",
];

/// A verification as of `now` from an HMGET of `READ_FIELDS` and its
/// attempts, without writing: expiry shows in the status (as
/// [`Status::as_of`] has it) whether or not a script has settled it yet.
/// `None` when there is none, or it is past its retention.
pub(super) fn read_of(
    values: &[Option<String>],
    attempts: &[String],
    now: SystemTime,
) -> Result<Option<Verification>, StoreError> {
    let f: HashMap<&str, &str> = READ_FIELDS
        .iter()
        .zip(values)
        .filter_map(|(name, value)| Some((*name, value.as_deref()?)))
        .collect();
    if f.is_empty() {
        return Ok(None);
    }
    let retention = f
        .get("retention")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| bad("retention"))?;
    let mut v = from_fields(&f, attempts.iter().map(String::as_str))?;
    let Some(status) = standing(
        shown(v.status, f.contains_key("unacked")),
        v.expires_at,
        Duration::from_millis(retention),
        now,
    ) else {
        return Ok(None);
    };
    v.status = status;
    Ok(Some(v))
}

/// A verification from its stored fields and attempts.
fn from_fields<'a>(
    f: &HashMap<&str, &str>,
    attempts: impl Iterator<Item = &'a str>,
) -> Result<Verification, StoreError> {
    let text = |name: &str| f.get(name).copied();
    let req = |name: &'static str| text(name).ok_or_else(|| bad(name));
    let number = |name: &'static str| -> Result<u64, StoreError> {
        req(name)?.parse().map_err(|_| bad(name))
    };
    let opt_time = |name: &'static str| -> Result<Option<SystemTime>, StoreError> {
        text(name)
            .map(|s| s.parse().map(time).map_err(|_| bad(name)))
            .transpose()
    };
    let count = |name: &'static str| -> Result<u32, StoreError> {
        u32::try_from(number(name)?).map_err(|_| bad(name))
    };
    let call = match text("call_token") {
        Some(hash) => {
            let mut token_hash = [0u8; 32];
            hex::decode_to_slice(hash, &mut token_hash).map_err(|_| bad("call_token"))?;
            let reprompts = text("call_reprompts")
                .unwrap_or("0")
                .parse()
                .map_err(|_| bad("call_reprompts"))?;
            let presses = text("call_presses")
                .unwrap_or("0")
                .parse()
                .map_err(|_| bad("call_presses"))?;
            Some(VoiceCall::from_stored(
                token_hash,
                text("call_sid").map(str::to_owned),
                reprompts,
                presses,
            ))
        }
        None => None,
    };
    Ok(Verification {
        id: VerificationId::parse(req("id")?).ok_or_else(|| bad("id"))?,
        tenant: TenantId::parse(req("tenant")?).ok_or_else(|| bad("tenant"))?,
        to: Destination::from_stored(req("to")?),
        extension: text("extension")
            .map(|e| Extension::parse(e).ok_or_else(|| bad("extension")))
            .transpose()?,
        purpose: purpose(req("purpose")?).ok_or_else(|| bad("purpose"))?,
        delivery: Delivery {
            channel: channel(req("channel")?).ok_or_else(|| bad("channel"))?,
            voice_mode: text("voice_mode")
                .map(|m| voice_mode(m).ok_or_else(|| bad("voice_mode")))
                .transpose()?,
            locale: text("locale")
                .map(|l| Locale::parse(l).ok_or_else(|| bad("locale")))
                .transpose()?,
        },
        status: status(req("status")?).ok_or_else(|| bad("status"))?,
        created_at: time(number("created_at")?),
        expires_at: time(number("expires_at")?),
        checks_remaining: count("checks_remaining")?,
        sends_remaining: count("sends_remaining")?,
        last_send_at: opt_time("last_send_at")?,
        sending_until: opt_time("sending_until")?,
        send_attempts: attempts.map(decode_attempt).collect::<Result<_, _>>()?,
        match_digits: text("match_digits").map(MatchDigits::from_stored),
        call,
        accepted_once: text("accepted_once") == Some("1"),
        caller_ref: CallerRef {
            reference: text("reference").map(str::to_owned),
            tags: text("tags")
                .map(|t| serde_json::from_str(t).map_err(|_| bad("tags")))
                .transpose()?
                .unwrap_or_default(),
        },
        fallback: fallback_of(f)?,
    })
}

/// The fallback workflow's fields, if it has one.
fn fallback_of(f: &HashMap<&str, &str>) -> Result<Option<Box<Fallback>>, StoreError> {
    let Some(channels) = f.get("fallback") else {
        return Ok(None);
    };
    let number = |name: &'static str| -> Result<u64, StoreError> {
        f.get(name)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(name))
    };
    let workflow =
        Workflow::from_stored(channels, Duration::from_millis(number("fallback_timeout")?))
            .ok_or_else(|| bad("fallback"))?;
    let next_at = match f.get("fallback_at") {
        Some(_) => Some(time(number("fallback_at")?)),
        None => None,
    };
    Ok(Some(Box::new(Fallback {
        workflow,
        step: u8::try_from(number("fallback_step")?).map_err(|_| bad("fallback_step"))?,
        next_at,
    })))
}

/// The fields `status_of` reads, in its order.
pub(super) const STATUS_FIELDS: [&str; 5] = ["status", "to", "expires_at", "retention", "unacked"];

/// A verification's status at `now` and its destination, from its
/// `STATUS_FIELDS`, without the rest: `None` when there is none, or it is
/// past its retention (as prelude.lua's `current` reads it).
pub(super) fn status_of(
    [stored, to, expires_at, retention, unacked]: [Option<String>; 5],
    now: SystemTime,
) -> Result<Option<(Status, Destination)>, StoreError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let number = |value: Option<String>, name| -> Result<u64, StoreError> {
        value.and_then(|v| v.parse().ok()).ok_or_else(|| bad(name))
    };
    let expires_at = time(number(expires_at, "expires_at")?);
    let retention = Duration::from_millis(number(retention, "retention")?);
    let status = shown(
        status(&stored).ok_or_else(|| bad("status"))?,
        unacked.is_some(),
    );
    let to = Destination::from_stored(&to.ok_or_else(|| bad("to"))?);
    Ok(standing(status, expires_at, retention, now).map(|status| (status, to)))
}

/// The status a reader is shown: an approval the replicas have not
/// acknowledged yet (`unacked`, prelude.lua's `approve`) is pending.
fn shown(status: Status, unacknowledged: bool) -> Status {
    if unacknowledged {
        Status::Pending
    } else {
        status
    }
}

/// A stored status as it stands at `now`: `None` past the retention (the
/// verification is gone, whatever Redis's TTL says, as prelude.lua's
/// `purged` has it), else as [`Status::as_of`] has it.
fn standing(
    status: Status,
    expires_at: SystemTime,
    retention: Duration,
    now: SystemTime,
) -> Option<Status> {
    (now < expires_at + retention).then(|| status.as_of(expires_at, now))
}

fn decode_attempt(json: &str) -> Result<SendAttempt, StoreError> {
    let a: StoredAttempt = serde_json::from_str(json).map_err(|_| bad("send attempt"))?;
    Ok(SendAttempt {
        channel: channel(&a.channel).ok_or_else(|| bad("attempt channel"))?,
        status: match a.status.as_str() {
            "accepted" => DeliveryStatus::Accepted,
            "failed" => DeliveryStatus::Failed,
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "undelivered" => DeliveryStatus::Undelivered,
            _ => return Err(bad("attempt status")),
        },
        provider: a.provider,
        at: time(a.at),
        error_reason: a.error_reason,
        reference: a.reference,
        provider_status: a.provider_status,
    })
}

pub(super) fn status(s: &str) -> Option<Status> {
    [
        Status::Pending,
        Status::Approved,
        Status::Canceled,
        Status::Expired,
        Status::MaxAttemptsReached,
        Status::Failed,
        Status::Denied,
        Status::Superseded,
    ]
    .into_iter()
    .find(|x| x.as_str() == s)
}

fn channel(s: &str) -> Option<Channel> {
    [Channel::Sms, Channel::Voice, Channel::Email]
        .into_iter()
        .find(|x| x.as_str() == s)
}

fn purpose(s: &str) -> Option<Purpose> {
    [
        Purpose::Enrollment,
        Purpose::PasswordReset,
        Purpose::MethodUpdate,
    ]
    .into_iter()
    .find(|x| x.as_str() == s)
}

fn voice_mode(s: &str) -> Option<VoiceMode> {
    [VoiceMode::Confirm, VoiceMode::Match, VoiceMode::Code]
        .into_iter()
        .find(|x| x.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Policy;

    fn verification() -> Verification {
        let policy = Policy::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut v = Verification::new(
            VerificationId::generate(),
            TenantId::default_tenant(),
            Destination::parse("+14155550100").expect("valid"),
            Purpose::PasswordReset,
            Delivery {
                channel: Channel::Sms,
                voice_mode: None,
                locale: None,
            },
            &policy,
            now,
        );
        v.reserve_send(&policy, now).expect("first send");
        v.send_attempts.push(SendAttempt {
            channel: Channel::Sms,
            status: DeliveryStatus::Failed,
            provider: "twilio".into(),
            at: now,
            error_reason: Some("said \"no\" \\ / ünïcode".into()),
            reference: Some("SM1".into()),
            provider_status: None,
        });
        v.extension = Extension::parse("ww4711#");
        v.caller_ref = CallerRef {
            reference: Some("reset/42 \"a\"".into()),
            tags: [("ticket".into(), "HD-1/2".into())].into(),
        };
        v.fallback = Some(Box::new(Fallback::begin(
            Workflow::new(vec![Channel::Sms, Channel::Voice], Duration::from_secs(60))
                .expect("valid"),
            now,
        )));
        v
    }

    #[test]
    fn an_idempotency_record_reads_back_as_the_verification_it_kept() {
        let v = verification();
        assert_eq!(decode(&to_json(&v)).expect("readable"), v);
    }

    /// The shape prelude.lua's `reply` writes: cjson escapes `/`, and an
    /// empty attempts list comes as `[]`.
    #[test]
    fn a_script_reply_with_escapes_and_no_attempts_decodes() {
        let mut v = verification();
        v.send_attempts.clear();
        let flat: Vec<String> = fields(&v, Duration::ZERO, "")
            .into_iter()
            .flat_map(|(k, v)| [k.to_owned(), v])
            .collect();
        let flat = serde_json::to_string(&flat)
            .expect("json")
            .replace('/', "\\/");
        assert!(
            flat.contains(r"reset\/42"),
            "the reference has a slash to escape"
        );
        let reply = format!("[{flat},[]]");
        assert_eq!(decode(&reply).expect("readable"), v);
    }

    #[test]
    fn a_reply_missing_a_field_is_a_store_error_not_a_guess() {
        let reply = r#"[["id","VE0123456789abcdef0123456789abcdef"],[]]"#;
        assert!(matches!(decode(reply), Err(StoreError::Unavailable(_))));
        assert!(matches!(decode("[1,2]"), Err(StoreError::Unavailable(_))));
    }

    #[test]
    fn the_status_read_settles_expiry_and_forgets_what_is_past_retention() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let stored = |status: &str| {
            [
                Some(status),
                Some("+14155550100"),
                Some("1000"),
                Some("500"),
                None,
            ]
            .map(|f| f.map(str::to_owned))
        };
        let read = |fields, now| status_of(fields, at(now)).expect("readable");
        assert_eq!(
            read(stored("pending"), 999).map(|s| s.0),
            Some(Status::Pending)
        );
        assert_eq!(
            read(stored("pending"), 1000).map(|s| s.0),
            Some(Status::Expired)
        );
        assert_eq!(
            read(stored("approved"), 1499).map(|s| s.0),
            Some(Status::Approved)
        );
        assert_eq!(read(stored("approved"), 1500), None, "past its retention");
        // An approval the replicas have not acknowledged reads as pending,
        // and expires as a pending verification does.
        let mut unacknowledged = stored("approved");
        unacknowledged[4] = Some("1".to_owned());
        assert_eq!(
            read(unacknowledged.clone(), 999).map(|s| s.0),
            Some(Status::Pending)
        );
        assert_eq!(
            read(unacknowledged, 1000).map(|s| s.0),
            Some(Status::Expired)
        );
        assert_eq!(
            read([None, None, None, None, None], 0),
            None,
            "no such verification"
        );
        let mut unreadable = stored("pending");
        unreadable[2] = None;
        assert!(status_of(unreadable, at(0)).is_err());
    }

    /// Every field a new verification is written with, but the key names
    /// kept for the scripts, is one a plain read asks for.
    #[test]
    fn a_read_asks_for_every_field_a_verification_is_written_with_and_gets_it_back() {
        let mut v = verification();
        v.delivery = Delivery {
            channel: Channel::Voice,
            voice_mode: Some(VoiceMode::Match),
            locale: Locale::parse("pt-BR"),
        };
        v.match_digits = Some(MatchDigits::from_stored("42"));
        v.call = Some(VoiceCall::from_stored([9; 32], Some("CA1".into()), 1, 3));
        v.accepted_once = true;
        let written = fields(&v, Duration::from_secs(60), "watch-channel");
        let values: Vec<Option<String>> = READ_FIELDS
            .iter()
            .map(|name| {
                written
                    .iter()
                    .find(|(written, _)| written == name)
                    .map(|(_, value)| value.clone())
            })
            .collect();
        for (name, _) in &written {
            assert!(*name == "watch" || READ_FIELDS.contains(name), "{name}");
        }
        let attempts: Vec<String> = v.send_attempts.iter().map(attempt_json).collect();
        let read = read_of(&values, &attempts, v.created_at).expect("readable");
        assert_eq!(read, Some(v.clone()));

        let expired = read_of(&values, &attempts, v.expires_at).expect("readable");
        assert_eq!(expired.map(|r| r.status), Some(Status::Expired));
        let purged = v.expires_at + Duration::from_secs(60);
        assert_eq!(read_of(&values, &attempts, purged).expect("readable"), None);
        assert_eq!(
            read_of(&vec![None; READ_FIELDS.len()], &[], v.created_at).expect("readable"),
            None
        );
    }
}
