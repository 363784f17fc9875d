//! Arbitrary rows of every table the detectors read, hostile ones included (times from 1970 to 2200,
//! NaN and infinite numbers, empty, huge and non-UTF-8-looking text, JSON that is not what it claims), in
//! any order: the engine never panics, every state it reaches checkpoints and restores to the same
//! state, and an engine restored from a checkpoint goes on to raise exactly what the uninterrupted one
//! raises (issue 16).

use arrow::array::RecordBatch;
use detect::engine::{Checkpoints, Engine, EngineConfig};
use detect::security::SigmaRules;
use detect::Alert;
use proptest::prelude::*;
use store::rows::{TableBuilder, Value};
use store::Table;

const TABLES: [Table; 3] = [Table::Cloudtrail, Table::Invocations, Table::Logs];

/// One cell's worth of hostile material; the row builder takes what fits the column.
#[derive(Debug, Clone)]
struct Cell {
    time: i64,
    text: Option<String>,
    int: Option<i64>,
    float: Option<f64>,
    flag: Option<bool>,
}

fn text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        // Often the same name and the same hostile text, so that findings repeat within an alert group
        // and across a checkpoint.
        3 => Just(Some("orders-api".to_string())),
        2 => Just(Some("' OR 1=1-- ; ${jndi:ldap://x/a}".to_string())),
        1 => Just(None),
        1 => Just(Some(String::new())),
        1 => "[a-z-]{1,12}".prop_map(Some),
        1 => "\\PC{0,40}".prop_map(Some),
        1 => prop_oneof![
            Just("{\"layers\": [{\"arn\": 7}], \"functionName\": null}".to_string()),
            Just("{\"functionName\": \"arn:aws:lambda:us-east-1:1:function:f\", \"role\": \"arn:aws:iam::1:role/admin\"}".to_string()),
            Just("START RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95 Version: $LATEST".to_string()),
            Just("' OR 1=1-- ; ${jndi:ldap://x/a} {{7*7}} ../../etc/passwd".to_string()),
            Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_string()),
            Just("UpdateFunctionCode20150331v2".to_string()),
            Just("lambda.amazonaws.com".to_string()),
            Just("AccessDenied".to_string()),
            Just("203.0.113.9".to_string()),
            Just("x".repeat(70_000)),
        ]
        .prop_map(Some),
    ]
}

fn cell() -> impl Strategy<Value = Cell> {
    (
        prop_oneof![Just(0i64), Just(7_258_118_400_000_000i64), 1_763_596_800_000_000i64..1_763_683_200_000_000i64],
        text(),
        prop_oneof![Just(None), any::<i64>().prop_map(Some), (0i64..10_000).prop_map(Some)],
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(-1.0)),
            (0.0f64..100_000.0).prop_map(Some)
        ],
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(time, text, int, float, flag)| Cell { time, text, int, float, flag })
}

/// Rows as (table, one cell per column): a batch per row, so that rows of one table come in any order.
fn rows() -> impl Strategy<Value = Vec<(Table, Vec<Cell>)>> {
    proptest::collection::vec((prop::sample::select(TABLES.to_vec()), proptest::collection::vec(cell(), 32)), 1..40)
}

fn batch(table: Table, cells: &[Cell]) -> RecordBatch {
    let schema = table.schema();
    let mut builder = TableBuilder::new(table);
    let values: Vec<Value<'_>> = schema
        .fields()
        .iter()
        .zip(cells.iter().cycle())
        .enumerate()
        .map(|(idx, (field, cell))| {
            let required = !field.is_nullable();
            match field.data_type() {
                arrow::datatypes::DataType::Timestamp(..) => {
                    Value::Time(if idx == 0 || required { Some(cell.time) } else { Some(cell.time + 1_000) })
                }
                arrow::datatypes::DataType::Int64 => Value::Int(cell.int.or(required.then_some(0))),
                arrow::datatypes::DataType::Float64 => Value::Float(cell.float.or(required.then_some(0.0))),
                arrow::datatypes::DataType::Boolean => Value::Bool(cell.flag.or(required.then_some(false))),
                _ => Value::Text(cell.text.as_deref().or(required.then_some("x"))),
            }
        })
        .collect();
    builder.push(&values);
    builder.finish().expect("one row")
}

/// JSON with every array of strings sorted: the state's sets (`HashSet<String>`) serialise in an order
/// of their own, which says nothing about the state.
fn canonical(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Json::Array(items) => {
            let mut items: Vec<Json> = items.into_iter().map(canonical).collect();
            if items.iter().all(Json::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            Json::Array(items)
        }
        Json::Object(map) => Json::Object(map.into_iter().map(|(k, v)| (k, canonical(v))).collect()),
        other => other,
    }
}

/// The engine's checkpoint files as JSON values (maps compare regardless of order, sets sorted).
fn saved(engine: &Engine) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    checkpoints.save(engine).expect("every reachable state checkpoints");
    files(&checkpoints)
}

