//! Reads: snapshots of a table's segments and hot batches, scans over both, the event-time span, and the
//! ledger as rows.

use super::*;

impl Store {
    /// The segments and hot batches of `table` overlapping `range`. Hot batches are not yet filtered by
    /// time within a partition: `scan` does that; DataFusion does it with the pushed-down filter.
    pub fn snapshot(&self, table: Table, range: TimeRange) -> TableSnapshot {
        let state = lock(&self.state);
        let segments = state
            .catalog
            .get(&table)
            .map(|segments| {
                segments.values().filter(|s| range.overlaps(s.min_ts_micros, s.max_ts_micros)).cloned().collect()
            })
            .unwrap_or_default();
        let hot = state
            .hot
            .range((table, i64::MIN)..=(table, i64::MAX))
            .filter(|((_, hour), _)| range.overlaps(hour * MICROS_PER_HOUR, (hour + 1) * MICROS_PER_HOUR - 1))
            .flat_map(|(_, partition)| partition.batches.iter().map(|hot| hot.batch.clone()))
            .collect();
        TableSnapshot { segments, hot }
    }

    /// Reads the rows of `table` in `range`, hot and sealed, with columns `projection` (indices into the
    /// table's schema). Row order is not defined.
    pub async fn scan(&self, table: Table, projection: Option<&[usize]>, range: TimeRange) -> Result<Vec<RecordBatch>> {
        // A compaction or retention pass may delete a segment between the snapshot and the read; the
        // second snapshot then names its replacement.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.scan_once(table, projection, range).await {
                Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) if attempt < 3 => continue,
                other => return other,
            }
        }
    }

    /// Like `scan`, over this node's rows only: its segments and its hot rows, what this process (or the
    /// one before it on the same data directory) stored. For work each process does for its own rows:
    /// the outbox delivers the alerts its node stored, and must not take over another live process's.
    pub async fn scan_own(
        &self,
        table: Table,
        projection: Option<&[usize]>,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut snapshot = self.snapshot(table, range);
            snapshot.segments.retain(|segment| segment.node == self.node);
            match self.read_snapshot(table, &snapshot, projection, range).await {
                Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) if attempt < 3 => continue,
                other => return other,
            }
        }
    }

    pub(super) async fn scan_once(
        &self,
        table: Table,
        projection: Option<&[usize]>,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>> {
        let snapshot = self.snapshot(table, range);
        self.read_snapshot(table, &snapshot, projection, range).await
    }

    async fn read_snapshot(
        &self,
        table: Table,
        snapshot: &TableSnapshot,
        projection: Option<&[usize]>,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for segment in &snapshot.segments {
            out.extend(read_segment(&self.location, table, &segment.path, projection, range).await?);
        }
        for batch in &snapshot.hot {
            let batch = filter_time(table, batch, range)?;
            if batch.num_rows() > 0 {
                out.push(project(&batch, projection)?);
            }
        }
        Ok(out)
    }

    /// The rows of `tables` in `range` as of one instant, with the WAL sequence number of the last append
    /// that instant includes: every append up to it is in the result, none after it. Consumers that also
    /// take appends from `subscribe` (the detection thread) tell by `Appended::seq` whether an append's
    /// rows were in a read. Row order is not defined.
    pub async fn scan_consistent(
        &self,
        tables: &[Table],
        range: TimeRange,
    ) -> Result<(u64, Vec<(Table, Vec<RecordBatch>)>)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (seq, snapshots) = {
                // The WAL lock orders this against appends: an append inserts its hot rows under it.
                let wal = lock(&self.wal);
                let seq = wal.next_seq.saturating_sub(1);
                let snapshots: Vec<(Table, TableSnapshot)> =
                    tables.iter().map(|table| (*table, self.snapshot(*table, range))).collect();
                drop(wal);
                (seq, snapshots)
            };
            let mut out = Vec::with_capacity(snapshots.len());
            let mut missing = false;
            for (table, snapshot) in snapshots {
                match self.read_snapshot(table, &snapshot, None, range).await {
                    Ok(batches) => out.push((table, batches)),
                    // A compaction or retention pass deleted a segment: the next snapshot names its
                    // replacement.
                    Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) if attempt < 3 => {
                        missing = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !missing {
                return Ok((seq, out));
            }
        }
    }

    /// The oldest event time among this process's rows of `tables` not yet sealed into segments (which
    /// the other processes cannot read yet); `None` when every row is sealed.
    pub fn unsealed_oldest(&self, tables: &[Table]) -> Option<i64> {
        let state = lock(&self.state);
        tables
            .iter()
            .filter_map(|table| {
                // Partitions are ordered by hour: the first one of the table with rows holds the oldest.
                let (_, partition) = state
                    .hot
                    .range((*table, i64::MIN)..=(*table, i64::MAX))
                    .find(|(_, p)| p.batches.iter().any(|hot| hot.batch.num_rows() > 0))?;
                partition
                    .batches
                    .iter()
                    .filter_map(|hot| {
                        hot.batch
                            .column(0)
                            .as_any()
                            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                            .and_then(arrow::compute::min)
                    })
                    .min()
            })
            .min()
    }

    /// The hours (numbers since the epoch) in which any of `tables` holds rows, sealed or hot, that overlap
    /// `range`, in order: what a reader walks instead of every hour of a range that may span years.
    pub fn stored_hours(&self, tables: &[Table], range: TimeRange) -> Vec<i64> {
        let state = lock(&self.state);
        let mut hours = std::collections::BTreeSet::new();
        for table in tables {
            if let Some(segments) = state.catalog.get(table) {
                hours.extend(
                    segments.values().filter(|s| range.overlaps(s.min_ts_micros, s.max_ts_micros)).map(|s| s.hour),
                );
            }
            hours.extend(
                state
                    .hot
                    .range((*table, i64::MIN)..=(*table, i64::MAX))
                    .map(|((_, hour), _)| *hour)
                    .filter(|hour| range.overlaps(hour * MICROS_PER_HOUR, (hour + 1) * MICROS_PER_HOUR - 1)),
            );
        }
        hours.into_iter().collect()
    }

    /// The schema `scan` returns for a projection.
    pub fn scan_schema(&self, table: Table, projection: Option<&[usize]>) -> Result<arrow::datatypes::SchemaRef> {
        projected_schema(table, projection)
    }

    /// The oldest and newest event time of a table's rows (sealed and hot), from segment metadata and the
    /// hot batches' time columns; `None` when the table is empty.
    pub fn event_time_span(&self, table: Table) -> Option<(i64, i64)> {
        let snapshot = self.snapshot(table, TimeRange::ALL);
        let mut span: Option<(i64, i64)> = None;
        let mut widen = |min: i64, max: i64| span = Some(span.map_or((min, max), |(a, b)| (a.min(min), b.max(max))));
        for segment in &snapshot.segments {
            widen(segment.min_ts_micros, segment.max_ts_micros);
        }
        for batch in &snapshot.hot {
            let times = batch.column(0).as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>();
            if let Some((min, max)) = times.and_then(|t| Some((arrow::compute::min(t)?, arrow::compute::max(t)?))) {
                widen(min, max);
            }
        }
        span
    }

    /// Every ledger entry of every node, as rows of `schema::ledger_schema`.
    pub async fn ledger_batch(&self) -> Result<RecordBatch> {
        let mut entries = Vec::new();
        for node in list_nodes(&self.location).await? {
            for (_, path, bytes) in read_entry_files(&self.location, &node).await? {
                match parse_entry_file(&bytes) {
                    Ok(signed) => entries.push(signed),
                    Err(reason) => tracing::warn!(path, reason, "unreadable ledger entry skipped"),
                }
            }
        }
        let ts: Vec<i64> = entries
            .iter()
            .map(|e| chrono::DateTime::parse_from_rfc3339(&e.entry.ts).map_or(0, |t| t.timestamp_micros()))
            .collect();
        let text = |f: &dyn Fn(&SignedEntry) -> Option<String>| -> ArrayRef {
            std::sync::Arc::new(entries.iter().map(f).collect::<StringArray>())
        };
        let segment_time = |f: &dyn Fn(&SegmentRecord) -> i64| -> ArrayRef {
            let times: TimestampMicrosecondArray = entries.iter().map(|e| e.entry.segment.as_ref().map(f)).collect();
            std::sync::Arc::new(times.with_timezone(crate::schema::TIME_ZONE))
        };
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(TimestampMicrosecondArray::from(ts).with_timezone(crate::schema::TIME_ZONE)),
            text(&|e| Some(e.entry.node.clone())),
            std::sync::Arc::new(entries.iter().map(|e| e.entry.seq as i64).collect::<Int64Array>()),
            text(&|e| Some(e.entry.op.name().to_string())),
            text(&|e| Some(e.entry.table.clone())),
            text(&|e| Some(e.entry.partition.clone())),
            text(&|e| e.entry.segment.as_ref().map(|s| s.path.clone())),
            text(&|e| e.entry.segment.as_ref().map(|s| s.sha256.clone())),
            std::sync::Arc::new(
                entries.iter().map(|e| e.entry.segment.as_ref().map(|s| s.rows as i64)).collect::<Int64Array>(),
            ),
            segment_time(&|s| s.min_ts_micros),
            segment_time(&|s| s.max_ts_micros),
            text(&|e| {
                (!e.entry.removed.is_empty())
                    .then(|| e.entry.removed.iter().map(|r| r.path.as_str()).collect::<Vec<_>>().join(","))
            }),
            text(&|e| Some(e.entry.prev_hash.clone())),
            text(&|e| Some(e.hash.clone())),
        ];
        debug_assert_eq!(ledger_schema().field(0).data_type(), &timestamp_type());
        Ok(RecordBatch::try_new(ledger_schema(), columns)?)
    }
}

/// Segment counts per table from the ledgers alone, without opening the store (no lock, no WAL).
pub async fn catalog_stats(location: &Location) -> Result<BTreeMap<Table, TableStats>> {
    let mut catalog = BTreeMap::new();
    load_other_nodes(location, "", &mut catalog).await?;
    let mut stats: BTreeMap<Table, TableStats> = Table::ALL.iter().map(|t| (*t, TableStats::default())).collect();
    for (table, segments) in &catalog {
        let entry = stats.entry(*table).or_default();
        for segment in segments.values() {
            entry.segments += 1;
            entry.segment_rows += segment.rows;
            entry.segment_bytes += segment.bytes;
        }
    }
    Ok(stats)
}
