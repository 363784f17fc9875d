//! The file source: files and directories (recursive, plain or gzip) and byte streams (stdin), read as
//! units for the pipeline and stored through the `Appender`, so that parsing overlaps the store's writes.
//!
//! A file's position (`file:<path>` → bytes read) is stored with its rows: a file whose position is its
//! size is skipped, and a large file of lines is decoded and stored in chunks cut at line ends, each with
//! the offset it reaches, so an interrupted ingest resumes mid-file and the pipeline's buffers hold a
//! chunk's rows, not the file's. Such a file is read chunk by chunk, as a stream is: memory holds one
//! chunk of it whatever its size. A file that is one document (gzip, a JSON array or object) is one
//! unit, read whole.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use store::Position;

use crate::error::IngestError;
use crate::pipeline::{splits_at_lines, Format, IngestStats, Pipeline, Unit};
use crate::sink::{Appender, StoreSink, Stored};

/// Line-oriented files larger than this are read in chunks of about this size.
pub const FILE_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Bytes read from a stream per unit when it carries lines.
pub const STREAM_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Rows buffered in the pipeline before they are queued for the store.
const BUFFERED_ROWS_MAX: usize = 200_000;
/// Text bytes buffered in the pipeline before they are queued for the store.
const BUFFERED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    pub path: PathBuf,
    pub bytes: u64,
}

