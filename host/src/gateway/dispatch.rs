//! Serving one request: resolve the route, read the body within the limit, run the context
//! with a new unit of work, commit when it answered below 400 (running it again on fresh
//! state after a conflict), and log one line. Every way the gateway answers by itself is a
//! [`GatewayError`], answered as a problem.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Full;

use super::Gateway;
use super::auth::{Caller, Denied, admit};
use super::body::{BodyError, BodyLimits, read_body};
use super::problem::Problem;
use super::routes::Resolved;
use crate::identity::Access;
use crate::runtime::{InvokeError, Scope};
use crate::state::{CommitOutcome, StateError, UnitOfWork, contention_backoff, share, unshare};
use crate::telemetry::metrics;
use crate::telemetry::trace::{self, TraceParent};
use tracing::Instrument as _;

/// Times a request runs in all when its commit keeps finding that what it read had
/// changed (each re-run after a growing, jittered wait: `contention_backoff`).
const MAX_ATTEMPTS: u32 = 32;

/// Header carrying the request's trace id back to the client.
pub(super) const TRACE_HEADER: &str = "x-trace-id";
/// W3C trace context header, read from the request and written into the answer.
const TRACEPARENT: &str = "traceparent";

/// The caller's W3C `traceparent`, when it sent a valid one.
fn incoming_traceparent(req: &Request<Body>) -> Option<TraceParent> {
    req.headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
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

/// Why the gateway answered a request itself instead of with a context's answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("{method} is not served for {path}")]
    MethodNotAllowed {
        method: http::Method,
        path: String,
        allowed: Vec<String>,
    },
    #[error("no context serves {method} {path}")]
    NotFound { method: http::Method, path: String },
    #[error("context {0} is not loaded")]
    NotLoaded(Arc<str>),
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(#[source] axum::Error),
    #[error("the Host header is not a valid authority (host[:port])")]
    BadHost,
    #[error("malformed request: {0}")]
    Malformed(#[source] http::Error),
    #[error(transparent)]
    Denied(Denied),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("cannot begin a unit of work: {0}")]
    Begin(#[source] StateError),
    #[error("the unit of work of {0} is still in use after its invocation")]
    UnitInUse(Arc<str>),
    #[error("the change could not be stored: {0}")]
    Commit(#[source] StateError),
    #[error("{0}: too many concurrent changes to the same data; try again shortly")]
    Contention(Arc<str>),
}

impl GatewayError {
    /// The answer to the client. It carries what the client can act on; causes inside the
    /// host (storage, wasmtime) go to the log with the request's trace id, which the
    /// answer's `x-trace-id` header repeats.
    fn respond(self, trace: &str) -> Response {
        let detail = self.to_string();
        match self {
            GatewayError::MethodNotAllowed { allowed, .. } => {
                let mut res = Problem::new(StatusCode::METHOD_NOT_ALLOWED, detail).into_response();
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    res.headers_mut().insert(header::ALLOW, v);
                }
                res
            }
            GatewayError::NotFound { .. } => {
                Problem::new(StatusCode::NOT_FOUND, detail).into_response()
            }
            GatewayError::NotLoaded(_) | GatewayError::Contention(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
                    .retry_after(1)
                    .into_response()
            }
            GatewayError::Commit(e) | GatewayError::Begin(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, trace_id = %trace, "storage unavailable");
                storage_unavailable(e.fault().map(|f| f.reason()))
            }
            GatewayError::Commit(e) => {
                tracing::error!(error = %e, trace_id = %trace, "cannot store a request's changes");
                storage_unavailable(None)
            }
            GatewayError::TooLarge(limit) => {
                metrics().body_refused("too_large");
                Problem::too_large("the request body", limit)
            }
            GatewayError::BodyTimeout(_) => {
                metrics().body_refused("timeout");
                Problem::body_timeout(detail)
            }
            GatewayError::Malformed(_)
            | GatewayError::BadHost
            | GatewayError::BodyUnreadable(_) => {
                Problem::new(StatusCode::BAD_REQUEST, detail).into_response()
            }
            GatewayError::Denied(d) => d.respond(),
            GatewayError::Invoke(e) => failure(&e, trace),
            GatewayError::Begin(_) | GatewayError::UnitInUse(_) => {
                tracing::error!(error = %detail, trace_id = %trace, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error of the host (trace {trace})"),
                )
                .into_response()
            }
        }
    }
}

/// Seconds a client is told to wait when storage fails.
const STORAGE_RETRY_AFTER: u64 = 5;

/// 503 for changes that could not be stored, with the fault's safe reason when known.
fn storage_unavailable(reason: Option<&str>) -> Response {
    let why = reason.unwrap_or("the host cannot store changes right now");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{why}; nothing was stored, try again shortly"),
    )
    .title("Storage unavailable")
    .retry_after(STORAGE_RETRY_AFTER)
    .into_response()
}

