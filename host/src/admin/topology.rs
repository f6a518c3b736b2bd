//! `GET /admin/topology`: the running system as a graph, for the console and for operators.
//!
//! The shape comes from what the contexts declared: each loaded context is a node; a context
//! whose component imports an interface another loaded context exports has a call edge to
//! it, coloured by the breaker of calls into that context; each event type a context was
//! seen publishing has an edge to every loaded context subscribed to it. The rates, error
//! ratios, latencies and lags on them, and the recent deployments, come from `telemetry`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;

use super::Admin;
use crate::api::{
    BrokerInfo, CallEdge, DeploymentInfo, EventEdge, EventTypeFlow, FlowRate, Topology,
    TopologyNode,
};
use crate::runtime::LoadedContext;
use crate::state::DEAD_LETTERS;
use crate::telemetry;

/// `GET /admin/topology`.
pub(super) async fn topology(State(app): State<Arc<Admin>>) -> Json<Topology> {
    let contexts = app.runtime.registry().all();
    let flows = telemetry::flows();
    let declared: Vec<Declared<'_>> = contexts.iter().map(|c| Declared::of(c)).collect();
    let now = Instant::now();
    let resilience = app.runtime.resilience();
    let dead_letters = match app.runtime.db().count(DEAD_LETTERS) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, "topology: cannot count the dead letters now");
            None
        }
    };
    let transport = app.transport.status();
    Json(Topology {
        at: crate::time::now_rfc3339(),
        window_s: flows.window_s,
        nodes: contexts.iter().map(|c| node(c, &flows)).collect(),
        calls: call_edges(&declared, &flows.calls, |target| {
            resilience.breaker_state(target, now)
        }),
        events: event_edges(&declared, &flows.events),
        deployments: telemetry::recent_deployments()
            .into_iter()
            .map(deployment)
            .collect(),
        dead_letters,
        broker: BrokerInfo {
            transport: transport.transport.to_string(),
            ready: transport.ready,
            state: transport.state.to_string(),
            detail: transport.detail,
            outbox_pending: transport.outbox_pending,
        },
    })
}

/// What a context declared about itself that the graph's edges are made of.
#[derive(Debug, Clone, Copy)]
struct Declared<'a> {
    name: &'a str,
    imports: &'a [String],
    exports: &'a [String],
    subscriptions: &'a [String],
}

impl<'a> Declared<'a> {
    fn of(c: &'a LoadedContext) -> Self {
        Declared {
            name: &c.name,
            imports: &c.imports,
            exports: &c.exports,
            subscriptions: &c.subscriptions,
        }
    }
}

fn rate(r: &telemetry::Rate) -> FlowRate {
    FlowRate {
        per_sec: r.per_sec,
        error_ratio: r.error_ratio,
        p99_ms: r.p99_ms,
    }
}

fn node(c: &LoadedContext, flows: &telemetry::FlowSnapshot) -> TopologyNode {
    TopologyNode {
        name: c.name.to_string(),
        version: c.version.clone(),
        id: c.short_id(),
        health: if c.health.is_unhealthy() {
            "unhealthy"
        } else {
            "running"
        }
        .to_string(),
        in_flight: c.in_flight.load(std::sync::atomic::Ordering::Relaxed) as u64,
        idle: c.warm.len() as u64,
        origin: c.origin.clone(),
        requests: flows.contexts.get(&*c.name).map(rate).unwrap_or_default(),
    }
}

/// One edge per caller and target: the interfaces the caller imports that the target
/// exports, the target's breaker state (`breaker(target)`), and the measured calls.
fn call_edges<'s>(
    declared: &[Declared<'_>],
    calls: &[telemetry::CallFlow],
    breaker: impl Fn(&str) -> &'s str,
) -> Vec<CallEdge> {
    let providers: BTreeMap<&str, &str> = declared
        .iter()
        .flat_map(|d| d.exports.iter().map(|i| (i.as_str(), d.name)))
        .collect();
    let mut edges: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for d in declared {
        for iface in d.imports {
            if let Some(&target) = providers.get(iface.as_str())
                && target != d.name
            {
                edges
                    .entry((d.name, target))
                    .or_default()
                    .push(iface.clone());
            }
        }
    }
    edges
        .into_iter()
        .map(|((caller, target), interfaces)| CallEdge {
            caller: caller.to_string(),
            target: target.to_string(),
            interfaces,
            breaker: breaker(target).to_string(),
            rate: calls
                .iter()
                .find(|c| c.caller == caller && c.target == target)
                .map(|c| rate(&c.rate))
                .unwrap_or_default(),
        })
        .collect()
}

