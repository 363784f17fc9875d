//! The HTTP source: an endpoint for CloudWatch Logs subscription payloads, Firehose HTTP deliveries,
//! NDJSON and anything else the pipeline reads (`POST /ingest`), and an OTLP/HTTP receiver for
//! OpenTelemetry exporters (`POST /v1/traces`, `POST /v1/logs`, protobuf or JSON, gzip or not), all with
//! a bearer token (or Firehose's access key header). The answer comes only after the rows are durable in
//! the store, so a sender that got a 200 may forget what it sent, and one that got an error sends it
//! again. What cannot be decoded is stored as a dead letter and answered 400, which senders do not retry.
//! The token is checked before the body is read, so that an unauthenticated sender cannot make the server
//! hold its bytes, and decoding runs on the blocking pool, off the async workers.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

use crate::error::IngestError;
use crate::otlp::{self, Signal};
use crate::pipeline::{Format, Pipeline, Unit};
use crate::sink::StoreSink;

/// Largest request body accepted (Firehose sends at most 64 MiB; CloudWatch payloads are at most 1 MiB).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Shortest bearer token accepted.
pub const TOKEN_CHARS_MIN: usize = 16;

struct Endpoint {
    sink: StoreSink,
    token: String,
    /// One pipeline for every request, so that invocation parts in different requests meet; held while
    /// a request's rows are stored, which also keeps appends in request order (so an async mutex).
    pipeline: Arc<tokio::sync::Mutex<(Pipeline, u64)>>,
}

#[derive(serde::Deserialize)]
struct IngestQuery {
    format: Option<String>,
    log_group: Option<String>,
}

/// The routes: `POST /ingest`, `GET /healthz`, and `GET /metrics` (the process's Prometheus metrics).
///
/// # Errors
/// A token shorter than `TOKEN_CHARS_MIN` characters is refused.
pub fn router(sink: StoreSink, token: String) -> Result<Router, IngestError> {
    if token.chars().count() < TOKEN_CHARS_MIN {
        return Err(IngestError::Config(format!("the ingest token must have at least {TOKEN_CHARS_MIN} characters")));
    }
    let endpoint =
        Arc::new(Endpoint { sink, token, pipeline: Arc::new(tokio::sync::Mutex::new((Pipeline::default(), 0))) });
    Ok(Router::new()
        .route("/ingest", post(ingest))
        .route(
            "/v1/traces",
            post(|s: State<Arc<Endpoint>>, h: HeaderMap, b: axum::body::Body| otlp_export(s, h, b, Signal::Traces)),
        )
        .route(
            "/v1/logs",
            post(|s: State<Arc<Endpoint>>, h: HeaderMap, b: axum::body::Body| otlp_export(s, h, b, Signal::Logs)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(endpoint))
}

/// Serves the routes on `listener` until `shutdown` completes; requests under way finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sink: StoreSink,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    let router = router(sink, token)?;
    let address = listener.local_addr().map_or_else(|_| "the http listener".to_string(), |a| a.to_string());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| IngestError::Listen { address, source: e })
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

/// Whether the request carries the endpoint's token.
fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-amz-firehose-access-key").and_then(|v| v.to_str().ok()));
    presented.is_some_and(|presented| store::secret::constant_time_eq(presented.as_bytes(), token.as_bytes()))
}

/// Reads a request's body once its token was checked: an unauthenticated sender cannot make the
/// server hold its bytes. Past `BODY_BYTES_MAX` the request is refused with 413.
async fn read_body(body: axum::body::Body) -> Result<Bytes, StatusCode> {
    axum::body::to_bytes(body, BODY_BYTES_MAX).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        }
    })
}

