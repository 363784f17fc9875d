//! The file source: files and directories (recursive, plain or gzip) and byte streams (stdin), read as
//! units for the pipeline and stored through the `Appender`, so that parsing overlaps the store's writes.
//!
//! A file's position (`file:<path>` → bytes read) is stored with its rows: a file whose position is its
//! size is skipped, and a large file of lines is decoded and stored in chunks cut at line ends, each with
//! the offset it reaches, so an interrupted ingest resumes mid-file and the pipeline's buffers hold a
//! chunk's rows, not the file's. Such a file is read chunk by chunk, as a stream is: memory holds one
//! chunk of it whatever its size. A gzip file of lines or of JSON documents back to back
//! (a Firehose object) is decompressed as it is read and ingested the same way, its decompressed offset
//! stored as it goes (`file:<path>#decompressed`). A file larger than a chunk that is one JSON document
//! (a CloudTrail file, a `filter-log-events` page, a JSON array; plain or gzip) is read in pieces of its
//! largest array, each with the document's envelope (`outline`), the offset of the next element stored
//! after each (`file:<path>#pieces` for gzip): memory holds a piece, not the document. A small file, or
//! a large document with no array that holds most of it, is one unit, read whole.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use store::Position;

use crate::error::IngestError;
use crate::outline;
use crate::pipeline::{
    is_gzip, splits_at_lines, Format, IngestStats, Pipeline, TrailRows, Unit, DECOMPRESSED_BYTES_MAX,
};
use crate::progress::{Progress, Snapshot};
use crate::sink::{Appender, StoreSink, Stored};

/// Line-oriented files larger than this are read in chunks of about this size.
pub const FILE_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Bytes read from a stream per unit when it carries lines.
pub const STREAM_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Rows buffered in the pipeline before they are queued for the store.
const BUFFERED_ROWS_MAX: usize = 100_000;
/// Text bytes buffered in the pipeline before they are queued for the store.
const BUFFERED_BYTES_MAX: usize = 32 * 1024 * 1024;

/// One input file, or an object of a bucket read through a file (`FileInput::object`).
#[derive(Debug, Clone)]
pub struct FileInput {
    pub path: PathBuf,
    pub bytes: u64,
    object: Option<Arc<Object>>,
}

/// An object (the S3 source) or a byte stream's document: the name its position and rows carry, and
/// the file that holds its bytes.
#[derive(Debug)]
struct Object {
    stream: String,
    key: String,
    file: Arc<std::fs::File>,
    /// Whether its positions are stored (not for a byte stream, which is not skipped or resumed).
    positions: bool,
}

impl FileInput {
    /// A file of `bytes` bytes at `path`.
    pub fn new(path: impl Into<PathBuf>, bytes: u64) -> FileInput {
        FileInput { path: path.into(), bytes, object: None }
    }

    /// An object of `bytes` bytes whose position is stored under `stream` (done: its size) and whose
    /// rows name `key`, read from `file` (a copy, or the object itself in a local directory). Its
    /// progress inside is kept per size (`progress_stream`): an object that changes is read again from
    /// its start, as a whole.
    pub fn object(stream: String, key: String, file: std::fs::File, bytes: u64) -> FileInput {
        let object = Object { stream, key, file: Arc::new(file), positions: true };
        FileInput { path: PathBuf::from(&object.key), bytes, object: Some(Arc::new(object)) }
    }

    /// A byte stream's bytes, written to `file`: read as a file is, but no position of it is stored.
    fn spooled(source: &str, file: std::fs::File, bytes: u64) -> FileInput {
        let object = Object { stream: source.into(), key: source.into(), file: Arc::new(file), positions: false };
        FileInput { path: PathBuf::from(source), bytes, object: Some(Arc::new(object)) }
    }

    /// The stream name under which the file's position is stored: its size once read.
    pub fn stream(&self) -> String {
        match &self.object {
            Some(object) => object.stream.clone(),
            None => format!("file:{}", self.path.display()),
        }
    }

    /// The stream under which the offset reached inside it is stored while it is read in chunks: the
    /// file's own (a file that grew is read on from there), or per size for an object.
    fn progress_stream(&self) -> String {
        match &self.object {
            Some(object) => format!("{}#{}", object.stream, self.bytes),
            None => self.stream(),
        }
    }

    /// What its rows name as their key (the log stream of an export object is read from it).
    fn key(&self) -> String {
        match &self.object {
            Some(object) => object.key.clone(),
            None => self.path.to_string_lossy().into_owned(),
        }
    }

