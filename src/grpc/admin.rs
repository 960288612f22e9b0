//! The operator API (AdminService): on a listener of its own
//! (`[admin_api]`), never the tenant API's nor the admin HTTP listener's,
//! and with operator tokens, which no tenant key satisfies (configuration
//! refuses a digest that is both). Like tenant keys, only the tokens'
//! SHA-256 digests are configured. Every call is audited (`admin_call`,
//! whatever its outcome, refused credentials included), naming the
//! operator by its token's place in `admin_api.token_sha256` (`#1`, ...):
//! nothing derived from the token itself, which a weak token could be
//! guessed back from.

use std::{collections::HashMap, future::Future, sync::Arc};

use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

use super::{
    convert::{self, Violations},
    status,
};
use crate::{
    domain::{Destination, TenantId, Verification},
    proto::{self, admin_service_server::AdminService},
    service::{
        Verifier,
        admin::{AdminError, BlockScope, MAX_LISTED, SafeEntry},
    },
    telemetry,
};

pub use proto::admin_service_server::AdminServiceServer;

#[derive(Debug, Clone)]
pub struct AdminApi {
    verifier: Arc<Verifier>,
    /// The operators' tokens' SHA-256 digests, each with its place in the
    /// configuration, which names the operator.
    operators: Arc<HashMap<[u8; 32], usize>>,
}

impl AdminApi {
    /// `token_sha256` as validated configuration has it (64 hex digits
    /// each).
    pub fn new(verifier: Arc<Verifier>, token_sha256: &[String]) -> Self {
        let operators = token_sha256
            .iter()
            .enumerate()
            .filter_map(|(i, digest)| {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(digest, &mut bytes).ok()?;
                Some((bytes, i + 1))
            })
            .collect();
        Self {
            verifier,
            operators: Arc::new(operators),
        }
    }

    pub fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }

    /// The operator the request comes from, as the audit names it.
    ///
    /// # Errors
    /// UNAUTHENTICATED when the token is missing, malformed or unknown.
    fn operator<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing credentials: send authorization: Bearer <operator token>",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.operators.get(&digest) {
            Some(place) => Ok(format!("#{place}")),
            None => Err(Status::unauthenticated("unknown operator token")),
        }
    }
}

fn lift_block_request(
    req: &proto::LiftBlockRequest,
) -> Result<(TenantId, Destination, BlockScope), Violations> {
    let mut bad = Vec::new();
    let tenant = tenant_field(&req.tenant, &mut bad);
    let to = Destination::parse(&req.destination)
        .map_err(|e| bad.push(FieldViolation::new("destination", e.to_string())))
        .ok();
    let scope = match proto::BlockScope::try_from(req.scope) {
        Ok(proto::BlockScope::Destination) => Some(BlockScope::Destination),
        Ok(proto::BlockScope::Prefix) => {
            if matches!(to, Some(Destination::Email(_))) {
                bad.push(FieldViolation::new(
                    "scope",
                    "BLOCK_SCOPE_PREFIX applies to phone numbers only",
                ));
            }
            Some(BlockScope::Prefix)
        }
        Ok(proto::BlockScope::Unspecified) | Err(_) => {
            bad.push(FieldViolation::new(
                "scope",
                "is required: BLOCK_SCOPE_DESTINATION or BLOCK_SCOPE_PREFIX",
            ));
            None
        }
    };
    match (tenant, to, scope) {
        (Some(tenant), Some(to), Some(scope)) if bad.is_empty() => Ok((tenant, to, scope)),
        _ => Err(Violations(bad)),
    }
}

