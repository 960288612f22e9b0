//! The HTTP listeners: the admin endpoints (probes, metrics) and, when
//! callbacks are configured, the providers' webhooks. Both stay up until
//! `drained` is cancelled, after the gRPC drain.

use std::{io, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::delivery::twilio_webhook_tokens;
use crate::{config::Config, delivery::dev_phone::DevPhone, http, service::Verifier};

/// The webhook listener, the URL providers reach it at (dev mode: its own
/// loopback address), and dev mode's simulated phone beside the webhooks
/// when it runs.
pub(super) struct Webhooks {
    pub listener: TcpListener,
    pub base: Url,
    pub phone: Option<DevPhone>,
}

/// Serves the admin listener and, when there is one, the webhook listener.
pub(super) async fn serve(
    config: &Config,
    admin: TcpListener,
    webhooks: Option<Webhooks>,
    verifier: &Arc<Verifier>,
    drained: CancellationToken,
) -> io::Result<()> {
    let admin = axum::serve(admin, http::admin::router(Arc::clone(verifier)))
        .with_graceful_shutdown(drained.clone().cancelled_owned());
    let webhooks = async {
        let Some(Webhooks {
            listener,
            base,
            phone,
        }) = webhooks
        else {
            return Ok(());
        };
        let mut router = http::webhooks::router(
            Arc::clone(verifier),
            base,
            twilio_webhook_tokens(&config.providers, phone.as_ref()),
        );
        if let Some(phone) = phone {
            router = router.merge(http::dev_phone::router(phone));
        }
        axum::serve(listener, router)
            .with_graceful_shutdown(drained.cancelled_owned())
            .await
    };
    let (admin, webhooks) = tokio::join!(admin, webhooks);
    admin?;
    webhooks
}
