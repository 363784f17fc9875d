//! What PostgreSQL clients expect of a server beyond the wire protocol, which datafusion-postgres
//! does not answer as PostgreSQL would:
//! - `version()` in PostgreSQL's format (SQLAlchemy, and so pandas and Superset, parse the major
//!   version out of it and refuse DataFusion's own string);
//! - `SHOW server_version` with the version reported at startup;
//! - `information_schema._pg_expandarray` and `(expr).field`, which pgjdbc's `getPrimaryKeys` (DBeaver)
//!   plans with; `to_regtype` (psycopg's type lookup); `json_build_object`, `pg_get_serial_sequence`
//!   and `pg_collation_is_visible` (SQLAlchemy's inspector);
//! - `COPY (query) TO STDOUT` and `COPY table TO STDOUT` in text, CSV and binary format (psql's `\copy`,
//!   psycopg's `copy`), which DataFusion's parser reads as a `COPY ... TO 'file'` and refuses;
//! - `SAVEPOINT`, `RELEASE` and `ROLLBACK TO`, which psycopg sends inside a transaction (SQLAlchemy's
//!   first connection does) and datafusion-postgres does not plan.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Builder, Int64Builder, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields};
use async_trait::async_trait;
use datafusion::common::exec_err;
use datafusion::common::ParamValues;
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, ObjectNamePart, Statement,
};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{CopyCsvOptions, CopyEncoder, CopyTextOptions};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::ErrorInfo;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::copy::CopyData;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::QueryHook;
use futures::StreamExt;

use crate::error::QueryError;

/// The PostgreSQL version the server reports (`server_version` at startup and `version()`).
pub const SERVER_VERSION: &str = "16.6";

/// `version()` as PostgreSQL writes it, naming coldtrail and DataFusion in the place where PostgreSQL
/// names its compiler.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (coldtrail {}, Apache DataFusion {}) on {}-{}, 64-bit",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// Registers `version()` (replacing DataFusion's), `_pg_expandarray` and the catalog functions that
/// SQLAlchemy's inspector calls, answered for a store that has no sequences and one collation
/// namespace: `pg_get_serial_sequence(table, column)` is NULL (no column owns a sequence),
/// `pg_collation_is_visible(oid)` is true; and `json_build_object(key, value, ...)`.
pub fn register(ctx: &SessionContext) {
    use datafusion::common::ScalarValue;
    let constants = [
        ("version", Signature::nullary(Volatility::Stable), ScalarValue::Utf8(Some(version_text()))),
        ("pg_get_serial_sequence", Signature::any(2, Volatility::Stable), ScalarValue::Utf8(None)),
        ("pg_collation_is_visible", Signature::any(1, Volatility::Stable), ScalarValue::Boolean(Some(true))),
    ];
    for (name, signature, value) in constants {
        let returns = value.data_type();
        ctx.register_udf(ScalarUDF::from(Compat { name, signature, returns, body: Body::Constant(value) }));
    }
    ctx.register_udf(ScalarUDF::from(Compat {
        name: "_pg_expandarray",
        signature: Signature::any(1, Volatility::Immutable),
        returns: DataType::Struct(expand_fields()),
        body: Body::ExpandArray,
    }));
    ctx.register_udf(ScalarUDF::from(Compat {
        name: "json_build_object",
        signature: Signature::variadic_any(Volatility::Immutable),
        returns: DataType::Utf8,
        body: Body::JsonBuildObject,
    }));
}

/// The fields of `_pg_expandarray`'s answer.
fn expand_fields() -> Fields {
    Fields::from(vec![Field::new("x", DataType::Int64, true), Field::new("n", DataType::Int32, true)])
}

/// One PostgreSQL function answered for clients: its name, signature and type, and what it computes.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Compat {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    body: Body,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Body {
    /// The same answer for every argument on coldtrail.
    Constant(datafusion::common::ScalarValue),
    ExpandArray,
    JsonBuildObject,
    /// `to_regtype` over these `pg_type` names and oids.
    ToRegtype(std::collections::BTreeMap<String, i32>),
}

