//! Logs, traces and metrics.
//!
//! Logs go to stderr (stdout belongs to the dev console sender), JSON when
//! not on a terminal, level from `RUST_LOG` or the config. A request only
//! formats its lines (the audit event, above all): a writer thread of its
//! own writes them, as many as are waiting in one `write`, so no request
//! waits on stderr and a busy server makes one system call per batch, not
//! per line. It never drops a line: when the writer falls 128k lines
//! behind, requests wait for it rather than lose audit events. Traces are the
//! same `tracing` spans, exported over OTLP when a collector is configured
//! (`trace`). Span and event fields carry ids, tenants and masked
//! destinations, never codes or keys; metrics (`metrics`) carry no id or
//! destination at all.

mod json;
pub mod metrics;
mod throttle;
mod timestamp;
mod trace;

use std::io::{BufWriter, IsTerminal as _};

use serde::{Deserialize, Serialize};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter, Layer as _, fmt::format::JsonFields, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

pub use metrics::Metrics;
pub use throttle::LogThrottle;
pub use trace::{TracingConfig, inject_trace_context, provider_span, record_rpc_status, rpc_span};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text when it is.
    #[default]
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `verifyd=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".to_owned(),
        }
    }
}

impl LogConfig {
    /// The problem with these settings: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if EnvFilter::try_new(&self.level).is_err() {
            return Some((
                "log.level",
                "must be a tracing filter such as info or verifyd=debug",
            ));
        }
        None
    }
}

/// Flushes the spans not yet exported, then the log lines not yet
/// written, when dropped, at exit.
#[derive(Debug)]
#[must_use = "dropping it at once stops trace export and log output"]
pub struct TelemetryGuard {
    exporter: Option<trace::Exporter>,
    /// Dropped after the exporter (fields drop after `drop` runs), so what
    /// the exporter logs while shutting down is written too.
    _log_writer: WorkerGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(exporter) = self.exporter.take() {
            exporter.shutdown();
        }
    }
}

/// Installs the process's subscriber: the log output, and the trace
/// exporter when a collector is configured. Call once, inside the runtime
/// (the OTLP client spawns onto it).
pub fn init(log: &LogConfig, tracing: &TracingConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    // The writer thread flushes the buffer whenever it has no more lines
    // waiting, so a line is out as soon as the thread gets to it.
    let (writer, log_writer) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("verifyd-log")
        .finish(BufWriter::new(std::io::stderr()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_timer(timestamp::Rfc3339Micros)
        .with_writer(writer);
    let fmt = if json {
        fmt.fmt_fields(JsonFields::new())
            .event_format(json::JsonLines)
            .boxed()
    } else {
        fmt.boxed()
    };
    let (exporter, problem) = match trace::Exporter::from_config(tracing) {
        Ok(exporter) => (exporter, None),
        Err(problem) => (None, Some(problem)),
    };
    let otel = exporter.as_ref().map(trace::Exporter::layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    if let Some(problem) = problem {
        tracing::error!(%problem, "trace export is off");
    }
    TelemetryGuard {
        exporter,
        _log_writer: log_writer,
    }
}
