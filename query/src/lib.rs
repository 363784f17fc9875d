//! coldtrail's query engine: SQL over every stored table, served over the PostgreSQL wire protocol and
//! HTTP, with forensic table functions, authentication and an audit log.
//!
//! Query depends on `store` only; it reads tables and writes the query audit, analysts' triage of
//! incidents and admins' suppressions (`store::suppressions`).
//!
//! - `catalog`: the store's tables as DataFusion table providers (hot rows and Parquet segments together,
//!   with projection and time-range pushdown), and the ledger as a table.
//! - `functions`: scalar UDFs (`cidr_match`, `time_bucket`); `forensics`: the `timeline` and
//!   `environment` table functions and the saved views; `bounded`: DataFusion's functions whose result
//!   can outgrow their arguments (`repeat`, `lpad`, `range`, ...), wrapped with a bound on it.
//! - `engine`: one `SessionContext` over a store, access checks per role, the query audit, metrics.
//! - `auth`: users, roles, SCRAM secrets and HTTP tokens; `access`: what each role may run.
//! - `postgres`: what PostgreSQL clients expect beyond the protocol (`version()`, pgjdbc's
//!   `_pg_expandarray`, `COPY ... TO STDOUT`).
//! - `pg` and `http`: the PostgreSQL-protocol and HTTP servers, with TLS when configured; `admission`:
//!   who may hold a PostgreSQL connection (logged-in slots, login timeout, logins per address);
//!   `results`: JSON, CSV and Arrow results written batch by batch, as HTTP streams them.
//! - `console`: the web console's sessions, pages (embedded from `query/console/`) and security headers.
//! - `procedures`: `CALL incident_status(...)`, `incident_assign`, `incident_note` (analysts' changes to
//!   incidents, stored as rows of `incidents`) and `suppress`, `unsuppress` (admins').

pub mod access;
pub mod accounts;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod bounded;
pub mod catalog;
pub mod console;
pub mod count_rows;
pub mod dictionary_groups;
pub mod engine;
pub mod error;
pub mod forensics;
pub mod functions;
pub mod http;
pub mod join_windows;
pub mod keys;
pub mod metrics;
pub mod pg;
pub mod postgres;
pub mod procedures;
pub mod results;
pub mod tls;

pub use auth::{Role, UserSpec, Users};
pub use engine::{Caller, QueryEngine, QueryOutput};
pub use error::{QueryError, Result};

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use datafusion::prelude::SessionContext;

    /// The answer of `sql` on `ctx` as Arrow's pretty table, one string per line.
    pub async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        text.lines().map(str::to_string).collect()
    }
}
