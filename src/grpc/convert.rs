//! proto ⇄ domain. Requests are parsed into domain types here, every field
//! checked before anything happens; all problems are reported at once, each
//! naming its field.

use std::{net::IpAddr, time::SystemTime};

use tonic_types::FieldViolation;

use crate::{
    domain::{
        CallerRef, Channel, Code, DeliveryStatus, Destination, Extension, Locale, Purpose,
        SendAttempt, Status, Verification, VerificationId, VoiceMode,
        fallback::{Fallback, Workflow},
        verification::Delivery,
    },
    proto,
    service::{FallbackAsk, IdempotencyKey, ResendRequest, StartRequest},
};

/// The field violations of one request.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, Violations> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

/// The most an end-user IP field may hold (an IPv6 address with a zone is
/// under 64 characters).
const MAX_IP_LEN: usize = 64;

pub fn start_request(req: &proto::StartVerificationRequest) -> Result<StartRequest, Violations> {
    let mut bad = Violations::default();
    let channel = channel_field(req.channel, &mut bad);
    let to = match Destination::parse(&req.to) {
        Ok(to) => {
            if let Some(channel) = channel
                && !channel.reaches(&to)
            {
                let wanted = if channel == Channel::Email {
                    "an email address"
                } else {
                    "an E.164 phone number"
                };
                bad.add("to", format!("must be {wanted} for {}", channel.as_str()));
            }
            Some(to)
        }
        Err(e) => {
            bad.add("to", e.to_string());
            None
        }
    };
    let purpose = match proto::Purpose::try_from(req.purpose) {
        Ok(proto::Purpose::Enrollment) => Some(Purpose::Enrollment),
        Ok(proto::Purpose::PasswordReset) => Some(Purpose::PasswordReset),
        Ok(proto::Purpose::MethodUpdate) => Some(Purpose::MethodUpdate),
        Ok(proto::Purpose::Unspecified) => {
            bad.add(
                "purpose",
                "is required: PURPOSE_ENROLLMENT, PURPOSE_PASSWORD_RESET or PURPOSE_METHOD_UPDATE",
            );
            None
        }
        Err(_) => {
            bad.add("purpose", format!("unknown value {}", req.purpose));
            None
        }
    };
    let voice_mode = voice_mode_field(req.voice_mode, channel, &mut bad);
    let extension = extension_field(&req.extension, channel, to.as_ref(), &mut bad);
    let locale = locale_field(&req.locale, &mut bad);
    let idempotency_key = idempotency_key_field(&req.idempotency_key, &mut bad);
    let end_user_ip = end_user_ip_field(&req.end_user_ip, &mut bad);
    let caller_ref = caller_ref_fields(req, &mut bad);
    let fallback = fallback_field(req.fallback.as_ref(), &mut bad);
    bad.into_result(|| StartRequest {
        to: to.expect("checked"),
        extension,
        purpose: purpose.expect("checked"),
        delivery: Delivery {
            channel: channel.expect("checked"),
            voice_mode,
            locale,
        },
        idempotency_key,
        end_user_ip,
        caller_ref,
        fallback,
    })
}

/// The workflow's shape; whether it fits the tenant's policy and the
/// start is the use case's to check (`StartError::Fallback`).
fn fallback_field(value: Option<&proto::Fallback>, bad: &mut Violations) -> FallbackAsk {
    let Some(value) = value else {
        return FallbackAsk::TenantDefault;
    };
    if value.channels.is_empty() {
        if value.step_timeout.is_some() {
            bad.add("fallback.step_timeout", "applies only with channels");
        }
        return FallbackAsk::Off;
    }
    let mut channels = Vec::with_capacity(value.channels.len());
    for &c in &value.channels {
        match proto::Channel::try_from(c) {
            Ok(proto::Channel::Sms) => channels.push(Channel::Sms),
            Ok(proto::Channel::Voice) => channels.push(Channel::Voice),
            _ => {
                bad.add(
                    "fallback.channels",
                    "each must be CHANNEL_SMS or CHANNEL_VOICE",
                );
                return FallbackAsk::TenantDefault;
            }
        }
    }
    let step_timeout = match value.step_timeout {
        None => DEFAULT_STEP_TIMEOUT,
        Some(d) => match std::time::Duration::try_from(d) {
            Ok(d) => d,
            Err(_) => {
                bad.add("fallback.step_timeout", "must be a positive duration");
                return FallbackAsk::TenantDefault;
            }
        },
    };
    match Workflow::new(channels, step_timeout) {
        Ok(workflow) => FallbackAsk::Workflow(workflow),
        Err(problem) => {
            bad.add(problem.field(), problem.to_string());
            FallbackAsk::TenantDefault
        }
    }
}

