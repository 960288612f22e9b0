//! `verifyd-bench`: load-test a running verifyd with ghz's configs and
//! flags, reporting as ghz does (for machines without ghz).

use std::process::ExitCode;

use clap::Parser as _;
use verifyd_bench::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    match verifyd_bench::main(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verifyd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
