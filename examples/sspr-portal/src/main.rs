//! The portal's command line: where to listen, where verifyd is. The API
//! key comes from the environment only (`SSPR_VERIFYD_API_KEY`): a flag
//! would show in `ps`.

use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A reference self-service password reset portal over verifyd (a demo:
/// accounts live in memory and vanish when it stops).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SSPR_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// verifyd's gRPC address (plain http://; see README.md).
    #[arg(long, env = "SSPR_VERIFYD", default_value = "http://127.0.0.1:50051")]
    verifyd: String,
}

#[tokio::main]
async fn main() -> Result<(), sspr_portal::Error> {
    // Logs go to stderr; RUST_LOG filters them (default: info).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let api_key = std::env::var("SSPR_VERIFYD_API_KEY")
        .ok()
        .filter(|key| !key.is_empty());
    let config = sspr_portal::Config::new(args.listen, args.verifyd, api_key);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    sspr_portal::serve(config, listener, shutdown_signal()).await
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
