//! Analysts' triage of incidents, as SQL procedures:
//!
//! - `CALL incident_status(id, status [, note])`: open, acknowledged, resolved or false_positive;
//! - `CALL incident_assign(id, assignee [, note])`: `NULL` unassigns;
//! - `CALL incident_note(id, note)`.
//!
//! Each stores a new `incidents` row: the incident's latest row with the change, `changed_by` the caller,
//! at a time after that row's, so that the latest row per id stays the whole state (the incident builder
//! carries it on the rows it writes later; see `detect::incidents`). Every earlier note stays in the
//! incident's rows. The statement is audited like every other, with its caller, and it answers with the
//! row it stored. Analysts may triage; a merged incident is triaged through the one it was merged into.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use store::tables::IncidentRow;
use store::{Store, Table, TimeRange};

use crate::error::{QueryError, Result};
use crate::forensics::quote;

/// The statuses an analyst may set.
pub const STATUSES: [&str; 4] = ["open", "acknowledged", "resolved", "false_positive"];
/// Longest note, and longest assignee, in characters.
pub const NOTE_CHARS_MAX: usize = 4_000;
pub const ASSIGNEE_CHARS_MAX: usize = 200;

/// One analyst's change to one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub incident_id: String,
    pub status: Option<String>,
    /// `Some(None)` unassigns.
    pub assignee: Option<Option<String>>,
    pub note: Option<String>,
}

/// The change `sql` asks for, when it is a call of a triage procedure; `None` for any other statement.
pub fn parse(sql: &str) -> Option<Result<Change>> {
    let head = sql.trim_start();
    if !head.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("call")) {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    match &statements[..] {
        [statement] => procedure(statement),
        _ => None,
    }
}

/// The change `statement` asks for, when it calls a triage procedure.
pub fn procedure(statement: &Statement) -> Option<Result<Change>> {
    let Statement::Call(function) = statement else { return None };
    let name = function.name.to_string().to_ascii_lowercase();
    if !matches!(name.as_str(), "incident_status" | "incident_assign" | "incident_note") {
        return None;
    }
    Some(change(&name, &function.args))
}

/// A text argument, `None` for `NULL`.
fn text_argument(arg: &FunctionArg) -> Result<Option<String>> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value))) => match &value.value {
            SqlValue::SingleQuotedString(s)
            | SqlValue::EscapedStringLiteral(s)
            | SqlValue::DollarQuotedString(datafusion::sql::sqlparser::ast::DollarQuotedString { value: s, .. }) => {
                Ok(Some(s.clone()))
            }
            SqlValue::Null => Ok(None),
            other => Err(QueryError::BadRequest(format!("triage arguments are text literals, got {other}"))),
        },
        other => Err(QueryError::BadRequest(format!("triage arguments are text literals, got {other}"))),
    }
}

fn change(name: &str, args: &FunctionArguments) -> Result<Change> {
    let usage = match name {
        "incident_status" => "incident_status(id, status [, note])",
        "incident_assign" => "incident_assign(id, assignee [, note])",
        _ => "incident_note(id, note)",
    };
    let args: Vec<Option<String>> = match args {
        FunctionArguments::List(list) => list.args.iter().map(text_argument).collect::<Result<_>>()?,
        FunctionArguments::None => Vec::new(),
        FunctionArguments::Subquery(_) => return Err(QueryError::BadRequest(format!("usage: CALL {usage}"))),
    };
    let (least, most) = if name == "incident_note" { (2, 2) } else { (2, 3) };
    if args.len() < least || args.len() > most {
        return Err(QueryError::BadRequest(format!("usage: CALL {usage}")));
    }
    let Some(incident_id) = args[0].clone().filter(|id| !id.trim().is_empty()) else {
        return Err(QueryError::BadRequest(format!("{name}: the incident id is required")));
    };
    let mut change = Change { incident_id, status: None, assignee: None, note: None };
    match name {
        "incident_status" => {
            let status = args[1].clone().unwrap_or_default().to_ascii_lowercase().replace(' ', "_");
            if !STATUSES.contains(&status.as_str()) {
                return Err(QueryError::BadRequest(format!(
                    "{name}: the status is one of {}, got {:?}",
                    STATUSES.join(", "),
                    args[1].as_deref().unwrap_or("NULL")
                )));
            }
            change.status = Some(status);
            change.note = args.get(2).cloned().flatten();
        }
        "incident_assign" => {
            change.assignee = Some(args[1].clone().filter(|a| !a.trim().is_empty()));
            change.note = args.get(2).cloned().flatten();
        }
        _ => {
            change.note = args[1].clone();
            if change.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
                return Err(QueryError::BadRequest(format!("{name}: the note is empty")));
            }
        }
    }
    if change.note.as_ref().is_some_and(|n| n.chars().count() > NOTE_CHARS_MAX) {
        return Err(QueryError::BadRequest(format!("{name}: a note holds at most {NOTE_CHARS_MAX} characters")));
    }
    if change.assignee.as_ref().is_some_and(|a| a.as_ref().is_some_and(|a| a.chars().count() > ASSIGNEE_CHARS_MAX)) {
        return Err(QueryError::BadRequest(format!(
            "{name}: an assignee holds at most {ASSIGNEE_CHARS_MAX} characters"
        )));
    }
    Ok(change)
}

