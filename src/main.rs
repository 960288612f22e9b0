use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use verifyd::{app::Application, cli, config::Config, domain::Channel, telemetry};

/// Issues, delivers and checks one-time verification codes.
#[derive(Debug, Parser)]
#[command(name = "verifyd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service. With no configuration at all, runs in dev mode.
    Serve {
        /// A TOML config file (also VERIFYD_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Call a running verifyd.
    Client(Box<cli::ClientArgs>),
    /// Call a running verifyd's operator API (`[admin_api]`).
    Admin(Box<cli::admin::AdminArgs>),
    /// Send one test message (no code) through a channel's providers, to
    /// check credentials and routing.
    SendTest {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_parser = ["sms", "voice", "email"])]
        channel: String,
        /// E.164 phone number or email address.
        #[arg(long)]
        to: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => serve(config).await,
        Command::SendTest {
            config,
            channel,
            to,
        } => send_test(config, &channel, &to).await,
        Command::Client(args) => exit_with(cli::run(*args).await),
        Command::Admin(args) => exit_with(cli::admin::run(*args).await),
    }
}

fn exit_with(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(path.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("verifyd: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init(&config.log, &config.tracing);
    if config.dev_mode {
        tracing::warn!(
            "DEV MODE (no configuration found, or dev_mode set). Listening on loopback only, \
             console senders printing codes to stdout, calls ringing a simulated phone on the \
             webhook listener's /dev/phone page, an ephemeral HMAC key (codes die with the \
             process), and every caller accepted as tenant 'default' unless [tenants] are set. \
             Never run this in production."
        );
    } else if config
        .delivery
        .voice
        .iter()
        .any(|p| p == verifyd::delivery::config::CONSOLE_PROVIDER)
    {
        tracing::warn!(
            "delivery.voice lists console: calls are only printed to stdout, and nobody can \
             answer them. The simulated phone runs in dev mode only."
        );
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped with an error");
            ExitCode::FAILURE
        }
    }
}

async fn send_test(path: Option<PathBuf>, channel: &str, to: &str) -> ExitCode {
    let config = match Config::load(path.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("verifyd: {e}");
            return ExitCode::from(2);
        }
    };
    let channel = match channel {
        "sms" => Channel::Sms,
        "voice" => Channel::Voice,
        _ => Channel::Email,
    };
    match verifyd::send_test::run(&config, channel, to).await {
        Ok(lines) => {
            let mut stdout = std::io::stdout().lock();
            for line in lines {
                // A closed stdout (piped into `head`) is not an error here.
                let _ = writeln!(stdout, "{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("send-test failed:\n{e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
