//! The gRPC transport: translates requests into use cases and results into
//! responses. No business rule lives here.

pub mod admin;
mod auth;
pub mod listener;
// Public (but hidden) for the fuzz targets in fuzz/, which run requests
// through the same validation.
#[doc(hidden)]
pub mod convert;
mod status;

pub use status::DESTINATION_BUSY;
pub mod tls;

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::{
    domain::VoiceMode,
    proto::{self, verification_service_server::VerificationService},
    service::Verifier,
    telemetry,
};

pub use auth::{Authenticator, ClientName};
pub use proto::verification_service_server::VerificationServiceServer;

/// The VerificationService API over a [`Verifier`].
#[derive(Debug, Clone)]
pub struct Api {
    verifier: Arc<Verifier>,
    auth: Authenticator,
}

impl Api {
    pub fn new(verifier: Arc<Verifier>, auth: Authenticator) -> Self {
        Self { verifier, auth }
    }

    pub fn into_server(self) -> VerificationServiceServer<Self> {
        VerificationServiceServer::new(self)
    }
}

/// When the caller gives up, from the `grpc-timeout` header, taken as soon
/// as the request arrives. A deadline too far off for the clock to hold is
/// no deadline: the server's own limits still bound the request.
fn deadline<T>(request: &Request<T>) -> Option<tokio::time::Instant> {
    tokio::time::Instant::now().checked_add(grpc_timeout(request)?)
}

