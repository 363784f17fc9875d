//! What each role may run.
//!
//! An analyst may read: queries, `EXPLAIN`, `SHOW`, transactions and cursors, and settings local to
//! their own session; every table but the audit of queries (`ADMIN_TABLES`). DDL (including `CREATE EXTERNAL TABLE`, which reads arbitrary files and URLs), DML,
//! `COPY`, prepared-statement plumbing of DataFusion and every `SET` that would reach the engine's
//! `SessionContext`, which every session shares, are refused. The check runs on the planned statement,
//! so it holds whatever the SQL text looks like; a `SET` is allowed only in the exact form that the
//! PostgreSQL layer keeps in the connection (`SESSION_SETTINGS`, a literal value), and a time zone is
//! kept in the connection by `pg` itself. An admin may run everything DataFusion allows.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Set, Statement};

use crate::auth::Role;
use crate::error::{QueryError, Result};

/// DataFusion's own statement checks for `role`.
pub fn sql_options(role: Role) -> SQLOptions {
    match role {
        Role::Admin => SQLOptions::new(),
        Role::Analyst => SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false),
    }
}

/// Tables only an admin reads: `query_audit` holds every user's SQL, admins' included (which may carry
/// credentials, e.g. `CREATE EXTERNAL TABLE … OPTIONS ('aws.secret_access_key' …)`), and who looked at
/// what is not for every analyst to see.
pub const ADMIN_TABLES: [&str; 1] = ["query_audit"];

/// Checks a planned statement: the statement kinds of the role, and the tables it reads (in subqueries
/// and under `EXPLAIN` too).
pub fn check_plan(role: Role, plan: &LogicalPlan) -> Result<()> {
    check_kinds(role, plan)?;
    if role == Role::Admin {
        return Ok(());
    }
    let mut admin_table = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if ADMIN_TABLES.contains(&scan.table_name.table()) {
                admin_table = Some(scan.table_name.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(QueryError::DataFusion)?;
    match admin_table {
        Some(table) => Err(denied(role, &format!("{table} needs the admin role"))),
        None => Ok(()),
    }
}

fn check_kinds(role: Role, plan: &LogicalPlan) -> Result<()> {
    sql_options(role).verify_plan(plan).map_err(|e| {
        let message = match &e {
            datafusion::error::DataFusionError::Plan(m) => m.clone(),
            other => other.strip_backtrace(),
        };
        // DataFusion says "DDL not supported: CreateView"; say who may.
        let what = match message.split_once(" not supported: ") {
            Some(("Statement", statement)) => format!("{statement} needs the admin role"),
            Some((kind, statement)) => format!("{statement} ({kind}) needs the admin role"),
            None => message,
        };
        denied(role, &what)
    })
}

/// An analyst's statement is at most as long as the audit stores whole (`audit::SQL_TEXT_MAX`): a long
/// comment cannot push the query itself out of the audit. An admin's longer statement is stored cut, with
/// its length and SHA-256.
pub fn check_length(role: Role, sql: &str) -> Result<()> {
    if role == Role::Admin || sql.len() <= crate::audit::SQL_TEXT_MAX {
        return Ok(());
    }
    Err(denied(
        role,
        &format!(
            "a statement of {} bytes is longer than the {} the audit stores",
            sql.len(),
            crate::audit::SQL_TEXT_MAX
        ),
    ))
}

/// Most operators (arithmetic, comparison, `||`, `AND`, `OR`, `UNION`, `INTERSECT`, `EXCEPT`) one
/// statement may hold. A chain of them parses to a tree as deep as the chain is long, and parts of the
/// SQL layer (printing, dropping and walking the tree) recurse without a guard: 3,000 `+` in a row (6 KB
/// of SQL) overflowed the stack of a debug build and aborted the server, whoever sent them.
pub const OPERATORS_MAX: usize = 1_000;

/// Refuses, before anything parses it, a statement with more than `OPERATORS_MAX` operators. Counted on
/// the text outside string literals, quoted names and comments; a run of operator characters (`<=`,
/// `||`) counts once. Applies to every role: a crash takes every session down.
pub fn check_complexity(sql: &str) -> Result<()> {
    let operators = count_operators(sql);
    if operators <= OPERATORS_MAX {
        return Ok(());
    }
    Err(QueryError::BadRequest(format!(
        "the statement holds {operators} operators, more than the {OPERATORS_MAX} one statement may hold; \
         use IN (...) for long lists of values"
    )))
}

fn count_operators(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut at, mut count) = (0usize, 0usize);
    let skip_quoted = |mut at: usize, quote: u8| {
        at += 1;
        while at < bytes.len() {
            if bytes[at] == quote {
                if bytes.get(at + 1) == Some(&quote) {
                    at += 2;
                    continue;
                }
                return at + 1;
            }
            at += 1;
        }
        at
    };
    while at < bytes.len() {
        let byte = bytes[at];
        let next = bytes.get(at + 1).copied();
        at = match byte {
            b'\'' | b'"' => skip_quoted(at, byte),
            b'-' if next == Some(b'-') => bytes[at..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |p| at + p),
            b'/' if next == Some(b'*') => sql[at + 2..].find("*/").map_or(bytes.len(), |p| at + 2 + p + 2),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'&' | b'|' | b'#' | b'~' | b'=' | b'<' | b'>' | b'!' => {
                count += 1;
                at + bytes[at..].iter().take_while(|b| b"+-*/%^&|#~=<>!".contains(b)).count()
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let len = bytes[at..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                let word = &sql[at..at + len];
                if ["and", "or", "union", "intersect", "except"].iter().any(|k| word.eq_ignore_ascii_case(k)) {
                    count += 1;
                }
                at + len
            }
            _ => at + 1,
        };
    }
    count
}

fn denied(role: Role, what: &str) -> QueryError {
    QueryError::Denied(format!("role {} may only read (SELECT, EXPLAIN, SHOW); {what}", role.name()))
}

/// Whether a statement is answered by the PostgreSQL-protocol layer itself (settings, `SHOW`,
/// transactions, cursors) rather than planned by DataFusion.
pub fn is_session_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
    )
}