    /// Its bytes from the start, up to the size it was listed with.
    fn open(&self) -> std::io::Result<std::io::Take<Opened>> {
        self.open_at(0)
    }

    /// Its bytes from `at`, up to the size it was listed with.
    fn open_at(&self, at: u64) -> std::io::Result<std::io::Take<Opened>> {
        let file = match &self.object {
            Some(object) => object.file.clone(),
            None => Arc::new(std::fs::File::open(&self.path)?),
        };
        Ok(Opened { file, at }.take(self.bytes.saturating_sub(at)))
    }
}

/// A file read from its own offset (`pread`), so that several readers of one object's file do not move
/// each other's.
pub struct Opened {
    file: Arc<std::fs::File>,
    at: u64,
}

impl Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.at)?;
        self.at += read as u64;
        Ok(read)
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
        files.push(FileInput::new(path, metadata.len()));
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
    /// Input bytes read (as on disk: gzip'd bytes of a gzip file).
    pub bytes_read: u64,
    /// Files of `files_ingested` read and parsed ahead on reader threads (`FileSource::ingest_files`).
    pub files_read_ahead: u64,
}

/// Files and streams into the store.
pub struct FileSource {
    sink: StoreSink,
    appender: Appender,
    pipeline: Pipeline,
    options: FileOptions,
    /// Positions of the inputs whose rows are in the pipeline's buffers.
    positions: Vec<Position>,
    progress: Option<Progress>,
    /// Threads that read trail files for `ingest_files` (1: none, the caller's thread reads everything).
    readers: usize,
    /// Read buffers of files before, reused: a chunk's buffer is 8 MiB, and a fresh one per file is
    /// fresh pages, faulted in one by one as it fills.
    spare_buffers: Vec<Vec<u8>>,
    pub stats: FileStats,
}

impl FileSource {
    pub fn new(sink: StoreSink, options: FileOptions) -> FileSource {
        FileSource::with_pipeline(sink, options, Pipeline::default())
    }

    /// A source that reads into `pipeline` (another source's, whose invocations in assembly its files
    /// may complete); `into_pipeline` gives it back.
    pub fn with_pipeline(sink: StoreSink, options: FileOptions, pipeline: Pipeline) -> FileSource {
        FileSource {
            appender: Appender::start(sink.clone()),
            sink,
            pipeline,
            options,
            positions: Vec::new(),
            progress: None,
            readers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spare_buffers: Vec::new(),
            stats: FileStats::default(),
        }
    }

    /// How many threads `ingest_files` reads trail files on (default: one per core; 1: none).
    pub fn set_readers(&mut self, readers: usize) {
        self.readers = readers.max(1);
    }

    /// Shows `progress` as the input is read, chunk by chunk.
    pub fn show_progress(&mut self, progress: Progress) {
        self.progress = Some(progress);
    }

    fn snapshot(&self) -> Snapshot {
        let stats = &self.pipeline.stats;
        Snapshot {
            bytes_read: self.stats.bytes_read,
            records: stats.records(),
            dead_letters: stats.dead_letters_total(),
            files: self.stats.files_ingested,
        }
    }

