//! The PostgreSQL wire protocol server.
//!
//! datafusion-postgres does the protocol work (simple and extended query, type mapping, `pg_catalog`,
//! `SET`/`SHOW`, transactions, cursors); this module puts coldtrail's rules around it: SCRAM-SHA-256
//! logins against `Users`, the role check on every statement before it runs, the audit row and
//! metrics for every statement once its rows are sent, and TLS.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, StreamExt};
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::Type;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::access;
use crate::auth::{Role, Users};
use crate::engine::{Caller, QueryEngine};
use crate::error::QueryError;
use crate::metrics::metrics;

/// How the PostgreSQL-protocol server runs.
#[derive(Clone)]
pub struct PgOptions {
    pub tls: Option<crate::tls::TlsSettings>,
    /// Most concurrent connections; more are refused.
    pub max_connections: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { tls: None, max_connections: 256 }
    }
}

fn user_error(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), e.sqlstate().into(), e.to_string())))
}

#[derive(Debug)]
struct UsersSource {
    users: Users,
}

#[async_trait]
impl AuthSource for UsersSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.users.scram_secret(user) {
            Some((salt, salted)) => Ok(Password::new(Some(salt), salted)),
            None => {
                metrics().auth_failures.with_label_values(&["pg"]).inc();
                tracing::info!(user, host = login.host(), "PostgreSQL login for an unknown user refused");
                Err(PgWireError::InvalidPassword(user.to_string()))
            }
        }
    }
}

/// The handlers of one server: a fresh SCRAM state machine per connection, the shared query service.
pub struct Handlers {
    service: Arc<Service>,
    users: Arc<UsersSource>,
    certificate_pem: Option<Vec<u8>>,
    connections: Arc<ConnectionManager>,
}

