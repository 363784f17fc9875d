//! SQL procedures: analysts' triage of incidents, and admins' suppressions.
//!
//! - `CALL incident_status(id, status [, note])`: open, acknowledged, resolved or false_positive;
//! - `CALL incident_assign(id, assignee [, note])`: `NULL` unassigns;
//! - `CALL incident_note(id, note)`;
//! - admins only: `CALL suppress(detector, function, principal, until, reason)` (`NULL` for any detector,
//!   function or principal; `until` in RFC 3339) adds a suppression to `store::suppressions`, which
//!   every process's outbox re-reads; `CALL unsuppress(id)` lifts one.
//!
//! A triage call stores a new `incidents` row: the incident's latest row with the change, `changed_by` the caller,
//! at a time after that row's, so that the latest row per id stays the whole state (the incident builder
//! carries it on the rows it writes later; see `detect::incidents`). Every earlier note stays in the
//! incident's rows. The statement is audited like every other, with its caller, and it answers with the
//! row it stored. Analysts may triage; a merged incident is triaged through the one it was merged into.
//! A suppression call answers with the suppression's id (or the id lifted).
//! - user management (`crate::accounts`): `CALL create_user(name, role, password)`, `CALL drop_user(name)`
//!   (admins), `CALL set_password(name, password)` (admins, or anyone for themselves); `audited` hides
//!   their passwords from the audit.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use store::suppressions::RuntimeSuppression;
use store::tables::IncidentRow;
use store::{Store, Table, TimeRange};

use crate::auth::Role;
use crate::engine::Caller;
use crate::error::{QueryError, Result};
use crate::forensics::quote;

/// A procedure call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// An analyst's change to an incident.
    Triage(Change),
    /// An admin's new suppression (its id not yet given).
    Suppress(RuntimeSuppression),
    /// An admin lifting a suppression, by id.
    Unsuppress(String),
    /// A change to the users added at run time.
    User(crate::accounts::Change),
}

/// The procedures whose arguments hold a password.
const SECRET_PROCEDURES: [&str; 2] = ["create_user", "set_password"];

/// `sql` as the audit keeps it: a call that carries a password with the password hidden (a call that does
/// not parse keeps only its procedure's name); any other statement as it is.
pub fn audited(sql: &str) -> std::borrow::Cow<'_, str> {
    if !starts_with_call(sql) {
        return sql.into();
    }
    let lower = sql.to_ascii_lowercase();
    let Some(procedure) = SECRET_PROCEDURES.into_iter().find(|p| lower.contains(p)) else { return sql.into() };
    match parse(sql) {
        Some(Ok(Call::User(change))) => change.audited().into(),
        _ => format!("CALL {procedure}(…) [its arguments are hidden: they may hold a password]").into(),
    }
}

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

/// The call `sql` makes, when it is a call of one of these procedures; `None` for any other statement.
pub fn parse(sql: &str) -> Option<Result<Call>> {
    procedure(&call_of(sql)?)
}

/// Whether `sql` starts with `CALL` (checked before anything parses it).
fn starts_with_call(sql: &str) -> bool {
    sql.trim_start().get(..4).is_some_and(|w| w.eq_ignore_ascii_case("call"))
}

