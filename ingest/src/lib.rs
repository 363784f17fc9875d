//! coldtrail's ingest: parsers of Lambda, CloudWatch Logs, CloudTrail, X-Ray and OTLP input, and the
//! sources that feed them into the store (files and byte streams such as stdin, Kafka, S3 or a directory,
//! an HTTP endpoint), each storing through the one `StoreSink`; `sources` runs them from configuration.
//!
//! Ingest depends on `store` only; it knows nothing of detectors or SQL. Parsers never fail a batch: a
//! record they cannot decode becomes a `dead_letters` row with its reason and raw bytes.

pub mod assemble;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod error;
pub mod events;
pub mod file;
pub mod http;
pub mod kafka;
pub mod lambda;
mod lenient;
pub mod logs_api;
pub mod membership;
pub mod metrics;
pub mod otlp;
pub mod outline;
pub mod pipeline;
pub mod progress;
pub mod s3;
pub mod scan;
pub mod sink;
pub mod sources;
pub mod timestamp;
pub mod trace;
pub mod trigger;

pub use error::IngestError;
pub use pipeline::{Format, IngestStats, Pipeline, PipelineConfig, Unit};
pub use sink::{Appender, StoreSink, Stored};
