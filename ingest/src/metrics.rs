//! Ingest's metrics, registered in the process's default Prometheus registry (served at `/metrics`).
//! Label values come from closed sets: record kinds and dead-letter reasons are `&'static str`s of this
//! crate, never input text.

use std::sync::OnceLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

use crate::pipeline::IngestStats;

pub struct Metrics {
    pub records: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub bytes: IntCounter,
    pub invocations_emitted: IntCounter,
    pub invocations_evicted: IntCounter,
    pub pending_invocations: IntGauge,
    pub kafka_skipped: IntCounter,
    pub kafka_position_conflicts: IntCounter,
    pub kafka_commit_errors: IntCounter,
    pub kafka_rebalances: IntCounter,
    /// By configured source name: a closed set, the operator's `[[sources]]`.
    pub source_errors: IntCounterVec,
}

/// The metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        records: register_int_counter_vec!("ingest_records_total", "Records decoded, by kind.", &["kind"])
            .expect("metric registers once"),
        dead_letters: register_int_counter_vec!(
            "ingest_dead_letters_total",
            "Records kept as dead letters, by reason.",
            &["reason"]
        )
        .expect("metric registers once"),
        bytes: register_int_counter!("ingest_bytes_total", "Input bytes read, before decompression.")
            .expect("metric registers once"),
        invocations_emitted: register_int_counter!("ingest_invocations_emitted_total", "Invocation rows assembled.")
            .expect("metric registers once"),
        invocations_evicted: register_int_counter!(
            "ingest_invocations_evicted_total",
            "Invocations emitted incomplete because the pending limit was reached."
        )
        .expect("metric registers once"),
        pending_invocations: register_int_gauge!(
            "ingest_pending_invocations",
            "Invocations waiting for missing parts."
        )
        .expect("metric registers once"),
        kafka_skipped: register_int_counter!(
            "ingest_kafka_records_skipped_total",
            "Kafka records below their stored position (already stored) skipped."
        )
        .expect("metric registers once"),
        kafka_position_conflicts: register_int_counter!(
            "ingest_kafka_position_conflicts_total",
            "Kafka batches decoded again because another consumer stored some of their partitions first."
        )
        .expect("metric registers once"),
        kafka_commit_errors: register_int_counter!(
            "ingest_kafka_commit_errors_total",
            "Kafka offset commits that failed (the store's positions still decide within this process)."
        )
        .expect("metric registers once"),
        source_errors: register_int_counter_vec!(
            "ingest_source_errors_total",
            "Errors of a configured source (it retries); by source name.",
            &["source"]
        )
        .expect("metric registers once"),
        kafka_rebalances: register_int_counter!(
            "ingest_kafka_assignments_total",
            "Kafka partition assignments this process received (consumer-group rebalances)."
        )
        .expect("metric registers once"),
    })
}

/// Adds what a pipeline counted since `before` to the metrics.
pub fn record(before: &IngestStats, after: &IngestStats, pending: usize) {
    let metrics = metrics();
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    metrics.records.with_label_values(&["log_line"]).inc_by(delta(before.log_lines, after.log_lines));
    metrics.records.with_label_values(&["cloudtrail"]).inc_by(delta(before.cloudtrail_events, after.cloudtrail_events));
    metrics.records.with_label_values(&["span"]).inc_by(delta(before.spans, after.spans));
    metrics.bytes.inc_by(delta(before.bytes, after.bytes));
    for (reason, count) in &after.dead_letters {
        let was = before.dead_letters.get(reason).copied().unwrap_or(0);
        metrics.dead_letters.with_label_values(&[reason]).inc_by(count - was);
    }
    metrics.invocations_emitted.inc_by(delta(before.assembly.emitted, after.assembly.emitted));
    metrics.invocations_evicted.inc_by(delta(before.assembly.evicted, after.assembly.evicted));
    metrics.pending_invocations.set(pending as i64);
}
