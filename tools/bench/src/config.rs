//! ghz's config file format (JSON), so one file drives both ghz and
//! `verifyd-bench`. Only the keys `verifyd-bench` acts on are accepted: an
//! unknown key (a typo, or a ghz option bench lacks) is an error naming it,
//! rather than a run that silently measures something else.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::{Deserialize, Deserializer};

/// One run's settings, as ghz names them. `None` means "not given", so
/// command-line flags can override a file the way ghz's do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GhzConfig {
    /// A `.proto` file (ghz compiles it); bench checks it exists and uses
    /// its built-in descriptors, which hold the same contract.
    pub proto: Option<String>,
    #[serde(rename = "import-paths")]
    pub import_paths: Option<Vec<String>>,
    /// `package.Service/Method` or `package.Service.Method`.
    pub call: Option<String>,
    /// `host:port`.
    pub host: Option<String>,
    /// Plaintext HTTP/2; otherwise TLS.
    pub insecure: Option<bool>,
    /// A PEM file of trusted roots for TLS.
    pub cacert: Option<String>,
    /// The request as protobuf JSON: an object, or an array of objects used
    /// round-robin by request number. Templated per request.
    pub data: Option<serde_json::Value>,
    /// The same, read from a file.
    #[serde(rename = "data-file")]
    pub data_file: Option<String>,
    /// Request metadata (gRPC headers). Values are templated per request.
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(rename = "metadata-file")]
    pub metadata_file: Option<String>,
    /// Requests in flight at once (ghz default 50).
    pub concurrency: Option<usize>,
    /// HTTP/2 connections the workers share (ghz default 1).
    pub connections: Option<usize>,
    /// Requests to send (ghz default 200); ignored when `duration` is set.
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "go_duration_opt")]
    pub duration: Option<Duration>,
    /// Requests per second for an open-loop run; 0 or absent: closed loop.
    pub rps: Option<u32>,
    /// Per-request deadline (ghz default 20s; 0: none).
    #[serde(default, deserialize_with = "go_duration_opt")]
    pub timeout: Option<Duration>,
    #[serde(
        rename = "connect-timeout",
        default,
        deserialize_with = "go_duration_opt"
    )]
    pub connect_timeout: Option<Duration>,
    /// `summary` or `json`.
    pub format: Option<String>,
    /// Where the report goes; stdout when absent.
    pub output: Option<String>,
    pub name: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    /// ghz's worker thread count; bench's runtime sizes itself.
    pub cpus: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

/// Reads a ghz JSON config file.
pub fn load(path: &Path) -> Result<GhzConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source,
    })
}

impl GhzConfig {
    /// `self` with every setting `over` gives replacing this one's: flags
    /// over a file, as ghz merges them.
    pub fn overridden_by(self, over: Self) -> Self {
        // Inline data and a data file are one setting: a flag giving either
        // replaces both of the file's.
        let (data, data_file) = if over.data.is_some() || over.data_file.is_some() {
            (over.data, over.data_file)
        } else {
            (self.data, self.data_file)
        };
        Self {
            proto: over.proto.or(self.proto),
            import_paths: over.import_paths.or(self.import_paths),
            call: over.call.or(self.call),
            host: over.host.or(self.host),
            insecure: over.insecure.or(self.insecure),
            cacert: over.cacert.or(self.cacert),
            data,
            data_file,
            metadata: over.metadata.or(self.metadata),
            metadata_file: over.metadata_file.or(self.metadata_file),
            concurrency: over.concurrency.or(self.concurrency),
            connections: over.connections.or(self.connections),
            total: over.total.or(self.total),
            duration: over.duration.or(self.duration),
            rps: over.rps.or(self.rps),
            timeout: over.timeout.or(self.timeout),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            format: over.format.or(self.format),
            output: over.output.or(self.output),
            name: over.name.or(self.name),
            tags: over.tags.or(self.tags),
            cpus: over.cpus.or(self.cpus),
        }
    }
}

fn go_duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_go_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Go's `time.ParseDuration` syntax, which ghz uses: `10s`, `1m30s`,
/// `1.5s`, `250ms`, `0`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (examples: 10s, 1m30s, 250ms)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("0", 0),
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("250ms", 250),
            ("1h", 3_600_000),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in ["", "10", "s", "10x", "1m30", "-1s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<GhzConfig>(r#"{"concurency": 5}"#)
            .expect_err("a typo must not pass");
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_data_replaces_data_file() {
        let file: GhzConfig = serde_json::from_str(
            r#"{"call": "a.B/C", "total": 10, "data-file": "ids.json", "concurrency": 2}"#,
        )
        .expect("valid");
        let flags = GhzConfig {
            total: Some(20),
            data: Some(serde_json::json!({"id": "x"})),
            ..GhzConfig::default()
        };
        let merged = file.overridden_by(flags);
        assert_eq!(merged.total, Some(20));
        assert_eq!(merged.concurrency, Some(2));
        assert_eq!(merged.call.as_deref(), Some("a.B/C"));
        assert!(merged.data_file.is_none());
        assert!(merged.data.is_some());
    }
}
