//! Alerting's metrics, in the process's default Prometheus registry (served at `/metrics`). The
//! `destination` label is a configured destination name, never input text.

use std::sync::OnceLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec, IntCounterVec, IntGaugeVec,
};

pub struct Metrics {
    /// Delivery state transitions: pending, retrying, delivered, failed, suppressed.
    pub deliveries: IntCounterVec,
    pub pending: IntGaugeVec,
    pub latency: HistogramVec,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        deliveries: register_int_counter_vec!(
            "alerting_deliveries_total",
            "Alert delivery states reached, by destination and state (pending, retrying, delivered, failed, suppressed).",
            &["destination", "state"]
        )
        .expect("metric registers once"),
        pending: register_int_gauge_vec!("alerting_pending", "Alerts queued for a destination, not yet delivered.", &["destination"])
            .expect("metric registers once"),
        latency: register_histogram_vec!(
            "alerting_delivery_seconds",
            "Seconds from an alert reaching the outbox to its delivery, retries included.",
            &["destination"],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0]
        )
        .expect("metric registers once"),
    })
}
