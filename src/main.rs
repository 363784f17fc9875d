//! The `coldtrail` command: CLI entry points and the wiring of store, ingest, detect and query.

mod commands;
mod ingest_command;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// coldtrail keeps the logs, traces and audit events of serverless functions and finds the attacks in them.
#[derive(Parser, Debug)]
#[command(name = "coldtrail", version, about, long_about = None)]
struct Cli {
    /// Data directory: write-ahead log, node key, and (unless --location says otherwise) segments and ledger.
    #[arg(long, global = true, env = "COLDTRAIL_DATA", default_value = "./coldtrail-data")]
    data: PathBuf,
    /// Where segments and the ledger live when not in the data directory: a directory or s3://bucket/prefix.
    #[arg(long, global = true, env = "COLDTRAIL_LOCATION")]
    location: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingest Lambda logs, CloudWatch exports and subscription payloads, CloudTrail, X-Ray and OTLP from
    /// files, directories or stdin (`-`).
    Ingest(ingest_command::IngestArgs),
    /// Check every ledger chain and every segment against it; exit 0 only when all is intact.
    Verify(commands::VerifyArgs),
    /// Show the tables, segments, rows and ledger heads of a store without opening it for writing.
    Info(commands::InfoArgs),
    /// Print this node's signed ledger head (to anchor outside coldtrail) or every ledger entry.
    Ledger(commands::LedgerArgs),
    /// Flush hot rows into segments, apply retention and compact small segments.
    Maintain(commands::MaintainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("COLDTRAIL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let paths = commands::Paths { data: cli.data, location: cli.location };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Ingest(args) => ingest_command::ingest(&paths, args).await,
            Command::Verify(args) => commands::verify(&paths, args).await,
            Command::Info(args) => commands::info(&paths, args).await,
            Command::Ledger(args) => commands::ledger(&paths, args).await,
            Command::Maintain(args) => commands::maintain(&paths, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
