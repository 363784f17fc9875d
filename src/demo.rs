//! `coldtrail demo`: the whole pipeline on an embedded default. A generated fleet of functions (daily
//! cycle, cold starts, errors, API Gateway / SQS / S3 / EventBridge callers) and its team's routine
//! CloudTrail replace Kafka and CloudWatch; six hours of history (stored as invocation rows) give the
//! detectors their baselines, then time runs live at `--speed`, each minute delivered as AWS would deliver
//! it (Lambda log lines in CloudWatch Logs subscription payloads, X-Ray segments, CloudTrail files) through
//! ingest's parser, with attack stories inside it: an event-injection campaign against an API
//! function, a function backdoored through AddPermission and a code overwrite, crypto-mining in that
//! function, its neighbour's execution-role credentials used from outside, and a denial-of-wallet flood.
//! The servers of `coldtrail serve` run meanwhile; what is found is printed as it happens, and how to look
//! is printed at the start and at the end.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ingest::{Pipeline, PipelineConfig, StoreSink};
use store::time::MICROS_PER_MINUTE;
use store::{Store, Table};
use workload::stories::{Cast, Pace, World, ATTACKER_IP, CONTRACTOR_KEY_IP, SESSION_THIEF_IP};
use workload::{fleet, Rng};

use crate::commands::Paths;
use crate::config::Config;

const HISTORY_MINUTES: i64 = 6 * 60;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the workload and the stories: the same seed gives the same rows.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated seconds per wall-clock second once the history is written.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Stop cleanly after this long (`90s`, `5m`, `1h`); otherwise run until Ctrl-C.
    #[arg(long)]
    duration: Option<String>,
    /// Functions in the fleet (at least 4: the stories need their victims).
    #[arg(long, default_value_t = 12)]
    functions: usize,
    /// PostgreSQL-protocol listen address.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pg_listen: std::net::SocketAddr,
    /// HTTP API listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: std::net::SocketAddr,
    /// Send alerts to this URL as signed JSON (repeatable; secret in COLDTRAIL_WEBHOOK_SECRET).
    #[arg(long = "webhook", value_name = "URL")]
    webhooks: Vec<String>,
    /// Take the users ([[query.users]]) and alert delivery ([alerting]) from this configuration file; the
    /// demo chooses the rest.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let micros = store::time::parse_duration_micros(text)
        .with_context(|| format!("--duration {text:?}: expected e.g. 90s, 5m or 1h"))?;
    Ok(Duration::from_micros(micros as u64))
}

pub async fn demo(paths: &Paths, args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::drain_when_stdout_closes();
    if args.speed <= 0.0 {
        bail!("--speed must be positive");
    }
    let duration = args.duration.as_deref().map(parse_duration).transpose()?;
    let mut functions = fleet(args.functions.max(1), &mut Rng::new(args.seed));
    let cast = Cast::choose(&mut functions, args.seed).map_err(|e| anyhow::anyhow!("{e}: use more --functions"))?;
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();

    let mut config = Config::default();
    if let Some(file) = args.config.as_deref().map(|path| Config::load(Some(path))).transpose()? {
        (config.query.users, config.alerting) = (file.query.users, file.alerting);
    }
    // The demo's traffic is written in time order, and its simulated clock runs ahead of the wall
    // clock at --speed: a short lateness, and event time may lead the clock.
    config.detect.lateness = Some("1m".into());
    config.detect.future_skew = Some("3650d".into());
    // The demo's accounts are new, and its stories are first deployments by an intruder: no learning
    // period (a real installation watches a week of CloudTrail first, or learns from `hunt --learn-from`).
    config.detect.learning = Some("0s".into());
    config.query.pg_listen = args.pg_listen;
    config.query.http_listen = args.http_listen;
    for url in &args.webhooks {
        config.alerting.destinations.push(alerting::DestinationConfig::webhook(url));
    }
    let store = Arc::new(Store::open(paths.store_config()).await.context("cannot open the store")?);
    let running = crate::serve::start(paths, &config, store.clone()).await?;
    let printer = print_alerts(&store);
    let signal = crate::http_ingest::shutdown_signal();
    walkthrough(paths, &running, &names, &cast);

    // Six hours of history, then live time from the current minute on.
    let now = store::time::now_micros();
    let mut world =
        World::new(functions.clone(), cast, args.seed, now - now.rem_euclid(MICROS_PER_MINUTE), HISTORY_MINUTES);
    // A data directory holding an earlier demo's rows has its history, and the detectors their baselines:
    // this run goes live at once instead of writing six more hours.
    let has_history = store.stats().get(&Table::Invocations).is_some_and(|t| t.hot_rows + t.segment_rows > 0);
    if has_history {
        world.skip_history();
        outln!("{} holds an earlier demo's history: going live at once", paths.data.display());
    } else {
        outln!("writing {} hours of history for {} functions ...", HISTORY_MINUTES / 60, names.len());
    }
    play(&mut world, &StoreSink::new(store.clone()), args.speed, duration, has_history, signal).await?;
    running.stop().await?;
    drop(printer);
    outln!("demo stopped; the data stays in {} for `coldtrail sql` and `coldtrail verify`", paths.data.display());
    Ok(ExitCode::SUCCESS)
}

