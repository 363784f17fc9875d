//! Errors of the query engine, each with the SQLSTATE a PostgreSQL client expects.

use datafusion::error::DataFusionError;

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The caller's role may not run this statement.
    #[error("permission denied: {0}")]
    Denied(String),
    /// Unknown user, wrong password or token.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    /// Too many failed password logins from the caller's address; the seconds until it may try again.
    #[error("too many failed logins from this address; try again in {0} s (bearer tokens still work)")]
    RateLimited(u64),
    /// The statement ran longer than the configured limit.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The result is larger than the endpoint returns in one response.
    #[error("result exceeds {0} rows; add a LIMIT, or use the PostgreSQL protocol, which streams")]
    TooLarge(usize),
    /// The result holds more bytes than one response may.
    #[error("result exceeds {0} bytes; add a LIMIT, select fewer columns, or use the PostgreSQL protocol")]
    ResultTooBig(usize),
    #[error("{0}")]
    BadRequest(String),
    /// A PostgreSQL feature coldtrail does not serve (SQLSTATE 0A000, `feature_not_supported`).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The statement was stopped before it ended: its client went away or cancelled it.
    #[error("query cancelled: {0}")]
    Cancelled(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

impl QueryError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        QueryError::Io { context: context.into(), source }
    }

    /// Whether the same statement may succeed when sent again: it ran out of time or slots, or the
    /// storage under it failed transiently. Plans, permissions and bad requests fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueryError::Timeout(_) | QueryError::Io { .. } => true,
            QueryError::Store(e) => e.is_retryable(),
            QueryError::DataFusion(DataFusionError::ResourcesExhausted(_)) => true,
            QueryError::DataFusion(DataFusionError::ObjectStore(_)) => true,
            _ => false,
        }
    }

    /// A short label for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Denied(_) => "denied",
            QueryError::Unauthenticated(_) => "unauthenticated",
            QueryError::RateLimited(_) => "rate_limited",
            QueryError::Timeout(_) => "timeout",
            QueryError::TooLarge(_) | QueryError::ResultTooBig(_) => "too_large",
            QueryError::BadRequest(_) => "bad_request",
            QueryError::Unsupported(_) => "unsupported",
            QueryError::Cancelled(_) => "cancelled",
            QueryError::DataFusion(
                DataFusionError::Plan(_) | DataFusionError::SQL(..) | DataFusionError::SchemaError(..),
            ) => "plan",
            QueryError::DataFusion(_) => "execution",
            QueryError::Store(_) | QueryError::Io { .. } => "storage",
            QueryError::Config(_) => "config",
        }
    }

    /// The SQLSTATE code for PostgreSQL clients.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::Denied(_) => "42501",
            QueryError::Unauthenticated(_) => "28P01",
            QueryError::RateLimited(_) => "53400",
            QueryError::Timeout(_) | QueryError::Cancelled(_) => "57014",
            QueryError::TooLarge(_) | QueryError::ResultTooBig(_) => "54000",
            QueryError::BadRequest(_) => "22023",
            QueryError::Unsupported(_) => "0A000",
            QueryError::DataFusion(DataFusionError::SQL(..)) => "42601",
            QueryError::DataFusion(DataFusionError::Plan(_) | DataFusionError::SchemaError(..)) => "42000",
            _ => "XX000",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(QueryError::Timeout(std::time::Duration::from_secs(1)).is_retryable());
        assert!(QueryError::DataFusion(DataFusionError::ResourcesExhausted("memory".into())).is_retryable());
        assert!(!QueryError::Denied("DROP".into()).is_retryable());
        assert!(!QueryError::DataFusion(DataFusionError::Plan("no such table".into())).is_retryable());
        assert!(!QueryError::BadRequest("empty".into()).is_retryable());
    }
}
