//! Rate limiting as a layer in front of the contexts' routes: a request over a limit is
//! answered `429 Too Many Requests` (problem+json, `Retry-After`) without reaching its
//! context. The limits and their buckets are [`crate::resilience::RateLimiter`]; the host's
//! own endpoints (`/healthz`, `/readyz`, `/admin/...`) are outside this layer.
//!
//! The client is the subject of the request's verified bearer token when it has one (so a
//! user keeps one budget from every address), else the peer's IP address, unless `[rate_limit] client_header` names a header
//! to trust (set by a proxy in front of the host): a header any client can set would let it
//! bypass its limit with random values and evict other clients' buckets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};

use super::auth::Caller;
use super::problem::Problem;
use crate::resilience::RateLimiter;

/// Who sent `req`, for per-client limits: the subject of its verified token, else the
/// trusted header's value when one is configured and present, else the peer's IP address.
fn client_of(req: &Request<Body>, trusted: Option<&http::HeaderName>) -> String {
    if let Some(p) = req.extensions().get::<Caller>().and_then(Caller::principal) {
        return format!("sub:{}", p.subject);
    }
    let named = trusted
        .and_then(|h| req.headers().get(h))
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

/// Middleware: refuse a request over its route's or its client's rate, else pass it on.
pub(crate) async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    if !limiter.enabled() {
        return next.run(req).await;
    }
    let client = client_of(&req, limiter.client_header());
    let Err(l) = limiter.check(
        req.method().as_str(),
        req.uri().path(),
        &client,
        Instant::now(),
    ) else {
        return next.run(req).await;
    };
    crate::telemetry::metrics().rate_limited(l.scope);
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
    Problem::new(StatusCode::TOO_MANY_REQUESTS, detail)
        .title("Too many requests")
        .retry_after(secs)
        .into_response()
}
