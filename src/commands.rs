//! The store commands: verify, info, ledger, maintain.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use store::ledger::{head_path, list_nodes, parse_head_file, parse_public_key, public_key_path, VerifyingKey};
use store::{Location, Store, StoreConfig, Table};

/// Where a command finds the store.
pub struct Paths {
    pub data: PathBuf,
    pub location: Option<String>,
}

impl Paths {
    pub fn store_config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(&self.data);
        config.location = self.location.clone();
        config
    }

    /// Opens the location read-only: it must exist already.
    fn open_location(&self) -> anyhow::Result<Location> {
        match &self.location {
            Some(location) => Ok(Location::open(location)?),
            None => {
                if !self.data.is_dir() {
                    bail!("no data directory at {} (set --data or COLDTRAIL_DATA)", self.data.display());
                }
                Ok(Location::open(&self.data.to_string_lossy())?)
            }
        }
    }

    /// The local node's id and public key, when the data directory has them: the key that
    /// verification trusts over the copy published next to the ledger.
    fn local_node_key(&self) -> anyhow::Result<Option<(String, VerifyingKey)>> {
        let (Ok(node), Ok(public)) =
            (std::fs::read_to_string(self.data.join("node.id")), std::fs::read_to_string(self.data.join("node.pub")))
        else {
            return Ok(None);
        };
        let key = parse_public_key(&public)
            .with_context(|| format!("{} is not a public key", self.data.join("node.pub").display()))?;
        Ok(Some((node.trim().to_string(), key)))
    }
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Trust this hex public key for NODE instead of the published one (repeatable): NODE=HEX.
    #[arg(long = "key", value_name = "NODE=HEX")]
    keys: Vec<String>,
    /// A head kept outside the data directory that the chain must still hold (repeatable): a file from
    /// `coldtrail ledger --export`, NODE:SEQ:HASH, or SEQ:HASH of this data directory's node.
    #[arg(long = "expect-head", value_name = "FILE|NODE:SEQ:HASH")]
    expect_heads: Vec<String>,
    /// A public key kept outside the data directory (repeatable): an export file, NODE=HEX, or a key file.
    #[arg(long = "trusted-key", value_name = "FILE")]
    trusted_keys: Vec<PathBuf>,
}

