//! Alerts per second through the outbox to a local webhook receiver, and delivery latency (from the
//! alert's append to the store to its arrival at the receiver, signature checked).
//!
//! `cargo bench -p coldtrail-alerting --bench outbox` (env `ALERTS`, default 20,000; `RATE`, alerts per
//! second offered, default as fast as the store takes them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alerting::{verify, AlertingConfig, DestinationConfig, Outbox, SIGNATURE_HEADER};
use axum::http::{HeaderMap, StatusCode};
use store::rows::{TableBuilder, Value};
use store::{Store, StoreConfig, Table};

const SECRET: &[u8] = b"bench-secret";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("ALERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rate: Option<f64> = std::env::var("RATE").ok().and_then(|v| v.parse().ok());
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let arrived = arrived.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let arrived = arrived.clone();
                async move {
                    let header = headers.get(SIGNATURE_HEADER).and_then(|h| h.to_str().ok()).unwrap_or_default();
                    if verify(SECRET, header, &body, chrono::Utc::now().timestamp(), 300).is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let alert: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    arrived.lock().unwrap().insert(alert["id"].as_str().unwrap().to_string(), Instant::now());
                    StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let mut destination = DestinationConfig::webhook(&url);
    destination.secret = Some(String::from_utf8(SECRET.to_vec()).unwrap());
    destination.rate_per_second = 1e6;
    let config = AlertingConfig { destinations: vec![destination], ..AlertingConfig::default() };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let outbox = Outbox::new(store.clone(), config).start(stop_rx);

    // Alerts arrive as detectors store them: batches of 50.
    let mut appended: HashMap<String, Instant> = HashMap::with_capacity(n);
    let started = Instant::now();
    for chunk in 0..n.div_ceil(50) {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(chunk as f64 * 50.0 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut builder = TableBuilder::new(Table::Alerts);
        let now = store::time::now_micros();
        let ids: Vec<String> = (chunk * 50..((chunk + 1) * 50).min(n)).map(|i| format!("bench-{i:06}")).collect();
        for id in &ids {
            builder.push(&[
                Value::Time(Some(now)),
                Value::Text(Some(id)),
                Value::Text(Some("injection.sql")),
                Value::Text(Some("medium")),
                Value::Text(Some("SQL injection in function input: sql.union_select in queryStringParameters.q")),
                Value::Text(Some("orders-api")),
                Value::Text(Some("orders-api")),
                Value::Time(Some(now)),
                Value::Time(Some(now)),
                Value::Float(Some(0.7)),
                Value::Int(Some(1)),
                Value::Time(Some(now)),
                Value::Time(Some(now)),
                Value::Text(Some("{\"field\":\"queryStringParameters.q\"}")),
                Value::Text(Some("{}")),
                Value::Text(Some("[\"r\"]")),
                Value::Text(Some("[\"T1190\"]")),
                Value::Text(Some("SELECT * FROM timeline('r')")),
            ]);
        }
        let batch = builder.finish().unwrap();
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.append(&[(Table::Alerts, batch)], &[]).unwrap()).await.unwrap();
        let at = Instant::now();
        for id in ids {
            appended.insert(id, at);
        }
    }
    while arrived.lock().unwrap().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {n} delivered",
            arrived.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    outbox.await.unwrap().unwrap();
    let arrived = arrived.lock().unwrap();
    let mut latencies: Vec<f64> =
        appended.iter().map(|(id, at)| arrived[id].duration_since(*at).as_secs_f64() * 1e3).collect();
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!("offered {}", rate.map_or("as fast as stored".to_string(), |r| format!("{r:.0} alerts/s")));
    println!("alerts {n}  elapsed {elapsed:.2} s  throughput {:.0} alerts/s", n as f64 / elapsed);
    println!("delivery latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}", q(0.5), q(0.9), q(0.99), q(1.0));
}
