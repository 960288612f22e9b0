//! `verifyd client ...`: try the service without grpcurl.

use clap::{Args, Subcommand, ValueEnum};

/// `println!` that stops quietly when stdout is closed (`verifyd client
/// get ... | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use tonic::{
    Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::proto::{self, verification_service_client::VerificationServiceClient};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The gRPC endpoint of a running verifyd.
    #[arg(long, env = "VERIFYD_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The caller's API key, sent as `authorization: Bearer`. Best through
    /// the environment, so it stays out of the shell history.
    #[arg(long, env = crate::config::CLIENT_API_KEY_VAR, hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Start a new verification (superseding one still pending for the
    /// destination and purpose).
    Start {
        /// E.164 phone number or email address.
        #[arg(long)]
        to: String,
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
            Err(e) => e.to_string(),
        })
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
    let channel = Channel::from_shared(args.addr)?.connect().await?;
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
            channel,
            purpose,
            locale,
            voice_mode: mode,
            idempotency_key,
            end_user_ip,
        } => {
            let request = proto::StartVerificationRequest {
                to,
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
    out!("id: {}", v.id);
    out!("to: {}", v.to);
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
