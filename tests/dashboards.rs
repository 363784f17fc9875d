//! The Grafana dashboards against a running coldtrail loaded with demo data: every panel has a title, a
//! description and a unit; every SQL panel, with Grafana's macros and variables expanded the way
//! Grafana's PostgreSQL data source expands them, runs through a real PostgreSQL client and returns rows
//! (time-series panels with a `time` column first); every metric a Prometheus panel uses is on
//! `/metrics`; the provisioning files name the data sources the panels use.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use workload::stories::{CONTRACTOR_KEY_IP, SESSION_THIEF_IP};

fn root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Grafana's PostgreSQL macros (`$__timeFilter`, `$__timeGroup`, `$__timeGroupAlias`, `$__timeFrom`,
/// `$__timeTo`) for a time range.
fn expand_macros(sql: &str, from: &str, to: &str) -> String {
    let mut out = sql.replace("$__timeFrom()", &format!("'{from}'")).replace("$__timeTo()", &format!("'{to}'"));
    for (name, alias) in [("$__timeGroupAlias(", true), ("$__timeGroup(", false), ("$__timeFilter(", false)] {
        while let Some(start) = out.find(name) {
            let args_start = start + name.len();
            let end = args_start + out[args_start..].find(')').expect("macro arguments close");
            let args: Vec<String> =
                out[args_start..end].split(',').map(|a| a.trim().trim_matches('\'').to_string()).collect();
            let replacement = if name == "$__timeFilter(" {
                format!("{} BETWEEN '{from}' AND '{to}'", args[0])
            } else {
                let seconds = match args[1].as_str() {
                    s if s.ends_with('m') => s.trim_end_matches('m').parse::<u64>().unwrap() * 60,
                    s if s.ends_with('h') => s.trim_end_matches('h').parse::<u64>().unwrap() * 3_600,
                    s => s.trim_end_matches('s').parse::<u64>().unwrap(),
                };
                let group = format!("floor(extract(epoch from {})/{seconds})*{seconds}", args[0]);
                if alias {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            };
            out.replace_range(start..=end, &replacement);
        }
    }
    out
}

/// Variables as Grafana interpolates them: a multi-value variable as a list of quoted values.
fn interpolate(sql: &str, variables: &[(String, Vec<String>, bool)]) -> String {
    let mut out = sql.to_string();
    // Longer names first: `$log_stream` before a hypothetical `$log`.
    let mut ordered: Vec<&(String, Vec<String>, bool)> = variables.iter().collect();
    ordered.sort_by_key(|(name, _, _)| std::cmp::Reverse(name.len()));
    for (name, values, multi) in ordered {
        let value = if *multi {
            values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect::<Vec<_>>().join(",")
        } else {
            values.first().cloned().unwrap_or_default()
        };
        out = out.replace(&format!("${name}"), &value);
    }
    out
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), String> {
    let messages = client.simple_query(sql).await.map_err(|e| format!("{e:?}"))?;
    let mut columns = Vec::new();
    let mut out = Vec::new();
    for message in messages {
        match message {
            tokio_postgres::SimpleQueryMessage::RowDescription(description) => {
                columns = description.iter().map(|c| c.name().to_string()).collect();
            }
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                if columns.is_empty() {
                    columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                out.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    Ok((columns, out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_runs_against_coldtrail_with_demo_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let binary = env!("CARGO_BIN_EXE_coldtrail");
    // A receiver for alert deliveries, so that the delivery panels have something to show.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A first short run seals its rows into segments (the store and ledger panels read those)...
    let first = Command::new(binary)
        .arg("--data")
        .arg(&data)
        .args(["demo", "--duration", "5s", "--pg-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // ... then the demo runs while the panels are queried: generated traffic through ingest's parser, the detectors, alert delivery and the servers.
    let mut demo = Command::new(binary)
        .arg("--data")
        .arg(&data)
        .args([
            "demo",
            "--duration",
            "120s",
            "--pg-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--webhook",
            &hook,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut pg, mut http) = (None, None);
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "the demo did not start");
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("postgres listening on ") {
            pg = rest.split(':').nth(1).and_then(|p| p.split_whitespace().next()).map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("http listening on http://") {
            http = rest.split('/').next().map(str::to_string);
        }
        if line.starts_with("history written") {
            break;
        }
    }
    // Ten simulated minutes of live time with the first stories.
    tokio::time::sleep(Duration::from_secs(12)).await;
    std::thread::spawn(move || for _ in lines {});
    let credentials: Value = serde_json::from_slice(&std::fs::read(data.join("credentials.json")).unwrap()).unwrap();
    let password = credentials["password"].as_str().unwrap();
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=admin password={password} dbname=coldtrail", pg.unwrap()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);

    let now = chrono::Utc::now();
    let (from, to) = (rfc3339(now - chrono::Duration::hours(8)), rfc3339(now + chrono::Duration::hours(2)));
    let provisioning =
        std::fs::read_to_string(root().join("dashboards/provisioning/datasources/coldtrail.yaml")).unwrap();
    let mut prometheus_metrics = Vec::new();
    let metric = regex::Regex::new(r"\b(ingest|query|detect|alerting|store)_[a-z_]+\b").unwrap();
    let mut n_sql = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for file in &files {
        let dashboard: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // Variables, in order: query variables take their values from coldtrail.
        let mut variables: Vec<(String, Vec<String>, bool)> = Vec::new();
        let mut textboxes: Vec<String> = Vec::new();
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            let var_name = variable["name"].as_str().unwrap().to_string();
            let multi = variable["multi"].as_bool().unwrap_or(false);
            let values = match variable["type"].as_str().unwrap() {
                "textbox" => {
                    textboxes.push(var_name.clone());
                    vec![variable["query"].as_str().unwrap().to_string()]
                }
                "query" => {
                    let sql = interpolate(&expand_macros(variable["query"].as_str().unwrap(), &from, &to), &variables);
                    let (_, result) =
                        rows(&client, &sql).await.unwrap_or_else(|e| panic!("{name} variable {var_name}: {e}\n{sql}"));
                    let values: Vec<String> = result.into_iter().filter_map(|r| r[0].clone()).collect();
                    assert!(!values.is_empty(), "{name} variable {var_name} has no values:\n{sql}");
                    values
                }
                other => panic!("{name}: variable type {other} not handled"),
            };
            variables.push((var_name, values, multi));
        }
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: a panel without a title");
            assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()), "{name}/{title}: no description");
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].as_str().is_some_and(|u| !u.is_empty()),
                "{name}/{title}: no unit"
            );
            let source = panel["datasource"]["uid"].as_str().unwrap();
            assert!(
                provisioning.contains(&format!("uid: {source}")),
                "{name}/{title}: data source {source} is not provisioned"
            );
            for target in panel["targets"].as_array().unwrap() {
                if let Some(raw) = target["rawSql"].as_str() {
                    n_sql += 1;
                    let sql = interpolate(&expand_macros(raw, &from, &to), &variables);
                    let (columns, mut result) =
                        rows(&client, &sql).await.unwrap_or_else(|e| panic!("{name}/{title} failed: {e}\n{sql}"));
                    // A key typed into a textbox names one actor, and the demo's stories have three (the
                    // scanner, the leaked key's user, the stolen session's): a panel without rows for the
                    // default key must have rows for one of the others.
                    for actor in [CONTRACTOR_KEY_IP, SESSION_THIEF_IP] {
                        if !result.is_empty() {
                            break;
                        }
                        let typed: Vec<(String, Vec<String>, bool)> = variables
                            .iter()
                            .map(|(n, values, multi)| match textboxes.contains(n) {
                                true => (n.clone(), vec![actor.to_string()], *multi),
                                false => (n.clone(), values.clone(), *multi),
                            })
                            .collect();
                        let sql = interpolate(&expand_macros(raw, &from, &to), &typed);
                        result = rows(&client, &sql).await.unwrap_or_else(|e| panic!("{name}/{title}: {e}\n{sql}")).1;
                    }
                    assert!(!result.is_empty(), "{name}/{title} returned no rows for any of the demo's actors:\n{sql}");
                    if target["format"] == "time_series" {
                        assert_eq!(columns.first().map(String::as_str), Some("time"), "{name}/{title}: {columns:?}");
                    }
                }
                if let Some(expr) = target["expr"].as_str() {
                    for found in metric.find_iter(expr) {
                        let base = found
                            .as_str()
                            .trim_end_matches("_bucket")
                            .trim_end_matches("_sum")
                            .trim_end_matches("_count");
                        prometheus_metrics.push((format!("{name}/{title}"), base.to_string()));
                    }
                }
            }
        }
    }
    assert!(n_sql >= 20, "{n_sql} SQL panels");
    // The SQL above ran through the server: the query metrics exist now, as do the detectors' and the outbox's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = reqwest::get(format!("http://{}/metrics", http.unwrap())).await.unwrap().text().await.unwrap();
    assert!(!prometheus_metrics.is_empty());
    for (panel, metric) in prometheus_metrics {
        assert!(metrics.contains(&format!("# TYPE {metric} ")), "{panel}: {metric} is not on /metrics");
    }
    Command::new("kill").args(["-TERM", &demo.id().to_string()]).status().unwrap();
    assert!(demo.wait().unwrap().success());
}
