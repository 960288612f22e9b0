//! Builds the service from configuration and runs its listeners until
//! shutdown.
//!
//! [`Application::build`] binds every listener first (port 0 works, and the
//! bound addresses are readable), so tests and the binary start the same
//! way. Shutdown: health and `/readyz` turn NOT_SERVING, watch streams get
//! the current state and end, in-flight RPCs get the grace period to finish.

mod background;
pub mod delivery;
mod grpc_server;
mod http_server;

use std::{io, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use self::{
    background::{Background, Readiness},
    delivery::{BuiltIn, SetupError, dispatcher, tenant_templates},
};
use crate::{
    clock::Clock,
    config::Config,
    delivery::{ConsoleSender, config::CONSOLE_PROVIDER, dev_phone::DevPhone, web},
    domain::Policy,
    grpc::{self, listener::HandshakeLimits},
    ratelimit::RateLimits,
    service::{Ports, ServerDefaults, ServiceSettings, Tenants, Verifier, tenants},
    store::{MemoryStore, RedisStore, Store, StoreBackend, StoreError},
    telemetry::Metrics,
};

/// What tests (or an embedding program) may substitute.
#[derive(Debug, Default)]
pub struct Overrides {
    pub clock: Option<Clock>,
    /// Where the console sender writes, instead of stdout.
    pub console: Option<ConsoleSender>,
}

#[derive(Debug)]
pub struct Application {
    config: Config,
    grpc_listener: TcpListener,
    /// TLS for the gRPC listener, when configured.
    tls: Option<Tls>,
    admin_listener: TcpListener,
    /// The webhook listener and the URL it is reached at.
    webhooks: Option<(TcpListener, Url)>,
    /// The operator API's listener and its TLS, when `[admin_api]` is on.
    admin_api: Option<(TcpListener, Option<Tls>)>,
    /// Dev mode's simulated phone, whose page the webhook listener serves.
    phone: Option<DevPhone>,
    verifier: Arc<Verifier>,
    shutdown: CancellationToken,
}

/// A gRPC listener's TLS: the server configuration and its handshake limits.
type Tls = (Arc<rustls::ServerConfig>, HandshakeLimits);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("listener failed: {0}")]
    Listener(io::Error),
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Delivery(#[from] SetupError),
    #[error("store: {0}")]
    Store(StoreError),
    #[error("gRPC TLS: {0}")]
    Tls(String),
}

/// Labels the Redis index key dev mode derives from its HMAC key.
const DEV_INDEX_KEY_LABEL: &str = "verifyd.dev-redis-index.v1";

impl Application {
    pub async fn build(config: Config) -> Result<Self, RunError> {
        Self::build_with(config, Overrides::default()).await
    }

