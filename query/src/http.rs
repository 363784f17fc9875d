//! The HTTP API.
//!
//! - `POST /api/v1/sql`: the body is the SQL text, or JSON `{"sql": "...", "format": "json"}`; the result
//!   is JSON (default), CSV or Arrow IPC stream, chosen by `?format=json|csv|arrow` or by `Accept`
//!   (`application/json`, `text/csv`, `application/vnd.apache.arrow.stream`).
//! - `GET /api/v1/timeline?key=K[&from=T&to=T][&format=...]`: `timeline(K, from, to)`.
//! - `GET /healthz`, `GET /metrics` (Prometheus text), both without authentication.
//! - The web console (`crate::console`) at `/console/`, `/` redirecting there; `GET /api/v1/session` (the
//!   console's user, role and CSRF token); `GET /api/v1/history` (the caller's own last statements);
//!   `GET /api/v1/admin/users` and `GET /api/v1/admin/suppressions` (admins only; suppressions are
//!   changed with `CALL suppress(...)`, `CALL unsuppress(id)`).
//!
//! Every other route needs `Authorization: Bearer <token>` or `Basic` with a user's password, or the
//! console's session cookie (with its CSRF token on every `POST`). A password
//! check costs the same for unknown names, runs off the async workers, and an address with ten failed
//! password logins in a minute is answered 429 (with `Retry-After`) until the minute ends.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;

use crate::auth::{Role, Users};
use crate::console::Sessions;
use crate::engine::{Caller, QueryEngine, QueryOutput, Started};
use crate::error::QueryError;
use crate::forensics::quote;
use crate::metrics::metrics;
use crate::results::ResultEncoder;

/// Largest request body (SQL text) accepted.
pub const BODY_MAX: usize = 1024 * 1024;

#[derive(Clone)]
struct AppState {
    engine: Arc<QueryEngine>,
    users: Users,
    failures: Arc<Failures>,
    sessions: Arc<Sessions>,
    /// Served over TLS: session cookies are `Secure`.
    tls: bool,
}

