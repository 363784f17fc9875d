//! Arbitrary rows of every table the detectors read, hostile ones included (times from 1970 to 2200,
//! NaN and infinite numbers, empty, huge and non-UTF-8-looking text, JSON that is not what it claims), in
//! any order: the engine never panics, and every state it reaches checkpoints and restores to the same
//! state (issue 16).

use arrow::array::RecordBatch;
use detect::engine::{Checkpoints, Engine, EngineConfig};
use detect::security::SigmaRules;
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
        Just(None),
        Just(Some(String::new())),
        "[a-z-]{1,12}".prop_map(Some),
        "\\PC{0,40}".prop_map(Some),
        prop_oneof![
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
    [checkpoints.stream_path(), checkpoints.security_path(), checkpoints.progress_path()]
        .iter()
        .map(|path| canonical(serde_json::from_slice(&std::fs::read(path).unwrap()).expect("a checkpoint is JSON")))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_rows_never_stop_the_detectors_and_every_state_checkpoints_and_restores(rows in rows()) {
        let config = EngineConfig::default();
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
}
