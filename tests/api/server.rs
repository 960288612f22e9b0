//! The server around the API: health, reflection, probes, shutdown.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use verifyd::proto;

use crate::helpers::{sms_to, spawn_app};

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
        !names.iter().any(|n| n.contains("Admin")),
        "the operator API is not described where tenants connect: {names:?}"
    );
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

/// A unary gRPC call made by hand over HTTP/2, for headers no generated
/// client sends: the HTTP status, the `grpc-status` (headers or trailers
/// alike, as reqwest does not expose trailers: `None` when only trailers
/// could carry it) and the decoded response message, if any.
async fn raw_unary<M: prost::Message + Default>(
    addr: std::net::SocketAddr,
    method: &str,
    request: &impl prost::Message,
    headers: &[(&str, &str)],
) -> Result<(u16, Option<String>, Option<M>), reqwest::Error> {
    let message = request.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&message);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut call = client
        .post(format!("http://{addr}/{SERVICE}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    for (name, value) in headers {
        call = call.header(*name, *value);
    }
    let response = call.send().await?;
    let status = response.status().as_u16();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let frame = response.bytes().await?;
    let decoded = (frame.len() > 5).then(|| M::decode(&frame[5..]).expect("a response message"));
    Ok((status, grpc_status, decoded))
}

#[tokio::test]
async fn an_absurd_grpc_timeout_is_ignored_and_the_start_is_served() {
    let app = spawn_app().await;
    // What the reproduction sent: 20 digits of seconds, which overflowed
    // the deadline's Instant and panicked the handler (the stream reset).
    let (http, grpc_status, response) = raw_unary::<proto::StartVerificationResponse>(
        app.grpc_addr,
        "StartVerification",
        &sms_to("+14155550100"),
        &[("grpc-timeout", "18446744073709551615S")],
    )
    .await
    .expect("an answer, not a reset stream");
    assert_eq!(http, 200);
    assert_eq!(grpc_status, None, "not a trailers-only error");
    let v = response
        .and_then(|r| r.verification)
        .expect("the verification, served without a deadline");
    assert_eq!(app.outbox.sent_count(&v.id), 1);

    // The largest deadline the spec allows is honoured, not overflowed.
    let (_, _, response) = raw_unary::<proto::StartVerificationResponse>(
        app.grpc_addr,
        "StartVerification",
        &sms_to("+14155550101"),
        &[("grpc-timeout", "99999999H")],
    )
    .await
    .expect("an answer");
    assert!(response.and_then(|r| r.verification).is_some());
    app.started(sms_to("+14155550102")).await;
    app.stop().await;
}
