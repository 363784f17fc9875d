//! WAL replay properties: random truncation points, arbitrary bytes, corruption before the tail.

use proptest::prelude::*;
use store::fixtures::{batch_with_ids, ids_of};
use store::wal::{decode_frames, encode_frame, Frame, Position, Wal};
use store::Table;

const T0: i64 = 1_767_225_600_000_000;

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
        bytes.extend(encode_frame(idx as u64 + 1, &batches, &[position]).unwrap());
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
        let decoded = decode_frames(&bytes[..cut]);
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
        let (mut wal, replayed) = Wal::open(dir.path(), partitions).unwrap();
        prop_assert_eq!(replayed.len(), whole);
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, if whole == 0 { 0 } else { ends[whole - 1] });
        let replayed_ids: Vec<u64> = replayed.iter().flat_map(|f| ids_of(Table::Logs, &f.batches.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>())).collect();
        let expected: u64 = row_counts[..whole].iter().map(|r| *r as u64).sum();
        prop_assert_eq!(replayed_ids, (0..expected).collect::<Vec<_>>());
        // Appending after the cut works, and the next open sees the prefix and the new frame.
        let seq = wal.next_seq();
        prop_assert_eq!(seq, whole as u64 + 1);
        let frame = encode_frame(seq, &[], &[Position { stream: "after".into(), offset: 1 }]).unwrap();
        wal.append(seq, &[], &frame).unwrap();
        drop(wal);
        let (_, replayed) = Wal::open(dir.path(), partitions).unwrap();
        prop_assert_eq!(replayed.len(), whole + 1);
        prop_assert_eq!(&replayed.last().unwrap().positions[0].stream, "after");
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let decoded = decode_frames(&bytes);
        prop_assert!(decoded.valid_bytes <= bytes.len());
    }

    #[test]
    fn a_flipped_byte_is_never_replayed_as_data(row_counts in prop::collection::vec(1usize..10, 1..4), flip_at in any::<prop::sample::Index>()) {
        let (mut bytes, ends) = frames(&row_counts);
        let at = flip_at.index(bytes.len());
        bytes[at] ^= 0x40;
        let decoded = decode_frames(&bytes);
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
    let later = decode_frames(&later);
    assert_eq!(later.frames.len(), 1);
    let frame = encode_frame(3, &later.frames[0].batches, &[]).unwrap();
    std::fs::write(dir.path().join(format!("{:020}.wal", 3)), frame).unwrap();
    let err = Wal::open(dir.path(), partitions).unwrap_err().to_string();
    assert!(err.contains("write-ahead log") && err.contains("corrupt"), "{err}");
}
