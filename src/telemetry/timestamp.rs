//! Log lines' timestamps: RFC 3339, UTC, microseconds
//! (`2026-12-06T04:39:17.123456Z`), the text tracing-subscriber's default
//! timer writes, made in one piece by humantime where the default writes
//! each part through the formatter (a third of the audit line a Start
//! logs). Both log formats take it from here.

use std::time::SystemTime;

use tracing_subscriber::fmt::{format::Writer, time::FormatTime};

#[derive(Debug, Clone, Copy)]
pub(super) struct Rfc3339Micros;

impl Rfc3339Micros {
    /// The current time, ready to display.
    pub(super) fn now() -> humantime::Rfc3339Timestamp {
        humantime::format_rfc3339_micros(SystemTime::now())
    }
}

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", Self::now())
    }
}
