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

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast::Statement;
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

use crate::access;
use crate::admission::{Admission, AdmissionLimits};
use crate::auth::{Role, Users};
use crate::engine::{Caller, QueryEngine, Started};
use crate::error::QueryError;
use crate::metrics::metrics;

/// How the PostgreSQL-protocol server runs.
#[derive(Clone, Default)]
pub struct PgOptions {
    pub tls: Option<crate::tls::TlsSettings>,
    /// Logged-in connections and the limits on logins (`admission`).
    pub admission: AdmissionLimits,
    /// With `tls`, still accept logins without it (otherwise refused before any authentication message,
    /// so no password exchange and no SCRAM-SHA-256-PLUS offer happens in plaintext).
    pub allow_plaintext: bool,
}

impl PgOptions {
    /// TLS when given, `max_connections` logged-in connections, the other login limits by default.
    pub fn new(tls: Option<crate::tls::TlsSettings>, max_connections: usize, allow_plaintext: bool) -> PgOptions {
        PgOptions { tls, admission: AdmissionLimits { max_connections, ..Default::default() }, allow_plaintext }
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
                // The exchange runs to its end and fails at the proof, as for a wrong password: neither
                // the answer nor its timing tells which names exist.
                tracing::info!(user, host = login.host(), "PostgreSQL login for an unknown user");
                let (salt, salted) = Users::unknown_user_secret();
                Ok(Password::new(Some(salt), salted))
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
    admission: Arc<Admission>,
    require_tls: bool,
}

impl Handlers {
    pub fn new(
        engine: Arc<QueryEngine>,
        users: Users,
        certificate_pem: Option<Vec<u8>>,
        admission: Arc<Admission>,
        require_tls: bool,
    ) -> Handlers {
        let inner = Arc::new(DfSessionService::new_with_hooks(
            Arc::new(engine.context().clone()),
            crate::postgres::query_hooks(),
        ));
        Handlers {
            service: Arc::new(Service { inner, engine, users: users.clone(), admission: admission.clone() }),
            users: Arc::new(UsersSource { users }),
            certificate_pem,
            connections: Arc::new(ConnectionManager::new()),
            admission,
            require_tls,
        }
    }
}

/// The login, with a logged-in slot (`Admission`) taken for its steps and kept once it succeeds: the
/// connection limit counts logged-in connections, never logins under way.
struct AdmittedStartup<H> {
    inner: H,
    admission: Arc<Admission>,
    /// TLS is configured and plaintext is not allowed.
    require_tls: bool,
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for AdmittedStartup<H> {
    async fn on_startup<C>(&self, client: &mut C, message: pgwire::messages::PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::PgWireConnectionState as State;
        if !matches!(client.state(), State::AwaitingStartup | State::AuthenticationInProgress) {
            return self.inner.on_startup(client, message).await;
        }
        if self.require_tls && !client.is_secure() {
            tracing::info!(client = %client.socket_addr(), "PostgreSQL login without TLS refused");
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "this server requires TLS (sslmode=require); plaintext logins are refused".into(),
            ))));
        }
        let Some(slot) = self.admission.reserve() else {
            tracing::warn!(client = %client.socket_addr(), max = self.admission.limits().max_connections, "PostgreSQL login refused: too many connections");
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "53300".into(),
                "sorry, too many clients already".into(),
            ))));
        };
        self.inner.on_startup(client, message).await?;
        if matches!(client.state(), State::ReadyForQuery) {
            self.admission.logged_in(client.socket_addr(), slot);
        }
        Ok(())
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
        parameters.server_version = crate::postgres::server_version();
        parameters.is_superuser = false;
        parameters.time_zone = "UTC".into();
        Arc::new(AdmittedStartup {
            inner: SASLAuthStartupHandler::new(Arc::new(parameters))
                .with_scram(scram)
                .with_connection_manager(self.connections.clone()),
            admission: self.admission.clone(),
            require_tls: self.require_tls,
        })
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
    admission: Arc<Admission>,
}

/// What ends a statement early, wherever it is (planning, computing, streaming rows): its deadline (the
/// engine's `statement_timeout`, or the session's if shorter), a cancel request, or the client gone.
#[derive(Clone)]
struct Bounds {
    deadline: tokio::time::Instant,
    cancel: Option<Arc<pgwire::api::ConnectionHandle>>,
    ticket: Option<Arc<crate::admission::Ticket>>,
}

