//! The one way into the store: `StoreSink` stores appends larger than a WAL frame whole or not at all, `Appender` reports a failed append at the next drain, and `FileSource` chunks a large file
//! of lines, resumes it where a stored position says, and reads a stream in line chunks or whole.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::Array;
use ingest::file::{FileOptions, FileSource, FILE_CHUNK_BYTES};
use ingest::{Appender, Format, Pipeline, StoreSink, Unit};
use store::{Position, Store, StoreConfig, StoreError, Table, TimeRange};

async fn open(dir: &std::path::Path, frame_bytes_max: usize) -> Arc<Store> {
    let mut config = StoreConfig::new(dir);
    config.frame_bytes_max = frame_bytes_max;
    Arc::new(Store::open(config).await.unwrap())
}

/// Lambda log lines that LZ4 cannot shrink much (hex noise), `line_bytes` long each.
fn noisy_lines(n_lines: usize, line_bytes: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::with_capacity(n_lines * (line_bytes + 1));
    for line_idx in 0..n_lines {
        let mut line = format!("2024-03-05T10:{:02}:{:02}.000Z line {line_idx} ", (line_idx / 60) % 60, line_idx % 60);
        while line.len() < line_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            line.push_str(&format!("{state:016x}"));
        }
        line.truncate(line_bytes);
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn stored_rows(store: &Store, table: Table) -> usize {
    store.stats().get(&table).map_or(0, |stats| stats.hot_rows as usize)
}

async fn messages(store: &Store) -> Vec<String> {
    let batches = store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap();
    let mut out = Vec::new();
    for batch in batches {
        let column =
            arrow::compute::cast(batch.column_by_name("message").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
        let strings = column.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        out.extend((0..strings.len()).map(|row| strings.value(row).to_string()));
    }
    out
}

/// The offsets at which the frames of the one WAL file in `dir` start, and the file.
fn wal_frames(dir: &std::path::Path) -> (std::path::PathBuf, Vec<usize>, Vec<u8>) {
    let key = store::ledger::parse_public_key(&std::fs::read_to_string(dir.join("node.pub")).unwrap()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let path = files.remove(0);
    let bytes = std::fs::read(&path).unwrap();
    let decoded = store::wal::decode_frames(&bytes, &key);
    assert!(decoded.stopped.is_none(), "{:?}", decoded.stopped);
    let flags: Vec<u8> = decoded.frames.iter().map(|frame| frame.flags).collect();
    assert!(flags.len() > 2, "the append takes several frames: {flags:?}");
    (path, decoded.offsets, bytes)
}

#[tokio::test]
async fn an_append_larger_than_a_frame_is_stored_whole_or_not_at_all_when_a_crash_cuts_it_between_frames() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 32 * 1024).await;
    let mut pipeline = Pipeline::default();
    let text = noisy_lines(2_000, 200);
    pipeline.ingest(
        Format::Lambda,
        text.as_bytes(),
        &Unit { source: "t", position: "0", key: None, log_group: Some("/aws/lambda/f") },
    );
    pipeline.finish();
    let batches = pipeline.take_batches();
    let sink = StoreSink::new(store.clone());
    let position = Position { stream: "file:/big".into(), offset: text.len() as u64 };
    let stored = sink.append(batches, vec![position.clone()], Vec::new()).await.unwrap();
    assert_eq!(stored, ingest::Stored { rows: 2_000, appends: 1 });
    assert_eq!(stored_rows(&store, Table::Logs), 2_000);
    assert_eq!(store.position("file:/big"), Some(position.offset));
    drop(sink);
    drop(store);

    // What a SIGKILL after each of the frames leaves: the frames before it, fsynced or in the page cache.
    let (path, offsets, whole) = wal_frames(dir.path());
    for cut in offsets.iter().skip(1) {
        std::fs::write(&path, &whole[..*cut]).unwrap();
        let store = open(dir.path(), 32 * 1024).await;
        assert_eq!(
            (stored_rows(&store, Table::Logs), store.position("file:/big")),
            (0, None),
            "cut after {cut} of {} bytes: no row comes back without its position",
            whole.len()
        );
    }
    std::fs::write(&path, &whole).unwrap();
    let store = open(dir.path(), 32 * 1024).await;
    assert_eq!((stored_rows(&store, Table::Logs), store.position("file:/big")), (2_000, Some(position.offset)));
}

#[tokio::test]
async fn a_conditional_append_refuses_every_slice_when_the_position_moved() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 32 * 1024).await;
    store.append(&[], &[Position { stream: "kafka:t/0".into(), offset: 5 }]).unwrap();
    let mut pipeline = Pipeline::default();
    pipeline.ingest(
        Format::Lambda,
        noisy_lines(2_000, 200).as_bytes(),
        &Unit { source: "t", position: "0", key: None, log_group: Some("/aws/lambda/f") },
    );
    pipeline.finish();
    let sink = StoreSink::new(store.clone());
    let result = sink
        .append(
            pipeline.take_batches(),
            vec![Position { stream: "kafka:t/0".into(), offset: 9 }],
            vec![("kafka:t/0".into(), Some(3))],
        )
        .await;
    assert!(matches!(result, Err(ingest::IngestError::Store(StoreError::PositionConflict { .. }))), "{result:?}");
    assert_eq!(stored_rows(&store, Table::Logs), 0);
    assert_eq!(store.position("kafka:t/0"), Some(5));
}

