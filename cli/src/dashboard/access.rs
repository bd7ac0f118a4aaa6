//! Who may read and who may act. A dashboard on a loopback address is open to the host; on any other address it
//! needs a token (`--token` or `RILL_DASHBOARD_TOKEN`), given as `Authorization: Bearer <token>` or through the
//! login form, which sets a session cookie. Every POST (the actions) also needs either the bearer token or the
//! CSRF token the pages carry (form field `csrf` or header `X-CSRF-Token`), so another site cannot make a
//! logged-in browser act; `--read-only` refuses them all.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::App;

/// The session cookie's name.
pub const COOKIE: &str = "rill_dashboard";

/// Largest action body read while looking for its CSRF field.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct Access {
    /// Required of every request when set.
    token: Option<String>,
    /// What the login cookie holds: random per process, so restarting the dashboard logs everyone out.
    session: String,
    /// Random per process; every page's forms and `<meta name="csrf-token">` carry it.
    pub csrf: String,
    pub read_only: bool,
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random numbers for tokens: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares secrets in time that does not depend on where they first differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Access {
    /// # Errors
    /// A listener other hosts can reach without a token, or an empty token.
    pub fn new(token: Option<String>, read_only: bool, listen: SocketAddr) -> anyhow::Result<Self> {
        if token.as_deref().is_some_and(str::is_empty) {
            anyhow::bail!("--token (RILL_DASHBOARD_TOKEN) is empty");
        }
        if token.is_none() && !listen.ip().is_loopback() {
            anyhow::bail!(
                "--listen {listen} is reachable from other hosts: set --token TOKEN (or RILL_DASHBOARD_TOKEN), \
                 or listen on 127.0.0.1"
            );
        }
        Ok(Access {
            token,
            session: random_hex(24)?,
            csrf: random_hex(24)?,
            read_only,
        })
    }

    pub fn needs_login(&self) -> bool {
        self.token.is_some()
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        matches!((&self.token, given), (Some(t), Some(g)) if same(t, g.trim()))
    }

    fn session_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same(value, &self.session))
    }

    fn csrf_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| same(g, &self.csrf))
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

#[derive(Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

/// The middleware in front of every route.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let access = &app.access;
    let path = req.uri().path().to_owned();
    let bearer = access.bearer_ok(req.headers());
    if access.needs_login() && path != "/login" && !bearer && !access.session_ok(req.headers()) {
        if path.starts_with("/api/") || path == "/metrics" {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer <token>",
            );
        }
        let back = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.to_string());
        return Redirect::to(&format!("/login?next={}", super::pages::enc(&back))).into_response();
    }
    if req.method() != Method::POST || path == "/login" {
        return next.run(req).await;
    }
    if access.read_only {
        return refuse(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only (--read-only)",
        );
    }
    if bearer {
        return next.run(req).await;
    }
    let header_token = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if access.csrf_ok(header_token.as_deref()) {
        return next.run(req).await;
    }
    // A form post: its `csrf` field, then the body goes on to the handler.
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let field = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
        .ok()
        .and_then(|f| f.csrf);
    if !access.csrf_ok(field.as_deref()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token (form field csrf or header X-CSRF-Token; or use the bearer token)",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
    next: Option<String>,
}

/// A path on this dashboard to go back to, or `/`: never another site.
pub fn local(path: Option<&str>) -> String {
    match path {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

/// POST /login: the token for a session cookie.
pub async fn login(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<Login>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "expected form fields token, next");
    };
    let access = &app.access;
    let ok = matches!(&access.token, Some(t) if same(t, form.token.trim()));
    if !ok {
        return Redirect::to(&format!(
            "/login?failed=1&next={}",
            super::pages::enc(&local(form.next.as_deref()))
        ))
        .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        access.session
    );
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&local(form.next.as_deref())),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_hosts_need_a_token() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(Access::new(None, false, any).is_err());
        assert!(Access::new(Some(String::new()), false, lo).is_err());
        assert!(Access::new(Some("t".into()), false, any).is_ok());
        assert!(!Access::new(None, false, lo).unwrap().needs_login());
    }

    #[test]
    fn secrets_are_compared_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        let a = Access::new(None, false, "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(a.csrf.len(), 48);
        assert!(a.csrf_ok(Some(&a.csrf.clone())));
        assert!(!a.csrf_ok(None));
        assert_ne!(a.csrf, a.session);
    }

    #[test]
    fn sessions_come_from_the_cookie_and_tokens_from_the_bearer_header() {
        let a = Access::new(Some("s3cret".into()), false, "0.0.0.0:1".parse().unwrap()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(a.bearer_ok(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={}", a.session).parse().unwrap(),
        );
        assert!(a.session_ok(&h) && !a.bearer_ok(&h));
        h.insert(header::COOKIE, format!("{COOKIE}=s3cret").parse().unwrap());
        assert!(!a.session_ok(&h));
    }

    #[test]
    fn going_back_stays_on_this_site() {
        assert_eq!(local(Some("/queues/a?state=dead")), "/queues/a?state=dead");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", ""] {
            assert_eq!(local(Some(bad)), "/");
        }
        assert_eq!(local(None), "/");
    }
}
