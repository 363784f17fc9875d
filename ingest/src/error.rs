//! Ingest's one error type. Bad records are not errors (they are dead letters); these are failures of
//! the sources and the store.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("store error: {0}")]
    Store(#[from] store::StoreError),
    #[error("kafka error: {0}")]
    Kafka(String),
    /// A cloud API request failed after its retries.
    #[error("{0}")]
    Api(String),
    /// A source's configuration is wrong: every problem, separated by `; `.
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    /// An earlier append of the same `Appender` failed (reported once); nothing after it is stored.
    #[error("not stored: an earlier append failed")]
    AppendFailedEarlier,
    #[error("bug: {0}")]
    Internal(String),
}

impl IngestError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io { path: path.into(), source }
    }

    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Io { .. } | IngestError::Kafka(_) | IngestError::Api(_) | IngestError::Listen { .. } => true,
            IngestError::Internal(_) | IngestError::Config(_) | IngestError::AppendFailedEarlier => false,
            IngestError::Store(e) => e.is_retryable(),
        }
    }
}
