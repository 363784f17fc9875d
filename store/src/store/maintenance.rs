//! Maintenance: sealing hot partitions into segments with a ledger entry each, collecting WAL files,
//! retention, compaction, the background loop, and reading other nodes' ledgers.

use super::*;

impl Store {
    /// Flushes the hot partitions that the flush policy says are due, then checkpoints the positions and
    /// deletes the WAL files that the new segments cover: a process that only appends and flushes (a
    /// file ingest, `generate`) keeps a WAL of what is hot, not of everything it wrote.
    pub async fn flush_due(&self) -> Result<usize> {
        let flushed = self.flush_due_partitions().await?;
        if flushed > 0 {
            self.checkpoint_and_collect_wal().await?;
        }
        Ok(flushed)
    }

    async fn flush_due_partitions(&self) -> Result<usize> {
        let policy = &self.config.flush;
        let due: Vec<(Table, i64)> = {
            let state = lock(&self.state);
            let mut due: Vec<(Table, i64)> = state
                .hot
                .iter()
                .filter(|(_, p)| {
                    p.rows >= policy.partition_rows_max
                        || p.bytes >= policy.partition_bytes_max
                        || p.first_append.elapsed() >= policy.partition_age_max
                })
                .map(|(key, _)| *key)
                .collect();
            if state.hot_bytes > policy.hot_bytes_max {
                let mut by_size: Vec<(&(Table, i64), &HotPartition)> = state.hot.iter().collect();
                by_size.sort_by_key(|(_, p)| std::cmp::Reverse(p.bytes));
                let mut remaining = state.hot_bytes;
                for (key, partition) in by_size {
                    if remaining <= policy.hot_bytes_max / 2 {
                        break;
                    }
                    remaining -= partition.bytes;
                    if !due.contains(key) {
                        due.push(*key);
                    }
                }
            }
            due
        };
        self.flush_partitions(&due).await
    }

    /// Flushes every hot partition.
    pub async fn flush_all(&self) -> Result<usize> {
        self.flush_everything(self.config.flush.encoders, self.config.flush.threads).await
    }

    /// `flush_all` on `threads` threads (up to `threads` partitions encoded at once, a partition alone on
    /// all of them), whatever the policy says: a process that seals one partition on one thread while
    /// it parses (`ingest`) seals its last rows on every core.
    pub async fn flush_all_with(&self, threads: usize) -> Result<usize> {
        self.flush_everything(threads, threads).await
    }

    async fn flush_everything(&self, encoders: usize, threads: usize) -> Result<usize> {
        let all: Vec<(Table, i64)> = lock(&self.state).hot.keys().copied().collect();
        let flushed = self.flush_partitions_with(&all, encoders, threads).await?;
        self.checkpoint_and_collect_wal().await?;
        Ok(flushed)
    }

    /// Flushes the hot partitions of one table (the `alerts` of a detection step, say, so that the other
    /// processes see them before the step is checkpointed).
    pub async fn flush_table(&self, table: Table) -> Result<usize> {
        let of_table: Vec<(Table, i64)> = lock(&self.state).hot.keys().filter(|(t, _)| *t == table).copied().collect();
        if of_table.is_empty() {
            return Ok(0);
        }
        let flushed = self.flush_partitions(&of_table).await?;
        self.checkpoint_and_collect_wal().await?;
        Ok(flushed)
    }

    /// Seals `partitions` in the order given. Up to `FlushPolicy::encoders` of them are encoded at once
    /// (on the blocking pool), while the segment of the first is written and entered in the ledger: the
    /// ledger sees the same entries in the same order as from one encoder, and an error stops the flush
    /// after the segments already entered (the partitions still encoding stay hot).
    pub(super) async fn flush_partitions(&self, partitions: &[(Table, i64)]) -> Result<usize> {
        self.flush_partitions_with(partitions, self.config.flush.encoders, self.config.flush.threads).await
    }

