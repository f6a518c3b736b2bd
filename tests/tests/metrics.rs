//! `GET /metrics` end to end: after a story of orders (a call to `payment`, events to `car`,
//! `order` and `view`), the families tell it with bounded labels, `promtool check metrics`
//! accepts the exposition, and the `[telemetry]` switches (token, own listener, off) work.

use std::process::{Command, Stdio};
use std::time::Duration;

use ctxhost_tests::{Host, HostOptions, SETTLE, ensure_program, ensure_that, eventually, id};
use std::io::Write;

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every sample of family `name` whose labels contain all of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The metric families a text names (`ctxhost_*` and `process_*`), without the suffixes of
/// histogram series.
fn families_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for prefix in ["ctxhost_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            out.insert(name);
        }
    }
    out
}

/// `GET /metrics` without the admin token.
async fn scrape(url: &str) -> (u16, Option<String>, String) {
    let res = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("GET /metrics");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, ct, res.text().await.expect("body"))
}

/// `promtool check metrics` on `text`: its verdict and output.
fn promtool(text: &str) -> (bool, String) {
    let promtool = ensure_program("promtool", &["prometheus"]);
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[tokio::test]
async fn metrics_tell_the_story_with_bounded_labels_and_pass_promtool() {
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Avante", 10).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let order = host.place_order(car, 1, "alice").await;
        orders.push(id(&order, "id"));
    }
    // A path no route matches, with a number in it that must not become a label.
    host.get("/nowhere/918273645").await;
    let url = host.url("/metrics");
    eventually(SETTLE, || async {
        for o in &orders {
            let order = host.order(*o).await;
            ensure_that!(order["status"] == "RENTED", "order not rented yet: {order}");
        }
        let (_, _, text) = scrape(&url).await;
        let rented = sum(
            &text,
            "ctxhost_events_delivered_total",
            &[r#"subscriber="view""#, r#"outcome="applied""#],
        );
        ensure_that!(rented >= 4.0, "view applied {rented} events so far");
        Ok(())
    })
    .await;

    let (status, content_type, text) = scrape(&url).await;
    assert_eq!(status, 200, "open by default: {text}");
    assert!(
        content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{content_type:?}"
    );
    let (ok, said) = promtool(&text);
    assert!(
        ok,
        "promtool check metrics refused the exposition:\n{said}\n---\n{text}"
    );

    // Gateway: by route pattern, never by raw path.
    assert_eq!(
        sample(
            &text,
            r#"ctxhost_http_requests_total{context="order",route="/orders",method="POST",status_class="2xx"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        sum(
            &text,
            "ctxhost_http_requests_total",
            &[r#"route="/orders/{id}""#]
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"ctxhost_http_requests_total{context="-",route="unmatched",method="GET",status_class="4xx"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("918273645"), "a raw path became a label");
    assert!(
        sum(
            &text,
            "ctxhost_http_request_duration_seconds_count",
            &[r#"context="car""#]
        ) >= 1.0
    );

    // Invocations and the call from order to payment.
    assert!(
        sum(
            &text,
            "ctxhost_invocations_total",
            &[r#"context="payment""#, r#"kind="call""#, r#"outcome="ok""#]
        ) >= 3.0,
        "{text}"
    );
    assert!(sum(&text, "ctxhost_invocations_total", &[r#"kind="ready""#]) >= 4.0);
    assert!(
        sum(
            &text,
            "ctxhost_calls_total",
            &[
                r#"caller="order""#,
                r#"target="payment""#,
                r#"outcome="ok""#
            ]
        ) >= 3.0,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "ctxhost_call_duration_seconds_count",
            &[r#"caller="order""#, r#"target="payment""#]
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"ctxhost_breaker_state{target="payment",state="closed"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(sum(&text, "ctxhost_instances_created_total", &[]) >= 4.0);
    assert!(
        sum(
            &text,
            "ctxhost_instances_in_flight",
            &[r#"context="order""#]
        ) >= 0.0
    );
    assert!(text.contains(r#"ctxhost_version_healthy{context="order""#));

    // Units of work and events.
    assert!(sample(&text, "ctxhost_commit_groups_total").is_some_and(|n| n >= 4.0));
    assert!(sample(&text, "ctxhost_commit_group_size_count").is_some_and(|n| n >= 4.0));
    assert!(sample(&text, "ctxhost_commit_duration_seconds_count").is_some_and(|n| n >= 4.0));
    assert!(
        sum(
            &text,
            "ctxhost_events_published_total",
            &[r#"context="order""#]
        ) >= 3.0,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "ctxhost_events_published_total",
            &[r#"context="car""#]
        ) >= 1.0
    );
    assert!(
        sum(
            &text,
            "ctxhost_events_delivered_total",
            &[r#"subscriber="car""#, r#"outcome="applied""#]
        ) >= 3.0
    );
    assert!(text.contains("ctxhost_subscriber_lag_events{subscriber=\"view\"}"));
    assert_eq!(
        sample(
            &text,
            r#"ctxhost_broker_state{transport="embedded",state="connected"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ctxhost_dead_letters"), Some(0.0));

    // Every family exposed is documented, and so is every one the dashboard queries.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/OBSERVABILITY.md")).expect("the doc");
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or_default();
        let base = name.strip_suffix("_total").unwrap_or(name);
        assert!(doc.contains(base), "{name} is not in docs/OBSERVABILITY.md");
    }
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/ctxhost-dashboard.json"))
        .expect("dashboard");
    let names = families_in(&dashboard);
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        assert!(
            doc.contains(&name),
            "the dashboard queries {name}, which is not documented"
        );
    }

    // The process.
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6));
    assert!(sample(&text, "process_open_fds").is_some_and(|n| n > 3.0));
    assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|s| s > 0.0));
}

#[tokio::test]
async fn metrics_can_need_the_token_move_to_their_own_listener_or_be_off() {
    // Behind the admin token.
    let host = Host::start(HostOptions::new().host_config("[telemetry]\nmetrics_auth = true"));
    let (status, _, _) = scrape(&host.url("/metrics")).await;
    assert_eq!(status, 401);
    let with_token = host.get("/metrics").await;
    assert_eq!(with_token.status, 200, "{}", with_token.body);
    assert!(with_token.body.contains("process_resident_memory_bytes"));
    drop(host);

    // On a listener of its own: the API's listener no longer serves it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let host = Host::start(HostOptions::new().host_config(&format!(
        "[telemetry]\nmetrics_listen = \"127.0.0.1:{port}\""
    )));
    let (status, _, text) = scrape(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("process_resident_memory_bytes"));
    let (status, _, _) = scrape(&host.url("/metrics")).await;
    assert_eq!(status, 404, "the API listener must not serve /metrics then");
    drop(host);

    // Off: nothing served.
    let host = Host::start(HostOptions::new().host_config("[telemetry]\nmetrics = false"));
    host.create_car("Off", 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, body) = scrape(&host.url("/metrics")).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn over_rabbitmq_the_broker_outbox_and_queue_lag_are_exposed() {
    let ns = ctxhost_tests::broker::Namespace::new();
    let host = Host::start(HostOptions::new().amqp(ns.name()));
    let car = host.create_car("Broker", 5).await;
    let order = host.place_order(car, 1, "bob").await;
    let order_id = id(&order, "id");
    let url = host.url("/metrics");
    // The consumers read their queue's depth every 2 s: wait for the lag of `view` to be
    // reported, and for the saga to have gone through the broker.
    eventually(SETTLE, || async {
        let order = host.order(order_id).await;
        ensure_that!(order["status"] == "RENTED", "order not rented yet: {order}");
        let (_, _, text) = scrape(&url).await;
        ensure_that!(
            text.contains(r#"ctxhost_subscriber_lag_events{subscriber="view"}"#),
            "no lag for view yet"
        );
        ensure_that!(
            sample(&text, "ctxhost_outbox_pending_events") == Some(0.0),
            "outbox not drained"
        );
        Ok(())
    })
    .await;
    let (_, _, text) = scrape(&url).await;
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool:\n{said}");
    assert_eq!(
        sample(
            &text,
            r#"ctxhost_broker_state{transport="amqp",state="connected"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sum(
            &text,
            "ctxhost_events_delivered_total",
            &[r#"subscriber="car""#, r#"outcome="applied""#]
        ) >= 1.0,
        "{text}"
    );
}