impl ScalarUDFImpl for Compat {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &self.body {
            Body::Constant(value) => Ok(ColumnarValue::Scalar(value.clone())),
            Body::ExpandArray => expand_array(args),
            Body::JsonBuildObject => json_build_object(args),
            Body::ToRegtype(oids) => {
                let names = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
                let names = names.as_string::<i32>();
                let oids: arrow::array::Int32Array =
                    names.iter().map(|name| name.and_then(|n| regtype(oids, n))).collect();
                Ok(ColumnarValue::Array(Arc::new(oids)))
            }
        }
    }
}

/// `_pg_expandarray(array) -> (x, n)`: in PostgreSQL a set-returning function, one row per element
/// with its ordinal. pgjdbc calls it on `pg_index.indkey` (an `int2vector`, kept as text such as
/// `"1 2"` by datafusion-pg-catalog) to list a key's columns (`getPrimaryKeys`, `getIndexInfo`,
/// `getBestRowIdentifier`). coldtrail's tables have no indexes; `pg_index` holds only the emulated
/// system catalogs' indexes. A scalar answers an array of one element exactly; an empty array, and an
/// array of several elements, which would need several rows, give NULL, which matches no column: a key
/// of several columns is left out of such a listing rather than reported wrongly. It cannot be an
/// error, since pgjdbc applies it to all of `pg_index` before filtering.
fn expand_array(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    let input = args.args[0].to_array(args.number_rows)?;
    let elements: Vec<Option<Vec<i64>>> = match input.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let lists = cast(&input, &DataType::new_list(DataType::Int64, true))?;
            let lists = lists.as_list::<i32>();
            (0..lists.len())
                .map(|i| {
                    lists.is_valid(i).then(|| {
                        let values = lists.value(i);
                        values.as_primitive::<arrow::datatypes::Int64Type>().iter().flatten().collect()
                    })
                })
                .collect()
        }
        _ => {
            let texts = cast(&input, &DataType::Utf8)?;
            let texts = texts.as_string::<i32>();
            let mut out = Vec::with_capacity(texts.len());
            for text in texts.iter() {
                out.push(match text {
                    None => None,
                    Some(text) => Some(parse_vector(text)?),
                });
            }
            out
        }
    };
    let mut x = Int64Builder::with_capacity(elements.len());
    let mut n = Int32Builder::with_capacity(elements.len());
    for row in &elements {
        match row.as_deref() {
            Some([only]) => {
                x.append_value(*only);
                n.append_value(1);
            }
            None | Some(_) => {
                x.append_null();
                n.append_null();
            }
        }
    }
    let nulls = elements.iter().map(|row| row.as_ref().is_some_and(|r| r.len() == 1)).collect::<Vec<_>>();
    let columns: Vec<ArrayRef> = vec![Arc::new(x.finish()), Arc::new(n.finish())];
    let array = StructArray::try_new(expand_fields(), columns, Some(nulls.into()))?;
    Ok(ColumnarValue::Array(Arc::new(array)))
}

/// An `int2vector` or array as text: `1 2`, `{1,2}`.
fn parse_vector(text: &str) -> Result<Vec<i64>> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| match part.parse::<i64>() {
            Ok(value) => Ok(value),
            Err(_) => exec_err!("_pg_expandarray: '{text}' is not an array of integers"),
        })
        .collect()
}

/// A `COPY ... TO STDOUT`: the query that gives its rows, and how they are written.
#[derive(Debug)]
pub struct CopyOut {
    pub query: String,
    format: CopyFormat,
}

#[derive(Debug, PartialEq)]
enum CopyFormat {
    Text { delimiter: char, null: String },
    Csv { delimiter: char, null: String, header: bool, quote: char, escape: Option<char> },
    Binary,
}