    async fn flush_partitions_with(
        &self,
        partitions: &[(Table, i64)],
        encoders: usize,
        threads: usize,
    ) -> Result<usize> {
        let mut ledger = self.ledger.lock().await;
        let width = encoders.max(1);
        // The threads each partition is encoded on: shared by the partitions encoded at once.
        let threads = (threads / width.min(partitions.len()).max(1)).max(1);
        let mut queued = partitions.iter().copied();
        let mut encoding: VecDeque<tokio::task::JoinHandle<Result<Encoded>>> = VecDeque::with_capacity(width);
        let mut flushed = 0;
        loop {
            while encoding.len() < width {
                let Some((table, hour)) = queued.next() else { break };
                if let Some(hot) = self.hot_snapshot(table, hour) {
                    encoding.push_back(tokio::task::spawn_blocking(move || hot.encode(threads)));
                }
            }
            let Some(next) = encoding.pop_front() else { break };
            let encoded =
                next.await.map_err(|e| StoreError::Internal(format!("segment encoding task failed: {e}")))??;
            self.enter_segment(&mut ledger, encoded).await?;
            flushed += 1;
        }
        Ok(flushed)
    }

    /// The rows of a hot partition as they are now, with the newest WAL sequence number among them;
    /// `None` when it has none.
    fn hot_snapshot(&self, table: Table, hour: i64) -> Option<HotSnapshot> {
        let state = lock(&self.state);
        let partition = state.hot.get(&(table, hour)).filter(|p| !p.batches.is_empty())?;
        let seq_hi = partition.batches.iter().map(|hot| hot.seq).max().unwrap_or(0);
        let batches = partition.batches.iter().map(|hot| hot.batch.clone()).collect();
        Some(HotSnapshot { table, hour, batches, seq_hi, started: Instant::now() })
    }

    /// Writes an encoded partition as a segment, enters it in the ledger, and drops the hot rows it holds.
    async fn enter_segment(&self, ledger: &mut LedgerWriter, encoded: Encoded) -> Result<()> {
        let Encoded { table, hour, seq_hi, started, segment: encoded } = encoded;
        let path = segment_path(table, hour, &self.node, ledger.next_seq());
        let bytes = encoded.bytes.len() as u64;
        self.location.put(&path, encoded.bytes.clone()).await?;
        let record = SegmentRecord {
            path: path.clone(),
            sha256: encoded.sha256.clone(),
            bytes,
            rows: encoded.rows,
            min_ts_micros: encoded.min_ts_micros,
            max_ts_micros: encoded.max_ts_micros,
            wal_seq_hi: seq_hi,
        };
        let signed = ledger.append(LedgerOp::Add, table.name(), &partition_dir(hour), Some(record), Vec::new()).await?;
        let mut state = lock(&self.state);
        apply_entry(&mut state.catalog, &signed);
        state.head = Some(ledger.head());
        let watermark = state.watermarks.entry((table, hour)).or_default();
        *watermark = (*watermark).max(seq_hi);
        if let Some(partition) = state.hot.get_mut(&(table, hour)) {
            let mut freed = 0;
            partition.batches.retain(|hot| {
                // The last part of a batch to go frees the batch's buffers.
                if hot.seq <= seq_hi && Arc::strong_count(&hot.held) == 1 {
                    freed += *hot.held;
                }
                hot.seq > seq_hi
            });
            let (rows, bytes) =
                partition.batches.iter().fold((0, 0), |(r, b), hot| (r + hot.batch.num_rows(), b + hot.share));
            partition.rows = rows;
            partition.bytes = bytes;
            partition.first_append = Instant::now();
            if partition.batches.is_empty() {
                state.hot.remove(&(table, hour));
            }
            state.hot_bytes -= freed;
        }
        crate::metrics::segment_flushed(table, encoded.rows, started.elapsed());
        tracing::debug!(table = %table, path, rows = encoded.rows, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "segment flushed");
        Ok(())
    }