impl Handlers {
    pub fn new(engine: Arc<QueryEngine>, users: Users, certificate_pem: Option<Vec<u8>>) -> Handlers {
        let inner = Arc::new(DfSessionService::new(Arc::new(engine.context().clone())));
        Handlers {
            service: Arc::new(Service { inner, engine, users: users.clone() }),
            users: Arc::new(UsersSource { users }),
            certificate_pem,
            connections: Arc::new(ConnectionManager::new()),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(self.users.clone());
        scram.set_iterations(crate::auth::SCRAM_ITERATIONS);
        if let Some(pem) = &self.certificate_pem {
            // Offers SCRAM-SHA-256-PLUS (channel binding to the TLS certificate).
            if let Err(e) = scram.configure_certificate(pem) {
                tracing::warn!(error = %e, "SCRAM channel binding unavailable");
            }
        }
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.6 (coldtrail {})", env!("CARGO_PKG_VERSION"));
        parameters.is_superuser = false;
        parameters.time_zone = "UTC".into();
        Arc::new(
            SASLAuthStartupHandler::new(Arc::new(parameters))
                .with_scram(scram)
                .with_connection_manager(self.connections.clone()),
        )
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if matches!(error, PgWireError::InvalidPassword(_)) {
            metrics().auth_failures.with_label_values(&["pg"]).inc();
        }
        tracing::debug!(client = %client.socket_addr(), error = %error, "PostgreSQL error sent");
    }
}

/// The query service: checks, then datafusion-postgres, then the audit.
pub struct Service {
    inner: Arc<DfSessionService>,
    engine: Arc<QueryEngine>,
    users: Users,
}

impl Service {
    fn caller<C: ClientInfo + ?Sized>(&self, client: &C) -> Result<Caller, QueryError> {
        let user = client.metadata().get(pgwire::api::METADATA_USER).cloned().unwrap_or_default();
        let role =
            self.users.role(&user).ok_or_else(|| QueryError::Unauthenticated(format!("user {user:?} is not known")))?;
        Ok(Caller { user, role, client_addr: client.socket_addr().to_string(), protocol: "pg" })
    }
}

/// Records the audit row when the last of a statement's row streams is dropped.
struct AuditGuard {
    engine: Arc<QueryEngine>,
    caller: Caller,
    sql: String,
    started: Instant,
    rows: AtomicU64,
    error: Mutex<Option<QueryError>>,
    /// The statement's concurrency slot, held until its rows are sent.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl AuditGuard {
    fn fail(&self, error: QueryError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.engine.finish(
            &self.caller,
            &self.sql,
            self.started,
            self.rows.load(Ordering::Relaxed),
            error.as_ref().map_or(Ok(()), Err),
        );
    }
}

/// Makes a response's rows count towards `guard`, which is dropped with the response.
fn audited(response: Response, guard: &Arc<AuditGuard>) -> Response {
    match response {
        Response::Query(mut query) => {
            let guard = guard.clone();
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(rows.inspect(move |row| match row {
                Ok(_) => {
                    guard.rows.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => guard.fail(QueryError::DataFusion(DataFusionError::Execution(e.to_string()))),
            }));
            Response::Query(query)
        }
        Response::Error(error) => {
            guard.fail(QueryError::DataFusion(DataFusionError::Execution(error.message.clone())));
            Response::Error(error)
        }
        other => other,
    }
}

fn from_pgwire(e: &PgWireError) -> QueryError {
    match e {
        PgWireError::ApiError(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(DataFusionError::Plan(m)) => QueryError::DataFusion(DataFusionError::Plan(m.clone())),
            _ => QueryError::DataFusion(DataFusionError::Execution(e.to_string())),
        },
        other => QueryError::DataFusion(DataFusionError::Execution(other.to_string())),
    }
}

impl Service {
    /// After the role check: audits a refusal, or takes a concurrency slot and returns the guard that
    /// audits the statement once its rows are sent.
    async fn begin(
        &self,
        caller: Caller,
        sql: &str,
        started: Instant,
        check: Result<(), QueryError>,
    ) -> PgWireResult<Arc<AuditGuard>> {
        let slot = match check {
            Ok(()) => self.engine.slot().await,
            Err(e) => Err(e),
        };
        match slot {
            Ok(slot) => Ok(Arc::new(AuditGuard {
                engine: self.engine.clone(),
                caller,
                sql: sql.to_string(),
                started,
                rows: AtomicU64::new(0),
                error: Mutex::new(None),
                _slot: slot,
            })),
            Err(e) => {
                self.engine.finish(&caller, sql, started, 0, Err(&e));
                Err(user_error(&e))
            }
        }
    }

    /// Checks every statement of a simple-protocol query before any of them runs.
    async fn check_simple(&self, role: Role, query: &str) -> Result<(), QueryError> {
        if role == Role::Admin {
            return Ok(());
        }
        let statements = PostgresCompatibilityParser::new()
            .parse(query)
            .map_err(|e| QueryError::DataFusion(DataFusionError::SQL(Box::new(e), None)))?;
        let state = self.engine.context().state();
        let alone = statements.len() == 1;
        for statement in statements {
            if !alone && access::session_time_zone(&statement).is_some() {
                return Err(QueryError::Denied("an analyst's SET TIME ZONE must be a statement of its own".into()));
            }
            if access::is_session_statement(&statement) {
                access::check_session_statement(role, &statement)?;
            } else {
                // Planned from its text, as datafusion-postgres runs it: DataFusion's parser reads
                // `COPY ... TO` and `CREATE EXTERNAL TABLE` as its own statements.
                let plan = state.create_logical_plan(&statement.to_string()).await?;
                access::check_plan(role, &plan)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let caller = self.caller(client).map_err(|e| user_error(&e))?;
        let query = &*client_sql(query);
        if caller.role != Role::Admin {
            let statements = PostgresCompatibilityParser::new().parse(query).unwrap_or_default();
            if let [statement] = &statements[..] {
                if let Some(zone) = access::session_time_zone(statement) {
                    let guard = self.begin(caller, query, started, Ok(())).await?;
                    return Ok(vec![audited(set_time_zone(client, zone).await?, &guard)]);
                }
            }
        }
        let check = self.check_simple(caller.role, query).await;
        let guard = self.begin(caller, query, started, check).await?;
        match SimpleQueryHandler::do_query(&*self.inner, client, query).await {
            Ok(responses) => Ok(responses.into_iter().map(|r| audited(r, &guard)).collect()),
            Err(e) => {
                guard.fail(from_pgwire(&e));
                Err(e)
            }
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = ClientSqlParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(ClientSqlParser { inner: self.inner.query_parser() })
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let caller = self.caller(client).map_err(|e| user_error(&e))?;
        let (sql, parsed) = &portal.statement.statement;
        if let (Role::Analyst, Some((statement, _))) = (caller.role, parsed) {
            if let Some(zone) = access::session_time_zone(statement) {
                let guard = self.begin(caller, sql, started, Ok(())).await?;
                return Ok(audited(set_time_zone(client, zone).await?, &guard));
            }
        }
        let check = match parsed {
            Some((statement, _)) if access::is_session_statement(statement) => {
                access::check_session_statement(caller.role, statement)
            }
            Some((_, plan)) => access::check_plan(caller.role, plan),
            None => Ok(()),
        };
        let guard = self.begin(caller, sql, started, check).await?;
        match ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows).await {
            Ok(response) => Ok(audited(response, &guard)),
            Err(e) => {
                guard.fail(from_pgwire(&e));
                Err(e)
            }
        }
    }
}

/// An analyst's `SET TIME ZONE`: kept in the connection and reported to the client, never set on the
/// engine that every session shares (which is what datafusion-postgres does).
async fn set_time_zone<C>(client: &mut C, zone: String) -> PgWireResult<Response>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use futures::SinkExt;
    client.metadata_mut().insert("timezone".to_string(), zone.clone());
    let status = pgwire::messages::startup::ParameterStatus::new("TimeZone".to_string(), zone);
    client.send(PgWireBackendMessage::ParameterStatus(status)).await?;
    Ok(Response::Execution(pgwire::api::results::Tag::new("SET")))
}

/// datafusion-postgres's parser for the extended protocol, after [`client_sql`].
pub struct ClientSqlParser {
    inner: Arc<Parser>,
}

#[async_trait]
impl QueryParser for ClientSqlParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.inner.parse_sql(client, &client_sql(sql), types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

/// `pg_type`'s function columns that datafusion-pg-catalog keeps as the function's name (text), as
/// PostgreSQL displays a `regproc`.
const REGPROC_NAME_COLUMNS: [&str; 4] = ["typinput", "typoutput", "typreceive", "typsend"];

/// Fixes what client drivers send that datafusion-pg-catalog would plan wrongly.
///
/// pgjdbc (DBeaver, every JDBC tool) asks `typinput='pg_catalog.array_in'::regproc` to tell array
/// types apart. datafusion-pg-catalog resolves a `'name'::regproc` to the function's oid, but keeps
/// `typinput` as the function's name, so the comparison casts `'array_in'` to an integer and fails.
/// Compared with one of those name columns, the cast becomes the bare function name.
pub fn client_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    const CAST: &str = "'::regproc";
    let lower = sql.to_ascii_lowercase();
    if !lower.contains(CAST) {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(CAST) {
        let close = from + found;
        from = close + CAST.len();
        let Some(open) = lower[..close].rfind('\'') else { continue };
        let name = &sql[open + 1..close];
        let before = lower[..open].trim_end();
        let Some(before) = before.strip_suffix('=') else { continue };
        let column = before.trim_end();
        let column = &column[column.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1)..];
        if !REGPROC_NAME_COLUMNS.contains(&column) || name.is_empty() || name.contains(['\'', ' ']) {
            continue;
        }
        let bare = name.rsplit('.').next().unwrap_or(name);
        out.push_str(&sql[copied..open]);
        out.push('\'');
        out.push_str(bare);
        out.push('\'');
        copied = from;
    }
    out.push_str(&sql[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` resolves. Open connections finish their
/// current statement; new ones are refused.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<QueryEngine>,
    users: Users,
    options: PgOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = options.tls.as_ref().map(|t| t.acceptor());
    let handlers = Arc::new(Handlers::new(engine, users, options.tls.as_ref().map(|t| t.certificate_pem.clone())));
    let limiter = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (socket, addr): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limiter.clone().try_acquire_owned() else {
            tracing::warn!(%addr, max = options.max_connections, "PostgreSQL connection refused: too many connections");
            continue;
        };
        let handlers = handlers.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            metrics().pg_connections.inc();
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::debug!(%addr, error = %e, "PostgreSQL connection ended with an error");
            }
            metrics().pg_connections.dec();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::client_sql;

    #[test]
    fn regproc_compared_with_a_name_column_becomes_the_name() {
        assert_eq!(
            client_sql("SELECT typinput='pg_catalog.array_in'::regproc as is_array FROM pg_type"),
            "SELECT typinput='array_in' as is_array FROM pg_type"
        );
        assert_eq!(client_sql("SELECT t.typoutput = 'int4out'::REGPROC"), "SELECT t.typoutput = 'int4out'");
    }

    #[test]
    fn other_regproc_casts_and_text_are_left_alone() {
        for sql in [
            "SELECT 'array_in'::regproc",
            "SELECT oid = 'array_in'::regproc FROM pg_proc",
            "SELECT 'typinput=''x''::regproc' AS text",
            "SELECT typinput FROM pg_type",
        ] {
            assert_eq!(client_sql(sql), sql);
        }
    }
}
