//! What one request sends: the method (found in verifyd's and gRPC
//! health's descriptors, so any unary method works without generated
//! code), its body as protobuf bytes made from ghz-style JSON data, and its
//! metadata. Work that does not change per request (parsing the templates,
//! and encoding data that has no template at all) is done once here.

use std::{collections::BTreeMap, sync::Arc};

use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, Value};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
};

use super::template::{CallContext, MethodNames, Template, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "call {0:?} is not a method of verifyd.v1 or grpc.health.v1 (expected package.Service/Method)"
    )]
    UnknownMethod(String),
    #[error("{0} is a streaming method; verifyd-bench drives unary methods only")]
    Streaming(String),
    #[error("data must be a JSON object or a non-empty array of objects")]
    DataShape,
    #[error("data template: {0}")]
    Template(#[from] TemplateError),
    #[error("data for request {request_number} is not a valid {message}: {source}")]
    Data {
        request_number: u64,
        message: String,
        source: serde_json::Error,
    },
    #[error("metadata {0:?}: {1}")]
    Metadata(String, String),
}

/// The descriptors of every method bench can call: verifyd's API and the
/// standard health check.
pub fn descriptors() -> DescriptorPool {
    let mut pool = DescriptorPool::decode(verifyd::proto::FILE_DESCRIPTOR_SET)
        .expect("verifyd's descriptor set, built by build.rs, decodes");
    pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .expect("tonic-health's descriptor set decodes");
    pool
}

/// One unary method with its prepared data and metadata.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: MethodDescriptor,
    pub path: PathAndQuery,
    names: Arc<MethodNames>,
    /// Used round-robin by request number, as ghz uses a data array.
    bodies: Vec<Body>,
    metadata: Metadata,
}

#[derive(Debug, Clone)]
enum Body {
    Encoded(Bytes),
    Templated(Template),
}

#[derive(Debug, Clone)]
enum Metadata {
    Fixed(MetadataMap),
    Templated(Vec<(AsciiMetadataKey, Template)>),
}

impl Call {
    /// Resolves `call` and prepares `data` (ghz's JSON: an object, or an
    /// array of objects; none means an empty message) and `metadata`.
    /// Templated data is rendered for request 0 here, so a bad template or
    /// field fails before the run rather than in every request.
    pub fn resolve(
        call: &str,
        data: Option<&serde_json::Value>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, CallError> {
        let method = find_method(&descriptors(), call)
            .ok_or_else(|| CallError::UnknownMethod(call.to_owned()))?;
        if method.is_client_streaming() || method.is_server_streaming() {
            return Err(CallError::Streaming(method.full_name().to_owned()));
        }
        let service = method.parent_service();
        let path = format!("/{}/{}", service.full_name(), method.name())
            .parse()
            .map_err(|_| CallError::UnknownMethod(call.to_owned()))?;
        let names = Arc::new(MethodNames {
            fully_qualified_name: method.full_name().to_owned(),
            method_name: method.name().to_owned(),
            service_name: service.name().to_owned(),
            input_name: method.input().name().to_owned(),
            output_name: method.output().name().to_owned(),
            is_client_streaming: false,
            is_server_streaming: false,
        });

        let items = match data {
            None => vec![serde_json::json!({})],
            Some(object @ serde_json::Value::Object(_)) => vec![object.clone()],
            Some(serde_json::Value::Array(items))
                if !items.is_empty() && items.iter().all(serde_json::Value::is_object) =>
            {
                items.clone()
            }
            Some(_) => return Err(CallError::DataShape),
        };
        let input = method.input();
        let bodies = items
            .iter()
            .map(|item| {
                let template = Template::parse(&item.to_string())?;
                Ok(if template.is_constant() {
                    Body::Encoded(encode(&input, &template.render(&dummy(&names)), 0)?)
                } else {
                    Body::Templated(template)
                })
            })
            .collect::<Result<Vec<_>, CallError>>()?;

        let mut templated = Vec::new();
        for (key, value) in metadata {
            let bad = |why: &str| CallError::Metadata(key.clone(), why.to_owned());
            let key: AsciiMetadataKey = key
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| bad("is not a valid ASCII metadata key"))?;
            templated.push((key, Template::parse(value)?));
        }
        let metadata = if templated.iter().all(|(_, t)| t.is_constant()) {
            Metadata::Fixed(render_metadata(&templated, &dummy(&names))?)
        } else {
            Metadata::Templated(templated)
        };

        let call = Self {
            method,
            path,
            names,
            bodies,
            metadata,
        };
        call.request(0, "c0w0")?;
        Ok(call)
    }

