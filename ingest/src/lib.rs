//! coldtrail's ingest: parsers of Lambda, CloudWatch Logs, CloudTrail, X-Ray and OTLP input and the
//! sources (files, stdin, Kafka, S3; HTTP through the binary) that feed them into the store.
//!
//! Ingest depends on `store` only; it knows nothing of detectors or SQL. Parsers never fail a batch: a
//! record they cannot decode becomes a `dead_letters` row with its reason and raw bytes.

pub mod assemble;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod error;
pub mod file;
pub mod kafka;
pub mod lambda;
pub mod metrics;
pub mod pipeline;
pub mod s3;
pub mod timestamp;
pub mod trace;
pub mod trigger;

pub use error::IngestError;
pub use pipeline::{Format, IngestStats, Pipeline, PipelineConfig, Unit};
