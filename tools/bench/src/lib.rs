//! `verifyd-bench`: a load generator for machines without ghz. It reads
//! ghz's config files (`loadtest/ghz/`), takes ghz's flags, and reports
//! with ghz's JSON field names and units, so one set of configs and one
//! report reader serve both tools. It calls any unary method of
//! `verifyd.v1` or `grpc.health.v1.Health` from JSON data, through
//! descriptors rather than generated code.

pub mod call;
pub mod config;
pub mod report;
pub mod run;
pub mod template;

use std::{path::PathBuf, time::Duration};

use clap::Args;

pub use self::{
    call::Call,
    config::{GhzConfig, load},
    report::Report,
    run::{BenchError, Outcome, Plan, Stop, run},
};

/// The command line of `verifyd-bench`.
#[derive(Debug, clap::Parser)]
#[command(name = "verifyd-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub args: BenchArgs,
}

/// ghz's flags (a flag given overrides the config file's setting), plus
/// `--api-key` and `--save-ids`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// host:port of the server, e.g. 127.0.0.1:50051.
    host: Option<String>,
    /// A ghz JSON config file, e.g. loadtest/ghz/start.json.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The method: package.Service/Method.
    #[arg(long)]
    call: Option<String>,
    /// The request as JSON (ghz templating: {{.RequestNumber}} ...).
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// A JSON file of request data; an array is used round-robin.
    #[arg(short = 'D', long = "data-file")]
    data_file: Option<String>,
    /// Request metadata as a JSON object of strings.
    #[arg(short = 'm', long)]
    metadata: Option<String>,
    /// A JSON file of request metadata.
    #[arg(short = 'M', long = "metadata-file")]
    metadata_file: Option<String>,
    /// Workers, each with one request in flight [default: 50].
    #[arg(short = 'c', long)]
    concurrency: Option<usize>,
    /// HTTP/2 connections the workers share [default: 1].
    #[arg(long)]
    connections: Option<usize>,
    /// Requests to send [default: 200].
    #[arg(short = 'n', long)]
    total: Option<u64>,
    /// Run for this long instead (Go syntax: 10s, 1m30s); total is ignored.
    #[arg(short = 'z', long, value_parser = config::parse_go_duration)]
    duration: Option<Duration>,
    /// Open loop at this many requests per second [default: closed loop].
    #[arg(short = 'r', long)]
    rps: Option<u32>,
    /// Per-request deadline; 0 for none [default: 20s].
    #[arg(short = 't', long, value_parser = config::parse_go_duration)]
    timeout: Option<Duration>,
    #[arg(long = "connect-timeout", value_parser = config::parse_go_duration)]
    connect_timeout: Option<Duration>,
    /// Plaintext HTTP/2 (no TLS).
    #[arg(long)]
    insecure: bool,
    /// PEM file of the CA that signed the server's certificate (TLS).
    #[arg(long)]
    cacert: Option<String>,
    /// A .proto file. Checked to exist; bench uses its built-in
    /// descriptors, the same contract.
    #[arg(long)]
    proto: Option<String>,
    /// Comma-separated directories to look for --proto in.
    #[arg(short = 'i', long = "import-paths", value_delimiter = ',')]
    import_paths: Option<Vec<String>>,
    /// The report's format.
    #[arg(short = 'O', long, value_parser = ["summary", "json"])]
    format: Option<String>,
    /// Write the report to this file instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// A name for the run, shown in the report.
    #[arg(long)]
    name: Option<String>,
    /// Threads for the load generator (ghz: cores to use); 1 runs it on a
    /// single-threaded runtime [default: one per core].
    #[arg(long)]
    cpus: Option<u32>,
    /// The API key, sent as `authorization: Bearer` in place of any the
    /// config carries. Best through the environment, which keeps it out of
    /// the process list.
    #[arg(long, env = verifyd::config::CLIENT_API_KEY_VAR, hide_env_values = true)]
    api_key: Option<String>,
    /// After the run, write the verification ids of the OK responses to
    /// this file as ghz data ([{"id": ...}, ...]), for Get and Check runs.
    #[arg(long = "save-ids")]
    save_ids: Option<PathBuf>,
}

fn json<T: serde::de::DeserializeOwned>(
    flag: &str,
    text: &Option<String>,
) -> Result<Option<T>, String> {
    text.as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| format!("{flag}: {e}"))
}

/// Runs `verifyd-bench`; errors come back as one line.
pub async fn main(args: BenchArgs) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => load(path).map_err(|e| e.to_string())?,
        None => GhzConfig::default(),
    };
    let flags = GhzConfig {
        proto: args.proto,
        import_paths: args.import_paths,
        call: args.call,
        host: args.host,
        insecure: args.insecure.then_some(true),
        cacert: args.cacert,
        data: json("--data", &args.data)?,
        data_file: args.data_file,
        metadata: json("--metadata", &args.metadata)?,
        metadata_file: args.metadata_file,
        concurrency: args.concurrency,
        connections: args.connections,
        total: args.total,
        duration: args.duration,
        rps: args.rps,
        timeout: args.timeout,
        connect_timeout: args.connect_timeout,
        format: args.format,
        output: args.output,
        name: args.name,
        tags: None,
        cpus: args.cpus,
    };
    let cfg = file.overridden_by(flags);
    let mut plan = Plan::from_config(&cfg, args.api_key.as_deref()).map_err(|e| e.to_string())?;
    plan.collect_ids = args.save_ids.is_some();
    let outcome = match cfg.cpus.filter(|&n| n > 0) {
        Some(threads) => run_on_threads(threads as usize, plan).await,
        None => run(&plan).await,
    }
    .map_err(|e| e.to_string())?;

    let text = match cfg.format.as_deref().unwrap_or("summary") {
        "summary" => outcome.report.summary(),
        "json" => serde_json::to_string(&outcome.report).map_err(|e| e.to_string())?,
        other => {
            return Err(format!(
                "format {other:?}: verifyd-bench writes summary or json"
            ));
        }
    };
    match &cfg.output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?,
        None => {
            use std::io::Write as _;
            // A closed stdout (piped into `head`) is not an error here.
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }
    if let Some(path) = &args.save_ids {
        let data: Vec<_> = outcome
            .ids
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        let text = serde_json::to_string(&data).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs `plan` on a runtime of its own with `threads` threads, so the load
/// generator's share of the machine is bounded (ghz's `--cpus`). One thread
/// means a single-threaded runtime: no wakeups across threads, the least
/// client work per request.
async fn run_on_threads(threads: usize, plan: Plan) -> Result<Outcome, BenchError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        .enable_all()
        .build();
        let _ = done.send(match runtime {
            Ok(runtime) => runtime.block_on(run(&plan)),
            Err(e) => Err(BenchError::Settings(format!("bench runtime: {e}"))),
        });
    });
    result
        .await
        .map_err(|_| BenchError::Settings("the bench thread stopped".to_owned()))?
}