/// `sql` parsed, when it is one statement, a `CALL`.
fn call_of(sql: &str) -> Option<Statement> {
    if !starts_with_call(sql) {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    statements.pop().filter(|_| statements.is_empty())
}

/// `sql`, when it calls one of these procedures with `$n` parameters (the extended protocol: psycopg,
/// JDBC, node-postgres), with `params` (`None`: NULL) put in their places as literals; `None` for any
/// other statement.
pub fn bind(sql: &str, params: &[Option<String>]) -> Option<Result<String>> {
    // One of these procedures (its arguments are checked once bound).
    let mut statement = call_of(sql).filter(|s| procedure(s).is_some())?;
    for value in arguments(&mut statement) {
        let SqlValue::Placeholder(placeholder) = &value.value else { continue };
        let Some(param) = placeholder_number(placeholder).and_then(|n| params.get(n - 1)) else {
            return Some(Err(QueryError::BadRequest(format!("the call has no value for {placeholder}"))));
        };
        value.value = param.clone().map_or(SqlValue::Null, SqlValue::SingleQuotedString);
    }
    Some(Ok(statement.to_string()))
}

/// The call a portal of the extended protocol makes, when its statement calls one of these procedures:
/// the text to audit (the statement with its parameters bound) and the call. `params` is `None` when a
/// parameter is not text.
pub fn bound(sql: &str, params: Option<&[Option<String>]>) -> Option<(String, Result<Call>)> {
    let text = match (bind(sql, params.unwrap_or_default())?, params) {
        (_, None) => {
            return Some((sql.to_string(), Err(QueryError::BadRequest("a CALL's parameters are text".into()))))
        }
        (Ok(text), Some(_)) => text,
        (Err(e), Some(_)) => return Some((sql.to_string(), Err(e))),
    };
    let call = parse(&text).unwrap_or_else(|| Err(QueryError::BadRequest("the bound call does not parse".into())));
    Some((text, call))
}

/// How many `$n` parameters a call of one of these procedures takes (the highest `n`), all text.
pub fn parameters(sql: &str) -> usize {
    let Some(mut statement) = call_of(sql).filter(|s| procedure(s).is_some()) else { return 0 };
    let number = |value: &SqlValue| match value {
        SqlValue::Placeholder(p) => placeholder_number(p).unwrap_or(0),
        _ => 0,
    };
    arguments(&mut statement).map(|value| number(&value.value)).max().unwrap_or(0).min(64)
}

/// `n` of a placeholder `$n` (from 1).
fn placeholder_number(placeholder: &str) -> Option<usize> {
    placeholder.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).filter(|n| *n >= 1)
}

/// The literal (or placeholder) arguments of a call.
fn arguments(statement: &mut Statement) -> impl Iterator<Item = &mut datafusion::sql::sqlparser::ast::ValueWithSpan> {
    let list = match statement {
        Statement::Call(function) => match &mut function.args {
            FunctionArguments::List(list) => Some(list.args.iter_mut()),
            _ => None,
        },
        _ => None,
    };
    list.into_iter().flatten().filter_map(|arg| match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value))) => Some(value),
        _ => None,
    })
}

/// The call `statement` makes, when it calls one of these procedures.
pub fn procedure(statement: &Statement) -> Option<Result<Call>> {
    let Statement::Call(function) = statement else { return None };
    let name = function.name.to_string().to_ascii_lowercase();
    match name.as_str() {
        "incident_status" | "incident_assign" | "incident_note" => {
            Some(change(&name, &function.args).map(Call::Triage))
        }
        "suppress" | "unsuppress" => Some(suppression(&name, &function.args)),
        "create_user" | "drop_user" | "set_password" => Some(
            text_arguments(&function.args, &name).and_then(|args| crate::accounts::parse(&name, &args)).map(Call::User),
        ),
        _ => None,
    }
}

/// Whether `role` may make `call`: anyone triages; only admins suppress and manage users (a user's own
/// password is checked by name when it is set).
pub fn check(call: &Call, role: Role) -> Result<()> {
    match (call, role) {
        (Call::User(change), Role::Analyst) if !matches!(change, crate::accounts::Change::SetPassword { .. }) => {
            Err(QueryError::Denied("an analyst may not manage users; an admin may".into()))
        }
        (Call::Suppress(_) | Call::Unsuppress(_), Role::Analyst) => {
            Err(QueryError::Denied("an analyst may not change suppressions; an admin may".into()))
        }
        _ => Ok(()),
    }
}

/// The text arguments of a call.
fn text_arguments(args: &FunctionArguments, usage: &str) -> Result<Vec<Option<String>>> {
    match args {
        FunctionArguments::List(list) => list.args.iter().map(text_argument).collect(),
        FunctionArguments::None => Ok(Vec::new()),
        FunctionArguments::Subquery(_) => Err(QueryError::BadRequest(format!("usage: CALL {usage}"))),
    }
}