    pub async fn build_with(config: Config, overrides: Overrides) -> Result<Self, RunError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })
        };
        let grpc_listener = bind(config.server.grpc_addr).await?;
        let admin_listener = bind(config.server.admin_addr).await?;
        // Providers are asked for callbacks only when they can reach us;
        // dev mode's simulated phone always can, on loopback.
        let webhooks = match (&config.webhooks.public_base_url, config.dev_mode) {
            (Some(base), _) => Some((bind(config.webhooks.addr).await?, base.clone())),
            (None, true) => {
                let listener = bind(config.webhooks.addr).await?;
                let addr = listener.local_addr().map_err(RunError::Listener)?;
                let base = Url::parse(&format!("http://{addr}/")).expect("an address makes a URL");
                Some((listener, base))
            }
            (None, false) => None,
        };

        // The phone number metadata loads on first use, which takes long
        // enough to eat a first caller's deadline: load it now.
        let _ = crate::domain::Destination::parse("+14155550100");
        let shutdown = CancellationToken::new();
        let clock = overrides.clock.unwrap_or_else(Clock::system);
        let console = overrides.console.unwrap_or_else(ConsoleSender::stdout);
        let built_in = BuiltIn {
            phone: dev_phone(
                &config,
                webhooks.as_ref().map(|(_, base)| base),
                &console,
                &clock,
            )?,
            console,
        };
        let verifier = assemble(&config, &built_in, clock, &shutdown)?;
        let tls_of = |tls: Option<&grpc::tls::TlsConfig>| -> Result<Option<Tls>, RunError> {
            tls.map(|tls| {
                Ok((
                    grpc::tls::server_config(tls).map_err(RunError::Tls)?,
                    tls.handshake_limits(),
                ))
            })
            .transpose()
        };
        let tls = tls_of(config.server.tls.as_ref())?;
        let admin_api = match config.admin_api.addr {
            Some(addr) => Some((bind(addr).await?, tls_of(config.admin_api.tls.as_ref())?)),
            None => None,
        };
        Ok(Self {
            config,
            grpc_listener,
            tls,
            admin_listener,
            webhooks,
            admin_api,
            phone: built_in.phone,
            verifier,
            shutdown,
        })
    }

    /// Dev mode's simulated phone, when it takes the calls.
    pub fn dev_phone(&self) -> Option<&DevPhone> {
        self.phone.as_ref()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("bound listener")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener")
    }

    /// The operator API's address, when `[admin_api]` is on.
    pub fn admin_api_addr(&self) -> Option<SocketAddr> {
        self.admin_api
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("bound listener"))
    }

    /// The webhook listener's address, when callbacks are configured.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhooks
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("bound listener"))
    }

    /// Cancelling this token shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves gRPC, the admin endpoints and the webhooks, with the
    /// background tasks, until shutdown: then health turns NOT_SERVING, the
    /// gRPC server drains (for at most the grace period), and the HTTP
    /// listeners close after it.
    pub async fn run_until_stopped(self) -> Result<(), RunError> {
        let Self {
            config,
            grpc_listener,
            tls,
            admin_listener,
            webhooks,
            admin_api,
            phone,
            verifier,
            shutdown,
        } = self;
        // The bound addresses, which differ from the configured ones when
        // those name port 0.
        let grpc_addr = grpc_listener.local_addr().map_err(RunError::Listener)?;
        let admin_addr = admin_listener.local_addr().map_err(RunError::Listener)?;
        let webhooks_addr = webhooks
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()
            .map_err(RunError::Listener)?;
        let admin_api_addr = admin_api
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()
            .map_err(RunError::Listener)?;

        let (readiness, health_service) = Readiness::start(&verifier, &shutdown).await;
        let background = Background::spawn(&verifier, config.store.purge_interval, &shutdown);
        let grpc = grpc_server::serve(
            &config,
            grpc_listener,
            tls,
            &verifier,
            health_service,
            readiness.stop_serving_at(shutdown.clone(), Arc::clone(&verifier)),
        )?;
        // Probes and provider webhooks stay up until the gRPC drain ends:
        // Kubernetes keeps reading /readyz (now 503), and a call in progress
        // can still reach its gather route.
        let drained = CancellationToken::new();
        // The operator API has nothing to drain: it stops with the rest.
        let admin_api = admin_api.map(|(listener, tls)| {
            let stop = shutdown.clone();
            grpc_server::serve_admin(&config, listener, tls, &verifier, async move {
                stop.cancelled().await;
            })
        });
        let http = http_server::serve(
            &config,
            admin_listener,
            webhooks.map(|(listener, base)| http_server::Webhooks {
                listener,
                base,
                phone: phone.clone(),
            }),
            &verifier,
            drained.clone(),
        );
        tracing::info!(
            grpc = %grpc_addr,
            admin = %admin_addr,
            webhooks = webhooks_addr.map(tracing::field::display),
            admin_api = admin_api_addr.map(tracing::field::display),
            dev_phone = phone.as_ref().map(|p| tracing::field::display(p.page())),
            "verifyd serving"
        );
        let servers = all_served(grpc, http, admin_api, drained);
        let grace = config.server.shutdown_grace;
        let result = tokio::select! {
            result = servers => result,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; dropping the requests still open");
                Ok(())
            }
        };
        shutdown.cancel();
        background.join().await;
        tracing::info!("verifyd stopped");
        result
    }
}

/// Runs the servers to their end: the HTTP listeners are told once the
/// gRPC drain is over.
async fn all_served(
    grpc: impl Future<Output = Result<(), tonic::transport::Error>>,
    http: impl Future<Output = io::Result<()>>,
    admin_api: Option<impl Future<Output = Result<(), tonic::transport::Error>>>,
    drained: CancellationToken,
) -> Result<(), RunError> {
    let grpc = async {
        let result = grpc.await;
        drained.cancel();
        result
    };
    let admin_api = async {
        match admin_api {
            Some(serving) => serving.await,
            None => Ok(()),
        }
    };
    let (grpc, http, admin_api) = tokio::join!(grpc, http, admin_api);
    grpc?;
    admin_api?;
    http.map_err(RunError::Listener)
}

