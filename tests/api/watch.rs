//! WatchVerification: the current state, every change, the end.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};
use verifyd::proto::{self, VerificationStatus};

use crate::helpers::{sms_to, spawn_app, spawn_app_with, status};

/// Generous, since nothing here waits on time passing: each step is pushed.
const STEP: Duration = Duration::from_secs(10);

async fn next(
    stream: &mut Streaming<proto::WatchVerificationResponse>,
) -> Option<proto::Verification> {
    tokio::time::timeout(STEP, stream.next())
        .await
        .expect("an update or the end arrives")
        .map(|item| item.expect("ok").verification.expect("verification"))
}

#[tokio::test]
async fn a_watcher_sees_the_current_state_each_change_and_the_end() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let code = app.outbox.code_for(&v.id);
    let mut stream = app.watch(&v.id).await.expect("watch");
    assert_eq!(
        status(&next(&mut stream).await.expect("current")),
        VerificationStatus::Pending
    );

    app.check(&v.id, "000000").await.expect("check");
    let update = next(&mut stream).await.expect("wrong code");
    assert_eq!(update.check_attempts_remaining, 4);

    app.check(&v.id, &code).await.expect("check");
    assert_eq!(
        status(&next(&mut stream).await.expect("approved")),
        VerificationStatus::Approved
    );
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends after a terminal status"
    );
    app.stop().await;
}

#[tokio::test]
async fn expiry_is_pushed_to_watchers() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let mut stream = app.watch(&v.id).await.expect("watch");
    assert_eq!(
        status(&next(&mut stream).await.expect("current")),
        VerificationStatus::Pending
    );

    app.clock.advance(Duration::from_secs(600));
    let expired = next(&mut stream).await.expect("pushed by the timer");
    assert_eq!(status(&expired), VerificationStatus::Expired);
    assert!(next(&mut stream).await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn watching_a_finished_verification_gives_its_state_and_ends() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    app.cancel(&v.id).await.expect("cancel");
    let mut stream = app.watch(&v.id).await.expect("watch");
    assert_eq!(
        status(&next(&mut stream).await.expect("current")),
        VerificationStatus::Canceled
    );
    assert!(next(&mut stream).await.is_none());
    let err = app
        .watch("VE0123456789abcdef0123456789abcdef")
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_sends_the_current_state_and_ends_open_streams() {
    let app = spawn_app().await;
    let v = app.started(sms_to("+14155550100")).await;
    let mut stream = app.watch(&v.id).await.expect("watch");
    assert_eq!(
        status(&next(&mut stream).await.expect("current")),
        VerificationStatus::Pending
    );
    app.shutdown.cancel();
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends at shutdown"
    );
    app.server.await.expect("server stops");
}

#[tokio::test]
async fn open_watch_streams_per_tenant_are_capped() {
    let app = spawn_app_with(|c| c.server.max_watch_streams_per_tenant = 2).await;
    let v = app.started(sms_to("+14155550100")).await;
    let mut first = app.watch(&v.id).await.expect("first");
    let _second = app.watch(&v.id).await.expect("second");
    next(&mut first).await.expect("current");
    let err = app.watch(&v.id).await.expect_err("third");
    assert_eq!(err.code(), Code::ResourceExhausted);
    drop(first);
    // The slot comes back once the server sees the stream gone.
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(s) = app.watch(&v.id).await {
            reopened = Some(s);
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reopened.is_some(), "a closed stream frees its slot");
    app.stop().await;
}
