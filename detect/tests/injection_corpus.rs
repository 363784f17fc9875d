//! The injection corpus (`bench/injection_corpus.py` writes it): recall per class over classic and evasive
//! attack payloads, and false positives over benign API traffic. The aims are recall ≥ 95% per class and
//! false positives ≤ 0.5%.

use std::collections::BTreeMap;

use detect::security::injection::{Class, InjectionMatcher};

fn lines(name: &str) -> Vec<serde_json::Value> {
    let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/data/injection")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn recall_and_false_positives_per_class_meet_the_aims() {
    let matcher = InjectionMatcher::new();
    let attacks = lines("attacks.jsonl");
    let benign = lines("benign.jsonl");
    assert!(attacks.len() >= 200 && benign.len() >= 500, "{} attacks, {} benign", attacks.len(), benign.len());
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for attack in &attacks {
        let class = Class::from_name(attack["class"].as_str().unwrap()).unwrap();
        let hits = matcher.scan_payload(attack["payload"].as_str().unwrap());
        let entry = per_class.entry(class.name()).or_default();
        entry.1 += 1;
        if hits.iter().any(|h| h.class == class) {
            entry.0 += 1;
        } else {
            misses.push(format!("{} {}: {}", class.name(), attack["form"], attack["payload"]));
        }
    }
    let mut false_positives: BTreeMap<&str, usize> = BTreeMap::new();
    let mut flagged = Vec::new();
    for item in &benign {
        let hits = matcher.scan_payload(item["payload"].as_str().unwrap());
        for hit in &hits {
            *false_positives.entry(hit.class.name()).or_default() += 1;
        }
        if !hits.is_empty() {
            flagged.push(format!("{hits:?} in {}", item["payload"]));
        }
    }
    println!("| class | attacks | detected | recall | false positives (of {}) |", benign.len());
    println!("|---|---:|---:|---:|---:|");
    for (class, (found, total)) in &per_class {
        let fp = false_positives.get(class).copied().unwrap_or(0);
        println!(
            "| {class} | {total} | {found} | {:.1}% | {fp} ({:.2}%) |",
            100.0 * *found as f64 / *total as f64,
            100.0 * fp as f64 / benign.len() as f64
        );
    }
    let found: usize = per_class.values().map(|v| v.0).sum();
    println!(
        "| all | {} | {found} | {:.1}% | {} ({:.2}%) |",
        attacks.len(),
        100.0 * found as f64 / attacks.len() as f64,
        flagged.len(),
        100.0 * flagged.len() as f64 / benign.len() as f64
    );
    for miss in &misses {
        println!("missed: {miss}");
    }
    for flag in &flagged {
        println!("flagged: {flag}");
    }
    for (class, (found, total)) in &per_class {
        assert!(*found as f64 >= 0.95 * *total as f64, "{class}: recall {found}/{total}");
    }
    assert!(flagged.len() as f64 <= 0.005 * benign.len() as f64, "{} benign payloads flagged", flagged.len());
}
