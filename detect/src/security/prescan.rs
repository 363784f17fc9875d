//! Injection matching ahead of scoring, for inputs scored only at their end (files, backfills).
//!
//! A file ingest scores what it stored once the files are read (`runner`, `InputEnd::Closed`): the
//! order of the rows in event time is known only then. The injection scan of a row needs no order, and
//! it is most of what detection costs, so while the files are read a thread of its own scans the rows
//! the store appends and notes the texts that hold no injection (`CleanTexts`); the scoring then skips
//! the scan of those. A text's hits depend on the text alone (the rules are constants), so the alerts
//! are the same with or without the notes. Rows with hits are scanned again when scored: they are few.
//!
//! What is noted is a keyed hash of the text (SipHash with a key drawn per process), so that an
//! attacker cannot write a payload whose hash is that of a clean text. At most `CLEAN_TEXTS_MAX` are
//! noted (8 bytes each); past that the scoring scans what was not noted, as it does without notes.
//! Pre-scanning is best effort: a batch the thread is not ready for is left to the scoring, never
//! waited for.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use store::tables::{Borrowed, InvocationRow, LogRow};
use store::Table;

use super::injection::InjectionMatcher;
use super::rows;

/// Most clean texts noted (about 16 MiB).
pub const CLEAN_TEXTS_MAX: usize = 1 << 20;
/// Batches waiting for the pre-scan thread; an append that finds the queue full is not pre-scanned.
const QUEUE_BATCHES_MAX: usize = 2;

/// What a text was scanned as: the hits of an application log line and of a trigger payload are found
/// by the same scan, but from different texts of a row.
#[derive(Debug, Clone, Copy)]
pub enum Scanned {
    LogLine = 1,
    Payload = 2,
}

/// Keys already hashed: the set needs no second hash.
#[derive(Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[derive(Default, Clone, Copy)]
struct BuildPrehashed;

impl BuildHasher for BuildPrehashed {
    type Hasher = Prehashed;
    fn build_hasher(&self) -> Prehashed {
        Prehashed(0)
    }
}

/// The texts found to hold no injection, by keyed hash.
#[derive(Default)]
pub struct CleanTexts {
    key: std::collections::hash_map::RandomState,
    noted: Mutex<HashSet<u64, BuildPrehashed>>,
    /// Whether anything was noted: without a pre-scan (`serve`, `hunt`) a check neither hashes nor locks.
    any: AtomicBool,
}

impl CleanTexts {
    fn hash(&self, scanned: Scanned, text: &str) -> u64 {
        let mut hasher = self.key.build_hasher();
        hasher.write_u8(scanned as u8);
        hasher.write(text.as_bytes());
        hasher.finish()
    }

    /// Whether `text` was scanned as `scanned` and held no injection.
    pub fn is_clean(&self, scanned: Scanned, text: &str) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let hash = self.hash(scanned, text);
        self.noted.lock().unwrap_or_else(|e| e.into_inner()).contains(&hash)
    }

    fn note(&self, hashes: &[u64]) {
        if hashes.is_empty() {
            return;
        }
        self.any.store(true, Ordering::Relaxed);
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        for hash in hashes {
            if noted.len() >= CLEAN_TEXTS_MAX {
                return;
            }
            noted.insert(*hash);
        }
    }

    /// How many texts are noted.
    pub fn len(&self) -> usize {
        self.noted.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scans the application log lines and trigger payloads of a batch and notes the clean ones, until
    /// `stop` is set.
    pub fn scan(&self, matcher: &InjectionMatcher, table: Table, batch: &RecordBatch, stop: &AtomicBool) {
        let mut clean = Vec::new();
        let go_on = || !stop.load(Ordering::Relaxed);
        match table {
            Table::Logs => {
                let Ok(columns) = LogRow::columns(batch) else { return };
                for row in rows::logs(&columns).into_iter().take_while(|_| go_on()) {
                    if let Some(text) = log_line_scanned(&row) {
                        if matcher.scan_payload(&text).is_empty() {
                            clean.push(self.hash(Scanned::LogLine, &text));
                        }
                    }
                }
            }
            Table::Invocations => {
                let Ok(columns) = InvocationRow::columns(batch) else { return };
                for row in rows::invocations(&columns).into_iter().take_while(|_| go_on()) {
                    if let Some(payload) = row.event_payload {
                        if matcher.scan_payload(payload).is_empty() {
                            clean.push(self.hash(Scanned::Payload, payload));
                        }
                    }
                }
            }
            _ => {}
        }
        self.note(&clean);
    }
}

/// The text of a log line that the injection scan reads: none for platform lines (START, END and
/// REPORT carry no input) and lines of no function; the function's own code paths taken out (every
/// stack trace names them).
pub fn log_line_scanned<'a>(row: &LogRow<Borrowed<'a>>) -> Option<Cow<'a, str>> {
    let platform = row.message.starts_with("START RequestId")
        || row.message.starts_with("END RequestId")
        || row.message.starts_with("REPORT RequestId");
    if platform || row.function_name.is_none() {
        return None;
    }
    Some(without_own_code_paths(row.message))
}

fn without_own_code_paths(message: &str) -> Cow<'_, str> {
    if message.contains("/var/task/") || message.contains("/var/runtime/") {
        Cow::Owned(message.replace("/var/task/", "/").replace("/var/runtime/", "/"))
    } else {
        Cow::Borrowed(message)
    }
}

/// The pre-scan thread and the queue to it.
pub struct Prescan {
    sender: Option<SyncSender<(Table, RecordBatch)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prescan {
    /// Starts the thread, which notes into `clean`.
    pub fn start(clean: Arc<CleanTexts>) -> std::io::Result<Prescan> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_BATCHES_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("detect-prescan".into()).spawn({
            let stop = stop.clone();
            move || {
                let matcher = InjectionMatcher::new();
                run(&matcher, &clean, &receiver, &stop);
            }
        })?;
        Ok(Prescan { sender: Some(sender), stop, thread: Some(thread) })
    }

    /// Offers one appended batch; dropped when the thread is busy.
    pub fn offer(&self, table: Table, batch: &RecordBatch) {
        if !matches!(table, Table::Logs | Table::Invocations) {
            return;
        }
        if let Some(sender) = &self.sender {
            // Full or ended: the batch is left to the scoring.
            let _ = sender.try_send((table, batch.clone()));
        }
    }

    /// Ends the thread within a row; what it has not scanned is left to the scoring.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Prescan {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(matcher: &InjectionMatcher, clean: &CleanTexts, receiver: &Receiver<(Table, RecordBatch)>, stop: &AtomicBool) {
    while let Ok((table, batch)) = receiver.recv() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        clean.scan(matcher, table, &batch, stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_texts_are_bounded_and_keyed_by_what_was_scanned() {
        let clean = CleanTexts::default();
        let hashes: Vec<u64> = (0..CLEAN_TEXTS_MAX as u64 + 10).collect();
        clean.note(&hashes);
        assert_eq!(clean.len(), CLEAN_TEXTS_MAX);
        let other = CleanTexts::default();
        other.note(&[other.hash(Scanned::LogLine, "handled in 12 ms")]);
        assert!(other.is_clean(Scanned::LogLine, "handled in 12 ms"));
        assert!(!other.is_clean(Scanned::Payload, "handled in 12 ms"));
        // Another process's key gives another hash: nothing written in advance can match a clean text.
        assert_ne!(clean.hash(Scanned::LogLine, "x"), other.hash(Scanned::LogLine, "x"));
    }
}
