//! JSON log lines, as tracing-subscriber's JSON format writes them (with the
//! current span and the span list): the same keys in the same order, so log
//! pipelines see no difference. The line is serialized into a byte buffer of
//! its own and handed to the writer in one piece; tracing-subscriber's
//! format goes through an adaptor that checks and copies every fragment
//! serde_json writes (each quote, colon and key), which was most of what
//! the audit line of a Start cost.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer as _};
use tracing::{Event, Subscriber};
use tracing_serde::fields::AsMap as _;
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormattedFields,
        format::{JsonFields, Writer},
    },
    registry::{LookupSpan, SpanRef},
};

use super::timestamp::Rfc3339Micros;

/// The event format: `{"timestamp", "level", "fields", "target", "span",
/// "spans"}`, the last two only inside a span. Spans' fields are recorded
/// by [`JsonFields`], as with tracing-subscriber's own JSON format.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Vec::with_capacity(512);
        serialize(ctx, event, &mut line).map_err(|_| fmt::Error)?;
        line.push(b'\n');
        writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

fn serialize<S>(
    ctx: &FmtContext<'_, S, JsonFields>,
    event: &Event<'_>,
    line: &mut Vec<u8>,
) -> serde_json::Result<()>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    let mut serializer = serde_json::Serializer::new(line);
    let mut map = serializer.serialize_map(None)?;
    let timestamp = Rfc3339Micros::now().to_string();
    map.serialize_entry("timestamp", &timestamp)?;
    map.serialize_entry("level", meta.level().as_str())?;
    map.serialize_entry("fields", &event.field_map())?;
    map.serialize_entry("target", meta.target())?;
    let current = event
        .parent()
        .and_then(|id| ctx.span(id))
        .or_else(|| ctx.lookup_current());
    if let Some(span) = &current {
        map.serialize_entry("span", &SpanFields(span))?;
        map.serialize_entry("spans", &SpanList(ctx))?;
    }
    SerializeMap::end(map)
}

/// The spans from the root to the current one.
struct SpanList<'a, 'b, S: Subscriber + for<'l> LookupSpan<'l>>(&'b FmtContext<'a, S, JsonFields>);

impl<S> Serialize for SpanList<'_, '_, S>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        if let Some(leaf) = self.0.lookup_current() {
            for span in leaf.scope().from_root() {
                seq.serialize_element(&SpanFields(&span))?;
            }
        }
        SerializeSeq::end(seq)
    }
}

/// One span: its fields (as [`JsonFields`] recorded them), then its name.
struct SpanFields<'a, 'b, S: for<'l> LookupSpan<'l>>(&'b SpanRef<'a, S>);

impl<S> Serialize for SpanFields<'_, '_, S>
where
    S: for<'l> LookupSpan<'l>,
{
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut map = serializer.serialize_map(None)?;
        let extensions = self.0.extensions();
        let recorded = extensions
            .get::<FormattedFields<JsonFields>>()
            .map_or("{}", |fields| fields.fields.as_str());
        // What JsonFields recorded is a JSON object's text.
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(recorded) {
            Ok(fields) => {
                for (name, value) in &fields {
                    map.serialize_entry(name, value)?;
                }
            }
            Err(error) => map.serialize_entry("field_error", &error.to_string())?,
        }
        map.serialize_entry("name", self.0.metadata().name())?;
        SerializeMap::end(map)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt as _};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// Each line's text after its timestamp (the two formats read the clock
    /// at different moments), the timestamp checked for its format.
    fn lines(captured: &Captured) -> Vec<String> {
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|line| {
                let rest = line
                    .strip_prefix("{\"timestamp\":\"")
                    .expect("the timestamp first");
                let (timestamp, rest) = rest.split_once('"').expect("a quoted timestamp");
                assert_eq!(timestamp.len(), "2026-12-06T04:39:17.123456Z".len());
                humantime::parse_rfc3339(timestamp).expect("RFC 3339");
                rest.to_owned()
            })
            .collect()
    }

    fn log_some_events() {
        tracing::info!(target: "verifyd::audit", event = "status_changed", tenant = "acme", attempts = 3, ok = true, "a \"quoted\" message\n");
        let outer = tracing::info_span!("rpc", rpc.method = "CheckVerification", code = 0);
        let _outer = outer.enter();
        let inner = tracing::info_span!("provider_request", provider = "twilio", retry = 1);
        let _inner = inner.enter();
        tracing::warn!(error = %"timed out", "send failed");
    }

    #[test]
    fn lines_match_tracing_subscribers_json_format() {
        let ours = Captured::default();
        let theirs = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .with_writer(ours.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(theirs.clone()),
            );
        tracing::subscriber::with_default(subscriber, log_some_events);
        let (ours, theirs) = (lines(&ours), lines(&theirs));
        assert_eq!(ours.len(), 2);
        // The same text, key order included: pipelines may read the text.
        assert_eq!(ours, theirs);
        assert!(
            ours[1]
                .contains(r#""spans":[{"code":0,"rpc.method":"CheckVerification","name":"rpc"}"#)
        );
    }
}
