//! Distributed traces and the log format.
//!
//! With an OTLP endpoint configured (`[telemetry]` or the `OTEL_*` variables, see
//! [`config`]) the host exports one trace per request: the server span, the invocation of
//! the context, a client span per typed call with the callee's invocation under it, the
//! commit, a producer span per published event, and a consumer span per delivery, child of
//! the producer span whose context the event carries (`traceparent`). Without an endpoint no
//! span is made. `docs/OBSERVABILITY.md` lists the spans and their attributes.

mod config;
mod install;
mod json;
mod spans;
mod w3c;

pub use config::{
    Exporter, LogFormat, ParentlessRule, Protocol, Sampling, TraceConfigError, TraceSettings,
};
pub use install::{TraceInitError, Tracing, install};
pub(crate) use spans::{
    EventAttributes, call, commit, consumer, invocation, producer, record_call, record_commit,
    record_delivery, record_error, record_response, record_version, server_span,
    set_messaging_system, traceparent, unrecorded_parent,
};
pub(crate) use w3c::TraceParent;
