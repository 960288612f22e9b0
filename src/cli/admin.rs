//! `verifyd admin ...`: the operator API (AdminService, `[admin_api]`).

use clap::{Args, Subcommand, ValueEnum};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use super::{Bearer, Error, TlsArgs, describe, print, with_causes};
use crate::{
    config::{ADMIN_ADDR_VAR, ADMIN_TOKEN_VAR},
    proto::{self, admin_service_client::AdminServiceClient},
};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The operator API's endpoint (`admin_api.addr`): https://HOST:PORT,
    /// or http://HOST:PORT for a dev-mode server without TLS.
    #[arg(long, env = ADMIN_ADDR_VAR)]
    addr: String,
    /// An operator token (its digest is in `admin_api.token_sha256`), sent
    /// as `authorization: Bearer`. Best through the environment, so it
    /// stays out of the shell history.
    #[arg(long, env = ADMIN_TOKEN_VAR, hide_env_values = true)]
    token: String,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Lift a block before it runs out: a destination's after a fraud
    /// report, or its number prefix's after SMS pumping tripped it (the
    /// prefix's budgets start full again).
    LiftBlock {
        /// The tenant whose block it is.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The E.164 number or email address; for --scope prefix, a
        /// number in the prefix.
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value = "destination")]
        scope: ScopeArg,
    },
    /// Keep a tenant's safe-list: numbers and prefixes exempt from the
    /// prefix and country budgets and from prefix blocks.
    SafeList {
        #[command(subcommand)]
        action: SafeListAction,
    },
    /// A destination's recent verifications, for a helpdesk: masked, with
    /// their send attempts, newest first.
    Verifications {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The E.164 number or email address.
        #[arg(long)]
        to: String,
        /// At most this many (1 to 50).
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum SafeListAction {
    /// Safe-list a number or a prefix.
    Add(SafeListArgs),
    /// Take a number or a prefix off the safe-list.
    Remove(SafeListArgs),
}

#[derive(Debug, Args)]
struct SafeListArgs {
    #[arg(long, default_value = "default")]
    tenant: String,
    /// An E.164 phone number.
    #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
    number: Option<String>,
    /// A number prefix: + and 5 to 14 digits.
    #[arg(long)]
    prefix: Option<String>,
}

impl SafeListArgs {
    fn entry(self) -> (String, proto::SafeListEntry) {
        use proto::safe_list_entry::Entry;
        let entry = match (self.number, self.prefix) {
            (Some(number), _) => Entry::Number(number),
            (None, prefix) => Entry::Prefix(prefix.unwrap_or_default()),
        };
        (self.tenant, proto::SafeListEntry { entry: Some(entry) })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScopeArg {
    Destination,
    Prefix,
}

/// Runs one admin command; the error says what went wrong, with its causes.
///
/// # Errors
/// A connection that fails, or the server's refusal.
pub async fn run(args: AdminArgs) -> Result<(), String> {
    call(args)
        .await
        .map_err(|e| match e.downcast::<tonic::Status>() {
            Ok(status) => describe(&status),
            Err(e) => with_causes(e.as_ref()),
        })
}

async fn call(args: AdminArgs) -> Result<(), Error> {
    refuse_plaintext_off_host(&args.addr)?;
    let channel = args.tls.endpoint(args.addr)?.connect().await?;
    let bearer = format!("Bearer {}", args.token)
        .parse()
        .map_err(|_| "the operator token must be printable ASCII")?;
    let mut client = AdminServiceClient::with_interceptor(channel, Bearer(Some(bearer)));
    match args.command {
        AdminCommand::LiftBlock { tenant, to, scope } => {
            let request = proto::LiftBlockRequest {
                tenant,
                destination: to,
                scope: match scope {
                    ScopeArg::Destination => proto::BlockScope::Destination,
                    ScopeArg::Prefix => proto::BlockScope::Prefix,
                }
                .into(),
            };
            let lifted = client.lift_block(request).await?.into_inner().lifted;
            out!(
                "{}",
                if lifted {
                    "lifted: the block was in force and is lifted"
                } else {
                    "no block was in force"
                }
            );
        }
        AdminCommand::SafeList { action } => safe_list(&mut client, action).await?,
        AdminCommand::Verifications { tenant, to, limit } => {
            verifications(&mut client, tenant, to, limit).await?;
        }
    }
    Ok(())
}

type Client = AdminServiceClient<InterceptedService<Channel, Bearer>>;

async fn safe_list(client: &mut Client, action: SafeListAction) -> Result<(), Error> {
    let said = match action {
        SafeListAction::Add(args) => {
            let (tenant, entry) = args.entry();
            let request = proto::AddSafeListEntryRequest {
                tenant,
                entry: Some(entry),
            };
            let added = client
                .add_safe_list_entry(request)
                .await?
                .into_inner()
                .added;
            if added {
                "added"
            } else {
                "already safe-listed"
            }
        }
        SafeListAction::Remove(args) => {
            let (tenant, entry) = args.entry();
            let request = proto::RemoveSafeListEntryRequest {
                tenant,
                entry: Some(entry),
            };
            let removed = client
                .remove_safe_list_entry(request)
                .await?
                .into_inner()
                .removed;
            if removed {
                "removed"
            } else {
                "was not safe-listed"
            }
        }
    };
    out!("{said}");
    Ok(())
}

async fn verifications(
    client: &mut Client,
    tenant: String,
    to: String,
    limit: u32,
) -> Result<(), Error> {
    let request = proto::ListDestinationVerificationsRequest {
        tenant,
        destination: to,
        limit,
    };
    let found = client
        .list_destination_verifications(request)
        .await?
        .into_inner()
        .verifications;
    out!("verifications: {}", found.len());
    for v in &found {
        out!("---");
        print(Some(v));
    }
    Ok(())
}

/// The token goes in clear over http://: only to this machine (a dev-mode
/// server, a port-forward).
fn refuse_plaintext_off_host(addr: &str) -> Result<(), Error> {
    let Some(rest) = addr.strip_prefix("http://") else {
        return Ok(());
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err("the operator token must not cross the network in clear: use https:// (http:// only to a loopback address)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_in_clear_only_to_a_loopback_address() {
        for ok in [
            "https://verifyd.example:9443",
            "http://127.0.0.1:9443",
            "http://localhost:9443",
            "http://[::1]:9443",
        ] {
            assert!(refuse_plaintext_off_host(ok).is_ok(), "{ok}");
        }
        for refused in ["http://10.0.0.7:9443", "http://verifyd.example:9443"] {
            assert!(refuse_plaintext_off_host(refused).is_err(), "{refused}");
        }
    }
}
