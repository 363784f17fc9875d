//! Alerting's one error type. A destination that refuses or times out is not an error here: it is a
//! delivery state (`retrying`, `failed`) in `alert_deliveries`. These are the failures that stop the
//! outbox itself.

/// Why the outbox stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertingError {
    /// The store refused the delivery states or the recovery scan.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// A bug: a task the outbox waited for failed.
    #[error("bug: {0}")]
    Internal(String),
}

impl AlertingError {
    /// Whether starting the outbox again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AlertingError::Store(e) => e.is_retryable(),
            AlertingError::Internal(_) => false,
        }
    }
}
