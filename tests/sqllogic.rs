//! sqllogictest files (`tests/slt/*.slt`) run against the query engine over a store holding the bundled
//! samples, sealed, plus rows still hot: the tables, the forensic functions, the UDFs, empty results,
//! NULLs and time zones.

use std::sync::Arc;

use ingest::pipeline::{Format, Pipeline, Unit};
use query::{Caller, QueryEngine, QueryError, Role};
use sqllogictest::{DBOutput, DefaultColumnType};
use store::{Store, StoreConfig};

/// The bundled samples, found at run time: a test binary may run from another checkout's target dir.
fn samples() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/data/samples")
}

struct Engine(Arc<QueryEngine>);

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let caller = Caller { user: "slt".into(), role: Role::Analyst, client_addr: "slt".into(), protocol: "cli" };
        let output = self.0.execute(&caller, sql, None).await?;
        let mut rows = Vec::new();
        for batch in &output.batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| {
                            if c.is_null(row) {
                                "NULL".to_string()
                            } else {
                                arrow::util::display::array_value_to_string(c, row).unwrap_or_else(|e| e.to_string())
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; output.schema.fields().len()], rows })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn load(store: &Store, bytes: &[u8]) {
    let mut pipeline = Pipeline::default();
    pipeline.ingest(Format::Auto, bytes, &Unit { source: "file:slt", position: "0", key: None, log_group: None });
    pipeline.finish();
    store.append(&pipeline.take_batches(), &[]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let mut samples: Vec<_> = std::fs::read_dir(samples()).unwrap().map(|e| e.unwrap().path()).collect();
    samples.sort();
    for path in samples.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        load(&store, &std::fs::read(path).unwrap());
    }
    store.flush_all().await.unwrap();
    // One more invocation stays hot: a cold start with a timeout and no trigger fields (NULLs).
    let hot = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "/aws/lambda/nightly",
        "logStream": "2026/11/20/[$LATEST]hot", "subscriptionFilters": ["t"], "logEvents": [
        {"id": "1", "timestamp": 1795168800000i64, "message": "START RequestId: 11111111-2222-3333-4444-555555555555 Version: $LATEST"},
        {"id": "2", "timestamp": 1795168803000i64, "message": "2026-11-20T10:00:03.000Z 11111111-2222-3333-4444-555555555555 Task timed out after 3.00 seconds"},
        {"id": "3", "timestamp": 1795168803001i64, "message": "END RequestId: 11111111-2222-3333-4444-555555555555"},
        {"id": "4", "timestamp": 1795168803002i64, "message": "REPORT RequestId: 11111111-2222-3333-4444-555555555555\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\tMax Memory Used: 128 MB\tInit Duration: 100.00 ms\tStatus: timeout"}]});
    load(&store, hot.to_string().as_bytes());
    let engine = QueryEngine::new(store, Default::default()).await.unwrap();

    let mut files: Vec<_> = std::fs::read_dir(
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/slt"),
    )
    .unwrap()
    .map(|e| e.unwrap().path())
    .filter(|p| p.extension().is_some_and(|e| e == "slt"))
    .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(Engine(engine)) }
        });
        runner.with_column_validator(|_, _| true);
        // COLDTRAIL_SLT_COMPLETE=1 rewrites the expected results from the actual ones (review the diff).
        if std::env::var_os("COLDTRAIL_SLT_COMPLETE").is_some() {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    |_, _| true,
                )
                .await
                .unwrap();
            continue;
        }
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}