    /// Writes the positions checkpoint and deletes the WAL files whose frames are all in segments.
    pub(super) async fn checkpoint_and_collect_wal(&self) -> Result<usize> {
        let (seq, positions, already) = {
            let wal = lock(&self.wal);
            let state = lock(&self.state);
            (wal.next_seq - 1, state.positions.clone(), state.positions_checkpoint_seq)
        };
        if seq > already {
            let checkpoint = PositionsCheckpoint { wal_seq: seq, positions };
            let json =
                serde_json::to_vec(&checkpoint).map_err(|e| StoreError::Internal(format!("positions encode: {e}")))?;
            self.location.put(&positions_path(&self.node), Bytes::from(json)).await?;
            lock(&self.state).positions_checkpoint_seq = seq;
        }
        let mut wal = lock(&self.wal);
        let state = lock(&self.state);
        let next_seq = wal.next_seq;
        let checkpoint_seq = state.positions_checkpoint_seq;
        wal.wal.collect_garbage(
            |table, hour| state.watermarks.get(&(table, hour)).copied().unwrap_or(0),
            checkpoint_seq,
            next_seq,
        )
    }

    /// Deletes segments whose newest row is older than the table's retention. Returns segments removed.
    pub async fn apply_retention(&self, now_micros: i64) -> Result<usize> {
        let mut ledger = self.ledger.lock().await;
        let mut removed_count = 0;
        for (table, age) in &self.config.retention {
            let cutoff = now_micros.saturating_sub(age.as_micros().min(i64::MAX as u128) as i64);
            let expired: BTreeMap<i64, Vec<SegmentInfo>> = {
                let state = lock(&self.state);
                let mut by_hour: BTreeMap<i64, Vec<SegmentInfo>> = BTreeMap::new();
                for segment in state.catalog.get(table).into_iter().flat_map(|s| s.values()) {
                    if segment.node == self.node && segment.max_ts_micros < cutoff {
                        by_hour.entry(segment.hour).or_default().push(segment.clone());
                    }
                }
                by_hour
            };
            for (hour, segments) in expired {
                let removed: Vec<RemovedSegment> = segments
                    .iter()
                    .map(|s| RemovedSegment { path: s.path.clone(), sha256: s.sha256.clone(), rows: s.rows })
                    .collect();
                let signed =
                    ledger.append(LedgerOp::Retention, table.name(), &partition_dir(hour), None, removed).await?;
                removed_count += self.replace_segments(&ledger, &signed, &segments).await?;
            }
        }
        Ok(removed_count)
    }

    /// Merges small segments of this node's partitions. Returns how many segments were replaced.
    pub async fn compact(&self, now_micros: i64) -> Result<usize> {
        let policy = &self.config.compaction;
        let mut ledger = self.ledger.lock().await;
        let candidates: Vec<Vec<SegmentInfo>> = {
            let state = lock(&self.state);
            let mut groups: BTreeMap<(Table, i64), Vec<SegmentInfo>> = BTreeMap::new();
            for segments in state.catalog.values() {
                for segment in segments.values() {
                    if segment.node == self.node && segment.rows < policy.small_segment_rows_max {
                        groups.entry((segment.table, segment.hour)).or_default().push(segment.clone());
                    }
                }
            }
            let closed_before = now_micros - policy.closed_after.as_micros() as i64;
            groups
                .into_iter()
                .filter(|((_, hour), segments)| {
                    let closed = (hour + 1) * MICROS_PER_HOUR <= closed_before;
                    segments.len() >= policy.small_segments_min || (closed && segments.len() >= 2)
                })
                .map(|(_, segments)| segments)
                .collect()
        };
        let mut replaced = 0;
        for segments in candidates {
            let table = segments[0].table;
            let hour = segments[0].hour;
            let mut batches = Vec::new();
            for segment in &segments {
                batches.extend(read_segment(&self.location, table, &segment.path, None, TimeRange::ALL).await?);
            }
            let rows_in: u64 = segments.iter().map(|s| s.rows).sum();
            let encoded = tokio::task::spawn_blocking(move || encode_segment(table, &batches))
                .await
                .map_err(|e| StoreError::Internal(format!("compaction task failed: {e}")))??;
            assert_eq!(encoded.rows, rows_in, "compaction of {table} hour {hour} must keep every row");
            let path = segment_path(table, hour, &self.node, ledger.next_seq());
            let wal_seq_hi = lock(&self.state).watermarks.get(&(table, hour)).copied().unwrap_or(0);
            self.location.put(&path, encoded.bytes.clone()).await?;
            let record = SegmentRecord {
                path,
                sha256: encoded.sha256,
                bytes: encoded.bytes.len() as u64,
                rows: encoded.rows,
                min_ts_micros: encoded.min_ts_micros,
                max_ts_micros: encoded.max_ts_micros,
                wal_seq_hi,
            };
            let removed = segments
                .iter()
                .map(|s| RemovedSegment { path: s.path.clone(), sha256: s.sha256.clone(), rows: s.rows })
                .collect();
            let signed =
                ledger.append(LedgerOp::Compact, table.name(), &partition_dir(hour), Some(record), removed).await?;
            replaced += self.replace_segments(&ledger, &signed, &segments).await?;
        }
        Ok(replaced)
    }

