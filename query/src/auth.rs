//! Users, roles and credentials.
//!
//! Passwords are kept only as SCRAM-SHA-256 salted passwords (PBKDF2, 4096 iterations), which serve
//! both PostgreSQL's SCRAM exchange and HTTP basic authentication; bearer tokens only as SHA-256
//! digests. With no users configured, `Users::load_or_create_default` creates an `admin` user with a
//! random password and token in `<data>/credentials.json` (owner-only permissions).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{QueryError, Result};
pub use store::secret::constant_time_eq;

/// SCRAM iteration count (PostgreSQL's default).
pub const SCRAM_ITERATIONS: usize = 4096;

/// The name of the credentials file created when no users are configured.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything DataFusion allows: DDL, settings, views.
    Admin,
    /// Reading only: SELECT, EXPLAIN, SHOW and session-local settings.
    Analyst,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
        }
    }
}

/// A user as configured. The password and token come from the configuration or from environment
/// variables named by `password_env` / `token_env`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub role: Option<Role>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub token: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Entry {
    role: Role,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
    token_sha256: Option<[u8; 32]>,
}

/// The known users: those of the configuration, fixed at start, and those admins add while coldtrail
/// runs (`crate::accounts`). Clones share one set, so a user added through one server can log in through
/// every other at once.
#[derive(Clone, Default)]
pub struct Users {
    known: Arc<RwLock<Known>>,
}

#[derive(Default)]
struct Known {
    configured: BTreeMap<String, Entry>,
    added: BTreeMap<String, Entry>,
}

impl Known {
    /// A configured user wins over an added one of the same name.
    fn get(&self, name: &str) -> Option<&Entry> {
        self.configured.get(name).or_else(|| self.added.get(name))
    }
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("names", &self.names()).finish()
    }
}

impl Entry {
    /// A user's entry: a random salt and the salted password; without a password, a random key SCRAM can
    /// never match.
    pub(crate) fn new(role: Role, password: Option<&str>, token: Option<&str>) -> Result<Entry> {
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| QueryError::Config(format!("no randomness for a salt: {e}")))?;
        let salted_password = match password {
            Some(p) => pgwire::api::auth::sasl::scram::gen_salted_password(p, &salt, SCRAM_ITERATIONS),
            None => sha256(random_secret(32)?.as_bytes()).to_vec(),
        };
        Ok(Entry { role, salt, salted_password, token_sha256: token.map(|t| sha256(t.as_bytes())) })
    }

    /// An entry as stored (`crate::accounts`): its salt and salted password, no token.
    pub(crate) fn stored(role: Role, salt: Vec<u8>, salted_password: Vec<u8>) -> Entry {
        Entry { role, salt, salted_password, token_sha256: None }
    }

    pub(crate) fn secret(&self) -> (&[u8], &[u8]) {
        (&self.salt, &self.salted_password)
    }
}

/// The credentials written for the default admin.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub token: String,
}

/// A fixed salt and a salted password no password derives to (all zero bytes), for names that are not
/// users (`Users::check_password`, `unknown_user_secret`).
const UNKNOWN_USER_SALT: [u8; 16] = *b"coldtrail-nouser";
const UNKNOWN_USER_SALTED: [u8; 32] = [0; 32];