impl FileInput {
    /// The stream name under which the file's position is stored.
    pub fn stream(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// Lists the files under `path` (the path itself when it is a file), recursively, in name order.
/// Hidden files and directories (names starting with `.`) are skipped.
pub fn list(path: &Path) -> Result<Vec<FileInput>, IngestError> {
    let path = std::fs::canonicalize(path).map_err(|e| IngestError::io(path, e))?;
    let mut files = Vec::new();
    walk(&path, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(path: &Path, files: &mut Vec<FileInput>) -> Result<(), IngestError> {
    let metadata = std::fs::metadata(path).map_err(|e| IngestError::io(path, e))?;
    if metadata.is_file() {
        files.push(FileInput { path: path.to_path_buf(), bytes: metadata.len() });
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(|e| IngestError::io(path, e))? {
        let entry = entry.map_err(|e| IngestError::io(path, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        walk(&entry.path(), files)?;
    }
    Ok(())
}

/// How a `FileSource` reads.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// `Format::Auto` detects per file (and per line of NDJSON).
    pub format: Format,
    /// Log group of plain log files that do not name theirs.
    pub log_group: Option<String>,
    /// Ingest files again even when their position says they were ingested.
    pub again: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions { format: Format::Auto, log_group: None, again: false }
    }
}

/// What a `FileSource` did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    pub files_ingested: u64,
    /// Files whose stored position says they were ingested before.
    pub files_skipped: u64,
    /// Rows queued for the store (stored once `FileSource::drain` returned).
    pub rows_queued: u64,
}

/// Files and streams into the store.
pub struct FileSource {
    sink: StoreSink,
    appender: Appender,
    pipeline: Pipeline,
    options: FileOptions,
    /// Positions of the inputs whose rows are in the pipeline's buffers.
    positions: Vec<Position>,
    pub stats: FileStats,
}

impl FileSource {
    pub fn new(sink: StoreSink, options: FileOptions) -> FileSource {
        FileSource {
            appender: Appender::start(sink.clone()),
            sink,
            pipeline: Pipeline::default(),
            options,
            positions: Vec::new(),
            stats: FileStats::default(),
        }
    }

    /// What the pipeline decoded so far.
    pub fn ingest_stats(&self) -> &IngestStats {
        &self.pipeline.stats
    }

    /// The pipeline, for a source of another kind in the same run (`coldtrail ingest s3://…` after files),
    /// so that the parts of one invocation meet whichever input brings them. `drain` first: that source
    /// stores through its own path.
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Ingests one file unless its stored position says it was; returns whether it read it.
    pub fn ingest_file(&mut self, file: &FileInput) -> Result<bool, IngestError> {
        let stream = file.stream();
        let stored = self.sink.store().position(&stream);
        if !self.options.again && stored == Some(file.bytes) {
            self.stats.files_skipped += 1;
            return Ok(false);
        }
        let io = |e| IngestError::io(&file.path, e);
        // Up to the size it had when listed: a file still being written is read to there, and its
        // position says so.
        let mut reader = std::fs::File::open(&file.path).map_err(io)?.take(file.bytes);
        let mut head = Vec::with_capacity(FILE_CHUNK_BYTES.min(file.bytes as usize) + 1);
        (&mut reader).take(FILE_CHUNK_BYTES as u64 + 1).read_to_end(&mut head).map_err(io)?;
        let key = file.path.to_string_lossy();
        let log_group = self.options.log_group.clone();
        let whole = Unit { source: &stream, position: "0", key: Some(&key), log_group: log_group.as_deref() };
        if head.len() <= FILE_CHUNK_BYTES || !splits_at_lines(&head) {
            // One document (gzip, a JSON array or object) or a small file: one unit.
            reader.read_to_end(&mut head).map_err(io)?;
            self.pipeline.ingest(self.options.format, &head, &whole);
            self.reached(&stream, file.bytes)?;
            self.stats.files_ingested += 1;
            return Ok(true);
        }
        // Lines: read chunk by chunk, so that memory holds a chunk of the file, not the file, and resumed
        // where an interrupted ingest of this file stopped (a chunk end, so a line start).
        let resume = stored.filter(|at| *at < file.bytes && !self.options.again).unwrap_or(0);
        let mut offset = resume;
        let mut buffer = if resume == 0 {
            head
        } else {
            let mut reader_at = std::fs::File::open(&file.path).map_err(io)?;
            reader_at.seek(std::io::SeekFrom::Start(resume)).map_err(io)?;
            reader = reader_at.take(file.bytes - resume);
            Vec::with_capacity(FILE_CHUNK_BYTES + 1)
        };
        loop {
            let wanted = (FILE_CHUNK_BYTES + 1).saturating_sub(buffer.len()) as u64;
            let read = (&mut reader).take(wanted).read_to_end(&mut buffer).map_err(io)?;
            // Short of what was asked: the end of the file (or of what it had when listed).
            let at_end = (read as u64) < wanted || offset + buffer.len() as u64 >= file.bytes;
            let end = if at_end { buffer.len() } else { chunk_end(&buffer, 0, FILE_CHUNK_BYTES) };
            let position = offset.to_string();
            self.pipeline.ingest(self.options.format, &buffer[..end], &Unit { position: &position, ..whole });
            offset += end as u64;
            buffer.drain(..end);
            // The file's size, not the bytes read, once it is read to the end: that is how it is skipped.
            self.reached(&stream, if at_end { file.bytes } else { offset })?;
            if at_end {
                break;
            }
        }
        self.stats.files_ingested += 1;
        Ok(true)
    }

    /// Ingests a byte stream (stdin) to its end, named `source` in dead letters and positions. Lines are
    /// read in chunks, so that `tail -f … | coldtrail ingest -` streams; a document (gzip, JSON) is read
    /// whole. A stream has no stored position: it is not skipped or resumed.
    pub fn ingest_stream(&mut self, reader: &mut dyn Read, source: &str) -> Result<(), IngestError> {
        let mut buffer = Vec::with_capacity(STREAM_CHUNK_BYTES);
        let mut chunk = vec![0u8; STREAM_CHUNK_BYTES];
        let mut whole: Option<bool> = None;
        let mut offset = 0u64;
        loop {
            let read = reader.read(&mut chunk).map_err(|e| IngestError::io(source, e))?;
            buffer.extend_from_slice(&chunk[..read]);
            let done = read == 0;
            if whole.is_none() && buffer.iter().any(|b| !b.is_ascii_whitespace()) {
                whole = Some(!splits_at_lines(&buffer));
            }
            let cut = match (done, whole) {
                (true, _) => buffer.len(),
                (false, Some(false)) if buffer.len() >= STREAM_CHUNK_BYTES / 2 => {
                    buffer.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1)
                }
                _ => 0,
            };
            if cut > 0 {
                let unit_bytes: Vec<u8> = buffer.drain(..cut).collect();
                let position = offset.to_string();
                let unit =
                    Unit { source, position: &position, key: None, log_group: self.options.log_group.as_deref() };
                self.pipeline.ingest(self.options.format, &unit_bytes, &unit);
                offset += unit_bytes.len() as u64;
                self.store_when_full()?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Notes that `stream` is read up to `offset` and queues the buffered rows when the buffers are full.
    fn reached(&mut self, stream: &str, offset: u64) -> Result<(), IngestError> {
        self.positions.retain(|p| p.stream != stream);
        self.positions.push(Position { stream: stream.to_string(), offset });
        self.store_when_full()
    }

    fn store_when_full(&mut self) -> Result<(), IngestError> {
        if self.pipeline.buffered_rows() >= BUFFERED_ROWS_MAX || self.pipeline.buffered_bytes() >= BUFFERED_BYTES_MAX {
            self.store_buffered()?;
        }
        Ok(())
    }

    /// Queues every row built so far with the positions they reach.
    pub fn store_buffered(&mut self) -> Result<(), IngestError> {
        let batches = self.pipeline.take_batches();
        if batches.is_empty() && self.positions.is_empty() {
            return Ok(());
        }
        self.stats.rows_queued += batches.iter().map(|(_, b)| b.num_rows() as u64).sum::<u64>();
        self.appender.append(batches, std::mem::take(&mut self.positions))
    }

    /// Queues what is buffered and waits until everything queued is stored.
    pub fn drain(&mut self) -> Result<Stored, IngestError> {
        self.store_buffered()?;
        self.appender.drain()
    }

    /// The input ended: emits the invocations still waiting for parts, stores everything, and returns
    /// what the pipeline decoded.
    pub fn finish(mut self) -> Result<(FileStats, IngestStats), IngestError> {
        self.pipeline.finish();
        self.drain()?;
        Ok((self.stats, self.pipeline.stats))
    }
}

/// The end of the chunk of `bytes` that starts at `offset`: about `chunk_bytes` long and cut after a
/// line end, or the end of the bytes.
fn chunk_end(bytes: &[u8], offset: usize, chunk_bytes: usize) -> usize {
    let end = (offset + chunk_bytes).min(bytes.len());
    if end == bytes.len() {
        return end;
    }
    bytes[offset..end].iter().rposition(|b| *b == b'\n').map_or(end, |at| offset + at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_listed_recursively_in_order_without_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("b/c/2.log"), "x").unwrap();
        std::fs::write(dir.path().join("a.json"), "xy").unwrap();
        std::fs::write(dir.path().join(".git/x"), "x").unwrap();
        let files = list(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.path.strip_prefix(std::fs::canonicalize(dir.path()).unwrap()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["a.json", "b/c/2.log"]);
        assert_eq!(files[0].bytes, 2);
        assert!(list(&dir.path().join("missing")).is_err());
    }
}