#[tokio::test]
async fn the_appender_reports_a_failed_append_at_the_next_drain_and_stores_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // No row fits: even one row's frame is larger.
    let store = open(dir.path(), 16).await;
    let appender = Appender::start(StoreSink::new(store.clone()));
    let mut pipeline = Pipeline::default();
    pipeline.ingest(
        Format::Lambda,
        noisy_lines(3, 100).as_bytes(),
        &Unit { source: "t", position: "0", key: None, log_group: Some("/aws/lambda/f") },
    );
    pipeline.finish();
    appender.append(pipeline.take_batches(), vec![Position { stream: "a".into(), offset: 1 }]).unwrap();
    appender.append(Vec::new(), vec![Position { stream: "b".into(), offset: 1 }]).unwrap();
    let first = appender.drain();
    assert!(matches!(first, Err(ingest::IngestError::Store(StoreError::FrameTooLarge { .. }))), "{first:?}");
    assert!(appender.drain().is_err(), "still failed");
    assert_eq!((store.position("a"), store.position("b")), (None, None), "nothing after the failure is stored");
}

#[tokio::test]
async fn a_large_file_of_lines_is_read_in_chunks_and_resumed_from_its_stored_position() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let text = noisy_lines(FILE_CHUNK_BYTES * 5 / 2 / 300, 299);
    let path = inputs.path().join("big.log");
    std::fs::write(&path, &text).unwrap();
    let file = ingest::file::list(&path).unwrap().remove(0);
    let options = FileOptions { format: Format::Lambda, log_group: Some("/aws/lambda/f".into()), again: false };
    // An earlier run stored the first chunk and its position, then was killed.
    let first_chunk_end = text[..FILE_CHUNK_BYTES].rfind('\n').unwrap() + 1;
    let lines_in_first = text[..first_chunk_end].lines().count();
    store_as_a_killed_run(dir.path(), &text[..first_chunk_end], &file.stream()).await;
    let store = open(dir.path(), usize::MAX).await;
    let mut source = FileSource::new(StoreSink::new(store.clone()), options.clone());
    assert!(source.ingest_file(&file).unwrap());
    let (stats, ingest_stats) = source.finish().unwrap();
    assert_eq!(stats.files_ingested, 1);
    assert!(ingest_stats.units >= 2, "the rest of the file is more than one chunk: {ingest_stats:?}");
    assert_eq!(ingest_stats.log_lines as usize, text.lines().count() - lines_in_first, "only the rest is read");
    assert_eq!(store.position(&file.stream()), Some(text.len() as u64));
    let mut stored = messages(&store).await;
    assert_eq!(stored.len(), text.lines().count(), "every line is stored");
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), text.lines().count(), "each line once");
    // Read to its end: skipped next time.
    let mut again = FileSource::new(StoreSink::new(store.clone()), options);
    assert!(!again.ingest_file(&file).unwrap());
    assert_eq!(again.finish().unwrap().0.files_skipped, 1);
}

