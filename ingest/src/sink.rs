//! `StoreSink`: the one way rows go from a pipeline into the store, for every source (files, stdin,
//! Kafka, S3, HTTP). One append of what a source holds may be larger than a WAL frame may carry (a
//! gzipped export object decodes to many times its size): the sink stores it in slices that fit, with the
//! positions on the last slice, so that a stored position never covers rows that are not stored. The
//! append blocks for an fsync; `StoreSink::append` runs it off the async runtime, and `Appender` runs it
//! on a thread of its own so that a file source parses the next chunk while the last one is written.
//!
//! Cost, on the way to the store: one pass over the batches' buffers to size them, zero-copy slices.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use arrow::array::RecordBatch;
use store::{Position, Store, StoreError, Table};

use crate::error::IngestError;

/// Arrow bytes per append, at most; a WAL frame holds the LZ4-compressed IPC of them.
pub const APPEND_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Jobs queued for an `Appender` thread: a slow store slows the parser, and memory stays bounded by this
/// many appends.
const APPENDER_QUEUE_MAX: usize = 2;

/// Rows of several tables with the positions that they bring the store to.
pub type Batches = Vec<(Table, RecordBatch)>;

/// What one `StoreSink` append stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub rows: u64,
    /// Store appends (WAL frames) it took.
    pub appends: u64,
}

/// Appends to one store, sliced to fit its frames.
#[derive(Clone)]
pub struct StoreSink {
    store: Arc<Store>,
    append_bytes_max: usize,
}

impl StoreSink {
    pub fn new(store: Arc<Store>) -> StoreSink {
        // Half the frame limit: LZ4 and IPC framing may add a little to incompressible text.
        let append_bytes_max = APPEND_BYTES_MAX.min(store.frame_bytes_max() / 2).max(1);
        StoreSink { store, append_bytes_max }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stores `batches` and then `positions`, blocking for the fsyncs. When `expected` is not empty, every
    /// slice is conditional on the store's positions of those streams being as given
    /// (`Store::append_checked`): the Kafka source's guard against storing a record twice.
    ///
    /// Atomic when the rows fit one frame, which a source's own batch limits make the usual case. Larger
    /// appends go in several frames: after an error part of the rows may be stored, but not the positions,
    /// so a retry stores those rows again (twice, then) and never skips any.
    pub fn append_blocking(
        &self,
        batches: &[(Table, RecordBatch)],
        positions: &[Position],
        expected: &[(String, Option<u64>)],
    ) -> Result<Stored, StoreError> {
        let rows: usize = batches.iter().map(|(_, batch)| batch.num_rows()).sum();
        if rows == 0 && positions.is_empty() {
            return Ok(Stored::default());
        }
        let bytes: usize = batches.iter().map(|(_, batch)| batch.get_array_memory_size()).sum();
        let rows_max = batches.iter().map(|(_, batch)| batch.num_rows()).max().unwrap_or(0);
        let slices = bytes.div_ceil(self.append_bytes_max).clamp(1, rows_max.max(1));
        let mut stored = Stored::default();
        for (index, part) in slice(batches, slices).into_iter().enumerate() {
            let last = index + 1 == slices;
            stored.appends += self.append_fitting(&part, if last { positions } else { &[] }, expected)?;
        }
        stored.rows = rows as u64;
        Ok(stored)
    }

    /// `append_blocking` on the blocking pool, for async sources.
    pub async fn append(
        &self,
        batches: Batches,
        positions: Vec<Position>,
        expected: Vec<(String, Option<u64>)>,
    ) -> Result<Stored, IngestError> {
        let sink = self.clone();
        tokio::task::spawn_blocking(move || sink.append_blocking(&batches, &positions, &expected))
            .await
            .map_err(|e| IngestError::Internal(format!("store task failed: {e}")))?
            .map_err(IngestError::from)
    }

    /// One append, halved until it fits a frame (the size estimate is of uncompressed buffers, and
    /// a slice's buffers may be shared with its neighbours). Returns the appends it took.
    fn append_fitting(
        &self,
        batches: &[(Table, RecordBatch)],
        positions: &[Position],
        expected: &[(String, Option<u64>)],
    ) -> Result<u64, StoreError> {
        match self.store.append_checked(batches, positions, expected) {
            Ok(_) => Ok(1),
            Err(StoreError::FrameTooLarge { .. }) if batches.iter().any(|(_, batch)| batch.num_rows() > 1) => {
                let halves = slice(batches, 2);
                let first = self.append_fitting(&halves[0], &[], expected)?;
                Ok(first + self.append_fitting(&halves[1], positions, expected)?)
            }
            Err(e) => Err(e),
        }
    }
}

/// Cuts every batch into `slices` runs of rows (zero-copy), slice by slice; empty batches are left out.
fn slice(batches: &[(Table, RecordBatch)], slices: usize) -> Vec<Batches> {
    (0..slices)
        .map(|index| {
            batches
                .iter()
                .filter_map(|(table, batch)| {
                    let per_slice = batch.num_rows().div_ceil(slices);
                    let start = (index * per_slice).min(batch.num_rows());
                    let length = per_slice.min(batch.num_rows() - start);
                    (length > 0).then(|| (*table, batch.slice(start, length)))
                })
                .collect()
        })
        .collect()
}

/// Work for the appender thread.
enum Job {
    Append(Batches, Vec<Position>),
    /// Answered once every job before it is done, with the first error so far.
    Barrier(SyncSender<Result<Stored, IngestError>>),
}

/// A `StoreSink` on a thread of its own, in order: parsing the next input overlaps the WAL write of the
/// last (two cores: parse on one, compress and fsync on the other). After an error it stores nothing
/// more, and `drain` reports the error.
pub struct Appender {
    jobs: SyncSender<Job>,
}

impl Appender {
    pub fn start(sink: StoreSink) -> Appender {
        let (jobs, queue) = sync_channel::<Job>(APPENDER_QUEUE_MAX);
        std::thread::Builder::new()
            .name("ingest-appender".into())
            .spawn(move || run_appender(&sink, &queue))
            .expect("the OS starts a thread");
        Appender { jobs }
    }

