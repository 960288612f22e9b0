//! `verifyd client ...`: try the service without grpcurl; `verifyd admin
//! ...` ([`admin`]): the operator API.

use clap::{Args, Subcommand, ValueEnum};

/// `println!` that stops quietly when stdout is closed (`verifyd client
/// get ... | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub mod admin;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use tonic::{
    Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    config::{CLIENT_ADDR_VAR, CLIENT_API_KEY_VAR, CLIENT_CA_VAR, CLIENT_CERT_VAR, CLIENT_KEY_VAR},
    proto::{self, verification_service_client::VerificationServiceClient},
};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The gRPC endpoint of a running verifyd: http://HOST:PORT, or
    /// https://HOST:PORT for a listener with TLS.
    #[arg(long, env = CLIENT_ADDR_VAR, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The caller's API key, sent as `authorization: Bearer`. Best through
    /// the environment, so it stays out of the shell history.
    #[arg(long, env = CLIENT_API_KEY_VAR, hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: ClientCommand,
}

/// TLS for an `https://` address.
#[derive(Debug, Args)]
struct TlsArgs {
    /// PEM file of the CA(s) that signed the server's certificate; without
    /// it, the system's trusted roots.
    #[arg(long, env = CLIENT_CA_VAR, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// PEM certificate (chain) to present, for a listener that
    /// authenticates callers by client certificate (mutual TLS); with
    /// --key.
    #[arg(long, env = CLIENT_CERT_VAR, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = CLIENT_KEY_VAR, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry, when not the
    /// address's host (e.g. through a port-forward to 127.0.0.1).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
}

