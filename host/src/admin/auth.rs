//! The admin API is never open: every `/admin` route needs `Authorization: Bearer <token>`
//! with the admin token or, when authentication is on and `[auth] admin_role` is set, a
//! JWT granting that role; `/readyz` shows its details only with one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};

use super::Admin;
use crate::gateway::problem::Problem;

/// Compare without an early exit, so the time taken does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry the admin token, or a valid JWT granting the configured admin
/// role (`[auth] admin_role`) when authentication is on.
pub(super) fn authorized(app: &Admin, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    if same(token.as_bytes(), app.token.as_bytes()) {
        return true;
    }
    let Some((auth, role)) = app
        .auth
        .as_ref()
        .and_then(|a| a.admin_role().map(|r| (a, r)))
    else {
        return false;
    };
    match auth.verify(token) {
        Ok(p) if p.has_role(role) => true,
        Ok(p) => {
            tracing::info!(subject = %p.subject, role, "admin API refused: the token lacks the admin role");
            false
        }
        Err(e) => {
            tracing::info!(error = %e, "admin API refused a bearer token");
            false
        }
    }
}

/// Middleware: 401 problem unless the request carries the admin token.
pub(super) async fn require_token(
    State(app): State<Arc<Admin>>,
    req: Request,
    next: Next,
) -> Response {
    match authorized(&app, req.headers()) {
        true => next.run(req).await,
        false => unauthorized(),
    }
}

/// The 401 answer to a request without the admin token.
pub(super) fn unauthorized() -> Response {
    let mut res = Problem::new(
        StatusCode::UNAUTHORIZED,
        "the admin API needs `Authorization: Bearer <token>` (CTXHOST_ADMIN_TOKEN, or the file admin-token in the data directory, or a JWT granting [auth] admin_role)",
    )
    .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_exactly() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
        assert!(!super::same(b"", b"a"));
    }
}