    /// Queues an append; blocks while the queue is full.
    pub fn append(&self, batches: Batches, positions: Vec<Position>) -> Result<(), IngestError> {
        self.jobs.send(Job::Append(batches, positions)).map_err(|_| appender_gone())
    }

    /// Waits until everything queued is stored: what was stored since the last drain, or the first
    /// error.
    pub fn drain(&self) -> Result<Stored, IngestError> {
        let (reply, answer) = sync_channel(1);
        self.jobs.send(Job::Barrier(reply)).map_err(|_| appender_gone())?;
        answer.recv().map_err(|_| appender_gone())?
    }
}

fn appender_gone() -> IngestError {
    IngestError::Internal("the appender thread ended".into())
}

fn run_appender(sink: &StoreSink, queue: &Receiver<Job>) {
    // The first error, until a drain reports it; after it nothing more is stored.
    let mut failed: Option<StoreError> = None;
    let mut poisoned = false;
    let mut stored = Stored::default();
    for job in queue {
        match job {
            Job::Append(batches, positions) => {
                if poisoned {
                    continue;
                }
                match sink.append_blocking(&batches, &positions, &[]) {
                    Ok(done) => {
                        stored.rows += done.rows;
                        stored.appends += done.appends;
                    }
                    Err(e) => {
                        failed = Some(e);
                        poisoned = true;
                    }
                }
            }
            Job::Barrier(reply) => {
                let answer = match (failed.take(), poisoned) {
                    (Some(e), _) => Err(IngestError::Store(e)),
                    (None, true) => Err(IngestError::AppendFailedEarlier),
                    (None, false) => Ok(std::mem::take(&mut stored)),
                };
                let _ = reply.send(answer);
            }
        }
    }
}