/// Stores the world's minutes at its pace (history at once, live minutes through ingest's parser), until
/// `duration`, Ctrl-C or SIGTERM; a signal is heard in the history too.
async fn play(
    world: &mut World,
    sink: &StoreSink,
    speed: f64,
    duration: Option<Duration>,
    resumed: bool,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let stop = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(stop, signal);
    let (mut pace, mut live) = (Pace::new(speed), Pipeline::new(PipelineConfig::default()));
    loop {
        let minute = world.next_minute();
        let mut batches: Vec<_> = minute.rows.iter().map(|rows| (Table::Invocations, rows.clone())).collect();
        let position = minute.minute.to_string();
        batches.extend(live.ingest_minute("demo", &position, &minute.payloads(), &minute.segments(), &minute.trail));
        sink.append(batches, Vec::new(), Vec::new()).await?;
        let step = pace.stored(&minute, resumed);
        if let Some(report) = step.report {
            outln!("{report}");
        }
        tokio::select! {
            biased;
            _ = &mut signal => return Ok(()),
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep_until(step.due.unwrap_or_else(Instant::now).into()) => {}
        }
    }
}

/// Prints alerts as they are stored (first rows only; a group's final count is not printed again).
fn print_alerts(store: &Store) -> std::thread::JoinHandle<()> {
    let receiver = store.subscribe(&[Table::Alerts], 1_024);
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        while let Ok(appended) = receiver.recv() {
            for (_, batch) in &appended.batches {
                for alert in alerting::AlertDoc::rows(batch) {
                    if seen.insert(alert.id.clone()) {
                        let title: String = alert.title.chars().take(110).collect();
                        outln!("  alert [{}] {} {}", alert.severity.name(), alert.detector, title);
                    }
                }
            }
        }
    })
}

fn walkthrough(paths: &Paths, running: &crate::serve::Running, names: &[String], cast: &Cast) {
    let credentials = paths.data.join("credentials.json");
    outln!("");
    outln!("coldtrail demo: a fleet of {} functions with attack stories inside its traffic", names.len());
    outln!("  injection campaign against {} from {ATTACKER_IP}", names[cast.api]);
    outln!(
        "  {} backdoored from {CONTRACTOR_KEY_IP} with a contractor's leaked key (AddPermission to everyone, code overwritten), then mining",
        names[cast.backdoored]
    );
    outln!("  {}'s execution-role credentials used from {SESSION_THIEF_IP}", names[cast.stolen]);
    outln!("  a denial-of-wallet flood against {}", names[cast.flooded]);
    outln!("");
    let password =
        format!("`python3 -c \"import json;print(json.load(open('{}'))['password'])\"`", credentials.display());
    let password = if credentials.exists() { password } else { "as configured".into() };
    outln!(
        "Open the console: {}://{}/ (user {}, password: {password})",
        running.scheme,
        running.http_addr,
        running.first_user
    );
    outln!("  the incidents arrive there as the stories play; each opens on its story, entities and evidence.");
    outln!("Or look with psql (the same password):");
    outln!("  psql \"postgresql://{}@{}/coldtrail\"", running.first_user, running.pg_addr);
    outln!("  SELECT DISTINCT ON (incident_id) incident_id, status, severity, summary FROM incidents ORDER BY incident_id, ts DESC;");
    outln!("  SELECT ts, severity, detector, function_name, title FROM alerts ORDER BY ts DESC LIMIT 20;");
    outln!("  SELECT * FROM timeline('{ATTACKER_IP}') LIMIT 50;");
    outln!("  SELECT event_time, source_ip, event_name, principal_arn FROM cloudtrail WHERE source_ip IN ('{CONTRACTOR_KEY_IP}', '{SESSION_THIEF_IP}') ORDER BY event_time;");
    outln!(
        "  SELECT minute, invocations, duration_p95_ms, memory_used_ratio_max, gb_seconds FROM function_minutes WHERE function_name = '{}' ORDER BY minute DESC LIMIT 15;",
        names[cast.backdoored]
    );
    outln!(
        "Metrics: {}://{}/metrics   Grafana dashboards and provisioning: dashboards/ (see its README)",
        running.scheme,
        running.http_addr
    );
    outln!("");
}
