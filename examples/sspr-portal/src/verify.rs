//! The verifyd client: a thin wrapper over the generated one that adds the
//! API key to every call and a deadline to each, and the translation of its
//! errors into words for the page (`explain`).

mod explain;

use std::{fmt, time::Duration};

use tonic::{
    Request, Status, Streaming,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

pub use explain::{Problem, ended_wording, explain, retry_wording, status_word};

use crate::{
    flow::VerificationId,
    proto::{
        CheckVerificationRequest, CheckVerificationResponse, GetVerificationRequest,
        ResendVerificationRequest, ResendVerificationResponse, StartVerificationRequest,
        StartVerificationResponse, Verification, WatchVerificationRequest,
        WatchVerificationResponse, verification_service_client::VerificationServiceClient,
    },
};

/// How long one call may take. A start waits for its send (verifyd's
/// `delivery.timeout`, at most 50 s); a watch's deadline covers only its
/// first answer, not the stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(55);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `authorization: Bearer <key>` to every call, when a key is set.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Bearer(<redacted>)",
            None => "Bearer(None)",
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Why the client could not be set up.
#[derive(Debug)]
pub enum ClientError {
    Uri(String),
    ApiKey,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Uri(e) => write!(f, "the verifyd address is not a valid URI: {e}"),
            ClientError::ApiKey => f.write_str("the verifyd API key must be printable ASCII"),
        }
    }
}

impl std::error::Error for ClientError {}

type Client = VerificationServiceClient<InterceptedService<Channel, Bearer>>;

/// verifyd's VerificationService, as the portal uses it.
#[derive(Debug, Clone)]
pub struct Verifyd {
    client: Client,
}

impl Verifyd {
    /// Connects on first use (and reconnects as needed), so the portal
    /// starts whether or not verifyd is up yet.
    pub fn connect_lazy(uri: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        if uri.starts_with("https://") {
            // TLS is left out of this example, see README.md.
            return Err(ClientError::Uri(
                "https:// is not supported by this example; use http:// to a local verifyd"
                    .to_owned(),
            ));
        }
        let endpoint = Endpoint::from_shared(uri.to_owned())
            .map_err(|e| ClientError::Uri(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let bearer = api_key
            .map(|key| format!("Bearer {key}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| ClientError::ApiKey)?;
        let client =
            VerificationServiceClient::with_interceptor(endpoint.connect_lazy(), Bearer(bearer));
        Ok(Verifyd { client })
    }

    pub async fn start(
        &self,
        request: StartVerificationRequest,
    ) -> Result<StartVerificationResponse, Status> {
        let mut client = self.client.clone();
        Ok(client.start_verification(request).await?.into_inner())
    }

    pub async fn resend(
        &self,
        request: ResendVerificationRequest,
    ) -> Result<ResendVerificationResponse, Status> {
        let mut client = self.client.clone();
        Ok(client.resend_verification(request).await?.into_inner())
    }

    pub async fn check(
        &self,
        id: &VerificationId,
        code: &str,
    ) -> Result<CheckVerificationResponse, Status> {
        let mut client = self.client.clone();
        let request = CheckVerificationRequest {
            id: id.as_str().to_owned(),
            code: code.to_owned(),
        };
        Ok(client.check_verification(request).await?.into_inner())
    }

    pub async fn get(&self, id: &VerificationId) -> Result<Verification, Status> {
        let mut client = self.client.clone();
        let request = GetVerificationRequest {
            id: id.as_str().to_owned(),
        };
        client
            .get_verification(request)
            .await?
            .into_inner()
            .verification
            .ok_or_else(|| Status::internal("verifyd answered without a verification"))
    }

    /// The verification's state now, then each change, ending after a
    /// final status.
    pub async fn watch(
        &self,
        id: &VerificationId,
    ) -> Result<Streaming<WatchVerificationResponse>, Status> {
        let mut client = self.client.clone();
        let request = WatchVerificationRequest {
            id: id.as_str().to_owned(),
        };
        Ok(client.watch_verification(request).await?.into_inner())
    }
}
