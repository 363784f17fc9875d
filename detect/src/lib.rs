//! coldtrail's detectors: streaming anomaly detection over invocation patterns and security detections
//! over invocations, logs and CloudTrail, producing alerts.
//!
//! Detect depends on `store` only; it reads stored records and writes alerts, and never changes raw records.
//! Everything here is synchronous and CPU-bound: callers run it on a thread of its own, never on the async
//! runtime that polls sources.
//!
//! - `features`: one-minute event-time windows per function with a watermark: `MinuteFeatures`.
//! - `series`: the univariate streaming detector (robust baseline, daily profile, level shifts, a score
//!   calibrated by the series' own history).
//! - `multivariate`: a Gaussian mixture (linfa) over each function's feature vectors.
//! - `anomaly`: both detectors over every signal of every function, raising `alert::Alert`s.
//! - `stream`: windows and detectors together over batches of stored rows, live or replayed, with
//!   checkpoints.
//! - `security`: security detections (event injection, risky Lambda changes, trail tampering, role
//!   credentials outside Lambda, authorization-failure bursts, new callers, resource abuse, Sigma rules).
//! - `dedup`: alerts of one detector and entity within a window grouped into one, with a count.
//! - `nab`: scoring of anomaly scores by the Numenta Anomaly Benchmark's rules, for the benchmark.

pub mod alert;
pub mod anomaly;
pub mod dedup;
pub mod error;
pub mod features;
pub mod metrics;
pub mod multivariate;
pub mod nab;
pub mod security;
pub mod series;
pub mod stream;

pub use alert::{Alert, Severity};
pub use anomaly::{AnomalyConfig, AnomalyDetector};
pub use dedup::Deduplicator;
pub use error::DetectError;
pub use features::{MinuteFeatures, MinuteWindows};
pub use series::{SeriesConfig, SeriesDetector, Verdict};
pub use stream::{Stream, StreamConfig, StreamStats};
