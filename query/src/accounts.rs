//! Users that admins add while coldtrail runs, beside those of the configuration.
//!
//! - `CALL create_user(name, role, password)` and `CALL drop_user(name)`: admins only;
//! - `CALL set_password(name, password)`: an admin for any added user, anyone for themselves.
//!
//! They are kept in one JSON document in the shared location (`_config/users.json`), as SCRAM-SHA-256
//! salted passwords (never the password), so that every process of a deployment knows them: the process
//! that made the change at once, the others when they next re-read it (`follow`, every 5 s). The users
//! of the configuration stay as configured: a call cannot add, change or drop one of their names. A
//! dropped user's sessions end at their next request, and their PostgreSQL connections at their next
//! statement. The statement's audit row holds `'********'` in place of a password. Like
//! `store::suppressions`, the document is rewritten whole; two admins changing it at the same instant
//! may lose one change (both calls are in the audit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use store::location::Location;
use store::Store;

use crate::auth::{Entry, Role, Users};
use crate::error::{QueryError, Result};

/// Where the document lives in the location.
pub const PATH: &str = "_config/users.json";
/// Users added at most.
pub const USERS_MAX: usize = 1_000;
/// How often `follow` re-reads the document.
pub const REFRESH: Duration = Duration::from_secs(5);
/// Shortest password.
pub const PASSWORD_CHARS_MIN: usize = 8;

/// One added user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub name: String,
    pub role: Role,
    /// Base64 of the SCRAM salt and of the salted password (PBKDF2-SHA-256, `auth::SCRAM_ITERATIONS`).
    pub salt: String,
    pub salted_password: String,
    pub added_by: String,
    pub added_at: String,
}

/// A change to the added users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create { name: String, role: Role, password: String },
    Drop { name: String },
    SetPassword { name: String, password: String },
}

impl Change {
    /// The user it changes.
    pub fn name(&self) -> &str {
        match self {
            Change::Create { name, .. } | Change::Drop { name } | Change::SetPassword { name, .. } => name,
        }
    }

    /// The statement as the audit keeps it: the call with its password hidden.
    pub fn audited(&self) -> String {
        let name = crate::forensics::quote(self.name());
        match self {
            Change::Create { role, .. } => format!("CALL create_user({name}, '{}', '********')", role.name()),
            Change::Drop { .. } => format!("CALL drop_user({name})"),
            Change::SetPassword { .. } => format!("CALL set_password({name}, '********')"),
        }
    }

    /// Whether `caller` (with `role`) may make it: admins any; anyone their own password.
    pub fn allowed(&self, caller: &str, role: Role) -> bool {
        role == Role::Admin || matches!(self, Change::SetPassword { name, .. } if name == caller)
    }
}

/// The change a call of `procedure` with these text arguments (`None`: NULL) asks for.
///
/// # Errors
/// A wrong number of arguments, a bad name or role, or a short password, each with its reason.
pub fn parse(procedure: &str, args: &[Option<String>]) -> Result<Change> {
    let usage = match procedure {
        "create_user" => "create_user(name, role, password)",
        "drop_user" => "drop_user(name)",
        _ => "set_password(name, password)",
    };
    let bad = |why: &str| QueryError::BadRequest(format!("{procedure}: {why}"));
    let text = |i: usize| args.get(i).cloned().flatten();
    let expected = match procedure {
        "create_user" => 3,
        "drop_user" => 1,
        _ => 2,
    };
    if args.len() != expected {
        return Err(QueryError::BadRequest(format!("usage: CALL {usage}")));
    }
    let name = text(0).unwrap_or_default();
    if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("a user name is 1 to 63 printable characters without spaces"));
    }
    let password = |i: usize| {
        text(i)
            .filter(|p| p.chars().count() >= PASSWORD_CHARS_MIN && p.len() <= 1_024)
            .ok_or_else(|| bad(&format!("a password of at least {PASSWORD_CHARS_MIN} characters is required")))
    };
    Ok(match procedure {
        "create_user" => {
            let role = match text(1).unwrap_or_default().to_ascii_lowercase().as_str() {
                "admin" => Role::Admin,
                "analyst" => Role::Analyst,
                other => return Err(bad(&format!("the role is admin or analyst, got {other:?}"))),
            };
            Change::Create { name, role, password: password(2)? }
        }
        "drop_user" => Change::Drop { name },
        _ => Change::SetPassword { name, password: password(1)? },
    })
}

