//! `coldtrail sql "<query>"`: one statement against a local data directory, or a running server's HTTP
//! API with `--server`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use query::http::{encode, Format};
use query::{Caller, QueryEngine, Role};
use store::{Store, StoreError};

use crate::commands::Paths;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The SQL statement.
    query: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// A running coldtrail's HTTP API, e.g. http://127.0.0.1:8080 (otherwise the data directory is read).
    #[arg(long, env = "COLDTRAIL_SERVER")]
    server: Option<String>,
    /// Bearer token for --server (default: the admin token in <data>/credentials.json, if readable).
    #[arg(long, env = "COLDTRAIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// User for --server with a password (COLDTRAIL_PASSWORD) instead of a token.
    #[arg(long, env = "COLDTRAIL_USER")]
    user: Option<String>,
}

pub async fn sql(paths: &Paths, args: SqlArgs) -> anyhow::Result<ExitCode> {
    match &args.server {
        Some(server) => remote(paths, server, &args).await,
        None => local(paths, &args).await,
    }
}

fn print(
    schema: arrow::datatypes::SchemaRef,
    batches: &[arrow::record_batch::RecordBatch],
    rows: usize,
    format: OutputFormat,
    elapsed_ms: f64,
) -> anyhow::Result<()> {
    let output = query::QueryOutput {
        schema,
        batches: batches.to_vec(),
        rows,
        elapsed: std::time::Duration::from_secs_f64(elapsed_ms / 1e3),
    };
    match format {
        OutputFormat::Table => {
            outln!("{}", arrow::util::pretty::pretty_format_batches(batches)?);
            eprintln!("({rows} rows, {elapsed_ms:.1} ms)");
        }
        OutputFormat::Csv => outln!("{}", String::from_utf8_lossy(&encode(&output, Format::Csv)?).trim_end()),
        OutputFormat::Json => outln!("{}", String::from_utf8_lossy(&encode(&output, Format::Json)?)),
    }
    Ok(())
}

async fn local(paths: &Paths, args: &SqlArgs) -> anyhow::Result<ExitCode> {
    let store = match Store::open(paths.store_config()).await {
        Ok(store) => Arc::new(store),
        Err(StoreError::Locked { .. }) => bail!(
            "the data directory {} is in use by a running coldtrail; ask it instead: coldtrail sql --server http://127.0.0.1:8080 \"...\"",
            paths.data.display()
        ),
        Err(e) => return Err(e).context("cannot open the store"),
    };
    let engine = QueryEngine::new(store, Default::default()).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let caller =
        Caller { user: format!("local:{user}"), role: Role::Admin, client_addr: "local".into(), protocol: "cli" };
    let result = engine.execute(&caller, &args.query, None).await;
    engine.close().await;
    let output = result?;
    print(output.schema, &output.batches, output.rows, args.format, output.elapsed.as_secs_f64() * 1e3)?;
    Ok(ExitCode::SUCCESS)
}

async fn remote(paths: &Paths, server: &str, args: &SqlArgs) -> anyhow::Result<ExitCode> {
    let url = format!("{}/api/v1/sql", server.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut request = client
        .post(&url)
        .header("content-type", "text/plain")
        .header("accept", "application/vnd.apache.arrow.stream")
        .body(args.query.clone());
    request = match (&args.token, &args.user) {
        (Some(token), _) => request.bearer_auth(token),
        (None, Some(user)) => request.basic_auth(user, std::env::var("COLDTRAIL_PASSWORD").ok()),
        (None, None) => match query::auth::read_default_credentials(&paths.data) {
            Some(credentials) => request.bearer_auth(credentials.token),
            None => bail!("--server needs credentials: --token (COLDTRAIL_TOKEN) or --user with COLDTRAIL_PASSWORD"),
        },
    };
    let started = std::time::Instant::now();
    let response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}");
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    print(schema, &batches, rows, args.format, started.elapsed().as_secs_f64() * 1e3)?;
    Ok(ExitCode::SUCCESS)
}