/// The settings an analyst may change: datafusion-postgres keeps these in the connection when they are
/// written unquoted with a literal value; every other form of `SET` falls through to the shared engine.
pub const SESSION_SETTINGS: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "bytea_output",
    "intervalstyle",
];

/// The time zone an analyst's `SET TIME ZONE x` or `SET timezone = x` asks for, which `pg` keeps in the
/// connection (datafusion-postgres would set it on the shared engine).
pub fn session_time_zone(statement: &Statement) -> Option<String> {
    let value = match statement {
        Statement::Set(Set::SetTimeZone { local: false, value }) => value,
        Statement::Set(Set::SingleAssignment { scope: None, hivevar: false, variable, values })
            if values.len() == 1 && variable.to_string().eq_ignore_ascii_case("timezone") =>
        {
            &values[0]
        }
        _ => return None,
    };
    Some(value.to_string().trim_matches(['\'', '"']).to_string())
}

/// Checks a statement that is not planned by DataFusion (see `is_session_statement`). An analyst's
/// `SET` may only name a setting of `SESSION_SETTINGS` as datafusion-postgres recognises it (unquoted,
/// one literal value) or the time zone; anything else would change the engine every session shares
/// (`SET "datafusion.runtime.memory_limit"`, a quoted name, `SET TIME ZONE` through the engine) and
/// needs the admin role.
pub fn check_session_statement(role: Role, statement: &Statement) -> Result<()> {
    if role == Role::Admin {
        return Ok(());
    }
    let Statement::Set(set) = statement else {
        return Ok(());
    };
    if session_time_zone(statement).is_some() {
        return Ok(());
    }
    if let Set::SingleAssignment { scope: None, hivevar: false, variable, values } = set {
        let name = variable.to_string().to_lowercase();
        let literal = values.len() == 1 && matches!(values[0], datafusion::sql::sqlparser::ast::Expr::Value(_));
        if SESSION_SETTINGS.contains(&name.as_str()) && (literal || name == "statement_timeout") {
            return Ok(());
        }
    }
    Err(denied(
        role,
        &format!(
            "{set} would change the engine every session shares; an analyst may set {}, and the time zone, each \
             unquoted with a literal value",
            SESSION_SETTINGS.join(", ")
        ),
    ))
}

#[cfg(test)]
mod complexity_tests {
    use super::*;

    #[test]
    fn operators_are_counted_outside_literals_names_and_comments() {
        assert_eq!(count_operators("SELECT a + b, c || d FROM t WHERE x <= 1 AND y <> 2 OR z"), 6);
        assert_eq!(count_operators("SELECT '+ + AND ''+''', \"a+b\" -- + + +\n FROM t /* OR OR */ UNION SELECT 1"), 1);
        assert_eq!(count_operators("SELECT android, order_id, unionid FROM t"), 0);
        assert_eq!(count_operators("SELECT 'unterminated + +"), 0);
        let chain = format!("SELECT {}", vec!["1"; OPERATORS_MAX + 2].join("+"));
        assert!(check_complexity(&chain).unwrap_err().to_string().contains("operators"));
        let list =
            format!("SELECT 1 WHERE 1 IN ({})", (0..100_000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        assert!(check_complexity(&list).is_ok(), "an IN list is not a chain");
    }
}
