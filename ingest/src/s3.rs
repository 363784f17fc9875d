//! The S3 source: every object under a prefix (CloudWatch Logs exports, CloudTrail deliveries, anything
//! the pipeline reads), each ingested once. The processed set is the store's positions
//! (`s3://bucket/key` → object size), stored atomically with the object's rows, so it survives restarts
//! and is never out of step with the data.

use store::Location;

use crate::error::IngestError;
use crate::file::{FileInput, FileOptions, FileSource};
use crate::pipeline::{Format, Pipeline};
use crate::sink::StoreSink;

/// What one listing pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct S3Stats {
    pub objects_listed: u64,
    pub objects_ingested: u64,
    pub objects_skipped: u64,
    pub bytes: u64,
}

/// A prefix of an object store to ingest from.
pub struct S3Source {
    url: String,
    location: Location,
    format: Format,
    log_group: Option<String>,
}

impl S3Source {
    /// `url` is `s3://bucket/prefix` (credentials and endpoint from the `AWS_*` variables); a local
    /// directory works the same way.
    pub fn new(url: &str, format: Format, log_group: Option<String>) -> Result<Self, IngestError> {
        let location = Location::open(url)?;
        Ok(S3Source { url: url.trim_end_matches('/').to_string(), location, format, log_group })
    }

