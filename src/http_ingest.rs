//! `coldtrail ingest http://ADDR`: an HTTP endpoint for CloudWatch Logs subscription payloads, Firehose
//! HTTP deliveries, NDJSON and anything else the pipeline reads. `POST /ingest` with a bearer token;
//! the answer comes only after the rows are durable in the store.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ingest::{Format, Pipeline, Unit};
use store::Store;

/// Largest request body accepted (Firehose sends at most 64 MiB; CloudWatch payloads are at most 1 MiB).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

struct Endpoint {
    store: Arc<Store>,
    token: String,
    /// One pipeline for every request, so that invocation parts in different requests meet; held while
    /// a request's rows are stored, which also keeps appends in request order.
    pipeline: tokio::sync::Mutex<(Pipeline, u64)>,
}

#[derive(serde::Deserialize)]
struct IngestQuery {
    format: Option<String>,
    log_group: Option<String>,
}

/// The router, for `coldtrail ingest http://…` and for `serve`.
pub fn router(store: Arc<Store>, token: String) -> Router {
    let endpoint = Arc::new(Endpoint { store, token, pipeline: tokio::sync::Mutex::new((Pipeline::default(), 0)) });
    Router::new()
        .route("/ingest", post(ingest))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(endpoint)
}

/// Prometheus text exposition of the process's metrics.
async fn metrics() -> Response {
    let families = prometheus::gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn ingest(
    State(endpoint): State<Arc<Endpoint>>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-amz-firehose-access-key").and_then(|v| v.to_str().ok()));
    if !presented.is_some_and(|token| query::auth::constant_time_eq(token.as_bytes(), endpoint.token.as_bytes())) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let format = match query.format.as_deref().map(str::parse::<Format>).transpose() {
        Ok(format) => format.unwrap_or(Format::Auto),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let firehose_request = headers.get("x-amz-firehose-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut guard = endpoint.pipeline.lock().await;
    let (pipeline, requests) = &mut *guard;
    *requests += 1;
    let before = pipeline.stats.clone();
    let position = requests.to_string();
    pipeline.ingest(
        format,
        &body,
        &Unit { source: "http", position: &position, key: None, log_group: query.log_group.as_deref() },
    );
    let batches = pipeline.take_batches();
    let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
    let store = endpoint.store.clone();
    let stored = tokio::task::spawn_blocking(move || store.append(&batches, &[])).await;
    let after = &pipeline.stats;
    let summary = serde_json::json!({
        "rows": rows,
        "log_lines": after.log_lines - before.log_lines,
        "cloudtrail_events": after.cloudtrail_events - before.cloudtrail_events,
        "spans": after.spans - before.spans,
        "dead_letters": after.dead_letters_total() - before.dead_letters_total(),
    });
    match stored {
        Ok(Ok(_)) => match firehose_request {
            // Firehose's HTTP endpoint contract: echo the request id.
            Some(request_id) => {
                Json(serde_json::json!({"requestId": request_id, "timestamp": store::time::now_micros() / 1000}))
                    .into_response()
            }
            None => Json(summary).into_response(),
        },
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing an http ingest request failed");
            error(StatusCode::SERVICE_UNAVAILABLE, &format!("not stored: {e}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("bug: store task failed: {e}")),
    }
}

/// Serves until Ctrl-C or SIGTERM, then stores what is pending and flushes.
pub async fn serve(store: Arc<Store>, address: &str, token: String) -> anyhow::Result<()> {
    let address: SocketAddr = address.parse().with_context(|| format!("{address} is not an address:port"))?;
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
    outln!("listening on http://{}/ingest", listener.local_addr()?);
    axum::serve(listener, router(store.clone(), token)).with_graceful_shutdown(shutdown_signal()).await?;
    store.flush_all().await?;
    Ok(())
}

/// Ctrl-C, SIGTERM, or (for a command that asked for it) stdout closed by its reader.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = crate::stdout_closed() => {}
        _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
}
