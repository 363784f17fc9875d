//! `StoreSink`: the one way rows go from a pipeline into the store, for every source (files, stdin,
//! Kafka, S3, HTTP). One append of what a source holds may be larger than a WAL frame may carry (a
//! gzipped export object decodes to many times its size): the store writes it as a group of frames that
//! is replayed only whole, so a stored position never covers rows that are not stored, and rows are never
//! stored without their positions (which a crash between frames did before: the rows came back on
//! replay, the position did not, and a resume stored them again). The append blocks for an fsync;
//! `StoreSink::append` runs it off the async runtime, and `Appender` runs it on a thread of its own so
//! that a file source parses the next chunk while the last one is written.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use arrow::array::RecordBatch;
use store::{Position, Store, StoreError, Table};

use crate::error::IngestError;

/// Jobs queued for an `Appender` thread: a slow store slows the parser, and memory stays bounded by this
/// many appends.
const APPENDER_QUEUE_MAX: usize = 1;

/// Rows of several tables with the positions that they bring the store to.
pub type Batches = Vec<(Table, RecordBatch)>;

/// What `StoreSink` appends stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub rows: u64,
    /// Store appends it took (each atomic, of one or more WAL frames).
    pub appends: u64,
}

/// Appends to one store.
#[derive(Clone)]
pub struct StoreSink {
    store: Arc<Store>,
}

impl StoreSink {
    pub fn new(store: Arc<Store>) -> StoreSink {
        StoreSink { store }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stores `batches` and `positions` atomically, blocking for the fsync. When `expected` is not empty,
    /// the append is conditional on the store's positions of those streams being as given
    /// (`Store::append_checked`): the Kafka source's guard against storing a record twice.
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
        self.store.append_checked(batches, positions, expected)?;
        Ok(Stored { rows: rows as u64, appends: 1 })
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
    thread: std::thread::JoinHandle<()>,
}

impl Appender {
    /// Starts the thread. Inside a Tokio runtime, the appender also seals segments itself whenever the
    /// hot buffer is over its bound (`FlushPolicy::hot_bytes_max`), before it takes the next append:
    /// a parser faster than sealing waits on the queue instead of growing the hot buffer.
    pub fn start(sink: StoreSink) -> Appender {
        let (jobs, queue) = sync_channel::<Job>(APPENDER_QUEUE_MAX);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let thread = std::thread::Builder::new()
            .name("ingest-appender".into())
            .spawn(move || run_appender(&sink, &queue, runtime.as_ref()))
            .expect("the OS starts a thread");
        Appender { jobs, thread }
    }

    /// Ends the thread once what is queued is stored, and waits for it: its store is then no longer
    /// held (without this, the thread ends on its own, a moment after the appender is dropped).
    pub fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
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

fn run_appender(sink: &StoreSink, queue: &Receiver<Job>, runtime: Option<&tokio::runtime::Handle>) {
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
                let store = sink.store();
                let appended = sink.append_blocking(&batches, &positions, &[]);
                drop(batches);
                let sealed = match (runtime, store.hot_bytes()) {
                    (Some(runtime), (hot, max)) if hot > max => runtime.block_on(store.flush_due()).map(|_| ()),
                    _ => Ok(()),
                };
                match appended.and_then(|done| sealed.map(|()| done)) {
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
