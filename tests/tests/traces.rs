//! Traces and logs end to end: the real host exports its spans over OTLP (HTTP/protobuf and
//! gRPC) to a real receiver, and one `POST /orders` is one trace, from the server span to
//! the consumer spans of the saga's events, over the embedded bus and over RabbitMQ. With
//! `CTXHOST_LOG_FORMAT=json` every log line is a JSON object carrying the trace and span
//! ids, the plugins' lines included.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ctxhost_tests::broker::Namespace;
use ctxhost_tests::otlp::{EXPORT_WAIT, ReceivedSpan, Receiver, Transport};
use ctxhost_tests::{Host, HostOptions, SETTLE, ensure_that, eventually, id};
use serde_json::{Value, json};

/// Held by the tests over RabbitMQ, one at a time like those of `amqp.rs`.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// OTLP span kinds.
const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const PRODUCER: i64 = 4;
const CONSUMER: i64 = 5;

/// The caller's trace context the order is placed under.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A host exporting to `receiver` over `transport`, every span sampled, batches sent fast.
fn traced_host(receiver: &Receiver, transport: Transport, opts: HostOptions) -> Host {
    Host::start(
        opts.env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", transport.protocol())
            .env("OTEL_SERVICE_NAME", "ctxhost-test")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    )
}

/// `POST /orders` with the caller's `traceparent`; the answer's body and headers.
async fn place_traced_order(host: &Host, car: u64) -> (Value, reqwest::header::HeaderMap) {
    let resp = reqwest::Client::new()
        .post(host.url("/orders"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"carId": car, "qty": 1, "customerId": "tracy"}))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(resp.status().as_u16(), 201, "POST /orders");
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.expect("a JSON order");
    (body, headers)
}

/// The one span of `spans` that `pick` selects, naming what is missing otherwise.
fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pick: impl Fn(&ReceivedSpan) -> bool,
) -> Result<&'a ReceivedSpan, String> {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pick(s)).collect();
    match found.as_slice() {
        [s] => Ok(s),
        [] => Err(format!("no {what} span yet")),
        many => Err(format!("{} {what} spans: {many:#?}", many.len())),
    }
}

