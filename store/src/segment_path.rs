//! Names of segment files: `<table>/date=YYYY-MM-DD/hour=HH/<node>-<ledger seq>.parquet`.

use crate::schema::Table;
use crate::time::{parse_partition_dir, partition_dir};

/// The path of the segment that ledger entry `seq` of `node` adds.
pub fn segment_path(table: Table, hour: i64, node: &str, seq: u64) -> String {
    format!("{}/{}/{node}-{seq:012}.parquet", table.name(), partition_dir(hour))
}

/// A parsed segment path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    pub table: Table,
    pub hour: i64,
    pub node: String,
    pub seq: u64,
}

pub fn parse_segment_path(path: &str) -> Option<SegmentName> {
    let (table, rest) = path.split_once('/')?;
    let table = Table::from_name(table)?;
    let (partition, file) = rest.rsplit_once('/')?;
    let hour = parse_partition_dir(partition)?;
    let (node, seq) = file.strip_suffix(".parquet")?.rsplit_once('-')?;
    Some(SegmentName { table, hour, node: node.to_string(), seq: seq.parse().ok()? })
}

/// Node ids name files: lowercase letters, digits, `_` and `-`, 1 to 64 of them.
pub fn valid_node_id(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && node.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_paths_round_trip() {
        let path = segment_path(Table::Logs, 470_000, "node-a", 17);
        assert_eq!(path, "logs/date=2023-08-14/hour=08/node-a-000000000017.parquet");
        assert_eq!(
            parse_segment_path(&path),
            Some(SegmentName { table: Table::Logs, hour: 470_000, node: "node-a".into(), seq: 17 })
        );
        assert_eq!(parse_segment_path("logs/date=2023-08-13/hour=16/x.parquet"), None);
        assert_eq!(parse_segment_path("nope/date=2023-08-13/hour=16/a-1.parquet"), None);
    }

    #[test]
    fn node_ids_are_file_name_safe() {
        assert!(valid_node_id("n-1a_b"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a/b"));
        assert!(!valid_node_id("A"));
        assert!(!valid_node_id(&"a".repeat(65)));
    }
}