/// A workflow's step timeout when the request gives none.
const DEFAULT_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn resend_request(req: &proto::ResendVerificationRequest) -> Result<ResendRequest, Violations> {
    let mut bad = Violations::default();
    let id = match verification_id("id", &req.id) {
        Ok(id) => Some(id),
        Err(v) => {
            bad.0.extend(v.0);
            None
        }
    };
    let channel = channel_field(req.channel, &mut bad);
    let voice_mode = voice_mode_field(req.voice_mode, channel, &mut bad);
    let locale = locale_field(&req.locale, &mut bad);
    let idempotency_key = idempotency_key_field(&req.idempotency_key, &mut bad);
    let end_user_ip = end_user_ip_field(&req.end_user_ip, &mut bad);
    bad.into_result(|| ResendRequest {
        id: id.expect("checked"),
        delivery: Delivery {
            channel: channel.expect("checked"),
            voice_mode,
            locale,
        },
        idempotency_key,
        end_user_ip,
    })
}

fn channel_field(value: i32, bad: &mut Violations) -> Option<Channel> {
    match proto::Channel::try_from(value) {
        Ok(proto::Channel::Sms) => Some(Channel::Sms),
        Ok(proto::Channel::Voice) => Some(Channel::Voice),
        Ok(proto::Channel::Email) => Some(Channel::Email),
        Ok(proto::Channel::Unspecified) => {
            bad.add(
                "channel",
                "is required: CHANNEL_SMS, CHANNEL_VOICE or CHANNEL_EMAIL",
            );
            None
        }
        Err(_) => {
            bad.add("channel", format!("unknown value {value}"));
            None
        }
    }
}

/// Unspecified on a call: the tenant's default mode, which the use case
/// applies with the rest of the tenant's voice policy.
fn voice_mode_field(
    value: i32,
    channel: Option<Channel>,
    bad: &mut Violations,
) -> Option<VoiceMode> {
    let voice_mode = match proto::VoiceMode::try_from(value) {
        Ok(proto::VoiceMode::Unspecified) => None,
        Ok(proto::VoiceMode::Confirm) => Some(VoiceMode::Confirm),
        Ok(proto::VoiceMode::Match) => Some(VoiceMode::Match),
        Ok(proto::VoiceMode::Code) => Some(VoiceMode::Code),
        Err(_) => {
            bad.add("voice_mode", format!("unknown value {value}"));
            None
        }
    };
    match channel {
        Some(Channel::Voice) => voice_mode,
        _ => {
            if voice_mode.is_some() {
                bad.add("voice_mode", "applies to CHANNEL_VOICE only");
            }
            None
        }
    }
}

fn extension_field(
    value: &str,
    channel: Option<Channel>,
    to: Option<&Destination>,
    bad: &mut Violations,
) -> Option<Extension> {
    if value.is_empty() {
        return None;
    }
    if channel.is_some_and(|c| c != Channel::Voice) {
        bad.add("extension", "applies to CHANNEL_VOICE only");
        return None;
    }
    let Some(extension) = Extension::parse(value) else {
        bad.add(
            "extension",
            format!(
                "must be 1 to {} digits, with 'w' for a pause, at most {} characters",
                Extension::MAX_DIGITS,
                Extension::MAX_LEN
            ),
        );
        return None;
    };
    if let Some(Destination::Phone(phone)) = to
        && !phone
            .plan()
            .is_some_and(|plan| Extension::dialable_on(plan.line))
    {
        bad.add("extension", "applies to fixed-line (office) numbers only");
        return None;
    }
    Some(extension)
}

fn locale_field(value: &str, bad: &mut Violations) -> Option<Locale> {
    if value.is_empty() {
        return None;
    }
    let locale = Locale::parse(value);
    if locale.is_none() {
        bad.add(
            "locale",
            "must be a BCP 47 language tag such as en or fr-CA",
        );
    }
    locale
}

fn idempotency_key_field(value: &str, bad: &mut Violations) -> Option<IdempotencyKey> {
    if value.is_empty() {
        return None;
    }
    let key = IdempotencyKey::parse(value);
    if key.is_none() {
        bad.add(
            "idempotency_key",
            format!(
                "must be 1 to {} printable ASCII characters",
                IdempotencyKey::MAX_LEN
            ),
        );
    }
    key
}

fn end_user_ip_field(value: &str, bad: &mut Violations) -> Option<IpAddr> {
    if value.is_empty() {
        return None;
    }
    let ip = (value.len() <= MAX_IP_LEN)
        .then(|| value.parse::<IpAddr>().ok())
        .flatten();
    if ip.is_none() {
        bad.add("end_user_ip", "must be an IPv4 or IPv6 address");
    }
    ip
}

fn caller_ref_fields(req: &proto::StartVerificationRequest, bad: &mut Violations) -> CallerRef {
    let reference = if req.reference.is_empty() {
        None
    } else {
        let reference = CallerRef::parse_reference(&req.reference);
        if reference.is_none() {
            bad.add(
                "reference",
                format!(
                    "must be at most {} printable ASCII characters",
                    CallerRef::MAX_REFERENCE_LEN
                ),
            );
        }
        reference
    };
    let tags = CallerRef::parse_tags(req.tags.iter()).unwrap_or_else(|rule| {
        bad.add("tags", rule);
        Default::default()
    });
    CallerRef { reference, tags }
}

