//! `QueryEngine`: one DataFusion `SessionContext` over a store, shared by every server and session,
//! with the access checks, the audit and the metrics around each statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use store::Store;

use crate::access;
use crate::audit::{AuditLog, AuditRecord};
use crate::auth::Role;
use crate::error::{QueryError, Result};
use crate::metrics::metrics;

/// Catalog and schema names; PostgreSQL clients see one database, `coldtrail`, schema `public`.
pub const CATALOG: &str = "coldtrail";
pub const SCHEMA: &str = "public";

/// Limits applied to every statement.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A statement running longer is cancelled.
    pub statement_timeout: Duration,
    /// Most rows one HTTP or CLI response carries (the PostgreSQL protocol streams instead).
    pub max_result_rows: usize,
    /// Memory all running statements may hold for sorts, joins and aggregations together; a statement
    /// that needs more than its fair share fails with "Resources exhausted" and frees what it held.
    pub memory_bytes: usize,
    /// Statements running at once; more wait (within their timeout) for a slot.
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            statement_timeout: Duration::from_secs(300),
            max_result_rows: 1_000_000,
            memory_bytes: 2 << 30,
            max_concurrent: 16,
        }
    }
}

/// Who runs a statement, and from where.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub client_addr: String,
    /// pg, http or cli.
    pub protocol: &'static str,
}

/// A finished statement's result.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub elapsed: Duration,
}

pub struct QueryEngine {
    store: Arc<Store>,
    ctx: SessionContext,
    audit: Arc<AuditLog>,
    limits: Limits,
    slots: Arc<tokio::sync::Semaphore>,
}

/// The session context over `store`: store tables, ledger, forensic functions and views, JSON functions,
/// `pg_catalog` and `information_schema`.
pub async fn build_context(store: &Arc<Store>, limits: &Limits) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
        .set_str("datafusion.execution.time_zone", store::schema::TIME_ZONE)
        // Filters are evaluated while Parquet is decoded, cheapest first, so that the other columns are
        // decoded only for matching rows; bloom filters answer lookups of ids.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true)
        .set_bool("datafusion.execution.parquet.enable_page_index", true);
    let pool = datafusion::execution::memory_pool::TrackConsumersPool::new(
        datafusion::execution::memory_pool::FairSpillPool::new(limits.memory_bytes),
        std::num::NonZeroUsize::new(3).expect("non-zero"),
    );
    let runtime =
        datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool)).build_arc()?;
    let mut ctx = SessionContext::new_with_config_rt(config, runtime);
    crate::catalog::register_store(&ctx, store)?;
    crate::functions::register(&ctx);
    datafusion_functions_json::register_all(&mut ctx)?;
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        CATALOG,
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| QueryError::DataFusion(*e))?;
    crate::forensics::register(&ctx).await?;
    Ok(ctx)
}

impl QueryEngine {
    /// Builds the engine and starts its audit writer (on the current Tokio runtime).
    pub async fn new(store: Arc<Store>, limits: Limits) -> Result<Arc<QueryEngine>> {
        let ctx = build_context(&store, &limits).await?;
        let audit = AuditLog::start(store.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1)));
        Ok(Arc::new(QueryEngine { store, ctx, audit, limits, slots }))
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn audit_log(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Waits for a slot to run a statement (at most the statement timeout).
    pub async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(self.limits.statement_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(QueryError::BadRequest("the engine is shutting down".into())),
            Err(_) => Err(QueryError::Timeout(self.limits.statement_timeout)),
        }
    }

    /// Records a finished statement in the audit and the metrics.
    pub fn finish(&self, caller: &Caller, sql: &str, started: Instant, rows: u64, outcome: Result<(), &QueryError>) {
        let elapsed = started.elapsed();
        let m = metrics();
        let status = match outcome {
            Ok(()) => "ok",
            Err(QueryError::Denied(_)) => "denied",
            Err(_) => "error",
        };
        m.queries.with_label_values(&[caller.protocol, status]).inc();
        m.duration.with_label_values(&[caller.protocol]).observe(elapsed.as_secs_f64());
        m.rows.with_label_values(&[caller.protocol]).inc_by(rows);
        if let Err(e) = outcome {
            m.errors.with_label_values(&[e.kind()]).inc();
        }
        self.audit.record(AuditRecord {
            ts_micros: chrono::Utc::now().timestamp_micros(),
            user: caller.user.clone(),
            client_addr: caller.client_addr.clone(),
            protocol: caller.protocol,
            sql: sql.to_string(),
            status,
            rows,
            duration_ms: elapsed.as_secs_f64() * 1e3,
            error: outcome.err().map(|e| e.to_string()),
        });
    }

    /// Runs one statement for the HTTP API and the CLI: checks it against the caller's role, runs it
    /// within the statement timeout, collects at most `max_result_rows` rows (`row_limit` overrides it,
    /// `usize::MAX` for streaming formats), and audits it.
    pub async fn execute(&self, caller: &Caller, sql: &str, row_limit: Option<usize>) -> Result<QueryOutput> {
        let started = Instant::now();
        let limit = row_limit.unwrap_or(self.limits.max_result_rows);
        let work = async {
            let _slot = self.slot().await?;
            self.run(caller.role, sql, limit).await
        };
        let result = match tokio::time::timeout(self.limits.statement_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Timeout(self.limits.statement_timeout)),
        };
        match result {
            Ok((schema, batches, rows)) => {
                self.finish(caller, sql, started, rows as u64, Ok(()));
                Ok(QueryOutput { schema, batches, rows, elapsed: started.elapsed() })
            }
            Err(e) => {
                self.finish(caller, sql, started, 0, Err(&e));
                Err(e)
            }
        }
    }

    async fn run(&self, role: Role, sql: &str, limit: usize) -> Result<(SchemaRef, Vec<RecordBatch>, usize)> {
        if sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(QueryError::BadRequest("the query is empty".into()));
        }
        let plan = match self.ctx.state().create_logical_plan(sql).await {
            Err(datafusion::error::DataFusionError::NotImplemented(m)) if m.contains("single SQL statement") => {
                return Err(QueryError::BadRequest("a single statement per request; this text holds several".into()));
            }
            plan => plan?,
        };
        access::check_plan(role, &plan)?;
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > limit {
                return Err(QueryError::TooLarge(limit));
            }
            batches.push(batch);
        }
        Ok((schema, batches, rows))
    }

    /// Stops the audit writer after writing what it holds.
    pub async fn close(&self) {
        self.audit.close().await;
    }
}