#[tokio::test]
async fn a_stream_of_lines_is_read_in_chunks_and_a_document_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), usize::MAX).await;
    let options = FileOptions { format: Format::Auto, log_group: Some("/aws/lambda/f".into()), again: false };
    let mut source = FileSource::new(StoreSink::new(store.clone()), options);
    let lines = noisy_lines(ingest::file::STREAM_CHUNK_BYTES * 2 / 200, 199);
    source.ingest_stream(&mut Cursor::new(lines.as_bytes().to_vec()), "stdin").unwrap();
    let units_for_lines = source.ingest_stats().units;
    assert!(units_for_lines >= 2, "8 MB of lines in chunks of at most 4 MB: {units_for_lines} units");
    // A CloudTrail file spread over lines is one document: cut at a line end it would not parse.
    let records: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"eventVersion": "1.08", "eventTime": "2024-03-05T10:00:00Z", "eventSource": "lambda.amazonaws.com", "eventName": "GetFunction", "eventID": format!("e{i}"), "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.9", "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/a"}}))
        .collect();
    let document = serde_json::to_string_pretty(&serde_json::json!({ "Records": records })).unwrap();
    source.ingest_stream(&mut Cursor::new(document.into_bytes()), "stdin").unwrap();
    let (_, stats) = source.finish().unwrap();
    assert_eq!(stats.units, units_for_lines + 1);
    assert_eq!(stats.cloudtrail_events, 3);
    assert_eq!(stats.dead_letters_total(), 0, "{:?}", stats.dead_letters);
    assert_eq!(stored_rows(&store, Table::Cloudtrail), 3);
    assert_eq!(stored_rows(&store, Table::Logs), lines.lines().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appender_seals_segments_itself_when_the_hot_buffer_is_over_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.flush.hot_bytes_max = 256 * 1024;
    let store = Arc::new(Store::open(config).await.unwrap());
    let appender = Appender::start(StoreSink::new(store.clone()));
    let mut largest_after_append = 0;
    for chunk in 0..12 {
        let mut pipeline = Pipeline::default();
        let position = chunk.to_string();
        pipeline.ingest(
            Format::Lambda,
            noisy_lines(1_000, 200).as_bytes(),
            &Unit { source: "t", position: &position, key: None, log_group: Some("/aws/lambda/f") },
        );
        pipeline.finish();
        appender.append(pipeline.take_batches(), vec![Position { stream: "t".into(), offset: chunk + 1 }]).unwrap();
        appender.drain().unwrap();
        largest_after_append = largest_after_append.max(store.hot_bytes().0);
    }
    let stats = store.stats()[&Table::Logs].clone();
    assert!(stats.segments > 0, "sealed while appending: {stats:?}");
    assert_eq!(stats.segment_rows + stats.hot_rows, 12_000);
    assert!(
        largest_after_append < 2 * 256 * 1024 + 1024 * 1024,
        "hot bytes stay near the bound: {largest_after_append}"
    );
}

#[tokio::test]
async fn a_large_file_that_grows_or_shrinks_after_it_is_listed_is_read_to_its_listed_size_or_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let text = noisy_lines(FILE_CHUNK_BYTES * 3 / 2 / 300, 299);
    let options = FileOptions { format: Format::Lambda, log_group: Some("/aws/lambda/f".into()), again: false };
    let store = open(dir.path(), usize::MAX).await;

    // Grows: lines appended after the listing are left for the next run.
    let grows = inputs.path().join("grows.log");
    std::fs::write(&grows, &text).unwrap();
    let listed = ingest::file::list(&grows).unwrap().remove(0);
    let mut more = std::fs::OpenOptions::new().append(true).open(&grows).unwrap();
    std::io::Write::write_all(&mut more, b"2024-03-05T10:00:00.000Z appended later\n").unwrap();
    let mut source = FileSource::new(StoreSink::new(store.clone()), options.clone());
    assert!(source.ingest_file(&listed).unwrap());
    let (_, stats) = source.finish().unwrap();
    assert_eq!(stats.log_lines as usize, text.lines().count());
    assert_eq!(store.position(&listed.stream()), Some(text.len() as u64));

    // Shrinks: read to its end, no further (the run ends).
    let shrinks = inputs.path().join("shrinks.log");
    std::fs::write(&shrinks, &text).unwrap();
    let listed = ingest::file::list(&shrinks).unwrap().remove(0);
    let kept = text[..FILE_CHUNK_BYTES + 4096].rfind('\n').unwrap() + 1;
    std::fs::write(&shrinks, &text[..kept]).unwrap();
    let mut source = FileSource::new(StoreSink::new(store.clone()), options);
    assert!(source.ingest_file(&listed).unwrap());
    let (_, stats) = source.finish().unwrap();
    assert_eq!(stats.log_lines as usize, text[..kept].lines().count());
}

