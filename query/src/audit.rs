//! The query audit: one row per statement in the `query_audit` table, which is stored, sealed into
//! segments and ledgered like every other table, so that nobody can remove what they looked at.
//!
//! Records go through a bounded queue to a writer task that appends them in batches; when the queue is
//! full the record is written by the caller instead, so a record is never dropped.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use store::tables::QueryAuditRow;
use store::{Store, Table};
use tokio::sync::mpsc;

use crate::metrics::metrics;

/// SQL text longer than this is stored cut, with its full length and SHA-256; an analyst's statement
/// longer than this is refused (`access::check_length`), so no analyst's query is stored cut.
pub const SQL_TEXT_MAX: usize = 64 * 1024;
const QUEUE: usize = 4096;

/// One audited statement.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub ts_micros: i64,
    pub user: String,
    pub client_addr: String,
    pub protocol: &'static str,
    pub sql: String,
    /// started (written, durably, before the statement runs), then ok, error or denied.
    pub status: &'static str,
    pub rows: u64,
    pub duration_ms: f64,
    pub error: Option<String>,
}

/// Writes audit records to the store.
pub struct AuditLog {
    store: Arc<Store>,
    sender: Mutex<Option<mpsc::Sender<AuditRecord>>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl AuditLog {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(store: Arc<Store>) -> Arc<AuditLog> {
        let (sender, mut receiver) = mpsc::channel::<AuditRecord>(QUEUE);
        let writer_store = store.clone();
        let worker = tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut records = vec![first];
                while records.len() < 1024 {
                    match receiver.try_recv() {
                        Ok(record) => records.push(record),
                        Err(_) => break,
                    }
                }
                let store = writer_store.clone();
                let _ = tokio::task::spawn_blocking(move || write(&store, &records)).await;
            }
        });
        Arc::new(AuditLog { store, sender: Mutex::new(Some(sender)), worker: Mutex::new(Some(worker)) })
    }

    /// Records a statement.
    pub fn record(&self, record: AuditRecord) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let record = match sender {
            Some(sender) => match sender.try_send(record) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => r,
            },
            None => record,
        };
        let _ = write(&self.store, &[record]);
    }

    /// Records a statement about to run, durably (in the WAL, fsynced) before this returns: a statement
    /// running when the server is killed still leaves its `started` row.
    pub async fn record_durable(&self, record: AuditRecord) -> crate::error::Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || write(&store, &[record]))
            .await
            .map_err(|e| crate::error::QueryError::BadRequest(format!("the audit writer failed: {e}")))?
    }

    /// Writes every queued record and stops the writer.
    pub async fn close(&self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
    }
}

/// The text as stored: whole up to `SQL_TEXT_MAX`, beyond that its start with the length and SHA-256
/// of the whole text (which the statement's author cannot make collide).
fn cut(sql: &str) -> String {
    if sql.len() <= SQL_TEXT_MAX {
        return sql.to_string();
    }
    let mut end = SQL_TEXT_MAX;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(sql.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}…[{} more bytes; {} bytes in all, sha256 {hex}]", &sql[..end], sql.len() - end, sql.len())
}

/// The records as a `query_audit` batch; `None` for no records.
pub fn to_batch(records: &[AuditRecord]) -> Option<RecordBatch> {
    let rows: Vec<QueryAuditRow> = records
        .iter()
        .map(|r| QueryAuditRow {
            ts: r.ts_micros,
            user_name: Some(r.user.clone()),
            client_addr: Some(r.client_addr.clone()),
            protocol: Some(r.protocol.to_string()),
            sql: Some(cut(&r.sql)),
            status: Some(r.status.to_string()),
            rows: Some(r.rows as i64),
            duration_ms: Some(r.duration_ms),
            error: r.error.as_deref().map(cut),
        })
        .collect();
    QueryAuditRow::batch(&rows)
}

fn write(store: &Store, records: &[AuditRecord]) -> crate::error::Result<()> {
    let Some(batch) = to_batch(records) else { return Ok(()) };
    let result = store.append_batch(Table::QueryAudit, batch).map_err(crate::error::QueryError::from);
    match &result {
        Ok(_) => metrics().audit.with_label_values(&["written"]).inc_by(records.len() as u64),
        Err(e) => {
            metrics().audit.with_label_values(&["failed"]).inc_by(records.len() as u64);
            tracing::error!(error = %e, records = records.len(), "query audit records could not be stored");
        }
    }
    result.map(|_| ())
}