/// Stores `change`, made by `user`, as a new row of the incident; the query that answers with that row.
///
/// # Errors
/// When the incident does not exist or was merged into another, or the store fails.
pub async fn apply(store: &Arc<Store>, change: &Change, user: &str) -> Result<String> {
    let mut latest: Option<IncidentRow> = None;
    for batch in store.scan(Table::Incidents, None, TimeRange::ALL).await? {
        for row in IncidentRow::from_batch(&batch)? {
            if row.incident_id == change.incident_id && latest.as_ref().is_none_or(|l| l.ts <= row.ts) {
                latest = Some(row);
            }
        }
    }
    let Some(latest) = latest else {
        return Err(QueryError::BadRequest(format!("no incident {}", quote(&change.incident_id))));
    };
    if latest.status.as_deref() == Some("merged") {
        return Err(QueryError::BadRequest(format!(
            "incident {} was merged into {}: triage that one",
            change.incident_id,
            latest.merged_into.as_deref().unwrap_or("another")
        )));
    }
    let now = chrono::Utc::now().timestamp_micros();
    let mut row =
        IncidentRow { ts: now.max(latest.ts.saturating_add(1)), changed_by: Some(user.to_string()), ..latest };
    if let Some(status) = &change.status {
        row.status = Some(status.clone());
    }
    if let Some(assignee) = &change.assignee {
        row.assignee.clone_from(assignee);
    }
    if change.note.is_some() {
        row.note.clone_from(&change.note);
    }
    let ts = row.ts;
    let batch = IncidentRow::batch(&[row]).expect("one row");
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.append(&[(Table::Incidents, batch)], &[]))
        .await
        .map_err(|e| QueryError::BadRequest(format!("storing the change failed: {e}")))??;
    Ok(format!(
        "SELECT * FROM incidents WHERE incident_id = {} AND ts = {}",
        quote(&change.incident_id),
        quote(&store::time::format_micros(ts))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_of_the_procedures_become_changes() {
        let change = parse("CALL incident_status('abc', 'Acknowledged', 'on it')").unwrap().unwrap();
        assert_eq!(change.status.as_deref(), Some("acknowledged"));
        assert_eq!(change.note.as_deref(), Some("on it"));
        let change = parse("  call INCIDENT_ASSIGN('abc', NULL);").unwrap().unwrap();
        assert_eq!(change.assignee, Some(None));
        let change = parse("CALL incident_note('abc', 'it''s the pentest')").unwrap().unwrap();
        assert_eq!(change.note.as_deref(), Some("it's the pentest"));
        assert!(parse("SELECT 1").is_none());
        assert!(parse("CALL something_else('x')").is_none());
    }

    #[test]
    fn bad_calls_say_what_is_wrong() {
        let error = |sql: &str| parse(sql).unwrap().unwrap_err().to_string();
        assert!(error("CALL incident_status('abc', 'closed')").contains("one of open, acknowledged"));
        assert!(error("CALL incident_status('abc')").contains("usage"));
        assert!(error("CALL incident_note('abc', '  ')").contains("empty"));
        assert!(error("CALL incident_note(NULL, 'x')").contains("id is required"));
        assert!(error("CALL incident_status('abc', 1)").contains("text literals"));
        assert!(error(&format!("CALL incident_note('abc', '{}')", "n".repeat(NOTE_CHARS_MAX + 1))).contains("at most"));
    }
}
