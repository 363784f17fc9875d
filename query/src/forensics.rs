//! Forensic table functions and saved views.
//!
//! - `timeline(key [, from [, to]])`: every row of every table that mentions `key` (a request id, trace
//!   id, log stream, principal ARN, access key id, source IP, function name, event or alert id), in time
//!   order, with its table, the row's own id and a one-line summary.
//! - `environment(log_stream [, from [, to]])`: every invocation and log line of one execution
//!   environment (one Lambda log stream is one sandbox), in order.
//! - `incident(id)`: an incident's evidence: every row of any of its entities (addresses, principals,
//!   access keys, functions, execution environments, traces) and its alerts, from its earliest alert's
//!   first evidence to its latest alert's last, in time order; the same columns as `timeline`.
//!
//! Each call becomes a SQL union over the store tables, planned when the call is scanned, so that the
//! time bounds prune partitions like any other query.

use std::sync::Arc;

use arrow::array::RecordBatchOptions;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{ColumnarValue, Expr, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

/// The saved views: name and definition.
pub const VIEWS: &[(&str, &str)] = &[
    (
        "function_minutes",
        "SELECT time_bucket('1m', ts) AS minute,
                CAST(function_name AS VARCHAR) AS function_name,
                count(*) AS invocations,
                sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors,
                sum(CASE WHEN status = 'timeout' THEN 1 ELSE 0 END) AS timeouts,
                sum(CASE WHEN status = 'crash' THEN 1 ELSE 0 END) AS crashes,
                sum(CASE WHEN status = 'throttled' THEN 1 ELSE 0 END) AS throttles,
                sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold_starts,
                avg(duration_ms) AS duration_avg_ms,
                approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS duration_p50_ms,
                approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS duration_p95_ms,
                max(duration_ms) AS duration_max_ms,
                max(CAST(max_memory_used_mb AS DOUBLE) / memory_size_mb) AS memory_used_ratio_max,
                sum(CAST(billed_duration_ms AS DOUBLE) * memory_size_mb) / 1024000.0 AS gb_seconds,
                count(DISTINCT log_stream) AS environments,
                count(DISTINCT source_ip) AS source_ips,
                count(DISTINCT principal) AS principals
         FROM invocations
         GROUP BY 1, 2",
    ),
    (
        "recent_alerts",
        "SELECT ts, CAST(severity AS VARCHAR) AS severity, CAST(detector AS VARCHAR) AS detector, title,
                CAST(function_name AS VARCHAR) AS function_name, entity, window_start, window_end, score, count,
                first_seen, last_seen, observed, expected, evidence, attack_ids, query, alert_id
         FROM alerts
         WHERE ts >= now() - INTERVAL '24 hours'
         ORDER BY ts DESC",
    ),
];

/// Registers the table functions and creates the saved views.
pub async fn register(ctx: &SessionContext) -> Result<()> {
    for kind in [Kind::Timeline, Kind::Environment, Kind::Incident] {
        let sql = kind.sql(&Keys::one(""), None, None);
        let schema = Arc::new(ctx.sql(&sql).await?.schema().as_arrow().clone());
        ctx.register_udtf(kind.name(), Arc::new(ForensicFunction { kind, schema }));
    }
    for (name, definition) in VIEWS {
        ctx.sql(&format!("CREATE VIEW {name} AS {definition}")).await?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Timeline,
    Environment,
    Incident,
}

/// What a call looks up: entity values (any of which a row may mention) and alert ids.
#[derive(Debug, Clone, Default)]
struct Keys {
    values: Vec<String>,
    alert_ids: Vec<String>,
}

impl Keys {
    fn one(key: &str) -> Keys {
        Keys { values: vec![key.to_string()], alert_ids: Vec::new() }
    }
}

/// Quotes `text` as a SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Timeline => "timeline",
            Kind::Environment => "environment",
            Kind::Incident => "incident",
        }
    }

    /// The union query for one call.
    fn sql(self, keys: &Keys, from: Option<i64>, to: Option<i64>) -> String {
        let quoted: Vec<String> = keys.values.iter().map(|k| quote(k)).collect();
        let k = quoted.join(", ");
        // Trace and span ids are stored in lowercase, and OTLP trace ids in X-Ray's form.
        let id = keys.values.iter().map(|k| quote(&trace_key(k))).collect::<Vec<_>>().join(", ");
        // A row mentions a key in a text column.
        let mentions = |columns: &[&str]| {
            let found: Vec<String> = columns
                .iter()
                .flat_map(|column| quoted.iter().map(move |k| format!("strpos({column}, {k}) > 0")))
                .collect();
            found.join(" OR ")
        };
        let within = |column: &str| {
            let mut bounds = String::new();
            if let Some(from) = from {
                bounds.push_str(&format!(" AND {column} >= {}", quote(&store::time::format_micros(from))));
            }
            if let Some(to) = to {
                bounds.push_str(&format!(" AND {column} < {}", quote(&store::time::format_micros(to))));
            }
            bounds
        };
        let invocations = format!(
            "SELECT ts, 'invocations' AS table_name, CAST(function_name AS VARCHAR) AS function_name,
                    request_id AS row_id,
                    concat_ws(' ', CAST(status AS VARCHAR), CAST(\"trigger\" AS VARCHAR),
                              CAST(round(duration_ms, 1) AS VARCHAR) || ' ms',
                              CASE WHEN cold_start THEN 'cold start' END, CAST(error_type AS VARCHAR),
                              CAST(http_method AS VARCHAR) || ' ' || http_path,
                              'from ' || source_ip, 'by ' || principal, 'in ' || log_stream) AS summary
             FROM invocations WHERE {}{}",
            match self {
                Kind::Timeline | Kind::Incident => format!(
                    "(request_id IN ({k}) OR trace_id IN ({id}) OR log_stream IN ({k}) OR principal IN ({k})
                      OR source_ip IN ({k}) OR function_name IN ({k}))"
                ),
                Kind::Environment => format!("log_stream IN ({k})"),
            },
            within("ts")
        );
        let logs = format!(
            "SELECT ts, 'logs', CAST(function_name AS VARCHAR), request_id,
                    concat_ws(' ', CAST(level AS VARCHAR), substr(message, 1, 400))
             FROM logs WHERE {}{}",
            match self {
                Kind::Timeline | Kind::Incident => format!(
                    "(request_id IN ({k}) OR log_stream IN ({k}) OR function_name IN ({k}) OR {})",
                    mentions(&["message"])
                ),
                Kind::Environment => format!("log_stream IN ({k})"),
            },
            within("ts")
        );
        if self == Kind::Environment {
            return format!("{invocations} UNION ALL {logs} ORDER BY ts, table_name");
        }
        let spans = format!(
            "SELECT start_ts, 'spans', CAST(function_name AS VARCHAR), coalesce(request_id, span_id),
                    concat_ws(' ', name, CAST(kind AS VARCHAR), CAST(status AS VARCHAR), 'trace ' || trace_id, error)
             FROM spans
             WHERE (trace_id IN ({id}) OR span_id IN ({id}) OR request_id IN ({k}) OR function_name IN ({k})
                    OR {}){}",
            mentions(&["aws", "http"]),
            within("start_ts")
        );
        let cloudtrail = format!(
            "SELECT event_time, 'cloudtrail', json_get_str(request_parameters, 'functionName'), event_id,
                    concat_ws(' ', CAST(event_source AS VARCHAR) || ':' || CAST(event_name AS VARCHAR),
                              'by ' || principal_arn, 'from ' || source_ip, 'error ' || CAST(error_code AS VARCHAR))
             FROM cloudtrail
             WHERE (principal_arn IN ({k}) OR access_key_id IN ({k}) OR source_ip IN ({k}) OR session_name IN ({k})
                    OR event_id IN ({k}) OR {}){}",
            mentions(&["request_parameters", "resources", "response_elements"]),
            within("event_time")
        );
        let alerts = format!(
            "SELECT ts, 'alerts', CAST(function_name AS VARCHAR), alert_id,
                    concat_ws(' ', CAST(severity AS VARCHAR), CAST(detector AS VARCHAR) || ':', title)
             FROM alerts
             WHERE (alert_id IN ({k}) OR function_name IN ({k}) OR entity IN ({k}) OR {}{}){}",
            mentions(&["evidence"]),
            match keys.alert_ids.is_empty() {
                true => String::new(),
                false => format!(
                    " OR alert_id IN ({})",
                    keys.alert_ids.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
                ),
            },
            within("ts")
        );
        format!(
            "{invocations} UNION ALL {logs} UNION ALL {spans} UNION ALL {cloudtrail} UNION ALL {alerts}
             ORDER BY ts, table_name"
        )
    }
}