/// What an earlier run that was killed after its first chunk left in the store at `dir`: the chunk's
/// lines, and `stream` at the chunk's end.
async fn store_as_a_killed_run(dir: &std::path::Path, chunk: &str, stream: &str) {
    let store = open(dir, usize::MAX).await;
    let mut pipeline = Pipeline::default();
    let unit = Unit { source: "x", position: "0", key: None, log_group: Some("/aws/lambda/f") };
    pipeline.ingest(Format::Lambda, chunk.as_bytes(), &unit);
    pipeline.finish();
    store.append(&pipeline.take_batches(), &[Position { stream: stream.into(), offset: chunk.len() as u64 }]).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_large_gzip_file_of_lines_is_decompressed_in_chunks_and_resumed_from_its_decompressed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    // About 2.5 chunks once decompressed, well over the size from which gzip is streamed.
    let text = noisy_lines(FILE_CHUNK_BYTES * 5 / 2 / 300, 299);
    let path = inputs.path().join("export.gz");
    std::fs::write(&path, gzip(text.as_bytes())).unwrap();
    let file = ingest::file::list(&path).unwrap().remove(0);
    assert!(file.bytes > 1 << 20, "{} bytes compressed", file.bytes);
    let options = FileOptions { format: Format::Lambda, log_group: Some("/aws/lambda/f".into()), again: false };
    let store = open(dir.path(), usize::MAX).await;
    let mut source = FileSource::new(StoreSink::new(store.clone()), options.clone());
    assert!(source.ingest_file(&file).unwrap());
    let (stats, ingest_stats) = source.finish().unwrap();
    assert_eq!(stats.files_ingested, 1);
    assert!(ingest_stats.units >= 3, "decompressed in chunks, not whole: {} units", ingest_stats.units);
    assert_eq!(stats.bytes_read, file.bytes, "progress counts the file's own bytes");
    assert_eq!(ingest_stats.log_lines as usize, text.lines().count());
    assert_eq!(store.position(&file.stream()), Some(file.bytes), "read to its end: skipped next time");
    assert_eq!(store.position(&format!("{}#decompressed", file.stream())), Some(text.len() as u64));
    let mut again = FileSource::new(StoreSink::new(store.clone()), options.clone());
    assert!(!again.ingest_file(&file).unwrap());

    // Another store, where an earlier run stored the first chunk and its decompressed offset, then was
    // killed: the resume reads the rest only, and every line is stored once.
    let dir = tempfile::tempdir().unwrap();
    let first_chunk_end = text[..FILE_CHUNK_BYTES].rfind('\n').unwrap() + 1;
    store_as_a_killed_run(dir.path(), &text[..first_chunk_end], &format!("{}#decompressed", file.stream())).await;
    let store = open(dir.path(), usize::MAX).await;
    let mut source = FileSource::new(StoreSink::new(store.clone()), options);
    assert!(source.ingest_file(&file).unwrap());
    let (_, ingest_stats) = source.finish().unwrap();
    assert_eq!(ingest_stats.log_lines as usize, text[first_chunk_end..].lines().count(), "only the rest is read");
    let mut stored = messages(&store).await;
    assert_eq!(stored.len(), text.lines().count(), "every line is stored");
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), text.lines().count(), "each line once");
}

#[tokio::test]
async fn a_gzip_file_cut_short_keeps_what_decompressed_and_dead_letters_the_break() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let text = noisy_lines(FILE_CHUNK_BYTES * 5 / 2 / 300, 299);
    let compressed = gzip(text.as_bytes());
    let path = inputs.path().join("truncated.gz");
    std::fs::write(&path, &compressed[..compressed.len() * 3 / 4]).unwrap();
    let file = ingest::file::list(&path).unwrap().remove(0);
    let options = FileOptions { format: Format::Lambda, log_group: Some("/aws/lambda/f".into()), again: false };
    let store = open(dir.path(), usize::MAX).await;
    let mut source = FileSource::new(StoreSink::new(store.clone()), options);
    assert!(source.ingest_file(&file).unwrap());
    let (_, stats) = source.finish().unwrap();
    let lines = stats.log_lines as usize;
    assert!(lines > text.lines().count() / 2 && lines < text.lines().count(), "{lines} lines kept");
    assert_eq!(stats.dead_letters.get("gzip").copied(), Some(1), "{:?}", stats.dead_letters);
    let dead = store.scan(Table::DeadLetters, None, TimeRange::ALL).await.unwrap();
    let reasons =
        arrow::compute::cast(dead[0].column_by_name("error").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    let reasons = reasons.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert!(reasons.value(0).contains("broken gzip after"), "{}", reasons.value(0));
    assert_eq!(store.position(&file.stream()), Some(file.bytes), "not read again and again");
}

/// Every row of `table` as text, in the order a scan gives them.
async fn rows_as_text(store: &Store, table: Table) -> Vec<String> {
    let options = arrow::util::display::FormatOptions::default().with_null("∅");
    let mut rows = Vec::new();
    for batch in store.scan(table, None, TimeRange::ALL).await.unwrap() {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        rows.extend(
            (0..batch.num_rows())
                .map(|row| columns.iter().map(|c| c.value(row).to_string()).collect::<Vec<_>>().join("|")),
        );
    }
    rows
}

