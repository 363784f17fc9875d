//! Ingest's metrics, registered in the process's default Prometheus registry (served at `/metrics`).
//! Label values come from closed sets: record kinds and dead-letter reasons are `&'static str`s of this
//! crate, never input text.

use std::sync::OnceLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

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
    pub kafka_publish_errors: IntCounter,
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
            "Kafka offset commits that failed (commits are for lag tools; stored and published positions decide where reading resumes)."
        )
        .expect("metric registers once"),
        source_errors: register_int_counter_vec!(
            "ingest_source_errors_total",
            "Errors of a configured source (it retries); by source name.",
            &["source"]
        )
        .expect("metric registers once"),
        kafka_publish_errors: register_int_counter!(
            "ingest_kafka_position_publish_errors_total",
            "Publications of stored Kafka positions to the shared location that failed (retried after the next batch; \
             until then a partition that moves is read again from the last published position)."
        )
        .expect("metric registers once"),
        kafka_rebalances: register_int_counter!(
            "ingest_kafka_assignments_total",
            "Kafka partition assignments this process received (consumer-group rebalances)."
        )
        .expect("metric registers once"),
    })
}
