//! sspr-portal: a reference self-service password reset web app over
//! verifyd. Server-rendered pages (axum and minijinja, one small script for
//! the call page), server-side sessions, and verifyd's gRPC API called with
//! an API key. A demo: accounts live in memory.
//!
//! The caller binds the listener, so tests can serve on port 0:
//!
//! ```no_run
//! # async fn run() -> Result<(), sspr_portal::Error> {
//! let config = sspr_portal::Config::new("127.0.0.1:8000".parse()?, "http://127.0.0.1:50051", None);
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! sspr_portal::serve(config, listener, std::future::pending()).await
//! # }
//! ```

// A function is one idea: past clippy.toml's threshold (80 lines), split it.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod accounts;
pub mod decoy;
pub mod flow;
pub mod limit;
pub mod mask;
pub mod password;
pub mod phone;
pub mod sessions;
pub mod verify;

mod pages;
#[cfg(test)]
mod tests;
mod web;

/// The client generated from verifyd's proto by build.rs.
pub mod proto {
    #![allow(missing_debug_implementations, clippy::all, clippy::too_many_lines)]
    tonic::include_proto!("verifyd.v1");
}

use std::{fmt, future::Future, net::SocketAddr, sync::Arc};

use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use crate::{
    accounts::Accounts,
    decoy::Decoys,
    flow::SessionData,
    limit::PerClient,
    sessions::{IDLE_TIMEOUT, MAX_SESSIONS, Sessions},
    verify::Verifyd,
    web::Templates,
};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the portal runs with.
#[derive(Clone)]
pub struct Config {
    /// Where it listens (the caller binds it; see [`serve`]).
    pub listen: SocketAddr,
    /// verifyd's gRPC address, `http://host:port`.
    pub verifyd: String,
    /// Sent as `authorization: Bearer <key>` on every call, when set.
    pub api_key: Option<String>,
}

impl Config {
    pub fn new(listen: SocketAddr, verifyd: impl Into<String>, api_key: Option<String>) -> Self {
        Config {
            listen,
            verifyd: verifyd.into(),
            api_key,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("verifyd", &self.verifyd)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Event streams open at once, decoys' included: each real one holds a
/// WatchVerification stream on verifyd, whose tenant budget for them is
/// shared by every user of the portal.
const MAX_EVENT_STREAMS: usize = 256;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct App {
    templates: Templates,
    sessions: Arc<Sessions<SessionData>>,
    accounts: Accounts,
    verifyd: Verifyd,
    decoys: Decoys,
    /// A hash of no one's password, checked when the account is unknown.
    dummy_hash: String,
    /// Permits for event streams (`MAX_EVENT_STREAMS`).
    event_streams: Arc<Semaphore>,
    /// POST /register per client address: it tells whether a name is taken.
    register_limit: PerClient,
    /// POST /reset per client address.
    reset_limit: PerClient,
    /// Becomes true when the portal shuts down: event streams end then,
    /// rather than holding the shutdown open.
    shutdown: watch::Receiver<bool>,
}

pub(crate) type AppState = Arc<App>;

impl App {
    async fn new(config: &Config, shutdown: watch::Receiver<bool>) -> Result<App, Error> {
        let dummy_hash = tokio::task::spawn_blocking(|| password::hash(&sessions::random_hex()))
            .await?
            .map_err(|e| format!("argon2: {e}"))?;
        Ok(App {
            templates: Templates::load()?,
            sessions: Arc::new(Sessions::new(IDLE_TIMEOUT, MAX_SESSIONS)),
            accounts: Accounts::default(),
            verifyd: Verifyd::connect_lazy(&config.verifyd, config.api_key.as_deref())?,
            decoys: Decoys::default(),
            dummy_hash,
            event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            register_limit: PerClient::default(),
            reset_limit: PerClient::default(),
            shutdown,
        })
    }
}

/// Serves the portal on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop, stopped) = watch::channel(false);
    let app = Arc::new(App::new(&config, stopped).await?);
    tracing::info!(
        addr = %listener.local_addr()?,
        verifyd = %config.verifyd,
        api_key = config.api_key.is_some(),
        "sspr-portal listening"
    );
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    run(app, listener, shutdown).await
}

/// Serves `app`: `serve`'s second half, which tests call with an `App`
/// they keep a handle on.
async fn run(
    app: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(
        listener,
        pages::router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
