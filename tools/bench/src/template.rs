//! ghz's per-request templating: Go `text/template` actions over the call
//! data and metadata, such as `"u{{.RequestNumber}}@example.com"`. Only the
//! actions ghz documents for call data are understood (its variables,
//! `newUUID`, `randomString N`); anything else is an error at parse time.
//! Parsed once, rendered per request by concatenation.

use std::{
    fmt::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use rand::{Rng as _, distr::Alphanumeric};

/// What one request knows about itself.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// 0, 1, 2… across the whole run.
    pub request_number: u64,
    pub worker_id: &'a str,
    pub method: &'a MethodNames,
}

/// The method's names, for the template variables that show them.
#[derive(Debug, Clone, Default)]
pub struct MethodNames {
    pub fully_qualified_name: String,
    pub method_name: String,
    pub service_name: String,
    pub input_name: String,
    pub output_name: String,
    pub is_client_streaming: bool,
    pub is_server_streaming: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
    NewUuid,
    /// 0 or less: a random length from 2 to 16, as in ghz.
    RandomString(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    RequestNumber,
    WorkerId,
    Uuid,
    FullyQualifiedName,
    MethodName,
    ServiceName,
    InputName,
    OutputName,
    IsClientStreaming,
    IsServerStreaming,
    Timestamp,
    TimestampUnix,
    TimestampUnixMilli,
    TimestampUnixNano,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed template action after {0:?}")]
    Unclosed(String),
    #[error(
        "unsupported template action {{{{{0}}}}}: verifyd-bench knows ghz's call variables \
         (.RequestNumber, .WorkerID, .UUID, .Timestamp, .TimestampUnix, .TimestampUnixMilli, \
         .TimestampUnixNano, .FullyQualifiedName, .MethodName, .ServiceName, .InputName, \
         .OutputName, .IsClientStreaming, .IsServerStreaming), newUUID and randomString N"
    )]
    Unsupported(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed(rest[..open].to_owned()))?;
            parts.push(action(&after[..close])?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether rendering can give different text per request; a template
    /// with no action is rendered (and encoded) once.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    pub fn render(&self, cx: &CallContext<'_>) -> String {
        let mut out = String::new();
        let now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        };
        for part in &self.parts {
            // Writing to a String cannot fail.
            let _ = match part {
                Part::Text(text) => out.write_str(text),
                Part::NewUuid => out.write_str(&uuid_v4()),
                Part::RandomString(len) => out.write_str(&random_string(*len)),
                Part::Var(var) => match var {
                    Var::RequestNumber => write!(out, "{}", cx.request_number),
                    Var::WorkerId => out.write_str(cx.worker_id),
                    Var::Uuid => out.write_str(&uuid_v4()),
                    Var::FullyQualifiedName => out.write_str(&cx.method.fully_qualified_name),
                    Var::MethodName => out.write_str(&cx.method.method_name),
                    Var::ServiceName => out.write_str(&cx.method.service_name),
                    Var::InputName => out.write_str(&cx.method.input_name),
                    Var::OutputName => out.write_str(&cx.method.output_name),
                    Var::IsClientStreaming => write!(out, "{}", cx.method.is_client_streaming),
                    Var::IsServerStreaming => write!(out, "{}", cx.method.is_server_streaming),
                    Var::Timestamp => write!(
                        out,
                        "{}",
                        prost_types::Timestamp {
                            seconds: now().as_secs() as i64,
                            nanos: 0,
                        }
                    ),
                    Var::TimestampUnix => write!(out, "{}", now().as_secs()),
                    Var::TimestampUnixMilli => write!(out, "{}", now().as_millis()),
                    Var::TimestampUnixNano => write!(out, "{}", now().as_nanos()),
                },
            };
        }
        out
    }
}

fn action(inner: &str) -> Result<Part, TemplateError> {
    let words: Vec<&str> = inner.split_whitespace().collect();
    let unsupported = || TemplateError::Unsupported(inner.to_owned());
    let var = match words.as_slice() {
        ["newUUID"] => return Ok(Part::NewUuid),
        ["randomString", len] => {
            return len
                .parse()
                .map(Part::RandomString)
                .map_err(|_| unsupported());
        }
        [name] => name.strip_prefix('.').ok_or_else(unsupported)?,
        _ => return Err(unsupported()),
    };
    let var = match var {
        "RequestNumber" => Var::RequestNumber,
        "WorkerID" => Var::WorkerId,
        "UUID" => Var::Uuid,
        "FullyQualifiedName" => Var::FullyQualifiedName,
        "MethodName" => Var::MethodName,
        "ServiceName" => Var::ServiceName,
        "InputName" => Var::InputName,
        "OutputName" => Var::OutputName,
        "IsClientStreaming" => Var::IsClientStreaming,
        "IsServerStreaming" => Var::IsServerStreaming,
        "Timestamp" => Var::Timestamp,
        "TimestampUnix" => Var::TimestampUnix,
        "TimestampUnixMilli" => Var::TimestampUnixMilli,
        "TimestampUnixNano" => Var::TimestampUnixNano,
        _ => return Err(unsupported()),
    };
    Ok(Part::Var(var))
}

/// A random (version 4) UUID, as ghz's `.UUID` and `newUUID` give.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn random_string(len: i64) -> String {
    let mut rng = rand::rng();
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| rng.random_range(2..=16));
    (&mut rng)
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, n: u64) -> String {
        let names = MethodNames {
            method_name: "StartVerification".to_owned(),
            ..MethodNames::default()
        };
        Template::parse(text).expect("parses").render(&CallContext {
            request_number: n,
            worker_id: "c0w1",
            method: &names,
        })
    }

    #[test]
    fn variables_render_per_request() {
        assert_eq!(
            render("u{{.RequestNumber}}@example.com", 42),
            "u42@example.com"
        );
        assert_eq!(
            render("{{ .WorkerID }}/{{.MethodName}}", 0),
            "c0w1/StartVerification"
        );
        let uuid = render("{{.UUID}}", 0);
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(uuid, render("{{newUUID}}", 0));
        assert_eq!(render("{{randomString 8}}", 0).len(), 8);
        assert!(render("{{.TimestampUnixNano}}", 0).parse::<u128>().is_ok());
    }

    #[test]
    fn constant_text_is_known_constant() {
        let t = Template::parse(r#"{"id":"VE1"}"#).expect("parses");
        assert!(t.is_constant());
        assert!(
            !Template::parse("{{.RequestNumber}}")
                .expect("parses")
                .is_constant()
        );
    }

    #[test]
    fn unknown_actions_and_unclosed_braces_are_errors() {
        for bad in [
            "{{.Env.KEY}}",
            "{{printf \"%04d\" .RequestNumber}}",
            "{{env \"X\"}}",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(TemplateError::Unsupported(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Template::parse("a{{.RequestNumber"),
            Err(TemplateError::Unclosed(_))
        ));
    }
}