/// Runs `work` on the shared pipeline on the blocking pool (decoding is CPU work, off the async
/// workers), the pipeline held until the caller has stored what `work` returns, so that requests are
/// stored in the order they were decoded.
async fn decode<T: Send + 'static>(
    endpoint: &Endpoint,
    work: impl FnOnce(&mut Pipeline, u64) -> T + Send + 'static,
) -> Result<(tokio::sync::OwnedMutexGuard<(Pipeline, u64)>, T), StatusCode> {
    let mut guard = endpoint.pipeline.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let (pipeline, requests) = &mut *guard;
        *requests += 1;
        let out = work(pipeline, *requests);
        (guard, out)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// An OTLP/HTTP export request: decoded, its spans or log records stored, and answered as the OTLP
/// specification says (200 with a partial success naming what was rejected; 400 for a body that cannot
/// be decoded, stored as a dead letter; 415 for another content type; 503, to retry, when storing failed).
async fn otlp_export(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: axum::body::Body,
    signal: Signal,
) -> Response {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let protobuf = match content_type.split(';').next().unwrap_or_default().trim() {
        "application/x-protobuf" | "application/protobuf" => true,
        "application/json" => false,
        other => {
            let message = format!("content type {other:?}: send application/x-protobuf or application/json");
            return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, otlp::status(3, &message, false), false);
        }
    };
    if !authorised(&headers, &endpoint.token) {
        return answer(StatusCode::UNAUTHORIZED, otlp::status(16, "missing or wrong bearer token", protobuf), protobuf);
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(status) => return answer(status, otlp::status(8, "the body is too large or broken", protobuf), protobuf),
    };
    let gzipped =
        headers.get("content-encoding").and_then(|v| v.to_str().ok()).is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let source = match signal {
        Signal::Traces => "otlp:traces",
        Signal::Logs => "otlp:logs",
    };
    let decoded = decode(&endpoint, move |pipeline, request| {
        let plain = if gzipped { crate::pipeline::gunzip(&body) } else { Ok(body.to_vec()) };
        let decoded = plain.and_then(|plain| match protobuf {
            true => otlp::protobuf_to_json(signal, &plain).map(|json| json.to_string().into_bytes()),
            false => serde_json::from_slice::<serde::de::IgnoredAny>(&plain)
                .map(|_| plain)
                .map_err(|e| format!("not JSON: {e}")),
        });
        let position = request.to_string();
        let before = pipeline.stats.dead_letters_total();
        let refused = match &decoded {
            Ok(json) => {
                pipeline.ingest(Format::Otlp, json, &Unit { source, position: &position, key: None, log_group: None });
                None
            }
            Err(message) => {
                pipeline.dead_letter("bad_otlp", message, &body, source, &position);
                Some(message.clone())
            }
        };
        (refused, pipeline.stats.dead_letters_total() - before, pipeline.take_batches())
    })
    .await;
    let (_guard, (refused, rejected, batches)) = match decoded {
        Ok(decoded) => decoded,
        Err(status) => return answer(status, otlp::status(13, "decoding failed", protobuf), protobuf),
    };
    if let Err(e) = endpoint.sink.append(batches, Vec::new(), Vec::new()).await {
        tracing::error!(error = %e, "storing an OTLP export request failed");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            otlp::status(14, &format!("not stored: {e}"), protobuf),
            protobuf,
        );
    }
    match refused {
        Some(message) => answer(StatusCode::BAD_REQUEST, otlp::status(3, &message, protobuf), protobuf),
        None => {
            let why = "kept as dead letters: see the dead_letters table";
            answer(StatusCode::OK, otlp::response(signal, protobuf, rejected, why), protobuf)
        }
    }
}

fn answer(status: StatusCode, body: Vec<u8>, protobuf: bool) -> Response {
    let content_type = if protobuf { "application/x-protobuf" } else { "application/json" };
    (status, [("content-type", content_type)], body).into_response()
}

async fn ingest(
    State(endpoint): State<Arc<Endpoint>>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !authorised(&headers, &endpoint.token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(status) => return error(status, &format!("the body is broken or over {BODY_BYTES_MAX} bytes")),
    };
    let format = match query.format.as_deref().map(str::parse::<Format>).transpose() {
        Ok(format) => format.unwrap_or(Format::Auto),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let firehose_request = headers.get("x-amz-firehose-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let log_group = query.log_group;
    let decoded = decode(&endpoint, move |pipeline, request| {
        let before = pipeline.stats.clone();
        let position = request.to_string();
        let unit = Unit { source: "http", position: &position, key: None, log_group: log_group.as_deref() };
        pipeline.ingest(format, &body, &unit);
        (before, pipeline.take_batches())
    })
    .await;
    let (guard, (before, batches)) = match decoded {
        Ok(decoded) => decoded,
        Err(status) => return error(status, "decoding failed"),
    };
    let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
    let stored = endpoint.sink.append(batches, Vec::new(), Vec::new()).await;
    let after = &guard.0.stats;
    let summary = serde_json::json!({
        "rows": rows,
        "log_lines": after.log_lines - before.log_lines,
        "cloudtrail_events": after.cloudtrail_events - before.cloudtrail_events,
        "spans": after.spans - before.spans,
        "dead_letters": after.dead_letters_total() - before.dead_letters_total(),
    });
    match stored {
        Ok(_) => match firehose_request {
            // Firehose's HTTP endpoint contract: echo the request id.
            Some(request_id) => {
                Json(serde_json::json!({"requestId": request_id, "timestamp": store::time::now_micros() / 1000}))
                    .into_response()
            }
            None => Json(summary).into_response(),
        },
        Err(e) => {
            tracing::error!(error = %e, "storing an http ingest request failed");
            error(StatusCode::SERVICE_UNAVAILABLE, &format!("not stored: {e}"))
        }
    }
}