/// The caller's remaining time, from the `grpc-timeout` header: the gRPC
/// spec's `TimeoutValue` (1 to 8 ASCII digits) and `TimeoutUnit` (one of
/// H M S m u n). Anything else is ignored, as tonic's own server does:
/// such a caller sent no deadline the server can honour.
fn grpc_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    // At most 8 digits keeps every unit far from overflow (99,999,999
    // hours is about 3.6e11 seconds); the products saturate all the same.
    if !(1..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Only a number-matching call has digits to show.
fn digits_to_show(v: &crate::domain::Verification) -> String {
    v.match_digits
        .as_ref()
        .filter(|_| v.delivery.voice_mode == Some(VoiceMode::Match))
        .map(|d| d.as_str().to_owned())
        .unwrap_or_default()
}

type WatchResponseStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchVerificationResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VerificationService for Api {
    async fn start_verification(
        &self,
        request: Request<proto::StartVerificationRequest>,
    ) -> Result<Response<proto::StartVerificationResponse>, Status> {
        let span = telemetry::rpc_span("StartVerification", request.metadata());
        self.observe("StartVerification", span, self.start(request))
            .await
    }

    async fn resend_verification(
        &self,
        request: Request<proto::ResendVerificationRequest>,
    ) -> Result<Response<proto::ResendVerificationResponse>, Status> {
        let span = telemetry::rpc_span("ResendVerification", request.metadata());
        self.observe("ResendVerification", span, self.resend(request))
            .await
    }

    async fn check_verification(
        &self,
        request: Request<proto::CheckVerificationRequest>,
    ) -> Result<Response<proto::CheckVerificationResponse>, Status> {
        let span = telemetry::rpc_span("CheckVerification", request.metadata());
        self.observe("CheckVerification", span, self.check(request))
            .await
    }

    async fn get_verification(
        &self,
        request: Request<proto::GetVerificationRequest>,
    ) -> Result<Response<proto::GetVerificationResponse>, Status> {
        let span = telemetry::rpc_span("GetVerification", request.metadata());
        self.observe("GetVerification", span, self.get(request))
            .await
    }

    async fn cancel_verification(
        &self,
        request: Request<proto::CancelVerificationRequest>,
    ) -> Result<Response<proto::CancelVerificationResponse>, Status> {
        let span = telemetry::rpc_span("CancelVerification", request.metadata());
        self.observe("CancelVerification", span, self.cancel(request))
            .await
    }

    type WatchVerificationStream = WatchResponseStream;

    /// Measured until the stream is set up (or refused), not for its life:
    /// `verifyd_watch_streams` counts the open ones.
    async fn watch_verification(
        &self,
        request: Request<proto::WatchVerificationRequest>,
    ) -> Result<Response<Self::WatchVerificationStream>, Status> {
        let span = telemetry::rpc_span("WatchVerification", request.metadata());
        self.observe("WatchVerification", span, self.watch(request))
            .await
    }
}

impl Api {
    async fn start(
        &self,
        request: Request<proto::StartVerificationRequest>,
    ) -> Result<Response<proto::StartVerificationResponse>, Status> {
        let tenant = self.auth.tenant(&request)?;
        let deadline = deadline(&request);
        let start = convert::start_request(request.get_ref()).map_err(status::invalid_argument)?;
        let v = self
            .verifier
            .start(tenant, start, deadline)
            .await
            .map_err(status::start_refused)?;
        Ok(Response::new(proto::StartVerificationResponse {
            match_digits: digits_to_show(&v),
            verification: Some(convert::verification(&v)),
        }))
    }

    async fn resend(
        &self,
        request: Request<proto::ResendVerificationRequest>,
    ) -> Result<Response<proto::ResendVerificationResponse>, Status> {
        let tenant = self.auth.tenant(&request)?;
        let deadline = deadline(&request);
        let resend =
            convert::resend_request(request.get_ref()).map_err(status::invalid_argument)?;
        let v = self.verifier.resend(tenant, resend, deadline).await?;
        Ok(Response::new(proto::ResendVerificationResponse {
            match_digits: digits_to_show(&v),
            verification: Some(convert::verification(&v)),
        }))
    }

    async fn check(
        &self,
        request: Request<proto::CheckVerificationRequest>,
    ) -> Result<Response<proto::CheckVerificationResponse>, Status> {
        let tenant = self.auth.tenant(&request)?;
        let (id, code) =
            convert::check_request(request.get_ref()).map_err(status::invalid_argument)?;
        let (approved, v) = self.verifier.check(&tenant, &id, &code).await?;
        Ok(Response::new(proto::CheckVerificationResponse {
            approved,
            verification: Some(convert::verification(&v)),
        }))
    }

    async fn get(
        &self,
        request: Request<proto::GetVerificationRequest>,
    ) -> Result<Response<proto::GetVerificationResponse>, Status> {
        let tenant = self.auth.tenant(&request)?;
        let id = convert::verification_id("id", &request.get_ref().id)
            .map_err(status::invalid_argument)?;
        let v = self.verifier.get(&tenant, &id).await?;
        Ok(Response::new(proto::GetVerificationResponse {
            verification: Some(convert::verification(&v)),
        }))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelVerificationRequest>,
    ) -> Result<Response<proto::CancelVerificationResponse>, Status> {
        let tenant = self.auth.tenant(&request)?;
        let id = convert::verification_id("id", &request.get_ref().id)
            .map_err(status::invalid_argument)?;
        let v = self.verifier.cancel(&tenant, &id).await?;
        Ok(Response::new(proto::CancelVerificationResponse {
            verification: Some(convert::verification(&v)),
        }))
    }

    async fn watch(
        &self,
        request: Request<proto::WatchVerificationRequest>,
    ) -> Result<Response<WatchResponseStream>, Status> {
        let tenant = self.auth.tenant(&request)?;
        let id = convert::verification_id("id", &request.get_ref().id)
            .map_err(status::invalid_argument)?;
        let stream = self.verifier.watch(&tenant, &id).await?;
        let stream = stream.map(|item| {
            item.map(|v| proto::WatchVerificationResponse {
                verification: Some(convert::verification(&v)),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn observe<T>(
        &self,
        method: &'static str,
        span: tracing::Span,
        rpc: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        observed(self.verifier.metrics(), method, span, rpc).await
    }
}

/// Runs one RPC inside its span, then records how long it took and the
/// status code it ended with. Both services' RPCs go through it.
async fn observed<T>(
    metrics: &crate::telemetry::Metrics,
    method: &'static str,
    span: tracing::Span,
    rpc: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    let began = std::time::Instant::now();
    let result = rpc.instrument(span.clone()).await;
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    telemetry::record_rpc_status(&span, code);
    metrics.rpc(method, code, began.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let with = |v: &'static str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("grpc-timeout", v.parse().expect("ascii"));
            grpc_timeout(&r)
        };
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("10x"), None);
        assert_eq!(with("S"), None);
        assert_eq!(grpc_timeout(&Request::new(())), None);
    }

    #[test]
    fn timeouts_outside_the_spec_are_ignored_and_the_largest_fits_the_clock() {
        let request = |v: &'static str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("grpc-timeout", v.parse().expect("ascii"));
            r
        };
        // More than 8 digits (this one overflowed Instant), a sign, a space.
        for bad in ["18446744073709551615S", "123456789S", "+5S", " 5S", "-1S"] {
            assert_eq!(grpc_timeout(&request(bad)), None, "{bad}");
            assert_eq!(deadline(&request(bad)), None, "{bad}");
        }
        let largest = request("99999999H");
        assert_eq!(
            grpc_timeout(&largest),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert!(deadline(&largest).is_some_and(|d| d > tokio::time::Instant::now()));
    }
}