fn suppression(name: &str, args: &FunctionArguments) -> Result<Call> {
    if name == "unsuppress" {
        let usage = "unsuppress(id)";
        return match &text_arguments(args, usage)?[..] {
            [Some(id)] if !id.trim().is_empty() => Ok(Call::Unsuppress(id.trim().to_string())),
            _ => Err(QueryError::BadRequest(format!("usage: CALL {usage}"))),
        };
    }
    let usage = "suppress(detector, function, principal, until, reason) with NULL for any";
    let [detector, function, principal, until, reason] = <[Option<String>; 5]>::try_from(text_arguments(args, usage)?)
        .map_err(|_| QueryError::BadRequest(format!("usage: CALL {usage}")))?;
    let Some(until) = until.filter(|u| chrono::DateTime::parse_from_rfc3339(u).is_ok()) else {
        return Err(QueryError::BadRequest(
            "suppress: until must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z".into(),
        ));
    };
    let Some(reason) = reason.filter(|r| !r.trim().is_empty() && r.chars().count() <= NOTE_CHARS_MAX) else {
        return Err(QueryError::BadRequest(format!(
            "suppress: a reason of 1 to {NOTE_CHARS_MAX} characters is required"
        )));
    };
    let some = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let (detector, function, principal) = (some(detector), some(function), some(principal));
    if detector.is_none() && function.is_none() && principal.is_none() {
        return Err(QueryError::BadRequest(
            "suppress: name a detector, a function or a principal (not everything)".into(),
        ));
    }
    Ok(Call::Suppress(RuntimeSuppression {
        id: String::new(),
        detector,
        function,
        principal,
        until,
        reason,
        added_by: String::new(),
        added_at: String::new(),
    }))
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
    let args = text_arguments(args, usage)?;
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

/// Makes `call` for `caller` (checked with `check` first); the query that answers it.
///
/// # Errors
/// See `triage` and `suppress`.
pub async fn apply(store: &Arc<Store>, users: &crate::auth::Users, call: &Call, caller: &Caller) -> Result<String> {
    check(call, caller.role)?;
    match call {
        Call::User(change) => crate::accounts::apply(users, store.location(), change, &caller.user, caller.role).await,
        Call::Triage(change) => triage(store, change, &caller.user).await,
        Call::Suppress(suppression) => suppress(store, suppression, &caller.user).await,
        Call::Unsuppress(id) => unsuppress(store, id).await,
    }
}

/// Adds a suppression; answers with its id.
async fn suppress(store: &Arc<Store>, suppression: &RuntimeSuppression, user: &str) -> Result<String> {
    let location = store.location();
    let mut all = store::suppressions::read(location).await?;
    let now = chrono::Utc::now();
    let id = format!("s-{}", crate::auth::random_secret(6)?);
    all.push(RuntimeSuppression {
        id: id.clone(),
        added_by: user.to_string(),
        added_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..suppression.clone()
    });
    store::suppressions::write(location, &all).await?;
    Ok(format!("SELECT {} AS suppression_id, {} AS until", quote(&id), quote(&suppression.until)))
}

/// Lifts a suppression; answers with how many were lifted.
async fn unsuppress(store: &Arc<Store>, id: &str) -> Result<String> {
    let location = store.location();
    let mut all = store::suppressions::read(location).await?;
    let before = all.len();
    all.retain(|s| s.id != id);
    if all.len() == before {
        return Err(QueryError::BadRequest(format!("no suppression {}", quote(id))));
    }
    store::suppressions::write(location, &all).await?;
    Ok(format!("SELECT {} AS lifted", quote(id)))
}

/// Stores `change`, made by `user`, as a new row of the incident; the query that answers with that row.
///
/// # Errors
/// When the incident does not exist or was merged into another, or the store fails.
async fn triage(store: &Arc<Store>, change: &Change, user: &str) -> Result<String> {
    let mut latest: Option<IncidentRow> = None;
    for batch in store.scan(Table::Incidents, None, TimeRange::ALL).await? {
        // Read in place; only the incident's newest row is copied.
        let columns = IncidentRow::columns(&batch)?;
        for row in (0..columns.rows()).map(|i| IncidentRow::read(&columns, i)) {
            if row.incident_id == change.incident_id.as_str() && latest.as_ref().is_none_or(|l| l.ts <= row.ts) {
                latest = Some(row.owned());
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

    fn change(sql: &str) -> Change {
        match parse(sql).unwrap().unwrap() {
            Call::Triage(change) => change,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn calls_with_parameters_are_bound_as_literals_and_only_calls_of_these_procedures() {
        let sql = "CALL incident_status($1, $2, $3)";
        assert_eq!(parameters(sql), 3);
        let params = [Some("inc-1".to_string()), Some("resolved".into()), None];
        let bound = bind(sql, &params).unwrap().unwrap();
        assert_eq!(bound, "CALL incident_status('inc-1', 'resolved', NULL)");
        assert_eq!(change(&bound).status.as_deref(), Some("resolved"));
        let quoted = bind("CALL incident_note($1, $2)", &[Some("i".into()), Some("it's $1".into())]).unwrap().unwrap();
        assert_eq!(change(&quoted).note.as_deref(), Some("it's $1"));
        assert!(bind(sql, &params[..1]).unwrap().unwrap_err().to_string().contains("no value for $2"));
        assert!(bind("CALL other_procedure($1)", &params).is_none());
        assert!(bind("SELECT $1", &params).is_none());
        assert_eq!(parameters("SELECT $1"), 0);
    }

    #[test]
    fn a_portal_audits_its_bound_text_and_refuses_parameters_that_are_not_text() {
        let sql = "CALL incident_note($1, $2)";
        let (text, call) = bound(sql, Some(&[Some("i".into()), Some("seen".into())])).unwrap();
        assert_eq!(text, "CALL incident_note('i', 'seen')");
        assert_eq!(call.unwrap(), parse(&text).unwrap().unwrap());
        let (text, call) = bound(sql, None).unwrap();
        assert_eq!((text.as_str(), call.unwrap_err().to_string().contains("text")), (sql, true));
        assert!(bound(sql, Some(&[])).unwrap().1.unwrap_err().to_string().contains("no value for $1"));
        assert!(bound("SELECT $1", Some(&[])).is_none());
    }

    #[test]
    fn the_audit_never_keeps_a_password_even_of_a_call_that_does_not_parse() {
        assert_eq!(
            audited("CALL create_user('bob', 'admin', 'secret-one')"),
            "CALL create_user('bob', 'admin', '********')"
        );
        assert!(!audited("CALL create_user('bob', 'root', 'secret-one')").contains("secret"));
        assert!(!audited("call  SET_PASSWORD('bob', 'secret-one'").contains("secret"));
        assert_eq!(audited("SELECT 'create_user'"), "SELECT 'create_user'");
    }

    #[test]
    fn suppressions_are_for_admins_and_must_say_what_until_when_and_why() {
        let call = parse("CALL suppress('callers.', NULL, NULL, '2030-01-01T00:00:00Z', 'partner onboarding')");
        let call = call.unwrap().unwrap();
        let Call::Suppress(s) = &call else { panic!("{call:?}") };
        assert_eq!((s.detector.as_deref(), s.function.as_deref()), (Some("callers."), None));
        assert!(matches!(check(&call, Role::Analyst), Err(QueryError::Denied(_))));
        assert!(check(&call, Role::Admin).is_ok());
        assert_eq!(parse("CALL unsuppress('s-1')").unwrap().unwrap(), Call::Unsuppress("s-1".into()));
        let error = |sql: &str| parse(sql).unwrap().unwrap_err().to_string();
        assert!(error("CALL suppress(NULL, NULL, NULL, '2030-01-01T00:00:00Z', 'all')").contains("not everything"));
        assert!(error("CALL suppress('x.', NULL, NULL, 'tomorrow', 'r')").contains("RFC 3339"));
        assert!(error("CALL suppress('x.', NULL, NULL, '2030-01-01T00:00:00Z', NULL)").contains("reason"));
        assert!(error("CALL suppress('x.')").contains("usage"));
        assert!(error("CALL unsuppress()").contains("usage"));
    }

    #[test]
    fn calls_of_the_procedures_become_changes() {
        let change = self::change("CALL incident_status('abc', 'Acknowledged', 'on it')");
        assert_eq!(change.status.as_deref(), Some("acknowledged"));
        assert_eq!(change.note.as_deref(), Some("on it"));
        let change = self::change("  call INCIDENT_ASSIGN('abc', NULL);");
        assert_eq!(change.assignee, Some(None));
        let change = self::change("CALL incident_note('abc', 'it''s the pentest')");
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
