//! The host's spans: the server span of a request, the invocation of a context, the client
//! span of a call between contexts, the commit, and the producer and consumer spans of an
//! event. They are `tracing` spans under [`TARGET`], which the OpenTelemetry layer exports;
//! when traces are off each of these functions returns `Span::none()`, which costs nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::w3c::TraceParent;

/// Target of every span made here: the OpenTelemetry layer sees these and nothing else.
pub(crate) const TARGET: &str = "ctxhost::trace";

/// Whether spans are made: an exporter is configured, or JSON logs show the span ids.
static SPANS: AtomicBool = AtomicBool::new(false);

/// Whether the spans of a trace that is not sampled are left out altogether (exporting with
/// a parent-based sampler, so no child of an unsampled span could be sampled): the root's
/// decision then costs the one span that took it.
static PRUNE: AtomicBool = AtomicBool::new(false);

/// `messaging.system` of this process's events.
static MESSAGING_SYSTEM: OnceLock<&'static str> = OnceLock::new();

/// Whether the host makes spans (see the module's doc).
pub(crate) fn spans_on() -> bool {
    SPANS.load(Ordering::Relaxed)
}

/// From now on, make spans; with `prune`, none under a trace that is not sampled.
pub(super) fn turn_on(prune: bool) {
    PRUNE.store(prune, Ordering::Relaxed);
    SPANS.store(true, Ordering::Relaxed);
}

/// Whether to make a span that is the child of the current one: spans are on, and the
/// current span exists unless unsampled traces are pruned.
fn child_on() -> bool {
    spans_on() && !(PRUNE.load(Ordering::Relaxed) && Span::current().is_none())
}

/// The context an event carries when its publisher made no producer span: not sampled when
/// that is because its trace is not (pruned), else a span id of this host in its trace.
pub(crate) fn unrecorded_parent(trace_id: &str) -> TraceParent {
    let mut parent = TraceParent::unrecorded(trace_id);
    if spans_on() && PRUNE.load(Ordering::Relaxed) {
        parent.flags = 0;
    }
    parent
}

/// Name the transport of this process's events (`messaging.system`: `rabbitmq`, or
/// `ctxhost` for the embedded bus). Set once, at start.
pub(crate) fn set_messaging_system(system: &'static str) {
    let _ = MESSAGING_SYSTEM.set(system);
}

fn messaging_system() -> &'static str {
    MESSAGING_SYSTEM.get().copied().unwrap_or("ctxhost")
}

/// The span's context as a `traceparent`, when it has one (spans on, the span real).
pub(crate) fn traceparent(span: &Span) -> Option<TraceParent> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    })
}

/// Make `span` (just created, not yet entered) a child of the remote `parent`.
fn set_remote_parent(span: &Span, parent: &TraceParent) {
    let sc = SpanContext::new(
        TraceId::from(parent.trace_id),
        SpanId::from(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    // Fails only without the OpenTelemetry layer, and then nothing is exported anyway.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
}

/// The server span of an HTTP request, a child of the caller's `traceparent` if any.
/// `route` is the route pattern that matched and the context serving it.
fn server(
    method: &http::Method,
    path: &str,
    route: Option<(&str, &str)>,
    parent: Option<&TraceParent>,
) -> Span {
    if !spans_on() {
        return Span::none();
    }
    let (pattern, context) = match route {
        Some((pattern, context)) => (Some(pattern), Some(context)),
        None => (None, None),
    };
    let span = match pattern {
        Some(p) => tracing::info_span!(
            target: TARGET,
            "http.server",
            otel.name = %format_args!("{method} {p}"),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            url.path = path,
            url.scheme = "http",
            http.route = p,
            http.response.status_code = Empty,
            ctxhost.context = context,
            ctxhost.version = Empty,
            ctxhost.attempts = Empty,
        ),
        None => tracing::info_span!(
            target: TARGET,
            "http.server",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            url.path = path,
            url.scheme = "http",
            http.response.status_code = Empty,
        ),
    };
    if let Some(p) = parent {
        set_remote_parent(&span, p);
    }
    span
}

/// [`server`], and the server span's context. When unsampled traces are pruned and this
/// one is not sampled, the span is dropped (`Span::none()`), so nothing under it is made;
/// the context is still returned, unsampled, for the answer and the events.
pub(crate) fn server_span(
    method: &http::Method,
    path: &str,
    route: Option<(&str, &str)>,
    parent: Option<&TraceParent>,
) -> (Span, Option<TraceParent>) {
    let span = server(method, path, route, parent);
    let context = traceparent(&span);
    match context {
        Some(c) if c.flags & 1 == 0 && PRUNE.load(Ordering::Relaxed) => (Span::none(), context),
        _ => (span, context),
    }
}

/// Record on a server span the version of the context that serves it (`version` is only
/// called when the span is real).
pub(crate) fn record_version(span: &Span, version: impl FnOnce() -> String) {
    if span.is_none() {
        return;
    }
    span.record("ctxhost.version", version().as_str());
}

/// Record on a server span the answer's status (5xx is an error of the server) and how
/// many times the request ran.
pub(crate) fn record_response(span: &Span, status: u16, attempts: u32) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    span.record("ctxhost.attempts", attempts);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// The span of one invocation of `context` (`kind`: `http`, `event` or `call`), a child of
/// the current span.
pub(crate) fn invocation(
    context: &str,
    version: impl FnOnce() -> String,
    kind: &'static str,
) -> Span {
    if !child_on() {
        return Span::none();
    }
    let version = version();
    tracing::info_span!(
        target: TARGET,
        "invoke",
        otel.name = %format_args!("invoke {context}"),
        otel.status_code = Empty,
        error.message = Empty,
        ctxhost.context = context,
        ctxhost.version = version.as_str(),
        ctxhost.invocation = kind,
    )
}

/// Mark a span as failed, with the reason.
pub(crate) fn record_error(span: &Span, message: &str) {
    if span.is_none() {
        return;
    }
    span.record("otel.status_code", "error");
    span.record("error.message", message);
}

/// The client span of a typed call from `caller` to `iface.func` provided by `callee`.
pub(crate) fn call(caller: &str, iface: &str, func: &str, callee: &str) -> Span {
    if !child_on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "call",
        otel.name = %format_args!("{iface}/{func}"),
        otel.kind = "client",
        otel.status_code = Empty,
        rpc.system = "ctxhost",
        rpc.service = iface,
        rpc.method = func,
        ctxhost.context = caller,
        ctxhost.call.callee = callee,
        ctxhost.call.failed = Empty,
        error.message = Empty,
    )
}

/// Record whether the caller got an `err`.
pub(crate) fn record_call(span: &Span, failed: bool) {
    if span.is_none() {
        return;
    }
    span.record("ctxhost.call.failed", failed);
    if failed {
        span.record("otel.status_code", "error");
    }
}

/// The span of a unit of work's commit, a child of the current span.
pub(crate) fn commit() -> Span {
    if !child_on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "commit",
        otel.status_code = Empty,
        ctxhost.commit.group_size = Empty,
        ctxhost.commit.fsync_ms = Empty,
        ctxhost.commit.outcome = Empty,
        error.message = Empty,
    )
}

