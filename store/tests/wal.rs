//! WAL replay properties: random truncation points, arbitrary bytes, corruption before the tail.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use store::fixtures::{batch_with_ids, ids_of};
use store::wal::{decode_frames, encode_frame, Frame, Position, Wal};
use store::Table;

const T0: i64 = 1_767_225_600_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Frames with 0 to 40 rows each and a position, ids consecutive across frames.
fn frames(row_counts: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    let mut next_id = 0u64;
    for (idx, rows) in row_counts.iter().enumerate() {
        let ids: Vec<u64> = (next_id..next_id + *rows as u64).collect();
        next_id += *rows as u64;
        let batches = if ids.is_empty() {
            vec![]
        } else {
            vec![(Table::Logs, batch_with_ids(Table::Logs, &ids, |id| T0 + id as i64))]
        };
        let position = Position { stream: format!("s{}", idx % 3), offset: next_id };
        bytes.extend(encode_frame(idx as u64 + 1, &batches, &[position], &key()).unwrap());
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn partitions(_: &Frame) -> Vec<(Table, i64)> {
    Vec::new()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_truncated_log_decodes_to_exactly_the_whole_frames_before_the_cut(
        row_counts in prop::collection::vec(0usize..40, 1..12),
        cut_fraction in 0.0f64..=1.0,
    ) {
        let (bytes, ends) = frames(&row_counts);
        let cut = (bytes.len() as f64 * cut_fraction) as usize;
        let decoded = decode_frames(&bytes[..cut], &key().verifying_key());
        let whole = ends.iter().filter(|end| **end <= cut).count();
        prop_assert_eq!(decoded.frames.len(), whole);
        prop_assert_eq!(decoded.valid_bytes, if whole == 0 { 0 } else { ends[whole - 1] });
        prop_assert_eq!(decoded.stopped.is_some(), cut != decoded.valid_bytes);
        for (idx, frame) in decoded.frames.iter().enumerate() {
            prop_assert_eq!(frame.seq, idx as u64 + 1);
        }
    }

    #[test]
    fn opening_a_wal_with_a_torn_tail_replays_the_prefix_and_cuts_the_rest(
        row_counts in prop::collection::vec(1usize..20, 1..8),
        cut_fraction in 0.0f64..=1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, ends) = frames(&row_counts);
        let cut = (bytes.len() as f64 * cut_fraction) as usize;
        let path = dir.path().join(format!("{:020}.wal", 1));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let whole = ends.iter().filter(|end| **end <= cut).count();
        let (mut wal, replayed) = Wal::open(dir.path(), &key().verifying_key(), partitions).unwrap();
        prop_assert_eq!(replayed.len(), whole);
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, if whole == 0 { 0 } else { ends[whole - 1] });
        let replayed_ids: Vec<u64> = replayed.iter().flat_map(|f| ids_of(Table::Logs, &f.batches.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>())).collect();
        let expected: u64 = row_counts[..whole].iter().map(|r| *r as u64).sum();
        prop_assert_eq!(replayed_ids, (0..expected).collect::<Vec<_>>());
        // Appending after the cut works, and the next open sees the prefix and the new frame.
        let seq = wal.next_seq();
        prop_assert_eq!(seq, whole as u64 + 1);
        let frame = encode_frame(seq, &[], &[Position { stream: "after".into(), offset: 1 }], &key()).unwrap();
        wal.append(seq, &[], &frame).unwrap();
        drop(wal);
        let (_, replayed) = Wal::open(dir.path(), &key().verifying_key(), partitions).unwrap();
        prop_assert_eq!(replayed.len(), whole + 1);
        prop_assert_eq!(&replayed.last().unwrap().positions[0].stream, "after");
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let decoded = decode_frames(&bytes, &key().verifying_key());
        prop_assert!(decoded.valid_bytes <= bytes.len());
    }

    #[test]
    fn a_flipped_byte_is_never_replayed_as_data(row_counts in prop::collection::vec(1usize..10, 1..4), flip_at in any::<prop::sample::Index>()) {
        let (mut bytes, ends) = frames(&row_counts);
        let at = flip_at.index(bytes.len());
        bytes[at] ^= 0x40;
        let decoded = decode_frames(&bytes, &key().verifying_key());
        // The frame holding the flipped byte and everything after it is rejected.
        let damaged = ends.iter().position(|end| at < *end).unwrap();
        prop_assert_eq!(decoded.frames.len(), damaged);
    }
}

