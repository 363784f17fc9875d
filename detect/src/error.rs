//! Detect's errors.

/// What can go wrong in detection. Bad input is never an error here: rows that do not fit are skipped
/// and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// A checkpoint could not be written or read back.
    #[error("detector checkpoint: {0}")]
    Checkpoint(String),
    /// The input file of `detect-series` is not `timestamp,value` rows.
    #[error("{0}")]
    BadSeries(String),
    /// A Sigma rule (or a directory of them) could not be loaded.
    #[error("Sigma rule {file}: {reason}")]
    Rule { file: String, reason: String },
    /// Reading rows or storing alerts failed.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// A bug or an exhausted resource (a thread that cannot start).
    #[error("bug: {0}")]
    Internal(String),
}
