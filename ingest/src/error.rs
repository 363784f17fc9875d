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
}

impl IngestError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io { path: path.into(), source }
    }

    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Io { .. } => true,
            IngestError::Store(e) => e.is_retryable(),
        }
    }
}
