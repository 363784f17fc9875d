//! `coldtrail ingest http://…` with a real HTTP client: bearer token, answers after durable storage,
//! bad bodies kept as dead letters, oversized bodies refused, everything stored after a SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use store::{Store, StoreConfig, Table};

const TOKEN: &str = "a-long-enough-test-token";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_payloads_posted_with_the_token_are_stored_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .args(["--data", dir.path().to_str().unwrap(), "ingest", "http://127.0.0.1:0"])
        .env("COLDTRAIL_INGEST_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let client = reqwest::Client::new();

    let payload = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "/aws/lambda/orders", "logStream": "s1",
        "subscriptionFilters": ["f"], "logEvents": [
            {"id": "1", "timestamp": 1709632800000i64, "message": "START RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95 Version: 1"},
            {"id": "2", "timestamp": 1709632800050i64, "message": "REPORT RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95\tDuration: 5.00 ms\tBilled Duration: 5 ms\tMemory Size: 128 MB\tMax Memory Used: 50 MB"}]});
    let body = gzip(payload.to_string().as_bytes());

    let anonymous = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // Issue 18, item 8: the token is checked before the body is read. A sender that announces 50 MB
    // and sends none of it gets its 401 at once, for /ingest and for OTLP.
    let address = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    for path in ["/ingest", "/v1/traces"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{{"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer)).await;
        let read = read.unwrap_or_else(|_| panic!("{path}: no answer before the body was sent")).unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]).to_string();
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
    }
    let wrong = client.post(&url).bearer_auth("a-long-enough-wrong-token").body(body.clone()).send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let accepted = client.post(&url).bearer_auth(TOKEN).body(body).send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    let summary: serde_json::Value = accepted.json().await.unwrap();
    assert_eq!(summary["log_lines"], 2);
    assert_eq!(summary["rows"], 3, "two log rows and the invocation: {summary}");

    let ndjson = "{\"eventTime\":\"2024-03-05T10:00:00Z\",\"eventSource\":\"lambda.amazonaws.com\",\"eventName\":\"GetFunction\"}\n{\"broken\": \n";
    let mixed = client.post(&url).bearer_auth(TOKEN).body(ndjson).send().await.unwrap();
    let summary: serde_json::Value = mixed.json().await.unwrap();
    assert_eq!(
        (summary["cloudtrail_events"].as_u64(), summary["dead_letters"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );

    let bad_format = client.post(format!("{url}?format=nope")).bearer_auth(TOKEN).body("x").send().await.unwrap();
    assert_eq!(bad_format.status(), 400);
    let huge = client.post(&url).bearer_auth(TOKEN).body(vec![b'x'; 65 * 1024 * 1024]).send().await;
    assert!(huge.map(|r| r.status() == 413).unwrap_or(true), "an oversized body is refused");

    let firehose = client
        .post(&url)
        .header("x-amz-firehose-access-key", TOKEN)
        .header("x-amz-firehose-request-id", "req-1")
        .body(serde_json::json!({"requestId": "req-1", "timestamp": 1, "records": []}).to_string())
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = firehose.json().await.unwrap();
    assert_eq!(answer["requestId"], "req-1");

    // OTLP/JSON: one good span and one without its trace id, which is kept as a dead letter and named
    // in the partial success.
    let otlp = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "faas.name", "value": {"stringValue": "orders"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "5759E988BD862E3FE1BE46A994272793", "spanId": "53995C3F42CD8AD8", "name": "handler", "kind": 2,
             "startTimeUnixNano": "1709632800000000000", "endTimeUnixNano": "1709632800100000000"},
            {"spanId": "0000000000000001", "name": "broken", "startTimeUnixNano": "1709632800000000000"}]}]}]});
    let traces = url.replace("/ingest", "/v1/traces");
    let answer = client.post(&traces).bearer_auth(TOKEN).json(&otlp).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    let unauthorised = client.post(&traces).json(&otlp).send().await.unwrap();
    assert_eq!(unauthorised.status(), 401);
    let wrong_type = client.post(&traces).bearer_auth(TOKEN).body("x").send().await.unwrap();
    assert_eq!(wrong_type.status(), 415);

    let metrics = client.get(url.replace("/ingest", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("ingest_dead_letters_total{reason=\"malformed_json\"} 1")
            || metrics.contains("ingest_dead_letters_total{reason=\"truncated_json\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ingest_records_total{kind=\"log_line\"} 2"), "{metrics}");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "SIGTERM shuts down cleanly");
    let store = Store::open(StoreConfig::new(dir.path())).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats[&Table::Logs].segment_rows, 2);
    assert_eq!(stats[&Table::Invocations].segment_rows, 1);
    assert_eq!(stats[&Table::Cloudtrail].segment_rows, 1);
    assert_eq!(stats[&Table::Spans].segment_rows, 1);
    assert_eq!(stats[&Table::DeadLetters].segment_rows, 2, "the broken NDJSON line and the span without a trace id");
}