impl TlsArgs {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.server_name.is_some()
    }

    /// The endpoint for `addr`: TLS for https://, as these arguments say;
    /// plaintext for http://, where they make no sense and are refused.
    fn endpoint(&self, addr: String) -> Result<Endpoint, Error> {
        let tls = addr.starts_with("https://");
        let endpoint = Channel::from_shared(addr)?;
        if !tls {
            if self.any() {
                return Err(
                    "--ca, --cert, --key and --server-name need an https:// address".into(),
                );
            }
            return Ok(endpoint);
        }
        let mut config = match &self.ca {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--ca")?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(Identity::from_pem(
                read(cert, "--cert")?,
                read(key, "--key")?,
            ));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name);
        }
        Ok(endpoint.tls_config(config)?)
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()).into())
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Start a new verification (superseding one still pending for the
    /// destination and purpose).
    Start {
        /// E.164 phone number or email address.
        #[arg(long)]
        to: String,
        /// An office phone's extension, dialed once a call connects (keys,
        /// `w` for a half-second pause), e.g. ww4711.
        #[arg(long)]
        extension: Option<String>,
        #[arg(long, value_enum)]
        channel: ChannelArg,
        #[arg(long, value_enum, default_value = "password-reset")]
        purpose: PurposeArg,
        /// BCP 47 language tag, e.g. fr-CA.
        #[arg(long)]
        locale: Option<String>,
        #[arg(long, value_enum)]
        voice_mode: Option<VoiceModeArg>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        end_user_ip: Option<String>,
        /// What the verification is tied to, e.g. a reset session's id.
        #[arg(long)]
        reference: Option<String>,
        /// A tag, KEY=VALUE; repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag)]
        tags: Vec<(String, String)>,
        /// Automatic channel fallback: the channels to try in order, from
        /// this start's own, e.g. sms,voice. Unset: the tenant's default.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            conflicts_with = "no_fallback"
        )]
        fallback: Vec<ChannelArg>,
        /// How long each fallback step waits for a check, e.g. 90s.
        #[arg(long, value_parser = humantime::parse_duration, requires = "fallback")]
        step_timeout: Option<std::time::Duration>,
        /// No automatic fallback, whatever the tenant's default.
        #[arg(long)]
        no_fallback: bool,
    },
    /// Send again on a pending verification, by id; the channel may
    /// change.
    Resend {
        #[arg(long)]
        id: String,
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// BCP 47 language tag, e.g. fr-CA.
        #[arg(long)]
        locale: Option<String>,
        #[arg(long, value_enum)]
        voice_mode: Option<VoiceModeArg>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        end_user_ip: Option<String>,
    },
    /// Check a code.
    Check {
        #[arg(long)]
        id: String,
        #[arg(long)]
        code: String,
    },
    /// Show a verification.
    Get {
        #[arg(long)]
        id: String,
    },
    /// Cancel a pending verification.
    Cancel {
        #[arg(long)]
        id: String,
    },
    /// Stream a verification's changes until it finishes.
    Watch {
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChannelArg {
    Sms,
    Voice,
    Email,
}

impl From<ChannelArg> for proto::Channel {
    fn from(channel: ChannelArg) -> Self {
        match channel {
            ChannelArg::Sms => Self::Sms,
            ChannelArg::Voice => Self::Voice,
            ChannelArg::Email => Self::Email,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PurposeArg {
    Enrollment,
    PasswordReset,
    MethodUpdate,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VoiceModeArg {
    Confirm,
    Match,
    Code,
}

/// A `--tag`: `KEY=VALUE`, split at the first `=`.
fn tag(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "a tag is KEY=VALUE".to_owned())
}

/// The `--tag`s as the request's map; a key given twice is a mistake to
/// say, not a value to drop.
fn unique_tags(tags: Vec<(String, String)>) -> Result<HashMap<String, String>, Error> {
    let mut map = HashMap::with_capacity(tags.len());
    for (key, value) in tags {
        if map.insert(key.clone(), value).is_some() {
            return Err(format!("--tag {key} is given twice").into());
        }
    }
    Ok(map)
}

/// Unspecified: the server's default mode.
fn voice_mode(mode: Option<VoiceModeArg>) -> proto::VoiceMode {
    mode.map_or(proto::VoiceMode::Unspecified, |m| match m {
        VoiceModeArg::Confirm => proto::VoiceMode::Confirm,
        VoiceModeArg::Match => proto::VoiceMode::Match,
        VoiceModeArg::Code => proto::VoiceMode::Code,
    })
}

/// Runs one client command; errors come back as one readable message,
/// field violations included.
pub async fn run(args: ClientArgs) -> Result<(), String> {
    call(args)
        .await
        .map_err(|e| match e.downcast::<tonic::Status>() {
            Ok(status) => describe(&status),
            Err(e) => with_causes(e.as_ref()),
        })
}

/// An error and its causes: tonic's own text for a failed connection is
/// only "transport error"; the certificate problem is in its sources.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

fn describe(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(retry) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
        text.push_str(&format!("\n  retry in {}s", retry.as_secs()));
    }
    text
}

type Error = Box<dyn std::error::Error>;

/// Sends the API key, when there is one, as `authorization: Bearer`.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(None)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

type Client = VerificationServiceClient<InterceptedService<Channel, Bearer>>;

async fn call(args: ClientArgs) -> Result<(), Error> {
    let channel = args.tls.endpoint(args.addr)?.connect().await?;
    let bearer = args
        .api_key
        .map(|key| format!("Bearer {key}").parse())
        .transpose()
        .map_err(|_| "the API key must be printable ASCII")?;
    let mut client = VerificationServiceClient::with_interceptor(channel, Bearer(bearer));
    match args.command {
        command @ (ClientCommand::Start { .. } | ClientCommand::Resend { .. }) => {
            send(&mut client, command).await
        }
        command => look(&mut client, command).await,
    }
}

/// Start and Resend: a send, and its answer.
async fn send(client: &mut Client, command: ClientCommand) -> Result<(), Error> {
    let response = match command {
        ClientCommand::Start {
            to,
            extension,
            channel,
            purpose,
            locale,
            voice_mode: mode,
            idempotency_key,
            end_user_ip,
            reference,
            tags,
            fallback,
            step_timeout,
            no_fallback,
        } => {
            let fallback = (no_fallback || !fallback.is_empty()).then(|| proto::Fallback {
                channels: fallback
                    .into_iter()
                    .map(|c| proto::Channel::from(c).into())
                    .collect(),
                step_timeout: step_timeout.and_then(|d| prost_types::Duration::try_from(d).ok()),
            });
            let request = proto::StartVerificationRequest {
                to,
                extension: extension.unwrap_or_default(),
                channel: proto::Channel::from(channel).into(),
                locale: locale.unwrap_or_default(),
                purpose: match purpose {
                    PurposeArg::Enrollment => proto::Purpose::Enrollment,
                    PurposeArg::PasswordReset => proto::Purpose::PasswordReset,
                    PurposeArg::MethodUpdate => proto::Purpose::MethodUpdate,
                }
                .into(),
                voice_mode: voice_mode(mode).into(),
                idempotency_key: idempotency_key.unwrap_or_default(),
                end_user_ip: end_user_ip.unwrap_or_default(),
                reference: reference.unwrap_or_default(),
                tags: unique_tags(tags)?,
                fallback,
            };
            let response = client.start_verification(request).await?.into_inner();
            (response.verification, response.match_digits)
        }
        ClientCommand::Resend {
            id,
            channel,
            locale,
            voice_mode: mode,
            idempotency_key,
            end_user_ip,
        } => {
            let request = proto::ResendVerificationRequest {
                id,
                channel: proto::Channel::from(channel).into(),
                locale: locale.unwrap_or_default(),
                voice_mode: voice_mode(mode).into(),
                idempotency_key: idempotency_key.unwrap_or_default(),
                end_user_ip: end_user_ip.unwrap_or_default(),
            };
            let response = client.resend_verification(request).await?.into_inner();
            (response.verification, response.match_digits)
        }
        _ => unreachable!("call() passes only Start and Resend"),
    };
    print_sent(response.0.as_ref(), &response.1);
    Ok(())
}

/// Check, Get, Cancel and Watch: what they answer about a verification.
async fn look(client: &mut Client, command: ClientCommand) -> Result<(), Error> {
    match command {
        ClientCommand::Check { id, code } => {
            let response = client
                .check_verification(proto::CheckVerificationRequest { id, code })
                .await?
                .into_inner();
            out!("approved: {}", response.approved);
            print(response.verification.as_ref());
        }
        ClientCommand::Get { id } => {
            let response = client
                .get_verification(proto::GetVerificationRequest { id })
                .await?
                .into_inner();
            print(response.verification.as_ref());
        }
        ClientCommand::Cancel { id } => {
            let response = client
                .cancel_verification(proto::CancelVerificationRequest { id })
                .await?
                .into_inner();
            print(response.verification.as_ref());
        }
        ClientCommand::Watch { id } => {
            let mut stream = client
                .watch_verification(proto::WatchVerificationRequest { id })
                .await?
                .into_inner();
            while let Some(update) = stream.message().await? {
                print(update.verification.as_ref());
                out!();
            }
        }
        ClientCommand::Start { .. } | ClientCommand::Resend { .. } => {
            unreachable!("call() passes sends to send()")
        }
    }
    Ok(())
}

/// A start's or a resend's answer: the verification, and the digits a
/// number-matching call asks for.
fn print_sent(v: Option<&proto::Verification>, match_digits: &str) {
    print(v);
    if !match_digits.is_empty() {
        out!("match_digits: {match_digits}");
    }
}

fn print(v: Option<&proto::Verification>) {
    let Some(v) = v else { return };
    let name = |value: i32, f: fn(i32) -> Option<&'static str>| f(value).unwrap_or("UNKNOWN");
    // An operator's listing carries no id.
    if !v.id.is_empty() {
        out!("id: {}", v.id);
    }
    out!("to: {}", v.to);
    if !v.extension.is_empty() {
        out!("extension: {}", v.extension);
    }
    out!(
        "status: {}",
        name(v.status, |s| proto::VerificationStatus::try_from(s)
            .ok()
            .map(|s| s.as_str_name()))
    );
    out!(
        "channel: {}",
        name(v.channel, |c| proto::Channel::try_from(c)
            .ok()
            .map(|c| c.as_str_name()))
    );
    out!(
        "purpose: {}",
        name(v.purpose, |p| proto::Purpose::try_from(p)
            .ok()
            .map(|p| p.as_str_name()))
    );
    if let Some(expires_at) = &v.expires_at {
        out!("expires_at: {expires_at}");
    }
    if !v.reference.is_empty() {
        out!("reference: {}", v.reference);
    }
    let mut tags: Vec<_> = v.tags.iter().collect();
    tags.sort();
    for (key, value) in tags {
        out!("tag: {key}={value}");
    }
    if let Some(fallback) = &v.fallback {
        let channels: Vec<&str> = fallback
            .workflow
            .iter()
            .flat_map(|w| &w.channels)
            .map(|&c| {
                name(c, |c| {
                    proto::Channel::try_from(c).ok().map(|c| c.as_str_name())
                })
            })
            .collect();
        out!("fallback: {} (step {})", channels.join(","), fallback.step);
        if let Some(at) = &fallback.next_step_at {
            out!("fallback_next_step_at: {at}");
        }
    }
    out!("check_attempts_remaining: {}", v.check_attempts_remaining);
    out!("send_attempts_remaining: {}", v.send_attempts_remaining);
    for a in &v.send_attempts {
        out!(
            "send_attempt: {} {} via {}{}",
            name(a.channel, |c| proto::Channel::try_from(c)
                .ok()
                .map(|c| c.as_str_name())),
            name(a.status, |s| proto::DeliveryStatus::try_from(s)
                .ok()
                .map(|s| s.as_str_name())),
            a.provider,
            if a.error_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.error_reason)
            },
        );
    }
}