/// Record how a commit went: `outcome`, the number of units its group committed together,
/// and how long the group's durable commit (the fsync) took.
pub(crate) fn record_commit(
    span: &Span,
    outcome: &'static str,
    group_size: usize,
    fsync: std::time::Duration,
) {
    if span.is_none() {
        return;
    }
    span.record("ctxhost.commit.outcome", outcome);
    span.record("ctxhost.commit.group_size", group_size as u64);
    span.record("ctxhost.commit.fsync_ms", fsync.as_secs_f64() * 1000.0);
}

/// What the producer and consumer spans tell of an event.
pub(crate) struct EventAttributes<'a> {
    pub(crate) id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) correlation_id: &'a str,
    /// The context that publishes it, or that applies it.
    pub(crate) context: &'a str,
}

/// The producer span of an event published by the current invocation: ended at once, its
/// context travels with the event.
pub(crate) fn producer(event: &EventAttributes<'_>) -> Span {
    if !child_on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "publish",
        otel.name = %format_args!("send {}", event.event_type),
        otel.kind = "producer",
        messaging.system = messaging_system(),
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = event.event_type,
        messaging.message.id = event.id,
        messaging.message.conversation_id = event.correlation_id,
        ctxhost.context = event.context,
        ctxhost.correlation_id = event.correlation_id,
    )
}

/// The consumer span of one delivery of an event to a context: a child of the producer
/// span whose context the event carries (`traceparent`; for an event stored without one, a
/// span of its trace `traceid`).
pub(crate) fn consumer(event: &EventAttributes<'_>, traceparent: &str, traceid: &str) -> Span {
    if !spans_on() {
        return Span::none();
    }
    let parent =
        TraceParent::parse(traceparent).unwrap_or_else(|| TraceParent::unrecorded(traceid));
    if parent.flags & 1 == 0 && PRUNE.load(Ordering::Relaxed) {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "process",
        otel.name = %format_args!("process {}", event.event_type),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = messaging_system(),
        messaging.operation.type = "process",
        messaging.destination.name = event.event_type,
        messaging.consumer.group.name = event.context,
        messaging.message.id = event.id,
        messaging.message.conversation_id = event.correlation_id,
        ctxhost.context = event.context,
        ctxhost.correlation_id = event.correlation_id,
        ctxhost.delivery = Empty,
        error.message = Empty,
    );
    set_remote_parent(&span, &parent);
    span
}

/// Record how a delivery ended: `applied`, or `failed` with the reason.
pub(crate) fn record_delivery(span: &Span, failure: Option<&str>) {
    if span.is_none() {
        return;
    }
    match failure {
        None => span.record("ctxhost.delivery", "applied"),
        Some(why) => {
            span.record("ctxhost.delivery", "failed");
            span.record("otel.status_code", "error");
            span.record("error.message", why)
        }
    };
}
