//! `QueryEngine`: one DataFusion `SessionContext` over a store, shared by every server and session,
//! with the access checks, the audit and the metrics around each statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use store::{Store, Table};

use crate::access;
use crate::audit::{AuditLog, AuditRecord};
use crate::auth::{Role, Users};
use crate::error::{QueryError, Result};
use crate::metrics::metrics;

/// When a statement started: for its duration, and its audit rows' time (the same in its `started` row
/// and its outcome's, so the two join).
#[derive(Clone, Copy, Debug)]
pub struct Started {
    at: Instant,
    micros: i64,
}

impl Started {
    pub fn now() -> Started {
        Started { at: Instant::now(), micros: chrono::Utc::now().timestamp_micros() }
    }

    pub fn elapsed(&self) -> Duration {
        self.at.elapsed()
    }
}

/// Catalog and schema names; PostgreSQL clients see one database, `coldtrail`, schema `public`.
pub const CATALOG: &str = "coldtrail";
pub const SCHEMA: &str = "public";

/// Limits applied to every statement.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A statement running longer is cancelled.
    pub statement_timeout: Duration,
    /// Most rows one HTTP or CLI response carries, in every format (the PostgreSQL protocol has no cap:
    /// its client reads the rows as they come).
    pub max_result_rows: usize,
    /// Most bytes one HTTP response carries (as sent, in its format), and one CLI result holds (Arrow
    /// memory; the CLI builds results whole). HTTP streams its results and holds one batch of each.
    pub max_result_bytes: usize,
    /// Memory all running statements may hold for sorts, joins and aggregations together; a statement
    /// that needs more than its fair share fails with "Resources exhausted" and frees what it held.
    pub memory_bytes: usize,
    /// Statements running at once; more wait (within their timeout) for a slot.
    pub max_concurrent: usize,
    /// Bytes of segments' bloom filters held for lookups by key (`keys::SegmentKeys`).
    pub key_filter_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            statement_timeout: Duration::from_secs(300),
            max_result_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            memory_bytes: 2 << 30,
            max_concurrent: 16,
            key_filter_bytes: crate::keys::KEY_FILTER_CACHE_BYTES,
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

/// A statement that runs: its rows come from `stream` as they are computed. It holds its slot until it
/// is dropped; the caller reports its end with `QueryEngine::finish`.
pub struct Running {
    pub schema: SchemaRef,
    pub stream: datafusion::physical_plan::SendableRecordBatchStream,
    _slot: Slot,
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
    analyst_slots: Arc<tokio::sync::Semaphore>,
    users: Users,
}

/// Slots only admins may take (when there are more than this many).
pub const ADMIN_RESERVED_SLOTS: usize = 2;

/// A running statement's slot, given back when dropped.
pub struct Slot {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _analyst: Option<tokio::sync::OwnedSemaphorePermit>,
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
        // decoded only for matching rows, where a filter can be selective: `catalog::StoreTable` turns
        // it on per scan. Bloom filters answer lookups of ids.
        .set_bool("datafusion.execution.parquet.pushdown_filters", false)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true)
        .set_bool("datafusion.execution.parquet.enable_page_index", true);
    let pool = datafusion::execution::memory_pool::TrackConsumersPool::new(
        datafusion::execution::memory_pool::FairSpillPool::new(limits.memory_bytes),
        std::num::NonZeroUsize::new(3).expect("non-zero"),
    );
    let runtime =
        datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool)).build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
        .with_physical_optimizer_rule(Arc::new(crate::dictionary_groups::DictionaryGroups))
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    crate::catalog::register_store(&ctx, store, limits.key_filter_bytes)?;
    crate::functions::register(&ctx);
    crate::postgres::register(&ctx);
    datafusion_functions_json::register_all(&mut ctx)?;
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        CATALOG,
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| QueryError::DataFusion(*e))?;
    crate::postgres::register_to_regtype(&ctx).await?;
    crate::forensics::register(&ctx).await?;
    crate::bounded::register(&ctx);
    ctx.add_optimizer_rule(Arc::new(crate::join_windows::JoinWindows));
    ctx.add_optimizer_rule(Arc::new(crate::count_rows::CountRows));
    Ok(ctx)
}

impl QueryEngine {
    /// Builds the engine, with no users (the CLI's), and starts its audit writer (on the current Tokio runtime).
    pub async fn new(store: Arc<Store>, limits: Limits) -> Result<Arc<QueryEngine>> {
        QueryEngine::with_users(store, limits, Users::default()).await
    }

