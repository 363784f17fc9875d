//! The query engine over a store with sealed segments and hot rows: SQL, pruning in `EXPLAIN`, the
//! forensic functions and views, role checks and the audit; then the same through real clients:
//! tokio-postgres (SCRAM, simple and extended protocol, types), psql (`\dt`, `\d`), Grafana's queries,
//! and the HTTP API with reqwest.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use ingest::pipeline::{Format, Pipeline, Unit};
use query::engine::Limits;
use query::{Caller, QueryEngine, QueryError, Role, UserSpec, Users};
use store::{Store, StoreConfig};

/// 2026-11-20T10:00:00Z.
const BASE_MS: i64 = 1_795_168_800_000;
/// The bundled samples, found at run time: a test binary may run from another checkout's target dir.
fn samples() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/data/samples")
}

/// A CloudWatch subscription payload: `per_hour` invocations of `function` in each hour of `hours`,
/// one log stream per hour, each with a log line naming the caller's address.
fn subscription(function: &str, hours: std::ops::Range<i64>, per_hour: i64) -> Vec<u8> {
    let mut events = Vec::new();
    for hour in hours.clone() {
        for i in 0..per_hour {
            let t = BASE_MS + hour * 3_600_000 + i * 60_000;
            let id = format!("{function}-{hour:02}-{i:04}-0000-0000-000000000000");
            let ip = if i % 10 == 0 { "198.51.100.7" } else { "203.0.113.20" };
            let duration = if i == 5 { 2900.0 } else { 40.0 + i as f64 };
            for (offset, message) in [
                (0, format!("START RequestId: {id} Version: $LATEST")),
                (1, format!("2026-11-20T10:00:00.000Z\t{id}\tINFO\thandling order {i} for {ip}")),
                (2, format!("END RequestId: {id}")),
                (
                    3,
                    format!(
                        "REPORT RequestId: {id}\tDuration: {duration:.2} ms\tBilled Duration: {} ms\tMemory Size: 512 MB\tMax Memory Used: 100 MB\t",
                        duration.ceil()
                    ),
                ),
            ] {
                events.push(serde_json::json!({"id": format!("{hour}-{i}-{offset}"), "timestamp": t + offset, "message": message}));
            }
        }
    }
    serde_json::to_vec(&serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": format!("/aws/lambda/{function}"),
        "logStream": format!("2026/11/20/[$LATEST]{function}{:02}", hours.start), "subscriptionFilters": ["t"],
        "logEvents": events,
    }))
    .unwrap()
}

fn load(store: &Store, bytes: &[u8]) {
    let mut pipeline = Pipeline::default();
    pipeline.ingest(Format::Auto, bytes, &Unit { source: "file:test", position: "0", key: None, log_group: None });
    pipeline.finish();
    let batches = pipeline.take_batches();
    store.append(&batches, &[]).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    engine: Arc<QueryEngine>,
}

/// Three hours of `payments` sealed in segments (one log stream per hour), the CloudTrail samples sealed,
/// and a fourth hour of `payments` plus `orders` still hot.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    for hour in 0..3 {
        load(&store, &subscription("payments", hour..hour + 1, 20));
    }
    for entry in std::fs::read_dir(samples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            load(&store, &std::fs::read(&path).unwrap());
        }
    }
    store.flush_all().await.unwrap();
    load(&store, &subscription("payments", 3..4, 20));
    load(&store, &subscription("orders", 3..4, 5));
    let engine = engine_with_users(store.clone(), Limits::default()).await.unwrap();
    Fixture { _dir: dir, store, engine }
}

fn admin() -> Caller {
    Caller { user: "root".into(), role: Role::Admin, client_addr: "test".into(), protocol: "cli" }
}

fn analyst() -> Caller {
    Caller { user: "alice".into(), role: Role::Analyst, client_addr: "test".into(), protocol: "cli" }
}

async fn rows(engine: &QueryEngine, sql: &str) -> Vec<Vec<String>> {
    let output = engine.execute(&admin(), sql, None).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for batch in &output.batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, row).unwrap()).collect(),
            );
        }
    }
    out
}