/// Issue 19: trail files read ahead on reader threads are stored exactly as one thread stores them
/// (rows in order, dead letters, positions, stats), next to every kind of file the readers leave to the
/// thread that reads in order: a Kinesis event (it looks like a trail file), broken gzip, a trail file
/// with a record that is no row (read as a tree), one too large to read ahead, and log files whose
/// invocation spans two files. Read again, every file is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trail_files_read_ahead_on_several_threads_are_stored_as_one_thread_stores_them() {
    let inputs = tempfile::tempdir().unwrap();
    let put = |name: &str, bytes: &[u8]| std::fs::write(inputs.path().join(name), bytes).unwrap();
    let stratus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/stratus-detonation-logs");
    let mut trails = Vec::new();
    for entry in std::fs::read_dir(&stratus).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let records: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            trails.push(records);
        }
    }
    trails.sort_by_key(|r| r.to_string());
    assert!(trails.len() >= 30);
    for (at, records) in trails.iter().enumerate() {
        let file = serde_json::json!({ "Records": records }).to_string();
        // Gzip'd as trails deliver them, and some plain.
        match at % 3 {
            0 => put(&format!("t{at:02}.json"), file.as_bytes()),
            _ => put(&format!("t{at:02}.json.gz"), &gzip(file.as_bytes())),
        }
    }
    let request = "0b6f3c2e-1a11-4c3d-9e8f-000000000001";
    let payload = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "/aws/lambda/orders-api",
        "logStream": "2024/08/01/[$LATEST]5e1b", "subscriptionFilters": ["c"],
        "logEvents": [
            {"id": "1", "timestamp": 1722520000037i64, "message": format!("START RequestId: {request} Version: $LATEST\n")},
            {"id": "2", "timestamp": 1722520000090i64, "message": format!("END RequestId: {request}\n")},
            {"id": "3", "timestamp": 1722520000091i64, "message": format!("REPORT RequestId: {request}\tDuration: 52.1 ms\tBilled Duration: 53 ms\tMemory Size: 128 MB\tMax Memory Used: 70 MB\t\n")},
        ]
    });
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(gzip(payload.to_string().as_bytes()));
    let kinesis = serde_json::json!({"Records": [{"eventSource": "aws:kinesis", "kinesis": {"data": data}}]});
    put("t05-kinesis.json", kinesis.to_string().as_bytes());
    let whole = gzip(serde_json::json!({ "Records": trails[1] }).to_string().as_bytes());
    put("t07-broken.json.gz", &whole[..whole.len() / 2]);
    put(
        "t09-no-time.json",
        br#"{"Records":[{"eventTime":"2024-07-31T13:06:24Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"},{"eventSource":"s","eventName":"n"}]}"#,
    );
    let mut large: Vec<serde_json::Value> = Vec::new();
    while serde_json::to_string(&large).unwrap().len() < 1 << 20 {
        large.extend(trails.iter().flat_map(|t| t.as_array().unwrap().iter().cloned()));
    }
    put("t11-large.json", serde_json::json!({ "Records": large }).to_string().as_bytes());
    let other = "1b6f3c2e-1a11-4c3d-9e8f-000000000002";
    put("t13-a.log", format!("2024-08-01T10:00:00.000Z START RequestId: {other} Version: $LATEST\n2024-08-01T10:00:00.010Z {other} INFO hello\n").as_bytes());
    put("t14-b.log", format!("2024-08-01T10:00:00.020Z END RequestId: {other}\n2024-08-01T10:00:00.021Z REPORT RequestId: {other}\tDuration: 20.0 ms\tBilled Duration: 20 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB\t\n").as_bytes());
    let files = ingest::file::list(inputs.path()).unwrap();

    let mut stored = Vec::new();
    for readers in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), usize::MAX).await;
        let options = FileOptions { format: Format::Auto, log_group: Some("/aws/lambda/f".into()), again: false };
        let mut source = FileSource::new(StoreSink::new(store.clone()), options.clone());
        source.set_readers(readers);
        tokio::task::block_in_place(|| source.ingest_files(&files)).unwrap();
        let (file_stats, stats) = tokio::task::block_in_place(|| source.finish()).unwrap();
        let mut tables = Vec::new();
        for table in [Table::Cloudtrail, Table::Logs, Table::Invocations] {
            tables.push(rows_as_text(&store, table).await);
        }
        // Without their times: those that had none were given the time of the ingest.
        let mut dead: Vec<String> = rows_as_text(&store, Table::DeadLetters).await;
        dead = dead.iter().map(|row| row.split_once('|').unwrap().1.to_string()).collect();
        dead.sort();
        tables.push(dead);
        let positions: Vec<_> = files.iter().map(|f| store.position(&f.stream())).collect();
        assert!(positions.iter().zip(&files).all(|(p, f)| *p == Some(f.bytes)), "{positions:?}");
        let mut again = FileSource::new(StoreSink::new(store.clone()), options);
        again.set_readers(readers);
        tokio::task::block_in_place(|| again.ingest_files(&files)).unwrap();
        assert_eq!(tokio::task::block_in_place(|| again.finish()).unwrap().0.files_skipped, files.len() as u64);
        stored.push((tables, file_stats, stats));
    }
    let (tables, file_stats, stats) = &stored[0];
    assert!(tables[0].len() > 2 * 310, "{}", tables[0].len());
    assert_eq!(tables[2].len(), 2, "one invocation from the Kinesis event, one across the two log files");
    assert!(tables[3].len() >= 2, "broken gzip and the record without a time: {:?}", tables[3]);
    assert_eq!(stats.cloudtrail_events as usize, tables[0].len());
    assert_eq!((file_stats.files_ingested as usize, stats.units as usize), (files.len(), files.len()));
    for (table, (one, several)) in tables.iter().zip(&stored[1].0).enumerate() {
        assert!(one == several, "table {table}: {} rows on one thread, {} with readers", one.len(), several.len());
    }
    let read_ahead = stored[1].1.files_read_ahead;
    assert_eq!(
        (file_stats.files_read_ahead, read_ahead),
        (0, trails.len() as u64),
        "every plain trail file of less than 1 MiB"
    );
    assert_eq!((file_stats, stats), (&ingest::file::FileStats { files_read_ahead: 0, ..stored[1].1 }, &stored[1].2));
}

