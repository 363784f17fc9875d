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
}

pub async fn verify(paths: &Paths, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let location = paths.open_location()?;
    let mut trusted = HashMap::new();
    if let Some((node, key)) = paths.local_node_key()? {
        trusted.insert(node, key);
    }
    for spec in &args.keys {
        let (node, hex) = spec.split_once('=').context("--key takes NODE=HEX")?;
        let key = parse_public_key(hex).with_context(|| format!("--key {node}: not a public key"))?;
        trusted.insert(node.to_string(), key);
    }
    let report = store::verify_location(&location, &trusted).await?;
    if args.json {
        let findings: Vec<serde_json::Value> =
            report.problems.iter().map(|f| serde_json::json!({ "kind": f.kind(), "message": f.to_string() })).collect();
        let heads: Vec<serde_json::Value> = report
            .heads
            .iter()
            .map(|(node, seq, hash)| serde_json::json!({"node": node, "seq": seq, "hash": hash}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "location": location.url(),
                "intact": report.is_intact(),
                "nodes": report.nodes,
                "entries_checked": report.entries_checked,
                "segments_checked": report.segments_checked,
                "bytes_checked": report.bytes_checked,
                "heads": heads,
                "findings": findings,
            })
        );
    } else {
        outln!(
            "checked {} ledger entries of {} node(s) and {} segments ({} bytes) in {}",
            report.entries_checked,
            report.nodes.len(),
            report.segments_checked,
            report.bytes_checked,
            location.url()
        );
        for (node, seq, hash) in &report.heads {
            outln!("head of node {node}: entry {seq} {hash}");
        }
        for finding in &report.problems {
            outln!("FAIL {}: {finding}", finding.kind());
        }
        outln!("{}", if report.is_intact() { "intact" } else { "TAMPERED OR DAMAGED" });
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
    let (parsed, valid) = parse_head_file(&head, &key).map_err(anyhow::Error::msg)?;
    if !valid {
        bail!("the ledger head of node {node} has a bad signature: run `coldtrail verify`");
    }
    // The signed head file itself, so that an anchored copy can be checked with the public key.
    print!("{}", String::from_utf8_lossy(&head));
    eprintln!("node {} entry {} (public key {})", parsed.node, parsed.seq, store::ledger::hex(key.as_bytes()));
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