#[derive(Debug)]
struct ForensicFunction {
    kind: Kind,
    schema: SchemaRef,
}

/// Evaluates a constant argument (a literal, `now() - INTERVAL '1 day'`, a cast).
fn constant(session: &dyn Session, expr: &Expr) -> Result<ScalarValue> {
    let physical = session.create_physical_expr(expr.clone(), &DFSchema::empty())?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match physical.evaluate(&batch)? {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(array) => ScalarValue::try_from_array(&array, 0),
    }
}

fn time_argument(name: &str, value: ScalarValue) -> Result<Option<i64>> {
    if value.is_null() {
        return Ok(None);
    }
    let ts = value.cast_to(&arrow::datatypes::DataType::Timestamp(
        arrow::datatypes::TimeUnit::Microsecond,
        Some(store::schema::TIME_ZONE.into()),
    ));
    match ts {
        Ok(ScalarValue::TimestampMicrosecond(Some(v), _)) => Ok(Some(v)),
        _ => plan_err!("{name}: the time bounds must be timestamps, got {value}"),
    }
}

impl TableFunctionImpl for ForensicFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = self.kind.name();
        let exprs = args.exprs();
        if self.kind == Kind::Incident {
            let id = match exprs {
                [e] => constant(args.session(), e)?,
                _ => return plan_err!("incident(id) takes one argument, got {}", exprs.len()),
            };
            let id = match id {
                ScalarValue::Utf8(Some(k)) | ScalarValue::Utf8View(Some(k)) | ScalarValue::LargeUtf8(Some(k)) => k,
                other => return plan_err!("incident: the id must be text, got {other}"),
            };
            return Ok(Arc::new(ForensicTable { query: Query::Incident(id), schema: self.schema.clone() }));
        }
        if exprs.is_empty() || exprs.len() > 3 {
            return plan_err!("{name}(key [, from [, to]]) takes one to three arguments, got {}", exprs.len());
        }
        let key = match constant(args.session(), &exprs[0])? {
            ScalarValue::Utf8(Some(k)) | ScalarValue::Utf8View(Some(k)) | ScalarValue::LargeUtf8(Some(k)) => k,
            other => return plan_err!("{name}: the key must be text, got {other}"),
        };
        if key.is_empty() {
            return plan_err!("{name}: the key must not be empty");
        }
        let from = match exprs.get(1) {
            Some(e) => time_argument(name, constant(args.session(), e)?)?,
            None => None,
        };
        let to = match exprs.get(2) {
            Some(e) => time_argument(name, constant(args.session(), e)?)?,
            None => None,
        };
        let sql = self.kind.sql(&Keys::one(&key), from, to);
        Ok(Arc::new(ForensicTable { query: Query::Sql(sql), schema: self.schema.clone() }))
    }
}