fn statement_timeout_error() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        "canceling statement due to statement timeout".into(),
    )))
}

impl Bounds {
    /// Resolves with the error that ends the statement. Only polled after the protocol layer's own
    /// cancel wait (around `do_query`) has ended, so taking the connection's cancel sender is safe.
    async fn stop(self, with_cancel: bool) -> PgWireError {
        let cancelled = async {
            match self.cancel.filter(|_| with_cancel) {
                Some(handle) => {
                    let _ = handle.start_query().await.await;
                }
                None => std::future::pending().await,
            }
        };
        let gone = async {
            match &self.ticket {
                Some(ticket) => ticket.gone().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(self.deadline) => statement_timeout_error(),
            _ = cancelled => PgWireError::QueryCanceled,
            _ = gone => PgWireError::QueryCanceled,
        }
    }
}

impl Service {
    /// The bounds of a statement starting now for `client`.
    fn bounds<C: ClientInfo + ?Sized>(&self, client: &C) -> Bounds {
        let mut timeout = self.engine.limits().statement_timeout;
        // The session's `SET statement_timeout`, as datafusion-postgres keeps it, when it is shorter.
        if let Some(ms) = client.metadata().get("statement_timeout_ms").and_then(|v| v.parse::<u64>().ok()) {
            if ms > 0 {
                timeout = timeout.min(std::time::Duration::from_millis(ms));
            }
        }
        Bounds {
            deadline: tokio::time::Instant::now() + timeout,
            cancel: client.session_extensions().get::<Arc<pgwire::api::ConnectionHandle>>().map(|h| (*h).clone()),
            ticket: self.admission.ticket(client.socket_addr()),
        }
    }

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
    started: Started,
    rows: AtomicU64,
    error: Mutex<Option<QueryError>>,
    /// The statement's concurrency slot, held until its rows are sent.
    _slot: crate::engine::Slot,
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

/// Makes a response's rows count towards `guard`, which is dropped with the response, and ends them with
/// an error when `bounds` says so (dropping the rows stops their computation).
fn audited(response: Response, guard: &Arc<AuditGuard>, bounds: &Bounds) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(counted(rows, guard, bounds));
            Response::Query(query)
        }
        Response::Error(error) => {
            guard.fail(QueryError::DataFusion(DataFusionError::Execution(error.message.clone())));
            Response::Error(error)
        }
        other => other,
    }
}

