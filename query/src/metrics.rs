//! Query metrics, registered in the process's default Prometheus registry (served at `/metrics`).

use std::sync::OnceLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, HistogramVec,
    IntCounter, IntCounterVec, IntGauge,
};

pub struct Metrics {
    /// Statements finished, by protocol and status (ok, error, denied).
    pub queries: IntCounterVec,
    /// Statement latency from receipt to the last row, by protocol.
    pub duration: HistogramVec,
    /// Failed statements by kind (denied, plan, execution, timeout, ...).
    pub errors: IntCounterVec,
    /// Rows returned, by protocol.
    pub rows: IntCounterVec,
    /// Failed logins, by protocol.
    pub auth_failures: IntCounterVec,
    /// Open PostgreSQL-protocol connections.
    pub pg_connections: IntGauge,
    /// Audit rows written and audit writes that failed.
    pub audit: IntCounterVec,
    /// Bytes of segments' bloom filters held for lookups (`keys::SegmentKeys`).
    pub key_filter_bytes: IntGauge,
    /// Segments a lookup by key did not open, because their bloom filters rule the key out.
    pub segments_skipped: IntCounter,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        queries: register_int_counter_vec!(
            "query_statements_total",
            "SQL statements finished.",
            &["protocol", "status"]
        )
        .expect("metric registers once"),
        duration: register_histogram_vec!(
            "query_duration_seconds",
            "SQL statement latency, receipt to last row.",
            &["protocol"],
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0]
        )
        .expect("metric registers once"),
        errors: register_int_counter_vec!("query_errors_total", "Failed SQL statements, by kind.", &["kind"])
            .expect("metric registers once"),
        rows: register_int_counter_vec!("query_rows_total", "Rows returned by SQL statements.", &["protocol"])
            .expect("metric registers once"),
        auth_failures: register_int_counter_vec!(
            "query_auth_failures_total",
            "Rejected logins and requests without valid credentials.",
            &["protocol"]
        )
        .expect("metric registers once"),
        pg_connections: register_int_gauge!("query_pg_connections", "Open PostgreSQL-protocol connections.")
            .expect("metric registers once"),
        audit: register_int_counter_vec!(
            "query_audit_records_total",
            "Query audit rows, by outcome (written, failed).",
            &["outcome"]
        )
        .expect("metric registers once"),
        key_filter_bytes: register_int_gauge!(
            "query_key_filter_bytes",
            "Bytes of segment bloom filters held in memory for lookups by key."
        )
        .expect("metric registers once"),
        segments_skipped: register_int_counter!(
            "query_segments_skipped_total",
            "Segments a lookup by key did not open: their bloom filters rule the key out."
        )
        .expect("metric registers once"),
    })
}
