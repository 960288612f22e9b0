//! Trace export: `tracing` spans become OpenTelemetry spans, sent over
//! OTLP/gRPC in batches. A caller's W3C `traceparent` continues its trace
//! (one `rpc` span per call), and requests to providers carry the context
//! on (one `provider_request` span each).
//!
//! With no collector configured nothing here runs: no layer, no context
//! extraction, no header injection.

use std::sync::OnceLock;

use opentelemetry::{
    KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{Layer, registry::LookupSpan};

/// Set once trace export runs; everything here is a no-op until then.
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

/// The gRPC methods' service, for the span attributes.
const SERVICE: &str = "verifyd.v1.VerificationService";

/// Trace export over OTLP/gRPC. Each setting falls back to the standard
/// OpenTelemetry variable (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`,
/// `OTEL_TRACES_SAMPLER_ARG`); with no endpoint anywhere, nothing is
/// exported.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<url::Url>,
    pub service_name: Option<String>,
    /// The share of new traces kept, 0 to 1; a caller's sampled flag wins
    /// for traces it continues.
    pub sample_ratio: Option<f64>,
}

impl TracingConfig {
    /// The first setting out of range: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if let Some(ratio) = self.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Some(("tracing.sample_ratio", "must be 0 to 1"));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !matches!(endpoint.scheme(), "http" | "https")
        {
            return Some((
                "tracing.otlp_endpoint",
                "must be an http:// or https:// URL (OTLP over gRPC)",
            ));
        }
        None
    }
}

#[derive(Debug)]
pub(super) struct Exporter {
    provider: SdkTracerProvider,
}

/// A setting, else the standard variable named.
fn setting(configured: Option<String>, variables: &[&str]) -> Option<String> {
    configured.or_else(|| {
        variables
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    })
}

impl Exporter {
    /// `Ok(None)` when no endpoint is configured anywhere.
    pub(super) fn from_config(config: &TracingConfig) -> Result<Option<Self>, String> {
        let Some(endpoint) = setting(
            config.otlp_endpoint.as_ref().map(ToString::to_string),
            &[
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ],
        ) else {
            return Ok(None);
        };
        let service_name = setting(config.service_name.clone(), &["OTEL_SERVICE_NAME"])
            .unwrap_or_else(|| "verifyd".to_owned());
        let ratio = match config.sample_ratio {
            Some(ratio) => ratio,
            None => match setting(None, &["OTEL_TRACES_SAMPLER_ARG"]) {
                Some(arg) => arg
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or("OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1")?,
                None => 1.0,
            },
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name)
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let _ = PROPAGATOR.set(TraceContextPropagator::new());
        Ok(Some(Self { provider }))
    }

    pub(super) fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("verifyd"))
    }

    /// Exports what is still buffered, bounded by the SDK's timeout.
    pub(super) fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("verifyd: trace export did not shut down cleanly: {error}");
        }
    }
}

/// gRPC metadata as a propagation carrier.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// HTTP headers as a propagation carrier.
struct Headers<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The span of one RPC, a child of the caller's trace when its metadata
/// carries a `traceparent`.
///
/// Without trace export there is no span: the logs name the tenant and
/// verification on their own, and a span per RPC would cost every call.
pub fn rpc_span(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
    let Some(propagator) = PROPAGATOR.get() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = SERVICE,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(propagator.extract(&Metadata(metadata)));
    span
}

/// The span of one request to a provider, carrying only the provider, the
/// channel and which retry it is (the destination stays on the RPC's span,
/// masked); the HTTP client passes its context on in `traceparent`.
///
/// Like [`rpc_span`], it exists only with trace export: nothing logs inside
/// a provider request, so without export the span would only cost each
/// send its formatting (about a tenth of a Start, measured).
pub fn provider_span(provider: &str, channel: &'static str, retry: u32) -> tracing::Span {
    if PROPAGATOR.get().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!("provider_request", provider, channel, retry)
}

/// Records how the RPC ended on its span. As OpenTelemetry's gRPC
/// conventions say, only codes that mean the server failed mark the span
/// as an error; a caller's mistake (a wrong id, say) does not.
pub fn record_rpc_status(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Adds the current span's `traceparent` to a provider request.
pub fn inject_trace_context(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let Some(propagator) = PROPAGATOR.get() else {
        return request;
    };
    let mut headers = reqwest::header::HeaderMap::new();
    propagator.inject_context(
        &tracing::Span::current().context(),
        &mut Headers(&mut headers),
    );
    request.headers(headers)
}
