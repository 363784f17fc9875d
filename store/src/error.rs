//! The store's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store, grouped by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    // Bad input from the caller.
    #[error("batch for table {table} does not match its schema: {reason}")]
    SchemaMismatch { table: String, reason: String },
    #[error("batch for table {table} has a null in time column {column}")]
    NullTime { table: String, column: String },
    #[error("data directory is in use by another process (lock {path}): {reason}")]
    Locked { path: PathBuf, reason: String },
    #[error("invalid store location {location}: {reason}")]
    BadLocation { location: String, reason: String },

    #[error("position of {stream} is {actual:?}, not {expected:?} as the append assumed")]
    PositionConflict { stream: String, expected: Option<u64>, actual: Option<u64> },

    // Limits.
    #[error("append of {bytes} bytes to table {table} exceeds the frame limit of {limit} bytes")]
    FrameTooLarge { table: String, bytes: usize, limit: usize },

    // Stored data that is not what it must be.
    #[error("write-ahead log {path} is corrupt at offset {offset}: {reason}")]
    WalCorrupt { path: PathBuf, offset: u64, reason: String },
    #[error(
        "write-ahead log {path} was tampered with at offset {offset}: {reason}; its rows are not replayed (run \
         `coldtrail verify`, then keep the file as evidence and move it out of the WAL directory to start)"
    )]
    WalTampered { path: PathBuf, offset: u64, reason: String },
    #[error("ledger of node {node} is corrupt at entry {seq}: {reason}")]
    LedgerCorrupt { node: String, seq: u64, reason: String },
    #[error("segment {path} is unreadable: {reason}")]
    SegmentCorrupt { path: String, reason: String },
    #[error("node key {path} is invalid: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("positions {path} are corrupt: {reason}")]
    PositionsCorrupt { path: String, reason: String },

    // External systems.
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    // Bugs.
    #[error("bug: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }

    /// Whether retrying the same call may succeed (a transient failure of an external system).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::ObjectStore(_) | StoreError::Io { .. })
    }

    /// Whether stored data is not what it must be (damage or tampering, for an operator to look at), as
    /// against bad input, limits, external failures or bugs.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::WalCorrupt { .. }
                | StoreError::WalTampered { .. }
                | StoreError::LedgerCorrupt { .. }
                | StoreError::SegmentCorrupt { .. }
                | StoreError::BadKey { .. }
                | StoreError::PositionsCorrupt { .. }
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
