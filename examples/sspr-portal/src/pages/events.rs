//! GET /verify/events: the call page's live status, as server-sent events
//! fed by WatchVerification. Each change is `event: status` with a status
//! word (`pending`, `approved`, `denied`, …); the stream ends after a final
//! one. The browser never learns the verification id: this route finds it
//! in the session, like every other.

use std::{convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::State,
    http::StatusCode,
    response::{
        IntoResponse as _, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use tokio::{sync::mpsc, sync::watch, time::Instant};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    AppState,
    flow::{Target, VerificationId},
    proto::VerificationStatus,
    verify::{Verifyd, status_word},
    web::Session,
};

type Sender = mpsc::Sender<Result<Event, Infallible>>;

/// How long the browser waits before reconnecting a dropped stream.
const RECONNECT: Duration = Duration::from_secs(5);

enum Watched {
    Real(VerificationId),
    /// A decoy: pending until it expires.
    Decoy(Instant),
}

pub async fn stream(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let watched = session
        .with(|d| {
            let pending = d.pending.as_ref().filter(|p| p.ended.is_none())?;
            Some(match &pending.target {
                Target::Real(id) => Watched::Real(id.clone()),
                Target::Decoy(shadow) => Watched::Decoy(shadow.expires_at().into()),
            })
        })
        .flatten();
    let Some(watched) = watched else {
        // 204 tells EventSource to stop reconnecting.
        return StatusCode::NO_CONTENT.into_response();
    };
    let (tx, rx) = mpsc::channel(4);
    let shutdown = app.shutdown.clone();
    match watched {
        Watched::Real(id) => tokio::spawn(relay(app.verifyd.clone(), id, tx, shutdown)),
        Watched::Decoy(expires) => tokio::spawn(decoy(expires, tx, shutdown)),
    };
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn status_event(word: &str) -> Result<Event, Infallible> {
    Ok(Event::default().event("status").data(word).retry(RECONNECT))
}

/// Relays WatchVerification until a final status, the page going away, or
/// the portal shutting down (dropping `tx` ends the response).
async fn relay(
    verifyd: Verifyd,
    id: VerificationId,
    tx: Sender,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut updates = match verifyd.watch(&id).await {
        Ok(updates) => updates,
        Err(status) => {
            tracing::warn!(code = ?status.code(), "could not watch the verification");
            return;
        }
    };
    loop {
        let update = tokio::select! {
            update = updates.message() => update,
            () = tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        let status = match update {
            Ok(Some(update)) => update.verification.map(|v| v.status()).unwrap_or_default(),
            Ok(None) => return,
            Err(status) => {
                tracing::warn!(code = ?status.code(), "the verification's watch ended");
                return;
            }
        };
        if let Some(word) = status_word(status)
            && tx.send(status_event(word)).await.is_err()
        {
            return;
        }
        if !matches!(
            status,
            VerificationStatus::Pending | VerificationStatus::Unspecified
        ) {
            return;
        }
    }
}

/// A decoy call: pending, then expired when a real one would be.
async fn decoy(expires: Instant, tx: Sender, mut shutdown: watch::Receiver<bool>) {
    if tx.send(status_event("pending")).await.is_err() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep_until(expires) => {
            let _ = tx.send(status_event("expired")).await;
        }
        () = tx.closed() => {}
        _ = shutdown.changed() => {}
    }
}
