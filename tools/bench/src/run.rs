//! Drives one method: `concurrency` workers over `connections` HTTP/2
//! connections, each sending its next request when the last one answers
//! (closed loop) or when the request's slot in a fixed-rate schedule comes
//! (open loop, `rps`), until `total` requests or `duration` are done.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{
    client::Grpc,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use super::{
    call::{Call, CallError, RawCodec},
    config::GhzConfig,
    report::{Report, ReportOptions, Tally},
};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("connect to {host}: {}", causes(.source))]
    Connect {
        host: String,
        source: tonic::transport::Error,
    },
}

/// An error and its causes, e.g. "transport error: tcp connect error:
/// Connection refused": tonic's own text alone says too little.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Everything a run needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub call: Call,
    pub host: String,
    /// None: plaintext (`insecure`).
    pub tls: Option<ClientTlsConfig>,
    pub concurrency: usize,
    pub connections: usize,
    pub stop: Stop,
    /// Requests per second, open loop; None: closed loop.
    pub rps: Option<u32>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// Keep the verification id of every OK response (`--save-ids`).
    pub collect_ids: bool,
    pub name: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Total(u64),
    Duration(Duration),
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    /// With `collect_ids`: the verification ids the OK responses carried.
    pub ids: Vec<String>,
}

impl Plan {
    /// From a ghz config (a file with flags over it), with ghz's defaults:
    /// 200 requests, 50 workers, 1 connection, 20 s timeout, 10 s connect
    /// timeout. `api_key`, when given, becomes `authorization: Bearer`,
    /// replacing any the config carries.
    pub fn from_config(cfg: &GhzConfig, api_key: Option<&str>) -> Result<Self, BenchError> {
        let settings = BenchError::Settings;
        let call = cfg
            .call
            .as_deref()
            .ok_or_else(|| settings("no call: give --call or \"call\" in the config".into()))?;
        let host = cfg
            .host
            .clone()
            .ok_or_else(|| settings("no host: give it as an argument or \"host\"".into()))?;
        if let Some(proto) = &cfg.proto {
            // ghz compiles it; bench has the same contract built in, so the
            // file only has to be there for ghz to be able to use it.
            let found = std::iter::once(Path::new(proto).to_path_buf())
                .chain(
                    cfg.import_paths
                        .iter()
                        .flatten()
                        .map(|dir| Path::new(dir).join(proto)),
                )
                .any(|p| p.is_file());
            if !found {
                return Err(settings(format!("proto file {proto} not found")));
            }
        }
        let data = match &cfg.data_file {
            Some(path) => Some(read_json(path)?),
            None => cfg.data.clone(),
        };
        let mut metadata = match &cfg.metadata_file {
            Some(path) => serde_json::from_value(read_json(path)?).map_err(|e| {
                settings(format!("{path}: metadata must map names to strings: {e}"))
            })?,
            None => cfg.metadata.clone().unwrap_or_default(),
        };
        if let Some(key) = api_key {
            metadata.retain(|name, _| !name.eq_ignore_ascii_case("authorization"));
            metadata.insert("authorization".to_owned(), format!("Bearer {key}"));
        }
        let call = Call::resolve(call, data.as_ref(), &metadata)?;

        let concurrency = cfg.concurrency.unwrap_or(50);
        let connections = cfg.connections.unwrap_or(1);
        if concurrency == 0 || connections == 0 || connections > concurrency {
            return Err(settings(
                "concurrency and connections must be at least 1, and connections at most concurrency"
                    .into(),
            ));
        }
        let stop = match cfg.duration.filter(|d| !d.is_zero()) {
            Some(d) => Stop::Duration(d),
            None => Stop::Total(cfg.total.unwrap_or(200)),
        };
        let tls = if cfg.insecure.unwrap_or(false) {
            None
        } else {
            let path = cfg.cacert.as_deref().ok_or_else(|| {
                settings(
                    "TLS needs cacert (verifyd-bench trusts no system roots); for plaintext, set insecure"
                        .into(),
                )
            })?;
            let pem = std::fs::read(path).map_err(|e| settings(format!("{path}: {e}")))?;
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        };
        Ok(Self {
            call,
            host,
            tls,
            concurrency,
            connections,
            stop,
            rps: cfg.rps.filter(|&r| r > 0),
            timeout: Some(cfg.timeout.unwrap_or(Duration::from_secs(20))).filter(|t| !t.is_zero()),
            connect_timeout: cfg.connect_timeout.unwrap_or(Duration::from_secs(10)),
            collect_ids: false,
            name: cfg.name.clone(),
            tags: cfg.tags.clone(),
        })
    }
}