pub fn verification_id(field: &str, id: &str) -> Result<VerificationId, Violations> {
    let mut bad = Violations::default();
    let parsed = VerificationId::parse(id);
    if parsed.is_none() {
        bad.add(
            field,
            if id.is_empty() {
                "is required"
            } else {
                "is not a verification id"
            },
        );
    }
    bad.into_result(|| parsed.expect("checked"))
}

pub fn check_request(
    req: &proto::CheckVerificationRequest,
) -> Result<(VerificationId, Code), Violations> {
    let mut bad = Violations::default();
    let id = match verification_id("id", &req.id) {
        Ok(id) => Some(id),
        Err(v) => {
            bad.0.extend(v.0);
            None
        }
    };
    let code = match Code::parse(&req.code) {
        Ok(code) => Some(code),
        Err(e) => {
            bad.add("code", e.to_string());
            None
        }
    };
    bad.into_result(|| (id.expect("checked"), code.expect("checked")))
}

pub fn verification(v: &Verification) -> proto::Verification {
    proto::Verification {
        id: v.id.as_str().to_owned(),
        to: v.to.as_str().to_owned(),
        extension: v
            .extension
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        channel: channel(v.delivery.channel).into(),
        purpose: purpose(v.purpose).into(),
        voice_mode: v
            .delivery
            .voice_mode
            .map_or(proto::VoiceMode::Unspecified, voice_mode)
            .into(),
        status: status(v.status).into(),
        created_at: Some(timestamp(v.created_at)),
        expires_at: Some(timestamp(v.expires_at)),
        check_attempts_remaining: v.checks_remaining,
        send_attempts_remaining: v.sends_remaining,
        send_attempts: v.send_attempts.iter().map(send_attempt).collect(),
        reference: v.caller_ref.reference.clone().unwrap_or_default(),
        tags: v
            .caller_ref
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        fallback: v
            .fallback
            .as_deref()
            .map(|f| fallback_state(f, v.status == Status::Pending)),
    }
}

/// Where the workflow stands; no step is due on a verification that has
/// ended, whatever it last said.
fn fallback_state(f: &Fallback, pending: bool) -> proto::FallbackState {
    proto::FallbackState {
        workflow: Some(proto::Fallback {
            channels: f
                .workflow
                .channels()
                .iter()
                .map(|&c| channel(c).into())
                .collect(),
            step_timeout: prost_types::Duration::try_from(f.workflow.step_timeout()).ok(),
        }),
        step: u32::from(f.step),
        next_step_at: f.next_at.filter(|_| pending).map(timestamp),
    }
}

fn send_attempt(a: &SendAttempt) -> proto::SendAttempt {
    proto::SendAttempt {
        channel: channel(a.channel).into(),
        status: match a.status {
            DeliveryStatus::Accepted => proto::DeliveryStatus::Accepted,
            DeliveryStatus::Failed => proto::DeliveryStatus::Failed,
            DeliveryStatus::Delivered => proto::DeliveryStatus::Delivered,
            DeliveryStatus::Undelivered => proto::DeliveryStatus::Undelivered,
            DeliveryStatus::Sent => proto::DeliveryStatus::Sent,
        }
        .into(),
        provider: a.provider.clone(),
        time: Some(timestamp(a.at)),
        error_reason: a.error_reason.clone().unwrap_or_default(),
        provider_status: a.provider_status.clone().unwrap_or_default(),
    }
}

fn channel(c: Channel) -> proto::Channel {
    match c {
        Channel::Sms => proto::Channel::Sms,
        Channel::Voice => proto::Channel::Voice,
        Channel::Email => proto::Channel::Email,
    }
}

fn purpose(p: Purpose) -> proto::Purpose {
    match p {
        Purpose::Enrollment => proto::Purpose::Enrollment,
        Purpose::PasswordReset => proto::Purpose::PasswordReset,
        Purpose::MethodUpdate => proto::Purpose::MethodUpdate,
    }
}

fn voice_mode(m: VoiceMode) -> proto::VoiceMode {
    match m {
        VoiceMode::Confirm => proto::VoiceMode::Confirm,
        VoiceMode::Match => proto::VoiceMode::Match,
        VoiceMode::Code => proto::VoiceMode::Code,
    }
}

pub fn status(s: Status) -> proto::VerificationStatus {
    match s {
        Status::Pending => proto::VerificationStatus::Pending,
        Status::Approved => proto::VerificationStatus::Approved,
        Status::Canceled => proto::VerificationStatus::Canceled,
        Status::Expired => proto::VerificationStatus::Expired,
        Status::MaxAttemptsReached => proto::VerificationStatus::MaxAttemptsReached,
        Status::Failed => proto::VerificationStatus::Failed,
        Status::Denied => proto::VerificationStatus::Denied,
        Status::Superseded => proto::VerificationStatus::Superseded,
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}