/// Places an order under a known trace and checks that the whole saga is one trace of the
/// expected shape.
async fn one_order_is_one_trace(host: &Host, receiver: &Receiver, messaging_system: &str) {
    let car = host.create_car("Traced", 5).await;
    let (order, headers) = place_traced_order(host, car).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} header in the answer"))
    };
    assert_eq!(header("x-trace-id"), TRACE_ID, "the caller's trace is kept");
    let traceparent = header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent}");
    assert_eq!(parts[1], TRACE_ID, "traceparent {traceparent}");
    let server_span_id = parts[2].to_owned();
    let order_id = id(&order, "id");
    eventually(SETTLE, || async {
        let status = host.order(order_id).await["status"].clone();
        ensure_that!(status == "RENTED", "order {order_id} is {status}");
        Ok(())
    })
    .await;

    let spans = eventually(EXPORT_WAIT, || async {
        let spans = receiver.trace(TRACE_ID);
        let consumers: BTreeSet<String> = spans
            .iter()
            .filter(|s| s.kind == CONSUMER)
            .filter_map(|s| s.attr("messaging.consumer.group.name"))
            .collect();
        ensure_that!(
            ["car", "order", "view"]
                .iter()
                .all(|c| consumers.contains(*c)),
            "consumer spans so far for {consumers:?} among {} spans",
            spans.len()
        );
        one(&spans, "commit", |s| s.name == "commit")?;
        Ok(spans)
    })
    .await;
    let shape = || {
        spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} <- {} {:?}",
                    s.span_id, s.name, s.parent_span_id, s.kind
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let by_id: BTreeMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let check = |ok: bool, what: &str| assert!(ok, "{what}\ntrace:\n{}", shape());

    // The server span: the caller's child, named by the route, answered 201.
    let server = one(&spans, "server", |s| s.kind == SERVER).unwrap_or_else(|e| panic!("{e}"));
    check(
        server.span_id == server_span_id,
        "the answer's traceparent names the server span",
    );
    check(
        server.parent_span_id == CALLER_SPAN,
        "the server span is the caller's child",
    );
    check(server.name == "POST /orders", "server span name");
    for (key, value) in [
        ("http.request.method", "POST"),
        ("http.route", "/orders"),
        ("url.path", "/orders"),
        ("http.response.status_code", "201"),
        ("ctxhost.context", "order"),
    ] {
        check(
            server.attr(key).as_deref() == Some(value),
            &format!("server span {key}"),
        );
    }
    check(
        server.attr("ctxhost.version").is_some(),
        "server span ctxhost.version",
    );
    check(
        server.service.as_deref() == Some("ctxhost-test"),
        "service.name",
    );

    // The order invocation under it; the call to payments.authorize under that, and the
    // payment invocation under the call.
    let invoke_order = one(&spans, "order invocation", |s| {
        s.name == "invoke order" && s.parent_span_id == server.span_id
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", shape()));
    check(
        invoke_order.attr("ctxhost.invocation").as_deref() == Some("http"),
        "invocation kind",
    );
    let call = one(&spans, "call", |s| s.kind == CLIENT).unwrap_or_else(|e| panic!("{e}"));
    check(
        call.parent_span_id == invoke_order.span_id,
        "the call is made by the order invocation",
    );
    check(
        call.attr("rpc.method").as_deref() == Some("authorize"),
        "rpc.method",
    );
    check(
        call.attr("rpc.service")
            .is_some_and(|s| s.contains("payments")),
        "rpc.service",
    );
    check(
        call.attr("ctxhost.call.callee").as_deref() == Some("payment"),
        "callee",
    );
    let invoke_payment = one(&spans, "payment invocation", |s| {
        s.name == "invoke payment" && s.attr("ctxhost.invocation").as_deref() == Some("call")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    check(
        invoke_payment.parent_span_id == call.span_id,
        "the payment runs under the call",
    );

    // The commit, a child of the server span, with its group's figures.
    let commit = one(&spans, "commit", |s| s.name == "commit").unwrap_or_else(|e| panic!("{e}"));
    check(
        commit.parent_span_id == server.span_id,
        "the commit is the request's",
    );
    check(
        commit
            .attr("ctxhost.commit.group_size")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1),
        "commit group size",
    );
    check(
        commit.attr("ctxhost.commit.fsync_ms").is_some(),
        "commit fsync time",
    );

    // Producer spans: OrderPlaced and PaymentApproved by the request's invocations.
    let producers: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == PRODUCER).collect();
    for event_type in ["OrderPlaced", "PaymentApproved", "CarRented"] {
        check(
            producers
                .iter()
                .any(|p| p.attr("messaging.destination.name").as_deref() == Some(event_type)),
            &format!("a producer span for {event_type}"),
        );
    }
    for p in &producers {
        check(
            by_id
                .get(p.parent_span_id.as_str())
                .is_some_and(|parent| parent.name.starts_with("invoke ")),
            &format!("producer {} is published by an invocation", p.name),
        );
        check(
            p.attr("messaging.system").as_deref() == Some(messaging_system)
                && p.attr("messaging.message.id").is_some()
                && p.attr("ctxhost.correlation_id").as_deref()
                    == Some(order_id.to_string().as_str()),
            &format!("producer {} attributes: {:?}", p.name, p.attributes),
        );
    }

    // Consumer spans: each a child of the producer span of the event it delivers, with the
    // handler's invocation under it.
    let consumers: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == CONSUMER).collect();
    for c in &consumers {
        let parent = by_id.get(c.parent_span_id.as_str());
        check(
            parent.is_some_and(|p| {
                p.kind == PRODUCER
                    && p.attr("messaging.message.id") == c.attr("messaging.message.id")
            }),
            &format!(
                "consumer {} is a child of its event's producer span",
                c.name
            ),
        );
        check(
            c.attr("messaging.system").as_deref() == Some(messaging_system)
                && c.attr("messaging.operation.type").as_deref() == Some("process"),
            &format!("consumer {} attributes: {:?}", c.name, c.attributes),
        );
        let context = c.attr("messaging.consumer.group.name").unwrap_or_default();
        check(
            spans
                .iter()
                .any(|s| s.parent_span_id == c.span_id && s.name == format!("invoke {context}")),
            &format!("the {context} handler runs under consumer {}", c.name),
        );
    }
    // CarRented, published while `car` handled PaymentApproved, reaches `order` in the
    // same trace.
    check(
        consumers.iter().any(|c| {
            c.attr("messaging.consumer.group.name").as_deref() == Some("order")
                && c.attr("messaging.destination.name").as_deref() == Some("CarRented")
        }),
        "order consumes CarRented in the trace",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_an_order_over_the_embedded_bus_with_http_protobuf() {
    let receiver = Receiver::start(Transport::Http);
    let host = traced_host(&receiver, Transport::Http, HostOptions::new());
    one_order_is_one_trace(&host, &receiver, "ctxhost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_an_order_over_the_embedded_bus_with_grpc() {
    let receiver = Receiver::start(Transport::Grpc);
    let host = traced_host(&receiver, Transport::Grpc, HostOptions::new());
    one_order_is_one_trace(&host, &receiver, "ctxhost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_an_order_over_rabbitmq_with_http_protobuf() {
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let receiver = Receiver::start(Transport::Http);
    let host = traced_host(
        &receiver,
        Transport::Http,
        HostOptions::new().amqp(ns.name()),
    );
    one_order_is_one_trace(&host, &receiver, "rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_an_order_over_rabbitmq_with_grpc() {
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let receiver = Receiver::start(Transport::Grpc);
    let host = traced_host(
        &receiver,
        Transport::Grpc,
        HostOptions::new().amqp(ns.name()),
    );
    one_order_is_one_trace(&host, &receiver, "rabbitmq").await;
}

/// The JSON log lines of `host`.
fn json_lines(host: &Host) -> Vec<Value> {
    host.log_text()
        .lines()
        .filter(|l| !l.starts_with("=====") && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_and_span_ids_of_host_and_plugin_lines() {
    let host = Host::start(HostOptions::new().env("CTXHOST_LOG_FORMAT", "json"));
    // One unit for an order of two: `car` rejects the rental and logs why, in the trace of
    // the request that placed the order.
    let car = host.create_car("Scarce", 1).await;
    let resp = reqwest::Client::new()
        .post(host.url("/orders"))
        .json(&json!({"carId": car, "qty": 2, "customerId": "jason"}))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(resp.status().as_u16(), 201);
    let trace = resp
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-trace-id")
        .to_owned();
    let traceparent = resp
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("traceparent")
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{trace}-")),
        "{traceparent}"
    );
    let order: Value = resp.json().await.expect("an order");
    let order_id = id(&order, "id");

    let lines = eventually(Duration::from_secs(30), || async {
        let lines = json_lines(&host);
        let of_trace: Vec<&Value> = lines.iter().filter(|l| l["trace_id"] == trace).collect();
        ensure_that!(
            of_trace.iter().any(|l| l["fields"]["message"] == "request"),
            "no request line of trace {trace} yet"
        );
        ensure_that!(
            of_trace.iter().any(|l| l["target"] == "guest"
                && l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("rental rejected"))),
            "no plugin line of trace {trace} yet"
        );
        Ok(lines)
    })
    .await;
    for line in &lines {
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    let of_trace: Vec<&Value> = lines.iter().filter(|l| l["trace_id"] == trace).collect();
    for line in &of_trace {
        let span_id = line["span_id"].as_str().unwrap_or_default();
        assert!(
            span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "a span id in {line}"
        );
    }
    let request = of_trace
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .expect("the request line");
    assert_eq!(request["fields"]["status"], 201, "{request}");
    assert_eq!(
        request["span_id"].as_str(),
        traceparent.split('-').nth(2),
        "the request line is in the server span the answer names"
    );
    let plugin = of_trace
        .iter()
        .find(|l| l["target"] == "guest")
        .expect("the plugin line");
    assert_eq!(plugin["fields"]["context"], "car", "{plugin}");
    assert_eq!(plugin["fields"]["trace_id"], json!(trace), "{plugin}");
    assert!(
        plugin["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("order {order_id}"))),
        "{plugin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_trace_exports_nothing_and_a_sampled_caller_is_followed() {
    let receiver = Receiver::start(Transport::Http);
    let host = traced_host(
        &receiver,
        Transport::Http,
        HostOptions::new().env("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
    );
    let car = host.create_car("Unsampled", 5).await;
    // A trace that starts here is not sampled: the answer says so, and no span of the
    // order's saga reaches the receiver.
    let resp = reqwest::Client::new()
        .post(host.url("/orders"))
        .json(&json!({"carId": car, "qty": 1, "customerId": "quiet"}))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(resp.status().as_u16(), 201);
    let traceparent = resp
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("traceparent")
        .to_owned();
    assert!(traceparent.ends_with("-00"), "not sampled: {traceparent}");
    let quiet: Value = resp.json().await.expect("an order");
    let quiet_id = id(&quiet, "id");
    // A caller's sampled trace is followed through the whole saga.
    let (traced, _) = place_traced_order(&host, car).await;
    let traced_id = id(&traced, "id");
    for order in [quiet_id, traced_id] {
        eventually(SETTLE, || async {
            let status = host.order(order).await["status"].clone();
            ensure_that!(status == "RENTED", "order {order} is {status}");
            Ok(())
        })
        .await;
    }
    eventually(EXPORT_WAIT, || async {
        let spans = receiver.trace(TRACE_ID);
        ensure_that!(
            spans.iter().any(|s| s.kind == CONSUMER
                && s.attr("messaging.destination.name").as_deref() == Some("CarRented")),
            "the caller's trace is not complete yet: {} spans",
            spans.len()
        );
        Ok(())
    })
    .await;
    // Batches go out every 100 ms: a little more, and every span of both sagas is in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let others: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != TRACE_ID)
        .collect();
    assert!(
        others.is_empty(),
        "spans of unsampled traces were exported: {others:#?}"
    );
}
