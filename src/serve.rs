//! `coldtrail serve`: the configured sources, the detectors, alert delivery, the store, the SQL servers
//! (PostgreSQL protocol and HTTP) and background maintenance in one process, until SIGTERM or Ctrl-C.
//! Then it drains in order: the sources stop and store what they hold, the servers stop, the detectors
//! store their last alerts and checkpoint, the outbox finishes its requests, the query audit is written
//! and the hot rows are sealed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use query::engine::Limits;
use query::{QueryEngine, Users};
use store::Store;

use crate::commands::Paths;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML; see coldtrail.example.toml).
    #[arg(long, env = "COLDTRAIL_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL-protocol listen address [default: 127.0.0.1:5433].
    #[arg(long, value_name = "ADDR")]
    pg_listen: Option<std::net::SocketAddr>,
    /// HTTP API listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for TLS on both servers (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Send alerts to this URL as signed JSON (repeatable); the HMAC secret comes from
    /// COLDTRAIL_WEBHOOK_SECRET. More destinations, routing and suppressions: [alerting] in the configuration.
    #[arg(long = "webhook", value_name = "URL")]
    webhooks: Vec<String>,
}

pub async fn serve(paths: &Paths, args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::drain_when_stdout_closes();
    let mut config = Config::load(args.config.as_deref())?;
    let q = &mut config.query;
    q.pg_listen = args.pg_listen.unwrap_or(q.pg_listen);
    q.http_listen = args.http_listen.unwrap_or(q.http_listen);
    if args.tls_cert.is_some() {
        q.tls_cert = args.tls_cert.clone();
        q.tls_key = args.tls_key.clone();
    }
    for url in &args.webhooks {
        config.alerting.destinations.push(alerting::DestinationConfig::webhook(url));
    }
    let store = Arc::new(Store::open(config.store.apply(paths)).await.context("cannot open the store")?);
    let running = start(paths, &config, store).await?;
    crate::http_ingest::shutdown_signal().await;
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// The servers, detectors, alert delivery and maintenance of one process over an open store.
pub struct Running {
    pub pg_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub scheme: &'static str,
    pub first_user: String,
    store: Arc<Store>,
    engine: Arc<QueryEngine>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    outbox_stop: tokio::sync::watch::Sender<bool>,
    pg: tokio::task::JoinHandle<std::io::Result<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    maintenance: tokio::task::JoinHandle<()>,
    detection: crate::detection::LiveDetections,
    outbox: Option<tokio::task::JoinHandle<Result<(), alerting::AlertingError>>>,
    sources: ingest::sources::Sources,
}

/// Starts everything `serve` runs and says where it listens.
pub async fn start(paths: &Paths, config: &Config, store: Arc<Store>) -> anyhow::Result<Running> {
    let mut problems = config.alerting.problems();
    problems.extend(ingest::sources::problems(&config.sources));
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let q = &config.query;
    let tls = match (&q.tls_cert, &q.tls_key) {
        (Some(cert), Some(key)) => Some(query::tls::TlsSettings::load(cert, key)?),
        _ => None,
    };
    let users = users(config, paths)?;
    let limits = Limits {
        statement_timeout: Duration::from_secs(q.statement_timeout_secs),
        max_result_rows: q.max_result_rows,
        max_result_bytes: q.max_result_mb.saturating_mul(1 << 20),
        memory_bytes: q.memory_limit_mb << 20,
        max_concurrent: q.max_concurrent_queries,
        key_filter_bytes: q.key_filter_cache_mb << 20,
    };
    let engine = QueryEngine::with_users(store.clone(), limits, users.clone()).await?;
    // Point lookups after a restart find the segments' id filters in memory.
    let warming = engine.clone();
    tokio::spawn(async move {
        match warming.warm_key_filters().await {
            Ok(read) => outln!("lookups: the id filters of {read} segments read into memory"),
            Err(e) => tracing::warn!("could not read the segments' id filters ahead of lookups: {e}"),
        }
    });
    let (live, engine_config) = (config.detect.live(), config.detect.engine());
    let detection = match config.detect.membership(&config.sources) {
        Some(member) => crate::detection::LiveDetections::join(store.clone(), &member, live, &engine_config)?,
        None => crate::detection::LiveDetections::start(store.clone(), &paths.data, live, &engine_config)?,
    };
    // The outbox stops last, after the detectors' final alerts are stored.
    let (outbox_stop, outbox_stop_rx) = tokio::sync::watch::channel(false);
    let outbox = start_outbox(config, &store, outbox_stop_rx);
    let pg_listener = tokio::net::TcpListener::bind(q.pg_listen)
        .await
        .with_context(|| format!("cannot listen on {} for PostgreSQL clients", q.pg_listen))?;
    let http_listener = tokio::net::TcpListener::bind(q.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", q.http_listen))?;
    let pg_addr = pg_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let first_user = users.names().first().map_or("admin", String::as_str).to_string();
    outln!("postgres listening on {pg_addr}: psql \"postgresql://{first_user}@{pg_addr}/coldtrail\"");
    outln!("http listening on {scheme}://{http_addr}/api/v1/sql (metrics at {scheme}://{http_addr}/metrics)");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    query::accounts::follow(users, store.clone(), stopped(stop_rx.clone())).await;
    let pg_options = query::pg::PgOptions::new(tls.clone(), q.max_connections, q.allow_plaintext);
    let pg = query::pg::serve(pg_listener, engine.clone(), pg_options, stopped(stop_rx.clone()));
    let pg = tokio::spawn(pg);
    let http = tokio::spawn(query::http::serve(http_listener, engine.clone(), tls, stopped(stop_rx.clone())));
    let every = config.store.refresh_every().min(Duration::from_secs(5));
    let maintenance =
        tokio::spawn(store.clone().maintain_until(every, Some(config.store.refresh_every()), stopped(stop_rx)));
    // Sources last: the detectors and servers are ready for what they store.
    let sources = ingest::sources::Sources::start(&config.sources, ingest::StoreSink::new(store.clone())).await?;
    for line in &sources.described {
        outln!("{line}");
    }
    Ok(Running {
        pg_addr,
        http_addr,
        scheme,
        first_user,
        store,
        engine,
        stop_tx,
        outbox_stop,
        pg,
        http,
        maintenance,
        detection,
        outbox,
        sources,
    })
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The configured users; without any, an `admin` whose password and token are kept in the data
/// directory, and then only loopback listeners.
fn users(config: &Config, paths: &Paths) -> anyhow::Result<Users> {
    let q = &config.query;
    if !q.users.is_empty() {
        return Ok(Users::from_specs(&q.users)?);
    }
    for addr in [q.pg_listen, q.http_listen] {
        if !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address: configure users ([[query.users]]) before listening beyond this machine");
        }
    }
    let (users, path, created) = Users::load_or_create_default(&paths.data)?;
    outln!(
        "no users configured: user admin, password and token {} {} (owner-only)",
        if created { "created in" } else { "in" },
        path.display()
    );
    Ok(users)
}

/// Alert delivery to the configured destinations, if any.
fn start_outbox(
    config: &Config,
    store: &Arc<Store>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<Result<(), alerting::AlertingError>>> {
    if config.alerting.destinations.is_empty() {
        return None;
    }
    let destinations = &config.alerting.destinations;
    let unsigned = destinations.iter().filter(|d| d.kind == alerting::Kind::Webhook && d.secret.is_none()).count();
    if unsigned > 0 && std::env::var_os("COLDTRAIL_WEBHOOK_SECRET").is_none() {
        outln!(
            "warning: {unsigned} webhook(s) without a secret and no COLDTRAIL_WEBHOOK_SECRET: requests are not signed"
        );
    }
    let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
    outln!("alerts go to {} (delivery states in the alert_deliveries table)", names.join(", "));
    Some(alerting::Outbox::new(store.clone(), config.alerting.clone()).start(stop))
}

impl Running {
    /// Drains: the servers stop, the detectors store their last alerts and checkpoint, the outbox
    /// finishes its requests under way, the query audit is written and hot rows are sealed.
    pub async fn stop(self) -> anyhow::Result<()> {
        outln!(
            "stopping: sources store what they hold, then closing the servers, checkpointing the detectors, writing the query audit and sealing hot rows"
        );
        // Sources first: what they acknowledged is stored, and the detectors see it.
        self.sources.stop().await;
        let _ = self.stop_tx.send(true);
        // Open PostgreSQL sessions are not waited for beyond a grace period.
        let (pg, http) = (self.pg, self.http);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let _ = pg.await;
            let _ = http.await;
        })
        .await;
        let _ = self.maintenance.await;
        // A stream has no end: minutes the watermark has not passed wait for the next start.
        let detected = self.detection.stop(detect::runner::InputEnd::Open).context("stopping the detectors")?;
        tracing::info!(
            minutes = detected.stream.minutes_scored,
            alerts = detected.stream.alerts,
            "detectors stopped and checkpointed"
        );
        let _ = self.outbox_stop.send(true);
        if let Some(outbox) = self.outbox {
            // Requests under way finish; undelivered alerts stay queued in the store for the next start.
            match outbox.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "alert delivery stopped with an error"),
                Err(e) => tracing::error!(error = %e, "alert delivery task failed"),
            }
        }
        self.engine.close().await;
        self.store.flush_all().await.context("sealing hot rows at shutdown")?;
        Ok(())
    }
}