/// Reads `statement` as a `COPY` to or from the client. `None` for any other statement, including a
/// `COPY` to a file, which DataFusion plans as its own statement (and the role check refuses to
/// analysts); an error for a `COPY` that coldtrail does not serve (from the client, or with an option
/// it does not write).
pub fn copy_out(statement: &Statement) -> Option<Result<CopyOut, QueryError>> {
    let Statement::Copy { source, to, target, options, legacy_options, .. } = statement else {
        return None;
    };
    if !matches!(target, CopyTarget::Stdout | CopyTarget::Stdin) {
        return None;
    }
    Some(read_copy(source, *to, options, legacy_options))
}

fn unsupported(what: impl std::fmt::Display) -> QueryError {
    QueryError::Unsupported(format!("{what}; coldtrail serves COPY (query) TO STDOUT and COPY table TO STDOUT"))
}

fn read_copy(
    source: &CopySource,
    to: bool,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<CopyOut, QueryError> {
    if !to {
        return Err(unsupported("COPY ... FROM STDIN: the store is written by ingest only"));
    }
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table { table_name, columns } => {
            let name = table_name
                .0
                .iter()
                .map(|part| match part {
                    ObjectNamePart::Identifier(ident) => Ok(ident.to_string()),
                    other => Err(unsupported(format!("COPY of {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(".");
            let columns = if columns.is_empty() {
                "*".to_string()
            } else {
                columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
            };
            format!("SELECT {columns} FROM {name}")
        }
    };
    let mut format = "text".to_string();
    let (mut delimiter, mut null, mut header, mut quote, mut escape) = (None, None, false, '"', None);
    for option in options {
        match option {
            CopyOption::Format(name) => format = name.value.to_ascii_lowercase(),
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(text) => null = Some(text.clone()),
            CopyOption::Header(on) => header = *on,
            CopyOption::Quote(c) => quote = *c,
            CopyOption::Escape(c) => escape = Some(*c),
            CopyOption::Encoding(name) if name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(unsupported(format!("the COPY option {other}"))),
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Binary => format = "binary".into(),
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(text) => null = Some(text.clone()),
            CopyLegacyOption::Csv(csv) => {
                format = "csv".into();
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(c) => quote = *c,
                        CopyLegacyCsvOption::Escape(c) => escape = Some(*c),
                        other => return Err(unsupported(format!("the COPY option {other}"))),
                    }
                }
            }
            other => return Err(unsupported(format!("the COPY option {other}"))),
        }
    }
    let format = match format.as_str() {
        "text" if !header => {
            CopyFormat::Text { delimiter: delimiter.unwrap_or('\t'), null: null.unwrap_or("\\N".into()) }
        }
        "text" => return Err(unsupported("HEADER in text format (PostgreSQL allows it in CSV only)")),
        "csv" => CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(','),
            null: null.unwrap_or_default(),
            header,
            quote,
            escape,
        },
        "binary" if delimiter.is_none() && null.is_none() && !header => CopyFormat::Binary,
        "binary" => return Err(unsupported("DELIMITER, NULL or HEADER in binary format")),
        other => return Err(unsupported(format!("the COPY format {other}"))),
    };
    Ok(CopyOut { query, format })
}

/// The rows of a `COPY ... TO STDOUT`, encoded: the header line (CSV with `HEADER`), then one message
/// per row. pgwire's `CopyResponse::new` adds the binary trailer.
pub struct CopyRows {
    pub format: i8,
    pub columns: usize,
    pub header: Option<CopyData>,
    pub rows: futures::stream::BoxStream<'static, PgWireResult<CopyData>>,
}

impl CopyOut {
    /// Runs the query on `ctx` and streams its rows as COPY data. Values are encoded as the extended
    /// protocol encodes them (text or binary), so every type a `SELECT` returns can be copied.
    pub async fn run(&self, ctx: &SessionContext) -> PgWireResult<CopyRows> {
        let api = |e: datafusion::error::DataFusionError| PgWireError::ApiError(Box::new(e));
        let df = ctx.sql(&self.query).await.map_err(api)?;
        let binary = self.format == CopyFormat::Binary;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let wire = if binary { Format::UnifiedBinary } else { Format::UnifiedText };
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &wire, None)?);
        let mut encoder = match &self.format {
            CopyFormat::Binary => CopyEncoder::new_binary(fields.clone()),
            CopyFormat::Text { delimiter, null } => CopyEncoder::new_text(
                fields.clone(),
                CopyTextOptions { delimiter: delimiter.to_string().into(), null_string: null.as_str().into() },
            ),
            CopyFormat::Csv { delimiter, null, quote, escape, .. } => CopyEncoder::new_csv(
                fields.clone(),
                CopyCsvOptions {
                    delimiter: delimiter.to_string().into(),
                    quote: quote.to_string().into(),
                    escape: escape.unwrap_or(*quote).to_string().into(),
                    null_string: null.as_str().into(),
                    force_quote: Vec::new(),
                },
            ),
        };
        let header = match &self.format {
            CopyFormat::Csv { header: true, delimiter, quote, .. } => {
                let names: Vec<String> =
                    schema.fields().iter().map(|f| csv_field(f.name(), *delimiter, *quote)).collect();
                Some(CopyData::new(format!("{}\n", names.join(&delimiter.to_string())).into()))
            }
            _ => None,
        };
        let batches = df.execute_stream().await.map_err(api)?;
        let rows = batches.flat_map(move |batch| {
            let rows: Vec<PgWireResult<CopyData>> = match batch {
                Err(e) => vec![Err(PgWireError::ApiError(Box::new(e)))],
                Ok(batch) => (0..batch.num_rows())
                    .map(|row| {
                        let schema = batch.schema();
                        for ((column, arrow_field), pg_field) in
                            batch.columns().iter().zip(schema.fields()).zip(fields.iter())
                        {
                            encode_value(&mut encoder, column, row, arrow_field, pg_field)?;
                        }
                        Ok(encoder.take_copy())
                    })
                    .collect(),
            };
            futures::stream::iter(rows)
        });
        Ok(CopyRows { format: i8::from(binary), columns: schema.fields().len(), header, rows: rows.boxed() })
    }
}

