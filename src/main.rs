//! The `coldtrail` command: CLI entry points and the wiring of store, ingest, detect and query.

/// `println!` for command output that ends the process quietly when stdout is a closed pipe
/// (`coldtrail info | head`), instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

use std::sync::atomic::{AtomicBool, Ordering};

mod commands;
mod config;
mod demo;
mod detection;
mod generate;
mod http_ingest;
mod ingest_command;
mod serve;
mod sql_command;

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
    /// files, directories, stdin (`-`), `s3://`, `kafka://` or an `http://` endpoint.
    Ingest(ingest_command::IngestArgs),
    /// Check every ledger chain and every segment against it; exit 0 only when all is intact.
    Verify(commands::VerifyArgs),
    /// Show the tables, segments, rows and ledger heads of a store without opening it for writing.
    Info(commands::InfoArgs),
    /// Print this node's signed ledger head (to anchor outside coldtrail) or every ledger entry.
    Ledger(commands::LedgerArgs),
    /// Flush hot rows into segments, apply retention and compact small segments.
    Maintain(commands::MaintainArgs),
    /// Print the columns and Arrow types of the stored tables (schema version included).
    Schema(commands::SchemaArgs),
    /// Serve SQL over the PostgreSQL protocol and HTTP, with maintenance, until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Run one SQL statement against the data directory or a running server (--server).
    Sql(sql_command::SqlArgs),
    /// Replay stored invocations through the anomaly detectors and store the alerts they raise.
    Detect(detection::DetectArgs),
    /// Run the univariate anomaly detector over a `timestamp,value` CSV file and write
    /// `timestamp,value,anomaly_score` (NAB's results format).
    DetectSeries(detection::DetectSeriesArgs),
    /// Run the security detections (injection, risky Lambda changes, trail tampering, credentials used
    /// outside Lambda, authorization bursts, new callers, resource abuse, Sigma rules) over stored history.
    Hunt(detection::HuntArgs),
    /// The whole pipeline on a generated fleet with attack stories inside it, with the SQL servers running.
    Demo(demo::DemoArgs),
    /// Write the demo's generated workload (a fleet of functions with daily cycles) into the store.
    Generate(generate::GenerateArgs),
}

/// Whether a closed stdout stops the process cleanly (a long-running command drains and seals) instead
/// of ending it at once.
static DRAIN_WHEN_STDOUT_CLOSES: AtomicBool = AtomicBool::new(false);
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDOUT_CLOSED_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// For long-running commands: when the reader of stdout goes away (`coldtrail demo | head`), stop as
/// on Ctrl-C, with the drain, instead of exiting with rows only in the write-ahead log.
pub fn drain_when_stdout_closes() {
    DRAIN_WHEN_STDOUT_CLOSES.store(true, Ordering::SeqCst);
}

/// Resolves once stdout has been closed under `drain_when_stdout_closes`.
pub async fn stdout_closed() {
    loop {
        let notified = STDOUT_CLOSED_NOTIFY.notified();
        if STDOUT_CLOSED.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

/// Writes one line of command output; see `outln!`.
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::SeqCst) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            if !DRAIN_WHEN_STDOUT_CLOSES.load(Ordering::SeqCst) {
                std::process::exit(0);
            }
            if !STDOUT_CLOSED.swap(true, Ordering::SeqCst) {
                eprintln!("stdout was closed: stopping cleanly");
                STDOUT_CLOSED_NOTIFY.notify_waiters();
            }
            return;
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("COLDTRAIL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // Stacks of 16 MiB: planning recurses over the statement's tree (query::access::OPERATORS_MAX).
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(16 << 20).build() {
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
            Command::Schema(args) => commands::schema(args),
            Command::Serve(args) => serve::serve(&paths, args).await,
            Command::Sql(args) => sql_command::sql(&paths, args).await,
            Command::Generate(args) => generate::generate(&paths, args).await,
            Command::Detect(args) => detection::backfill(&paths, args).await,
            Command::DetectSeries(args) => detection::detect_series(args),
            Command::Hunt(args) => detection::hunt(&paths, args).await,
            Command::Demo(args) => demo::demo(&paths, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text its wrapper already shows
/// (DataFusion's and Arrow's errors print their sources inside their own message).
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut shown = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if shown.contains(message.as_str()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        shown = message;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug)]
    struct Wrapping(std::io::Error);
    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "planning failed: {}", self.0)
        }
    }
    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_its_wrappers_text_is_printed_once() {
        let inner = std::io::Error::other("table 'nope' not found");
        let error = anyhow::Error::new(Wrapping(inner)).context("query failed");
        assert_eq!(error_text(&error), "query failed: planning failed: table 'nope' not found");
        let plain = anyhow::anyhow!("disk full").context("cannot seal");
        assert_eq!(error_text(&plain), "cannot seal: disk full");
    }
}