    /// The position stream of an object.
    pub fn stream(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// Lists the prefix and ingests every object not ingested before (or changed in size since). Each
    /// object is read as a file is (`file::FileSource`): first written to an unnamed file in the data
    /// directory as it downloads (read in place from a local directory), then read from there in chunks
    /// of lines, documents back to back or pieces of one document, so that memory holds a chunk, not
    /// the object; the offset reached inside an object is stored as it goes (`<stream>#<size>`, and
    /// `#decompressed` or `#pieces` after it for gzip), and an interrupted poll resumes there.
    pub async fn poll(&self, sink: &StoreSink, pipeline: &mut Pipeline) -> Result<S3Stats, IngestError> {
        let mut stats = S3Stats::default();
        let mut objects = self.location.list("").await?;
        objects.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let options = FileOptions { format: self.format, log_group: self.log_group.clone(), again: false };
        let mut files: Option<FileSource> = None;
        let mut failed = None;
        for object in objects {
            stats.objects_listed += 1;
            let key = object.location.to_string();
            let stream = self.stream(&key);
            if sink.store().position(&stream) == Some(object.size) {
                stats.objects_skipped += 1;
                continue;
            }
            let copy = match self.file_of(&key, sink).await {
                Ok(copy) => copy,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            // The key names the log stream of export objects: decoded, as the stream is named.
            let decoded_key = percent_decode(&stream);
            let input = FileInput::object(stream, decoded_key, copy, object.size);
            let source = files
                .take()
                .unwrap_or_else(|| FileSource::with_pipeline(sink.clone(), options.clone(), std::mem::take(pipeline)));
            let (source, read) = blocking(move || {
                let mut source = source;
                let read = source.ingest_file(&input);
                (source, read)
            })
            .await?;
            files = Some(source);
            if let Err(e) = read {
                failed = Some(e);
                break;
            }
            stats.objects_ingested += 1;
            stats.bytes += object.size;
        }
        match files {
            Some(source) => *pipeline = blocking(move || source.into_pipeline()).await??,
            None => {
                pipeline.finish();
                sink.append(pipeline.take_batches(), Vec::new(), Vec::new()).await?;
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// A file holding the object's bytes: the object itself in a local directory, else an unnamed file
    /// in the data directory (gone once read, or with the process) written as the object downloads.
    async fn file_of(&self, key: &str, sink: &StoreSink) -> Result<std::fs::File, IngestError> {
        if let Some(root) = self.location.local_root() {
            // The object store's path escapes characters (`[`, `$`) that the file's name has plainly.
            let path = root.join(percent_decode(key));
            return std::fs::File::open(&path).map_err(|e| IngestError::io(&path, e));
        }
        let dir = sink.store().config().data_dir.clone();
        let mut copy = tempfile::tempfile_in(&dir).map_err(|e| IngestError::io(&dir, e))?;
        self.location.get_into(key, &mut copy).await?;
        Ok(copy)
    }
}

/// Runs blocking work (reading files, waiting for the store) off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, IngestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| IngestError::Internal(format!("an object's reader failed: {e}")))
}

/// Decodes `%XX` escapes (object store paths escape `[`, `]`, `$` and the like).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[at + 1]), hex(bytes[at + 2])) {
                out.push((high * 16 + low) as u8);
                at += 3;
                continue;
            }
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_stray_percents_kept() {
        assert_eq!(percent_decode("a/2024-08-01-%5B$LATEST%5Dabc/0.gz"), "a/2024-08-01-[$LATEST]abc/0.gz");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    use std::sync::Arc;

    use store::{Position, Store};

    use crate::pipeline::Unit;

    fn sink(store: &Arc<Store>) -> StoreSink {
        StoreSink::new(store.clone())
    }

    /// Issue 15: an object that decodes to more rows than one WAL frame holds is stored in several frames,
    /// with its position on the last; before the shared sink, every poll failed with `FrameTooLarge`.
    #[tokio::test]
    async fn an_object_larger_than_a_frame_is_stored_in_a_group_of_frames_with_its_position() {
        let bucket = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        // Text that does not compress: the frame limit is on LZ4-compressed bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::new();
        for i in 0..4_000 {
            let noise: String = (0..6)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    format!("{state:016x}")
                })
                .collect();
            text.push_str(&format!("2024-03-05T10:00:{:02}.000Z line {i} {noise}\n", i % 60));
        }
        std::fs::write(bucket.path().join("big.log"), &text).unwrap();
        let mut config = store::StoreConfig::new(data.path());
        config.frame_bytes_max = 64 * 1024;
        let store = Arc::new(Store::open(config).await.unwrap());
        let url = bucket.path().to_string_lossy().into_owned();
        let source = S3Source::new(&url, Format::Lambda, Some("/aws/lambda/big".into())).unwrap();
        let stats = source.poll(&sink(&store), &mut Pipeline::default()).await.unwrap();
        assert_eq!(stats.objects_ingested, 1);
        assert_eq!(store.stats()[&store::Table::Logs].hot_rows, 4_000);
        assert_eq!(store.position(&source.stream("big.log")), Some(text.len() as u64));
        let again = source.poll(&sink(&store), &mut Pipeline::default()).await.unwrap();
        assert_eq!((again.objects_ingested, again.objects_skipped), (0, 1));
        // One append, in a group of frames that fit this store's limit.
        let key = store::ledger::parse_public_key(&std::fs::read_to_string(data.path().join("node.pub")).unwrap());
        let frames: usize = std::fs::read_dir(data.path().join("wal"))
            .unwrap()
            .map(|file| store::wal::decode_frames(&std::fs::read(file.unwrap().path()).unwrap(), key.as_ref().unwrap()))
            .map(|decoded| decoded.frames.len())
            .sum();
        assert!(frames > 1, "{frames} frames");
    }

    #[tokio::test]
    async fn each_object_is_ingested_once_across_restarts_and_again_when_it_changes() {
        let bucket = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: usize| {
            let text: String =
                (0..lines).map(|i| format!("2024-03-05T10:00:0{}.000Z line {i} of {name}\n", i % 10)).collect();
            std::fs::create_dir_all(bucket.path().join("exports/0e2c5ba9-6d3b-4c1a-a1b2-1234567890ab/stream-a"))
                .unwrap();
            std::fs::write(
                bucket.path().join(format!("exports/0e2c5ba9-6d3b-4c1a-a1b2-1234567890ab/stream-a/{name}")),
                text,
            )
            .unwrap();
        };
        write("000000", 3);
        write("000001", 2);
        let url = bucket.path().to_string_lossy().into_owned();
        let source = S3Source::new(&url, Format::Auto, Some("/aws/lambda/orders".into())).unwrap();
        let logs = |store: &Store| store.stats()[&store::Table::Logs].hot_rows;
        {
            let store = Arc::new(Store::open(store::StoreConfig::new(data.path())).await.unwrap());
            let stats = source.poll(&sink(&store), &mut Pipeline::default()).await.unwrap();
            assert_eq!((stats.objects_ingested, stats.objects_skipped), (2, 0));
            assert_eq!(logs(&store), 5);
        }
        let store = Arc::new(Store::open(store::StoreConfig::new(data.path())).await.unwrap());
        let stats = source.poll(&sink(&store), &mut Pipeline::default()).await.unwrap();
        assert_eq!((stats.objects_ingested, stats.objects_skipped), (0, 2), "remembered across a restart");
        write("000001", 4);
        let stats = source.poll(&sink(&store), &mut Pipeline::default()).await.unwrap();
        assert_eq!((stats.objects_ingested, stats.objects_skipped), (1, 1));
        assert_eq!(logs(&store), 9);
        let batches = store.scan(store::Table::Logs, None, store::TimeRange::ALL).await.unwrap();
        let streams =
            arrow::compute::cast(batches[0].column_by_name("log_stream").unwrap(), &arrow::datatypes::DataType::Utf8)
                .unwrap();
        assert_eq!(streams.as_any().downcast_ref::<arrow::array::StringArray>().unwrap().value(0), "stream-a");
    }

    /// Lambda log lines that do not compress, `lines` of them, about 300 bytes each.
    fn noisy_lines(lines: usize) -> String {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::new();
        for i in 0..lines {
            let noise: String = (0..16)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    format!("{state:016x}")
                })
                .collect();
            text.push_str(&format!("2024-03-05T10:{:02}:{:02}.000Z line {i} {noise}\n", i / 60 % 60, i % 60));
        }
        text
    }

    /// Issue 19: an object is read as a file is, in chunks, so that memory holds a chunk, not the object
    /// (it was read whole, its rows stored in one append); the offset reached inside it is stored per
    /// size, and a poll cut short resumes there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_object_is_read_in_chunks_and_a_poll_cut_short_resumes_inside_it() {
        let bucket = tempfile::tempdir().unwrap();
        let text = noisy_lines(crate::file::FILE_CHUNK_BYTES * 5 / 2 / 300);
        std::fs::create_dir_all(bucket.path().join("archive")).unwrap();
        std::fs::write(bucket.path().join("archive/big[1].log"), &text).unwrap();
        let url = bucket.path().to_string_lossy().into_owned();
        let source = S3Source::new(&url, Format::Lambda, Some("/aws/lambda/big".into())).unwrap();
        let stream = source.stream("archive/big[1].log");
        let lines = text.lines().count() as u64;

        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store::StoreConfig::new(data.path())).await.unwrap());
        let mut pipeline = Pipeline::default();
        let stats = source.poll(&sink(&store), &mut pipeline).await.unwrap();
        assert_eq!(stats.objects_ingested, 1);
        assert!(pipeline.stats.units >= 3, "in chunks, not whole: {} units", pipeline.stats.units);
        assert_eq!(store.stats()[&store::Table::Logs].hot_rows, lines);
        assert_eq!(store.position(&stream), Some(text.len() as u64), "{:?}", store.positions());
        let again = source.poll(&sink(&store), &mut Pipeline::default()).await.unwrap();
        assert_eq!((again.objects_ingested, again.objects_skipped), (0, 1));

        // A poll that stored the first chunk and the offset after it, then stopped: the next reads the rest.
        let data = tempfile::tempdir().unwrap();
        let first = text[..crate::file::FILE_CHUNK_BYTES].rfind('\n').unwrap() + 1;
        let store = Arc::new(Store::open(store::StoreConfig::new(data.path())).await.unwrap());
        let mut cut_short = Pipeline::default();
        let unit = Unit { source: &stream, position: "0", key: None, log_group: Some("/aws/lambda/big") };
        cut_short.ingest(Format::Lambda, &text.as_bytes()[..first], &unit);
        cut_short.finish();
        let progress = Position { stream: format!("{stream}#{}", text.len()), offset: first as u64 };
        store.append(&cut_short.take_batches(), &[progress]).unwrap();
        let mut pipeline = Pipeline::default();
        source.poll(&sink(&store), &mut pipeline).await.unwrap();
        assert_eq!(pipeline.stats.log_lines, lines - text[..first].lines().count() as u64, "only the rest is read");
        assert_eq!(store.stats()[&store::Table::Logs].hot_rows, lines, "every line once");
        assert_eq!(store.position(&stream), Some(text.len() as u64));
    }
}
