//! The detection commands: the live detections of `serve`, `ingest` and `generate` (`detect::runner`
//! over the checkpoints in `<data>/detect/`), `coldtrail detect` and `coldtrail hunt` (`detect::replay` of
//! stored history), and `coldtrail detect-series` (the univariate detector over a CSV series).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use detect::engine::{Checkpoints, Engine, EngineConfig};
use detect::incidents::{Correlator, IncidentConfig, IncidentThread};
use detect::replay::{replay, stored_span};
use detect::runner::{store_alerts, DetectionThread, InputEnd, LiveConfig};
use detect::security::SigmaRules;
use detect::{Alert, EngineStats};
use store::{Store, Table, TimeRange};

use crate::commands::Paths;

/// The Sigma rules: the shipped ones, and those under `dir` (or `COLDTRAIL_SIGMA_RULES`) when given.
pub fn sigma_rules(dir: Option<&Path>) -> anyhow::Result<SigmaRules> {
    let mut rules = SigmaRules::shipped();
    let from_env = std::env::var_os("COLDTRAIL_SIGMA_RULES").map(PathBuf::from);
    if let Some(dir) = dir.map(Path::to_path_buf).or(from_env) {
        let added = rules.load_dir(&dir)?;
        tracing::info!(dir = %dir.display(), added, skipped = rules.skipped.len(), "Sigma rules loaded");
    }
    Ok(rules)
}

/// The checkpoints of a data directory's live detections.
pub fn checkpoints(data: &Path) -> Checkpoints {
    Checkpoints::new(data.join("detect"))
}

/// The live detections of a running process: alone, from the checkpoints of its data directory; or as a
/// member of a cluster (`detect::cluster`), running the detection partitions a Kafka consumer group
/// assigns it, from the checkpoints in the shared location.
pub enum LiveDetections {
    /// With the incidents built from the alerts it stores.
    Alone(DetectionThread, IncidentThread),
    Cluster {
        partitions: Arc<detect::cluster::Partitions>,
        membership: ingest::membership::Membership,
    },
}

impl LiveDetections {
    pub fn start(
        store: Arc<Store>,
        data: &Path,
        live: LiveConfig,
        config: &EngineConfig,
    ) -> anyhow::Result<LiveDetections> {
        let checkpoints = checkpoints(data);
        let engine = checkpoints.load(config, sigma_rules(None)?);
        let incidents = IncidentThread::start(store.clone(), IncidentConfig::default())?;
        Ok(LiveDetections::Alone(DetectionThread::start(store, engine, checkpoints, live)?, incidents))
    }

    /// Joins the detection group of a cluster; the partitions it is given start from the shared state.
    pub fn join(
        store: Arc<Store>,
        membership: &ingest::membership::MembershipConfig,
        live: LiveConfig,
        config: &EngineConfig,
    ) -> anyhow::Result<LiveDetections> {
        sigma_rules(None)?;
        let partitions = Arc::new(detect::cluster::Partitions::new(
            store,
            membership.partitions as u32,
            live,
            config.clone(),
            || sigma_rules(None).unwrap_or_default(),
        )?);
        let member = ingest::membership::Membership::start(membership, {
            let partitions = partitions.clone();
            move |change| match change {
                ingest::membership::Change::Assigned(p) => partitions.assign(&p),
                ingest::membership::Change::Revoked(p) => partitions.revoke(&p),
            }
        })?;
        Ok(LiveDetections::Cluster { partitions, membership: member })
    }

    /// Scores what is complete (with `InputEnd::Closed`, everything stored), stores the alerts,
    /// checkpoints and ends the thread (in a cluster: every partition held, then leaves the group). A
    /// checkpoint that could not be written is a warning, not a failure: the rows and alerts are stored.
    pub fn stop(self, end: InputEnd) -> anyhow::Result<EngineStats> {
        let all = match self {
            LiveDetections::Alone(thread, incidents) => {
                // The detectors' last alerts reach the incidents before they stop.
                let stats = thread.stop(end);
                incidents.stop()?;
                vec![stats?]
            }
            LiveDetections::Cluster { partitions, membership } => {
                membership.stop();
                partitions.stop()
            }
        };
        for error in all.iter().filter_map(|s| s.checkpoint_error.as_ref()) {
            eprintln!(
                "warning: the detectors' state was not saved ({error}); everything is stored, and the next run's \
                 detectors start from their last saved state"
            );
        }
        Ok(all.into_iter().next().unwrap_or_default())
    }
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Replay stored invocations from this time (RFC 3339); defaults to the oldest stored.
    #[arg(long)]
    from: Option<String>,
    /// Replay up to this time (RFC 3339, exclusive); defaults to everything stored.
    #[arg(long)]
    to: Option<String>,
}

