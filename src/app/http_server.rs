//! The HTTP listeners: the admin endpoints (probes, metrics) and, when
//! callbacks are configured, the providers' webhooks. Both stay up until
//! `drained` is cancelled, after the gRPC drain.

use std::{io, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::delivery::twilio_webhook_tokens;
use crate::{config::Config, http, service::Verifier};

pub(super) async fn serve(
    config: &Config,
    admin: TcpListener,
    webhooks: Option<TcpListener>,
    verifier: &Arc<Verifier>,
    drained: CancellationToken,
) -> io::Result<()> {
    let admin = axum::serve(admin, http::admin::router(Arc::clone(verifier)))
        .with_graceful_shutdown(drained.clone().cancelled_owned());
    let webhooks = async {
        let (Some(listener), Some(base)) = (webhooks, config.webhooks.public_base_url.clone())
        else {
            return Ok(());
        };
        let router = http::webhooks::router(
            Arc::clone(verifier),
            base,
            twilio_webhook_tokens(&config.providers),
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(drained.cancelled_owned())
            .await
    };
    let (admin, webhooks) = tokio::join!(admin, webhooks);
    admin?;
    webhooks
}
