//! Errors of the query engine, each with the SQLSTATE a PostgreSQL client expects.

use datafusion::error::DataFusionError;

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The caller's role may not run this statement.
    #[error("permission denied: {0}")]
    Denied(String),
    /// Unknown user, wrong password or token.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    /// The statement ran longer than the configured limit.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The result is larger than the endpoint returns in one response.
    #[error("result exceeds {0} rows; add a LIMIT or ask for Arrow IPC")]
    TooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
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

    /// A short label for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Denied(_) => "denied",
            QueryError::Unauthenticated(_) => "unauthenticated",
            QueryError::Timeout(_) => "timeout",
            QueryError::TooLarge(_) => "too_large",
            QueryError::BadRequest(_) => "bad_request",
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
            QueryError::Timeout(_) => "57014",
            QueryError::TooLarge(_) => "54000",
            QueryError::BadRequest(_) => "22023",
            QueryError::DataFusion(DataFusionError::SQL(..)) => "42601",
            QueryError::DataFusion(DataFusionError::Plan(_) | DataFusionError::SchemaError(..)) => "42000",
            _ => "XX000",
        }
    }
}