/// `coldtrail detect`: replays stored invocations, hour by hour in time order, through fresh detectors
/// and stores the alerts they raise (alert ids are stable: a replay raises the same ids again).
pub async fn backfill(paths: &Paths, args: DetectArgs) -> anyhow::Result<ExitCode> {
    let parse = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
        text.as_ref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| d.timestamp_micros())
                    .with_context(|| format!("--{flag} {t:?} is not an RFC 3339 time"))
            })
            .transpose()
    };
    let from = parse(&args.from, "from")?;
    let to = parse(&args.to, "to")?;
    let store = Store::open(paths.store_config()).await.context("cannot open the store")?;
    let Some((oldest, newest)) = stored_span(&store, &[Table::Invocations]) else {
        outln!("no stored invocations to replay");
        return Ok(ExitCode::SUCCESS);
    };
    let range = TimeRange::new(from.unwrap_or(oldest), to.unwrap_or(newest + 1));
    let mut engine = Engine::new(&EngineConfig::anomaly_only(), SigmaRules::default());
    let mut n_alerts = 0;
    replay(&store, &mut engine, range, |alerts| {
        n_alerts += alerts.len();
        store_alerts(&store, &alerts)
    })
    .await?;
    store.flush_all().await?;
    let stats = engine.stats().stream;
    outln!(
        "replayed {} invocations: {} function-minutes scored, {n_alerts} alerts stored",
        stats.invocations,
        stats.minutes_scored
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct DetectSeriesArgs {
    /// A `timestamp,value` CSV file (a header line is skipped); timestamps as `YYYY-MM-DD HH:MM:SS`,
    /// RFC 3339 or epoch seconds.
    file: PathBuf,
    /// Where to write `timestamp,value,anomaly_score` (NAB's results format); standard output by default.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// `coldtrail detect-series`: the univariate detector over one series file.
pub fn detect_series(args: DetectSeriesArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let (out, warnings) = detect::series::score_series(&text).with_context(|| format!("in {}", args.file.display()))?;
    for warning in warnings {
        eprintln!("warning: {}: {warning}; every row is scored", args.file.display());
    }
    match &args.output {
        Some(path) => std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(out.as_bytes()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct HuntArgs {
    /// Hunt from this time: RFC 3339, or a duration before now (`24h`, `7d`, `30m`); defaults to the
    /// oldest stored record.
    #[arg(long)]
    since: Option<String>,
    /// Hunt up to this time (RFC 3339 or a duration before now, exclusive); defaults to everything.
    #[arg(long)]
    until: Option<String>,
    /// Learn from stored history from this time first (RFC 3339, or a duration before now): the rows
    /// between it and --since build the detectors' baselines and count toward the learning period, and
    /// raise nothing.
    #[arg(long)]
    learn_from: Option<String>,
    /// How long an account's CloudTrail is watched before the first-seen detections (code deployed by a
    /// principal that never deployed it, a new layer, a changed role) report; `0s` reports at once.
    #[arg(long, default_value = "7d", value_parser = crate::ingest_command::parse_duration)]
    learning: i64,
    /// A directory of Sigma rules (YAML) to run besides the shipped ones.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Store the alerts found that the `alerts` table does not hold yet.
    #[arg(long)]
    store: bool,
    /// `table` (default) or `json` (one alert per line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

/// RFC 3339, or a duration (`90s`, `30m`, `24h`, `7d`) before now.
fn parse_time(text: &str, flag: &str) -> anyhow::Result<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_micros());
    }
    match store::time::parse_duration_micros(text) {
        Some(ago) => Ok(store::time::now_micros() - ago),
        None => anyhow::bail!("--{flag} {text:?} is neither an RFC 3339 time nor a duration like 24h"),
    }
}

/// `coldtrail hunt`: the security detections over stored history (retro-hunt), hour by hour in time
/// order through the same code as the stream, with fresh state. Alert ids are stable, so what the stream
/// raised is raised again with the same ids.
pub async fn hunt(paths: &Paths, args: HuntArgs) -> anyhow::Result<ExitCode> {
    let since = args.since.as_deref().map(|t| parse_time(t, "since")).transpose()?;
    let until = args.until.as_deref().map(|t| parse_time(t, "until")).transpose()?;
    let learn_from = args.learn_from.as_deref().map(|t| parse_time(t, "learn-from")).transpose()?;
    match (learn_from, since) {
        (Some(from), Some(since)) if from >= since => anyhow::bail!("--learn-from must be before --since"),
        (Some(_), None) => anyhow::bail!("--learn-from needs --since: the hunt starts where learning ends"),
        _ => {}
    }
    let rules = sigma_rules(args.rules.as_deref())?;
    let n_rules = rules.len();
    let store = Store::open(paths.store_config()).await.context("cannot open the store")?;
    let mut engine = Engine::new(&EngineConfig::security_only().with_learning(args.learning), rules);
    let Some((oldest, newest)) = stored_span(&store, &engine.tables()) else {
        outln!("nothing stored to hunt in");
        return Ok(ExitCode::SUCCESS);
    };
    let range = TimeRange::new(since.unwrap_or(oldest).max(oldest), until.unwrap_or(newest + 1).min(newest + 1));
    if let Some(learn_from) = learn_from {
        detect::replay::learn(&store, &mut engine, TimeRange::new(learn_from.max(oldest), range.start_micros)).await?;
        let (learned, all) = (engine.learning().iter().filter(|l| l.learned()).count(), engine.learning().len());
        eprintln!("learned from history: {learned} of {all} accounts past the learning period");
    }
    let mut alerts = Vec::new();
    replay(&store, &mut engine, range, |raised| {
        alerts.extend(raised);
        Ok(())
    })
    .await?;
    // One line per alert: a group's final row replaces its first.
    let alerts = detect::dedup::latest_by_id(alerts);
    let stats = engine.stats().security;
    if args.format == "json" {
        for alert in &alerts {
            outln!("{}", serde_json::to_string(alert)?);
        }
    } else {
        outln!("{:<20}  {:<8}  {:<40}  {:<24}  title", "time", "severity", "detector", "function");
        for alert in &alerts {
            let title: String = alert.title.chars().take(100).collect();
            outln!(
                "{:<20}  {:<8}  {:<40}  {:<24}  {title}",
                store::time::format_seconds(alert.ts_us),
                alert.severity.name(),
                alert.detector,
                alert.function.as_deref().unwrap_or("-")
            );
        }
    }
    // The incidents the alerts add up to, placed in time order as a live run places them.
    let mut correlator = Correlator::new(IncidentConfig::default());
    let mut in_order: Vec<&Alert> = alerts.iter().collect();
    in_order.sort_by(|a, b| (a.ts_us, &a.alert_id).cmp(&(b.ts_us, &b.alert_id)));
    let mut incident_rows = std::collections::BTreeMap::new();
    for alert in in_order {
        for row in correlator.add(alert) {
            incident_rows.insert(row.incident_id.clone(), row);
        }
    }
    // The latest row of each incident: the correlator forgets those past its horizon.
    let incidents: Vec<_> = incident_rows.values().filter(|row| row.status.as_deref() == Some("open")).collect();
    if args.format != "json" {
        for row in &incidents {
            let (severity, summary) = (row.severity.as_deref(), row.summary.as_deref());
            outln!("incident {} {}: {}", row.incident_id, severity.unwrap_or("-"), summary.unwrap_or(""));
        }
    }
    let n_incidents = incidents.len();
    let mut stored = 0;
    if args.store && !alerts.is_empty() {
        let mut known = std::collections::HashSet::new();
        for batch in store.scan(Table::Alerts, None, TimeRange::ALL).await? {
            known.extend(Alert::from_batch(&batch)?.into_iter().map(|alert| alert.alert_id));
        }
        let new: Vec<Alert> = alerts.iter().filter(|a| !known.contains(&a.alert_id)).cloned().collect();
        stored = new.len();
        store_alerts(&store, &new)?;
        if stored > 0 {
            let incident_rows: Vec<_> = incident_rows.into_values().collect();
            detect::incidents::store_incidents(&store, &incident_rows)?;
        }
        store.flush_all().await?;
    }
    eprintln!(
        "hunted {} CloudTrail events, {} invocations and {} log lines with {} detections and {n_rules} Sigma rules: {} alerts in {} incidents{}",
        stats.cloudtrail_events,
        stats.invocations,
        stats.log_lines,
        detect::security::CATALOG.len(),
        alerts.len(),
        n_incidents,
        if args.store { format!(", {stored} new ones stored") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}
