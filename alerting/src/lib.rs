//! coldtrail's alert delivery: stored alerts routed to webhooks (signed generic JSON, Slack, Prometheus
//! Alertmanager, PagerDuty) through a durable outbox whose states are rows of `alert_deliveries`.
//!
//! - `config`: destinations, routing, suppressions (the `[alerting]` section).
//! - `payload`: alerts as stored, incidents' messages (opened, escalated) made from `incidents` rows, their
//!   bodies per destination kind, HMAC signing and verification.
//! - `outbox`: delivery with retries, backoff, timeouts, rate limits and circuit breakers; recovery after
//!   a restart from the stored states; the ledger's signed chain head published on a schedule.
//! - `metrics`: `alerting_*` Prometheus metrics.
//!
//! Alerting depends on `store` only: alerts and incidents reach it as stored rows, never straight from a
//! detector.

pub mod config;
pub mod error;
pub mod metrics;
pub mod outbox;
pub mod payload;

pub use config::{AlertingConfig, DestinationConfig, Kind, LedgerPublish, Per, Suppression};
pub use error::AlertingError;
pub use outbox::Outbox;
pub use payload::{sign, verify, AlertDoc, SIGNATURE_HEADER};