    /// Builds the engine for `users`, the users its servers authenticate, and starts its audit writer.
    pub async fn with_users(store: Arc<Store>, limits: Limits, users: Users) -> Result<Arc<QueryEngine>> {
        let ctx = build_context(&store, &limits).await?;
        let audit = AuditLog::start(store.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1)));
        let analysts = match limits.max_concurrent {
            n if n > ADMIN_RESERVED_SLOTS => n - ADMIN_RESERVED_SLOTS,
            n => n.max(1),
        };
        let analyst_slots = Arc::new(tokio::sync::Semaphore::new(analysts));
        Ok(Arc::new(QueryEngine { store, ctx, audit, limits, slots, analyst_slots, users }))
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Reads each table's id column's bloom filters (`request_id`, `event_id`, `trace_id`, …) for
    /// its segments, newest first, within `key_filter_cache_mb`, so that the first point lookups
    /// after a start do not read them. Returns how many segments' filters it read.
    pub async fn warm_key_filters(&self) -> Result<usize> {
        let mut read = 0;
        for table in [Table::Invocations, Table::Cloudtrail, Table::Spans, Table::Logs, Table::Alerts, Table::Incidents]
        {
            let provider = self.ctx.table_provider(table.name()).await?;
            if let Some(table) = provider.downcast_ref::<crate::catalog::StoreTable>() {
                read += table.warm_keys(&self.ctx.state()).await?;
            }
        }
        Ok(read)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The users its servers authenticate (configured, and added at run time).
    pub fn users(&self) -> &Users {
        &self.users
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn audit_log(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Waits for a slot to run a statement of `role` (at most the statement timeout). Analysts share all
    /// but `ADMIN_RESERVED_SLOTS` of the slots, so that runaway analyst queries never keep an admin from
    /// running a statement (as PostgreSQL reserves connections for superusers).
    pub async fn slot(&self, role: Role) -> Result<Slot> {
        let wait = async {
            let analyst = match role {
                Role::Analyst => Some(self.analyst_slots.clone().acquire_owned().await?),
                Role::Admin => None,
            };
            let slot = self.slots.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>(Slot { _slot: slot, _analyst: analyst })
        };
        match tokio::time::timeout(self.limits.statement_timeout, wait).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(QueryError::BadRequest("the engine is shutting down".into())),
            Err(_) => Err(QueryError::Timeout(self.limits.statement_timeout)),
        }
    }

    /// Records, durably, that a statement is about to run (its `started` row, stamped with its start).
    /// A statement whose record cannot be stored does not run.
    pub async fn start(&self, caller: &Caller, sql: &str, started: Started) -> Result<()> {
        self.audit
            .record_durable(AuditRecord {
                ts_micros: started.micros,
                user: caller.user.clone(),
                client_addr: caller.client_addr.clone(),
                protocol: caller.protocol,
                sql: crate::procedures::audited(sql).into_owned(),
                status: "started",
                rows: 0,
                duration_ms: 0.0,
                error: None,
            })
            .await
    }

    /// Records a finished statement in the audit (stamped, like its `started` row, with its start) and
    /// the metrics.
    pub fn finish(&self, caller: &Caller, sql: &str, started: Started, rows: u64, outcome: Result<(), &QueryError>) {
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
            ts_micros: started.micros,
            user: caller.user.clone(),
            client_addr: caller.client_addr.clone(),
            protocol: caller.protocol,
            sql: crate::procedures::audited(sql).into_owned(),
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
        let started = Started::now();
        let limit = row_limit.unwrap_or(self.limits.max_result_rows);
        let work = async {
            let running = self.open(caller, sql, started).await?;
            self.collect(running, limit).await
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

    /// Plans one statement and checks it against the role.
    async fn plan(&self, role: Role, sql: &str) -> Result<datafusion::logical_expr::LogicalPlan> {
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
        Ok(plan)
    }

    /// Starts one statement: checks its length, waits for a slot, plans it, checks it against the
    /// caller's role, records its `started` audit row and starts executing it. A procedure
    /// (`crate::procedures`: triage, suppressions) makes its change and answers with what it stored. The caller applies the
    /// statement timeout around this and the reading of its rows, and calls `finish` at its end.
    pub async fn open(&self, caller: &Caller, sql: &str, started: Started) -> Result<Running> {
        access::check_length(caller.role, sql)?;
        access::check_complexity(sql)?;
        let slot = self.slot(caller.role).await?;
        if let Some(call) = crate::procedures::parse(sql) {
            let call = call?;
            crate::procedures::check(&call, caller.role)?;
            self.start(caller, sql, started).await?;
            let answer = crate::procedures::apply(&self.store, &self.users, &call, caller).await?;
            let df = self.ctx.sql(&answer).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let stream = df.execute_stream().await?;
            return Ok(Running { schema, stream, _slot: slot });
        }
        let plan = self.plan(caller.role, sql).await?;
        self.start(caller, sql, started).await?;
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await?;
        Ok(Running { schema, stream, _slot: slot })
    }

    /// Collects at most `limit` rows of a running statement.
    async fn collect(&self, running: Running, limit: usize) -> Result<(SchemaRef, Vec<RecordBatch>, usize)> {
        let Running { schema, mut stream, _slot } = running;
        let mut batches = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
            if rows > limit {
                return Err(QueryError::TooLarge(limit));
            }
            if bytes > self.limits.max_result_bytes {
                return Err(QueryError::ResultTooBig(self.limits.max_result_bytes));
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
