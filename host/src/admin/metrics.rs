//! `GET /metrics`: the telemetry's families in the Prometheus text format, followed by
//! gauges of live state read at scrape time (instances in flight and idle, versions'
//! health, breaker states, bulkheads, subscriber lag, the broker, the outbox, dead letters,
//! storage (`ctxhost_storage_*`) and the `process_*` families). Open by default, like a scrape target; behind the admin
//! token with `[telemetry] metrics_auth = true`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Admin, auth};
use crate::gateway::problem::Problem;
use crate::state::DEAD_LETTERS;
use crate::telemetry::{metrics, process};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContextLabels {
    context: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    context: String,
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BreakerLabels {
    target: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BrokerLabels {
    transport: &'static str,
    state: &'static str,
}

/// The breaker states every target reports, one series each (1 for the current one).
const BREAKER_STATES: [&str; 3] = ["closed", "open", "half-open"];

/// `GET /metrics`.
pub(crate) async fn serve(State(app): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !app.metrics.enabled {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "metrics are off ([telemetry] metrics = false)",
        )
        .into_response();
    }
    if app.metrics.auth && !auth::authorized(&app, &headers) {
        return auth::unauthorized();
    }
    let live = live_state(&app);
    let mut proc = Registry::default();
    process::register(&mut proc);
    match metrics().render(&[&live, &proc]) {
        Ok(text) => {
            let mut res = text.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::telemetry::metrics::CONTENT_TYPE),
            );
            res
        }
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the metrics: {e}"),
        )
        .into_response(),
    }
}

/// The gauges of what runs now.
fn live_state(app: &Admin) -> Registry {
    let mut r = Registry::with_prefix("ctxhost");
    let in_flight = Family::<ContextLabels, Gauge>::default();
    let idle = Family::<ContextLabels, Gauge>::default();
    let healthy = Family::<VersionLabels, Gauge>::default();
    for c in app.runtime.registry().all() {
        let labels = ContextLabels {
            context: c.name.to_string(),
        };
        in_flight
            .get_or_create(&labels)
            .set(c.in_flight.load(Ordering::Relaxed) as i64);
        idle.get_or_create(&labels).set(c.warm.len() as i64);
        healthy
            .get_or_create(&VersionLabels {
                context: c.name.to_string(),
                version: c.version.clone(),
            })
            .set(i64::from(!c.health.is_unhealthy()));
    }
    r.register(
        "instances_in_flight",
        "Invocations running now, by context",
        in_flight,
    );
    r.register(
        "instances_idle",
        "Idle instances kept for reuse, by context",
        idle,
    );
    r.register(
        "version_healthy",
        "1 when the version serving a context is healthy, 0 when its invocations keep failing",
        healthy,
    );

    let breaker = Family::<BreakerLabels, Gauge>::default();
    let in_use = Family::<TargetLabels, Gauge>::default();
    let queued = Family::<TargetLabels, Gauge>::default();
    let now = Instant::now();
    for t in app.runtime.resilience().targets() {
        let state = t.breaker().state(now).as_str();
        for s in BREAKER_STATES {
            breaker
                .get_or_create(&BreakerLabels {
                    target: t.name().to_string(),
                    state: s,
                })
                .set(i64::from(s == state));
        }
        let labels = TargetLabels {
            target: t.name().to_string(),
        };
        in_use
            .get_or_create(&labels)
            .set(i64::from(t.bulkhead().in_flight()));
        queued
            .get_or_create(&labels)
            .set(t.bulkhead().waiting() as i64);
    }
    r.register(
        "breaker_state",
        "Circuit breaker in front of a target context: 1 for its current state",
        breaker,
    );
    r.register(
        "bulkhead_in_use",
        "Calls to a target running in its bulkhead",
        in_use,
    );
    r.register(
        "bulkhead_queued",
        "Calls to a target waiting for a bulkhead slot",
        queued,
    );

    let status = app.transport.status();
    let broker = Family::<BrokerLabels, Gauge>::default();
    for s in ["connected", "connecting", "disconnected"] {
        broker
            .get_or_create(&BrokerLabels {
                transport: status.transport,
                state: s,
            })
            .set(i64::from(s == status.state));
    }
    r.register(
        "broker_state",
        "Connection of the event transport: 1 for its current state",
        broker,
    );
    if let Some(pending) = status.outbox_pending {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(pending).unwrap_or(i64::MAX));
        r.register(
            "outbox_pending_events",
            "Events committed and not yet handed to the broker",
            g,
        );
    }
    match app.storage.report() {
        Ok(report) => report.register(&mut r),
        Err(e) => tracing::debug!(error = %e, "no storage figures for this scrape"),
    }
    if let Ok(n) = app.runtime.db().count_prefix(DEAD_LETTERS, "") {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(n).unwrap_or(i64::MAX));
        r.register(
            "dead_letters",
            "Events in the dead-letter table, waiting for an operator",
            g,
        );
    }
    r
}