/// What the log line of a request tells besides its status.
#[derive(Default)]
struct Served {
    /// The context the route belongs to, once resolved.
    context: Option<Arc<str>>,
    /// The route pattern that matched, once resolved.
    route: Option<Arc<str>>,
    /// Runs of the invocation (more than one after commit conflicts).
    attempts: u32,
}

/// The gateway's fallback: every request that is not the host's own.
pub(crate) async fn dispatch(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let incoming = incoming_traceparent(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resolved = gw.routes.get().resolve(method.as_str(), &path);
    let route = match &resolved {
        Resolved::Context(name, route) => Some((&**route, &**name)),
        _ => None,
    };
    let (span, context) = trace::server_span(&method, &path, route, incoming.as_ref());
    // The server span's context when spans are made; else the caller's trace, or a new
    // one, under a span id of this host.
    let here = context.unwrap_or_else(|| match incoming {
        Some(p) => TraceParent::unrecorded(&p.trace_hex()),
        None => TraceParent::unrecorded(&new_trace_id()),
    });
    let trace: Arc<str> = Arc::from(here.trace_hex());
    let mut served = Served::default();
    let mut response = serve(&gw, req, resolved, trace.clone(), &span, &mut served)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|e| {
            let _in_span = span.enter();
            e.respond(&trace)
        });
    if let Ok(v) = HeaderValue::from_str(&trace) {
        response.headers_mut().insert(TRACE_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&here.to_string()) {
        response.headers_mut().insert(TRACEPARENT, v);
    }
    let took = started.elapsed();
    let status = response.status().as_u16();
    metrics().http_request(
        served.context.as_ref(),
        served.route.as_ref(),
        &method,
        status,
        took,
    );
    trace::record_response(&span, status, served.attempts);
    let _in_span = span.enter();
    tracing::info!(
        method = %method,
        path = %path,
        route = served.route.as_deref().unwrap_or("-"),
        context = served.context.as_deref().unwrap_or("-"),
        status,
        micros = took.as_micros() as u64,
        attempts = served.attempts,
        trace_id = %trace,
        "request"
    );
    response
}

async fn serve(
    gw: &Gateway,
    req: Request<Body>,
    resolved: Resolved,
    trace: Arc<str>,
    span: &tracing::Span,
    served: &mut Served,
) -> Result<Response, GatewayError> {
    let name = match resolved {
        Resolved::Context(name, route) => {
            served.route = Some(route);
            name
        }
        Resolved::MethodNotAllowed(allowed) => {
            return Err(GatewayError::MethodNotAllowed {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                allowed,
            });
        }
        Resolved::NotFound => {
            return Err(GatewayError::NotFound {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            });
        }
    };
    served.context = Some(name.clone());
    let ctx = gw
        .runtime
        .registry()
        .get(&name)
        .ok_or_else(|| GatewayError::NotLoaded(name.clone()))?;
    trace::record_version(span, || ctx.short_id());
    // The rule of the version that will serve the request: a hot swap brings its own.
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous);
    let pattern = served.route.as_deref().unwrap_or_default();
    let rule = ctx
        .access_of(req.method().as_str(), pattern)
        .map(|a| &a.rule)
        .unwrap_or(&Access::Authenticated);
    admit(gw.auth.is_some(), &caller, rule).map_err(GatewayError::Denied)?;
    let scope = Scope {
        trace_id: trace.clone(),
        principal: caller.principal().cloned(),
    };
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > gw.body_limit) {
        return Err(GatewayError::TooLarge(gw.body_limit));
    }
    let limits = BodyLimits {
        max_bytes: gw.body_limit,
        idle: gw.body_idle_timeout,
        total: gw.body_timeout,
    };
    let body = read_body(body, limits).await.map_err(|e| match e {
        BodyError::TooLarge(limit) => GatewayError::TooLarge(limit),
        BodyError::Timeout(limit) => GatewayError::BodyTimeout(limit),
        BodyError::Unreadable(e) => GatewayError::BodyUnreadable(e),
    })?;
    // The component sees exactly the path and query that were routed; the Host header only
    // names the authority, and one that is not an authority is refused (it could otherwise
    // rewrite the path the component sees and bypass the route's rules).
    let authority = match parts.headers.get(header::HOST) {
        None => Authority::from_static("localhost"),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|h| h.parse::<Authority>().ok())
            .ok_or(GatewayError::BadHost)?,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));

    for attempt in 1..=MAX_ATTEMPTS {
        served.attempts = attempt;
        let request = build_request(&parts, &authority, &path_and_query, body.clone())
            .map_err(GatewayError::Malformed)?;
        let unit = share(UnitOfWork::begin(gw.runtime.db()).map_err(GatewayError::Begin)?);
        let reply = gw
            .runtime
            .invoke_http(ctx.clone(), unit.clone(), scope.clone(), request)
            .await?;
        if reply.status.as_u16() >= 400 {
            return Ok(into_response(reply, &ctx));
        }
        let unit = unshare(unit).ok_or_else(|| GatewayError::UnitInUse(name.clone()))?;
        // A unit that only read needs no commit, and gets no commit span.
        let commit_span = if unit.is_read_only() {
            tracing::Span::none()
        } else {
            trace::commit()
        };
        let (outcome, group) = gw
            .runtime
            .committer()
            .commit_measured(unit)
            .instrument(commit_span.clone())
            .await
            .map_err(|e| {
                trace::record_error(&commit_span, &e.to_string());
                GatewayError::Commit(e)
            })?;
        trace::record_commit(&commit_span, outcome.label(), group.size, group.fsync);
        match outcome {
            CommitOutcome::Committed { .. } => return Ok(into_response(reply, &ctx)),
            // Others write the same keys: wait a little, jittered, before running again.
            CommitOutcome::Conflict => {
                metrics().conflict("http");
                tokio::time::sleep(contention_backoff(attempt)).await
            }
        }
    }
    Err(GatewayError::Contention(name))
}

