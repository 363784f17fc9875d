//! The store's metrics, registered in the process's default Prometheus registry (served at `/metrics`):
//! how long a WAL append (write and fsync) and a segment flush (encode, put, ledger entry) take, and how
//! much they carry. Labels come from closed sets: table names.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter, IntCounterVec,
};

use crate::schema::Table;

pub struct Metrics {
    pub wal_append_seconds: Histogram,
    pub wal_bytes: IntCounter,
    pub flush_seconds: Histogram,
    pub segments_flushed: IntCounterVec,
    pub rows_flushed: IntCounterVec,
}

/// The metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        wal_append_seconds: register_histogram!(
            "store_wal_append_duration_seconds",
            "Time to write and fsync one WAL frame (one append).",
            vec![0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
        )
        .expect("metric registers once"),
        wal_bytes: register_int_counter!("store_wal_bytes_total", "Bytes of WAL frames written.")
            .expect("metric registers once"),
        flush_seconds: register_histogram!(
            "store_flush_duration_seconds",
            "Time to seal one hot partition into a segment: encode, put, ledger entry.",
            vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
        )
        .expect("metric registers once"),
        segments_flushed: register_int_counter_vec!(
            "store_segments_flushed_total",
            "Segments sealed from hot partitions, by table.",
            &["table"]
        )
        .expect("metric registers once"),
        rows_flushed: register_int_counter_vec!(
            "store_rows_flushed_total",
            "Rows sealed into segments, by table.",
            &["table"]
        )
        .expect("metric registers once"),
    })
}

/// One WAL frame of `bytes` written and fsynced in `elapsed`.
pub(crate) fn wal_appended(bytes: usize, elapsed: Duration) {
    let m = metrics();
    m.wal_append_seconds.observe(elapsed.as_secs_f64());
    m.wal_bytes.inc_by(bytes as u64);
}

/// One segment of `rows` rows of `table` sealed in `elapsed`.
pub(crate) fn segment_flushed(table: Table, rows: u64, elapsed: Duration) {
    let m = metrics();
    m.flush_seconds.observe(elapsed.as_secs_f64());
    m.segments_flushed.with_label_values(&[table.name()]).inc();
    m.rows_flushed.with_label_values(&[table.name()]).inc_by(rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_flushes_are_counted() {
        let before = metrics().wal_append_seconds.get_sample_count();
        let bytes_before = metrics().wal_bytes.get();
        wal_appended(100, Duration::from_micros(300));
        assert_eq!(metrics().wal_append_seconds.get_sample_count(), before + 1);
        assert_eq!(metrics().wal_bytes.get(), bytes_before + 100);
        let rows_before = metrics().rows_flushed.with_label_values(&["logs"]).get();
        segment_flushed(Table::Logs, 7, Duration::from_millis(20));
        assert_eq!(metrics().rows_flushed.with_label_values(&["logs"]).get(), rows_before + 7);
    }
}
