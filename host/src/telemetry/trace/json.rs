//! `CTXHOST_LOG_FORMAT=json`: one JSON object per log line on stderr, with the trace and
//! span ids of the span the event happened in, so a log line leads to its trace.

use std::io::Write;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The layer writing JSON lines.
pub(super) struct JsonLines {
    /// The dispatcher it is part of, to read the OpenTelemetry context of spans.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl JsonLines {
    pub(super) fn new() -> Self {
        JsonLines {
            dispatch: OnceLock::new(),
        }
    }
}

/// Collects an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

impl<S> tracing_subscriber::Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::from(crate::time::now_rfc3339()));
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        line.insert("fields".into(), Value::Object(fields));
        if let Some(span) = ctx.event_span(event) {
            line.insert("span".into(), Value::from(span.name()));
            let otel = self
                .dispatch
                .get()
                .and_then(|d| d.upgrade())
                .and_then(|d| tracing_opentelemetry::get_otel_context(&span.id(), &d));
            if let Some(cx) = otel {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    line.insert(
                        "trace_id".into(),
                        Value::from(format!("{:032x}", sc.trace_id())),
                    );
                    line.insert(
                        "span_id".into(),
                        Value::from(format!("{:016x}", sc.span_id())),
                    );
                }
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // A log line that cannot be written has nowhere else to go.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}