/// `rows`, each counted towards `guard`, ended with an error when `bounds` says so.
fn counted<T: Send + 'static>(
    rows: impl futures::Stream<Item = PgWireResult<T>> + Send + Unpin + 'static,
    guard: &Arc<AuditGuard>,
    bounds: &Bounds,
) -> impl futures::Stream<Item = PgWireResult<T>> + Send + 'static {
    let guard = guard.clone();
    let stop: futures::future::BoxFuture<'static, PgWireError> = Box::pin(bounds.clone().stop(true));
    let bounded = futures::stream::unfold(Some((rows, stop)), |state| async move {
        let (mut rows, mut stop) = state?;
        tokio::select! {
            biased;
            error = &mut stop => Some((Err(error), None)),
            row = rows.next() => row.map(|row| (row, Some((rows, stop)))),
        }
    });
    bounded.inspect(move |row| match row {
        Ok(_) => {
            guard.rows.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => guard.fail(QueryError::DataFusion(DataFusionError::Execution(e.to_string()))),
    })
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
    /// A procedure call (`crate::procedures`): audited as started, then made; the guard that audits its
    /// end, and the query that answers it.
    async fn call(
        &self,
        caller: Caller,
        sql: &str,
        started: Started,
        call: Result<crate::procedures::Call, QueryError>,
    ) -> PgWireResult<(Arc<AuditGuard>, String)> {
        let who = caller.clone();
        let (check, call) = match call.and_then(|call| crate::procedures::check(&call, who.role).map(|()| call)) {
            Ok(call) => (Ok(()), Some(call)),
            Err(e) => (Err(e), None),
        };
        let guard = self.begin(caller, sql, started, check).await?;
        let Some(call) = call else { return Err(user_error(&QueryError::BadRequest("the call was refused".into()))) };
        match crate::procedures::apply(self.engine.store(), self.engine.users(), &call, &who).await {
            Ok(answer) => Ok((guard, answer)),
            Err(e) => {
                let error = user_error(&e);
                guard.fail(e);
                Err(error)
            }
        }
    }

    /// After the role check: audits a refusal, or takes a concurrency slot and returns the guard that
    /// audits the statement once its rows are sent.
    async fn begin(
        &self,
        caller: Caller,
        sql: &str,
        started: Started,
        check: Result<(), QueryError>,
    ) -> PgWireResult<Arc<AuditGuard>> {
        let check = check.and_then(|()| access::check_length(caller.role, sql));
        let slot = match check {
            Ok(()) => match self.engine.slot(caller.role).await {
                Ok(slot) => self.engine.start(&caller, sql, started).await.map(|()| slot),
                Err(e) => Err(e),
            },
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
        let state = self.engine.context().state();
        let statements = match PostgresCompatibilityParser::new().parse(query) {
            Ok(statements) => statements,
            Err(e) => {
                // DataFusion's own statements (`CREATE EXTERNAL TABLE`) are not PostgreSQL: planned from
                // the text, as the engine would run them, so that they are refused for what they are.
                let plan = state
                    .create_logical_plan(query)
                    .await
                    .map_err(|_| QueryError::DataFusion(DataFusionError::SQL(Box::new(e), None)))?;
                return access::check_plan(role, &plan);
            }
        };
        let alone = statements.len() == 1;
        for statement in statements {
            if !alone && access::session_time_zone(&statement).is_some() {
                return Err(QueryError::Denied("an analyst's SET TIME ZONE must be a statement of its own".into()));
            }
            if access::is_session_statement(&statement) {
                self.check_session(role, &statement).await?;
            } else {
                // Planned from its text, as datafusion-postgres runs it: DataFusion's parser reads
                // `COPY ... TO` and `CREATE EXTERNAL TABLE` as its own statements.
                let plan = state.create_logical_plan(&statement.to_string()).await?;
                access::check_plan(role, &plan)?;
            }
        }
        Ok(())
    }

    /// A `COPY ... TO STDOUT`: its query is role-checked like a `SELECT`, audited with the rows sent,
    /// and bounded by the statement timeout and cancel requests.
    async fn copy_to_client(
        &self,
        caller: Caller,
        sql: &str,
        started: Started,
        bounds: &Bounds,
        copy: Result<crate::postgres::CopyOut, QueryError>,
    ) -> PgWireResult<Response> {
        let checked = match copy {
            Ok(copy) if caller.role == Role::Admin => Ok(copy),
            Ok(copy) => {
                let plan = self.engine.context().state().create_logical_plan(&copy.query).await;
                plan.map_err(QueryError::from).and_then(|plan| access::check_plan(caller.role, &plan)).map(|()| copy)
            }
            Err(e) => Err(e),
        };
        let copy = match checked {
            Ok(copy) => copy,
            Err(e) => {
                self.engine.finish(&caller, sql, started, 0, Err(&e));
                return Err(user_error(&e));
            }
        };
        let guard = self.begin(caller, sql, started, Ok(())).await?;
        let run = tokio::select! {
            result = copy.run(self.engine.context()) => result,
            error = bounds.clone().stop(false) => Err(error),
        };
        match run {
            Ok(out) => {
                let rows = counted(out.rows, &guard, bounds);
                let data = futures::stream::iter(out.header.map(Ok)).chain(rows);
                Ok(Response::CopyOut(pgwire::api::results::CopyResponse::new(out.format, out.columns, data)))
            }
            Err(e) => {
                guard.fail(from_pgwire(&e));
                Err(e)
            }
        }
    }

    /// Checks a statement the PostgreSQL layer answers itself. A cursor's query is planned and checked
    /// like any statement: datafusion-postgres runs it with `SessionContext::sql`, which would execute
    /// `SELECT … INTO`, DDL or DML at `DECLARE` with nobody's role checked.
    async fn check_session(&self, role: Role, statement: &Statement) -> Result<(), QueryError> {
        access::check_session_statement(role, statement)?;
        if let (Role::Analyst, Statement::Declare { stmts }) = (role, statement) {
            let state = self.engine.context().state();
            for declare in stmts {
                if let Some(query) = &declare.for_query {
                    let plan = state.create_logical_plan(&query.to_string()).await?;
                    access::check_plan(role, &plan)?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    /// After an error in a transaction, a `ROLLBACK TO SAVEPOINT` makes it usable again: the status is
    /// set before pgwire reads it for this statement (answering it is [`crate::postgres::SavepointHook`]'s).
    async fn on_query<C>(&self, client: &mut C, query: pgwire::messages::simplequery::Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::response::TransactionStatus;
        if client.transaction_status() == TransactionStatus::Error && query.query.len() < 1024 {
            let statements = PostgresCompatibilityParser::new().parse(&query.query).unwrap_or_default();
            if let [statement] = &statements[..] {
                if crate::postgres::is_rollback_to_savepoint(statement) {
                    client.set_transaction_status(TransactionStatus::Transaction);
                }
            }
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Started::now();
        let caller = self.caller(client).map_err(|e| user_error(&e))?;
        let bounds = self.bounds(client);
        let query = &*client_sql(query);
        // Before anything parses it (a deep tree overflows the stack when it is dropped).
        if let Err(e) = access::check_complexity(query) {
            self.engine.finish(&caller, query, started, 0, Err(&e));
            return Err(user_error(&e));
        }
        let statements = PostgresCompatibilityParser::new().parse(query).unwrap_or_default();
        if let (Role::Analyst, [statement]) = (caller.role, &statements[..]) {
            if let Some(zone) = access::session_time_zone(statement) {
                let guard = self.begin(caller, query, started, Ok(())).await?;
                return Ok(vec![audited(set_time_zone(client, zone).await?, &guard, &bounds)]);
            }
        }
        if let Some(copy) = statements.iter().find_map(crate::postgres::copy_out) {
            let copy = copy.and_then(|copy| match statements.len() {
                1 => Ok(copy),
                _ => Err(QueryError::Unsupported("COPY ... TO STDOUT must be a statement of its own".into())),
            });
            return self.copy_to_client(caller, query, started, &bounds, copy).await.map(|response| vec![response]);
        }
        let mut query = query.to_string();
        let guard = match statements.iter().find_map(crate::procedures::procedure) {
            Some(_) if statements.len() > 1 => {
                let refused = Err(QueryError::Unsupported("a CALL must be a statement of its own".into()));
                self.begin(caller, &query, started, refused).await?
            }
            // Made once the call is audited as started; it answers with what it stored.
            Some(call) => {
                let (guard, answer) = self.call(caller, &query, started, call).await?;
                query = answer;
                guard
            }
            None => {
                let check = self.check_simple(caller.role, &query).await;
                self.begin(caller, &query, started, check).await?
            }
        };
        let query = query.as_str();
        // Until the rows stream, the protocol layer waits for a cancel request itself.
        let run = tokio::select! {
            result = SimpleQueryHandler::do_query(&*self.inner, client, query) => result,
            error = bounds.clone().stop(false) => Err(error),
        };
        match run {
            Ok(responses) => Ok(responses.into_iter().map(|r| audited(r, &guard, &bounds)).collect()),
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
        let started = Started::now();
        let caller = self.caller(client).map_err(|e| user_error(&e))?;
        let bounds = self.bounds(client);
        let (sql, parsed) = &portal.statement.statement;
        if parsed.is_none() {
            let params: Option<Vec<Option<String>>> = (portal.parameters.iter())
                .map(|p| p.as_ref().map(|b| String::from_utf8(b.to_vec())).transpose().ok())
                .collect();
            if let Some((text, call)) = crate::procedures::bound(sql, params.as_deref()) {
                // The extended protocol described no rows: the call answers with its tag, as PostgreSQL's does.
                let (_guard, _) = self.call(caller, &text, started, call).await?;
                return Ok(Response::Execution(pgwire::api::results::Tag::new("CALL")));
            }
        }
        if let Some(copy) = parsed.as_ref().and_then(|(statement, _)| crate::postgres::copy_out(statement)) {
            return self.copy_to_client(caller, sql, started, &bounds, copy).await;
        }
        if let (Role::Analyst, Some((statement, _))) = (caller.role, parsed) {
            if let Some(zone) = access::session_time_zone(statement) {
                let guard = self.begin(caller, sql, started, Ok(())).await?;
                return Ok(audited(set_time_zone(client, zone).await?, &guard, &bounds));
            }
        }
        let check = match parsed {
            Some((statement, _)) if access::is_session_statement(statement) => {
                self.check_session(caller.role, statement).await
            }
            Some((_, plan)) => access::check_plan(caller.role, plan),
            None => Ok(()),
        };
        let guard = self.begin(caller, sql, started, check).await?;
        let run = tokio::select! {
            result = ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows) => result,
            error = bounds.clone().stop(false) => Err(error),
        };
        match run {
            Ok(response) => Ok(audited(response, &guard, &bounds)),
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
        access::check_complexity(sql).map_err(|e| user_error(&e))?;
        // A procedure is not planned: it is bound and made at execution (`Service::do_query`).
        if crate::procedures::bind(sql, &[]).is_some() {
            return Ok(Some((sql.to_string(), None)));
        }
        self.inner.parse_sql(client, &client_sql(sql), types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        if let (sql, None) = stmt {
            return Ok(vec![Type::TEXT; crate::procedures::parameters(sql)]);
        }
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

/// Fixes what client drivers send that DataFusion and datafusion-pg-catalog would plan wrongly: a
/// composite's field access `(expr).field` (see [`crate::postgres::composite_field_access`]), and:
///
/// pgjdbc (DBeaver, every JDBC tool) asks `typinput='pg_catalog.array_in'::regproc` to tell array
/// types apart. datafusion-pg-catalog resolves a `'name'::regproc` to the function's oid, but keeps
/// `typinput` as the function's name, so the comparison casts `'array_in'` to an integer and fails.
/// Compared with one of those name columns, the cast becomes the bare function name.
pub fn client_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    match crate::postgres::composite_field_access(sql) {
        Some(rewritten) => std::borrow::Cow::Owned(regproc_names(&rewritten).into_owned()),
        None => regproc_names(sql),
    }
}

/// See [`client_sql`]: a `'name'::regproc` compared with a name column becomes the name.
fn regproc_names(sql: &str) -> std::borrow::Cow<'_, str> {
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

/// Serves the PostgreSQL protocol on `listener`, for the engine's users, until `shutdown` resolves. Open connections finish their
/// current statement; new ones are refused.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<QueryEngine>,
    options: PgOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = options.tls.as_ref().map(|t| t.acceptor());
    let admission = Arc::new(Admission::new(options.admission));
    let certificate = options.tls.as_ref().map(|t| t.certificate_pem.clone());
    let require_tls = options.tls.is_some() && !options.allow_plaintext;
    let users = engine.users().clone();
    let handlers = Arc::new(Handlers::new(engine, users, certificate, admission.clone(), require_tls));
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
        let Some(ticket) = admission.admit(addr) else {
            tracing::warn!(%addr, "PostgreSQL connection refused: too many logins under way");
            continue;
        };
        // A duplicate of the socket's descriptor, to see the client leave while a statement runs.
        let (socket, watched) = match duplicate(socket) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "PostgreSQL connection dropped: cannot duplicate its socket");
                admission.ended(addr);
                continue;
            }
        };
        let (handlers, acceptor, admission) = (handlers.clone(), acceptor.clone(), admission.clone());
        tokio::spawn(async move {
            let watcher = tokio::spawn({
                let ticket = ticket.clone();
                async move {
                    crate::admission::watch_peer(watched, std::time::Duration::from_millis(500)).await;
                    ticket.gone.send_replace(true);
                }
            });
            metrics().pg_connections.inc();
            let connection = pgwire::tokio::process_socket(socket, acceptor, handlers);
            tokio::pin!(connection);
            let startup_timeout = admission.limits().startup_timeout;
            let ended = tokio::select! {
                biased;
                result = &mut connection => Some(result),
                _ = ticket.authenticated.notified() => None,
                _ = ticket.evicted.notified() => {
                    tracing::info!(%addr, "PostgreSQL login closed: newer logins from the same address");
                    Some(Ok(()))
                }
                _ = tokio::time::sleep(startup_timeout) => {
                    tracing::info!(%addr, timeout_secs = startup_timeout.as_secs(), "PostgreSQL login closed: not finished in time");
                    Some(Ok(()))
                }
            };
            let result = match ended {
                Some(result) => result,
                None => connection.await,
            };
            if let Err(e) = result {
                tracing::debug!(%addr, error = %e, "PostgreSQL connection ended with an error");
            }
            watcher.abort();
            admission.ended(addr);
            metrics().pg_connections.dec();
        });
    }
}

/// The socket, and a duplicate of its descriptor for `admission::watch_peer`.
fn duplicate(socket: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let socket = socket.into_std()?;
    let watched = socket.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(socket)?, watched))
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
