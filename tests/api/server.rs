//! The server around the API: health, reflection, probes, shutdown.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::spawn_app;

const SERVICE: &str = "verifyd.v1.VerificationService";

#[tokio::test]
async fn health_is_serving_then_not_serving_during_shutdown() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", SERVICE] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check");
        assert_eq!(
            r.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch.next().await.expect("status").expect("ok");
    assert_eq!(first.status(), ServingStatus::Serving);

    app.shutdown.cancel();
    let during = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an update")
        .expect("status")
        .expect("ok");
    assert_eq!(during.status(), ServingStatus::NotServing);
    // Draining: the probes still answer, and readiness says no.
    let readyz = format!("http://{}/readyz", app.admin_addr);
    assert_eq!(http_get(&readyz).await, 503);
    assert_eq!(
        http_get(&format!("http://{}/livez", app.admin_addr)).await,
        200
    );
    drop(watch);
    app.server.await.expect("server stops");
}

#[tokio::test]
async fn reflection_lists_the_service_in_both_versions() {
    let app = spawn_app().await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected response: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == SERVICE), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                SERVICE.into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    assert!(
        matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{response:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn probes_answer_on_the_admin_listener() {
    let app = spawn_app().await;
    let get = |path: &str| {
        let url = format!("http://{}{path}", app.admin_addr);
        async move { http_get(&url).await }
    };
    assert_eq!(get("/livez").await, 200);
    assert_eq!(get("/readyz").await, 200);
    assert_eq!(get("/nope").await, 404);
    app.stop().await;
}

/// A minimal HTTP/1.1 GET, returning the status code.
pub async fn http_get(url: &str) -> u16 {
    let response = http_response(url).await;
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line")
}

/// The whole HTTP/1.1 response to a GET, head and body.
pub async fn http_response(url: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}
