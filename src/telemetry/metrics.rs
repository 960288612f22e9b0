//! Prometheus metrics, served at `/metrics` on the admin listener.
//!
//! Every label has a bounded set of values: tenants and providers come from
//! the configuration, methods, codes, channels, statuses, outcomes, limits
//! and store operations from the code. No verification id, phone number,
//! address or IP address is ever a label.
//!
//! One [`Metrics`] belongs to one application (tests run several in one
//! process, each with its own), handed to the parts that count.

use std::{fmt::Write as _, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Metric, Registry, Unit},
};

use crate::domain::{Channel, Status, TenantId};

impl EncodeLabelValue for TenantId {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantChannel {
    tenant: TenantId,
    channel: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Ended {
    tenant: TenantId,
    channel: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    tenant: TenantId,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SendLabels {
    channel: &'static str,
    provider: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

/// A provider webhook refused before anything in it was read. `provider`
/// is a configured name, or empty for a path naming none (the path is the
/// sender's to choose, so it is never a label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookRefusal {
    provider: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    tenant: TenantId,
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabel {
    tenant: TenantId,
}

/// A number lookup: where its answer came from (`cached`, `fetched`,
/// `failed`, `budget_spent`) and what it decided (`proceed`, or the
/// refusal's reason).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LookupLabels {
    tenant: TenantId,
    source: &'static str,
    decision: &'static str,
}

/// A fallback step: its channel and what became of it (`sent`, or why it
/// ended the workflow).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    tenant: TenantId,
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreLabels {
    backend: &'static str,
    operation: &'static str,
}

/// How a CheckVerification ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckCount {
    Approved,
    /// A wrong code (the attempt was spent).
    Rejected,
    /// The verification was no longer pending.
    NotPending,
    NotFound,
    RateLimited,
    /// The store failed: nothing was compared.
    Unavailable,
}

impl CheckCount {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::NotPending => "not_pending",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

fn latency_buckets() -> Histogram {
    // 100 µs to ~6.5 s: a memory-store RPC, a Redis round trip and a
    // provider call each land in the middle of the range.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc_duration: Family<RpcLabels, Histogram>,
    started: Family<TenantChannel, Counter>,
    ended: Family<Ended, Counter>,
    checks: Family<CheckLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    provider_duration: Family<ProviderLabels, Histogram>,
    circuit_open: Family<ProviderLabels, Gauge>,
    rate_limited: Family<LimitLabels, Counter>,
    webhooks_refused: Family<WebhookRefusal, Counter>,
    prefix_blocks: Family<TenantLabel, Counter>,
    lookups: Family<LookupLabels, Counter>,
    fallback_steps: Family<FallbackLabels, Counter>,
    store_duration: Family<StoreLabels, Histogram>,
    store_errors: Family<StoreLabels, Counter>,
    store_unacknowledged: Family<StoreLabels, Counter>,
    watch_streams: Family<TenantLabel, Gauge>,
    sends_in_flight: Gauge,
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("verifyd");
        let r = &mut registry;
        Self {
            rpc_duration: latencies(
                r,
                "rpc_duration",
                "VerificationService RPCs by method and gRPC status code, from request to answer",
            ),
            started: registered(r, "verifications_started", "Verifications created"),
            ended: registered(
                r,
                "verifications_ended",
                "Verifications that reached a final status (approved, canceled, expired, denied, \
             max_attempts_reached, failed)",
            ),
            checks: registered(r, "checks", "CheckVerification calls by outcome"),
            sends: registered(
                r,
                "sends",
                "Tries to hand a message or call to a provider, by result",
            ),
            provider_duration: latencies(
                r,
                "provider_request_duration",
                "Requests to a provider's API, each try on its own",
            ),
            circuit_open: registered(
                r,
                "provider_circuit_open",
                "1 while a provider's circuit breaker skips it (open or probing), else 0",
            ),
            rate_limited: registered(
                r,
                "rate_limited",
                "Requests refused by a rate limit, by limit",
            ),
            webhooks_refused: registered(
                r,
                "webhooks_refused",
                "Provider webhooks refused unread: signature missing or bad (signature), or a \
             provider that is not configured (provider)",
            ),
            prefix_blocks: registered(
                r,
                "prefix_blocks",
                "Number prefixes blocked after tripping starts_per_prefix (SMS pumping guard)",
            ),
            lookups: registered(r, "lookups", "Number lookups by answer source and decision"),
            fallback_steps: registered(r, "fallback_steps", "Fallback steps by outcome"),
            store_duration: latencies(
                r,
                "store_operation_duration",
                "Store operations (Redis scripts and commands), errors included",
            ),
            store_errors: registered(
                r,
                "store_errors",
                "Store operations that failed or timed out",
            ),
            store_unacknowledged: registered(
                r,
                "store_unacknowledged",
                "Changes Redis made that fewer replicas than \
             store.redis.wait_replicas acknowledged in time (the caller got UNAVAILABLE)",
            ),
            watch_streams: registered(r, "watch_streams", "Open WatchVerification streams"),
            sends_in_flight: registered(
                r,
                "sends_in_flight",
                "Starts and resends running in this process, sends included \
             (delivery.max_sends_in_flight caps them)",
            ),
            ready: registered(
                r,
                "ready",
                "1 while serving (the store answers), 0 otherwise",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn rpc(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.rpc_duration
            .get_or_create(&RpcLabels {
                method,
                code: code_name(code),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a status change: a creation (`from` is `None`) or a move to a
    /// final status.
    pub fn status_changed(
        &self,
        tenant: &TenantId,
        channel: Channel,
        from: Option<Status>,
        to: Status,
    ) {
        let channel = channel.as_str();
        if from.is_none() {
            self.started
                .get_or_create(&TenantChannel {
                    tenant: tenant.clone(),
                    channel,
                })
                .inc();
        }
        if to.is_terminal() && from != Some(to) {
            self.ended
                .get_or_create(&Ended {
                    tenant: tenant.clone(),
                    channel,
                    status: to.as_str(),
                })
                .inc();
        }
    }

    pub fn check(&self, tenant: &TenantId, outcome: CheckCount) {
        self.checks
            .get_or_create(&CheckLabels {
                tenant: tenant.clone(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// One try at a provider: its result and how long it took.
    pub fn provider_try(&self, channel: Channel, provider: &str, ok: bool, took: Duration) {
        self.sends
            .get_or_create(&SendLabels {
                channel: channel.as_str(),
                provider: provider.to_owned(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
        self.provider_duration
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A provider the breaker skipped without trying it.
    pub fn provider_skipped(&self, channel: Channel, provider: &str) {
        self.sends
            .get_or_create(&SendLabels {
                channel: channel.as_str(),
                provider: provider.to_owned(),
                result: "skipped",
            })
            .inc();
    }

    pub fn set_circuit_open(&self, provider: &str, open: bool) {
        self.circuit_open
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .set(i64::from(open));
    }

    pub fn rate_limited(&self, tenant: &TenantId, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                tenant: tenant.clone(),
                limit,
            })
            .inc();
    }

    /// `provider` must be a configured provider's name, or empty.
    pub fn webhook_refused(&self, provider: &str, reason: &'static str) {
        self.webhooks_refused
            .get_or_create(&WebhookRefusal {
                provider: provider.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn prefix_blocked(&self, tenant: &TenantId) {
        self.prefix_blocks
            .get_or_create(&TenantLabel {
                tenant: tenant.clone(),
            })
            .inc();
    }

    pub fn lookup(&self, tenant: &TenantId, source: &'static str, decision: &'static str) {
        self.lookups
            .get_or_create(&LookupLabels {
                tenant: tenant.clone(),
                source,
                decision,
            })
            .inc();
    }

    pub fn fallback_step(&self, tenant: &TenantId, channel: Channel, outcome: &'static str) {
        self.fallback_steps
            .get_or_create(&FallbackLabels {
                tenant: tenant.clone(),
                channel: channel.as_str(),
                outcome,
            })
            .inc();
    }

    pub fn store_operation(
        &self,
        backend: &'static str,
        operation: &'static str,
        ok: bool,
        took: Duration,
    ) {
        let labels = StoreLabels { backend, operation };
        self.store_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// A change stood on the Redis primary without the replicas'
    /// acknowledgement asked for.
    pub fn store_unacknowledged(&self, operation: &'static str) {
        self.store_unacknowledged
            .get_or_create(&StoreLabels {
                backend: "redis",
                operation,
            })
            .inc();
    }

    pub fn set_watch_streams(&self, tenant: &TenantId, open: u32) {
        self.watch_streams
            .get_or_create(&TenantLabel {
                tenant: tenant.clone(),
            })
            .set(i64::from(open));
    }

    /// A start or resend took a send slot.
    pub fn send_began(&self) {
        self.sends_in_flight.inc();
    }

    /// A start or resend gave its send slot back.
    pub fn send_ended(&self) {
        self.sends_in_flight.dec();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
}

/// The gRPC status code's canonical name, as in grpc-go's metrics.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A new metric, registered under `name`, for the caller to keep.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// A new family of latency histograms in seconds, registered under `name`.
fn latencies<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq,
    Family<L, Histogram>: Metric,
{
    let metric = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_each_family_with_its_labels() {
        let metrics = Metrics::new();
        let tenant = TenantId::parse("acme").expect("tenant");
        metrics.rpc(
            "CheckVerification",
            tonic::Code::NotFound,
            Duration::from_millis(2),
        );
        metrics.status_changed(&tenant, Channel::Sms, None, Status::Pending);
        metrics.status_changed(
            &tenant,
            Channel::Sms,
            Some(Status::Pending),
            Status::Approved,
        );
        metrics.rate_limited(&tenant, "starts_per_ip");
        let text = metrics.render();
        for line in [
            "verifyd_rpc_duration_seconds_count{method=\"CheckVerification\",code=\"NOT_FOUND\"} 1",
            "verifyd_verifications_started_total{tenant=\"acme\",channel=\"sms\"} 1",
            "verifyd_verifications_ended_total{tenant=\"acme\",channel=\"sms\",status=\"approved\"} 1",
            "verifyd_rate_limited_total{tenant=\"acme\",limit=\"starts_per_ip\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