/// A column name in a CSV header, quoted when it has to be.
fn csv_field(name: &str, delimiter: char, quote: char) -> String {
    if name.contains([delimiter, quote, '\n', '\r']) {
        let doubled = name.replace(quote, &format!("{quote}{quote}"));
        format!("{quote}{doubled}{quote}")
    } else {
        name.to_string()
    }
}

/// datafusion-postgres's statement hooks, with [`SavepointHook`] before its transaction hook (which
/// would read `ROLLBACK TO` as the end of the transaction).
pub fn query_hooks() -> Vec<Arc<dyn QueryHook>> {
    vec![
        Arc::new(SavepointHook),
        Arc::new(CopyParseHook),
        Arc::new(ShowVersionHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ]
}

/// Lets the extended protocol's parse step accept a `COPY ... TO STDOUT` (DataFusion would plan it as
/// a `COPY` to a file and fail): it describes as no data, as PostgreSQL's does. Running it is the
/// server's (`pg::Service`), which checks the role on the query inside; the hook itself answers no
/// statement.
#[derive(Debug)]
pub struct CopyParseHook;

/// `impl QueryHook for $hook` with the items given and a `handle_extended_query` that answers as its
/// `handle_simple_query` does (the answers need no parameters).
macro_rules! hook_answering_extended_as_simple {
    ($hook:ty { $($items:tt)* }) => {
        #[async_trait]
        impl QueryHook for $hook {
            $($items)*

            async fn handle_extended_query(
                &self,
                statement: &Statement,
                _logical_plan: &LogicalPlan,
                _params: &ParamValues,
                session_context: &SessionContext,
                client: &mut dyn HookClient,
            ) -> Option<PgWireResult<Response>> {
                self.handle_simple_query(statement, session_context, client).await
            }
        }
    };
}

#[async_trait]
impl QueryHook for CopyParseHook {
    async fn handle_simple_query(
        &self,
        _statement: &Statement,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        copy_out(statement).map(|_| Ok(no_rows()))
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// The server version as the startup message reports it (`server_version`).
pub fn server_version() -> String {
    format!("{SERVER_VERSION} (coldtrail {})", env!("CARGO_PKG_VERSION"))
}

/// `SHOW server_version` and `SHOW server_version_num` with the version the server reports at startup
/// (datafusion-postgres would answer DataFusion's own).
#[derive(Debug)]
pub struct ShowVersionHook;

impl ShowVersionHook {
    /// The setting and its value, for a `SHOW` of the server's version.
    fn answer(statement: &Statement) -> Option<(&'static str, String)> {
        let Statement::ShowVariable { variable } = statement else { return None };
        let [name] = &variable[..] else { return None };
        match name.value.to_ascii_lowercase().as_str() {
            "server_version" => Some(("server_version", server_version())),
            "server_version_num" => {
                let (major, minor) = SERVER_VERSION.split_once('.').unwrap_or((SERVER_VERSION, "0"));
                let number = major.parse::<u32>().unwrap_or(0) * 10_000 + minor.parse::<u32>().unwrap_or(0);
                Some(("server_version_num", number.to_string()))
            }
            _ => None,
        }
    }
}

hook_answering_extended_as_simple!(ShowVersionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        use datafusion_postgres::pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse};
        let (name, value) = Self::answer(statement)?;
        let fields = Arc::new(vec![FieldInfo::new(
            name.into(),
            None,
            None,
            datafusion_postgres::pgwire::api::Type::VARCHAR,
            FieldFormat::Text,
        )]);
        let mut encoder = DataRowEncoder::new(fields.clone());
        let row = encoder.encode_field(&Some(value)).map(|()| encoder.take_row());
        Some(row.map(|row| Response::Query(QueryResponse::new(fields, futures::stream::once(async move { Ok(row) })))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let (name, value) = Self::answer(statement)?;
        let sql = format!("SELECT '{}' AS {name}", value.replace('\'', "''"));
        let plan = session_context.state().create_logical_plan(&sql).await;
        Some(plan.map_err(|e| PgWireError::ApiError(Box::new(e))))
    }
});

/// The plan of a statement that returns no rows and is answered without DataFusion.
fn no_rows() -> LogicalPlan {
    let schema = Arc::new(datafusion::common::DFSchema::empty());
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation { produce_one_row: false, schema })
}

/// Savepoints answered as datafusion-postgres answers transactions: accepted, with nothing to undo,
/// since a transaction on coldtrail only reads (admins' DDL is not transactional either). After an
/// error, `ROLLBACK TO` leaves the transaction usable again ([`is_rollback_to_savepoint`]); a
/// `SAVEPOINT` or `RELEASE` is refused until then, as PostgreSQL refuses them.
#[derive(Debug)]
pub struct SavepointHook;

/// Whether `statement` is a `ROLLBACK TO SAVEPOINT`.
pub fn is_rollback_to_savepoint(statement: &Statement) -> bool {
    matches!(statement, Statement::Rollback { savepoint: Some(_), .. })
}

fn savepoint_tag(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Savepoint { .. } => Some("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
        s if is_rollback_to_savepoint(s) => Some("ROLLBACK"),
        _ => None,
    }
}

hook_answering_extended_as_simple!(SavepointHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let tag = savepoint_tag(statement)?;
        let refusal = match client.transaction_status() {
            TransactionStatus::Idle => Some(("25P01", format!("{statement} can only be used in transaction blocks"))),
            TransactionStatus::Error if tag != "ROLLBACK" => Some((
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block".to_string(),
            )),
            _ => None,
        };
        if let Some((code, message)) = refusal {
            return Some(Err(PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))));
        }
        Some(Ok(Response::Execution(Tag::new(tag))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        savepoint_tag(statement)?;
        Some(Ok(no_rows()))
    }
});