/// What a forensic table runs: a union query, or an incident's, made when it is scanned.
#[derive(Debug)]
enum Query {
    Sql(String),
    Incident(String),
}

#[derive(Debug)]
struct ForensicTable {
    query: Query,
    schema: SchemaRef,
}

/// The first row of `sql`'s result, as text cells.
async fn first_row(ctx: &SessionContext, sql: &str) -> Result<Option<Vec<Option<String>>>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let cells = batch
        .columns()
        .iter()
        .map(|column| {
            if column.is_null(0) {
                Ok(None)
            } else {
                arrow::util::display::array_value_to_string(column, 0).map(Some)
            }
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(Some(cells))
}

/// The union query of incident `id`'s evidence: its entities and alerts, over its alerts' span.
async fn incident_sql(ctx: &SessionContext, id: &str) -> Result<String> {
    let latest = first_row(
        ctx,
        &format!(
            "SELECT entities, alert_ids, CAST(first_seen AS BIGINT), CAST(last_seen AS BIGINT) FROM incidents
             WHERE incident_id = {} ORDER BY ts DESC LIMIT 1",
            quote(id)
        ),
    )
    .await?;
    let Some(latest) = latest else { return plan_err!("incident: no incident {}", quote(id)) };
    let json = |cell: &Option<String>| cell.as_deref().unwrap_or("[]").to_string();
    let entities: Vec<store::alerts::Entity> = serde_json::from_str(&json(&latest[0]))
        .map_err(|e| DataFusionError::Execution(format!("incident {id}: its entities: {e}")))?;
    let alert_ids: Vec<String> = serde_json::from_str(&json(&latest[1]))
        .map_err(|e| DataFusionError::Execution(format!("incident {id}: its alert ids: {e}")))?;
    let micros = |cell: &Option<String>| cell.as_deref().and_then(|c| c.parse::<i64>().ok());
    let (mut from, mut to) = (micros(&latest[2]), micros(&latest[3]));
    // The alerts' own evidence spans: an alert is stored at the end of what it saw.
    if !alert_ids.is_empty() {
        let ids = alert_ids.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ");
        let span = first_row(
            ctx,
            &format!(
                "SELECT CAST(min(coalesce(first_seen, window_start, ts)) AS BIGINT),
                        CAST(max(coalesce(last_seen, window_end, ts)) AS BIGINT)
                 FROM alerts WHERE alert_id IN ({ids})"
            ),
        )
        .await?;
        if let Some(span) = span {
            from = from.into_iter().chain(micros(&span[0])).min();
            to = to.into_iter().chain(micros(&span[1])).max();
        }
    }
    let mut values: Vec<String> = entities.into_iter().map(|store::alerts::Entity(_, value)| value).collect();
    values.retain(|v| !v.is_empty());
    values.sort();
    values.dedup();
    if values.is_empty() {
        // No entity (alerts stored before entities were kept): its alerts only; the id itself as the one
        // key keeps the query well formed and matches nothing else.
        values.push(id.to_string());
    }
    let keys = Keys { values, alert_ids };
    Ok(Kind::Incident.sql(&keys, from, to.map(|t| t.saturating_add(1))))
}

#[async_trait]
impl TableProvider for ForensicTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal("forensic functions need a SessionState".into()));
        };
        let ctx = SessionContext::new_with_state(state.clone());
        let sql = match &self.query {
            Query::Sql(sql) => sql.clone(),
            Query::Incident(id) => incident_sql(&ctx, id).await?,
        };
        let plan = ctx.sql(&sql).await?.create_physical_plan().await?;
        let Some(projection) = projection else { return Ok(plan) };
        let schema = plan.schema();
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name().clone();
                (Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

/// A trace or span id as it is stored: lowercase, and a 32-digit OTLP trace id in X-Ray's form.
fn trace_key(key: &str) -> String {
    let lower = key.trim().to_ascii_lowercase();
    if lower.len() == 32 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("1-{}-{}", &lower[..8], &lower[8..])
    } else {
        lower
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_keys_are_looked_up_as_stored() {
        assert_eq!(trace_key("1-5759E988-BD862E3FE1BE46A994272793"), "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(trace_key("5759E988BD862E3FE1BE46A994272793"), "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(trace_key("53995C3F42CD8AD8"), "53995c3f42cd8ad8");
    }

    #[test]
    fn keys_are_quoted_as_literals() {
        assert_eq!(quote("it's"), "'it''s'");
        let sql = Kind::Timeline.sql(&Keys::one("x' OR 1=1 --"), None, None);
        assert!(sql.contains("'x'' OR 1=1 --'"));
    }

    #[test]
    fn bounds_become_rfc3339_literals_on_each_time_column() {
        let sql = Kind::Timeline.sql(&Keys::one("k"), Some(0), Some(1_000_000));
        assert!(sql.contains("event_time >= '1970-01-01T00:00:00.000000Z'"));
        assert!(sql.contains("start_ts < '1970-01-01T00:00:01.000000Z'"));
    }
}
