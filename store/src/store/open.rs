//! Opening a store: the node id and key, the WAL replayed into the hot buffer, the ledgers of every node
//! read into the catalog, crash leftovers removed, positions restored.

use super::*;

impl Store {
    /// Opens (or creates) the store: loads the node identity, checks this node's ledger, removes segment
    /// files that a crash left unrecorded, and replays the WAL into the hot buffer.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        let data_dir = config.data_dir.clone();
        crate::location::private_dir(&data_dir)?;
        let lock_path = data_dir.join("LOCK");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        if let Err(e) = lock_file.try_lock() {
            return Err(StoreError::Locked { path: lock_path, reason: e.to_string() });
        }
        let node = load_or_create_node_id(&data_dir, config.node_id.as_deref())?;
        let key = load_or_create_key(&data_dir.join("node.key"))?;
        let verifying_key = key.verifying_key();
        std::fs::write(data_dir.join("node.pub"), format!("{}\n", hex(verifying_key.as_bytes())))
            .map_err(|e| StoreError::io(data_dir.join("node.pub"), e))?;
        let location = Location::open(config.location.as_deref().unwrap_or(&data_dir.to_string_lossy()))?;

        // This node's chain must be intact before anything is added to it.
        let files = read_entry_files(&location, &node).await?;
        let head_bytes = location.get_opt(&head_path(&node)).await?;
        let check = check_chain(&node, &files, head_bytes.as_deref(), &verifying_key);
        if let Some(finding) = check.problems.first() {
            return Err(StoreError::LedgerCorrupt {
                node: node.clone(),
                seq: check.entries.last().map_or(0, |e| e.entry.seq),
                reason: format!("{finding} ({} problems in all; run `coldtrail verify`)", check.problems.len()),
            });
        }
        let wal_key = key.clone();
        let ledger = LedgerWriter::new(location.clone(), node.clone(), key, check.entries.last());
        ledger.publish_public_key().await?;
        if check.head_seq != check.entries.last().map(|e| e.entry.seq) {
            ledger.write_head().await?;
        }

        let mut state = State { head: Some(ledger.head()), ..State::default() };
        for signed in &check.entries {
            apply_entry(&mut state.catalog, signed);
            if let (Some(segment), Some(table)) = (&signed.entry.segment, Table::from_name(&signed.entry.table)) {
                let hour = parse_segment_path(&segment.path).map_or(0, |name| name.hour);
                let watermark = state.watermarks.entry((table, hour)).or_default();
                *watermark = (*watermark).max(segment.wal_seq_hi);
            }
        }
        load_other_nodes(&location, &node, &mut state.catalog).await?;
        remove_unrecorded_segments(&location, &node, &state.catalog).await?;

        let checkpoint: PositionsCheckpoint = match location.get_opt(&positions_path(&node)).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::PositionsCorrupt { path: positions_path(&node), reason: e.to_string() })?,
            None => PositionsCheckpoint::default(),
        };
        state.positions = checkpoint.positions;
        state.positions_checkpoint_seq = checkpoint.wal_seq;

        let wal_dir = data_dir.join("wal");
        let (wal, frames) = Wal::open(&wal_dir, &verifying_key, frame_partitions)?;
        let mut replayed_rows = 0usize;
        for frame in &frames {
            if frame.seq > checkpoint.wal_seq {
                for position in &frame.positions {
                    state.positions.insert(position.stream.clone(), position.offset);
                }
            }
            for (table, batch) in &frame.batches {
                let mut parts = split_by_hour(*table, batch)?;
                parts.retain(|part| frame.seq > state.watermarks.get(&(*table, part.hour)).copied().unwrap_or(0));
                replayed_rows += insert_hot(&mut state, *table, frame.seq, parts);
            }
        }
        let max_watermark = state.watermarks.values().copied().max().unwrap_or(0);
        let next_seq = wal.next_seq().max(max_watermark + 1).max(checkpoint.wal_seq + 1);
        tracing::info!(node = %node, frames = frames.len(), replayed_rows, next_seq, "store opened");
        Ok(Store {
            config,
            _lock_file: lock_file,
            node,
            location,
            verifying_key,
            wal: Mutex::new(WalState { wal, next_seq, key: wal_key }),
            state: Mutex::new(state),
            ledger: tokio::sync::Mutex::new(ledger),
            taps: Mutex::new(Vec::new()),
            inputs: Mutex::new(BTreeMap::new()),
        })
    }
}

pub(super) fn load_or_create_node_id(data_dir: &FsPath, wanted: Option<&str>) -> Result<String> {
    let path = data_dir.join("node.id");
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let node = match (stored, wanted) {
        (Some(stored), Some(wanted)) if stored != wanted => {
            return Err(StoreError::BadLocation {
                location: data_dir.display().to_string(),
                reason: format!("data directory belongs to node {stored}, not {wanted}"),
            })
        }
        (Some(stored), _) => stored,
        (None, Some(wanted)) => wanted.to_string(),
        (None, None) => {
            let mut random = [0u8; 4];
            getrandom::fill(&mut random)
                .map_err(|e| StoreError::Internal(format!("no randomness for the node id: {e}")))?;
            format!("n{}", hex(&random))
        }
    };
    if !valid_node_id(&node) {
        return Err(StoreError::BadLocation {
            location: data_dir.display().to_string(),
            reason: format!("node id {node:?} must be 1-64 of a-z, 0-9, _ and -"),
        });
    }
    std::fs::write(&path, format!("{node}\n")).map_err(|e| StoreError::io(&path, e))?;
    Ok(node)
}

/// Adds the live segments of every other node's ledger to the catalog. Their chains are checked by
/// `verify`, not here: a damaged foreign ledger must not stop this node.
pub(super) async fn load_other_nodes(
    location: &Location,
    own: &str,
    catalog: &mut BTreeMap<Table, BTreeMap<String, SegmentInfo>>,
) -> Result<()> {
    for node in list_nodes(location).await? {
        if node == own {
            continue;
        }
        for (seq, path, bytes) in read_entry_files(location, &node).await? {
            match parse_entry_file(&bytes) {
                Ok(signed) => apply_entry(catalog, &signed),
                Err(reason) => {
                    tracing::warn!(node, seq, path, reason, "unreadable ledger entry of another node skipped")
                }
            }
        }
    }
    Ok(())
}

/// Deletes this node's segment files that no live ledger entry records: written before a crash cut off
/// their ledger entry, or removed by an entry before a crash cut off the deletion.
pub(super) async fn remove_unrecorded_segments(
    location: &Location,
    node: &str,
    catalog: &BTreeMap<Table, BTreeMap<String, SegmentInfo>>,
) -> Result<()> {
    for table in Table::ALL {
        for meta in location.list(table.name()).await? {
            let path = meta.location.to_string();
            let Some(name) = parse_segment_path(&path) else { continue };
            if name.node != node {
                continue;
            }
            if !catalog.get(&table).is_some_and(|segments| segments.contains_key(&path)) {
                tracing::warn!(path, "removing segment that no ledger entry records (left by a crash)");
                location.delete(&path).await?;
            }
        }
    }
    Ok(())
}

pub(super) fn frame_partitions(frame: &Frame) -> Vec<(Table, i64)> {
    let mut partitions = Vec::new();
    for (table, batch) in &frame.batches {
        if let Ok(times) = time_values(*table, batch) {
            for time in times.values().iter() {
                let partition = (*table, hour_of(*time));
                if !partitions.contains(&partition) {
                    partitions.push(partition);
                }
            }
        }
    }
    partitions
}