/// `(expression).field`, PostgreSQL's access to a field of a composite value, as `(expression)['field']`,
/// which DataFusion plans (it reads a dot after anything but a column name as unsupported). pgjdbc's
/// key metadata queries use it (`(information_schema._pg_expandarray(i.indkey)).n`). `None` when the
/// text has no such access, or does not parse (the planner then reports the error).
pub fn composite_field_access(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{AccessExpr, Expr, Subscript, Value, VisitMut, VisitorMut};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    if !sql.contains(").") {
        return None;
    }
    struct Rewrite(bool);
    impl VisitorMut for Rewrite {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::CompoundFieldAccess { root, access_chain } = expr {
                if matches!(**root, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    return ControlFlow::Continue(());
                }
                for access in access_chain.iter_mut() {
                    if let AccessExpr::Dot(Expr::Identifier(ident)) = access {
                        let name =
                            if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() };
                        let index = Expr::value(Value::SingleQuotedString(name));
                        *access = AccessExpr::Subscript(Subscript::Index { index });
                        self.0 = true;
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut rewrite = Rewrite(false);
    let _ = statements.visit(&mut rewrite);
    rewrite.0.then(|| statements.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "))
}

/// `to_regtype(name) -> oid`: the type's oid in `pg_type`, NULL when there is no such type (psycopg
/// asks it for the types it adapts, such as `hstore`). Names are read as PostgreSQL reads them:
/// `pg_catalog.` optional, SQL spellings (`integer`, `timestamp with time zone`) and `name[]` arrays.
/// Registers `to_regtype` over the `pg_type` rows of `ctx` (call after the catalog is set up).
pub async fn register_to_regtype(ctx: &SessionContext) -> Result<()> {
    let batches = ctx.sql("SELECT typname, CAST(oid AS INT) FROM pg_catalog.pg_type").await?.collect().await?;
    let mut oids = std::collections::BTreeMap::new();
    for batch in &batches {
        let names = cast(batch.column(0), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let values = batch.column(1).as_primitive::<arrow::datatypes::Int32Type>();
        for i in 0..batch.num_rows() {
            if names.is_valid(i) && values.is_valid(i) {
                oids.insert(names.value(i).to_string(), values.value(i));
            }
        }
    }
    ctx.register_udf(ScalarUDF::from(Compat {
        name: "to_regtype",
        signature: Signature::any(1, Volatility::Stable),
        returns: DataType::Int32,
        body: Body::ToRegtype(oids),
    }));
    Ok(())
}

/// The oid of the type `name` names among `oids`.
fn regtype(oids: &std::collections::BTreeMap<String, i32>, name: &str) -> Option<i32> {
    let name = name.trim().to_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name).trim_matches('"');
    let (base, array) = match name.strip_suffix("[]") {
        Some(base) => (base.trim(), true),
        None => (name, false),
    };
    let base = match base {
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "boolean" => "bool",
        "real" => "float4",
        "double precision" => "float8",
        "character varying" => "varchar",
        "character" => "bpchar",
        "decimal" => "numeric",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "time with time zone" => "timetz",
        "time without time zone" => "time",
        other => other,
    };
    let key = if array { format!("_{base}") } else { base.to_string() };
    oids.get(&key).copied()
}

/// `json_build_object(key, value, ...) -> text`: a JSON object per row; numbers and booleans stay
/// JSON numbers and booleans, NULL is `null`, anything else is its text.
fn json_build_object(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    if !args.args.len().is_multiple_of(2) {
        return exec_err!("json_build_object: an even number of arguments (key, value, ...) is required");
    }
    let rows = args.number_rows;
    let arrays = args.args.iter().map(|a| a.to_array(rows)).collect::<Result<Vec<_>>>()?;
    let texts = arrays.iter().map(|a| cast(a, &DataType::Utf8)).collect::<Result<Vec<_>, _>>()?;
    let mut out = arrow::array::StringBuilder::with_capacity(rows, rows * 32);
    for row in 0..rows {
        let mut object = serde_json::Map::new();
        for pair in 0..arrays.len() / 2 {
            let (keys, values) = (texts[2 * pair].as_string::<i32>(), &arrays[2 * pair + 1]);
            if keys.is_null(row) {
                return exec_err!("json_build_object: a key is NULL");
            }
            let text = texts[2 * pair + 1].as_string::<i32>();
            let value = if text.is_null(row) {
                serde_json::Value::Null
            } else if values.data_type() == &DataType::Boolean {
                serde_json::Value::Bool(values.as_boolean().value(row))
            } else if values.data_type().is_numeric() {
                serde_json::from_str(text.value(row)).unwrap_or_else(|_| text.value(row).into())
            } else {
                text.value(row).into()
            };
            object.insert(keys.value(row).to_string(), value);
        }
        out.append_value(serde_json::Value::Object(object).to_string());
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0)
    }

    #[test]
    fn a_composite_field_access_becomes_a_subscript_and_column_paths_stay() {
        let rewritten = composite_field_access("SELECT (f(i.indkey)).n, (r.KEYS).X, t.a FROM t").unwrap();
        assert_eq!(rewritten, "SELECT (f(i.indkey))['n'], (r.KEYS)['x'], t.a FROM t");
        assert_eq!(composite_field_access("SELECT t.a, count(x) FROM t"), None);
        assert_eq!(composite_field_access("SELECT 'a).b' FROM t"), None, "a literal is not an access");
    }

    #[test]
    fn copy_options_are_read_as_postgres_reads_them_and_the_rest_refused() {
        let copy = copy_out(&statement("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')"))
            .unwrap()
            .unwrap();
        assert_eq!(copy.query, "SELECT 1");
        assert_eq!(
            copy.format,
            CopyFormat::Csv { delimiter: ';', null: String::new(), header: true, quote: '"', escape: None }
        );
        let legacy = copy_out(&statement("COPY invocations (request_id) TO STDOUT CSV HEADER")).unwrap().unwrap();
        assert_eq!(legacy.query, "SELECT request_id FROM invocations");
        assert!(matches!(legacy.format, CopyFormat::Csv { header: true, .. }));
        let text = copy_out(&statement("COPY logs TO STDOUT")).unwrap().unwrap();
        assert_eq!(text.format, CopyFormat::Text { delimiter: '\t', null: "\\N".into() });
        assert!(copy_out(&statement("COPY (SELECT 1) TO '/tmp/x.csv'")).is_none(), "DataFusion's own COPY");
        assert!(copy_out(&statement("SELECT 1")).is_none());
        for refused in [
            "COPY logs FROM STDIN",
            "COPY logs TO STDOUT WITH (FORMAT text, HEADER)",
            "COPY logs TO STDOUT WITH (FORMAT binary, DELIMITER ',')",
            "COPY logs TO STDOUT WITH (FREEZE)",
        ] {
            assert!(matches!(copy_out(&statement(refused)), Some(Err(QueryError::Unsupported(_)))), "{refused}");
        }
    }

    #[test]
    fn int2vectors_parse_as_postgres_writes_them() {
        assert_eq!(parse_vector("1 2").unwrap(), vec![1, 2]);
        assert_eq!(parse_vector("{3,4}").unwrap(), vec![3, 4]);
        assert_eq!(parse_vector("").unwrap(), Vec::<i64>::new());
        assert!(parse_vector("1 x").is_err());
    }
}