#[test]
fn corruption_before_the_newest_file_refuses_to_open() {
    // Goal: only the tail may be torn; damage in an older file would silently lose acknowledged rows.
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, _) = frames(&[5, 5]);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(dir.path().join(format!("{:020}.wal", 1)), &bytes).unwrap();
    let (later, _) = frames(&[1]);
    let later = decode_frames(&later, &key().verifying_key());
    assert_eq!(later.frames.len(), 1);
    let frame = encode_frame(3, &later.frames[0].batches, &[], &key()).unwrap();
    std::fs::write(dir.path().join(format!("{:020}.wal", 3)), frame).unwrap();
    let err = Wal::open(dir.path(), &key().verifying_key(), partitions).unwrap_err().to_string();
    assert!(err.contains("write-ahead log") && err.contains("corrupt"), "{err}");
}

/// A store with two frames of rows in its WAL, none sealed; the WAL file's path and the frames.
fn store_with_unsealed_rows(dir: &std::path::Path) -> (std::path::PathBuf, Vec<Frame>, ed25519_dalek::VerifyingKey) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = store::Store::open(store::StoreConfig::new(dir)).await.unwrap();
        store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &[1, 2, 3], |id| T0 + id as i64)).unwrap();
        store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &[4, 5], |id| T0 + id as i64)).unwrap();
        store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &[6], |id| T0 + id as i64)).unwrap();
    });
    let public = std::fs::read_to_string(dir.join("node.pub")).unwrap();
    let key = store::ledger::parse_public_key(&public).unwrap();
    let wal: Vec<_> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    let path = wal.into_iter().find(|p| std::fs::metadata(p).unwrap().len() > 0).unwrap();
    let decoded = decode_frames(&std::fs::read(&path).unwrap(), &key);
    assert!(decoded.stopped.is_none(), "{:?}", decoded.stopped);
    assert_eq!(decoded.frames.len(), 3);
    (path, decoded.frames, key)
}

fn reopen(dir: &std::path::Path) -> Result<Vec<u64>, store::StoreError> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = store::Store::open(store::StoreConfig::new(dir)).await?;
        let hot: Vec<_> = store.snapshot(Table::Logs, store::TimeRange::ALL).hot;
        Ok(ids_of(Table::Logs, &hot))
    })
}