pub(crate) fn random_secret(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| QueryError::Config(format!("no randomness for a secret: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

impl Users {
    /// Builds the users from the configuration; every problem is reported at once.
    pub fn from_specs(specs: &[UserSpec]) -> Result<Users> {
        let mut users = Users::default();
        let mut problems = Vec::new();
        for spec in specs {
            if spec.name.is_empty() || spec.name.len() > 63 || spec.name.chars().any(|c| c.is_control()) {
                problems.push(format!("user name {:?} must be 1 to 63 printable characters", spec.name));
                continue;
            }
            if users.is_configured(&spec.name) {
                problems.push(format!("user {:?} is configured twice", spec.name));
                continue;
            }
            let from_env = |var: &Option<String>, what: &str, problems: &mut Vec<String>| -> Option<String> {
                let var = var.as_ref()?;
                match std::env::var(var) {
                    Ok(value) if !value.is_empty() => Some(value),
                    _ => {
                        problems.push(format!("user {:?}: {what} variable {var} is not set", spec.name));
                        None
                    }
                }
            };
            let password = spec.password.clone().or_else(|| from_env(&spec.password_env, "password", &mut problems));
            let token = spec.token.clone().or_else(|| from_env(&spec.token_env, "token", &mut problems));
            let Some(role) = spec.role else {
                problems.push(format!("user {:?} has no role (admin or analyst)", spec.name));
                continue;
            };
            match &password {
                Some(p) if p.len() < 8 => {
                    problems.push(format!("user {:?}: the password must have at least 8 characters", spec.name))
                }
                None if token.is_none() => {
                    problems.push(format!("user {:?} has neither a password nor a token", spec.name))
                }
                _ => {}
            }
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                problems.push(format!("user {:?}: the token must have at least 16 characters", spec.name));
            }
            users.insert(&spec.name, role, password.as_deref(), token.as_deref())?;
        }
        if problems.is_empty() {
            Ok(users)
        } else {
            Err(QueryError::Config(problems.join("; ")))
        }
    }

    fn insert(&mut self, name: &str, role: Role, password: Option<&str>, token: Option<&str>) -> Result<()> {
        let entry = Entry::new(role, password, token)?;
        self.known.write().unwrap_or_else(|e| e.into_inner()).configured.insert(name.to_string(), entry);
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the users added at run time (`crate::accounts`).
    pub(crate) fn set_added(&self, added: BTreeMap<String, Entry>) {
        self.known.write().unwrap_or_else(|e| e.into_inner()).added = added;
    }

    /// Whether `name` is a user of the configuration (which run-time calls may not change).
    pub fn is_configured(&self, name: &str) -> bool {
        self.read().configured.contains_key(name)
    }

    /// Whether any user is known.
    pub fn is_empty(&self) -> bool {
        let known = self.read();
        known.configured.is_empty() && known.added.is_empty()
    }

    /// The names, configured users first.
    pub fn names(&self) -> Vec<String> {
        let known = self.read();
        let added = known.added.keys().filter(|name| !known.configured.contains_key(*name));
        known.configured.keys().chain(added).cloned().collect()
    }

    pub fn role(&self, name: &str) -> Option<Role> {
        self.read().get(name).map(|e| e.role)
    }

    /// The salt and salted password for PostgreSQL's SCRAM exchange.
    pub fn scram_secret(&self, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        self.read().get(name).map(|e| (e.salt.clone(), e.salted_password.clone()))
    }

    /// Checks a password (HTTP basic authentication, the CLI). An unknown name costs the same key
    /// derivation as a known one, so the answer's timing does not tell which names exist.
    pub fn check_password(&self, name: &str, password: &str) -> Option<Role> {
        let (salt, expected, role) = match self.read().get(name) {
            Some(entry) => (entry.salt.clone(), entry.salted_password.clone(), Some(entry.role)),
            None => (UNKNOWN_USER_SALT.to_vec(), UNKNOWN_USER_SALTED.to_vec(), None),
        };
        let salted = pgwire::api::auth::sasl::scram::gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        role.filter(|_| constant_time_eq(&salted, &expected))
    }

    /// The salt and salted password SCRAM runs for a name that is not a user: a login for it goes
    /// through the whole exchange and fails at the proof, like a wrong password.
    pub fn unknown_user_secret() -> (Vec<u8>, Vec<u8>) {
        (UNKNOWN_USER_SALT.to_vec(), UNKNOWN_USER_SALTED.to_vec())
    }

    /// Finds the user of a bearer token.
    pub fn check_token(&self, token: &str) -> Option<(String, Role)> {
        let digest = sha256(token.as_bytes());
        let mut found = None;
        let known = self.read();
        for (name, entry) in known.added.iter().chain(&known.configured) {
            if entry.token_sha256.is_some_and(|t| constant_time_eq(&t, &digest)) {
                found = Some((name.clone(), entry.role));
            }
        }
        found
    }

    /// The users of the default set-up: the admin in `<data_dir>/credentials.json`, created with random
    /// secrets on first use. Returns the users, the file, and whether it was created now.
    pub fn load_or_create_default(data_dir: &Path) -> Result<(Users, PathBuf, bool)> {
        let path = data_dir.join(CREDENTIALS_FILE);
        let (credentials, created) = match std::fs::read(&path) {
            Ok(bytes) => {
                let credentials: Credentials = serde_json::from_slice(&bytes)
                    .map_err(|e| QueryError::Config(format!("{}: {e}", path.display())))?;
                (credentials, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let credentials =
                    Credentials { user: "admin".into(), password: random_secret(18)?, token: random_secret(32)? };
                write_private(&path, &serde_json::to_vec_pretty(&credentials).expect("credentials serialize"))?;
                (credentials, true)
            }
            Err(e) => return Err(QueryError::io(path.display().to_string(), e)),
        };
        let mut users = Users::default();
        users.insert(&credentials.user, Role::Admin, Some(&credentials.password), Some(&credentials.token))?;
        Ok((users, path, created))
    }
}

/// Reads the default credentials file, if there is one (the CLI uses it to reach a local server).
pub fn read_default_credentials(data_dir: &Path) -> Option<Credentials> {
    let bytes = std::fs::read(data_dir.join(CREDENTIALS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| QueryError::io(tmp.display().to_string(), e))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|e| QueryError::io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| QueryError::io(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, role: Role, password: &str) -> UserSpec {
        UserSpec { name: name.into(), role: Some(role), password: Some(password.into()), ..Default::default() }
    }

    #[test]
    fn passwords_and_tokens_authenticate_their_user_only() {
        let mut alice = spec("alice", Role::Analyst, "correct horse");
        alice.token = Some("alice-token-0123456789".into());
        let users = Users::from_specs(&[alice, spec("root", Role::Admin, "battery staple")]).unwrap();
        assert_eq!(users.check_password("alice", "correct horse"), Some(Role::Analyst));
        assert_eq!(users.check_password("alice", "battery staple"), None);
        assert_eq!(users.check_password("mallory", "correct horse"), None);
        assert_eq!(users.check_token("alice-token-0123456789"), Some(("alice".into(), Role::Analyst)));
        assert_eq!(users.check_token("alice-token-012345678"), None);
    }

    #[test]
    fn every_configuration_problem_is_reported_at_once() {
        let specs = vec![
            spec("a", Role::Admin, "short"),
            UserSpec { name: "b".into(), password: Some("long enough".into()), ..Default::default() },
            UserSpec { name: "c".into(), role: Some(Role::Analyst), ..Default::default() },
            spec("d", Role::Admin, "long enough"),
            spec("d", Role::Admin, "long enough"),
        ];
        let message = Users::from_specs(&specs).unwrap_err().to_string();
        for part in ["\"a\": the password", "\"b\" has no role", "\"c\" has neither", "\"d\" is configured twice"] {
            assert!(message.contains(part), "{message}");
        }
    }

    #[test]
    fn the_default_admin_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let (users, path, created) = Users::load_or_create_default(dir.path()).unwrap();
        assert!(created);
        let credentials = read_default_credentials(dir.path()).unwrap();
        assert_eq!(users.check_password("admin", &credentials.password), Some(Role::Admin));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, _, created) = Users::load_or_create_default(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.check_token(&credentials.token), Some(("admin".into(), Role::Admin)));
    }
}
