//! coldtrail's detectors: streaming anomaly detection over invocation patterns and security detections
//! over invocations, logs and CloudTrail, producing alerts.
//!
//! Detect depends on `store` only; it reads stored records and writes alerts, and never changes raw records.
