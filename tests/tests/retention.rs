//! Retention: the event log keeps what some consumer has not applied and drops the rest
//! once old enough, inboxes drop old entries, a redelivery that could apply an event twice
//! is refused, and `GET /admin/storage` and `/metrics` show it all. Both transports: the
//! embedded bus (a context not running holds the log at its cursor) and RabbitMQ (the
//! broker holds the events of a process that is down, so the log drains anyway).

use std::time::Duration;

use ctxhost_tests::broker::Namespace;
use ctxhost_tests::{
    Api, Host, HostOptions, TestDir, assert_view_matches_orders, ensure_that, eventually, id,
    settled,
};
use serde_json::{Value, json};

/// How long the saga, the view and pruning get to settle.
const SETTLE: Duration = Duration::from_secs(60);

/// A host whose pruner removes everything every consumer has, five times a second.
fn pruning(opts: HostOptions) -> HostOptions {
    opts.env("CTXHOST_EVENT_RETENTION", "0s")
        .env("CTXHOST_INBOX_RETENTION", "2s")
        .env("CTXHOST_PRUNE_INTERVAL", "200ms")
}

async fn storage(api: &Api) -> Value {
    api.get("/admin/storage").await.expect(200)
}

fn inbox_entries(report: &Value) -> u64 {
    report["inbox"]
        .as_object()
        .map(|m| m.values().map(|v| v["entries"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

/// Place `n` orders of one unit each for `customer` and wait until each is settled.
async fn settle_orders(orders: &Api, view: &Api, car: u64, n: usize, customer: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(id(&orders.place_order(car, 1, customer).await, "id"));
    }
    for order in &ids {
        settled(orders, view, customer, *order, "RENTED", "APPROVED").await;
    }
    ids
}

#[tokio::test]
async fn the_embedded_log_and_inboxes_drain_and_a_redelivery_past_them_is_refused() {
    let host = Host::start(pruning(HostOptions::new()));
    let report = storage(&host).await;
    assert_eq!(report["retention"]["event"], "0s", "{report}");
    assert_eq!(report["retention"]["inbox"], "2s", "{report}");
    for key in [
        "eventLog",
        "inbox",
        "deadLetters",
        "contexts",
        "file",
        "disk",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }

    let car = host.create_car("Retained", 100).await;
    settle_orders(&host, &host, car, 12, "rita").await;

    // Every consumer has every event: the log empties, and the inboxes once their entries
    // are two seconds old; the business state stays.
    let drained = eventually(SETTLE, || async {
        let r = storage(&host).await;
        ensure_that!(r["eventLog"]["entries"] == 0, "event log not drained: {r}");
        ensure_that!(inbox_entries(&r) == 0, "inboxes not drained: {r}");
        Ok(r)
    })
    .await;
    let head = drained["eventLog"]["headSeq"].as_u64().unwrap_or(0);
    assert!(
        head >= 36,
        "12 orders publish at least 36 events: {drained}"
    );
    assert!(drained["eventLog"]["oldestSeq"].is_null(), "{drained}");
    assert!(
        drained["pruned"]["events"].as_u64().unwrap_or(0) >= head,
        "{drained}"
    );
    assert!(
        drained["pruned"]["inbox"].as_u64().unwrap_or(0) > 0,
        "{drained}"
    );
    let orders_table = &drained["contexts"]["order"];
    assert!(
        orders_table["entries"].as_u64().unwrap_or(0) >= 12,
        "{drained}"
    );
    assert!(orders_table["bytes"].as_u64().unwrap_or(0) > 0, "{drained}");
    assert!(
        drained["file"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{drained}"
    );
    // The page cache holds what was just written, within db_cache_mb.
    let cached = drained["file"]["cacheBytes"].as_u64().unwrap_or(0);
    let limit = drained["retention"]["dbCacheMb"].as_u64().unwrap_or(0) * 1024 * 1024;
    assert!(cached > 0 && cached <= limit, "{drained}");
    assert!(
        drained["disk"]["freeBytes"].as_u64().unwrap_or(0) > 0,
        "{drained}"
    );
    assert_eq!(host.orders().await.len(), 12);

    // The same figures for Prometheus.
    let metrics = host.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    for family in [
        "ctxhost_storage_event_log_entries 0",
        "ctxhost_storage_inbox_entries{context=\"view\"} 0",
        "ctxhost_storage_context_entries{context=\"order\"}",
        "ctxhost_storage_file_bytes",
        "ctxhost_storage_cache_bytes",
        "ctxhost_storage_pruned_total{kind=\"events\"}",
    ] {
        assert!(metrics.body.contains(family), "no {family} in /metrics");
    }

    // The pruned events cannot be sent again, and with their inbox entries gone they could
    // be applied twice: refused, saying from where a redelivery can start.
    let refused = host
        .post_json(
            "/admin/subscriptions/view/redeliver",
            &json!({"fromSeq": 0}),
        )
        .await
        .expect_problem(409);
    let why = refused["detail"].as_str().unwrap_or_default();
    assert!(why.contains("removed by retention"), "{refused}");
    assert!(why.contains(&format!("start from is {head}")), "{refused}");
    // An unknown context is still answered as unknown.
    host.post_json(
        "/admin/subscriptions/nope/redeliver",
        &json!({"fromSeq": 0}),
    )
    .await
    .expect_problem(404);
    // From the head on there is nothing to apply twice.
    host.post_json(
        "/admin/subscriptions/view/redeliver",
        &json!({"fromSeq": head}),
    )
    .await
    .expect(200);

    // And the host keeps working on a pruned log: a new order settles.
    settle_orders(&host, &host, car, 1, "rita-after").await;
    let car_now = host.car(car).await;
    assert_eq!(car_now["available"], json!(100 - 13), "{car_now}");
}

#[tokio::test]
async fn a_redelivery_of_events_older_than_the_inbox_retention_is_refused() {
    let host = Host::start(
        HostOptions::new()
            .env("CTXHOST_EVENT_RETENTION", "1h")
            .env("CTXHOST_INBOX_RETENTION", "1s")
            .env("CTXHOST_PRUNE_INTERVAL", "200ms"),
    );
    let car = host.create_car("Young", 10).await;
    settle_orders(&host, &host, car, 2, "ines").await;
    // The events stay (an hour), their inbox entries go after a second.
    let report = eventually(SETTLE, || async {
        let r = storage(&host).await;
        ensure_that!(inbox_entries(&r) == 0, "inboxes not drained: {r}");
        Ok(r)
    })
    .await;
    assert!(
        report["eventLog"]["entries"].as_u64().unwrap_or(0) >= 6,
        "{report}"
    );
    let refused = host
        .post_json("/admin/subscriptions/car/redeliver", &json!({"fromSeq": 0}))
        .await
        .expect_problem(409);
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("could apply it twice"),
        "{refused}"
    );
    // Nothing moved: the stock is what the two orders took.
    let car_now = host.car(car).await;
    assert_eq!(car_now["available"], json!(8), "{car_now}");
}

#[tokio::test]
async fn a_context_that_is_not_running_holds_the_embedded_log_until_it_catches_up() {
    let data = TestDir::new();
    let dir = data.path().join("data");
    let mut all = Host::start(pruning(HostOptions::new().data_dir(&dir)));
    let car = all.create_car("Held", 100).await;
    settle_orders(&all, &all, car, 2, "hank").await;
    let before = eventually(SETTLE, || async {
        let r = storage(&all).await;
        ensure_that!(r["eventLog"]["entries"] == 0, "not drained: {r}");
        Ok(r)
    })
    .await;
    let held_at = before["eventLog"]["headSeq"].as_u64().unwrap_or(0);
    all.stop();

    // The view is down: orders settle without it, and the log keeps every event since
    // the view's cursor, however long retention has been waiting.
    let mut without_view = Host::start(
        pruning(HostOptions::new().data_dir(&dir)).contexts(&["order", "payment", "car"]),
    );
    let mut orders = Vec::new();
    for _ in 0..8 {
        orders.push(id(&without_view.place_order(car, 1, "hank").await, "id"));
    }
    eventually(SETTLE, || async {
        for o in &orders {
            let order = without_view.order(*o).await;
            ensure_that!(order["status"] == "RENTED", "not settled: {order}");
        }
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = storage(&without_view).await;
    assert_eq!(
        held["eventLog"]["consumed"]["heldBy"], "view",
        "the view holds the log: {held}"
    );
    assert_eq!(
        held["eventLog"]["oldestSeq"],
        json!(held_at + 1),
        "the first event the view has not applied is kept: {held}"
    );
    assert!(
        held["eventLog"]["entries"].as_u64().unwrap_or(0) >= 24,
        "8 orders' events are kept: {held}"
    );
    without_view.stop();

    // The view comes back, applies everything it missed, and then the log drains.
    let back = Host::start(pruning(HostOptions::new().data_dir(&dir)));
    assert_view_matches_orders(&back, &back, SETTLE).await;
    for o in &orders {
        settled(&back, &back, "hank", *o, "RENTED", "APPROVED").await;
    }
    eventually(SETTLE, || async {
        let r = storage(&back).await;
        ensure_that!(r["eventLog"]["entries"] == 0, "not drained: {r}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_rabbitmq_the_log_drains_while_a_consumer_is_down_and_it_catches_up_from_its_queue() {
    let ns = Namespace::new();
    let a = Host::start(pruning(
        HostOptions::new()
            .contexts(&["order", "payment"])
            .amqp(ns.name()),
    ));
    let mut b = Host::start(pruning(
        HostOptions::new()
            .contexts(&["car", "view"])
            .amqp(ns.name()),
    ));
    let car = b.create_car("Brokered", 50).await;
    eventually(SETTLE, || async {
        match b.availability(car).await {
            Some((50, _)) => Ok(()),
            other => Err(format!("the view does not know the car yet: {other:?}")),
        }
    })
    .await;

    // The car side is down; orders keep coming, and the order side's log drains all the
    // same: the broker holds the events in the car side's queues.
    b.stop();
    let mut orders = Vec::new();
    for _ in 0..10 {
        orders.push(id(&a.place_order(car, 1, "rabbit").await, "id"));
    }
    let drained = eventually(SETTLE, || async {
        let r = storage(&a).await;
        ensure_that!(
            r["eventLog"]["headSeq"].as_u64().unwrap_or(0) >= 10,
            "orders and payments not published yet: {r}"
        );
        ensure_that!(r["eventLog"]["entries"] == 0, "not drained: {r}");
        Ok(r)
    })
    .await;
    assert_eq!(
        drained["eventLog"]["consumed"]["heldBy"], "the broker relay",
        "{drained}"
    );

    // The car side comes back and applies every event from its queue, once.
    b.start_again();
    for o in &orders {
        settled(&a, &b, "rabbit", *o, "RENTED", "APPROVED").await;
    }
    assert_view_matches_orders(&a, &b, SETTLE).await;
    let car_now = b.car(car).await;
    assert_eq!(car_now["available"], json!(40), "{car_now}");
    eventually(SETTLE, || async {
        for api in [&a, &b] {
            let r = storage(api).await;
            ensure_that!(r["eventLog"]["entries"] == 0, "not drained: {r}");
            ensure_that!(inbox_entries(&r) == 0, "inboxes not drained: {r}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn dead_letters_are_kept_for_their_retention_and_then_removed() {
    let host = Host::start(
        HostOptions::new()
            .with_chaos()
            .env("CTXHOST_DEAD_LETTER_RETENTION", "3s")
            .env("CTXHOST_PRUNE_INTERVAL", "200ms"),
    );
    host.post_json(
        "/chaos/publish",
        &json!({"type": "ChaosPoison", "correlationId": "kept", "data": {"n": 1}}),
    )
    .await
    .expect(200);
    // Dead-lettered after its retries, and still there a moment later.
    eventually(SETTLE, || async {
        let r = storage(&host).await;
        ensure_that!(r["deadLetters"]["entries"] == 1, "no dead letter yet: {r}");
        Ok(())
    })
    .await;
    let kept = storage(&host).await;
    assert_eq!(kept["retention"]["deadLetter"], "3s", "{kept}");
    assert_eq!(kept["pruned"]["deadLetters"], 0, "{kept}");
    // Past its retention the pruner removes it.
    let gone = eventually(SETTLE, || async {
        let r = storage(&host).await;
        ensure_that!(r["deadLetters"]["entries"] == 0, "still kept: {r}");
        Ok(r)
    })
    .await;
    assert_eq!(gone["pruned"]["deadLetters"], 1, "{gone}");
    let page = host
        .get("/admin/dead-letters?context=chaos")
        .await
        .expect(200);
    assert_eq!(page["items"], json!([]), "{page}");
}
