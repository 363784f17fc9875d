//! coldtrail's durable columnar store: the table schemas, the write-ahead log, the hot in-memory buffer,
//! hourly Parquet segments in a local directory or an object store, retention, compaction and the
//! tamper-evident ledger over segments.
//!
//! `store` speaks Arrow only. It knows nothing of log formats (ingest), SQL (query) or detectors (detect);
//! they all depend on it, and it depends on no other workspace crate.
//!
//! ```no_run
//! # async fn example() -> store::Result<()> {
//! use store::{Store, StoreConfig, Table, TimeRange};
//! let store = Store::open(StoreConfig::new("./coldtrail-data")).await?;
//! let batches = store.scan(Table::Invocations, None, TimeRange::ALL).await?;
//! # Ok(()) }
//! ```

pub mod alerts;
pub mod aws;
pub mod error;
pub mod fault;
pub mod fixtures;
pub mod ledger;
pub mod location;
pub mod metrics;
pub mod rows;
pub mod schema;
pub mod secret;
pub mod segment;
pub mod segment_path;
mod store;
pub mod suppressions;
pub mod tables;
pub mod time;
pub mod verify;
pub mod wal;

pub use error::{Result, StoreError};
pub use ledger::LedgerHead;
pub use location::Location;
pub use schema::{Table, SCHEMA_VERSION};
pub use store::{
    catalog_stats, marks_watermark, merge_marks, Appended, CompactionPolicy, FlushPolicy, InputMark, MaintenanceReport,
    SegmentInfo, Store, StoreConfig, TableSnapshot, TableStats,
};
pub use time::TimeRange;
pub use verify::{verify_location, IntegrityProblem, VerifyReport};
pub use wal::Position;