/// A page of `filter-log-events` (its `events` first, the paging keys after them) holding `invocations`
/// invocations of Lambda text-format lines in 16 log streams.
fn events_page(invocations: usize) -> String {
    let mut events = Vec::with_capacity(invocations * 4);
    for invocation in 0..invocations {
        let rid = format!("0b6c2d1e-4f5a-4b7c-8d9e-{invocation:012x}");
        let at = 1_795_996_800_000i64 + invocation as i64 * 30;
        let stream = format!("2026/12/01/[$LATEST]{:032x}", invocation % 16);
        let messages = [
            format!("START RequestId: {rid} Version: $LATEST\n"),
            format!("2026-12-01T00:00:00.000Z\t{rid}\tINFO\tprocessed \"order\" {invocation}, [ok]\n"),
            format!("END RequestId: {rid}\n"),
            format!("REPORT RequestId: {rid}\tDuration: 12.5 ms\tBilled Duration: 13 ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\t\n"),
        ];
        for (k, message) in messages.into_iter().enumerate() {
            events.push(serde_json::json!({
                "logStreamName": stream, "timestamp": at + k as i64, "message": message,
                "ingestionTime": at + 500, "eventId": format!("{at}{invocation:012}{k}"),
            }));
        }
    }
    let page = serde_json::json!({"events": events, "searchedLogStreams": [], "nextToken": "f/3"});
    // Keys in the order the CLI writes them: the events first.
    let text = serde_json::to_string_pretty(&page).unwrap();
    assert!(text.find("\"events\"") < text.find("\"nextToken\""));
    text
}

/// Every row of `batches` as text, without the columns in `without`, sorted.
fn sorted_rows(batches: &[arrow::array::RecordBatch], without: &[&str]) -> Vec<String> {
    let options = arrow::util::display::FormatOptions::default().with_null("∅");
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(field, _)| !without.contains(&field.name().as_str()))
            .map(|(_, c)| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        rows.extend(
            (0..batch.num_rows())
                .map(|row| columns.iter().map(|c| c.value(row).to_string()).collect::<Vec<_>>().join("|")),
        );
    }
    rows.sort();
    rows
}

/// The rows of `table` that `bytes` give when the pipeline reads them whole, as one unit.
fn rows_read_whole(bytes: &[u8], source: &str, table: Table) -> Vec<String> {
    rows_read_whole_as(Format::Auto, bytes, source, table, &["ingest_position", "ingest_source"])
}

/// `rows_read_whole` read as `format`, without the columns in `without`.
fn rows_read_whole_as(format: Format, bytes: &[u8], source: &str, table: Table, without: &[&str]) -> Vec<String> {
    let mut pipeline = Pipeline::default();
    let unit = Unit { source, position: "0", key: None, log_group: Some("/aws/lambda/orders") };
    pipeline.ingest(format, bytes, &unit);
    pipeline.finish();
    let batches: Vec<_> =
        pipeline.take_batches().into_iter().filter(|(t, _)| *t == table).map(|(_, batch)| batch).collect();
    sorted_rows(&batches, without)
}