/// The users added at run time (none when the document does not exist).
///
/// # Errors
/// When the location cannot be read or the document is not a list of users.
pub async fn read(location: &Location) -> Result<Vec<StoredUser>> {
    let Some(bytes) = location.get_opt(PATH).await? else { return Ok(Vec::new()) };
    serde_json::from_slice(&bytes)
        .map_err(|e| QueryError::Config(format!("{PATH} in the store's location is not a list of users: {e}")))
}

async fn write(location: &Location, users: &[StoredUser]) -> Result<()> {
    if users.len() > USERS_MAX {
        return Err(QueryError::BadRequest(format!("at most {USERS_MAX} users may be added; drop some first")));
    }
    let bytes = serde_json::to_vec_pretty(users).expect("users serialise");
    Ok(location.put(PATH, bytes.into()).await?)
}

/// Makes `users` know exactly the added users of the document.
///
/// # Errors
/// See `read`; an entry that does not decode is an error too (the earlier set stays).
pub async fn refresh(users: &Users, location: &Location) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut added = BTreeMap::new();
    for user in read(location).await? {
        let (Ok(salt), Ok(salted)) = (b64.decode(&user.salt), b64.decode(&user.salted_password)) else {
            return Err(QueryError::Config(format!("{PATH}: user {:?} has a secret that is not base64", user.name)));
        };
        added.insert(user.name, Entry::stored(user.role, salt, salted));
    }
    users.set_added(added);
    Ok(())
}

/// Reads the document, then re-reads it every `REFRESH` until `stop` on a task of its own, so that users
/// added or dropped through another process count here too. A document that cannot be read leaves the
/// users as they were, with an error in the log.
pub async fn follow(
    users: Users,
    store: Arc<Store>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let refresh_logged = move |users: Users, store: Arc<Store>| async move {
        if let Err(e) = refresh(&users, store.location()).await {
            tracing::error!(error = %e, "the users added at run time could not be re-read");
        }
    };
    refresh_logged(users.clone(), store.clone()).await;
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(REFRESH) => refresh_logged(users.clone(), store.clone()).await,
            }
        }
    })
}

