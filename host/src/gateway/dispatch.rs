//! Serving one request: resolve the route, read the body within the limit, run the context
//! in a fresh instance with a new unit of work, commit when it answered below 400 (running
//! it again on fresh state after a conflict), and log one line.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;

use super::problem::Problem;
use super::routes::Resolved;
use crate::runtime::InvokeError;
use crate::server::App;
use crate::state::{CommitOutcome, UnitOfWork};

/// Times a request runs again after its commit found that what it read had changed.
const MAX_ATTEMPTS: u32 = 32;

/// Header carrying the request's trace id back to the client.
pub const TRACE_HEADER: &str = "x-trace-id";

/// The trace id of a W3C `traceparent` header, or a new one.
fn trace_id(req: &Request<Body>) -> Arc<str> {
    let from_header = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()));
    match from_header {
        Some(t) => Arc::from(t.to_ascii_lowercase()),
        None => new_trace_id(),
    }
}

/// A new 128-bit trace id without a system call: a random half drawn once per process and a
/// per-process counter scrambled by splitmix64 (a bijection, so ids never repeat within
/// the process, and the random half keeps processes apart).
fn new_trace_id() -> Arc<str> {
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let mut z = NEXT
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Arc::from(format!("{process:016x}{z:016x}"))
}

/// The axum fallback: every request that is not the host's own.
pub async fn dispatch(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let trace = trace_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (context, attempts, mut response) = serve(&app, req, trace.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&trace) {
        response.headers_mut().insert(TRACE_HEADER, v);
    }
    tracing::info!(
        method = %method,
        path = %path,
        context = context.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        attempts,
        trace_id = %trace,
        "request"
    );
    response
}

async fn serve(
    app: &App,
    req: Request<Body>,
    trace: Arc<str>,
) -> (Option<Arc<str>>, u32, Response) {
    let name = match app
        .routes()
        .resolve(req.method().as_str(), req.uri().path())
    {
        Resolved::Context(name) => name,
        Resolved::MethodNotAllowed(allowed) => {
            let mut res = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not served for {}", req.method(), req.uri().path()),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                res.headers_mut().insert(header::ALLOW, v);
            }
            return (None, 0, res);
        }
        Resolved::NotFound => {
            let detail = format!("no context serves {} {}", req.method(), req.uri().path());
            return (
                None,
                0,
                Problem::new(StatusCode::NOT_FOUND, detail).into_response(),
            );
        }
    };
    let Some(ctx) = app.runtime.registry().get(&name) else {
        let p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("context {name} is not loaded"),
        )
        .retry_after(1);
        return (Some(name), 0, p.into_response());
    };
    let (parts, body) = req.into_parts();
    let too_large = || Problem::too_large("the request body", app.body_limit);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > app.body_limit) {
        return (Some(name), 0, too_large());
    }
    let body = match axum::body::to_bytes(body, app.body_limit).await {
        Ok(b) => b,
        Err(_) => return (Some(name), 0, too_large()),
    };
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());

    for attempt in 1..=MAX_ATTEMPTS {
        let request = match build_request(&parts, &authority, &path_and_query, body.clone()) {
            Ok(r) => r,
            Err(detail) => {
                return (
                    Some(name),
                    attempt,
                    Problem::new(StatusCode::BAD_REQUEST, detail).into_response(),
                );
            }
        };
        let unit = match UnitOfWork::begin(app.runtime.db()) {
            Ok(u) => Arc::new(std::sync::Mutex::new(u)),
            Err(e) => return (Some(name), attempt, internal(&e.to_string())),
        };
        let reply = match app
            .runtime
            .invoke_http(ctx.clone(), unit.clone(), trace.clone(), request)
            .await
        {
            Ok(r) => r,
            Err(e) => return (Some(name), attempt, failure(&e)),
        };
        if reply.status.as_u16() >= 400 {
            return (Some(name), attempt, into_response(reply, &ctx));
        }
        let unit = match Arc::try_unwrap(unit) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => return (Some(name), attempt, internal("unit of work still in use")),
        };
        match app.runtime.committer().commit(unit).await {
            Ok(CommitOutcome::Committed { .. }) => {
                return (Some(name), attempt, into_response(reply, &ctx));
            }
            Ok(CommitOutcome::Conflict) => continue,
            Err(e) => {
                let p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the change could not be stored: {e}"),
                )
                .retry_after(1);
                return (Some(name), attempt, p.into_response());
            }
        }
    }
    let p = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{name}: too many concurrent changes to the same data; try again shortly"),
    )
    .retry_after(1);
    (Some(name), MAX_ATTEMPTS, p.into_response())
}

fn build_request(
    parts: &http::request::Parts,
    authority: &str,
    path_and_query: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{authority}{path_and_query}"))
        .version(parts.version);
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers.clone();
    }
    builder
        .body(Full::new(body))
        .map_err(|e| format!("malformed request: {e}"))
}

/// Header naming the context version that answered: `<name>@<digest prefix>`.
pub const VERSION_HEADER: &str = "x-context-version";

fn into_response(
    reply: crate::runtime::HttpReply,
    ctx: &crate::runtime::LoadedContext,
) -> Response {
    let mut res = Response::new(Body::from(reply.body));
    *res.status_mut() = reply.status;
    *res.headers_mut() = reply.headers;
    if let Ok(v) = HeaderValue::from_str(&ctx.short_id()) {
        res.headers_mut().insert(VERSION_HEADER, v);
    }
    res
}

fn internal(detail: &str) -> Response {
    tracing::error!(error = detail, "internal error");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error of the host",
    )
    .into_response()
}

fn failure(e: &InvokeError) -> Response {
    tracing::warn!(error = %e, "invocation failed");
    match e {
        InvokeError::Deadline { context, .. } => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())
                .title(format!("Context {context} timed out"))
        }
        InvokeError::Trap { context, .. } => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                .title(format!("Context {context} failed"))
        }
        InvokeError::Host { context, .. } => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                .title(format!("Context {context} failed"))
        }
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_trace_ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<_> =
            (0..10_000).map(|_| super::new_trace_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
