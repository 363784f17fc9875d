//! coldtrail's detectors: streaming anomaly detection over invocation patterns and security detections
//! over invocations, logs and CloudTrail, producing alerts.
//!
//! Detect depends on `store` only; it reads stored records and writes alerts, and never changes raw records.
//!
//! - `series`: the univariate streaming detector (robust baseline, daily profile, level shifts,
//!   anomaly likelihood).
//! - `nab`: scoring of anomaly scores by the Numenta Anomaly Benchmark's rules, for the benchmark.

pub mod nab;
pub mod series;

pub use series::{SeriesConfig, SeriesDetector, Verdict};
