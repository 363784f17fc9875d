//! coldtrail's detectors: streaming anomaly detection over invocation patterns and security detections
//! over invocations, logs and CloudTrail, producing alerts.
//!
//! Detect depends on `store` only; it reads stored records and writes alerts, and never changes raw records.
//! Detection is synchronous and CPU-bound: it runs on a thread of its own (`runner`), never on the async
//! runtime that polls sources; only `replay`'s reads of stored history are async.
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
//! - `incidents`: alerts correlated into incidents by the entities they share within a horizon.
//! - `engine`: the anomaly stream, the security detections and the deduplicator behind one `push`, with
//!   checkpoints; `runner` drives one live from the store's appends on a thread of its own, `replay`
//!   drives one over stored history.
//! - `nab`: scoring of anomaly scores by the Numenta Anomaly Benchmark's rules, for the benchmark.

pub mod alert;
pub mod anomaly;
pub mod cluster;
pub mod dedup;
pub mod engine;
pub mod error;
pub mod features;
pub mod incidents;
pub mod metrics;
pub mod multivariate;
pub mod nab;
pub mod replay;
pub mod runner;
pub mod security;
pub mod series;
pub mod stream;

pub use alert::{Alert, Severity};
pub use anomaly::{AnomalyConfig, AnomalyDetector};
pub use dedup::Deduplicator;
pub use engine::{Checkpoints, Engine, EngineConfig, EngineStats};
pub use error::DetectError;
pub use features::{MinuteFeatures, MinuteWindows};
pub use series::{SeriesConfig, SeriesDetector, Verdict};
pub use stream::{AnomalyStream, AnomalyStreamConfig, AnomalyStreamStats};
