//! What runs beside the servers: readiness (the store's reachability,
//! mirrored into gRPC health), the expiry timer and the purge.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

use crate::{
    grpc::{Api, VerificationServiceServer},
    service::Verifier,
};

/// How often readiness (the store's reachability) is checked and the gRPC
/// health status kept in step with it.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// The gRPC health status, kept in step with readiness until shutdown.
#[derive(Debug)]
pub(super) struct Readiness {
    health: HealthReporter,
    tracker: JoinHandle<()>,
}

impl Readiness {
    /// Serving only once the store answers: a replica that starts while
    /// Redis is down must not get traffic. Returns the health service to
    /// serve.
    pub(super) async fn start(
        verifier: &Arc<Verifier>,
        shutdown: &CancellationToken,
    ) -> (Self, HealthServer<impl Health + use<>>) {
        let (health, service) = tonic_health::server::health_reporter();
        let ready = verifier.is_ready().await;
        set_health(&health, verifier, ready).await;
        if !ready {
            tracing::warn!("the store is unreachable: not serving until it answers");
        }
        let tracker = tokio::spawn(track_readiness(
            Arc::clone(verifier),
            health.clone(),
            ready,
            shutdown.clone(),
        ));
        (Self { health, tracker }, service)
    }

    /// Resolves once `shutdown` is cancelled and health says NOT_SERVING:
    /// what the gRPC server waits for before it drains.
    pub(super) async fn stop_serving_at(
        self,
        shutdown: CancellationToken,
        verifier: Arc<Verifier>,
    ) {
        shutdown.cancelled().await;
        tracing::info!("shutting down: no longer serving, draining in-flight requests");
        // The readiness tracker ends first, so it cannot set SERVING after
        // this.
        let _ = self.tracker.await;
        set_health(&self.health, &verifier, false).await;
    }
}

/// Keeps the gRPC health status in step with readiness: NOT_SERVING while
/// the store is unreachable, SERVING again once it is back. `/readyz` asks
/// the same question on each probe; `/livez` never does, so a store outage
/// does not get pods restarted. Ends at shutdown, which owns the status
/// from then on.
async fn track_readiness(
    verifier: Arc<Verifier>,
    health: HealthReporter,
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
async fn set_health(health: &HealthReporter, verifier: &Verifier, serving: bool) {
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

/// The expiry timer and the periodic purge, both ending at shutdown.
#[derive(Debug)]
pub(super) struct Background {
    expiry: JoinHandle<()>,
    purge: JoinHandle<()>,
}

impl Background {
    pub(super) fn spawn(
        verifier: &Arc<Verifier>,
        purge_every: Duration,
        shutdown: &CancellationToken,
    ) -> Self {
        let expiry = tokio::spawn(Arc::clone(verifier).run_expiry_timer());
        let purge = tokio::spawn({
            let verifier = Arc::clone(verifier);
            let shutdown = shutdown.clone();
            async move {
                let mut ticks = tokio::time::interval(purge_every);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = ticks.tick() => verifier.purge().await,
                    }
                }
            }
        });
        Self { expiry, purge }
    }

    /// Waits for both to end (after shutdown).
    pub(super) async fn join(self) {
        let _ = tokio::join!(self.expiry, self.purge);
    }
}