fn build_request(
    parts: &http::request::Parts,
    authority: &Authority,
    path_and_query: &PathAndQuery,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path_and_query.clone())
        .build()?;
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(parts.version);
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers.clone();
    }
    builder.body(Full::new(body))
}

/// Header naming the context version that answered: `<name>@<digest prefix>`.
pub(super) const VERSION_HEADER: &str = "x-context-version";

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

/// The answer to a failed invocation: 504 past its deadline, 503 when the host is at
/// capacity, 500 otherwise, naming the context but not the cause (a trap's or the host's
/// text): the whole error chain goes to the log under the trace id.
fn failure(e: &InvokeError, trace: &str) -> Response {
    // One record per failure: the cause chain (a trap's text spans lines, with its wasm
    // backtrace) is escaped into one field.
    let mut chain = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::warn!(trace_id = %trace, error = %e, cause = ?chain, "invocation failed");
    let context = e.context();
    match e {
        InvokeError::Deadline { .. } | InvokeError::Stalled { .. } => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())
                .title(format!("Context {context} timed out"))
        }
        InvokeError::Capacity { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{context} cannot take more requests right now; try again shortly"),
        )
        .title("Host at capacity")
        .retry_after(1),
        InvokeError::Trap { .. } | InvokeError::Host { .. } => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{context} failed while handling the request (trace {trace})"),
        )
        .title(format!("Context {context} failed")),
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