/// The checkpoint's files as JSON values, without the progress's generation (which names the files).
fn files(checkpoints: &Checkpoints) -> Vec<serde_json::Value> {
    [checkpoints.stream_path(), checkpoints.security_path(), checkpoints.progress_path()]
        .iter()
        .map(|path| {
            let mut value: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).expect("a checkpoint is JSON");
            if let Some(progress) = value.as_object_mut() {
                progress.remove("generation");
            }
            canonical(value)
        })
        .collect()
}

/// A process killed in the middle of a save (the new state written, the progress not yet) leaves the
/// previous progress with the state it was saved with: a new owner re-scores the minutes after it on top
/// of the baselines of then, not on top of baselines that already counted them.
#[test]
fn a_save_cut_short_leaves_the_progress_with_the_state_it_was_saved_with() {
    let config = config();
    let minute = 60_000_000i64;
    let base = 1_763_600_000_000_000i64;
    let invocation = |i: i64| {
        let cell = Cell {
            time: base + i * minute,
            text: Some("orders-api".into()),
            int: Some(100),
            float: Some(12.0 + i as f64),
            flag: Some(false),
        };
        batch(Table::Invocations, &vec![cell; 32])
    };
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Checkpoints::new(dir.path());
    let mut engine = Engine::new(&config, SigmaRules::shipped());
    for i in 0..30 {
        engine.push(Table::Invocations, &invocation(i));
    }
    engine.advance_to(base + 31 * minute);
    engine.set_scored_through(base + 30 * minute);
    checkpoints.save(&engine).unwrap();
    let then = files(&checkpoints);
    let progress_then = std::fs::read(checkpoints.progress_path()).unwrap();

    for i in 30..90 {
        engine.push(Table::Invocations, &invocation(i));
    }
    engine.advance_to(base + 91 * minute);
    engine.set_scored_through(base + 90 * minute);
    checkpoints.save(&engine).unwrap();
    assert_ne!(files(&checkpoints)[0], then[0], "the later step changed the baselines");
    // The kill: the later step's state files are written, its progress is not.
    std::fs::write(checkpoints.progress_path(), progress_then).unwrap();

    let restored = Checkpoints::new(dir.path()).load(&config, SigmaRules::shipped());
    assert_eq!(restored.scored_through_us(), Some(base + 30 * minute));
    assert_eq!(saved(&restored), then, "the progress of one step was restored with the baselines of another");
}

/// Every detection on, the first-seen ones without a learning period, so that more states are reached.
fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    if let Some(security) = &mut config.security {
        security.learning_us = 0;
    }
    config
}

/// Feeds rows as the runner would: most in order, some late, now and then a clock tick. `offset` is the
/// index of the first row in the whole input, so that a split input is fed the same way.
fn feed(engine: &mut Engine, rows: &[(Table, Vec<Cell>)], offset: usize, out: &mut Vec<Alert>) {
    for (i, (table, cells)) in rows.iter().enumerate() {
        let i = i + offset;
        let batch = batch(*table, cells);
        if i % 5 == 4 {
            out.extend(engine.push_late(*table, &batch));
        } else {
            out.extend(engine.push(*table, &batch));
        }
        if i % 7 == 6 {
            out.extend(engine.advance_to(cells[0].time.saturating_add(60_000_000)));
        }
    }
}

/// Alerts as JSON (NaN scores compare as `null`).
fn as_json(alerts: &[Alert]) -> Vec<serde_json::Value> {
    alerts.iter().map(|a| serde_json::to_value(a).unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_rows_never_stop_the_detectors_and_every_state_checkpoints_and_restores(rows in rows()) {
        let config = config();
        let mut engine = Engine::new(&config, SigmaRules::shipped());
        for (i, (table, cells)) in rows.iter().enumerate() {
            let batch = batch(*table, cells);
            if i % 5 == 4 {
                engine.push_late(*table, &batch);
            } else {
                engine.push(*table, &batch);
            }
            if i % 7 == 6 {
                engine.advance_to(cells[0].time.saturating_add(60_000_000));
            }
        }
        engine.set_scored_through(1_763_600_000_000_000);
        let before = saved(&engine);
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path());
        checkpoints.save(&engine).unwrap();
        let restored = checkpoints.load(&config, SigmaRules::shipped());
        prop_assert_eq!(restored.scored_through_us(), engine.scored_through_us());
        prop_assert_eq!(saved(&restored), before, "the restored state is not the state that was saved");
    }

    #[test]
    fn a_restored_engine_raises_what_the_uninterrupted_one_raises(rows in rows(), split in 0usize..40) {
        let config = config();
        let mut whole = Engine::new(&config, SigmaRules::shipped());
        let mut expected = Vec::new();
        feed(&mut whole, &rows, 0, &mut expected);
        expected.extend(whole.finish());

        let split = split.min(rows.len());
        let mut first = Engine::new(&config, SigmaRules::shipped());
        let mut raised = Vec::new();
        feed(&mut first, &rows[..split], 0, &mut raised);
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path());
        checkpoints.save(&first).unwrap();
        drop(first);
        let mut second = checkpoints.load(&config, SigmaRules::shipped());
        feed(&mut second, &rows[split..], split, &mut raised);
        raised.extend(second.finish());
        prop_assert_eq!(as_json(&raised), as_json(&expected));
    }
}