/// Issue 19: a JSON document larger than a chunk, plain or gzip, is read in pieces of its largest array,
/// each with the document's envelope, to the rows the whole document gives, with the next element's
/// offset stored after each piece; then it is skipped as read.
#[tokio::test]
async fn a_document_larger_than_a_chunk_is_read_in_pieces_to_the_rows_it_gives_whole() {
    let inputs = tempfile::tempdir().unwrap();
    let page = events_page(30_000);
    assert!(page.len() > FILE_CHUNK_BYTES * 5 / 2, "{} bytes", page.len());
    let whole_logs = rows_read_whole(page.as_bytes(), "x", Table::Logs);
    let whole_invocations = rows_read_whole(page.as_bytes(), "x", Table::Invocations);
    assert_eq!((whole_logs.len(), whole_invocations.len()), (120_000, 30_000));
    let options = FileOptions { format: Format::Auto, log_group: Some("/aws/lambda/orders".into()), again: false };
    for (name, bytes) in [("page.json", page.as_bytes().to_vec()), ("page.json.gz", gzip(page.as_bytes()))] {
        let path = inputs.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let file = ingest::file::list(&path).unwrap().remove(0);
        assert!(file.bytes > 1 << 20, "{name}: {} bytes, enough to be streamed if gzip", file.bytes);
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), usize::MAX).await;
        let mut source = FileSource::new(StoreSink::new(store.clone()), options.clone());
        assert!(source.ingest_file(&file).unwrap());
        let (stats, ingest_stats) = source.finish().unwrap();
        assert!(ingest_stats.units >= 3, "{name}: in pieces, not whole: {} units", ingest_stats.units);
        assert_eq!(ingest_stats.dead_letters_total(), 0, "{name}: {:?}", ingest_stats.dead_letters);
        assert_eq!(stats.bytes_read, file.bytes, "{name}: progress counts the file's own bytes");
        let logs = store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap();
        assert_eq!(sorted_rows(&logs, &["ingest_position", "ingest_source"]), whole_logs, "{name}: log rows");
        let invocations = store.scan(Table::Invocations, None, TimeRange::ALL).await.unwrap();
        assert_eq!(
            sorted_rows(&invocations, &["ingest_position", "ingest_source"]),
            whole_invocations,
            "{name}: invocation rows"
        );
        assert_eq!(store.position(&file.stream()), Some(file.bytes), "{name}: read to its end");
        let mut again = FileSource::new(StoreSink::new(store.clone()), options.clone());
        assert!(!again.ingest_file(&file).unwrap(), "{name}: skipped next time");
    }
}

/// Issue 19: a CloudTrail file larger than a chunk is read in pieces of its `Records`; a broken record
/// makes its own piece a dead letter, not the whole file.
#[tokio::test]
async fn a_large_trail_files_broken_record_is_a_dead_letter_of_its_piece_alone() {
    let records: Vec<String> = (0..60_000)
        .map(|n| {
            serde_json::json!({
                "eventVersion": "1.09", "eventTime": format!("2026-12-01T00:{:02}:{:02}Z", n / 1000 % 60, n % 60),
                "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
                "sourceIPAddress": format!("10.0.{}.{}", n % 250, n % 199), "eventID": format!("e-{n:08}"),
                "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::123456789012:assumed-role/r{}/s", n % 20)},
                "requestParameters": {"bucketName": "orders", "key": format!("o/{n}.json")},
            })
            .to_string()
        })
        .collect();
    let document = format!("{{\"Records\":[{}]}}", records.join(","));
    assert!(document.len() > FILE_CHUNK_BYTES * 3 / 2, "{} bytes", document.len());
    let whole = rows_read_whole(document.as_bytes(), "x", Table::Cloudtrail);
    assert_eq!(whole.len(), records.len());
    let mut broken = records.clone();
    broken[records.len() / 2] = r#"{"eventSource": "s3.amazonaws.com", "eventName": }"#.into();
    let broken = format!("{{\"Records\":[{}]}}", broken.join(","));
    let inputs = tempfile::tempdir().unwrap();
    for (name, text) in [("whole.json", &document), ("broken.json", &broken)] {
        let path = inputs.path().join(name);
        std::fs::write(&path, text).unwrap();
        let file = ingest::file::list(&path).unwrap().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), usize::MAX).await;
        let options = FileOptions { format: Format::Auto, log_group: None, again: false };
        let mut source = FileSource::new(StoreSink::new(store.clone()), options);
        assert!(source.ingest_file(&file).unwrap());
        let (_, stats) = source.finish().unwrap();
        let rows = store.scan(Table::Cloudtrail, None, TimeRange::ALL).await.unwrap();
        let rows = sorted_rows(&rows, &["ingest_position", "ingest_source"]);
        if name == "whole.json" {
            assert_eq!(rows, whole, "every record, as the whole file gives it");
            assert_eq!(stats.dead_letters_total(), 0);
        } else {
            assert_eq!(stats.dead_letters_total(), 1, "{:?}", stats.dead_letters);
            let per_piece = records.len() * FILE_CHUNK_BYTES / document.len() + 1;
            assert!(rows.len() < records.len() && rows.len() + per_piece >= records.len(), "{} rows kept", rows.len());
            assert!(rows.iter().all(|row| whole.binary_search(row).is_ok()), "the rows kept are the file's");
        }
    }
}

