//! What each role may run.
//!
//! An analyst may read: queries, `EXPLAIN`, `SHOW`, transactions and cursors, and settings local to
//! their own session. DDL (including `CREATE EXTERNAL TABLE`, which reads arbitrary files and URLs), DML,
//! `COPY`, prepared-statement plumbing of DataFusion and engine settings (`SET datafusion.*`, shared by
//! every session) are refused. The check runs on the planned statement, so it holds whatever the SQL
//! text looks like. An admin may run everything DataFusion allows.

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

/// Checks a planned statement.
pub fn check_plan(role: Role, plan: &LogicalPlan) -> Result<()> {
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
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
    )
}

/// Checks a statement that is not planned by DataFusion (see `is_session_statement`). Settings of the
/// shared engine (`datafusion.*`) need the admin role; a session's own client settings do not.
pub fn check_session_statement(role: Role, statement: &Statement) -> Result<()> {
    if role == Role::Admin {
        return Ok(());
    }
    let variables: Vec<String> = match statement {
        Statement::Set(Set::SingleAssignment { variable, .. }) => vec![variable.to_string()],
        Statement::Set(Set::MultipleAssignments { assignments }) => {
            assignments.iter().map(|a| a.name.to_string()).collect()
        }
        Statement::Set(Set::ParenthesizedAssignments { variables, .. }) => {
            variables.iter().map(|v| v.to_string()).collect()
        }
        _ => Vec::new(),
    };
    match variables.iter().find(|v| v.to_ascii_lowercase().starts_with("datafusion.")) {
        Some(variable) => Err(denied(role, &format!("changing the engine setting {variable} needs the admin role"))),
        None => Ok(()),
    }
}