/// One edge per publisher and subscriber: every event type the publisher was seen
/// publishing that the subscriber (a loaded context) subscribes to, each with its measured
/// rate and lag (zero before any was measured).
fn event_edges(declared: &[Declared<'_>], events: &[telemetry::EventFlow]) -> Vec<EventEdge> {
    let published: BTreeSet<(&str, &str)> = events
        .iter()
        .map(|e| (e.publisher.as_str(), e.event_type.as_str()))
        .collect();
    let mut edges: BTreeMap<(&str, &str), Vec<EventTypeFlow>> = BTreeMap::new();
    for (publisher, event_type) in published {
        for d in declared {
            if !d.subscriptions.iter().any(|s| s == event_type) {
                continue;
            }
            let measured = events.iter().find(|e| {
                e.publisher == publisher && e.subscriber == d.name && e.event_type == event_type
            });
            edges
                .entry((publisher, d.name))
                .or_default()
                .push(EventTypeFlow {
                    event_type: event_type.to_string(),
                    per_sec: measured.map_or(0.0, |e| e.per_sec),
                    lag: measured.map_or(0, |e| e.lag),
                });
        }
    }
    edges
        .into_iter()
        .map(|((publisher, subscriber), types)| EventEdge {
            publisher: publisher.to_string(),
            subscriber: subscriber.to_string(),
            per_sec: types.iter().map(|t| t.per_sec).sum(),
            lag: types.iter().map(|t| t.lag).max().unwrap_or(0),
            types,
        })
        .collect()
}

fn deployment(d: telemetry::Deployment) -> DeploymentInfo {
    DeploymentInfo {
        at: d.at,
        context: d.context,
        version: d.version,
        action: d.action.to_string(),
        trigger: d.trigger.to_string(),
        outcome: d.outcome.to_string(),
        detail: d.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::telemetry::{CallFlow, EventFlow, Rate};
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    struct Ctx {
        name: &'static str,
        imports: Vec<String>,
        exports: Vec<String>,
        subscriptions: Vec<String>,
    }

    fn ctx(name: &'static str, imports: &[&str], exports: &[&str], subs: &[&str]) -> Ctx {
        Ctx {
            name,
            imports: strings(imports),
            exports: strings(exports),
            subscriptions: strings(subs),
        }
    }

    fn declared(ctxs: &[Ctx]) -> Vec<Declared<'_>> {
        ctxs.iter()
            .map(|c| Declared {
                name: c.name,
                imports: &c.imports,
                exports: &c.exports,
                subscriptions: &c.subscriptions,
            })
            .collect()
    }

    #[test]
    fn a_context_importing_what_another_exports_calls_it() {
        let ctxs = [
            ctx("a", &["x:y/i", "x:y/j", "wasi:io/streams"], &[], &[]),
            ctx("b", &[], &["x:y/i", "x:y/j"], &[]),
            ctx("c", &["x:y/k"], &["x:y/k"], &[]),
        ];
        let calls = [CallFlow {
            caller: "a".into(),
            target: "b".into(),
            rate: Rate {
                per_sec: 4.0,
                error_ratio: 0.25,
                p99_ms: Some(12.0),
            },
        }];
        let edges = call_edges(&declared(&ctxs), &calls, |t| {
            if t == "b" { "open" } else { "closed" }
        });
        assert_eq!(
            edges.len(),
            1,
            "no edge to itself, none to the platform: {edges:?}"
        );
        let e = &edges[0];
        assert_eq!((e.caller.as_str(), e.target.as_str()), ("a", "b"));
        assert_eq!(e.interfaces, strings(&["x:y/i", "x:y/j"]));
        assert_eq!(e.breaker, "open");
        assert_eq!(e.rate.per_sec, 4.0);
        assert_eq!(e.rate.p99_ms, Some(12.0));
    }

    #[test]
    fn published_types_reach_every_subscriber_with_their_measures() {
        let ctxs = [
            ctx("p", &[], &[], &[]),
            ctx("s1", &[], &[], &["T1", "T2"]),
            ctx("s2", &[], &[], &["T2"]),
            ctx("s3", &[], &[], &["T3"]),
        ];
        let flow = |sub: &str, t: &str, per_sec: f64, lag: u64| EventFlow {
            publisher: "p".into(),
            subscriber: sub.into(),
            event_type: t.into(),
            per_sec,
            error_ratio: 0.0,
            lag,
        };
        let events = [
            flow("s1", "T1", 2.0, 1),
            flow("s1", "T2", 3.0, 7),
            flow("s2", "T2", 3.0, 0),
        ];
        let edges = event_edges(&declared(&ctxs), &events);
        let pairs: Vec<(&str, &str)> = edges
            .iter()
            .map(|e| (e.publisher.as_str(), e.subscriber.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("p", "s1"), ("p", "s2")],
            "s3 never got a type p publishes"
        );
        assert_eq!(edges[0].types.len(), 2);
        assert_eq!(edges[0].per_sec, 5.0);
        assert_eq!(edges[0].lag, 7);
        assert_eq!(edges[1].types[0].event_type, "T2");
    }

    #[test]
    fn a_subscriber_not_yet_measured_gets_an_edge_with_zero_rate() {
        let ctxs = [ctx("p", &[], &[], &[]), ctx("s", &[], &[], &["T"])];
        let events = [EventFlow {
            publisher: "p".into(),
            subscriber: "elsewhere".into(),
            event_type: "T".into(),
            per_sec: 1.0,
            error_ratio: 0.0,
            lag: 0,
        }];
        let edges = event_edges(&declared(&ctxs), &events);
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].subscriber, "s");
        assert_eq!(edges[0].per_sec, 0.0);
    }
}
