//! The host's Prometheus metrics: every family the layers record into as things happen
//! (requests, invocations, calls, commits, events, deployments), kept in one registry and
//! rendered in the Prometheus text format by [`Metrics::render`]. Gauges of live state (in
//! flight, idle, breaker states, lag, broker) are read at scrape time by the caller of
//! `render` and appended as `extra` families, so no hot path maintains them.
//!
//! Label values are bounded: route patterns (never raw paths), and names of contexts, event
//! types and call targets from the components' manifests; families whose labels a component
//! chooses (event types, function names) fold new values into `other` past
//! [`MAX_SERIES`] label sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::flows::{FlowKey, Ledger};
use super::histogram::Timing;

use super::MAX_SERIES;

/// A label value shared without copying (context names, route patterns).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct L(pub(crate) Arc<str>);

impl EncodeLabelValue for L {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

impl From<&str> for L {
    fn from(s: &str) -> Self {
        L(Arc::from(s))
    }
}

impl From<&Arc<str>> for L {
    fn from(s: &Arc<str>) -> Self {
        L(s.clone())
    }
}

/// What ran an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Kind {
    http,
    event,
    call,
    ready,
}

/// How an invocation ended: it answered (`ok`), answered an error (`error`: an HTTP 5xx, a
/// handler's or a call's `err`, a host failure), trapped, ran past its deadline, or was
/// refused for capacity before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Outcome {
    ok,
    error,
    trap,
    deadline,
    refused,
}