    /// `bytes` more of the input were read.
    fn read(&mut self, bytes: u64) {
        self.stats.bytes_read += bytes;
        let now = self.snapshot();
        if let Some(progress) = &mut self.progress {
            progress.update(&now);
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

    /// Ingests `files` in order, as `ingest_file` one after another does, to the same rows, dead letters
    /// and positions; trail files (`Pipeline::trail_file_rows`: a unit whose rows depend on it alone)
    /// of less than `READ_AHEAD_FILE_BYTES_MAX` are read and parsed ahead on `set_readers` threads and
    /// their rows taken in order. Everything else (logs, whose invocations are assembled across
    /// units; larger files, read in chunks; anything a reader finds is not plainly a trail file) is
    /// read on this thread when its turn comes, while the readers go on with the trail files after it.
    pub fn ingest_files(&mut self, files: &[FileInput]) -> Result<(), IngestError> {
        if self.readers <= 1 || !matches!(self.options.format, Format::Auto | Format::CloudTrail) {
            for file in files {
                self.ingest_file(file)?;
            }
            return Ok(());
        }
        let (jobs, queue) = channel::<ReadJob>();
        let queue = Mutex::new(queue);
        let (format, log_group) = (self.options.format, self.options.log_group.clone());
        std::thread::scope(|scope| {
            for _ in 0..self.readers {
                scope.spawn(|| read_trail_files(&queue, format, log_group.as_deref()));
            }
            // `jobs` is moved in and dropped at its end: the readers then end, and the scope joins them.
            self.ingest_in_order(files, jobs)
        })
    }

    /// `ingest_files`' thread: hands trail files to the readers up to `2 × readers` ahead, and takes
    /// every file's rows in order.
    fn ingest_in_order(&mut self, files: &[FileInput], jobs: Sender<ReadJob>) -> Result<(), IngestError> {
        let ahead = 2 * self.readers;
        let mut queued: VecDeque<(&FileInput, Option<Receiver<Option<TrailRows>>>)> = VecDeque::new();
        for (at, file) in files.iter().enumerate() {
            let skipped = !self.options.again && self.sink.store().position(&file.stream()) == Some(file.bytes);
            let read_ahead = !skipped && file.bytes < READ_AHEAD_FILE_BYTES_MAX;
            let rows = read_ahead.then(|| {
                let (reply, rows) = sync_channel(1);
                // The readers outlive this loop (the scope joins them): the send cannot fail.
                let _ = jobs.send(ReadJob { file: file.clone(), reply });
                rows
            });
            queued.push_back((file, rows));
            while queued.len() > ahead || (at + 1 == files.len() && !queued.is_empty()) {
                let (file, rows) = queued.pop_front().expect("not empty");
                // A reader that found no plain trail file (or failed) leaves the file to this thread.
                match rows.and_then(|rows| rows.recv().ok().flatten()) {
                    Some(rows) => self.take_trail_rows(file, rows)?,
                    None => {
                        self.ingest_file(file)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A trail file that a reader read whole: as `ingest_file` takes a file of one unit.
    fn take_trail_rows(&mut self, file: &FileInput, rows: TrailRows) -> Result<(), IngestError> {
        self.pipeline.add_trail_rows(rows);
        self.stats.files_ingested += 1;
        self.stats.files_read_ahead += 1;
        self.read(file.bytes);
        self.reached_in(file, &file.stream(), file.bytes)
    }

    /// An empty buffer of at least `capacity` bytes, one used before if there is one.
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        let mut buffer = self.spare_buffers.pop().unwrap_or_default();
        buffer.clear();
        buffer.reserve(capacity);
        buffer
    }

    /// Keeps `buffer` for the next file, unless it grew past a chunk's size (a large document read whole).
    fn give_back(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() <= 2 * (FILE_CHUNK_BYTES + 1) && self.spare_buffers.len() < 2 {
            self.spare_buffers.push(buffer);
        }
    }

    /// Ingests one file unless its stored position says it was; returns whether it read it.
    pub fn ingest_file(&mut self, file: &FileInput) -> Result<bool, IngestError> {
        let stream = file.stream();
        let stored = self.position_in(file, &stream);
        if !self.options.again && stored == Some(file.bytes) {
            self.stats.files_skipped += 1;
            if let Some(progress) = &mut self.progress {
                progress.skip(file.bytes);
            }
            return Ok(false);
        }
        let io = |e| IngestError::io(&file.path, e);
        // Up to the size it had when listed: a file still being written is read to there, and its
        // position says so.
        let mut reader = file.open().map_err(io)?;
        let mut head = self.buffer(FILE_CHUNK_BYTES.min(file.bytes as usize) + 1);
        // The gzip magic first: a large gzip file is read by its decoder, not into a head of 8 MiB first.
        (&mut reader).take(2).read_to_end(&mut head).map_err(io)?;
        if is_gzip(&head) && self.ingest_gzip_chunked(file)? {
            self.give_back(head);
            return Ok(true);
        }
        (&mut reader).take(FILE_CHUNK_BYTES as u64 + 1 - head.len() as u64).read_to_end(&mut head).map_err(io)?;
        let resume = (self.position_in(file, &file.progress_stream()))
            .filter(|at| *at < file.bytes && !self.options.again)
            .unwrap_or(0);
        if head.len() > FILE_CHUNK_BYTES && !is_gzip(&head) && !splits_at_lines(&head) {
            // Larger than a chunk and not lines: JSON documents back to back, read document by document,
            // or one document, read in pieces of its largest array; else (neither) whole, below.
            if documents_back_to_back(&head) {
                self.give_back(head);
                if let Some(progress) = &mut self.progress {
                    progress.skip(resume);
                }
                let buffer = self.buffer(FILE_CHUNK_BYTES + 1);
                let mut reader = file.open_at(resume).map_err(io)?;
                self.ingest_lines(file, &mut reader, buffer, (resume, resume), None, Split::Documents)?;
                return Ok(true);
            }
            if self.ingest_in_pieces(file, Compression::None, resume)? {
                self.give_back(head);
                return Ok(true);
            }
        }
        if head.len() <= FILE_CHUNK_BYTES || !splits_at_lines(&head) {
            // One document (gzip, a JSON array or object) or a small file: one unit.
            reader.read_to_end(&mut head).map_err(io)?;
            let (key, stream) = (file.key(), file.stream());
            let log_group = self.options.log_group.clone();
            let unit = Unit { source: &stream, position: "0", key: Some(&key), log_group: log_group.as_deref() };
            self.pipeline.ingest(self.options.format, &head, &unit);
            self.give_back(head);
            self.stats.files_ingested += 1;
            self.read(file.bytes);
            self.reached_in(file, &stream, file.bytes)?;
            return Ok(true);
        }
        // Lines: read chunk by chunk, so that memory holds a chunk of the file, not the file, and resumed
        // where an interrupted ingest of this file stopped (a chunk end, so a line start).
        if let Some(progress) = &mut self.progress {
            progress.skip(resume);
        }
        let buffer = if resume == 0 {
            head
        } else {
            reader = file.open_at(resume).map_err(io)?;
            self.give_back(head);
            self.buffer(FILE_CHUNK_BYTES + 1)
        };
        self.ingest_lines(file, &mut reader, buffer, (resume, resume), None, Split::Lines)?;
        Ok(true)
    }

    /// A gzip file of lines (a CloudWatch Logs export object, a rotated log) or of JSON documents back to
    /// back (a Firehose object: subscription payloads, each its own gzip member), decompressed as it is
    /// read and ingested chunk by chunk, cut at line or document ends, so that memory holds a chunk, not
    /// the file. Its progress is stored as the decompressed offset reached (stream
    /// `file:<path>#decompressed`), from which an interrupted ingest resumes; its size under `file:<path>`
    /// once read to the end. One that decompresses to at most a chunk is one unit, decompressed once,
    /// whatever its own size (a small file may expand a thousandfold); one larger document is read in
    /// pieces. Returns false, having stored nothing, when the file is broken or a large document that
    /// cannot be cut: it is then read whole, where what it holds becomes a dead letter if broken.
    fn ingest_gzip_chunked(&mut self, file: &FileInput) -> Result<bool, IngestError> {
        let io = |e| IngestError::io(&file.path, e);
        if let Some(at) = self.position_in(file, &pieces_stream(file)).filter(|_| !self.options.again) {
            if self.ingest_in_pieces(file, Compression::Gzip, at)? {
                return Ok(true);
            }
        }
        let counted = Counted { inner: file.open().map_err(io)?, read: 0 };
        let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, counted));
        let decompressed = decompressed_stream(file);
        let resume = match self.position_in(file, &decompressed) {
            Some(at) if !self.options.again => at,
            _ => 0,
        };
        let skipped = std::io::copy(&mut (&mut decoder).take(resume), &mut std::io::sink());
        // The file's bytes behind the part ingested before (plus what the decoder buffered). Without a
        // part to skip, none: the decoder has read ahead already (its header, a buffer), and those bytes
        // are counted as the chunks come.
        let read_before = if resume > 0 { decoder.get_ref().get_ref().read } else { 0 };
        let mut head = self.buffer(FILE_CHUNK_BYTES + 1);
        let peeked = (&mut decoder).take(FILE_CHUNK_BYTES as u64 + 1).read_to_end(&mut head);
        let split = if splits_at_lines(&head) { Split::Lines } else { Split::Documents };
        let head_len = head.len();
        let whole = peeked.is_err()
            || head.len() <= FILE_CHUNK_BYTES
            || (split == Split::Documents && !documents_back_to_back(&head));
        if resume == 0 && whole {
            if peeked.is_ok() && head.len() <= FILE_CHUNK_BYTES {
                // All of it, decompressed: one unit, not decompressed again.
                let (key, stream) = (file.key(), file.stream());
                let log_group = self.options.log_group.clone();
                let unit = Unit { source: &stream, position: "0", key: Some(&key), log_group: log_group.as_deref() };
                self.pipeline.ingest_gunzipped(self.options.format, &head, file.bytes as usize, &unit);
                self.give_back(head);
                self.stats.files_ingested += 1;
                self.read(file.bytes);
                self.reached_in(file, &stream, file.bytes)?;
                return Ok(true);
            }
            self.give_back(head);
            // One document, larger than a chunk: in pieces of its largest array, if it has one.
            let large = peeked.is_ok() && head_len > FILE_CHUNK_BYTES && split == Split::Documents;
            return Ok(large && self.ingest_in_pieces(file, Compression::Gzip, 0)?);
        }
        if resume > 0 && skipped.map_or(true, |n| n < resume) {
            // The part stored before is no longer there: the file was replaced, not appended to.
            tracing::warn!(file = %file.path.display(), resume, "gzip file shorter than the part of it ingested before; not read again");
        }
        if let Some(progress) = &mut self.progress {
            progress.skip(read_before);
        }
        self.ingest_lines(file, &mut decoder, head, (resume, read_before), Some(&decompressed), split)?;
        Ok(true)
    }

    /// One JSON document larger than a chunk (a CloudTrail file, a `filter-log-events` page, a JSON array
    /// of events), plain or gzip, ingested in pieces (`outline`): each piece is the document with its
    /// largest array cut down to about a chunk of elements, so that memory holds a piece, not the
    /// document, and a broken element is a dead letter of its piece alone. A first pass finds the array
    /// (reading the file, decompressing it if gzip, holding none of it); the second reads the pieces.
    /// After each piece the offset of the next element is stored (under the file's own stream for a
    /// plain file, under `file:<path>#pieces` for a gzip one, as decompressed bytes), from which an
    /// interrupted ingest resumes (`resume`); the file's size once it is read to the end. Returns false,
    /// having stored nothing, when the file is not one document around a large array: it is then read
    /// whole.
    fn ingest_in_pieces(
        &mut self,
        file: &FileInput,
        compression: Compression,
        resume: u64,
    ) -> Result<bool, IngestError> {
        if matches!(self.options.format, Format::Lambda | Format::Export) {
            // Read as text lines: a piece's envelope would be lines of every piece.
            return Ok(false);
        }
        let io = |e| IngestError::io(&file.path, e);
        let outline = match outline::outline(Document::open(file, compression).map_err(io)?, FILE_CHUNK_BYTES) {
            Ok(Some(outline)) => outline,
            Ok(None) => return Ok(false),
            // A gzip file cut short or damaged is read whole, where what it holds becomes a dead letter.
            Err(_) if compression == Compression::Gzip => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let (key, stream) = (file.key(), file.stream());
        let resume_stream = match compression {
            Compression::None => file.progress_stream(),
            Compression::Gzip => pieces_stream(file),
        };
        let mut reader = Document::open(file, compression).map_err(io)?;
        let mut prefix = Vec::with_capacity(outline.open as usize);
        (&mut reader).take(outline.open).read_to_end(&mut prefix).map_err(io)?;
        let mut offset = resume.clamp(outline.open, outline.close);
        std::io::copy(&mut (&mut reader).take(offset - outline.open), &mut std::io::sink()).map_err(io)?;
        // The file's bytes behind the pieces ingested before, which progress skips; none at the start.
        let mut read_before = 0;
        if offset > outline.open {
            read_before = reader.compressed_bytes_read().unwrap_or(offset);
            if let Some(progress) = &mut self.progress {
                progress.skip(read_before);
            }
        }
        let mut content = (&mut reader).take(outline.close - offset);
        let (mut buffer, mut piece) = (self.buffer(FILE_CHUNK_BYTES + PIECE_READ_BYTES), self.buffer(0));
        let mut elements = outline::Elements::default();
        let log_group = self.options.log_group.clone();
        loop {
            let read = (&mut content).take(PIECE_READ_BYTES as u64).read_to_end(&mut buffer).map_err(io)?;
            elements.scan(&buffer);
            let at_end = read < PIECE_READ_BYTES;
            let cut = match elements.last_comma() {
                _ if at_end => buffer.len(),
                Some(comma) if buffer.len() >= FILE_CHUNK_BYTES => comma,
                // One element larger than the pipeline takes: a piece of its own, to be a dead letter.
                None if buffer.len() > DECOMPRESSED_BYTES_MAX => buffer.len(),
                _ => continue,
            };
            outline::piece(&prefix, &buffer[..cut], &outline.suffix, &mut piece);
            let position = offset.to_string();
            let unit = Unit { source: &stream, position: &position, key: Some(&key), log_group: log_group.as_deref() };
            self.pipeline.ingest(self.options.format, &piece, &unit);
            // Past the comma after the piece's last element: where the next piece starts.
            let taken = (cut + 1).min(buffer.len());
            offset += taken as u64;
            buffer.drain(..taken);
            if taken > 0 {
                elements.cut(taken - 1);
            }
            let read_now = if at_end { file.bytes } else { reader_bytes(&content, offset) };
            self.read(read_now - read_before);
            read_before = read_now;
            if at_end {
                self.stats.files_ingested += 1;
                self.reached_in(file, &resume_stream, outline.close)?;
                self.reached_in(file, &stream, file.bytes)?;
                break;
            }
            self.reached_in(file, &resume_stream, offset)?;
        }
        self.give_back(buffer);
        self.give_back(piece);
        Ok(true)
    }

    /// Reads lines chunk by chunk from `reader` (`buffer` holds the first bytes read, `offset` is where
    /// they start, `read_before` the bytes of the file read before them that progress counted already
    /// or skipped) into the pipeline, storing after each chunk the offset reached: under the file's own
    /// stream for a plain file, under `decompressed` for a gzip one; the file's size under its own stream
    /// once it is read to the end, which is how it is skipped.
    fn ingest_lines<R: Read + CompressedBytes>(
        &mut self,
        file: &FileInput,
        reader: &mut R,
        mut buffer: Vec<u8>,
        (mut offset, mut read_before): (u64, u64),
        decompressed: Option<&str>,
        split: Split,
    ) -> Result<(), IngestError> {
        let (key, stream) = (file.key(), file.stream());
        let log_group = self.options.log_group.clone();
        // Set when the buffer holds no whole document: it is then read on until one ends.
        let mut grow = false;
        loop {
            let wanted =
                if grow { FILE_CHUNK_BYTES } else { (FILE_CHUNK_BYTES + 1).saturating_sub(buffer.len()) } as u64;
            let (read, broken) = match reader.by_ref().take(wanted).read_to_end(&mut buffer) {
                Ok(read) => (read, None),
                // A gzip file cut short or damaged: what was decompressed is ingested, the rest is a dead letter.
                Err(error) if decompressed.is_some() => (0, Some(error)),
                Err(error) => return Err(IngestError::io(&file.path, error)),
            };
            // Short of what was asked: the end of the file (or of what it had when listed).
            let at_end = broken.is_some()
                || (read as u64) < wanted
                || (decompressed.is_none() && offset + buffer.len() as u64 >= file.bytes);
            let end = match split {
                _ if at_end => buffer.len(),
                Split::Lines => chunk_end(&buffer, 0, FILE_CHUNK_BYTES),
                Split::Documents => match documents_end(&buffer) {
                    0 if buffer.len() <= DECOMPRESSED_BYTES_MAX => {
                        grow = true;
                        continue;
                    }
                    0 => buffer.len(),
                    end => end,
                },
            };
            grow = false;
            let position = offset.to_string();
            let unit = Unit { source: &stream, position: &position, key: Some(&key), log_group: log_group.as_deref() };
            self.pipeline.ingest(self.options.format, &buffer[..end], &unit);
            if let Some(error) = broken {
                let reason = format!("broken gzip after {} decompressed bytes: {error}", offset + end as u64);
                self.pipeline.dead_letter("gzip", &reason, &[], &stream, &position);
            }
            offset += end as u64;
            buffer.drain(..end);
            self.stats.files_ingested += u64::from(at_end);
            let read_now = reader.compressed_bytes_read().unwrap_or(offset);
            self.read(read_now - read_before);
            read_before = read_now;
            match decompressed {
                Some(decompressed) => {
                    self.reached_in(file, decompressed, offset)?;
                    if at_end {
                        self.reached_in(file, &stream, file.bytes)?;
                    }
                }
                None if at_end => self.reached_in(file, &stream, file.bytes)?,
                None => self.reached_in(file, &file.progress_stream(), offset)?,
            }
            if at_end {
                self.give_back(buffer);
                return Ok(());
            }
        }
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
            if whole == Some(true) && !done && (buffer.len() > FILE_CHUNK_BYTES || is_gzip(&buffer)) {
                // One document larger than a chunk, or gzip (which may expand a thousandfold): read as a
                // file is, in pieces or chunks.
                return self.ingest_spooled(reader, buffer, source);
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
                self.read(unit_bytes.len() as u64);
                self.store_when_full()?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// The stored position of `stream`, a stream of `file`'s (none for a byte stream's document).
    fn position_in(&self, file: &FileInput, stream: &str) -> Option<u64> {
        match &file.object {
            Some(object) if !object.positions => None,
            _ => self.sink.store().position(stream),
        }
    }

    /// `reached`, for a file whose positions are kept (not a byte stream's spooled document).
    fn reached_in(&mut self, file: &FileInput, stream: &str, offset: u64) -> Result<(), IngestError> {
        match &file.object {
            Some(object) if !object.positions => self.store_when_full(),
            _ => self.reached(stream, offset),
        }
    }

    /// The rest of a byte stream that holds one document (or gzip) larger than a chunk, after the
    /// `head` read of it: written to an unnamed file in the data directory, then read from there as a
    /// file is (a document in pieces, gzip decompressed as it is read), no position stored.
    fn ingest_spooled(&mut self, reader: &mut dyn Read, head: Vec<u8>, source: &str) -> Result<(), IngestError> {
        let dir = self.sink.store().config().data_dir.clone();
        let io = |e| IngestError::io(&dir, e);
        let mut spool = tempfile::tempfile_in(&dir).map_err(io)?;
        std::io::Write::write_all(&mut spool, &head).map_err(io)?;
        let rest = std::io::copy(reader, &mut spool).map_err(|e| IngestError::io(source, e))?;
        let input = FileInput::spooled(source, spool, head.len() as u64 + rest);
        self.ingest_file(&input)?;
        Ok(())
    }

    /// Notes that `stream` is read up to `offset` and queues the buffered rows when the buffers are full.
    fn reached(&mut self, stream: &str, offset: u64) -> Result<(), IngestError> {
        self.positions.retain(|p| p.stream != stream);
        self.positions.push(Position { stream: stream.to_string(), offset });
        self.store_when_full()
    }

    /// Stores the rows built once they are a batch's worth. The first batches are smaller (a quarter of
    /// the most, then as many rows as were queued before them), so that the store's thread starts on
    /// them while this one parses on, instead of waiting for a whole batch at the start.
    fn store_when_full(&mut self) -> Result<(), IngestError> {
        let rows_max = (self.stats.rows_queued as usize).clamp(BUFFERED_ROWS_MAX / 4, BUFFERED_ROWS_MAX);
        let bytes_max = BUFFERED_BYTES_MAX / BUFFERED_ROWS_MAX * rows_max;
        if self.pipeline.buffered_rows() >= rows_max || self.pipeline.buffered_bytes() >= bytes_max {
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

    /// Emits the invocations still waiting for parts, stores everything, and gives the pipeline back.
    pub fn into_pipeline(mut self) -> Result<Pipeline, IngestError> {
        self.pipeline.finish();
        self.drain()?;
        self.appender.stop();
        Ok(self.pipeline)
    }

    /// The input ended: emits the invocations still waiting for parts, stores everything, and returns
    /// what the pipeline decoded.
    pub fn finish(mut self) -> Result<(FileStats, IngestStats), IngestError> {
        self.pipeline.finish();
        self.drain()?;
        let now = self.snapshot();
        if let Some(progress) = &mut self.progress {
            progress.finish(&now);
        }
        Ok((self.stats, self.pipeline.stats))
    }
}

/// A file for a reader of `FileSource::ingest_files`, and where its rows go.
struct ReadJob {
    file: FileInput,
    reply: SyncSender<Option<TrailRows>>,
}

/// A reader thread of `FileSource::ingest_files`: reads each file queued, whole, as `ingest_file` would
/// read it (up to the size it was listed with), and answers with its rows when it is plainly a trail
/// file, `None` otherwise (including when it cannot be read: `ingest_file` then reports that).
fn read_trail_files(queue: &Mutex<Receiver<ReadJob>>, format: Format, log_group: Option<&str>) {
    let mut builder = store::rows::TableBuilder::new(store::Table::Cloudtrail);
    loop {
        let job = match queue.lock().map(|queue| queue.recv()) {
            Ok(Ok(job)) => job,
            _ => return,
        };
        let mut bytes = Vec::with_capacity(job.file.bytes as usize);
        let read = job.file.open().and_then(|mut f| f.read_to_end(&mut bytes));
        let rows = read.ok().and_then(|_| {
            let (key, stream) = (job.file.key(), job.file.stream());
            let unit = Unit { source: &stream, position: "0", key: Some(&key), log_group };
            Pipeline::trail_file_rows(&mut builder, format, &bytes, &unit)
        });
        let _ = job.reply.send(rows);
    }
}

/// Where a chunk of a file may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// After a line end.
    Lines,
    /// After a JSON document, of documents back to back (Firehose's concatenated records).
    Documents,
}

/// Whether `head` starts with two whole JSON documents back to back (`{…}{…}`, `{…}\n{…}` is lines).
fn documents_back_to_back(head: &[u8]) -> bool {
    let mut documents = serde_json::Deserializer::from_slice(head).into_iter::<serde::de::IgnoredAny>();
    matches!((documents.next(), documents.next()), (Some(Ok(_)), Some(Ok(_))))
}

/// The end of the last whole JSON document in `bytes` at or before `FILE_CHUNK_BYTES` (the first one's
/// when it is longer); 0 when not even one ends in `bytes`. What follows a broken document goes with it,
/// to be a dead letter.
fn documents_end(bytes: &[u8]) -> usize {
    let mut documents = serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    let mut end = 0;
    while let Some(document) = documents.next() {
        match document {
            Ok(_) if end > 0 && documents.byte_offset() > FILE_CHUNK_BYTES => break,
            Ok(_) => end = documents.byte_offset(),
            Err(error) if error.is_eof() => break,
            Err(_) => return bytes.len(),
        }
    }
    end
}

/// The stream under which the decompressed offset reached in a gzip file of lines is stored.
fn decompressed_stream(file: &FileInput) -> String {
    format!("{}#decompressed", file.progress_stream())
}

/// The stream under which the decompressed offset reached in a gzip file of one document read in
/// pieces is stored.
fn pieces_stream(file: &FileInput) -> String {
    format!("{}#pieces", file.progress_stream())
}

/// Bytes of a document read in pieces that are read at a time.
const PIECE_READ_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

/// A file's bytes as a document of them is read: decompressed if gzip, up to the size it was listed with.
enum Document {
    Plain(std::io::Take<Opened>),
    Gzip(Box<flate2::read::MultiGzDecoder<std::io::BufReader<Counted<std::io::Take<Opened>>>>>),
}

impl Document {
    fn open(file: &FileInput, compression: Compression) -> std::io::Result<Document> {
        let plain = file.open()?;
        Ok(match compression {
            Compression::None => Document::Plain(plain),
            Compression::Gzip => Document::Gzip(Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(1 << 20, Counted { inner: plain, read: 0 }),
            ))),
        })
    }
}

impl Read for Document {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Document::Plain(reader) => reader.read(buf),
            Document::Gzip(reader) => reader.read(buf),
        }
    }
}

impl CompressedBytes for Document {
    fn compressed_bytes_read(&self) -> Option<u64> {
        match self {
            Document::Plain(_) => None,
            Document::Gzip(reader) => Some(reader.get_ref().get_ref().read),
        }
    }
}

/// The bytes of the file read so far through `content`, a part of a document: `offset` unless gzip.
fn reader_bytes(content: &std::io::Take<&mut Document>, offset: u64) -> u64 {
    content.get_ref().compressed_bytes_read().unwrap_or(offset)
}

/// Files smaller than this are read and parsed ahead by `ingest_files`' readers when they are trail
/// files (a gzip'd one that expands past a chunk is left to the thread that reads in order).
const READ_AHEAD_FILE_BYTES_MAX: u64 = 1 << 20;

/// A reader that counts the bytes read through it: the compressed bytes of a gzip file, for progress.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.read += read as u64;
        Ok(read)
    }
}

/// How many bytes of the file itself a reader of its lines has read (`None`: the offset is that).
trait CompressedBytes {
    fn compressed_bytes_read(&self) -> Option<u64>;
}

impl CompressedBytes for std::io::Take<Opened> {
    fn compressed_bytes_read(&self) -> Option<u64> {
        None
    }
}

impl<R: Read> CompressedBytes for flate2::read::MultiGzDecoder<std::io::BufReader<Counted<R>>> {
    fn compressed_bytes_read(&self) -> Option<u64> {
        Some(self.get_ref().get_ref().read)
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
