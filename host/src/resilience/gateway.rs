//! Rate limiting in front of the contexts' routes: a request over a limit is answered
//! `429 Too Many Requests` (problem+json, `Retry-After`) without reaching its context. The
//! host's own endpoints (`/healthz`, `/readyz`, `/admin/...`) are never limited.
//!
//! The client is the `x-client-id` header when present (a principal, an API key's id),
//! otherwise the peer's IP address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};

use crate::gateway::problem::Problem;
use crate::server::App;

/// Header naming the client for rate limiting.
pub const CLIENT_HEADER: &str = "x-client-id";

/// Who sent `req`, for per-client limits.
pub fn client_of(req: &Request<Body>) -> String {
    let named = req
        .headers()
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128);
    if let Some(id) = named {
        return format!("id:{id}");
    }
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "unknown".into(),
    }
}

/// The gateway's fallback: check the limits, then dispatch to the context.
pub async fn limited_dispatch(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    let limiter = app.runtime.resilience().limiter();
    if limiter.enabled() {
        let client = client_of(&req);
        if let Err(l) = limiter.check(
            req.method().as_str(),
            req.uri().path(),
            &client,
            Instant::now(),
        ) {
            let secs = l.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            tracing::info!(method = %req.method(), path = %req.uri().path(), client = %client, scope = l.scope, limit = %l.limit, "rate limited");
            let detail = match l.scope {
                "route" => format!(
                    "{} is over its request rate ({}); try again in {secs} s",
                    req.uri().path(),
                    l.limit
                ),
                _ => format!("too many requests from this client; try again in {secs} s"),
            };
            return Problem::new(StatusCode::TOO_MANY_REQUESTS, detail)
                .title("Too many requests")
                .retry_after(secs)
                .into_response();
        }
    }
    crate::gateway::dispatch(State(app), req).await
}