    /// The request for request number `n`, sent by `worker_id`.
    pub fn request(&self, n: u64, worker_id: &str) -> Result<tonic::Request<Bytes>, CallError> {
        let cx = CallContext {
            request_number: n,
            worker_id,
            method: &self.names,
        };
        let body = match &self.bodies[(n % self.bodies.len() as u64) as usize] {
            Body::Encoded(bytes) => bytes.clone(),
            Body::Templated(t) => encode(&self.method.input(), &t.render(&cx), n)?,
        };
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = match &self.metadata {
            Metadata::Fixed(map) => map.clone(),
            Metadata::Templated(entries) => render_metadata(entries, &cx)?,
        };
        Ok(request)
    }

    /// The id of the verification in a response (`verification.id`, or a
    /// top-level `id`), for `--save-ids`.
    pub fn verification_id(&self, response: &[u8]) -> Option<String> {
        let message = DynamicMessage::decode(self.method.output(), response).ok()?;
        let holder = match message.get_field_by_name("verification").as_deref() {
            Some(Value::Message(v)) => v.clone(),
            _ => message,
        };
        match holder.get_field_by_name("id").as_deref() {
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            _ => None,
        }
    }
}

/// `package.Service/Method` or `package.Service.Method`, as ghz takes it.
fn find_method(pool: &DescriptorPool, call: &str) -> Option<MethodDescriptor> {
    let (service, method) = call.rsplit_once('/').or_else(|| call.rsplit_once('.'))?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)
}

fn dummy(names: &MethodNames) -> CallContext<'_> {
    CallContext {
        request_number: 0,
        worker_id: "c0w0",
        method: names,
    }
}

/// Protobuf JSON (as ghz and grpcurl take it) to the message's bytes.
fn encode(input: &MessageDescriptor, json: &str, n: u64) -> Result<Bytes, CallError> {
    let data_error = |source| CallError::Data {
        request_number: n,
        message: input.full_name().to_owned(),
        source,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(input.clone(), &mut de).map_err(data_error)?;
    de.end().map_err(data_error)?;
    Ok(message.encode_to_vec().into())
}

fn render_metadata(
    entries: &[(AsciiMetadataKey, Template)],
    cx: &CallContext<'_>,
) -> Result<MetadataMap, CallError> {
    let mut map = MetadataMap::new();
    for (key, template) in entries {
        let value: AsciiMetadataValue = template.render(cx).parse().map_err(|_| {
            CallError::Metadata(key.to_string(), "is not printable ASCII".to_owned())
        })?;
        map.insert(key.clone(), value);
    }
    Ok(map)
}

/// Passes bodies through as bytes: the request is encoded before the clock
/// starts and the response is not decoded, so latency is the server's and
/// the network's, not the client's protobuf work.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_call_spellings_resolve_and_streams_are_refused() {
        for call in [
            "verifyd.v1.VerificationService/GetVerification",
            "verifyd.v1.VerificationService.GetVerification",
            "grpc.health.v1.Health/Check",
        ] {
            let resolved = Call::resolve(call, None, &BTreeMap::new());
            assert!(resolved.is_ok(), "{call}: {resolved:?}");
        }
        assert!(matches!(
            Call::resolve(
                "verifyd.v1.VerificationService/WatchVerification",
                None,
                &BTreeMap::new()
            ),
            Err(CallError::Streaming(_))
        ));
        assert!(matches!(
            Call::resolve(
                "verifyd.v1.VerificationService/Nope",
                None,
                &BTreeMap::new()
            ),
            Err(CallError::UnknownMethod(_))
        ));
    }

    #[test]
    fn templated_data_differs_per_request_and_bad_fields_fail_early() {
        let data = serde_json::json!({"id": "VE{{.RequestNumber}}"});
        let call = Call::resolve(
            "verifyd.v1.VerificationService/GetVerification",
            Some(&data),
            &BTreeMap::new(),
        )
        .expect("resolves");
        let body = |n| call.request(n, "w").expect("request").into_inner();
        assert_eq!(
            verifyd::proto::GetVerificationRequest::decode(body(7))
                .expect("decodes")
                .id,
            "VE7"
        );
        let wrong = serde_json::json!({"identifier": "x"});
        assert!(matches!(
            Call::resolve(
                "verifyd.v1.VerificationService/GetVerification",
                Some(&wrong),
                &BTreeMap::new()
            ),
            Err(CallError::Data { .. })
        ));
    }
}