async fn count(engine: &QueryEngine, sql: &str) -> i64 {
    let output = engine.execute(&admin(), sql, None).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    output.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sees_sealed_and_hot_rows_and_time_filters_prune_segments() {
    let f = fixture().await;
    assert!(f.store.stats()[&store::Table::Invocations].segments >= 3, "three hours sealed");
    assert_eq!(
        count(&f.engine, "SELECT count(*) FROM invocations WHERE function_name IN ('payments', 'orders')").await,
        85
    );
    assert_eq!(count(&f.engine, "SELECT count(*) FROM invocations WHERE function_name = 'orders'").await, 5);
    assert_eq!(
        count(&f.engine, "SELECT count(*) FROM logs WHERE request_id LIKE 'payments-%' OR request_id LIKE 'orders-%'")
            .await,
        85 * 4,
        "START, the line, END and REPORT"
    );
    let hour1 = "ts >= '2026-11-20T11:00:00Z' AND ts < '2026-11-20T12:00:00Z'";
    assert_eq!(count(&f.engine, &format!("SELECT count(*) FROM invocations WHERE {hour1}")).await, 20);

    let plan = |filter: &str| {
        let engine = f.engine.clone();
        let sql = format!("EXPLAIN SELECT request_id FROM invocations WHERE {filter}");
        async move { rows(&engine, &sql).await.into_iter().map(|r| r.join(" ")).collect::<Vec<_>>().join("\n") }
    };
    let all = plan("duration_ms > 0").await;
    let one = plan(hour1).await;
    let files = |plan: &str| plan.matches(".parquet").count();
    assert!(files(&all) >= 3, "{all}");
    assert_eq!(files(&one), 1, "only the 11:00 segment is read:\n{one}");
    assert!(one.contains("projection=[request_id, ts]") || one.contains("request_id"), "{one}");
    assert!(!one.contains("hour=10") && one.contains("hour=11"), "{one}");

    // Issue 20: filters are evaluated while decoding only where they can be selective. Time bounds
    // around whole segments keep every row of the segments left after pruning: filtered after decoding
    // (a FilterExec over the scan); an id lookup, or bounds that cut into a segment, while decoding.
    let whole = "ts >= '2026-11-20T11:00:00Z' AND ts < '2026-11-20T12:00:00Z'";
    let cut = "ts >= '2026-11-20T11:10:00Z' AND ts < '2026-11-20T12:00:00Z'";
    // A segment inside the bounds is read without them: no filter, and its time column is not decoded.
    let inside = plan(whole).await;
    assert!(!inside.contains("FilterExec") && !inside.contains("predicate="), "{inside}");
    assert!(inside.contains("projection=[request_id]"), "the time column is not read:\n{inside}");
    let id = "request_id = 'payments-01-0005-0000-0000-000000000000'";
    for selective in [cut.to_string(), format!("{whole} AND {id}"), id.to_string()] {
        let sealed = plan(&format!("{selective} AND ts < '2026-11-20T13:00:00Z'")).await;
        let scan = sealed.lines().find(|l| l.contains("DataSourceExec") && l.contains(".parquet")).unwrap_or("");
        assert!(scan.contains("predicate="), "{selective}: the filter reaches the Parquet scan:\n{sealed}");
        assert!(!sealed.contains("FilterExec"), "{selective}: evaluated while decoding:\n{sealed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_bounds_count_exactly_at_the_edges_of_segments_and_hot_rows() {
    // Issue 20: the store applies time bounds itself, and only to the segments and hot rows whose time
    // range does not lie inside them. Every comparison, at a segment's first and last row, between
    // segments and in the hot hour, counts what the times themselves say.
    let f = fixture().await;
    let times: Vec<i64> = rows(&f.engine, "SELECT CAST(ts AS BIGINT) FROM invocations")
        .await
        .into_iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(times.len() >= 3 * 20 + 20 + 5, "{}", times.len());
    let hour = |h: i64, minute: i64| (BASE_MS + h * 3_600_000 + minute * 60_000) * 1000;
    let mut edges = vec![hour(0, 0) - 1, hour(4, 0)];
    for h in 0..4 {
        edges.extend([hour(h, 0), hour(h, 0) + 1, hour(h, 19), hour(h, 19) + 1, hour(h, 30)]);
    }
    let text = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    };
    for &edge in &edges {
        type Holds = fn(i64, i64) -> bool;
        let ops: [(&str, Holds); 4] =
            [(">", |t, e| t > e), (">=", |t, e| t >= e), ("<", |t, e| t < e), ("<=", |t, e| t <= e)];
        for (op, holds) in ops {
            let expected = times.iter().filter(|&&t| holds(t, edge)).count() as i64;
            let sql = format!("SELECT count(*) FROM invocations WHERE ts {op} '{}'", text(edge));
            assert_eq!(count(&f.engine, &sql).await, expected, "{sql}");
            // With another filter, and with the time column not asked for.
            let sql = format!(
                "SELECT count(request_id) FROM invocations WHERE ts {op} '{}' AND duration_ms >= 0",
                text(edge)
            );
            assert_eq!(count(&f.engine, &sql).await, expected, "{sql}");
        }
        for &end in edges.iter().filter(|&&end| end >= edge) {
            let expected = times.iter().filter(|&&t| t >= edge && t <= end).count() as i64;
            let sql = format!("SELECT count(*) FROM invocations WHERE ts BETWEEN '{}' AND '{}'", text(edge), text(end));
            assert_eq!(count(&f.engine, &sql).await, expected, "{sql}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_by_key_reads_only_the_segments_whose_bloom_filters_may_hold_it() {
    // Issue 20: a point lookup has no time bound; the segments' bloom filters, held in memory, rule out
    // the segments that cannot hold the key before any file is opened. Hot rows are always searched.
    let f = fixture().await;
    let plan = |sql: String| {
        let engine = f.engine.clone();
        async move {
            rows(&engine, &format!("EXPLAIN {sql}"))
                .await
                .into_iter()
                .map(|r| r.join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let files = |plan: &str| plan.matches(".parquet").count();
    let id = |hour: i64, i: i64| format!("payments-{hour:02}-{i:04}-0000-0000-000000000000");
    for table in ["invocations", "logs"] {
        let everything = plan(format!("SELECT * FROM {table} WHERE request_id LIKE 'payments-%'")).await;
        assert!(files(&everything) >= 3, "{everything}");
        let one = plan(format!("SELECT * FROM {table} WHERE request_id = '{}'", id(1, 5))).await;
        assert_eq!(files(&one), 1, "{table}: only the 11:00 segment:\n{one}");
        assert!(one.contains("hour=11"), "{one}");
        let two = plan(format!("SELECT * FROM {table} WHERE request_id IN ('{}', '{}')", id(0, 3), id(2, 19))).await;
        assert_eq!(files(&two), 2, "{table}: the 10:00 and 12:00 segments:\n{two}");
        let none = plan(format!("SELECT * FROM {table} WHERE request_id = 'no-such-request'")).await;
        assert_eq!(files(&none), 0, "{table}: no segment holds it:\n{none}");
    }
    let lookup = |table: &str, request: &str| format!("SELECT count(*) FROM {table} WHERE request_id = '{request}'");
    assert_eq!(count(&f.engine, &lookup("invocations", &id(1, 5))).await, 1);
    assert_eq!(count(&f.engine, &lookup("logs", &id(1, 5))).await, 4, "START, the line, END and REPORT");
    assert_eq!(count(&f.engine, &lookup("invocations", &id(3, 7))).await, 1, "a hot row");
    assert_eq!(count(&f.engine, &lookup("invocations", "no-such-request")).await, 0);
    let both = format!("SELECT count(*) FROM invocations WHERE request_id IN ('{}', '{}')", id(0, 3), id(3, 1));
    assert_eq!(count(&f.engine, &both).await, 2, "one sealed, one hot");
    // The same answers once the filters are cached, and for an analyst.
    let output = f.engine.execute(&analyst(), &lookup("invocations", &id(2, 0)), None).await.unwrap();
    assert_eq!(output.batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_through_several_columns_reads_in_each_segment_only_the_columns_that_may_hold_the_key() {
    // Issue 20: `timeline()` looks a key up in six columns at once. In each segment only the terms whose
    // bloom filters may hold the key are applied (and their columns decoded); the answers are those of
    // the whole disjunction.
    let f = fixture().await;
    let request = "payments-01-0005-0000-0000-000000000000";
    let hot = "payments-03-0002-0000-0000-000000000000";
    let plan: Vec<String> = rows(
        &f.engine,
        &format!("EXPLAIN SELECT ts FROM invocations WHERE request_id = '{request}' OR function_name = 'payments'"),
    )
    .await
    .into_iter()
    .flat_map(|r| r[1].lines().map(str::to_string).collect::<Vec<_>>())
    .collect();
    let scans: Vec<&String> = plan.iter().filter(|l| l.contains("DataSourceExec: file_groups")).collect();
    let by_function = scans.iter().find(|l| !l.contains("request_id")).unwrap_or_else(|| panic!("{plan:#?}"));
    assert!(by_function.contains("predicate=function_name@"), "{by_function}");
    assert!(by_function.contains("hour=10") && by_function.contains("hour=12") && !by_function.contains("hour=11"));
    let both = scans.iter().find(|l| l.contains("hour=11")).unwrap_or_else(|| panic!("{plan:#?}"));
    assert!(both.contains("request_id@") && both.contains("function_name@"), "{both}");

    // The answers: each lookup against the same filter written so that no segment is told apart.
    let timeline = |k: &str| {
        format!(
            "request_id IN ('{k}') OR trace_id IN ('{k}') OR log_stream IN ('{k}') OR principal IN ('{k}')
             OR source_ip IN ('{k}') OR function_name IN ('{k}')"
        )
    };
    let cases: Vec<(Vec<String>, i64)> = vec![
        (vec![format!("request_id = '{request}' OR function_name = 'payments'")], 80),
        (vec![format!("request_id = '{request}' OR function_name = 'orders'")], 6),
        (vec![format!("request_id IN ('{request}', '{hot}') OR function_name = 'no-such-function'")], 2),
        (vec![timeline(request)], 1),
        (vec![timeline("payments")], 80),
        (
            vec![
                format!("request_id = '{request}' OR function_name = 'payments'"),
                format!("log_stream = 'no-such-stream' OR request_id IN ('{request}', '{hot}')"),
            ],
            2,
        ),
    ];
    for (lookups, expected) in cases {
        let both = |conjuncts: Vec<String>| {
            format!(
                "SELECT request_id, ts, function_name FROM invocations WHERE {} ORDER BY ts, request_id",
                conjuncts.into_iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" AND ")
            )
        };
        let looked_up = rows(&f.engine, &both(lookups.clone())).await;
        let whole =
            rows(&f.engine, &both(lookups.iter().map(|c| format!("{c} OR status = 'no-such-status'")).collect())).await;
        assert_eq!(looked_up.len() as i64, expected, "{lookups:?}: {looked_up:?}");
        assert_eq!(looked_up, whole, "{lookups:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_reads_only_the_row_groups_whose_bloom_filters_may_hold_the_key() {
    // Issue 20: the bloom filters held in memory say which row groups of a segment may hold a key; the
    // scan skips the others without reading their statistics or filters again.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    // One segment of three row groups (64 Ki rows each at most); request ids are the row numbers.
    let ids: Vec<u64> = (0..150_000).collect();
    let batch =
        store::fixtures::batch_with_ids(store::Table::Invocations, &ids, |id| 1_763_632_800_000_000 + id as i64);
    store.append_batch(store::Table::Invocations, batch).unwrap();
    store.flush_all().await.unwrap();
    let engine = engine_with_users(store.clone(), Limits::default()).await.unwrap();
    let considered = |plan: &[Vec<String>]| -> Vec<String> {
        plan.iter()
            .flat_map(|r| r[1].lines().map(str::to_string).collect::<Vec<_>>())
            .filter(|line| line.contains("DataSourceExec: file_groups"))
            .map(|line| {
                line.split("row_groups_pruned_statistics=")
                    .nth(1)
                    .unwrap_or("")
                    .split(" total")
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    for (lookup, row_groups, found) in [
        ("request_id = '140000'", "1", 1),
        ("request_id IN ('3', '140000')", "2", 2),
        ("request_id = '3' OR log_stream = 'no-such-stream'", "1", 1),
        ("request_id = 'no-such-request'", "", 0),
    ] {
        let sql = format!("SELECT request_id FROM invocations WHERE {lookup}");
        assert_eq!(rows(&engine, &sql).await.len(), found, "{lookup}");
        let plan = rows(&engine, &format!("EXPLAIN ANALYZE {sql}")).await;
        let scans = considered(&plan);
        if found == 0 {
            assert!(scans.is_empty(), "{lookup}: no segment is read: {plan:?}");
        } else {
            assert_eq!(scans, [row_groups], "{lookup}: row groups considered of 3: {plan:?}");
        }
    }

    // The row groups those lookups found now have filters per page (4 Ki rows): a key in one of them is
    // looked for in one page, and every key is still found, whatever page it is in.
    let decoded = |plan: &[Vec<String>]| -> f64 {
        let line = plan.iter().flat_map(|r| r[1].lines()).find(|l| l.contains("pushdown_rows_pruned=")).unwrap();
        let metric = |name: &str| {
            let value = line.split(&format!("{name}=")).nth(1).unwrap().split(',').next().unwrap().trim();
            let (number, scale) = match value.split_once(' ') {
                Some((n, "K")) => (n, 1e3),
                Some((n, "M")) => (n, 1e6),
                _ => (value, 1.0),
            };
            number.parse::<f64>().unwrap() * scale
        };
        metric("pushdown_rows_pruned") + metric("pushdown_rows_matched")
    };
    let plan = rows(&engine, "EXPLAIN ANALYZE SELECT * FROM invocations WHERE request_id = '140001'").await;
    assert!(decoded(&plan) <= 4096.0, "one page decoded, not the row group's 18,928 rows: {plan:?}");
    let first = rows(&engine, "EXPLAIN ANALYZE SELECT * FROM invocations WHERE request_id = '70000'").await;
    let again = rows(&engine, "EXPLAIN ANALYZE SELECT * FROM invocations WHERE request_id = '70001'").await;
    // A row group first met is decoded once to make its page filters, then the scan reads one page.
    assert!(decoded(&first) <= 4096.0, "one page of 65,536 rows: {first:?}");
    assert!(decoded(&again) <= 4096.0, "{again:?}");
    for id in (0..150_000).step_by(4_999).chain([65_535, 65_536, 131_071, 131_072, 149_999]) {
        let found = rows(&engine, &format!("SELECT request_id FROM invocations WHERE request_id = '{id}'")).await;
        assert_eq!(found, [[id.to_string()]], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_filters_read_ahead_at_start_serve_the_first_lookup() {
    // Issue 20: `serve` reads the segments' id filters when it starts, so that the first lookup after
    // a restart does not. A second warming finds them all held, and lookups still find their rows.
    let f = fixture().await;
    let read = f.engine.warm_key_filters().await.unwrap();
    let segments: u64 = [store::Table::Invocations, store::Table::Cloudtrail, store::Table::Logs]
        .iter()
        .map(|t| f.store.stats()[t].segments)
        .sum();
    assert!(read as u64 >= segments, "{read} filters read for {segments} segments");
    assert_eq!(f.engine.warm_key_filters().await.unwrap(), 0, "every id filter is held already");
    let id = "payments-01-0005-0000-0000-000000000000";
    assert_eq!(count(&f.engine, &format!("SELECT count(*) FROM invocations WHERE request_id = '{id}'")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_environment_and_helpers_answer_forensic_questions() {
    let f = fixture().await;
    let request = "payments-01-0005-0000-0000-000000000000";
    let timeline = rows(&f.engine, &format!("SELECT table_name, row_id, summary FROM timeline('{request}')")).await;
    let tables: Vec<&str> = timeline.iter().map(|r| r[0].as_str()).collect();
    assert!(tables.contains(&"invocations") && tables.contains(&"logs"), "{timeline:?}");
    assert!(timeline.iter().any(|r| r[2].contains("2900")), "the summary carries the duration: {timeline:?}");

    // An address is mentioned by log lines of every hour, sealed or hot; bounds cut it to one hour.
    let ip = count(&f.engine, "SELECT count(*) FROM timeline('198.51.100.7')").await;
    assert_eq!(ip, 4 * 2 + 1, "two per payments hour and one for orders");
    let bounded =
        count(&f.engine, "SELECT count(*) FROM timeline('198.51.100.7', TIMESTAMP '2026-11-20T13:00:00Z', now())")
            .await;
    assert_eq!(bounded, 3);

    // A principal from the CloudTrail samples.
    let principal: String =
        rows(&f.engine, "SELECT principal_arn FROM cloudtrail WHERE principal_arn IS NOT NULL LIMIT 1").await[0][0]
            .clone();
    let trail = rows(&f.engine, &format!("SELECT table_name FROM timeline('{principal}')")).await;
    assert!(!trail.is_empty() && trail.iter().all(|r| r[0] == "cloudtrail"), "{trail:?}");

    // The timeline is in time order.
    let times = rows(&f.engine, "SELECT CAST(ts AS BIGINT) FROM timeline('payments')").await;
    let times: Vec<i64> = times.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(times.len() >= 160 && times.windows(2).all(|w| w[0] <= w[1]));

    let env = rows(&f.engine, "SELECT table_name, row_id FROM environment('2026/11/20/[$LATEST]payments01')").await;
    assert_eq!(env.len(), 20 * 5, "every invocation and its four log lines: {env:?}");
    assert!(env.iter().all(|r| r[1].starts_with("payments-01-")));

    assert_eq!(count(&f.engine, "SELECT count(*) FROM timeline('no-such-key')").await, 0);
    let quoted = f.engine.execute(&admin(), "SELECT * FROM timeline('x'' OR ''1''=''1')", None).await.unwrap();
    assert_eq!(quoted.rows, 0, "a quote in the key is data, not SQL");

    assert_eq!(
        count(
            &f.engine,
            "SELECT count(*) FROM logs WHERE cidr_match(regexp_replace(message, '.* for ', ''), '198.51.100.0/24')"
        )
        .await,
        9
    );
    assert_eq!(
        rows(&f.engine, "SELECT cidr_match('10.1.2.3', '10.0.0.0/8'), cidr_match(NULL, '10.0.0.0/8')").await,
        vec![vec!["true".to_string(), "".to_string()]]
    );
    let bad = f.engine.execute(&admin(), "SELECT cidr_match('10.1.2.3', '10.0.0.0/99')", None).await.unwrap_err();
    assert!(bad.to_string().contains("not an IP address or CIDR block"), "{bad}");

    let buckets = rows(&f.engine, "SELECT time_bucket('1h', ts) AS hour, count(*) FROM invocations WHERE function_name = 'payments' GROUP BY 1 ORDER BY 1").await;
    assert_eq!(buckets.len(), 4);
    assert!(buckets[0][0].starts_with("2026-11-20T10:00:00"), "{buckets:?}");

    let json = rows(&f.engine, "SELECT json_get_str(request_parameters, 'functionName') FROM cloudtrail WHERE event_name = 'UpdateFunctionCode20150331v2' LIMIT 1").await;
    assert!(json.first().is_some_and(|r| !r[0].is_empty()), "{json:?}");

    let minutes = rows(&f.engine, "SELECT function_name, sum(invocations), max(duration_max_ms), sum(gb_seconds) > 0 FROM function_minutes WHERE function_name IN ('orders', 'payments') GROUP BY 1 ORDER BY 1").await;
    assert_eq!(minutes[1][0], "payments");
    assert_eq!(minutes[1][1], "80");
    assert_eq!(minutes[1][2], "2900.0");
    let _ = rows(&f.engine, "SELECT * FROM recent_alerts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_only_read_and_every_statement_is_audited() {
    let f = fixture().await;
    let refused = [
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/coldtrail-copy-test.csv'",
        "CREATE VIEW mine AS SELECT 1",
        "CREATE TABLE t AS SELECT * FROM invocations",
        "INSERT INTO alerts (ts, alert_id, detector) VALUES (now(), 'x', 'y')",
        "DROP VIEW function_minutes",
        "SET datafusion.execution.batch_size = 1",
        "EXPLAIN CREATE VIEW v AS SELECT 1",
    ];
    for sql in refused {
        match f.engine.execute(&analyst(), sql, None).await {
            Err(QueryError::Denied(message)) => assert!(message.contains("analyst"), "{message}"),
            other => panic!("{sql}: expected a denial, got {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/coldtrail-copy-test.csv").exists());
    assert!(f.engine.execute(&analyst(), "SELECT * FROM '/etc/passwd'", None).await.is_err());
    assert!(f.engine.execute(&analyst(), "SELECT count(*) FROM invocations", None).await.is_ok());
    assert!(f.engine.execute(&analyst(), "EXPLAIN SELECT * FROM logs", None).await.is_ok());
    assert!(f.engine.execute(&admin(), "CREATE VIEW mine AS SELECT 1 AS one", None).await.is_ok());
    assert_eq!(count(&f.engine, "SELECT CAST(one AS BIGINT) FROM mine").await, 1);

    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let audit = rows(
        &engine,
        "SELECT user_name, status, sql, error FROM query_audit WHERE user_name = 'alice' AND status <> 'started' ORDER BY ts",
    )
    .await;
    assert_eq!(audit.len(), refused.len() + 3, "{audit:?}");
    // Every statement that ran has its durable `started` row, stamped like its outcome; refused ones and
    // one that failed to plan (`/etc/passwd`) none.
    let started = rows(
        &engine,
        "SELECT s.sql FROM query_audit s JOIN query_audit o ON s.ts = o.ts AND s.sql = o.sql AND o.status <> 'started' \
         WHERE s.user_name = 'alice' AND s.status = 'started' ORDER BY s.ts",
    )
    .await;
    assert_eq!(started, [["SELECT count(*) FROM invocations"], ["EXPLAIN SELECT * FROM logs"]]);
    assert!(audit[..refused.len()].iter().all(|r| r[1] == "denied"));
    assert_eq!(audit[0][2], refused[0]);
    assert!(audit.iter().any(|r| r[1] == "ok" && r[2] == "SELECT count(*) FROM invocations"));
    assert!(audit.iter().any(|r| r[1] == "error" && r[2].contains("/etc/passwd")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_statements_time_out_and_big_results_are_bounded() {
    let f = fixture().await;
    let engine = engine_with_users(
        f.store.clone(),
        Limits {
            statement_timeout: Duration::from_millis(500),
            max_result_rows: 50,
            max_result_bytes: 1 << 20,
            memory_bytes: 8 << 20,
            max_concurrent: 2,
            ..Limits::default()
        },
    )
    .await
    .unwrap();
    let slow = "SELECT count(*) FROM generate_series(1, 2000000000) a";
    // Two runaways at once: both are cancelled by the timeout, and a third statement that arrives
    // meanwhile waits for a slot, then answers.
    let caller = admin();
    let (a, b) = tokio::join!(engine.execute(&caller, slow, None), engine.execute(&caller, slow, None));
    assert!(matches!(a, Err(QueryError::Timeout(_))) && matches!(b, Err(QueryError::Timeout(_))));
    assert!(engine.execute(&admin(), "SELECT count(*) FROM invocations", None).await.is_ok());
    // A join whose build side outgrows the memory pool fails with a clear error; others still run.
    let join =
        "SELECT count(*) FROM generate_series(1, 3000000) a JOIN generate_series(1, 3000000) b ON a.value = b.value";
    let err = engine.execute(&admin(), join, None).await.unwrap_err();
    assert!(err.to_string().contains("Resources exhausted"), "{err}");
    assert_eq!(engine.execute(&admin(), "SELECT * FROM logs LIMIT 5", None).await.unwrap().rows, 5);
    assert!(matches!(engine.execute(&admin(), "SELECT * FROM logs", None).await, Err(QueryError::TooLarge(50))));
    assert_eq!(engine.execute(&admin(), "SELECT * FROM logs LIMIT 50", None).await.unwrap().rows, 50);
    // Issue 18, item 5: a result's bytes are bounded too, whatever its rows.
    let wide = "SELECT repeat('x', 100000) AS wide FROM generate_series(1, 40)";
    assert!(matches!(engine.execute(&admin(), wide, None).await, Err(QueryError::ResultTooBig(_))), "{wide}");
    // Functions whose result outgrows their arguments are bounded: this one grew the server by 2.8 GB,
    // outside the memory pool, before it failed at the row cap.
    let growing = "SELECT length(repeat('x', 1000000000)) FROM generate_series(1, 3)";
    let err = engine.execute(&analyst(), growing, None).await.unwrap_err().to_string();
    assert!(err.contains("repeat(...) would make about"), "{err}");
    assert!(matches!(engine.execute(&admin(), "  ; ", None).await, Err(QueryError::BadRequest(_))));
    let two = engine.execute(&admin(), "SELECT 1; SELECT 2", None).await.unwrap_err();
    assert!(two.to_string().contains("single"), "{two}");
}

/// An engine whose servers know `users()`.
async fn engine_with_users(store: Arc<Store>, limits: Limits) -> query::Result<Arc<QueryEngine>> {
    QueryEngine::with_users(store, limits, users()).await
}

fn users() -> Users {
    Users::from_specs(&[
        UserSpec {
            name: "alice".into(),
            role: Some(Role::Analyst),
            password: Some("alice-password".into()),
            token: Some("alice-token-0123456789".into()),
            ..Default::default()
        },
        UserSpec {
            name: "root".into(),
            role: Some(Role::Admin),
            password: Some("root-password".into()),
            token: Some("root-token-0123456789ab".into()),
            ..Default::default()
        },
    ])
    .unwrap()
}

struct Servers {
    pg: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start(engine: Arc<QueryEngine>) -> Servers {
    start_with(engine, Default::default()).await
}

async fn start_with(engine: Arc<QueryEngine>, pg_options: query::pg::PgOptions) -> Servers {
    let pg_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let servers = Servers {
        pg: pg_listener.local_addr().unwrap(),
        http: http_listener.local_addr().unwrap(),
        stop: tokio::sync::watch::channel(false).0,
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(query::pg::serve(pg_listener, engine.clone(), pg_options, stopped(servers.stop.subscribe())));
    tokio::spawn(query::http::serve(http_listener, engine, None, stopped(servers.stop.subscribe())));
    servers
}

async fn connect(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let config = format!("host=127.0.0.1 port={} user={user} password={password} dbname=coldtrail", addr.port());
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_log_in_with_scram_and_read_typed_rows() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;

    let wrong = connect(servers.pg, "alice", "not-her-password").await;
    assert!(wrong.is_err(), "a wrong password is refused");
    assert!(connect(servers.pg, "mallory", "alice-password").await.is_err(), "an unknown user is refused");

    let client = connect(servers.pg, "alice", "alice-password").await.unwrap();
    // Simple protocol.
    let simple =
        client.simple_query("SELECT count(*) FROM invocations WHERE function_name <> 'orders-api'").await.unwrap();
    let first = simple.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap().to_string()),
        _ => None,
    });
    assert_eq!(first.as_deref(), Some("85"));

    // Extended protocol with bound parameters and typed results.
    let row = client
        .query_one(
            "SELECT ts, function_name, duration_ms, billed_duration_ms, cold_start, error_type, request_id
             FROM invocations WHERE request_id = $1",
            &[&"payments-02-0005-0000-0000-000000000000"],
        )
        .await
        .unwrap();
    let ts: chrono::DateTime<chrono::Utc> = row.get(0);
    assert_eq!(ts.timestamp_millis(), BASE_MS + 2 * 3_600_000 + 5 * 60_000);
    assert_eq!(row.get::<_, String>(1), "payments");
    assert_eq!(row.get::<_, f64>(2), 2900.0);
    assert_eq!(row.get::<_, i64>(3), 2900);
    assert_eq!(row.get::<_, Option<bool>>(4), Some(false));
    assert_eq!(row.get::<_, Option<String>>(5), None);

    let statement = client.prepare("SELECT count(*) FROM logs WHERE function_name = $1").await.unwrap();
    let n: i64 = client.query_one(&statement, &[&"orders"]).await.unwrap().get(0);
    assert_eq!(n, 5 * 4);

    // Refused statements come back as errors with PostgreSQL's code for insufficient privilege.
    let denied = client.simple_query("CREATE VIEW v AS SELECT 1").await.unwrap_err();
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    let denied = client.simple_query("COPY (SELECT 1) TO '/tmp/coldtrail-pg-copy.csv'").await.unwrap_err();
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    // The extended protocol's parse step already refuses COPY (DataFusion plans no PostgreSQL COPY).
    assert!(client.query("COPY (SELECT 1) TO '/tmp/coldtrail-pg-copy.csv'", &[]).await.is_err());
    assert!(!std::path::Path::new("/tmp/coldtrail-pg-copy.csv").exists());
    let denied = client.simple_query("SET datafusion.execution.batch_size = 1").await.unwrap_err();
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    client.simple_query("SET application_name = 'grafana'").await.unwrap();

    // Grafana's PostgreSQL data source: connection test, then a time series panel with its macros
    // expanded ($__timeGroupAlias(ts, 1h), $__timeFilter(ts)).
    client.simple_query("SELECT 1").await.unwrap();
    let series = client
        .query(
            "SELECT floor(extract(epoch from ts)/3600)*3600 AS \"time\", count(*) AS invocations
             FROM invocations
             WHERE ts BETWEEN '2026-11-20T09:00:00Z' AND '2026-11-20T12:30:00Z' AND function_name = 'payments'
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(series.len(), 3);
    let admin = connect(servers.pg, "root", "root-password").await.unwrap();
    admin.simple_query("CREATE VIEW admins_view AS SELECT 1 AS one").await.unwrap();
    drop(client);
    drop(admin);

    tokio::time::sleep(Duration::from_millis(300)).await;
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let audit = rows(&engine, "SELECT user_name, protocol, status, rows, client_addr FROM query_audit WHERE sql LIKE 'SELECT count(*) FROM invocations WHERE%' AND status <> 'started'").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(&audit[0][..4], ["alice", "pg", "ok", "1"]);
    assert!(audit[0][4].starts_with("127.0.0.1:"));
    assert!(count(&engine, "SELECT count(*) FROM query_audit WHERE protocol = 'pg' AND status = 'denied'").await >= 3);
    let _ = servers.stop.send(true);
}

/// Issue 18, item 1: an analyst's `SET` never reaches the engine that every session shares, whatever
/// its spelling, over the simple and the extended protocol; the settings of their own session still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_cannot_change_the_settings_every_session_shares() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let analyst = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let options = || f.engine.context().state().config().options().clone();
    let before = options();
    for sql in [
        "SET \"datafusion.catalog.default_catalog\" = 'nope'",
        "SET \"datafusion.runtime.memory_limit\" = '1K'",
        "SET \"datafusion.runtime.temp_directory\" = '/tmp/coldtrail-analyst'",
        "SET DATAFUSION.EXECUTION.BATCH_SIZE = 1",
        "SET datafusion.execution.time_zone = 'Europe/Paris'",
        "SET \"statement_timeout\" = 1",
        "SET SESSION statement_timeout = 1",
        "SET LOCAL application_name = 'x'",
        "SET datestyle = ISO",
        "SET some.other = 1",
        "SET TIME ZONE 'Europe/Paris'; SELECT 1",
    ] {
        let denied = analyst.simple_query(sql).await.expect_err(sql);
        assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {denied:?}");
        if !sql.contains(';') {
            assert!(analyst.execute(sql, &[]).await.is_err(), "extended protocol: {sql}");
        }
    }
    for sql in [
        "SET application_name = 'grafana'",
        "SET statement_timeout = '5s'",
        "SET extra_float_digits = 3",
        "SET search_path = 'public'",
        "SET datestyle = 'ISO, MDY'",
        "SET TIME ZONE 'Europe/Paris'",
        "SET timezone = 'Asia/Tokyo'",
    ] {
        analyst.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    analyst.execute("SET TIME ZONE 'America/New_York'", &[]).await.unwrap();
    // Nothing reached the shared engine: its options are as they were, and every user still reads.
    let after = options();
    assert_eq!(after.execution.time_zone, before.execution.time_zone);
    assert_eq!(after.catalog.default_catalog, before.catalog.default_catalog);
    assert_eq!(after.execution.batch_size, before.execution.batch_size);
    let admin = connect(servers.pg, "root", "root-password").await.unwrap();
    let n: i64 = admin.query_one("SELECT count(*) FROM invocations", &[]).await.unwrap().get(0);
    assert!(n > 0);
    let n: i64 = analyst.query_one("SELECT count(*) FROM invocations", &[]).await.unwrap().get(0);
    assert!(n > 0);
    // An admin still may.
    admin.simple_query("SET datafusion.execution.batch_size = 4096").await.unwrap();
    assert_ne!(options().execution.batch_size, before.execution.batch_size);
    let _ = servers.stop.send(true);
}

/// The rows of a simple-protocol query, as text.
async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// All of a `COPY ... TO STDOUT`'s data.
async fn copied(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<u8>, tokio_postgres::Error> {
    use futures::TryStreamExt;
    let stream = client.copy_out(sql).await?;
    let chunks: Vec<_> = stream.try_collect().await?;
    Ok(chunks.iter().flat_map(|chunk| chunk.iter().copied()).collect())
}

/// Issue 20: what SQLAlchemy, psycopg and pgjdbc ask of a PostgreSQL server beyond the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_get_a_postgres_version_copy_savepoints_and_key_metadata() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let client = connect(servers.pg, "alice", "alice-password").await.unwrap();

    // SQLAlchemy reads the major version out of version(); DataFusion's own string has none.
    for sql in ["SELECT version()", "SELECT pg_catalog.version()"] {
        let version: String = client.query_one(sql, &[]).await.unwrap().get(0);
        assert!(version.starts_with("PostgreSQL 16.6 (coldtrail "), "{sql}: {version}");
    }
    let server_version = simple_rows(&client, "SHOW server_version").await;
    assert!(server_version[0][0].as_deref().unwrap_or("").starts_with("16.6"), "{server_version:?}");

    // COPY ... TO STDOUT, in each format, gives the rows the same SELECT gives.
    let expected: Vec<(String, String)> = simple_rows(
        &client,
        "SELECT request_id, duration_ms FROM invocations WHERE function_name = 'payments' ORDER BY request_id",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect();
    assert_eq!(expected.len(), 80);
    let query = "SELECT request_id, duration_ms FROM invocations WHERE function_name = 'payments' ORDER BY request_id";
    let csv = String::from_utf8(
        copied(&client, &format!("COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)")).await.unwrap(),
    )
    .unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("request_id,duration_ms"));
    let copied_rows: Vec<(String, String)> =
        lines.map(|l| l.split_once(',').map(|(a, b)| (a.to_string(), b.to_string())).unwrap()).collect();
    assert_eq!(copied_rows, expected);
    let text = String::from_utf8(copied(&client, &format!("COPY ({query}) TO STDOUT")).await.unwrap()).unwrap();
    assert_eq!(text.lines().count(), 80);
    assert_eq!(text.lines().next().unwrap(), format!("{}\t{}", expected[0].0, expected[0].1));
    // A table with its columns, NULLs written as PostgreSQL writes them in text format.
    let table =
        String::from_utf8(copied(&client, "COPY invocations (request_id, error_type) TO STDOUT").await.unwrap())
            .unwrap();
    let counts =
        simple_rows(&client, "SELECT count(*), count(*) FILTER (WHERE error_type IS NULL) FROM invocations").await;
    assert_eq!(table.lines().count().to_string(), counts[0][0].clone().unwrap());
    let nulls = table.lines().filter(|l| l.ends_with("\t\\N")).count();
    assert!(nulls > 0, "{table}");
    assert_eq!(nulls.to_string(), counts[0][1].clone().unwrap());
    let binary = copied(&client, &format!("COPY ({query}) TO STDOUT WITH (FORMAT binary)")).await.unwrap();
    assert!(binary.starts_with(b"PGCOPY\n\xff\r\n\0"), "{:?}", &binary[..16]);
    assert!(binary.ends_with(&[0xff, 0xff]));
    // The simple protocol (psql's \copy, psycopg) too.
    let simple = client.simple_query(&format!("COPY ({query}) TO STDOUT WITH (FORMAT csv)")).await;
    assert!(simple.is_err(), "tokio-postgres's simple_query does not read COPY data; the server did send it");

    // A COPY is checked as its query: an analyst does not read the audit that way either.
    let denied = copied(&client, "COPY (SELECT * FROM query_audit) TO STDOUT").await.unwrap_err();
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    for refused in [
        "COPY invocations FROM STDIN",
        "COPY invocations TO STDOUT WITH (FORCE_NULL (request_id))",
        "COPY invocations TO STDOUT WITH (FORMAT xml)",
    ] {
        let e = copied(&client, refused).await.unwrap_err();
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED), "{refused}: {e:?}");
        assert!(e.as_db_error().unwrap().message().contains("COPY"), "{e:?}");
    }

    // psycopg's savepoints inside a transaction: an error, then ROLLBACK TO, and the transaction goes on.
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("SAVEPOINT _pg3_1").await.unwrap();
    assert!(client.batch_execute("SELECT * FROM no_such_table").await.is_err());
    let aborted = client.batch_execute("SELECT 1").await.unwrap_err();
    assert!(aborted.as_db_error().unwrap().message().starts_with("current transaction is aborted"), "{aborted:?}");
    client.batch_execute("ROLLBACK TO SAVEPOINT _pg3_1").await.unwrap();
    assert_eq!(simple_rows(&client, "SELECT 1").await, vec![vec![Some("1".to_string())]]);
    client.batch_execute("RELEASE SAVEPOINT _pg3_1").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    let outside = client.batch_execute("SAVEPOINT lonely").await.unwrap_err();
    assert_eq!(outside.code(), Some(&tokio_postgres::error::SqlState::NO_ACTIVE_SQL_TRANSACTION), "{outside:?}");

    // psycopg's type lookup, SQLAlchemy's inspector functions.
    let types = simple_rows(&client, "SELECT to_regtype('int4'), to_regtype('integer[]'), to_regtype('hstore'), to_regtype('pg_catalog.timestamp with time zone')").await;
    assert_eq!(types, vec![vec![Some("23".into()), Some("1007".into()), None, Some("1184".into())]]);
    let object = simple_rows(&client, "SELECT json_build_object('n', 1, 'ok', true, 's', 'x', 'z', NULL)").await;
    assert_eq!(object[0][0].as_deref(), Some(r#"{"n":1,"ok":true,"s":"x","z":null}"#));

    // pgjdbc's getPrimaryKeys (DBeaver), verbatim: a composite field access on a set-returning function.
    let keys = "SELECT result.TABLE_CAT, result.TABLE_SCHEM, result.TABLE_NAME, result.COLUMN_NAME, result.KEY_SEQ, result.PK_NAME FROM (SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM,   ct.relname AS TABLE_NAME, a.attname AS COLUMN_NAME,   (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS PK_NAME,   information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM FROM pg_catalog.pg_class ct   JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)   JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)   JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid)   JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE true  AND ct.relname = E'invocations' AND i.indisprimary  ) result where  result.A_ATTNUM = (result.KEYS).x  ORDER BY result.table_name, result.pk_name, result.key_seq";
    assert!(simple_rows(&client, keys).await.is_empty(), "coldtrail's tables have no keys");
    assert!(client.query(keys, &[]).await.unwrap().is_empty());
    let expanded = simple_rows(
        &client,
        "SELECT (_pg_expandarray('7')).x, (_pg_expandarray('7')).n, _pg_expandarray('1 2') IS NULL",
    )
    .await;
    assert_eq!(expanded, vec![vec![Some("7".into()), Some("1".into()), Some("t".into())]]);

    // Every COPY is audited with the rows it sent.
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let audit = rows(&engine, "SELECT status, rows FROM query_audit WHERE sql LIKE 'COPY (SELECT request_id%FORMAT csv, HEADER)' AND status <> 'started'").await;
    assert_eq!(audit, vec![vec!["ok".to_string(), "80".to_string()]]);
    let _ = servers.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_and_describes_the_tables() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let psql = |command: &'static str| {
        let port = servers.pg.port().to_string();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "alice", "-d", "coldtrail", "-X", "-c", command])
                .env("PGPASSWORD", "alice-password")
                .env("PGCONNECT_TIMEOUT", "10")
                .output()
                .expect("psql is installed")
        })
    };
    let tables = psql("\\dt").await.unwrap();
    let text = String::from_utf8_lossy(&tables.stdout);
    assert!(tables.status.success(), "{}", String::from_utf8_lossy(&tables.stderr));
    for table in ["invocations", "logs", "spans", "cloudtrail", "alerts", "dead_letters", "query_audit", "ledger"] {
        assert!(text.contains(table), "\\dt lists {table}:\n{text}");
    }
    let described = psql("\\d invocations").await.unwrap();
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(described.status.success(), "{}", String::from_utf8_lossy(&described.stderr));
    assert!(text.contains("request_id") && text.contains("duration_ms"), "{text}");
    let _ = servers.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_json_csv_and_arrow_to_authenticated_callers() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/sql", servers.http);

    let anonymous = client.post(&url).body("SELECT 1").send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = client.post(&url).bearer_auth("alice-token-wrong-789").body("SELECT 1").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let json: serde_json::Value = client
        .post(&url)
        .bearer_auth("alice-token-0123456789")
        .body("SELECT function_name, count(*) AS n FROM invocations WHERE function_name <> 'orders-api' GROUP BY 1 ORDER BY 1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["row_count"], 2);
    assert_eq!(json["rows"][1]["function_name"], "payments");
    assert_eq!(json["rows"][1]["n"], 80);
    assert_eq!(json["columns"][1]["name"], "n");

    let csv = client
        .post(format!("{url}?format=csv"))
        .basic_auth("alice", Some("alice-password"))
        .body("SELECT request_id, duration_ms FROM invocations WHERE function_name = 'orders' ORDER BY request_id LIMIT 2")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().next(), Some("request_id,duration_ms"));
    assert_eq!(csv.lines().count(), 3);

    let arrow_body = client
        .post(&url)
        .bearer_auth("alice-token-0123456789")
        .header("accept", "application/vnd.apache.arrow.stream")
        .header("content-type", "application/json")
        .body(r#"{"sql": "SELECT ts, request_id FROM invocations WHERE function_name <> 'orders-api'"}"#)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow_body), None).unwrap();
    let total: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(total, 85);
    // Issue 18, item 5: results are streamed, and capped in every format. Past 1,000,000 rows the Arrow
    // stream is cut (before, it was built whole: 73 MB held), and JSON names the error in the document.
    let huge = client
        .post(format!("{url}?format=arrow"))
        .bearer_auth("alice-token-0123456789")
        .body("SELECT * FROM generate_series(1, 2000000)")
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 200);
    let (bytes, cut) = read_body(huge).await;
    assert!(cut, "a result past the cap does not end cleanly");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let sent: usize = reader.map_while(|b| b.ok()).map(|b| b.num_rows()).sum();
    assert!(sent > 0 && sent <= 1_000_000, "{sent} rows sent");
    let huge = client
        .post(&url)
        .bearer_auth("alice-token-0123456789")
        .body("SELECT * FROM generate_series(1, 2000000)")
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 200);
    let (bytes, cut) = read_body(huge).await;
    assert!(cut);
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["kind"], "too_large", "{}", body["error"]);
    assert!(body["error"]["error"].as_str().unwrap().contains("1000000 rows"), "{}", body["error"]);
    assert!(body.get("row_count").is_none());
    // A statement that fails before its first rows are sent is answered with its own status.
    let failing = client
        .post(&url)
        .bearer_auth("alice-token-0123456789")
        .body("SELECT CAST(concat('x', v) AS INT) FROM generate_series(1, 60) t(v)")
        .send()
        .await
        .unwrap();
    assert_ne!(failing.status(), 200);
    let body: serde_json::Value = failing.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Cast"), "{body}");

    let denied =
        client.post(&url).bearer_auth("alice-token-0123456789").body("CREATE VIEW v AS SELECT 1").send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["sqlstate"], "42501");
    let bad = client.post(&url).bearer_auth("alice-token-0123456789").body("SELEC 1").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad_json = client
        .post(&url)
        .bearer_auth("alice-token-0123456789")
        .header("content-type", "application/json")
        .body("{\"sql\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    // The server answers before reading all of the body and then closes the connection: asked not to keep
    // it, the client does not hand it to the next request (which then failed now and then with hyper's
    // IncompleteMessage).
    let huge = client
        .post(&url)
        .bearer_auth("alice-token-0123456789")
        .header("connection", "close")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    let timeline: serde_json::Value = client
        .get(format!("http://{}/api/v1/timeline", servers.http))
        .query(&[("key", "198.51.100.7"), ("from", "2026-11-20T13:00:00Z")])
        .bearer_auth("alice-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(timeline["row_count"], 3, "{timeline}");
    assert!(timeline["rows"][0]["summary"].as_str().is_some());

    let health: serde_json::Value =
        client.get(format!("http://{}/healthz", servers.http)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = client.get(format!("http://{}/metrics", servers.http)).send().await.unwrap().text().await.unwrap();
    for name in
        ["query_statements_total", "query_duration_seconds_bucket", "query_rows_total", "query_auth_failures_total"]
    {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let _ = servers.stop.send(true);
}

/// DBeaver's connection start-up and database navigator queries (the ones its PostgreSQL driver sends, as
/// recorded in datafusion-postgres's `tests/dbeaver.rs`, Apache-2.0), plus the column listing its table
/// browser runs, replayed by an analyst over both query protocols.
const DBEAVER_QUERIES: &[&str] = &[
    "SET extra_float_digits = 3",
    "SET application_name = 'PostgreSQL JDBC Driver'",
    "SET application_name = 'DBeaver 25.1.5 - Main <postgres>'",
    "SELECT current_schema(),session_user",
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = 1034",
    "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp ON sp.nspoid = typnamespace WHERE pg_type.oid = 1034 ORDER BY sp.r, pg_type.oid DESC",
    "SHOW search_path",
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='postgres'",
    "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'",
    "SELECT version()",
    "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1",
    "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1",
    "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN pg_catalog.pg_description d ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') AND (et.typcategory IS NULL OR et.typcategory <> 'C')",
    "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr, pg_catalog.pg_get_partkeydef(c.oid) as partition_key FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass WHERE c.relnamespace=11 AND c.relkind not in ('i','I','c')",
    "select c.oid,pg_catalog.pg_total_relation_size(c.oid) as total_rel_size,pg_catalog.pg_relation_size(c.oid) as rel_size FROM pg_class c WHERE c.relnamespace='public'",
    "SELECT i.*,i.indkey as keys,c.relname,c.relnamespace,c.relam,c.reltablespace,tc.relname as tabrelname,dsc.description,pg_catalog.pg_get_expr(i.indpred, i.indrelid) as pred_expr,pg_catalog.pg_get_expr(i.indexprs, i.indrelid, true) as expr,pg_catalog.pg_relation_size(i.indexrelid) as index_rel_size,pg_catalog.pg_stat_get_numscans(i.indexrelid) as index_num_scans FROM pg_catalog.pg_index i INNER JOIN pg_catalog.pg_class c ON c.oid=i.indexrelid INNER JOIN pg_catalog.pg_class tc ON tc.oid=i.indrelid LEFT OUTER JOIN pg_catalog.pg_description dsc ON i.indexrelid=dsc.objoid WHERE i.indrelid=1 ORDER BY tabrelname, c.relname",
    "SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace,d.description, case when c.contype='c' then \"substring\"(pg_get_constraintdef(c.oid), 7) else null end consrc_copy FROM pg_catalog.pg_constraint c INNER JOIN pg_catalog.pg_class t ON t.oid=c.conrelid LEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_constraint'::regclass WHERE c.conrelid=1 ORDER BY c.oid",
    "SELECT c.relname, a.attname, a.atttypid, a.attnum FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid WHERE c.relname = 'invocations' AND a.attnum > 0 ORDER BY a.attnum",
    "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'invocations' ORDER BY ordinal_position",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbeaver_browses_the_catalog_as_an_analyst() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let client = connect(servers.pg, "alice", "alice-password").await.unwrap();
    for query in DBEAVER_QUERIES {
        client.simple_query(query).await.unwrap_or_else(|e| panic!("simple protocol: {query}\n{e:?}"));
        if !query.starts_with("SET") && !query.starts_with("SHOW") {
            client.query(*query, &[]).await.unwrap_or_else(|e| panic!("extended protocol: {query}\n{e:?}"));
        }
    }
    // The browser finds the stored tables and their columns.
    let tables = client
        .simple_query(
            "SELECT relname FROM pg_catalog.pg_class WHERE relname IN ('invocations', 'alerts', 'query_audit')",
        )
        .await
        .unwrap();
    let names: Vec<String> = tables
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let columns = client
        .query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'invocations' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(columns.first().map(|r| r.get::<_, String>(0)), Some("ts".to_string()));
    assert!(columns.len() > 20);
    let _ = servers.stop.send(true);
}

/// The outcome of one statement on one channel: `ok`, or the refusal's SQLSTATE / HTTP status.
fn outcome<T>(result: &Result<T, tokio_postgres::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().map_or_else(|| format!("error ({e})"), |c| c.code().to_string()),
    }
}

/// Issue 18: the role matrix. Every statement class runs as an analyst over the simple and the extended
/// PostgreSQL protocol, as a cursor's query and over HTTP; what an analyst may not run is refused with
/// the privilege error (SQLSTATE 42501, HTTP 403) on every channel, and leaves no trace: no table, no
/// row, no file, no setting changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_an_analyst_only_reads_on_every_channel() {
    const DENIED: &str = "42501";
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let admin = connect(servers.pg, "root", "root-password").await.unwrap();
    admin.simple_query("CREATE TABLE matrix_t AS VALUES (1)").await.unwrap();
    admin.simple_query("PREPARE matrix_p AS SELECT 1").await.unwrap();
    let analyst = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/sql", servers.http);
    let copied = std::env::temp_dir().join(format!("coldtrail-matrix-{}.csv", std::process::id()));
    let copied_sql = copied.display();
    let before = f.engine.context().state().config().options().clone();

    // (class, statement, whether an analyst may run it, whether it can be a cursor's query)
    let matrix: Vec<(&str, String, bool, bool)> = vec![
        ("query", "SELECT count(*) FROM invocations".into(), true, true),
        ("EXPLAIN", "EXPLAIN SELECT count(*) FROM invocations".into(), true, false),
        ("EXPLAIN ANALYZE", "EXPLAIN ANALYZE SELECT count(*) FROM invocations".into(), true, false),
        ("SET engine", "SET datafusion.execution.batch_size = 1".into(), false, false),
        ("SET engine, quoted", "SET \"datafusion.runtime.memory_limit\" = '1K'".into(), false, false),
        ("DDL", "CREATE TABLE alice_t AS SELECT 1 AS x".into(), false, false),
        ("DDL", "CREATE VIEW alice_v AS SELECT 1 AS x".into(), false, false),
        ("DDL", "DROP TABLE matrix_t".into(), false, false),
        ("SELECT INTO", "SELECT 42 AS x INTO alice_into".into(), false, true),
        ("DML", "INSERT INTO matrix_t VALUES (2)".into(), false, true),
        ("COPY", format!("COPY (SELECT 1) TO '{copied_sql}'"), false, false),
        (
            "CREATE EXTERNAL TABLE",
            "CREATE EXTERNAL TABLE alice_ext STORED AS CSV LOCATION '/etc/passwd'".into(),
            false,
            false,
        ),
        ("PREPARE", "PREPARE alice_p AS SELECT 1".into(), false, false),
        ("EXECUTE", "EXECUTE matrix_p".into(), false, false),
        ("EXPLAIN ANALYZE DDL", "EXPLAIN ANALYZE CREATE TABLE alice_ea AS SELECT 1 AS x".into(), false, false),
        ("EXPLAIN ANALYZE DML", "EXPLAIN ANALYZE INSERT INTO matrix_t VALUES (3)".into(), false, false),
        ("EXPLAIN COPY", format!("EXPLAIN COPY (SELECT 1) TO '{copied_sql}'"), false, false),
        ("multi-statement", "SELECT 1; CREATE VIEW alice_multi AS SELECT 1 AS x".into(), false, false),
        ("admin table", "SELECT user_name, sql FROM query_audit".into(), false, true),
        ("admin table, subquery", "SELECT 1 WHERE EXISTS (SELECT 1 FROM query_audit)".into(), false, true),
    ];
    let mut table = vec!["class | statement | simple | extended | cursor | http".to_string()];
    for (n, (class, sql, allowed, as_cursor)) in matrix.iter().enumerate() {
        let simple = outcome(&analyst.simple_query(sql).await);
        let multi = sql.contains(';');
        let extended = if multi { "-".into() } else { outcome(&analyst.query(sql.as_str(), &[]).await) };
        let cursor = if *as_cursor {
            let declared = outcome(&analyst.simple_query(&format!("DECLARE alice_c{n} CURSOR FOR {sql}")).await);
            if declared == "ok" {
                outcome(&analyst.simple_query(&format!("FETCH ALL FROM alice_c{n}")).await)
            } else {
                declared
            }
        } else {
            "-".into()
        };
        let response = http.post(&url).bearer_auth("alice-token-0123456789").body(sql.clone()).send().await.unwrap();
        let http_status = response.status();
        table.push(format!("{class} | {sql} | {simple} | {extended} | {cursor} | {}", http_status.as_u16()));
        if *allowed {
            for (channel, got) in [("simple", &simple), ("extended", &extended), ("cursor", &cursor)] {
                assert!(got == "ok" || got == "-", "{sql} over {channel}: {got}");
            }
            assert!(http_status.is_success(), "{sql} over HTTP: {http_status}");
        } else {
            assert_eq!(simple, DENIED, "{sql} over the simple protocol");
            assert!(extended != "ok", "{sql} over the extended protocol");
            assert!(cursor == DENIED || cursor == "-", "{sql} as a cursor: {cursor}");
            assert!(!http_status.is_success(), "{sql} over HTTP: {http_status}");
            assert_eq!(http_status, if multi { 400 } else { 403 }, "{sql} over HTTP");
        }
    }
    // A cursor over the extended protocol is checked too.
    let cursor = analyst.query("DECLARE alice_x CURSOR FOR INSERT INTO matrix_t VALUES (44)", &[]).await;
    assert_eq!(outcome(&cursor), DENIED);
    table.push(format!("DECLARE (extended) | DECLARE … FOR INSERT | - | {} | - | -", outcome(&cursor)));
    eprintln!("{}", table.join("\n"));

    // Nothing changed.
    let n: i64 = admin.query_one("SELECT count(*) FROM matrix_t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "an analyst's statement wrote to a table");
    let tables: i64 = admin
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'alice%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "an analyst's statement created a table");
    assert!(!copied.exists(), "an analyst's COPY wrote a file");
    let after = f.engine.context().state().config().options().clone();
    assert_eq!(after.execution.batch_size, before.execution.batch_size);
    let _ = servers.stop.send(true);
}

/// Issue 18, item 7: idle TCP sockets and unfinished logins cannot lock users out of the pg port. The
/// connection limit counts logged-in connections; a login has a short timeout; one address's logins
/// under way are capped (the newest pushes the oldest out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_lock_users_out_of_the_postgres_port() {
    use tokio::io::AsyncReadExt;
    let f = fixture().await;
    let admission = query::admission::AdmissionLimits {
        max_connections: 2,
        startup_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let servers = start_with(f.engine.clone(), query::pg::PgOptions { admission, ..Default::default() }).await;
    // Forty sockets that never send a startup message, more than the limit and than one address's share.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(servers.pg).await.unwrap());
    }
    let started = std::time::Instant::now();
    let alice = connect(servers.pg, "alice", "alice-password").await.expect("a user logs in past idle sockets");
    assert!(started.elapsed() < Duration::from_secs(1), "login took {:?}", started.elapsed());
    let root = connect(servers.pg, "root", "root-password").await.unwrap();
    // The limit is of logged-in connections: a third is refused with PostgreSQL's code, at login.
    let third = connect(servers.pg, "root", "root-password").await.expect_err("a third logged-in connection");
    assert_eq!(third.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{third:?}");
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = connect(servers.pg, "alice", "alice-password").await.expect("a slot is given back at disconnect");
    again.simple_query("SELECT 1").await.unwrap();
    root.simple_query("SELECT 1").await.unwrap();
    // Logins that do not finish are closed after the timeout (pgwire's own is 60 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut closed = 0;
    for socket in &mut idle {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), socket.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, idle.len(), "idle logins still open after the startup timeout");
    let _ = servers.stop.send(true);
}

/// Found while looking for more of issue 18's kind: a chain of 3,000 operators (`SELECT 1+1+...`, 6 KB)
/// parsed to a tree so deep that the SQL layer overflowed its stack and aborted the server, for every
/// session, from one analyst's statement. Such statements are now refused before they are parsed, on
/// both protocols, and the server answers on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_deep_enough_to_overflow_the_stack_is_refused_and_the_server_stays_up() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let analyst = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let chain = |op: &str, n: usize| format!("SELECT {}", vec!["1"; n].join(op));
    for deep in [chain("+", 50_000), chain(" AND 1=", 30_000), chain("||", 50_000)] {
        let simple = analyst.simple_query(&deep).await.unwrap_err();
        assert!(format!("{simple:?}").contains("operators"), "{simple:?}");
        let extended = analyst.query(&deep, &[]).await.unwrap_err();
        assert!(format!("{extended:?}").contains("operators"), "{extended:?}");
    }
    let unions = format!("SELECT count(*) FROM (SELECT 1 {}) t", vec!["UNION ALL SELECT 1"; 20_000].join(" "));
    assert!(analyst.simple_query(&unions).await.is_err());
    let http = reqwest::Client::new()
        .post(format!("http://{}/api/v1/sql", servers.http))
        .bearer_auth("alice-token-0123456789")
        .body(chain("+", 20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 400);
    // Within the bound, a long chain still runs; and the server is still up for everyone.
    let sum: i64 = analyst.query_one(&chain("+", query::access::OPERATORS_MAX), &[]).await.unwrap().get(0);
    assert_eq!(sum, query::access::OPERATORS_MAX as i64);
    let n: i64 = analyst.query_one("SELECT count(*) FROM invocations", &[]).await.unwrap().get(0);
    assert!(n > 0);
    let _ = servers.stop.send(true);
}

/// The bytes of a response's body, and whether it was cut (ended with an error, not cleanly).
async fn read_body(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (bytes, false),
            Err(_) => return (bytes, true),
        }
    }
}

/// Issue 18, item 5: HTTP results are sent while they are computed, not built whole first: the first
/// rows of a statement that runs into its timeout arrive long before it, and a client that stops
/// reading holds the statement only until its timeout, after which its slot is free and the response
/// is cut, not ended as if whole. Before, the same request was answered 413 or 504 with no rows at all,
/// after the server had held the result in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_results_are_streamed_and_a_reader_that_stalls_is_cut_at_the_timeout() {
    let f = fixture().await;
    let limits = Limits {
        statement_timeout: Duration::from_secs(3),
        max_result_rows: usize::MAX,
        max_result_bytes: 64 << 20,
        max_concurrent: 3,
        ..Limits::default()
    };
    let engine = engine_with_users(f.store.clone(), limits).await.unwrap();
    let servers = start(engine.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/sql?format=csv", servers.http);
    let endless = "SELECT v, repeat('x', 200) AS pad FROM generate_series(1, 5000000000) t(v)";
    let started = std::time::Instant::now();
    let mut response = http.post(&url).bearer_auth("alice-token-0123456789").body(endless).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    let first_after = started.elapsed();
    assert!(first_after < Duration::from_millis(2000), "the first rows came after {first_after:?}");
    assert!(String::from_utf8_lossy(&first).starts_with("v,pad\n1,xxx"));
    // The reader stalls past the timeout; the server holds no more than its buffers meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (rest, cut) = read_body(response).await;
    assert!(cut, "a result stopped by the timeout is cut");
    assert!(first.len() + rest.len() < 64 << 20);
    // Its slot is free, and the audit says how it ended.
    let one = http.post(&url).bearer_auth("root-token-0123456789ab").body("SELECT 1 AS one").send().await.unwrap();
    assert_eq!(one.text().await.unwrap(), "one\n1\n");
    let mut outcome = String::new();
    for _ in 0..50 {
        let audit = engine
            .execute(
                &admin(),
                &format!("SELECT status, error FROM query_audit WHERE sql = '{}'", endless.replace('\'', "''")),
                None,
            )
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&audit.batches).unwrap().to_string();
        if text.contains("timed out") {
            outcome = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(outcome.contains("error"), "the audit records the timeout: {outcome}");
    let _ = servers.stop.send(true);
}

/// Issue 18, item 4: on the PostgreSQL protocol too, a statement ends at its timeout, at a cancel
/// request and when its client goes away, and its slot is given back each time: runaway analyst queries
/// never leave the server answering 504 to everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statements_end_at_their_timeout_a_cancel_or_a_disconnect_and_free_their_slot() {
    let f = fixture().await;
    let limits = Limits { statement_timeout: Duration::from_secs(3), max_concurrent: 2, ..Limits::default() };
    let engine = engine_with_users(f.store.clone(), limits).await.unwrap();
    let servers = start(engine.clone()).await;
    let runaway = "SELECT count(*) FROM generate_series(1, 50000000000)";
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/sql", servers.http);
    let select_one = || async {
        let started = std::time::Instant::now();
        let response = http.post(&url).bearer_auth("root-token-0123456789ab").body("SELECT 1").send().await.unwrap();
        (response.status(), started.elapsed())
    };

    // The timeout, over the simple and the extended protocol at once (both slots taken).
    let a = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let b = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let started = std::time::Instant::now();
    let (simple, extended) = tokio::join!(a.simple_query(runaway), b.query(runaway, &[]));
    for result in [simple.map(|_| ()), extended.map(|_| ())] {
        let error = result.expect_err("a runaway statement ends");
        assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{error:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(6), "ended after {:?}", started.elapsed());
    let (status, _) = select_one().await;
    assert_eq!(status, 200, "the slots were given back");

    // A session's shorter statement_timeout holds.
    a.simple_query("SET statement_timeout = 1000").await.unwrap();
    let started = std::time::Instant::now();
    assert!(a.simple_query(runaway).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(2500), "the session's timeout: {:?}", started.elapsed());

    // A cancel request (psql's Ctrl-C).
    let cancel = b.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let started = std::time::Instant::now();
    let error = b.simple_query(runaway).await.expect_err("cancelled");
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "cancelled after {:?}", started.elapsed());
    canceller.await.unwrap();

    // Two clients that go away mid-statement: their slots come back well before the timeout, so the
    // server answers others at once.
    let engine = engine_with_users(
        f.store.clone(),
        Limits { statement_timeout: Duration::from_secs(60), max_concurrent: 2, ..Limits::default() },
    )
    .await
    .unwrap();
    let _ = servers.stop.send(true);
    let servers = start(engine).await;
    let url = format!("http://{}/api/v1/sql", servers.http);
    for _ in 0..2 {
        let config =
            format!("host=127.0.0.1 port={} user=alice password=alice-password dbname=coldtrail", servers.pg.port());
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        let query = tokio::spawn(async move { client.simple_query(runaway).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The client process dies: its socket is closed without a Terminate.
        query.abort();
        connection.abort();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    let response = http.post(&url).bearer_auth("root-token-0123456789ab").body("SELECT 1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1), "SELECT 1 waited {:?} for a slot", started.elapsed());
    let _ = servers.stop.send(true);
}

/// Issue 18, item 12: HTTP basic authentication does not reveal which names exist by its timing (in a
/// debug build the key derivation takes milliseconds, so skipping it for unknown names shows plainly),
/// and an address that keeps failing is slowed to a stop while bearer tokens still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_auth_hides_which_users_exist_and_limits_failures_per_address() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/sql", servers.http);
    let attempt = |user: &'static str, password: &'static str| {
        let request = http.post(&url).basic_auth(user, Some(password)).body("SELECT 1");
        async move {
            let started = std::time::Instant::now();
            let status = request.send().await.unwrap().status();
            (status, started.elapsed())
        }
    };
    let mut unknown = Vec::new();
    let mut known = Vec::new();
    for _ in 0..4 {
        let (status, took) = attempt("mallory", "wrong-password").await;
        assert_eq!(status, 401);
        unknown.push(took);
        let (status, took) = attempt("alice", "wrong-password").await;
        assert_eq!(status, 401);
        known.push(took);
    }
    let (unknown, known) = (unknown.iter().min().unwrap(), known.iter().min().unwrap());
    assert!(unknown.as_secs_f64() > 0.5 * known.as_secs_f64(), "unknown user {unknown:?}, known user {known:?}");
    // Two more failures make ten; the eleventh attempt is refused unchecked, even with the right password.
    for _ in 0..2 {
        assert_eq!(attempt("alice", "wrong-password").await.0, 401);
    }
    let (status, _) = attempt("alice", "alice-password").await;
    assert_eq!(status, 429);
    let response = http.post(&url).basic_auth("alice", Some("alice-password")).body("SELECT 1").send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let token = http.post(&url).bearer_auth("alice-token-0123456789").body("SELECT 1").send().await.unwrap();
    assert_eq!(token.status(), 200, "bearer tokens are not limited");
    let _ = servers.stop.send(true);
}

/// Issue 18, item 6: the audit cannot be evaded. An analyst's statement longer than the audit stores
/// whole is refused (a long comment cannot push the query out of the record); an admin's is stored cut
/// with its full length and SHA-256; and a statement running when the server is killed has its durable
/// `started` row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_keeps_long_statements_and_statements_cut_short_by_a_kill() {
    use sha2::Digest;
    let f = fixture().await;
    let long = format!("/* {} */ SELECT count(*) FROM invocations", "x".repeat(70_000));
    match f.engine.execute(&analyst(), &long, None).await {
        Err(QueryError::Denied(message)) => assert!(message.contains("longer than"), "{message}"),
        other => panic!("an analyst's 70 kB statement ran: {other:?}"),
    }
    let servers = start(f.engine.clone()).await;
    let alice = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let refused = alice.simple_query(&long).await.expect_err("refused over pg");
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(f.engine.execute(&admin(), &long, None).await.is_ok());
    let _ = servers.stop.send(true);
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let stored = rows(&engine, "SELECT sql FROM query_audit WHERE user_name = 'root' AND status = 'ok'").await;
    let digest: String = sha2::Sha256::digest(long.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        stored.iter().any(|r| r[0].ends_with(&format!("{} bytes in all, sha256 {digest}]", long.len()))),
        "no stored length and SHA-256 of the long statement"
    );

    // The real server, killed while a statement runs.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (pg, http) = (port(0), port(1));
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--pg-listen", &format!("127.0.0.1:{pg}"), "--http-listen", &format!("127.0.0.1:{http}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let credentials: serde_json::Value = loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", pg)).is_ok();
        if let (true, Ok(bytes)) = (ready, std::fs::read(data.join("credentials.json"))) {
            break serde_json::from_slice(&bytes).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "serve did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (user, password) = (credentials["user"].as_str().unwrap(), credentials["password"].as_str().unwrap());
    let config = format!("host=127.0.0.1 port={pg} user={user} password={password} dbname=coldtrail");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    tokio::spawn(async move { client.simple_query("SELECT count(*) FROM generate_series(1, 50000000000)").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    serve.kill().unwrap();
    serve.wait().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(&data)
        // (Not naming the runaway's text: this statement's own `started` row would match it.)
        .args([
            "sql",
            "SELECT status FROM query_audit WHERE strpos(sql, concat('5000', '0000000')) > 0",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&output.stdout);
    assert_eq!(csv.lines().skip(1).collect::<Vec<_>>(), ["started"], "{csv}");
}

/// An incident about `orders` (the fourth hour's function) and its one alert, stored as the incident
/// builder stores them.
fn store_incident(store: &Store) {
    use store::alerts::{AlertRow, Entity, EntityKind, Severity};
    use store::tables::IncidentRow;
    let hour3 = (BASE_MS + 3 * 3_600_000) * 1_000;
    let alert = AlertRow {
        ts_us: hour3 + 10 * 60_000_000,
        alert_id: "alert-orders".into(),
        detector: "injection.sql".into(),
        severity: Severity::High,
        title: "SQL injection against orders".into(),
        function: Some("orders".into()),
        entity: Some("198.51.100.7".into()),
        window_start_us: hour3,
        window_end_us: hour3 + 10 * 60_000_000,
        score: f64::NAN,
        count: 1,
        observed: serde_json::Value::Null,
        expected: serde_json::Value::Null,
        evidence: vec![],
        attack_ids: vec!["T1190".into()],
        query: String::new(),
        entities: vec![
            Entity(EntityKind::Address, "198.51.100.7".into()),
            Entity(EntityKind::Function, "orders".into()),
        ],
    };
    let incident: IncidentRow = IncidentRow {
        ts: alert.ts_us,
        incident_id: "inc-orders".into(),
        status: Some("open".into()),
        severity: Some("high".into()),
        title: Some("198.51.100.7: SQL injection against orders".into()),
        first_seen: Some(alert.ts_us),
        last_seen: Some(alert.ts_us),
        alert_count: Some(1),
        alert_ids: Some(r#"["alert-orders"]"#.into()),
        entities: Some(serde_json::to_string(&alert.entities).unwrap()),
        ..Default::default()
    };
    store
        .append(
            &[
                (store::Table::Alerts, AlertRow::batch(&[alert]).unwrap()),
                (store::Table::Incidents, IncidentRow::batch(&[incident]).unwrap()),
            ],
            &[],
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_triage_incidents_on_every_channel_and_each_change_is_audited() {
    let f = fixture().await;
    store_incident(&f.store);
    let servers = start(f.engine.clone()).await;
    let latest = "SELECT status, assignee, note, changed_by, CAST(alert_count AS VARCHAR) FROM incidents \
                  WHERE incident_id = 'inc-orders' ORDER BY ts DESC LIMIT 1";

    // psql's simple protocol, as an analyst: the call answers with the row it stored.
    let alice = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let stored =
        simple_rows(&alice, "CALL incident_status('inc-orders', 'acknowledged', 'blocking 198.51.100.7')").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].contains(&Some("acknowledged".into())) && stored[0].contains(&Some("alice".into())),
        "{stored:?}"
    );
    // The HTTP API, as an admin.
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/sql", servers.http))
        .bearer_auth("root-token-0123456789ab")
        .body("CALL incident_assign('inc-orders', 'bob')")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    // The CLI's path.
    f.engine
        .execute(&analyst(), "CALL incident_note('inc-orders', '<script>alert(1)</script> is text')", None)
        .await
        .unwrap();
    assert_eq!(
        rows(&f.engine, latest).await,
        [["acknowledged", "bob", "<script>alert(1)</script> is text", "alice", "1"]],
        "the latest row is the whole state, every change carried"
    );
    // Mistakes are refused with the reason, and change nothing.
    for (sql, reason) in [
        ("CALL incident_status('inc-orders', 'closed')", "one of open, acknowledged, resolved, false_positive"),
        ("CALL incident_status('no-such-incident', 'resolved')", "no incident"),
        ("CALL incident_status('inc-orders', 'resolved'); SELECT 1", "statement of its own"),
    ] {
        let error = alice.simple_query(sql).await.expect_err(sql);
        assert!(error.as_db_error().is_some_and(|e| e.message().contains(reason)), "{sql}: {error:?}");
    }
    assert_eq!(rows(&f.engine, latest).await[0][0], "acknowledged");

    // `incident(id)`: the evidence of its entities (the address's and orders' rows) and its alert, over
    // the alert's window, in time order.
    let evidence = rows(&f.engine, "SELECT table_name, row_id, CAST(ts AS BIGINT) FROM incident('inc-orders')").await;
    let tables: std::collections::BTreeSet<&str> = evidence.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(tables, ["alerts", "invocations", "logs"].into_iter().collect(), "{evidence:?}");
    assert!(evidence.iter().any(|r| r[1] == "alert-orders"));
    // orders' 5 invocations of the fourth hour fall in the window (one a minute from its start), with
    // their log lines; of payments, only the log line that names 198.51.100.7 within it.
    let invocations: Vec<&Vec<String>> = evidence.iter().filter(|r| r[0] == "invocations").collect();
    assert_eq!(invocations.len(), 5, "{evidence:?}");
    assert!(invocations.iter().all(|r| r[1].starts_with("orders-03-")), "{evidence:?}");
    let payments: Vec<&Vec<String>> = evidence.iter().filter(|r| r[1].starts_with("payments-")).collect();
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert!(payments[0][0] == "logs" && payments[0][1].starts_with("payments-03-0000"), "{payments:?}");
    assert!(
        evidence.windows(2).all(|w| w[0][2].parse::<i64>().unwrap() <= w[1][2].parse::<i64>().unwrap()),
        "in time order"
    );
    let none = f.engine.execute(&admin(), "SELECT * FROM incident('no-such-incident')", None).await;
    assert!(none.is_err_and(|e| e.to_string().contains("no incident")));

    // Every change is audited with its caller.
    let _ = servers.stop.send(true);
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let audit = rows(
        &engine,
        "SELECT user_name, protocol, status, sql FROM query_audit WHERE sql LIKE 'CALL%' AND status <> 'started' \
         ORDER BY ts",
    )
    .await;
    let calls: Vec<(&str, &str, &str)> = audit.iter().map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str())).collect();
    assert_eq!(
        calls,
        [
            ("alice", "pg", "ok"),
            ("root", "http", "ok"),
            ("alice", "cli", "ok"),
            ("alice", "pg", "error"),
            ("alice", "pg", "error"),
            ("alice", "pg", "error")
        ],
        "{audit:?}"
    );
}

/// A console request as a browser sends it: the session cookie, the CSRF token when given.
fn as_browser(request: reqwest::RequestBuilder, cookie: &str, csrf: Option<&str>) -> reqwest::RequestBuilder {
    let request = request.header("cookie", cookie);
    match csrf {
        Some(token) => request.header("x-csrf-token", token),
        None => request,
    }
}

/// The JSON body of a request's answer.
async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Issue 21: the console's sessions over real HTTP (reqwest): a login sets an `HttpOnly`, `SameSite=Strict`
/// cookie; pages without it redirect to the login; a cookie-authenticated statement needs the session's
/// CSRF token and is audited as the user; an analyst cannot reach the admin page or its data; every
/// response carries the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_need_their_csrf_token_and_admin_pages_an_admin() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let base = format!("http://{}", servers.http);
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = plain.get(format!("{base}/console/incident.html")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/console/login.html");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'")
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let login = plain.get(format!("{base}/console/login.html")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.text().await.unwrap().contains("action=\"/console/login\""));

    let log_in = |user: &'static str, password: &'static str| {
        let plain = plain.clone();
        let base = base.clone();
        async move {
            let response = plain
                .post(format!("{base}/console/login"))
                .form(&[("user", user), ("password", password)])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 303);
            let cookie = response.headers().get("set-cookie").map(|c| c.to_str().unwrap().to_string());
            (response.headers()["location"].to_str().unwrap().to_string(), cookie)
        }
    };
    let (location, cookie) = log_in("alice", "wrong-password").await;
    assert_eq!((location.as_str(), cookie), ("/console/login.html?failed=1", None));
    let (location, cookie) = log_in("alice", "alice-password").await;
    assert_eq!(location, "/console/");
    let cookie = cookie.unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session_cookie = cookie.split(';').next().unwrap().to_string();

    let session = json_of(as_browser(plain.get(format!("{base}/api/v1/session")), &session_cookie, None)).await;
    assert_eq!((session["user"].as_str(), session["role"].as_str()), (Some("alice"), Some("analyst")));
    let csrf = session["csrf"].as_str().unwrap();
    let page = plain.get(format!("{base}/console/")).header("cookie", &session_cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/console/incidents.js"));

    let sql = "SELECT count(*) AS n FROM invocations";
    let statement = |token: Option<&str>, text: &'static str| {
        as_browser(plain.post(format!("{base}/api/v1/sql")), &session_cookie, token).body(text).send()
    };
    assert_eq!(statement(None, sql).await.unwrap().status(), 403, "a statement without the CSRF token");
    assert_eq!(statement(Some("not-the-token"), sql).await.unwrap().status(), 403);
    assert_eq!(statement(Some(csrf), sql).await.unwrap().status(), 200);
    // An analyst's session is an analyst: no DDL, no admin page, no admin data.
    assert_eq!(statement(Some(csrf), "CREATE VIEW v AS SELECT 1").await.unwrap().status(), 403);
    for path in ["/console/admin.html", "/console/admin.js", "/api/v1/admin/users"] {
        let refused = plain.get(format!("{base}{path}")).header("cookie", &session_cookie).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{path}");
    }
    let (_, admin_cookie) = log_in("root", "root-password").await;
    let admin_cookie = admin_cookie.unwrap().split(';').next().unwrap().to_string();
    let users = json_of(as_browser(plain.get(format!("{base}/api/v1/admin/users")), &admin_cookie, None)).await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2), "{users}");

    // The workbench's history: an analyst may not read query_audit, but gets their own statements (the
    // audit writes outcomes in the background: waited for).
    f.engine.execute(&admin(), "SELECT 'the admin ran this' AS marker", None).await.unwrap();
    let mut history = serde_json::Value::Null;
    for _ in 0..100 {
        history = json_of(as_browser(plain.get(format!("{base}/api/v1/history")), &session_cookie, None)).await;
        if history["rows"].as_array().is_some_and(|rows| rows.iter().any(|r| r["sql"] == sql)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mine: Vec<&str> = history["rows"].as_array().unwrap().iter().map(|r| r["sql"].as_str().unwrap()).collect();
    assert!(mine.contains(&sql), "{history}");
    assert!(!mine.iter().any(|s| s.contains("the admin ran this")), "another user's statement: {history}");
    // Logging out ends the session (with its token).
    let out =
        as_browser(plain.post(format!("{base}/console/logout")), &session_cookie, Some(csrf)).send().await.unwrap();
    assert_eq!(out.status(), 303);
    let after = plain.get(format!("{base}/api/v1/session")).header("cookie", &session_cookie).send().await.unwrap();
    assert_eq!(after.status(), 401);

    let _ = servers.stop.send(true);
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let audit = rows(
        &engine,
        "SELECT user_name, protocol, status FROM query_audit WHERE protocol = 'console' AND status <> 'started' ORDER BY ts",
    )
    .await;
    assert_eq!(audit, [["alice", "console", "ok"], ["alice", "console", "denied"]], "{audit:?}");
}

/// Admins add and lift suppressions at run time (`CALL suppress`, `CALL unsuppress`) into the shared
/// location, where every outbox reads them; an analyst may not, on any channel; each call is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_and_lift_suppressions_and_analysts_may_not() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let sql = "CALL suppress('callers.', 'orders', NULL, '2030-01-01T00:00:00Z', 'new partner onboarding')";
    let alice = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let denied = alice.simple_query(sql).await.expect_err("an analyst's suppression");
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    assert!(matches!(f.engine.execute(&analyst(), sql, None).await, Err(QueryError::Denied(_))));
    assert!(store::suppressions::read(f.store.location()).await.unwrap().is_empty());

    let root = connect(servers.pg, "root", "root-password").await.unwrap();
    let added = simple_rows(&root, sql).await;
    let id = added[0][0].clone().unwrap();
    let stored = store::suppressions::read(f.store.location()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].id.as_str(), stored[0].added_by.as_str()), (id.as_str(), "root"));
    assert_eq!((stored[0].detector.as_deref(), stored[0].function.as_deref()), (Some("callers."), Some("orders")));
    let list = |token: &str| {
        reqwest::Client::new().get(format!("http://{}/api/v1/admin/suppressions", servers.http)).bearer_auth(token)
    };
    let listed = json_of(list("root-token-0123456789ab")).await;
    assert_eq!(listed["suppressions"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(list("alice-token-0123456789").send().await.unwrap().status(), 403);
    let lifted = format!("CALL unsuppress('{id}')");
    assert!(matches!(f.engine.execute(&analyst(), &lifted, None).await, Err(QueryError::Denied(_))));
    f.engine.execute(&admin(), &lifted, None).await.unwrap();
    assert!(store::suppressions::read(f.store.location()).await.unwrap().is_empty());
    let again = f.engine.execute(&admin(), &lifted, None).await.unwrap_err();
    assert!(again.to_string().contains("no suppression"), "{again}");

    let _ = servers.stop.send(true);
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let audit = rows(
        &engine,
        "SELECT user_name, status FROM query_audit WHERE sql LIKE 'CALL %suppress%' AND status <> 'started' ORDER BY ts",
    )
    .await;
    let audit: Vec<(&str, &str)> = audit.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(
        audit,
        [
            ("alice", "denied"),
            ("alice", "denied"),
            ("root", "ok"),
            ("alice", "denied"),
            ("root", "ok"),
            ("root", "error")
        ]
    );
}

/// Issue 21: admins add and drop users while coldtrail runs (`CALL create_user`, `CALL drop_user`); the
/// user logs in at once over psql (SCRAM) and HTTP, another process knows them after re-reading the shared
/// document, a dropped user's open connection stops at its next statement, the configured users stay as
/// configured, and no password reaches the audit, not even from a call that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_and_drop_users_at_run_time_and_the_audit_never_holds_a_password() {
    let f = fixture().await;
    let servers = start(f.engine.clone()).await;
    let create = "CALL create_user('carol', 'analyst', 'carol-password-1')";
    let alice = connect(servers.pg, "alice", "alice-password").await.unwrap();
    let denied = alice.simple_query(create).await.expect_err("an analyst adds a user");
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    assert!(connect(servers.pg, "carol", "carol-password-1").await.is_err());

    let root = connect(servers.pg, "root", "root-password").await.unwrap();
    assert_eq!(
        simple_rows(&root, create).await,
        [[Some("carol".into()), Some("analyst".into()), Some("created".into())]]
    );
    let bad_role = root.simple_query("CALL create_user('dave', 'superuser', 'dave-password-1')").await.unwrap_err();
    assert!(format!("{bad_role:?}").contains("admin or analyst"), "{bad_role:?}");
    let carol = connect(servers.pg, "carol", "carol-password-1").await.expect("an added user logs in at once");
    assert_eq!(simple_rows(&carol, "SELECT 41 + 1").await, [[Some("42".into())]]);
    let ddl = carol.simple_query("CREATE VIEW v AS SELECT 1").await.unwrap_err();
    assert_eq!(ddl.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "an analyst: {ddl:?}");

    // Over HTTP, with basic authentication: carol sets her own password; the old one stops working.
    let http = reqwest::Client::new();
    let sql_as = |user: &str, password: &str, sql: &str| {
        http.post(format!("http://{}/api/v1/sql", servers.http))
            .basic_auth(user, Some(password))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
    };
    let own = sql_as("carol", "carol-password-1", "CALL set_password('carol', 'carol-password-2')").await.unwrap();
    assert_eq!(own.status(), 200);
    let others = sql_as("carol", "carol-password-2", "CALL set_password('alice', 'taken-over-1')").await.unwrap();
    assert_eq!(others.status(), 403, "an analyst sets another user's password");
    assert_eq!(sql_as("carol", "carol-password-1", "SELECT 1").await.unwrap().status(), 401);
    assert_eq!(sql_as("carol", "carol-password-2", "SELECT 1").await.unwrap().status(), 200);

    // Another process (its own users, reading the same location) knows carol once it re-reads.
    let other = Users::default();
    query::accounts::refresh(&other, f.store.location()).await.unwrap();
    assert_eq!(other.check_password("carol", "carol-password-2"), Some(Role::Analyst));

    // The extended protocol (what psycopg, JDBC and node-postgres send), with parameters: the call answers
    // with its tag, as PostgreSQL's does.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&"erin", &"admin", &"erin-password-1"];
    root.execute("CALL create_user($1, $2, $3)", &params).await.expect("CALL over the extended protocol");
    let erin = connect(servers.pg, "erin", "erin-password-1").await.expect("the user added with parameters");
    assert_eq!(simple_rows(&erin, "SELECT 1").await, [[Some("1".into())]]);
    let short: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&"erin", &"short"];
    let refused = root.execute("CALL set_password($1, $2)", &short).await.unwrap_err();
    assert!(format!("{refused:?}").contains("at least 8"), "{refused:?}");

    let configured = root.simple_query("CALL drop_user('alice')").await.unwrap_err();
    assert!(format!("{configured:?}").contains("configuration file"), "{configured:?}");
    simple_rows(&root, "CALL drop_user('carol')").await;
    assert!(carol.simple_query("SELECT 1").await.is_err(), "a dropped user's connection runs on");
    assert!(connect(servers.pg, "carol", "carol-password-2").await.is_err());
    assert_eq!(sql_as("carol", "carol-password-2", "SELECT 1").await.unwrap().status(), 401);

    let _ = servers.stop.send(true);
    f.engine.audit_log().close().await;
    let engine = engine_with_users(f.store.clone(), Limits::default()).await.unwrap();
    let calls = rows(&engine, "SELECT sql FROM query_audit WHERE sql LIKE 'CALL %' ORDER BY ts").await;
    let calls: Vec<&str> = calls.iter().map(|r| r[0].as_str()).collect();
    assert!(calls.contains(&"CALL create_user('carol', 'analyst', '********')"), "{calls:?}");
    assert!(calls.contains(&"CALL create_user('erin', 'admin', '********')"), "{calls:?}");
    assert!(calls.iter().any(|sql| sql.starts_with("CALL create_user(…)")), "the failed call: {calls:?}");
    let secrets = ["password-", "taken-over", "short"];
    assert!(calls.iter().all(|sql| secrets.iter().all(|s| !sql.contains(s))), "{calls:?}");
}
