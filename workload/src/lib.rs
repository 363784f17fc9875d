//! coldtrail's workload generator: realistic serverless traffic for a fleet of functions (daily and weekly
//! cycles, cold starts, errors, timeouts, API Gateway / SQS / S3 / EventBridge triggers and their callers),
//! with anomalies injected into chosen functions. It feeds the demo, `coldtrail generate`, the detector
//! scenario tests and the query benchmarks.
//!
//! `cloudtrail` writes the routine CloudTrail activity of the team running that fleet (deployments,
//! configuration, administrators, the functions' own role sessions). `render` turns invocations into what
//! AWS would deliver about them: Lambda log lines in CloudWatch subscription payloads and X-Ray segments;
//! `shapes` renders those log events in every other shape that AWS and its tools deliver them.
//! `stories` holds the attack stories of the demo and the tests.
//!
//! It is deterministic for a seed and knows nothing of parsing, detection or SQL; it depends on `store`
//! only, for the table schemas and the row builder.

pub mod cloudtrail;
pub mod delivery;
pub mod fleet;
pub mod generator;
pub mod render;
pub mod rng;
pub mod shapes;
pub mod stories;

pub use fleet::{fleet, Caller, FunctionProfile, Trigger};
pub use generator::{Anomaly, Generator, Injection, Invocation};
pub use render::invocations_batch;
pub use rng::Rng;