impl Outcome {
    fn is_error(self) -> bool {
        self != Outcome::ok
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    context: L,
    route: L,
    method: L,
    status_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    context: L,
    route: L,
    method: L,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InvocationLabels {
    context: L,
    version: L,
    kind: Kind,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    context: L,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContextLabels {
    context: L,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    caller: L,
    target: L,
    function: L,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallTimeLabels {
    caller: L,
    target: L,
    function: L,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: L,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    target: L,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindOfEntryLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PublishedLabels {
    context: L,
    event_type: L,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveredLabels {
    subscriber: L,
    event_type: L,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubscriberLabels {
    subscriber: L,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeployLabels {
    context: L,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RollbackLabels {
    context: L,
    trigger: &'static str,
    outcome: &'static str,
}

/// Every family the host records into, and the registry that renders them.
pub(crate) struct Metrics {
    enabled: AtomicBool,
    registry: Registry,
    pub(crate) flows: Ledger,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Timing>,
    rate_limited: Family<ScopeLabels, Counter>,
    body_refused: Family<ReasonLabels, Counter>,
    auth_refused: Family<ReasonLabels, Counter>,
    invocations: Family<InvocationLabels, Counter>,
    invocation_duration: Family<KindLabels, Timing>,
    instances_created: Family<ContextLabels, Counter>,
    instantiation: Family<ContextLabels, Timing>,
    calls: Family<CallLabels, Counter>,
    call_series: AtomicUsize,
    call_duration: Family<CallTimeLabels, Timing>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    retries: Family<TargetLabels, Counter>,
    commit_duration: Timing,
    commit_group: Histogram,
    commits: Counter,
    conflicts: Family<SourceLabels, Counter>,
    pruned: Family<KindOfEntryLabels, Counter>,
    published: Family<PublishedLabels, Counter>,
    published_series: AtomicUsize,
    delivered: Family<DeliveredLabels, Counter>,
    delivered_series: AtomicUsize,
    delivery_duration: Family<SubscriberLabels, Timing>,
    lag: Family<SubscriberLabels, Gauge>,
    deployments: Family<DeployLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
}

/// `2xx`, `4xx`, ... for a status code.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The label for a value a component chose, folded into `other` once `family` holds
/// [`MAX_SERIES`] label sets (`series` counts them; a race may let a few more in).
fn bounded<S, M, C>(
    family: &Family<S, M, C>,
    series: &AtomicUsize,
    labels: S,
    fold: impl FnOnce(&mut S),
) -> S
where
    S: Clone + std::hash::Hash + Eq,
    C: MetricConstructor<M>,
{
    let mut labels = labels;
    if family.get(&labels).is_none() {
        if series.load(Ordering::Relaxed) >= MAX_SERIES {
            fold(&mut labels);
        } else {
            series.fetch_add(1, Ordering::Relaxed);
        }
    }
    labels
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            enabled: AtomicBool::new(true),
            registry: Registry::with_prefix("ctxhost"),
            flows: Ledger::default(),
            requests: Family::default(),
            request_duration: Family::default(),
            rate_limited: Family::default(),
            body_refused: Family::default(),
            auth_refused: Family::default(),
            invocations: Family::default(),
            invocation_duration: Family::default(),
            instances_created: Family::default(),
            instantiation: Family::default(),
            calls: Family::default(),
            call_series: AtomicUsize::new(0),
            call_duration: Family::default(),
            breaker_transitions: Family::default(),
            retries: Family::default(),
            commit_duration: Timing::default(),
            commit_group: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commits: Counter::default(),
            conflicts: Family::default(),
            pruned: Family::default(),
            published: Family::default(),
            published_series: AtomicUsize::new(0),
            delivered: Family::default(),
            delivered_series: AtomicUsize::new(0),
            delivery_duration: Family::default(),
            lag: Family::default(),
            deployments: Family::default(),
            rollbacks: Family::default(),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "Requests the gateway answered, by context, route pattern, method and status class",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by context, route pattern and method",
            self.request_duration.clone(),
        );
        r.register(
            "http_rate_limited",
            "Requests refused with 429 by a rate limit, by the limit's scope",
            self.rate_limited.clone(),
        );
        r.register(
            "http_body_refused",
            "Requests refused for their body: too_large (413) or timeout (408)",
            self.body_refused.clone(),
        );
        r.register(
            "http_auth_refused",
            "Requests the gateway refused for their caller: missing (401, no token), invalid (401, a bad token) or forbidden (403, a role missing)",
            self.auth_refused.clone(),
        );
        r.register(
            "invocations",
            "Invocations of components, by context, version, kind and outcome",
            self.invocations.clone(),
        );
        r.register(
            "invocation_duration_seconds",
            "Time an invocation ran, instantiation included, by context and kind",
            self.invocation_duration.clone(),
        );
        r.register(
            "instances_created",
            "Component instances created (fresh ones; reused idle instances are not counted)",
            self.instances_created.clone(),
        );
        r.register(
            "instantiation_duration_seconds",
            "Time to create a component instance, by context",
            self.instantiation.clone(),
        );
        r.register(
            "calls",
            "Typed calls between contexts, by caller, target, function and outcome",
            self.calls.clone(),
        );
        r.register(
            "call_duration_seconds",
            "Time of a typed call as the caller sees it (retries included)",
            self.call_duration.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker state changes, by target and new state",
            self.breaker_transitions.clone(),
        );
        r.register(
            "call_retries",
            "Calls attempted again after a failure, by target",
            self.retries.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Time to commit one group of units of work (one durable transaction, one fsync)",
            self.commit_duration.clone(),
        );
        r.register(
            "commit_group_size",
            "Units of work committed together in one durable transaction",
            self.commit_group.clone(),
        );
        r.register(
            "commit_groups",
            "Groups of units of work committed",
            self.commits.clone(),
        );
        r.register(
            "unit_conflicts",
            "Units of work whose reads had changed at commit and ran again, by source (http, event)",
            self.conflicts.clone(),
        );
        r.register(
            "storage_pruned",
            "Entries retention removed, by kind (events, inbox, dead_letters)",
            self.pruned.clone(),
        );
        r.register(
            "events_published",
            "Events committed to the event log, by publishing context and type",
            self.published.clone(),
        );
        r.register(
            "events_delivered",
            "Event deliveries, by subscriber, type and outcome (applied, duplicate, retried, dead_lettered)",
            self.delivered.clone(),
        );
        r.register(
            "event_delivery_duration_seconds",
            "Time a subscriber's handler took for one event, by subscriber",
            self.delivery_duration.clone(),
        );
        r.register(
            "subscriber_lag_events",
            "Events a subscriber has yet to apply: behind the event log's head (embedded bus) or waiting in its queue (RabbitMQ)",
            self.lag.clone(),
        );
        r.register(
            "deployments",
            "Deployments of a new version, by context and outcome (ok, refused)",
            self.deployments.clone(),
        );
        r.register(
            "rollbacks",
            "Rollbacks to the previous version, by context, trigger (manual, automatic) and outcome",
            self.rollbacks.clone(),
        );
        self
    }

    /// Whether recording is on (`[telemetry] metrics`).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The families in the Prometheus text format, followed by those of `extra` (live
    /// gauges, process families).
    pub(crate) fn render(&self, extra: &[&Registry]) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut out, &self.registry)?;
        for r in extra {
            prometheus_text::encode(&mut out, r)?;
        }
        Ok(out)
    }

    /// A request the gateway answered. `context` and `route` are `None` when no route matched.
    pub(crate) fn http_request(
        &self,
        context: Option<&Arc<str>>,
        route: Option<&Arc<str>>,
        method: &http::Method,
        status: u16,
        took: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        let context = context.map_or_else(|| L::from("-"), L::from);
        let route = route.map_or_else(|| L::from("unmatched"), L::from);
        let method = L::from(method.as_str());
        let class = status_class(status);
        self.requests
            .get_or_create(&RequestLabels {
                context: context.clone(),
                route: route.clone(),
                method: method.clone(),
                status_class: class,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                context: context.clone(),
                route,
                method,
            })
            .observe(took);
        if context.0.as_ref() != "-" {
            self.flows
                .record(FlowKey::Context(context.0), status >= 500, took);
        }
    }

    /// A request refused by a rate limit of `scope` (`route` or `client`).
    pub(crate) fn rate_limited(&self, scope: &'static str) {
        if self.enabled() {
            self.rate_limited
                .get_or_create(&ScopeLabels { scope })
                .inc();
        }
    }

    /// A request refused for its caller (`missing`, `invalid`, `forbidden`).
    pub(crate) fn auth_refused(&self, reason: &'static str) {
        if self.enabled() {
            self.auth_refused
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// A request refused for its body (`too_large`, `timeout`).
    pub(crate) fn body_refused(&self, reason: &'static str) {
        if self.enabled() {
            self.body_refused
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// One invocation of `context` (its manifest `version`) that ran for `took`.
    pub(crate) fn invocation(
        &self,
        context: &Arc<str>,
        version: &str,
        kind: Kind,
        outcome: Outcome,
        took: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        self.invocations
            .get_or_create(&InvocationLabels {
                context: context.into(),
                version: version.into(),
                kind,
                outcome,
            })
            .inc();
        self.invocation_duration
            .get_or_create(&KindLabels {
                context: context.into(),
                kind,
            })
            .observe(took);
    }

    /// A fresh instance of `context` created in `took`.
    pub(crate) fn instantiated(&self, context: &Arc<str>, took: Duration) {
        if !self.enabled() {
            return;
        }
        let labels = ContextLabels {
            context: context.into(),
        };
        self.instances_created.get_or_create(&labels).inc();
        self.instantiation.get_or_create(&labels).observe(took);
    }

    /// A typed call from `caller` to `target`'s `function`, as the caller saw it.
    pub(crate) fn call(
        &self,
        caller: &Arc<str>,
        target: &Arc<str>,
        function: &str,
        outcome: Outcome,
        took: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        let labels = bounded(
            &self.calls,
            &self.call_series,
            CallLabels {
                caller: caller.into(),
                target: target.into(),
                function: function.into(),
                outcome,
            },
            |l| l.function = L::from("other"),
        );
        self.calls.get_or_create(&labels).inc();
        self.call_duration
            .get_or_create(&CallTimeLabels {
                caller: labels.caller.clone(),
                target: labels.target.clone(),
                function: labels.function,
            })
            .observe(took);
        self.flows.record(
            FlowKey::Call(caller.clone(), target.clone()),
            outcome.is_error(),
            took,
        );
    }

    /// The breaker in front of `target` moved to `to` (`closed`, `open`, `half_open`).
    pub(crate) fn breaker_transition(&self, target: &str, to: &'static str) {
        if self.enabled() {
            self.breaker_transitions
                .get_or_create(&TransitionLabels {
                    target: target.into(),
                    to,
                })
                .inc();
        }
    }

    /// A call to `target` attempted again.
    pub(crate) fn retry(&self, target: &str) {
        if self.enabled() {
            self.retries
                .get_or_create(&TargetLabels {
                    target: target.into(),
                })
                .inc();
        }
    }

    /// A group of `units` committed in one transaction that took `took`.
    pub(crate) fn commit(&self, units: usize, took: Duration) {
        if self.enabled() {
            self.commits.inc();
            self.commit_group.observe(units as f64);
            self.commit_duration.observe(took);
        }
    }

    /// A unit of work of `source` (`http`, `event`) found a conflict at commit and runs again.
    /// Retention removed `entries` of `kind` (events, inbox, dead_letters).
    pub(crate) fn pruned(&self, kind: &'static str, entries: u64) {
        if self.enabled() {
            self.pruned
                .get_or_create(&KindOfEntryLabels { kind })
                .inc_by(entries);
        }
    }

    pub(crate) fn conflict(&self, source: &'static str) {
        if self.enabled() {
            self.conflicts.get_or_create(&SourceLabels { source }).inc();
        }
    }

    /// An event of `event_type` that `context` published was committed.
    pub(crate) fn published(&self, context: &str, event_type: &str) {
        if !self.enabled() {
            return;
        }
        let labels = bounded(
            &self.published,
            &self.published_series,
            PublishedLabels {
                context: context.into(),
                event_type: event_type.into(),
            },
            |l| l.event_type = L::from("other"),
        );
        self.published.get_or_create(&labels).inc();
    }

    /// An event from `publisher` offered to `subscriber`, with how it ended (`applied`,
    /// `duplicate`, `retried`, `dead_lettered`) and how long the handler ran (`None`: it did
    /// not run).
    pub(crate) fn delivered(
        &self,
        publisher: &str,
        subscriber: &str,
        event_type: &str,
        outcome: &'static str,
        took: Option<Duration>,
    ) {
        if !self.enabled() {
            return;
        }
        let labels = bounded(
            &self.delivered,
            &self.delivered_series,
            DeliveredLabels {
                subscriber: subscriber.into(),
                event_type: event_type.into(),
                outcome,
            },
            |l| l.event_type = L::from("other"),
        );
        if let Some(took) = took {
            self.delivery_duration
                .get_or_create(&SubscriberLabels {
                    subscriber: labels.subscriber.clone(),
                })
                .observe(took);
        }
        let failed = matches!(outcome, "retried" | "dead_lettered");
        if outcome != "duplicate" {
            self.flows.record(
                FlowKey::Event {
                    publisher: Arc::from(publisher),
                    subscriber: labels.subscriber.0.clone(),
                    event_type: labels.event_type.0.clone(),
                },
                failed,
                took.unwrap_or_default(),
            );
        }
        self.delivered.get_or_create(&labels).inc();
    }

    /// Events `subscriber` has yet to apply.
    pub(crate) fn subscriber_lag(&self, subscriber: &str, lag: u64) {
        if !self.enabled() {
            return;
        }
        self.lag
            .get_or_create(&SubscriberLabels {
                subscriber: subscriber.into(),
            })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        self.flows.set_lag(subscriber, lag);
    }

    /// A deployment of `context` ended (`ok` or `refused`).
    pub(crate) fn deployment(&self, context: &str, outcome: &'static str) {
        if self.enabled() {
            self.deployments
                .get_or_create(&DeployLabels {
                    context: context.into(),
                    outcome,
                })
                .inc();
        }
    }

    /// A rollback of `context` ended.
    pub(crate) fn rollback(&self, context: &str, trigger: &'static str, outcome: &'static str) {
        if self.enabled() {
            self.rollbacks
                .get_or_create(&RollbackLabels {
                    context: context.into(),
                    trigger,
                    outcome,
                })
                .inc();
        }
    }
}

/// `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The process-wide metrics (one host per process).
pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_the_prefix_and_bounded_labels() {
        let m = Metrics::new();
        let ctx: Arc<str> = Arc::from("shop");
        let route: Arc<str> = Arc::from("/items/{id}");
        m.http_request(
            Some(&ctx),
            Some(&route),
            &http::Method::GET,
            200,
            Duration::from_millis(2),
        );
        m.http_request(
            None,
            None,
            &http::Method::GET,
            404,
            Duration::from_micros(50),
        );
        m.invocation(
            &ctx,
            "1.0.0",
            Kind::http,
            Outcome::trap,
            Duration::from_millis(1),
        );
        let text = m.render(&[]).unwrap();
        assert!(text.contains(
            r#"ctxhost_http_requests_total{context="shop",route="/items/{id}",method="GET",status_class="2xx"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"ctxhost_http_requests_total{context="-",route="unmatched",method="GET",status_class="4xx"} 1"#
        ));
        assert!(text.contains(r#"ctxhost_invocations_total{context="shop",version="1.0.0",kind="http",outcome="trap"} 1"#));
        assert!(text.contains(r#"ctxhost_http_request_duration_seconds_bucket{context="shop",route="/items/{id}",method="GET",le="0.0025"} 1"#));
    }

    #[test]
    fn component_chosen_labels_fold_into_other_past_the_cap() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES + 10 {
            m.published("shop", &format!("type-{i}"));
        }
        let text = m.render(&[]).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("ctxhost_events_published_total{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1);
        assert!(text.contains(r#"event_type="other"} 10"#));
    }

    #[test]
    fn nothing_is_recorded_when_off() {
        let m = Metrics::new();
        m.set_enabled(false);
        m.rate_limited("client");
        let text = m.render(&[]).unwrap();
        assert!(!text.contains("ctxhost_http_rate_limited_total{"));
    }
}
