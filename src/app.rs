//! Builds the service from configuration and runs its listeners until
//! shutdown.
//!
//! [`Application::build`] binds every listener first (port 0 works, and the
//! bound addresses are readable), so tests and the binary start the same
//! way. Shutdown: health and `/readyz` turn NOT_SERVING, watch streams get
//! the current state and end, in-flight RPCs get the grace period to finish.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::{
    clock::Clock,
    config::Config,
    delivery::{
        ConsoleSender,
        setup::{SetupError, dispatcher, tenant_templates, twilio_webhook_tokens},
    },
    grpc::{self, Api, Authenticator, VerificationServiceServer, listener::HandshakeLimits},
    http, proto,
    ratelimit::RateLimits,
    service::{ServiceSettings, Tenants, Verifier, tenants},
    store::{MemoryStore, RedisStore, Store, StoreBackend, StoreError},
    telemetry::Metrics,
};

/// Requests are a few hundred bytes; refuse anything much larger before
/// decoding it.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

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
    tls: Option<(Arc<rustls::ServerConfig>, HandshakeLimits)>,
    admin_listener: TcpListener,
    webhook_listener: Option<TcpListener>,
    verifier: Arc<Verifier>,
    shutdown: CancellationToken,
}

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

/// How often readiness (the store's reachability) is checked and the gRPC
/// health status kept in step with it.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

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
        // Providers are asked for callbacks only when they can reach us.
        let webhook_listener = match &config.webhooks.public_base_url {
            Some(_) => Some(bind(config.webhooks.addr).await?),
            None => None,
        };

        // The phone number metadata loads on first use, which takes long
        // enough to eat a first caller's deadline: load it now.
        let _ = crate::domain::Destination::parse("+14155550100");
        let clock = overrides.clock.unwrap_or_else(Clock::system);
        let console = overrides.console.unwrap_or_else(ConsoleSender::stdout);
        let metrics = Arc::new(Metrics::new());
        let dispatcher = dispatcher(
            &config.delivery,
            &config.providers,
            config.webhooks.public_base_url.as_ref(),
            &console,
            &clock,
            &metrics,
        )?;
        let tenant_templates = tenant_templates(&config.delivery, &config.tenants)?;
        let quotas = tenants::quotas(&config.tenants, config.limits);
        let policy = config.policy();
        let shutdown = CancellationToken::new();
        let store = match config.store.backend {
            StoreBackend::Memory => {
                Store::Memory(MemoryStore::new(config.store.max_entries, policy.retention))
            }
            StoreBackend::Redis => {
                // Dev mode may leave the index key out: one is derived from
                // the (ephemeral) HMAC key.
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
                    Arc::clone(&metrics),
                )
                .map_err(RunError::Store)?;
                Store::Redis(redis)
            }
        };
        // The store keeps the budgets every replica shares, so the rate
        // limits take from it too.
        let store = Arc::new(store);
        let limits = RateLimits::new(&quotas, clock.clone(), Arc::clone(&store))
            .with_metrics(Arc::clone(&metrics));
        let verifier = Verifier::new(
            store,
            limits,
            dispatcher,
            config.hmac.key_ring(),
            policy,
            ServiceSettings {
                tenants: Tenants::new(
                    &config.tenants,
                    &config.app_name,
                    &config.voice,
                    &tenant_templates,
                ),
                fraud: config.fraud.clone(),
                send_timeout: config.delivery.timeout,
                max_watch_streams_per_tenant: config.server.max_watch_streams_per_tenant,
                metrics,
            },
            clock,
            shutdown.clone(),
        );
        let tls = match &config.server.tls {
            Some(tls) => Some((
                grpc::tls::server_config(tls).map_err(RunError::Tls)?,
                tls.handshake_limits(),
            )),
            None => None,
        };
        Ok(Self {
            config,
            grpc_listener,
            tls,
            admin_listener,
            webhook_listener,
            verifier,
            shutdown,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("bound listener")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener")
    }

    /// The webhook listener's address, when callbacks are configured.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    /// Cancelling this token shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> Result<(), RunError> {
        let Self {
            config,
            grpc_listener,
            tls,
            admin_listener,
            webhook_listener,
            verifier,
            shutdown,
        } = self;

        // The bound addresses, which differ from the configured ones when
        // those name port 0.
        let grpc_addr = grpc_listener.local_addr().map_err(RunError::Listener)?;
        let admin_addr = admin_listener.local_addr().map_err(RunError::Listener)?;
        let webhooks_addr = webhook_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(RunError::Listener)?;
        let (health, health_service) = tonic_health::server::health_reporter();
        // Serving only once the store answers: a replica that starts while
        // Redis is down must not get traffic.
        let ready = verifier.is_ready().await;
        set_health(&health, &verifier, ready).await;
        if !ready {
            tracing::warn!("the store is unreachable: not serving until it answers");
        }
        let readiness = tokio::spawn(track_readiness(
            Arc::clone(&verifier),
            health.clone(),
            ready,
            shutdown.clone(),
        ));
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let auth = Authenticator::new(&config.tenants);
        if auth.is_open() && !config.dev_mode {
            tracing::warn!(
                grpc = %grpc_addr,
                "no [tenants] configured: every caller of this loopback listener acts as tenant 'default'"
            );
        }
        let api = Api::new(Arc::clone(&verifier), auth)
            .into_server()
            .max_decoding_message_size(MAX_REQUEST_BYTES);

        let expiry = tokio::spawn(Arc::clone(&verifier).run_expiry_timer());
        let purge = tokio::spawn({
            let verifier = Arc::clone(&verifier);
            let every = config.store.purge_interval;
            let shutdown = shutdown.clone();
            async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = ticks.tick() => verifier.purge().await,
                    }
                }
            }
        });

        let stop_serving = {
            let shutdown = shutdown.clone();
            let verifier_at_shutdown = Arc::clone(&verifier);
            async move {
                shutdown.cancelled().await;
                tracing::info!("shutting down: no longer serving, draining in-flight requests");
                // The readiness tracker ends first, so it cannot set SERVING
                // after this.
                let _ = readiness.await;
                set_health(&health, &verifier_at_shutdown, false).await;
            }
        };
        let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
        if let Some(age) = config.server.max_connection_age {
            // GOAWAY at that age; streams still open (a Watch, say) get the
            // shutdown grace to end before the connection is closed, and
            // the client reconnects, likely to another pod.
            server = server
                .max_connection_age(age)
                .max_connection_age_grace(config.server.shutdown_grace);
        }
        let router = server
            .add_service(health_service)
            .add_optional_service(config.server.reflection.then_some(reflection_v1))
            .add_optional_service(config.server.reflection.then_some(reflection_v1alpha))
            .add_service(api);
        let grpc = {
            let clock = verifier.clock().clone();
            async move {
                match tls {
                    Some((server_config, limits)) => {
                        let incoming =
                            grpc::listener::tls(grpc_listener, server_config, limits, clock);
                        router
                            .serve_with_incoming_shutdown(incoming, stop_serving)
                            .await
                    }
                    None => {
                        let incoming = grpc::listener::plaintext(grpc_listener, clock);
                        router
                            .serve_with_incoming_shutdown(incoming, stop_serving)
                            .await
                    }
                }
            }
        };
        // Probes and provider webhooks stay up until the gRPC drain ends:
        // Kubernetes keeps reading /readyz (now 503), and a call in progress
        // can still reach its gather route.
        let drained = CancellationToken::new();
        let admin = axum::serve(admin_listener, http::admin::router(Arc::clone(&verifier)))
            .with_graceful_shutdown(drained.clone().cancelled_owned());
        let webhooks = async {
            let (Some(listener), Some(base)) =
                (webhook_listener, config.webhooks.public_base_url.clone())
            else {
                return Ok(());
            };
            let router = http::webhooks::router(
                Arc::clone(&verifier),
                base,
                twilio_webhook_tokens(&config.providers),
            );
            axum::serve(listener, router)
                .with_graceful_shutdown(drained.clone().cancelled_owned())
                .await
        };
        let grpc = async {
            let result = grpc.await;
            drained.cancel();
            result
        };

        tracing::info!(
            grpc = %grpc_addr,
            admin = %admin_addr,
            webhooks = webhooks_addr.map(tracing::field::display),
            "verifyd serving"
        );
        let servers = async {
            let (grpc, admin, webhooks) = tokio::join!(grpc, admin, webhooks);
            grpc?;
            admin.map_err(RunError::Listener)?;
            webhooks.map_err(RunError::Listener)
        };
        let grace = config.server.shutdown_grace;
        let result = tokio::select! {
            result = servers => result,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; dropping the requests still open");
                Ok(())
            }
        };
        shutdown.cancel();
        let _ = tokio::join!(expiry, purge);
        tracing::info!("verifyd stopped");
        result
    }
}

/// Keeps the gRPC health status in step with readiness: NOT_SERVING while
/// the store is unreachable, SERVING again once it is back. `/readyz` asks
/// the same question on each probe; `/livez` never does, so a store outage
/// does not get pods restarted. Ends at shutdown, which owns the status
/// from then on.
async fn track_readiness(
    verifier: Arc<Verifier>,
    health: tonic_health::server::HealthReporter,
    mut serving: bool,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(READINESS_INTERVAL);
    ticks.tick().await;
    loop {
        let ready = tokio::select! {
            () = shutdown.cancelled() => return,
            ready = async {
                ticks.tick().await;
                verifier.is_ready().await
            } => ready,
        };
        if ready == serving {
            continue;
        }
        serving = ready;
        if ready {
            tracing::info!("the store is reachable again: serving");
        } else {
            tracing::warn!("the store is unreachable: not serving");
        }
        set_health(&health, &verifier, ready).await;
    }
}

/// Sets the status of the whole server and of the verification service
/// (and `verifyd_ready`).
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    verifier: &Verifier,
    serving: bool,
) {
    verifier.metrics().set_ready(serving);
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <VerificationServiceServer<Api> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