#[test]
fn rows_edited_in_the_wal_before_they_are_sealed_are_refused_on_replay() {
    // Goal: an attacker who can write the data directory cannot change rows while they wait in the WAL:
    // a frame rewritten with its checksum recomputed (the only protection frames had) does not replay.
    let dir = tempfile::tempdir().unwrap();
    let (path, frames, node_key) = store_with_unsealed_rows(dir.path());
    assert_eq!(reopen(dir.path()).unwrap(), vec![1, 2, 3, 4, 5, 6], "untouched, the rows replay");
    // The attacker has the code but not the node key: the first frame's rows are replaced (id 1 goes).
    let attacker = SigningKey::from_bytes(&[9; 32]);
    let edited = batch_with_ids(Table::Logs, &[2, 3], |id| T0 + id as i64);
    let mut bytes = encode_frame(frames[0].seq, &[(Table::Logs, edited)], &frames[0].positions, &attacker).unwrap();
    let original = std::fs::read(&path).unwrap();
    let first_len = decode_frames(&original, &node_key).offsets[1];
    bytes.extend_from_slice(&original[first_len..]);
    std::fs::write(&path, &bytes).unwrap();
    let err = reopen(dir.path()).unwrap_err();
    assert!(matches!(err, store::StoreError::WalTampered { .. }), "{err}");
    assert!(err.to_string().contains("not signed by the node key"), "{err}");
    // Refusing is not cutting: the file is kept whole as evidence.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // The same edit in the newest frame, where a crash's torn write is cut: refused too, not cut.
    let last_at = decode_frames(&original, &node_key).offsets[2];
    let mut bytes = original[..last_at].to_vec();
    let edited = batch_with_ids(Table::Logs, &[7], |id| T0 + id as i64);
    bytes.extend(encode_frame(frames[2].seq, &[(Table::Logs, edited)], &[], &attacker).unwrap());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(reopen(dir.path()).unwrap_err(), store::StoreError::WalTampered { .. }));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_frame_removed_from_the_middle_of_the_wal_or_an_unsigned_one_is_refused_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, node_key) = store_with_unsealed_rows(dir.path());
    let original = std::fs::read(&path).unwrap();
    let offsets = decode_frames(&original, &node_key).offsets;
    // The middle frame (ids 4 and 5) goes; the others keep their signatures.
    let mut bytes = original[..offsets[1]].to_vec();
    bytes.extend_from_slice(&original[offsets[2]..]);
    std::fs::write(&path, &bytes).unwrap();
    let err = reopen(dir.path()).unwrap_err();
    assert!(err.to_string().contains("frames were removed"), "{err}");

    // A frame of the unsigned format 1 (magic "CTWL", CRC only) in place of the last one.
    let mut bytes = original[..offsets[2]].to_vec();
    let mut unsigned = original[offsets[2]..].to_vec();
    unsigned[..4].copy_from_slice(&0x4354_574c_u32.to_le_bytes());
    bytes.extend(unsigned);
    std::fs::write(&path, &bytes).unwrap();
    let err = reopen(dir.path()).unwrap_err();
    assert!(err.to_string().contains("unsigned frame"), "{err}");
}

#[test]
fn only_whole_appends_are_replayed_a_group_cut_short_or_a_stray_continuation_is_left_out() {
    use store::wal::{encode_frame_flagged, FLAG_CONTINUED, FLAG_CONTINUES};
    let rows = |id: u64| vec![(Table::Logs, batch_with_ids(Table::Logs, &[id], |id| T0 + id as i64))];
    let position = |offset| vec![Position { stream: "s".into(), offset }];
    // 1: whole; 2-3: a group whose last frame never came (a failed write that could not be cut back);
    // 4-6: a whole group; 7: a continuation of nothing; 8-9: a group cut by the crash at the end.
    let plan: [(u64, u8, bool); 9] = [
        (1, 0, true),
        (2, FLAG_CONTINUES, false),
        (3, FLAG_CONTINUES | FLAG_CONTINUED, false),
        (4, FLAG_CONTINUES, false),
        (5, FLAG_CONTINUES | FLAG_CONTINUED, false),
        (6, FLAG_CONTINUED, true),
        (7, FLAG_CONTINUED, true),
        (8, FLAG_CONTINUES, false),
        (9, FLAG_CONTINUES | FLAG_CONTINUED, false),
    ];
    let mut bytes = Vec::new();
    for (seq, flags, last) in plan {
        let positions = if last { position(seq) } else { Vec::new() };
        bytes.extend(encode_frame_flagged(seq, &rows(seq), &positions, flags, &key()).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    std::fs::write(dir.path().join("wal").join(format!("{:020}.wal", 1)), &bytes).unwrap();
    let (wal, replayed) = Wal::open(&dir.path().join("wal"), &key().verifying_key(), partitions).unwrap();
    let seqs: Vec<u64> = replayed.iter().map(|frame| frame.seq).collect();
    assert_eq!(seqs, vec![1, 4, 5, 6]);
    let ids: Vec<u64> = replayed.iter().flat_map(|frame| ids_of(Table::Logs, &[frame.batches[0].1.clone()])).collect();
    assert_eq!(ids, vec![1, 4, 5, 6]);
    assert_eq!(wal.next_seq(), 10, "the numbers of frames left out are not given out again");
}