/// Dev mode's simulated phone, when the voice route names the console and
/// the webhook listener is reached on loopback (`base`): its page shows
/// codes, so it never runs behind a public URL, where a proxy that
/// rewrites the Host header would show it to anyone. Outside dev mode the
/// console only prints a call.
fn dev_phone(
    config: &Config,
    base: Option<&Url>,
    console: &ConsoleSender,
    clock: &Clock,
) -> Result<Option<DevPhone>, RunError> {
    let takes_calls = config.delivery.voice.iter().any(|p| p == CONSOLE_PROVIDER);
    let on_loopback = |base: &&Url| match base.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    let (true, true, Some(base)) = (config.dev_mode, takes_calls, base.filter(on_loopback)) else {
        return Ok(None);
    };
    let http = web::http_client().map_err(|problem| {
        RunError::Delivery(SetupError::Provider {
            name: DevPhone::PROVIDER.to_owned(),
            problem,
        })
    })?;
    Ok(Some(DevPhone::new(
        base.clone(),
        http,
        console.clone(),
        clock.clone(),
    )))
}

/// The service and what it works through, from the configuration.
fn assemble(
    config: &Config,
    built_in: &BuiltIn,
    clock: Clock,
    shutdown: &CancellationToken,
) -> Result<Arc<Verifier>, RunError> {
    let metrics = Arc::new(Metrics::new());
    let dispatcher = dispatcher(
        &config.delivery,
        &config.providers,
        config
            .lookup
            .in_use(config.tenants.values().map(|t| &t.lookup))
            .then_some(&config.lookup),
        config.webhooks.public_base_url.as_ref(),
        built_in,
        &clock,
        &metrics,
    )?;
    let tenant_templates = tenant_templates(&config.delivery, &config.tenants)?;
    let policy = config.policy();
    // The store keeps the budgets every replica shares, so the rate limits
    // take from it too.
    let store = Arc::new(open_store(config, &policy, shutdown, &metrics)?);
    let quotas = tenants::quotas(&config.tenants, config.limits);
    let limits = RateLimits::new(&quotas, clock.clone(), Arc::clone(&store))
        .with_metrics(Arc::clone(&metrics));
    Ok(Verifier::new(
        Ports {
            store,
            limits,
            dispatcher,
        },
        config.hmac.key_ring(),
        ServiceSettings {
            tenants: Tenants::new(
                &config.tenants,
                &tenant_templates,
                ServerDefaults {
                    app_name: &config.app_name,
                    voice: &config.voice,
                    policy: &policy,
                    code: &config.code,
                    lookup: &config.lookup,
                    fallback: &config.fallback,
                },
            ),
            fraud: config.fraud.clone(),
            send_timeout: config.delivery.timeout,
            max_watch_streams_per_tenant: config.server.max_watch_streams_per_tenant,
            max_sends_in_flight: config.delivery.max_sends_in_flight,
            metrics,
        },
        clock,
        shutdown.clone(),
    ))
}

/// The configured store: in memory, or Redis (connected lazily, so a
/// replica starts while Redis is down and serves once it answers).
fn open_store(
    config: &Config,
    policy: &Policy,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Result<Store, RunError> {
    Ok(match config.store.backend {
        // Each tenant gets its share, so none can fill the store for all.
        StoreBackend::Memory => Store::Memory(
            MemoryStore::new(config.store.max_entries, policy.retention)
                .shared_by(config.tenants.len()),
        ),
        StoreBackend::Redis => {
            // Dev mode may leave the index key out: one is derived from the
            // (ephemeral) HMAC key.
            let index_key = match &config.store.redis.index_key {
                Some(key) => key.expose().as_bytes().to_vec(),
                None => config
                    .hmac
                    .key_ring()
                    .active()
                    .derive(DEV_INDEX_KEY_LABEL)
                    .to_vec(),
            };
            let redis = RedisStore::open(
                &config.store.redis,
                &index_key,
                policy.retention,
                shutdown.clone(),
                Arc::clone(metrics),
            )
            .map_err(RunError::Store)?;
            Store::Redis(redis)
        }
    })
}
