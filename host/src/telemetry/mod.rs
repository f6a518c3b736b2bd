//! Telemetry: what the host tells operators about itself, with no code in the components.
//! A leaf every layer records into.
//!
//! - [`mod@metrics`]: the Prometheus families (`ctxhost_*`), rendered by `GET /metrics`.
//! - `flows`: rates, error ratios and p99 over the last seconds, per context, call edge and
//!   event flow, for the console's topology ([`flows()`]).
//! - `deployments`: the recent deployments and rollbacks ([`recent_deployments`]).
//! - `process`: the `process_*` families.
//! - [`trace`]: distributed traces (OpenTelemetry over OTLP, W3C trace context) and the
//!   log format.

/// Most label sets a family whose values a component chooses may hold (and flows the
/// console tracks); later values are counted under `other`.
pub(crate) const MAX_SERIES: usize = 2000;

mod config;
mod deployments;
mod flows;
mod histogram;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod trace;

use std::time::Duration;

pub(crate) use config::TelemetryFile;
pub(crate) use config::{MetricsSettings, TelemetryConfigError};
pub(crate) use deployments::Deployment;
pub(crate) use flows::{CallFlow, EventFlow, FlowSnapshot, Rate};
pub(crate) use metrics::{Kind, Outcome, metrics};

/// The rates of the last seconds, per context, call edge and event flow.
pub(crate) fn flows() -> FlowSnapshot {
    metrics().flows.snapshot()
}

fn history() -> &'static deployments::History {
    static HISTORY: std::sync::LazyLock<deployments::History> =
        std::sync::LazyLock::new(deployments::History::default);
    &HISTORY
}

/// The recent deployments and rollbacks, newest first.
pub(crate) fn recent_deployments() -> Vec<Deployment> {
    history().recent()
}

/// Record a deployment or rollback: in the history, and in the families.
pub(crate) fn record_deployment(d: Deployment) {
    let m = metrics();
    match d.action {
        "rollback" => m.rollback(&d.context, d.trigger, d.outcome),
        _ => m.deployment(&d.context, d.outcome),
    }
    history().push(d);
}

/// Sample the flows once a second until `stop` turns true.
pub(crate) fn start_sampler(mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => metrics().flows.sample(std::time::Instant::now()),
                _ = stop.changed() => if *stop.borrow() { return },
            }
        }
    });
}
