//! The S3 source: every object under a prefix (CloudWatch Logs exports, CloudTrail deliveries, anything
//! the pipeline reads), each ingested once. The processed set is the store's positions
//! (`s3://bucket/key` → object size), stored atomically with the object's rows, so it survives restarts
//! and is never out of step with the data.

use store::{Location, Position};

use crate::error::IngestError;
use crate::pipeline::{Format, Pipeline, Unit};
use crate::sink::StoreSink;

/// Rows buffered before they are stored.
const BUFFERED_ROWS_MAX: usize = 200_000;

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

    /// Lists the prefix and ingests every object not ingested before (or changed in size since).
    pub async fn poll(&self, sink: &StoreSink, pipeline: &mut Pipeline) -> Result<S3Stats, IngestError> {
        let mut stats = S3Stats::default();
        let mut objects = self.location.list("").await?;
        objects.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let mut positions = Vec::new();
        for object in objects {
            stats.objects_listed += 1;
            let key = object.location.to_string();
            let stream = self.stream(&key);
            if sink.store().position(&stream) == Some(object.size) {
                stats.objects_skipped += 1;
                continue;
            }
            let bytes = self.location.get(&key).await?;
            // The key names the log stream of export objects: decoded, as the stream is named.
            let decoded_key = percent_decode(&stream);
            let unit =
                Unit { source: &stream, position: "0", key: Some(&decoded_key), log_group: self.log_group.as_deref() };
            pipeline.ingest(self.format, &bytes, &unit);
            positions.push(Position { stream, offset: object.size });
            stats.objects_ingested += 1;
            stats.bytes += bytes.len() as u64;
            if pipeline.buffered_rows() >= BUFFERED_ROWS_MAX {
                sink.append(pipeline.take_batches(), std::mem::take(&mut positions), Vec::new()).await?;
            }
        }
        pipeline.finish();
        sink.append(pipeline.take_batches(), positions, Vec::new()).await?;
        Ok(stats)
    }
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

    use store::Store;

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
}