fn read_json(path: &str) -> Result<serde_json::Value, BenchError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| BenchError::Settings(format!("{path}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| BenchError::Settings(format!("{path}: {e}")))
}

/// Runs `plan` to the end.
pub async fn run(plan: &Plan) -> Result<Outcome, BenchError> {
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        channels.push(connect(plan).await?);
    }
    let plan = Arc::new(plan.clone());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|w| {
            let connection = w % plan.connections;
            tokio::spawn(worker(
                plan.clone(),
                channels[connection].clone(),
                format!("c{connection}w{w}"),
                next.clone(),
                start,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    let mut ids = Vec::new();
    for worker in workers {
        let (t, worker_ids) = worker
            .await
            .map_err(|e| BenchError::Settings(format!("worker failed: {e}")))??;
        tally.merge(t);
        ids.extend(worker_ids);
    }
    let wall = start.elapsed();
    let (end_reason, total, duration) = match plan.stop {
        Stop::Total(n) => ("normal", Some(n), None),
        Stop::Duration(d) => ("timeout", None, Some(nanos(d))),
    };
    let options = ReportOptions {
        call: plan.call.method.full_name().to_owned(),
        host: plan.host.clone(),
        insecure: plan.tls.is_none(),
        concurrency: plan.concurrency,
        connections: plan.connections,
        total,
        duration,
        rps: plan.rps,
        timeout: plan.timeout.map(nanos),
    };
    let mut report = Report::new(tally, wall, end_reason, options);
    report.name.clone_from(&plan.name);
    report.tags.clone_from(&plan.tags);
    Ok(Outcome { report, ids })
}

async fn connect(plan: &Plan) -> Result<Channel, BenchError> {
    let scheme = if plan.tls.is_some() { "https" } else { "http" };
    let uri = if plan.host.contains("://") {
        plan.host.clone()
    } else {
        format!("{scheme}://{}", plan.host)
    };
    let connect_error = |source| BenchError::Connect {
        host: plan.host.clone(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(connect_error)?
        .connect_timeout(plan.connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &plan.tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(connect_error)?;
    }
    // Each connect() is its own HTTP/2 connection.
    endpoint.connect().await.map_err(connect_error)
}

async fn worker(
    plan: Arc<Plan>,
    channel: Channel,
    worker_id: String,
    next: Arc<AtomicU64>,
    start: Instant,
) -> Result<(Tally, Vec<String>), BenchError> {
    let mut grpc = Grpc::new(channel);
    let mut tally = Tally::default();
    let mut ids = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        // Open loop: request n belongs at start + n / rps, whether or not
        // earlier ones have answered (as long as a worker is free).
        let due = plan
            .rps
            .map(|rps| start + Duration::from_secs_f64(n as f64 / f64::from(rps)));
        match plan.stop {
            Stop::Total(total) if n >= total => break,
            Stop::Duration(d) if due.unwrap_or_else(Instant::now) >= start + d => break,
            _ => {}
        }
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let mut request = plan.call.request(n, &worker_id)?;
        if let Some(timeout) = plan.timeout {
            request.set_timeout(timeout);
        }
        let sent = Instant::now();
        let result = match grpc.ready().await {
            Ok(()) => {
                let call = grpc.unary(request, plan.call.path.clone(), RawCodec);
                match plan.timeout {
                    Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(
                            "context deadline exceeded",
                        ))
                    }),
                    None => call.await,
                }
            }
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        let latency = sent.elapsed();
        match &result {
            Ok(response) => {
                tally.record(latency, Ok(()));
                if plan.collect_ids {
                    ids.extend(plan.call.verification_id(response.get_ref()));
                }
            }
            Err(status) => tally.record(latency, Err(status)),
        }
    }
    Ok((tally, ids))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
