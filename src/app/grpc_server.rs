//! The gRPC server: the verification API, health and reflection, over
//! plaintext or TLS, until health has turned NOT_SERVING and the drain
//! ends.

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::{
    config::Config,
    grpc::{self, Api, Authenticator, admin::AdminApi, listener::HandshakeLimits},
    proto,
    service::Verifier,
};

/// Requests are a few hundred bytes; refuse anything much larger before
/// decoding it.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The server, ready to run: it serves until `stop_serving` resolves, then
/// drains.
pub(super) fn serve(
    config: &Config,
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, HandshakeLimits)>,
    verifier: &Arc<Verifier>,
    health: HealthServer<impl Health>,
    stop_serving: impl Future<Output = ()> + Send + 'static,
) -> Result<
    impl Future<Output = Result<(), tonic::transport::Error>>,
    tonic_reflection::server::Error,
> {
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
            grpc = %config.server.grpc_addr,
            "no [tenants] configured: every caller of this loopback listener acts as tenant 'default'"
        );
    }
    let api = Api::new(Arc::clone(verifier), auth)
        .into_server()
        .max_decoding_message_size(MAX_REQUEST_BYTES);

    let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(age) = config.server.max_connection_age {
        // GOAWAY at that age; streams still open (a Watch, say) get the
        // shutdown grace to end before the connection is closed, and the
        // client reconnects, likely to another pod.
        server = server
            .max_connection_age(age)
            .max_connection_age_grace(config.server.shutdown_grace);
    }
    let reflect = config.server.reflection;
    let router = server
        .add_service(health)
        .add_optional_service(reflect.then_some(reflection_v1))
        .add_optional_service(reflect.then_some(reflection_v1alpha))
        .add_service(api);
    let clock = verifier.clock().clone();
    Ok(async move {
        match tls {
            Some((server_config, limits)) => {
                let incoming = grpc::listener::tls(listener, server_config, limits, clock);
                router
                    .serve_with_incoming_shutdown(incoming, stop_serving)
                    .await
            }
            None => {
                let incoming = grpc::listener::plaintext(listener, clock);
                router
                    .serve_with_incoming_shutdown(incoming, stop_serving)
                    .await
            }
        }
    })
}

/// The operator API's server (`[admin_api]`), on its own listener: the
/// AdminService alone, no health or reflection, until `stop` resolves.
pub(super) fn serve_admin(
    config: &Config,
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, HandshakeLimits)>,
    verifier: &Arc<Verifier>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = Result<(), tonic::transport::Error>> {
    let admin = AdminApi::new(Arc::clone(verifier), &config.admin_api.token_sha256)
        .into_server()
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(admin);
    let clock = verifier.clock().clone();
    async move {
        match tls {
            Some((server_config, limits)) => {
                let incoming = grpc::listener::tls(listener, server_config, limits, clock);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                let incoming = grpc::listener::plaintext(listener, clock);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
    }
}