/// Failed password logins per address (bearer tokens are 128-bit random and never limited): past
/// `FAILURES_MAX` within `FAILURE_WINDOW`, the address's password logins are refused unchecked until the
/// window ends, so passwords cannot be guessed at the speed of the key derivation.
#[derive(Default)]
struct Failures {
    by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

const FAILURES_MAX: u32 = 10;
const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Addresses remembered at most (the oldest windows are dropped first).
const FAILURE_ADDRESSES_MAX: usize = 100_000;

impl Failures {
    /// `Err(seconds)` while the address is locked out.
    fn check(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        let by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        match by_address.get(&ip) {
            Some((count, since)) if *count >= FAILURES_MAX && since.elapsed() < FAILURE_WINDOW => {
                Err((FAILURE_WINDOW - since.elapsed()).as_secs() + 1)
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, ip: std::net::IpAddr) {
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if by_address.len() >= FAILURE_ADDRESSES_MAX {
            by_address.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = by_address.entry(ip).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 += 1;
    }
}

/// The client's address, for the audit.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// The API's and the console's routes (`tls`: they are served over TLS). Serve them with
/// `into_make_service_with_connect_info::<ClientAddr>()` so that the audit records client addresses.
pub fn router(engine: Arc<QueryEngine>, tls: bool) -> Router {
    let users = engine.users().clone();
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/timeline", get(timeline))
        .route("/api/v1/session", get(session))
        .route("/api/v1/admin/{what}", get(admin_data))
        .route("/api/v1/history", get(history))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/", get(|| async { axum::response::Redirect::to("/console/") }))
        .route("/console", get(|| async { axum::response::Redirect::to("/console/") }))
        .route("/console/", get(console_page))
        .route("/console/{name}", get(console_page))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .layer(DefaultBodyLimit::max(BODY_MAX))
        .layer(axum::middleware::map_response(|mut response: Response| async move {
            crate::console::secure_headers(&mut response);
            response
        }))
        .with_state(AppState { engine, users, failures: Arc::default(), sessions: Arc::default(), tls })
}

async fn console_page(
    State(state): State<AppState>,
    name: Option<axum::extract::Path<String>>,
    headers: HeaderMap,
) -> Response {
    let name = name.map(|axum::extract::Path(n)| n).unwrap_or_default();
    crate::console::page(&name, live_session(&state, &headers).as_ref())
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if let Err(seconds) = state.failures.check(addr.ip()) {
        return error_response(&QueryError::RateLimited(seconds));
    }
    let users = state.users.clone();
    let LoginForm { user, password } = form;
    let checked = tokio::task::spawn_blocking(move || users.check_password(&user, &password).map(|r| (user, r))).await;
    let token = match checked {
        Ok(Some((user, role))) => state.sessions.start(&user, role),
        _ => {
            state.failures.failed(addr.ip());
            metrics().auth_failures.with_label_values(&["console"]).inc();
            None
        }
    };
    crate::console::logged_in(token, state.tls)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.sessions.of(&headers) {
        Some(session) if crate::console::csrf_ok(&session, &headers) => {
            state.sessions.end(&headers);
            crate::console::logged_out(state.tls)
        }
        Some(_) => error_response(&QueryError::Denied("the request lacks its CSRF token".into())),
        None => crate::console::logged_out(state.tls),
    }
}

/// The request's console session with its user's role now; a session whose user was dropped ends.
fn live_session(state: &AppState, headers: &HeaderMap) -> Option<crate::console::Session> {
    let mut session = state.sessions.of(headers)?;
    match state.users.role(&session.user) {
        Some(role) => {
            session.role = role;
            Some(session)
        }
        None => {
            state.sessions.end(headers);
            None
        }
    }
}

async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match live_session(&state, &headers) {
        Some(s) => {
            axum::Json(serde_json::json!({"user": s.user, "role": s.role.name(), "csrf": s.csrf})).into_response()
        }
        None => error_response(&QueryError::Unauthenticated("log in to the console first".into())),
    }
}

/// The caller's own last statements from `query_audit` (which analysts may not read whole): the
/// console's workbench history. The server filters by the caller's name.
async fn history(
    State(state): State<AppState>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&state, &headers, addr, false).await {
        Ok(caller) => caller,
        Err(e) => return error_response(&e),
    };
    let sql = format!(
        "SELECT ts, CAST(status AS VARCHAR) AS status, rows, round(duration_ms, 1) AS ms, sql FROM query_audit
         WHERE user_name = {} AND status <> 'started' ORDER BY ts DESC LIMIT 25",
        quote(&caller.user)
    );
    let started = Started::now();
    let result = async {
        let df = state.engine.context().sql(&sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        Ok::<_, QueryError>(QueryOutput { schema, batches, rows, elapsed: started.elapsed() })
    };
    match result
        .await
        .and_then(|output| encode(&output, Format::Json).map_err(|e| QueryError::BadRequest(e.to_string())))
    {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Admins only: `users` (names and roles) and `suppressions` (those added at run time).
async fn admin_data(
    State(state): State<AppState>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    axum::extract::Path(what): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match authenticate(&state, &headers, addr, false).await {
        Ok(caller) if caller.role == Role::Admin => {}
        Ok(_) => return error_response(&QueryError::Denied("admins only".into())),
        Err(e) => return error_response(&e),
    }
    match what.as_str() {
        "users" => {
            let users: Vec<serde_json::Value> = (state.users.names().into_iter())
                .map(|name| {
                    let (role, configured) = (state.users.role(&name).map(Role::name), state.users.is_configured(&name));
                    serde_json::json!({"name": name, "role": role, "source": if configured { "configuration" } else { "added" }})
                })
                .collect();
            axum::Json(serde_json::json!({ "users": users })).into_response()
        }
        "suppressions" => match store::suppressions::read(state.engine.store().location()).await {
            Ok(list) => axum::Json(serde_json::json!({ "suppressions": list })).into_response(),
            Err(e) => error_response(&QueryError::Store(e)),
        },
        _ => (StatusCode::NOT_FOUND, "no such admin resource").into_response(),
    }
}

pub use crate::results::Format;

fn format_from_accept(headers: &HeaderMap) -> Format {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept
        .split(',')
        .filter_map(|part| Format::parse(part.split(';').next().unwrap_or("")))
        .next()
        .unwrap_or(Format::Json)
}

fn error_response(e: &QueryError) -> Response {
    let status = match e {
        QueryError::Denied(_) => StatusCode::FORBIDDEN,
        QueryError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        QueryError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::TooLarge(_) | QueryError::ResultTooBig(_) => StatusCode::PAYLOAD_TOO_LARGE,
        QueryError::BadRequest(_) | QueryError::Unsupported(_) => StatusCode::BAD_REQUEST,
        e if matches!(e.kind(), "plan") => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = serde_json::json!({ "error": e.to_string(), "kind": e.kind(), "sqlstate": e.sqlstate() });
    let mut response = (status, axum::Json(body)).into_response();
    if let QueryError::RateLimited(seconds) = e {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"coldtrail\", Basic realm=\"coldtrail\""),
        );
    }
    response
}

/// The caller of a request: its `Authorization`, else its console session (whose `changes` requests
/// must carry the CSRF token).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    addr: SocketAddr,
    changes: bool,
) -> Result<Caller, QueryError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if value.is_empty() {
        if let Some(session) = live_session(state, headers) {
            if changes && !crate::console::csrf_ok(&session, headers) {
                return Err(QueryError::Denied("the request lacks its CSRF token".into()));
            }
            return Ok(Caller {
                user: session.user,
                role: session.role,
                client_addr: addr.to_string(),
                protocol: "console",
            });
        }
    }
    let caller = |user: String, role| Caller { user, role, client_addr: addr.to_string(), protocol: "http" };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let result = if scheme.eq_ignore_ascii_case("bearer") {
        state.users.check_token(credentials.trim()).map(|(user, role)| caller(user, role))
    } else if scheme.eq_ignore_ascii_case("basic") {
        state.failures.check(addr.ip()).map_err(QueryError::RateLimited)?;
        let pair = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .unwrap_or_default();
        let (user, password) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
        let (user, password) = (user.to_string(), password.to_string());
        // The key derivation (the same for unknown names) runs off the async workers.
        let users = state.users.clone();
        let checked = tokio::task::spawn_blocking(move || users.check_password(&user, &password).map(|r| (user, r)))
            .await
            .map_err(|e| QueryError::BadRequest(format!("the password check failed: {e}")))?;
        if checked.is_none() {
            state.failures.failed(addr.ip());
        }
        checked.map(|(user, role)| caller(user, role))
    } else {
        None
    };
    result.ok_or_else(|| {
        metrics().auth_failures.with_label_values(&["http"]).inc();
        QueryError::Unauthenticated(if value.is_empty() {
            "send Authorization: Bearer <token> or Basic credentials".into()
        } else {
            "unknown user, wrong password or token".into()
        })
    })
}

#[derive(Deserialize)]
struct FormatParam {
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
    format: Option<String>,
}

fn choose_format(explicit: Option<&str>, headers: &HeaderMap) -> Result<Format, QueryError> {
    match explicit {
        Some(f) => Format::parse(f)
            .ok_or_else(|| QueryError::BadRequest(format!("unknown format {f:?}; use json, csv or arrow"))),
        None => Ok(format_from_accept(headers)),
    }
}

async fn sql(
    State(state): State<AppState>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    Query(param): Query<FormatParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authenticate(&state, &headers, addr, true).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (text, body_format) = if is_json {
        match serde_json::from_slice::<SqlBody>(&body) {
            Ok(b) => (b.sql, b.format),
            Err(e) => {
                return error_response(&QueryError::BadRequest(format!(
                    "the JSON body must be {{\"sql\": \"...\"}}: {e}"
                )))
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(t) => (t, None),
            Err(_) => return error_response(&QueryError::BadRequest("the SQL text is not UTF-8".into())),
        }
    };
    let format = match choose_format(param.format.as_deref().or(body_format.as_deref()), &headers) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    run(&state, &caller, &text, format).await
}

#[derive(Deserialize)]
struct TimelineParams {
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    limit: Option<usize>,
}

async fn timeline(
    State(state): State<AppState>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    Query(params): Query<TimelineParams>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&state, &headers, addr, false).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let Some(key) = params.key.filter(|k| !k.is_empty()) else {
        return error_response(&QueryError::BadRequest("the key parameter is required".into()));
    };
    let format = match choose_format(params.format.as_deref(), &headers) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let bound = |b: Option<String>| b.map_or("NULL".to_string(), |t| format!("CAST({} AS TIMESTAMP)", quote(&t)));
    let mut sql = format!("SELECT * FROM timeline({}, {}, {})", quote(&key), bound(params.from), bound(params.to));
    if let Some(limit) = params.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    run(&state, &caller, &sql, format).await
}

/// What the first part of a streamed result waits for before the response's status is chosen: an
/// error in a result smaller than this (most of them) is answered with its own status.
const FIRST_CHUNK_BYTES: usize = 64 * 1024;

async fn run(state: &AppState, caller: &Caller, sql: &str, format: Format) -> Response {
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (body_tx, body_rx) = tokio::sync::mpsc::channel(2);
    // The statement runs in a task of its own, so that it ends (audited) however the response ends.
    tokio::spawn(stream_result(state.engine.clone(), caller.clone(), sql.to_string(), format, head_tx, body_tx));
    match head_rx.await {
        Ok(Ok(())) => {
            // The body ends cleanly only after `Chunk::End`: a statement that stopped before it (an
            // error, the timeout) cuts the response, so that no client takes it for a whole result.
            let chunks = futures::stream::unfold(Some(body_rx), |rx| async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some(Chunk::Data(bytes)) => Some((Ok(bytes), Some(rx))),
                    Some(Chunk::End) => None,
                    None => {
                        // Pending a moment first, so that hyper flushes what came before (the error
                        // trailer) before it cuts the connection.
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Some((Err(std::io::Error::other("the result was cut short")), None))
                    }
                }
            });
            let body = axum::body::Body::from_stream(chunks);
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Ok(Err(e)) => error_response(&e),
        Err(_) => error_response(&QueryError::BadRequest("the statement ended without a result".into())),
    }
}

enum Chunk {
    Data(Bytes),
    /// The result is whole.
    End,
}

/// How long a cut result waits to hand its error trailer to a client that does not read.
const TRAILER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs one statement and streams its result in `format` to `body`, a chunk at a time, within the
/// statement timeout and the result caps (`Limits`), holding one batch and two chunks at most. The
/// response's status waits on `head`: `Ok` once the first chunk is ready, or the error if the statement
/// failed before. An error after that is written into the result where the format has room for it
/// (`ResultEncoder::error_trailer`) and cuts the response. A client that goes away cancels the
/// statement; one that stops reading holds it until its timeout.
async fn stream_result(
    engine: Arc<QueryEngine>,
    caller: Caller,
    sql: String,
    format: Format,
    head: tokio::sync::oneshot::Sender<Result<(), QueryError>>,
    body: tokio::sync::mpsc::Sender<Chunk>,
) {
    let started = Started::now();
    let limits = engine.limits().clone();
    let mut head = Some(head);
    let mut encoder: Option<ResultEncoder> = None;
    let mut rows = 0usize;
    let gone = || QueryError::Cancelled("the client went away".into());
    let work = async {
        let mut running = engine.open(&caller, &sql, started).await?;
        let mut out = Vec::with_capacity(FIRST_CHUNK_BYTES);
        let arrow = |e: arrow::error::ArrowError| QueryError::BadRequest(format!("the result cannot be written: {e}"));
        encoder = Some(ResultEncoder::begin(format, running.schema.clone(), &mut out).map_err(arrow)?);
        let mut sent = 0usize;
        loop {
            let next = running.stream.next().await.transpose()?;
            let last = next.is_none();
            match next {
                Some(batch) => {
                    rows += batch.num_rows();
                    if rows > limits.max_result_rows {
                        return Err(QueryError::TooLarge(limits.max_result_rows));
                    }
                    encoder.as_mut().expect("set above").write(&batch, &mut out).map_err(arrow)?;
                }
                None => encoder.take().expect("set above").finish(started.elapsed(), &mut out).map_err(arrow)?,
            }
            if out.len() >= FIRST_CHUNK_BYTES || last {
                sent += out.len();
                if sent > limits.max_result_bytes {
                    return Err(QueryError::ResultTooBig(limits.max_result_bytes));
                }
                if let Some(head) = head.take() {
                    head.send(Ok(())).map_err(|_| gone())?;
                }
                body.send(Chunk::Data(Bytes::from(std::mem::take(&mut out)))).await.map_err(|_| gone())?;
            }
            if last {
                return body.send(Chunk::End).await.map_err(|_| gone());
            }
        }
    };
    let result = match tokio::time::timeout(limits.statement_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(QueryError::Timeout(limits.statement_timeout)),
    };
    engine.finish(&caller, &sql, started, rows as u64, result.as_ref().map(|_| ()));
    let Err(error) = result else { return };
    match head.take() {
        Some(head) => {
            let _ = head.send(Err(error));
        }
        None => {
            if let Some(trailer) = encoder.as_ref().and_then(|e| e.error_trailer(&error)) {
                let _ = tokio::time::timeout(TRAILER_WAIT, body.send(Chunk::Data(Bytes::from(trailer)))).await;
            }
        }
    }
}

/// Encodes a whole result in `format` (the CLI's output).
pub fn encode(output: &QueryOutput, format: Format) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut encoder = ResultEncoder::begin(format, output.schema.clone(), &mut out)?;
    for batch in &output.batches {
        encoder.write(batch, &mut out)?;
    }
    encoder.finish(output.elapsed, &mut out)?;
    Ok(out)
}

async fn healthz(State(state): State<AppState>) -> Response {
    let head = state.engine.store().ledger_head();
    axum::Json(serde_json::json!({
        "status": "ok",
        "node": state.engine.store().node_id(),
        "ledger_seq": head.seq,
    }))
    .into_response()
}

async fn metrics_text() -> Response {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A listener that completes TLS handshakes off the accept loop, so a slow client delays nobody else.
pub struct TlsListener {
    receiver: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (socket, addr) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { receiver, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(pair) => pair,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves the API on `listener` (TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<QueryEngine>,
    tls: Option<crate::tls::TlsSettings>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(engine, tls.is_some()).into_make_service_with_connect_info::<ClientAddr>();
    match tls {
        Some(tls) => {
            let listener = TlsListener::new(listener, tls.for_http().acceptor())?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    }
}