pub async fn verify(paths: &Paths, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let location = paths.open_location()?;
    let local = paths.local_node_key()?;
    let local_node = local.as_ref().map(|(node, _)| node.as_str());
    let mut trusted: HashMap<_, _> = local.iter().cloned().collect();
    let files =
        args.trusted_keys.iter().map(|p| std::fs::read_to_string(p).with_context(|| format!("{}", p.display())));
    for text in args.keys.into_iter().map(Ok).chain(files) {
        let (node, key) = store::verify::parse_trusted_key(&text?, local_node).map_err(anyhow::Error::msg)?;
        trusted.insert(node, key);
    }
    let anchors = (args.expect_heads.iter())
        .map(|spec| store::verify::Anchor::parse(&std::fs::read_to_string(spec).unwrap_or(spec.clone()), local_node))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--expect-head: {e}"))?;
    let mut report = store::verify_location(&location, &trusted, &anchors).await?;
    // The rows not sealed yet: this data directory's WAL, against its node's trusted key.
    local_node.and_then(|node| trusted.get(node)).map(|key| report.verify_wal(&paths.data, key)).transpose()?;
    match args.json {
        true => outln!("{}", report.to_json(location.url())),
        false => outln!("{}", report.to_text(location.url())),
    }
    Ok(if report.is_intact() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn info(paths: &Paths, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let location = paths.open_location()?;
    let stats = store::catalog_stats(&location).await?;
    let wal_dir = paths.data.join("wal");
    let wal_bytes: u64 = std::fs::read_dir(&wal_dir)
        .map(|dir| dir.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    let mut heads = Vec::new();
    for node in list_nodes(&location).await? {
        let key = location
            .get_opt(&public_key_path(&node))
            .await?
            .and_then(|b| parse_public_key(&String::from_utf8_lossy(&b)));
        let head = location.get_opt(&head_path(&node)).await?;
        if let (Some(key), Some(head)) = (key, head) {
            if let Ok((head, _)) = parse_head_file(&head, &key) {
                heads.push(head);
            }
        }
    }
    // What the live detections' last checkpoint says of scoring and of the learning period.
    let progress = crate::detection::checkpoints(&paths.data).progress();
    if args.json {
        let detect = progress.as_ref().map(detect::engine::Progress::summary);
        outln!(
            "{}",
            serde_json::json!({ "location": location.url(), "tables": stats.iter().map(|(t, s)| (t.name(), s)).collect::<std::collections::BTreeMap<_, _>>(), "wal_bytes": wal_bytes, "heads": heads, "detect": detect })
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("location: {}", location.url());
    outln!("{:<18} {:>9} {:>14} {:>14}", "table", "segments", "rows", "bytes");
    for (table, stat) in &stats {
        outln!("{:<18} {:>9} {:>14} {:>14}", table.name(), stat.segments, stat.segment_rows, stat.segment_bytes);
    }
    outln!("write-ahead log: {wal_bytes} bytes not yet in segments (replayed on the next start)");
    for head in heads {
        outln!("ledger head of node {}: entry {} {} at {}", head.node, head.seq, head.hash, head.ts);
    }
    if let Some(progress) = progress {
        if let Some(through) = progress.scored_through_us {
            outln!("detectors: scored through {}", store::time::format_seconds(through));
        }
        for learning in &progress.learning {
            outln!("learning: {learning}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    /// Print every entry of every node as JSON lines instead of this node's head.
    #[arg(long)]
    entries: bool,
    /// Print the head as one JSON object with the public key, to keep outside the data directory (for
    /// `verify --expect-head` and `--trusted-key`).
    #[arg(long)]
    export: bool,
    /// Put the exported head, write-once, into an S3 bucket with Object Lock (compliance mode) as
    /// s3://BUCKET/PREFIX/<node>/<seq>.json; credentials and endpoint from the AWS environment.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    publish: Option<String>,
    /// Days a published head stays locked.
    #[arg(long, default_value_t = 365)]
    retain_days: u32,
}

pub async fn ledger(paths: &Paths, args: LedgerArgs) -> anyhow::Result<ExitCode> {
    let location = paths.open_location()?;
    if args.entries {
        for node in list_nodes(&location).await? {
            for (_, _, bytes) in store::ledger::read_entry_files(&location, &node).await? {
                let text = String::from_utf8_lossy(&bytes);
                outln!("{}", text.lines().next().unwrap_or_default());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some((node, key)) = paths.local_node_key()? else {
        bail!("{} has no node identity (node.id, node.pub)", paths.data.display());
    };
    let head =
        location.get_opt(&head_path(&node)).await?.with_context(|| format!("node {node} has no ledger head yet"))?;
    let export = store::verify::ExportedHead::from_head_file(&head, &key).map_err(anyhow::Error::msg)?;
    if let Some(url) = &args.publish {
        let aws = store::aws::Aws::from_env().map_err(anyhow::Error::msg)?;
        let key = store::aws::publish_locked(&aws, url, &export, args.retain_days).await.map_err(anyhow::Error::msg)?;
        outln!("published entry {} of node {} to {key}, locked for {} days", export.seq, export.node, args.retain_days);
        return Ok(ExitCode::SUCCESS);
    }
    if args.export {
        outln!("{}", serde_json::to_string(&export)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The signed head file itself, so that an anchored copy can be checked with the public key.
    print!("{}", String::from_utf8_lossy(&head));
    eprintln!("node {} entry {} (public key {})", export.node, export.seq, export.public_key);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct MaintainArgs {
    /// Keep TABLE's rows for DAYS days of event time and delete older segments (repeatable): TABLE=DAYS.
    #[arg(long = "retain", value_name = "TABLE=DAYS")]
    retain: Vec<String>,
}

pub async fn maintain(paths: &Paths, args: MaintainArgs) -> anyhow::Result<ExitCode> {
    let mut config = paths.store_config();
    for spec in &args.retain {
        let (table, days) = spec.split_once('=').context("--retain takes TABLE=DAYS")?;
        let table = Table::from_name(table).with_context(|| format!("--retain: unknown table {table}"))?;
        let days: f64 = days.parse().with_context(|| format!("--retain {table}: {days} is not a number of days"))?;
        if !(days.is_finite() && days > 0.0) {
            bail!("--retain {table}: days must be positive");
        }
        config.retention.insert(table, Duration::from_secs_f64(days * 86_400.0));
    }
    let store = Store::open(config).await?;
    let flushed = store.flush_all().await?;
    let now = store::time::now_micros();
    let expired = store.apply_retention(now).await?;
    let compacted = store.compact(now).await?;
    let head = store.ledger_head();
    outln!(
        "flushed {flushed} segments, expired {expired}, compacted {compacted}; ledger head {} {}",
        head.seq,
        head.hash
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Only this table.
    table: Option<String>,
    /// Print as JSON: {"version": N, "tables": {TABLE: [{"name", "type", "nullable"}]}}.
    #[arg(long)]
    json: bool,
}

pub fn schema(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let tables: Vec<Table> = match &args.table {
        Some(name) => vec![Table::from_name(name).with_context(|| format!("unknown table {name}"))?],
        None => Table::ALL.to_vec(),
    };
    if args.json {
        let tables: serde_json::Map<String, serde_json::Value> = tables
            .iter()
            .map(|table| {
                let columns: Vec<serde_json::Value> = table
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
                    .collect();
                (table.name().to_string(), serde_json::Value::Array(columns))
            })
            .collect();
        outln!("{}", serde_json::json!({"version": store::SCHEMA_VERSION, "tables": tables}));
        return Ok(ExitCode::SUCCESS);
    }
    outln!("schema version {}", store::SCHEMA_VERSION);
    for table in tables {
        outln!("\n{} (time column {})", table.name(), table.time_column());
        for field in table.schema().fields() {
            outln!(
                "  {:<22} {}{}",
                field.name(),
                field.data_type(),
                if field.is_nullable() { "" } else { " not null" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
