//! `/livez`: the process is alive (never depends on a dependency, so a
//! store outage never gets pods restarted). `/readyz`: ready for traffic,
//! dependencies included, and false from the moment shutdown begins.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::service::Verifier;

pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(verifier)
}

async fn readyz(State(verifier): State<Arc<Verifier>>) -> (StatusCode, &'static str) {
    if verifier.is_ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
