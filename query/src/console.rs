//! The web console that `serve` (and so `demo`) serves at `/`: plain HTML, CSS and ES modules embedded
//! in the binary (no Node.js toolchain), reading everything through the SQL API as the logged-in user, so
//! that every statement it runs is role-checked and audited like any other.
//!
//! - Login with a user's password (`POST /console/login`), rate limited per address like HTTP basic
//!   authentication. A session is a random 256-bit token in an `HttpOnly`, `SameSite=Strict` cookie
//!   (`Secure` when the API is served over TLS), kept in memory for `SESSION_LIFETIME`; a restart logs
//!   everyone out.
//! - Requests authenticated by the cookie that change anything (every `POST`) must carry the session's
//!   CSRF token in `X-CSRF-Token` (the pages read it from `GET /api/v1/session`).
//! - Pages: incidents (`/`), an incident, an entity, the SQL workbench, the fleet; the admin page only for
//!   admins (checked here, not only hidden). A page requested without a session redirects to the login.
//! - Every response carries a strict Content-Security-Policy (scripts and styles from this origin only,
//!   no inline script, no framing), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
//!   `Referrer-Policy: no-referrer`. The pages render every value as text (`textContent`), never as HTML:
//!   log lines and payloads carry attacks by nature.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::Role;

/// How long a session lasts after its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3_600);
/// Sessions held at most; the oldest are ended beyond (each login makes one).
const SESSIONS_MAX: usize = 10_000;
/// The session cookie's name.
pub const COOKIE: &str = "coldtrail_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The policy every response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    started: Instant,
}

/// The live sessions, by token.
#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session; its token.
    pub fn start(&self, user: &str, role: Role) -> Option<String> {
        let token = crate::auth::random_secret(32).ok()?;
        let csrf = crate::auth::random_secret(32).ok()?;
        let mut sessions = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= SESSIONS_MAX {
            let oldest = sessions.iter().min_by_key(|(_, s)| s.started).map(|(t, _)| t.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token.clone(), Session { user: user.to_string(), role, csrf, started: Instant::now() });
        Some(token)
    }

    /// The session of a request's cookie, if it is live.
    pub fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, COOKIE)?;
        let sessions = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&token).filter(|s| s.started.elapsed() < SESSION_LIFETIME).cloned()
    }

    pub fn end(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, COOKIE) {
            self.by_token.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

/// Whether a cookie-authenticated request carries its session's CSRF token.
pub fn csrf_ok(session: &Session, headers: &HeaderMap) -> bool {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    constant_time_eq(sent.as_bytes(), session.csrf.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value of a new session, or of its end (`token` empty).
pub fn session_cookie(token: &str, secure: bool) -> String {
    let max_age = if token.is_empty() { 0 } else { SESSION_LIFETIME.as_secs() };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// What a page or asset is: a file as embedded, or the page shell that loads one module.
enum Body {
    File(&'static str),
    Shell(&'static str),
}

/// One embedded page or asset.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: Body,
    /// Only admins may load it.
    admin: bool,
}

/// Every page but the login is this shell with its module: the module builds the page.
const SHELL: &str = include_str!("../console/shell.html");

macro_rules! file {
    ($path:literal, $kind:expr, $admin:literal) => {
        Asset {
            path: $path,
            content_type: $kind,
            body: Body::File(include_str!(concat!("../console/", $path))),
            admin: $admin,
        }
    };
}

macro_rules! shell {
    ($path:literal, $module:literal, $admin:literal) => {
        Asset { path: $path, content_type: HTML, body: Body::Shell($module), admin: $admin }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    file!("login.html", HTML, false),
    shell!("index.html", "incidents.js", false),
    shell!("incident.html", "incident.js", false),
    shell!("entity.html", "entity.js", false),
    shell!("sql.html", "sql.js", false),
    shell!("fleet.html", "fleet.js", false),
    shell!("admin.html", "admin.js", true),
    file!("console.css", CSS, false),
    file!("common.js", JS, false),
    file!("charts.js", JS, false),
    file!("login.js", JS, false),
    file!("incidents.js", JS, false),
    file!("incident.js", JS, false),
    file!("entity.js", JS, false),
    file!("sql.js", JS, false),
    file!("fleet.js", JS, false),
    file!("admin.js", JS, true),
];

/// Adds the security headers to a response.
pub fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(to).expect("a path"));
    response
}

/// Answers `GET /console/<name>` for `session` (None: not logged in).
pub fn page(name: &str, session: Option<&Session>) -> Response {
    let name = if name.is_empty() { "index.html" } else { name };
    let Some(asset) = ASSETS.iter().find(|a| a.path == name) else {
        return (StatusCode::NOT_FOUND, "no such page").into_response();
    };
    let public = matches!(name, "login.html" | "login.js" | "console.css" | "common.js");
    match session {
        None if !public && asset.content_type == HTML => return redirect("/console/login.html"),
        None if !public => return (StatusCode::UNAUTHORIZED, "log in first").into_response(),
        Some(s) if asset.admin && s.role != Role::Admin => {
            return (StatusCode::FORBIDDEN, "admins only").into_response();
        }
        _ => {}
    }
    let body = match asset.body {
        Body::File(text) => axum::body::Body::from(text),
        Body::Shell(module) => axum::body::Body::from(SHELL.replace("{module}", module)),
    };
    let mut response = ([(header::CONTENT_TYPE, asset.content_type)], body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to a login: a session cookie and the console, or back to the login page.
pub fn logged_in(token: Option<String>, secure: bool) -> Response {
    match token {
        Some(token) => {
            let mut response = redirect("/console/");
            if let Ok(value) = HeaderValue::from_str(&session_cookie(&token, secure)) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => redirect("/console/login.html?failed=1"),
    }
}

/// The answer to a logout: the cookie cleared.
pub fn logged_out(secure: bool) -> Response {
    let mut response = redirect("/console/login.html");
    if let Ok(value) = HeaderValue::from_str(&session_cookie("", secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_from_the_cookie_and_csrf_tokens_must_match() {
        let sessions = Sessions::default();
        let token = sessions.start("alice", Role::Analyst).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {COOKIE}={token}")).unwrap());
        let session = sessions.of(&headers).unwrap();
        assert_eq!((session.user.as_str(), session.role), ("alice", Role::Analyst));
        assert!(!csrf_ok(&session, &headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&session.csrf).unwrap());
        assert!(csrf_ok(&session, &headers));
        sessions.end(&headers);
        assert!(sessions.of(&headers).is_none());
        let cookie = session_cookie(&token, true);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.ends_with("Secure"));
    }

    #[test]
    fn pages_need_a_session_and_the_admin_page_an_admin() {
        assert_eq!(page("index.html", None).status(), StatusCode::SEE_OTHER);
        assert_eq!(page("incidents.js", None).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(page("login.html", None).status(), StatusCode::OK);
        let analyst = Session { user: "a".into(), role: Role::Analyst, csrf: String::new(), started: Instant::now() };
        assert_eq!(page("", Some(&analyst)).status(), StatusCode::OK);
        assert_eq!(page("admin.html", Some(&analyst)).status(), StatusCode::FORBIDDEN);
        assert_eq!(page("admin.js", Some(&analyst)).status(), StatusCode::FORBIDDEN);
        let admin = Session { role: Role::Admin, ..analyst };
        assert_eq!(page("admin.html", Some(&admin)).status(), StatusCode::OK);
        assert_eq!(page("../Cargo.toml", Some(&admin)).status(), StatusCode::NOT_FOUND);
    }
}