/// Issue 19: a gzip file of less than 1 MiB may expand a thousandfold. Whether a reader of trail files
/// or the thread that reads in order takes it, one that expands past a chunk is read in pieces (it was
/// decompressed whole: an 873 KB file of 200 MB peaked at 1,013 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_gzip_file_that_expands_past_a_chunk_is_read_in_pieces() {
    let record = serde_json::json!({
        "eventVersion": "1.09", "eventTime": "2026-12-01T00:00:00Z", "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject", "awsRegion": "us-east-1", "sourceIPAddress": "10.0.0.1", "eventID": "e-1",
        "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/r/s"},
    })
    .to_string();
    let records = 3 * FILE_CHUNK_BYTES / record.len();
    let document = format!("{{\"Records\":[{}]}}", vec![record.as_str(); records].join(","));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, document.as_bytes()).unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let path = inputs.path().join("expands.json.gz");
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();
    let file = ingest::file::list(&path).unwrap().remove(0);
    assert!(file.bytes < 1 << 20, "{} bytes: small enough to be read ahead", file.bytes);
    for readers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), usize::MAX).await;
        let options = FileOptions { format: Format::Auto, log_group: None, again: false };
        let mut source = FileSource::new(StoreSink::new(store.clone()), options);
        source.set_readers(readers);
        source.ingest_files(std::slice::from_ref(&file)).unwrap();
        let (stats, ingest_stats) = source.finish().unwrap();
        assert_eq!((stats.files_ingested, stats.files_read_ahead), (1, 0), "{readers} readers");
        assert!(ingest_stats.units >= 3, "{readers} readers: in pieces, not whole: {} units", ingest_stats.units);
        assert_eq!(ingest_stats.cloudtrail_events as usize, records, "{readers} readers");
        assert_eq!(ingest_stats.dead_letters_total(), 0, "{readers} readers");
        assert_eq!(store.position(&file.stream()), Some(file.bytes));
    }
}

/// Issue 19: a byte stream (stdin) that holds one document larger than a chunk, such as the output of
/// `aws logs filter-log-events` piped in, plain or gzip'd, is read in pieces as a file is, to the rows
/// the whole document gives, and no position of it is stored.
#[tokio::test]
async fn a_stream_of_one_large_document_is_read_in_pieces_without_positions() {
    let page = events_page(30_000);
    let whole_logs = rows_read_whole(page.as_bytes(), "stdin", Table::Logs);
    for (what, bytes) in [("plain", page.as_bytes().to_vec()), ("gzip", gzip(page.as_bytes()))] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), usize::MAX).await;
        let options = FileOptions { format: Format::Auto, log_group: Some("/aws/lambda/orders".into()), again: false };
        let mut source = FileSource::new(StoreSink::new(store.clone()), options);
        source.ingest_stream(&mut Cursor::new(bytes), "stdin").unwrap();
        let (_, stats) = source.finish().unwrap();
        assert!(stats.units >= 3, "{what}: in pieces, not whole: {} units", stats.units);
        assert_eq!(stats.dead_letters_total(), 0, "{what}: {:?}", stats.dead_letters);
        let logs = store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap();
        assert_eq!(sorted_rows(&logs, &["ingest_position", "ingest_source"]), whole_logs, "{what}: log rows");
        assert!(store.positions().is_empty(), "{what}: a stream stores no position: {:?}", store.positions());
    }
}

/// A JSON document read with a text format forced (`--format lambda`) is text lines: it is not cut
/// into pieces, whose envelope would be lines of every piece.
#[tokio::test]
async fn a_large_document_read_as_text_lines_is_not_cut_into_pieces() {
    let page = events_page(30_000);
    let inputs = tempfile::tempdir().unwrap();
    let path = inputs.path().join("page.json");
    std::fs::write(&path, &page).unwrap();
    let file = ingest::file::list(&path).unwrap().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), usize::MAX).await;
    let options = FileOptions { format: Format::Lambda, log_group: Some("/aws/lambda/orders".into()), again: false };
    let mut source = FileSource::new(StoreSink::new(store.clone()), options);
    assert!(source.ingest_file(&file).unwrap());
    source.finish().unwrap();
    let logs = store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap();
    // Text without a time of its own is stamped with the time it was read (`+ingest_time`).
    let without = ["ts", "ingest_position", "ingest_source"];
    let whole = rows_read_whole_as(Format::Lambda, page.as_bytes(), "x", Table::Logs, &without);
    assert_eq!(sorted_rows(&logs, &without), whole, "{} rows", logs.iter().map(|b| b.num_rows()).sum::<usize>());
}