    /// After the ledger entry `signed` that removes `segments` (retention, or compaction with their merged
    /// segment): the catalog follows the entry, then the files are deleted. Returns how many.
    pub(super) async fn replace_segments(
        &self,
        ledger: &LedgerWriter,
        signed: &SignedEntry,
        segments: &[SegmentInfo],
    ) -> Result<usize> {
        {
            let mut state = lock(&self.state);
            apply_entry(&mut state.catalog, signed);
            state.head = Some(ledger.head());
        }
        for segment in segments {
            self.location.delete(&segment.path).await?;
        }
        Ok(segments.len())
    }

    /// One maintenance pass: flush what is due, checkpoint positions and collect the WAL; with
    /// `deep`, also retention and compaction.
    pub async fn maintain(&self, deep: bool) -> Result<MaintenanceReport> {
        let mut report =
            MaintenanceReport { segments_flushed: self.flush_due_partitions().await?, ..Default::default() };
        report.wal_files_deleted = self.checkpoint_and_collect_wal().await?;
        if deep {
            let now = now_micros();
            report.segments_expired = self.apply_retention(now).await?;
            report.segments_compacted = self.compact(now).await?;
        }
        Ok(report)
    }

    /// Background maintenance of a running process until `stop` completes: every `every`, full and old
    /// hot partitions are sealed and WAL files collected (`maintain(false)`); every `refresh_every`, when
    /// given, the segments that other processes sealed into the shared location become visible
    /// (`refresh`). Failures are logged and retried at the next turn.
    pub async fn maintain_until(
        self: Arc<Self>,
        every: Duration,
        refresh_every: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut refreshed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => return,
            }
            if let Err(e) = self.maintain(false).await {
                tracing::warn!(error = %e, "maintenance failed; retrying");
            }
            if refresh_every.is_some_and(|period| refreshed.elapsed() >= period) {
                refreshed = Instant::now();
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "reading the other processes' ledgers failed; retrying");
                }
            }
        }
    }

    /// Re-reads the other nodes' ledgers so that their new segments become visible to scans.
    pub async fn refresh(&self) -> Result<()> {
        let mut others = BTreeMap::new();
        load_other_nodes(&self.location, &self.node, &mut others).await?;
        let mut state = lock(&self.state);
        for (table, segments) in state.catalog.iter_mut() {
            segments.retain(|_, s| s.node == self.node);
            if let Some(theirs) = others.remove(table) {
                segments.extend(theirs);
            }
        }
        for (table, theirs) in others {
            state.catalog.insert(table, theirs);
        }
        Ok(())
    }
}

/// A hot partition's rows taken for sealing.
struct HotSnapshot {
    table: Table,
    hour: i64,
    batches: Vec<RecordBatch>,
    seq_hi: u64,
    started: Instant,
}

impl HotSnapshot {
    fn encode(self, threads: usize) -> Result<Encoded> {
        let segment = encode_segment_on(self.table, &self.batches, threads)?;
        Ok(Encoded { table: self.table, hour: self.hour, seq_hi: self.seq_hi, started: self.started, segment })
    }
}

/// A hot partition encoded as a segment, not yet written.
struct Encoded {
    table: Table,
    hour: i64,
    seq_hi: u64,
    started: Instant,
    segment: EncodedSegment,
}
