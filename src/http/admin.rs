//! `/livez`: the process is alive (never depends on a dependency, so a
//! store outage never gets pods restarted). `/readyz`: ready for traffic,
//! dependencies included, and false from the moment shutdown begins.
//! `/metrics`: Prometheus metrics (see `telemetry::metrics`).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::service::Verifier;

pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(verifier)
}

async fn metrics(State(verifier): State<Arc<Verifier>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        verifier.metrics().render(),
    )
}

async fn readyz(State(verifier): State<Arc<Verifier>>) -> (StatusCode, &'static str) {
    if verifier.is_ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
