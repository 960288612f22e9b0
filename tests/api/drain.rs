//! Draining on SIGTERM, through the real binary, as Kubernetes ends a pod:
//! readiness turns NOT_SERVING at once, every RPC in flight still gets its
//! answer, a watch stream ends after the current state, and the process
//! exits 0, after which nothing accepts connections.

use std::time::Duration;

use tokio::net::TcpStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use verifyd::proto::{self, verification_service_client::VerificationServiceClient};

use crate::{
    binary::{Server, start, twilio_env},
    fake_twilio::{FakeTwilio, sid},
    server::http_get,
};

/// How long the provider takes with each message: the RPCs are in flight
/// this long.
const PROVIDER_DELAY: Duration = Duration::from_millis(1500);
const IN_FLIGHT: usize = 4;

// Multi-threaded: the clients' connections must keep answering (h2 pings,
// GOAWAY) while the test waits on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_rpcs_and_watch_streams_then_exits_0() {
    let fake = FakeTwilio::start().await;
    fake.accept_after(&sid("SM", 1), PROVIDER_DELAY).await;
    let mut env = twilio_env(&fake);
    env.push(("VERIFYD_SERVER__SHUTDOWN_GRACE", "20s".to_owned()));
    env.push(("VERIFYD_CODE__TTL", "10m".to_owned()));
    let server = Server::spawn_with(&env);
    let channel = server.channel().await;
    let grpc_addr = server.addr("grpc").await;
    let admin_addr = server.addr("admin").await;
    let mut client = VerificationServiceClient::new(channel.clone());

    // A pending verification, watched.
    let watched = client
        .start_verification(start("+14155550100", proto::Channel::Sms))
        .await
        .expect("start")
        .into_inner()
        .verification
        .expect("verification");
    let mut watch = client
        .watch_verification(proto::WatchVerificationRequest {
            id: watched.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch").expect("a state");
    assert_eq!(
        first.verification.expect("v").status(),
        proto::VerificationStatus::Pending
    );

    let mut health = HealthClient::new(channel.clone());
    let mut serving = health
        .watch(HealthCheckRequest::default())
        .await
        .expect("health watch")
        .into_inner();
    let status = serving.message().await.expect("health").expect("a status");
    assert_eq!(status.status(), ServingStatus::Serving);

    // RPCs in flight: each waits on the slow provider.
    let rpcs: Vec<_> = (0..IN_FLIGHT)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .start_verification(start(&format!("+1415555011{n}"), proto::Channel::Sms))
                    .await
            })
        })
        .collect();
    wait_until("the provider has every in-flight send", || async {
        fake.sent().await.len() == 1 + IN_FLIGHT
    })
    .await;

    server.sigterm();

    // Readiness first: NOT_SERVING while every RPC is still in flight.
    let status = serving.message().await.expect("health").expect("a status");
    assert_eq!(status.status(), ServingStatus::NotServing);
    assert!(
        rpcs.iter().all(|rpc| !rpc.is_finished()),
        "NOT_SERVING came before the in-flight RPCs ended"
    );
    assert_eq!(
        http_get(&format!("http://{admin_addr}/readyz")).await,
        503,
        "/readyz fails while draining"
    );
    // A health watch never ends by itself; a client that saw NOT_SERVING
    // goes away.
    drop(serving);

    // Every in-flight RPC completes.
    for rpc in rpcs {
        let answer = rpc
            .await
            .expect("task")
            .expect("the in-flight RPC completes");
        assert_eq!(
            answer.into_inner().verification.expect("v").status(),
            proto::VerificationStatus::Pending
        );
    }
    // The watch stream ends, its last state the current one.
    let mut last = proto::VerificationStatus::Pending;
    while let Some(update) = watch.message().await.expect("the watch ends cleanly") {
        last = update.verification.expect("v").status();
    }
    assert_eq!(last, proto::VerificationStatus::Pending);
    drop((client, health, channel));

    let (status, logs) = server.exited().await;
    assert!(status.success(), "exit 0: {status:?}\n{logs}");
    assert!(
        !logs.contains("grace period over"),
        "everything drained within the grace period"
    );
    assert!(
        TcpStream::connect(grpc_addr).await.is_err(),
        "new connections are refused once it has exited"
    );
}

/// Polls `done` (bounded) until it holds.
async fn wait_until<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}