fn admin_refused(e: AdminError) -> Status {
    match e {
        AdminError::UnknownTenant => {
            status::invalid_argument(Violations(vec![FieldViolation::new(
                "tenant",
                e.to_string(),
            )]))
        }
        AdminError::NotAPhone => status::invalid_argument(Violations(vec![FieldViolation::new(
            "scope",
            e.to_string(),
        )])),
        AdminError::Store(e) => status::store(e),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn lift_block(
        &self,
        request: Request<proto::LiftBlockRequest>,
    ) -> Result<Response<proto::LiftBlockResponse>, Status> {
        let span = telemetry::rpc_span("LiftBlock", request.metadata());
        let operator = self.operator(&request);
        let answer = async {
            let operator = operator.clone()?;
            let (tenant, to, scope) =
                lift_block_request(request.get_ref()).map_err(status::invalid_argument)?;
            let lifted = self
                .verifier
                .lift_block(&operator, &tenant, &to, scope)
                .await
                .map_err(admin_refused)?;
            Ok(Response::new(proto::LiftBlockResponse { lifted }))
        };
        self.observe("LiftBlock", span, &operator, answer).await
    }

    async fn add_safe_list_entry(
        &self,
        request: Request<proto::AddSafeListEntryRequest>,
    ) -> Result<Response<proto::AddSafeListEntryResponse>, Status> {
        let span = telemetry::rpc_span("AddSafeListEntry", request.metadata());
        let operator = self.operator(&request);
        let req = request.get_ref();
        let answer = async {
            let added = self
                .change_safe_list(&operator, &req.tenant, req.entry.as_ref(), true)
                .await?;
            Ok(Response::new(proto::AddSafeListEntryResponse { added }))
        };
        self.observe("AddSafeListEntry", span, &operator, answer)
            .await
    }

    async fn remove_safe_list_entry(
        &self,
        request: Request<proto::RemoveSafeListEntryRequest>,
    ) -> Result<Response<proto::RemoveSafeListEntryResponse>, Status> {
        let span = telemetry::rpc_span("RemoveSafeListEntry", request.metadata());
        let operator = self.operator(&request);
        let req = request.get_ref();
        let answer = async {
            let removed = self
                .change_safe_list(&operator, &req.tenant, req.entry.as_ref(), false)
                .await?;
            Ok(Response::new(proto::RemoveSafeListEntryResponse {
                removed,
            }))
        };
        self.observe("RemoveSafeListEntry", span, &operator, answer)
            .await
    }

    async fn list_destination_verifications(
        &self,
        request: Request<proto::ListDestinationVerificationsRequest>,
    ) -> Result<Response<proto::ListDestinationVerificationsResponse>, Status> {
        let span = telemetry::rpc_span("ListDestinationVerifications", request.metadata());
        let operator = self.operator(&request);
        let answer = async {
            let operator = operator.clone()?;
            let (tenant, to, limit) =
                list_request(request.get_ref()).map_err(status::invalid_argument)?;
            let found = self
                .verifier
                .recent_verifications(&operator, &tenant, &to, limit)
                .await
                .map_err(admin_refused)?;
            Ok(Response::new(proto::ListDestinationVerificationsResponse {
                verifications: found.iter().map(masked).collect(),
            }))
        };
        self.observe("ListDestinationVerifications", span, &operator, answer)
            .await
    }
}

impl AdminApi {
    /// Adds (`listed`) or removes a safe-list entry, as the operator asks:
    /// whether that changed the list.
    async fn change_safe_list(
        &self,
        operator: &Result<String, Status>,
        tenant: &str,
        entry: Option<&proto::SafeListEntry>,
        listed: bool,
    ) -> Result<bool, Status> {
        let operator = operator.clone()?;
        let (tenant, entry) = safe_list_request(tenant, entry).map_err(status::invalid_argument)?;
        self.verifier
            .set_safe_listed(&operator, &tenant, &entry, listed)
            .await
            .map_err(admin_refused)
    }

    /// Runs one RPC in its span, then records its time and status code,
    /// and audits it, whatever became of it: an operator's call that
    /// failed, or a call with no operator's token, is on the record too.
    async fn observe<T>(
        &self,
        method: &'static str,
        span: tracing::Span,
        operator: &Result<String, Status>,
        rpc: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let result = super::observed(self.verifier.metrics(), method, span, rpc).await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        tracing::info!(
            target: "verifyd::audit",
            event = "admin_call",
            method,
            operator = operator.as_deref().unwrap_or("unauthenticated"),
            code = ?code,
            "operator API call"
        );
        result
    }
}

/// A verification as a helpdesk sees it: no id (an id is its session's
/// capability, never handed out by destination), nor the caller's
/// reference and tags (which may name a session too), the destination and
/// extension masked.
fn masked(v: &Verification) -> proto::Verification {
    let mut shown = convert::verification(v);
    shown.id = String::new();
    shown.reference = String::new();
    shown.tags.clear();
    shown.to = v.to.masked();
    if let Some(extension) = &v.extension {
        shown.extension = extension.masked();
    }
    shown
}

fn tenant_field(value: &str, bad: &mut Vec<FieldViolation>) -> Option<TenantId> {
    let tenant = TenantId::parse(value);
    if tenant.is_none() {
        bad.push(FieldViolation::new("tenant", "must be a tenant id"));
    }
    tenant
}

fn safe_list_request(
    tenant: &str,
    entry: Option<&proto::SafeListEntry>,
) -> Result<(TenantId, SafeEntry), Violations> {
    use proto::safe_list_entry::Entry;
    let mut bad = Vec::new();
    let tenant = tenant_field(tenant, &mut bad);
    let entry = match entry.and_then(|e| e.entry.as_ref()) {
        Some(Entry::Number(number)) => match Destination::parse(number) {
            Ok(to @ Destination::Phone(_)) => Some(SafeEntry::Number(to)),
            _ => {
                bad.push(FieldViolation::new(
                    "entry.number",
                    "must be an E.164 phone number",
                ));
                None
            }
        },
        Some(Entry::Prefix(prefix)) => {
            let entry = SafeEntry::prefix(prefix);
            if entry.is_none() {
                bad.push(FieldViolation::new(
                    "entry.prefix",
                    "must be + and 5 to 14 digits",
                ));
            }
            entry
        }
        None => {
            bad.push(FieldViolation::new(
                "entry",
                "is required: a number or a prefix",
            ));
            None
        }
    };
    match (tenant, entry) {
        (Some(tenant), Some(entry)) if bad.is_empty() => Ok((tenant, entry)),
        _ => Err(Violations(bad)),
    }
}

fn list_request(
    req: &proto::ListDestinationVerificationsRequest,
) -> Result<(TenantId, Destination, usize), Violations> {
    let mut bad = Vec::new();
    let tenant = tenant_field(&req.tenant, &mut bad);
    let to = Destination::parse(&req.destination)
        .map_err(|e| bad.push(FieldViolation::new("destination", e.to_string())))
        .ok();
    let limit = match usize::try_from(req.limit) {
        Ok(0) => Some(DEFAULT_LISTED),
        Ok(limit) if limit <= MAX_LISTED => Some(limit),
        _ => {
            bad.push(FieldViolation::new(
                "limit",
                format!("must be at most {MAX_LISTED}"),
            ));
            None
        }
    };
    match (tenant, to, limit) {
        (Some(tenant), Some(to), Some(limit)) if bad.is_empty() => Ok((tenant, to, limit)),
        _ => Err(Violations(bad)),
    }
}

/// How many a listing returns when the request says 0.
const DEFAULT_LISTED: usize = 10;