/// Makes `change` for `caller` and refreshes `users`; the query that answers it.
///
/// # Errors
/// When the caller may not, the name is configured, exists (create) or does not (drop, set_password),
/// a caller drops themselves, or the location fails.
pub async fn apply(users: &Users, location: &Location, change: &Change, caller: &str, role: Role) -> Result<String> {
    if !change.allowed(caller, role) {
        return Err(QueryError::Denied("only an admin may manage users (anyone may set their own password)".into()));
    }
    let name = change.name();
    if users.is_configured(name) {
        return Err(QueryError::BadRequest(format!(
            "user {name:?} comes from the configuration file: change it there"
        )));
    }
    let mut all = read(location).await?;
    let found = all.iter().position(|u| u.name == name);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let b64 = base64::engine::general_purpose::STANDARD;
    let stored = |role: Role, password: &str| -> Result<StoredUser> {
        let entry = Entry::new(role, Some(password), None)?;
        let (salt, salted) = entry.secret();
        Ok(StoredUser {
            name: name.to_string(),
            role,
            salt: b64.encode(salt),
            salted_password: b64.encode(salted),
            added_by: caller.to_string(),
            added_at: now.clone(),
        })
    };
    let (done, role_now) = match (change, found) {
        (Change::Create { .. }, Some(_)) => {
            return Err(QueryError::BadRequest(format!("user {name:?} exists; set_password or drop_user it")))
        }
        (Change::Create { role, password, .. }, None) => {
            all.push(stored(*role, password)?);
            ("created", role.name())
        }
        (_, None) => return Err(QueryError::BadRequest(format!("no user {name:?} was added at run time"))),
        (Change::Drop { .. }, Some(_)) if name == caller => {
            return Err(QueryError::BadRequest("an admin may not drop themselves; another admin may".into()))
        }
        (Change::Drop { .. }, Some(at)) => ("dropped", all.remove(at).role.name()),
        (Change::SetPassword { password, .. }, Some(at)) => {
            let role = all[at].role;
            all[at] = StoredUser { added_by: all[at].added_by.clone(), ..stored(role, password)? };
            ("password set", role.name())
        }
    };
    write(location, &all).await?;
    refresh(users, location).await?;
    let quote = crate::forensics::quote;
    Ok(format!("SELECT {} AS user_name, {} AS role, {} AS done", quote(name), quote(role_now), quote(done)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    #[test]
    fn calls_say_what_is_wrong_and_the_audit_never_sees_a_password() {
        let create = parse("create_user", &args(&["bob", "Analyst", "long enough"])).unwrap();
        assert_eq!(create, Change::Create { name: "bob".into(), role: Role::Analyst, password: "long enough".into() });
        assert_eq!(create.audited(), "CALL create_user('bob', 'analyst', '********')");
        assert!(!create.allowed("bob", Role::Analyst));
        let own = parse("set_password", &args(&["bob", "another one"])).unwrap();
        assert!(own.allowed("bob", Role::Analyst) && !own.allowed("eve", Role::Analyst));
        assert!(!own.audited().contains("another"));
        let error = |procedure: &str, values: &[&str]| parse(procedure, &args(values)).unwrap_err().to_string();
        assert!(error("create_user", &["bob", "root", "long enough"]).contains("admin or analyst"));
        assert!(error("create_user", &["bob", "analyst", "short"]).contains("at least 8"));
        assert!(error("create_user", &["b b", "analyst", "long enough"]).contains("without spaces"));
        assert!(error("drop_user", &[]).contains("usage"));
    }

    #[tokio::test]
    async fn added_users_log_in_through_every_clone_and_configured_names_stay_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::open(dir.path().to_str().unwrap()).unwrap();
        let spec = crate::auth::UserSpec {
            name: "root".into(),
            role: Some(Role::Admin),
            password: Some("root-password".into()),
            ..Default::default()
        };
        let users = Users::from_specs(&[spec]).unwrap();
        let other_process = Users::default();
        let create = parse("create_user", &args(&["bob", "analyst", "bob-password"])).unwrap();
        apply(&users, &location, &create, "root", Role::Admin).await.unwrap();
        assert_eq!(users.clone().check_password("bob", "bob-password"), Some(Role::Analyst));
        assert!(!read(&location).await.unwrap()[0].salted_password.contains("bob-password"));
        // Another process knows bob once it re-reads the document.
        assert_eq!(other_process.role("bob"), None);
        refresh(&other_process, &location).await.unwrap();
        assert_eq!(other_process.check_password("bob", "bob-password"), Some(Role::Analyst));

        let again = apply(&users, &location, &create, "root", Role::Admin).await.unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        let root = parse("set_password", &args(&["root", "new password"])).unwrap();
        let configured = apply(&users, &location, &root, "root", Role::Admin).await.unwrap_err();
        assert!(configured.to_string().contains("configuration file"), "{configured}");
        let own = parse("set_password", &args(&["bob", "bob-new-password"])).unwrap();
        apply(&users, &location, &own, "bob", Role::Analyst).await.unwrap();
        assert_eq!(users.check_password("bob", "bob-password"), None);
        assert_eq!(users.check_password("bob", "bob-new-password"), Some(Role::Analyst));
        let drop = parse("drop_user", &args(&["bob"])).unwrap();
        assert!(matches!(apply(&users, &location, &drop, "bob", Role::Analyst).await, Err(QueryError::Denied(_))));
        apply(&users, &location, &drop, "root", Role::Admin).await.unwrap();
        assert_eq!(users.role("bob"), None);
        refresh(&other_process, &location).await.unwrap();
        assert_eq!(other_process.check_password("bob", "bob-new-password"), None);
    }

    #[tokio::test]
    async fn a_document_that_does_not_decode_leaves_the_users_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::open(dir.path().to_str().unwrap()).unwrap();
        let users = Users::default();
        let create = parse("create_user", &args(&["bob", "admin", "bob-password"])).unwrap();
        apply(&users, &location, &create, "root", Role::Admin).await.unwrap();
        location.put(PATH, b"{\"truncated\": ".to_vec().into()).await.unwrap();
        assert!(refresh(&users, &location).await.is_err());
        assert_eq!(users.role("bob"), Some(Role::Admin));
    }
}
