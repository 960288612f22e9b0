//! GET /verify/events: the call page's live status, as server-sent events
//! fed by WatchVerification. Each change is `event: status` with a status
//! word (`pending`, `approved`, `denied`, …); the stream ends after a final
//! one. The browser never learns the verification id: this route finds it
//! in the session, like every other.
//!
//! Each real stream holds one of verifyd's WatchVerification streams, of
//! which a tenant gets a budget shared by all its users. So a session has
//! at most one stream (a new one ends the one before, which says
//! `event: replaced`), and the portal at most `MAX_EVENT_STREAMS`, decoys'
//! included (they must look alike); past that it answers 503.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{
    Extension,
    extract::State,
    http::{StatusCode, header::RETRY_AFTER},
    response::{
        IntoResponse as _, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc, oneshot, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    AppState,
    flow::{LiveStream, Target, VerificationId},
    proto::VerificationStatus,
    verify::{Verifyd, status_word},
    web::Session,
};

type Sender = mpsc::Sender<Result<Event, Infallible>>;

/// How long the browser waits before reconnecting a dropped stream.
const RECONNECT: Duration = Duration::from_secs(5);
/// What a 503 asks the browser to wait (the script reloads the page then).
const BUSY_RETRY_SECS: &str = "10";

enum Watched {
    Real(VerificationId),
    /// A decoy: pending until it expires.
    Decoy(Instant),
}

pub async fn stream(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    // The permit first: a stream refused for want of one must not end the
    // session's stream before it.
    let Ok(permit) = Arc::clone(&app.event_streams).try_acquire_owned() else {
        return busy();
    };
    let (handle, replaced) = LiveStream::new();
    let watched = session
        .with(|d| {
            let pending = d.pending.as_ref().filter(|p| p.ended.is_none())?;
            let watched = match &pending.target {
                Target::Real(id) => Watched::Real(id.clone()),
                Target::Decoy(shadow) => Watched::Decoy(shadow.expires_at().into()),
            };
            // Replacing the handle drops the one before: its stream ends.
            d.live_stream = Some(handle);
            Some(watched)
        })
        .flatten();
    let Some(watched) = watched else {
        // 204 tells EventSource to stop reconnecting.
        return StatusCode::NO_CONTENT.into_response();
    };
    let (tx, rx) = mpsc::channel(4);
    let shutdown = app.shutdown.clone();
    match watched {
        Watched::Real(id) => {
            let relay = relay(app.verifyd.clone(), id, tx.clone(), shutdown);
            tokio::spawn(until_replaced(relay, replaced, tx, permit));
        }
        Watched::Decoy(expires) => {
            let decoy = decoy(expires, tx.clone(), shutdown);
            tokio::spawn(until_replaced(decoy, replaced, tx, permit));
        }
    }
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Every stream slot is taken: the page's script tries again later.
fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(RETRY_AFTER, BUSY_RETRY_SECS)],
        "Too many pages are following a call. Try again in a moment.",
    )
        .into_response()
}

/// Runs `watching` (holding a stream permit) until it ends or the
/// session's handle is dropped; then says `replaced`, so the page's script
/// stops rather than reconnecting (its button still works).
async fn until_replaced(
    watching: impl Future<Output = ()>,
    replaced: oneshot::Receiver<()>,
    tx: Sender,
    _permit: OwnedSemaphorePermit,
) {
    tokio::select! {
        () = watching => {}
        _ = replaced => {
            let _ = tx.try_send(Ok(Event::default().event("replaced").data("replaced")));
        }
    }
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
