//! The RabbitMQ event transport end to end: the rental saga over the broker, two processes
//! joined only by the broker (one catching up from its durable queues after a stop), a kill -9
//! under load, a broker restart under load, and a poison event dead-lettered into the
//! broker's dead-letter queue.
//!
//! These tests need a RabbitMQ broker (`CTXHOST_TEST_AMQP_URL`, default the local one) and,
//! for the broker restart, `rabbitmqctl` for that broker's node. They run one at a time
//! (stopping the broker would disturb the others), each in a namespace of its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ctxhost_tests::broker::{self, BrokerOutage, Namespace};
use ctxhost_tests::{
    Api, Created, Host, HostOptions, OrderLoad, assert_rental_consistent,
    assert_some_rented_some_rejected, assert_view_matches_orders, availability_is, ensure_that,
    eventually, id, settled, text,
};
use serde_json::{Value, json};

/// Held for the whole of each test: they run one at a time.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the saga and the view get to settle over the broker.
const SETTLE: Duration = Duration::from_secs(60);
/// How long the state gets to converge after an outage (a stopped process, a kill, the
/// broker down).
const CONVERGE: Duration = Duration::from_secs(120);
/// How long a host gets to (re)connect to the broker.
const CONNECT: Duration = Duration::from_secs(90);

/// `GET /readyz` as (status, body).
async fn readyz(api: &Api) -> (u16, Value) {
    let resp = api.get("/readyz").await;
    let body = resp.json();
    (resp.status, body)
}

/// Waits until `/readyz` says ready over a connected AMQP transport; the body.
async fn wait_connected(api: &Api, timeout: Duration) -> Value {
    eventually(timeout, || async {
        let (status, body) = readyz(api).await;
        let transport = &body["transport"];
        ensure_that!(
            transport["transport"] == "amqp",
            "/readyz: not the amqp transport: {body}"
        );
        ensure_that!(
            status == 200
                && body["status"] == "ready"
                && transport["state"] == "connected"
                && transport["ready"] == true,
            "/readyz {status}: {body}"
        );
        Ok(body)
    })
    .await
}

/// Waits until the host has handed every committed event to the broker.
async fn outbox_drained(api: &Api) {
    eventually(SETTLE, || async {
        let (_, body) = readyz(api).await;
        ensure_that!(
            body["transport"]["outboxPending"] == 0,
            "events still in the outbox: {body}"
        );
        Ok(())
    })
    .await;
}

/// The rental story across `orders` (order, payment) and `cars` (car, view), which may be
/// one host or two: a car of 3; alice rents 2 (RENTED); bob wants 2 of the 1 left (REJECTED,
/// refunded); alice rents the last one and cancels (CANCELLED, refunded, returned). Returns
/// the car, left with 1 of 3 available.
async fn rental_story(orders: &Api, cars: &Api, tag: &str) -> u64 {
    let alice = format!("alice-{tag}");
    let bob = format!("bob-{tag}");
    let car = cars.create_car(&format!("Story {tag}"), 3).await;
    eventually(SETTLE, || async {
        let (available, row) = cars
            .availability(car)
            .await
            .ok_or("car not in the view yet")?;
        ensure_that!(available == 3, "view availability {available}, want 3");
        ensure_that!(
            row["name"] == json!(format!("Story {tag}")),
            "view name: {row}"
        );
        Ok(())
    })
    .await;

    let rented = orders.place_order(car, 2, &alice).await;
    let rented_id = id(&rented, "id");
    let payment = orders.payment(id(&rented, "paymentId")).await;
    assert_eq!(text(&payment, "status"), "APPROVED", "payment: {payment}");
    assert_eq!(id(&payment, "orderId"), rented_id, "payment: {payment}");
    settled(orders, cars, &alice, rented_id, "RENTED", "APPROVED").await;
    availability_is(cars, car, Some(3), 1).await;

    let rejected = id(&orders.place_order(car, 2, &bob).await, "id");
    settled(orders, cars, &bob, rejected, "REJECTED", "CANCELLED").await;
    availability_is(cars, car, Some(3), 1).await;
    orders
        .post_json(&format!("/orders/{rejected}/cancel"), &json!({}))
        .await
        .expect_problem(409);

    let cancelled = id(&orders.place_order(car, 1, &alice).await, "id");
    settled(orders, cars, &alice, cancelled, "RENTED", "APPROVED").await;
    availability_is(cars, car, Some(3), 0).await;
    let answer = orders
        .post_json(&format!("/orders/{cancelled}/cancel"), &json!({}))
        .await
        .expect(200);
    assert_eq!(text(&answer, "status"), "CANCELLED", "cancel: {answer}");
    settled(orders, cars, &alice, cancelled, "CANCELLED", "CANCELLED").await;
    availability_is(cars, car, Some(3), 1).await;
    orders
        .post_json(&format!("/orders/{cancelled}/cancel"), &json!({}))
        .await
        .expect_problem(409);

    let rows = cars.customer_orders(&alice).await;
    assert_eq!(rows.len(), 2, "alice's view rows: {rows:?}");
    car
}

/// Runs a blocking broker command off the runtime's threads, passing its panic on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_the_rental_story_runs_over_rabbitmq() {
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let host = Host::start(HostOptions::new().amqp(ns.name()));
    let ready = wait_connected(&host, CONNECT).await;
    assert!(
        ready["transport"]["outboxPending"].is_u64(),
        "/readyz: outboxPending: {ready}"
    );

    let car = rental_story(&host, &host, "one").await;
    assert_eq!(host.orders().await.len(), 3);
    assert_eq!(host.payments().await.len(), 3);

    // The events went through the namespace's queues, which each context consumes and
    // which are drained once everything has settled.
    eventually(SETTLE, || async {
        for context in ["order", "payment", "car", "view"] {
            let (ready, consumers) = broker::queue_counts(&ns, context).await?;
            ensure_that!(consumers >= 1, "queue {}: no consumer", ns.queue(context));
            ensure_that!(
                ready == 0,
                "queue {}: {ready} messages waiting",
                ns.queue(context)
            );
        }
        Ok(())
    })
    .await;

    let body = wait_connected(&host, CONNECT).await;
    outbox_drained(&host).await;
    assert_eq!(body["transport"]["transport"], "amqp", "/readyz: {body}");
    availability_is(&host, car, Some(3), 1).await;

    // Redelivery over the broker: every event is sent again to the queues of `car` and
    // `view`; their inboxes make it a no-op.
    let rows_before = |customer: &'static str| {
        let api = host.api();
        async move {
            let mut rows = api.customer_orders(customer).await;
            rows.sort_by_key(|r| r.to_string());
            rows
        }
    };
    let alice_before = rows_before("alice-one").await;
    let bob_before = rows_before("bob-one").await;
    for (context, at_least) in [("car", 3), ("view", 8)] {
        let answer = host
            .post_json(
                &format!("/admin/subscriptions/{context}/redeliver"),
                &json!({"fromSeq": 0}),
            )
            .await
            .expect(200);
        assert_eq!(answer["context"], context, "redeliver: {answer}");
        let republished = answer["republished"].as_u64().unwrap_or(0);
        assert!(
            republished >= at_least,
            "redeliver to {context} re-sent {republished} events: {answer}"
        );
    }
    host.post_json(
        "/admin/subscriptions/nope/redeliver",
        &json!({"fromSeq": 0}),
    )
    .await
    .expect_problem(404);
    // A marker published after the redelivery is consumed after it (one queue, in order).
    let marker_car = host.create_car("Marker", 1).await;
    let marker = id(&host.place_order(marker_car, 1, "marker").await, "id");
    settled(&host, &host, "marker", marker, "RENTED", "APPROVED").await;
    availability_is(&host, marker_car, Some(1), 0).await;
    availability_is(&host, car, Some(3), 1).await;
    assert_eq!(
        rows_before("alice-one").await,
        alice_before,
        "alice's view rows changed"
    );
    assert_eq!(
        rows_before("bob-one").await,
        bob_before,
        "bob's view rows changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_two_processes_joined_only_by_the_broker_catch_up_after_car_stops() {
    const STOCK: u64 = 150;
    const ORDERS: usize = 200;
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let a = Host::start(
        HostOptions::new()
            .contexts(&["order", "payment"])
            .amqp(ns.name()),
    );
    let mut b = Host::start(
        HostOptions::new()
            .contexts(&["car", "view"])
            .amqp(ns.name()),
    );
    assert_ne!(a.data_dir(), b.data_dir(), "the processes share a data dir");
    wait_connected(&a, CONNECT).await;
    wait_connected(&b, CONNECT).await;

    // Each process serves only its own contexts.
    a.get("/cars").await.expect_problem(404);
    b.get("/orders").await.expect_problem(404);

    // The whole story, across the two processes.
    let story_car = rental_story(&a, &b, "two").await;

    let car = b.create_car("Fleet", STOCK).await;
    eventually(SETTLE, || async {
        match b.availability(car).await {
            Some((available, _)) if available == STOCK as i64 => Ok(()),
            other => Err(format!("the view does not know the fleet yet: {other:?}")),
        }
    })
    .await;

    // The car side goes away; the order side keeps taking orders.
    b.stop();
    let a_api = a.api();
    let load = OrderLoad::start(&a_api, car, 8, ORDERS);
    let seen = load.join(Duration::from_secs(120)).await;
    assert!(
        seen.unexpected.is_empty() && seen.transport_errors.is_empty(),
        "orders not answered 201 while the car side was down: {:?} {:?}\n{}",
        seen.unexpected,
        seen.transport_errors,
        a.log_tail(40)
    );
    assert_eq!(seen.created.len(), ORDERS, "orders answered 201");

    // Nothing can settle without the car context; the events wait in its durable queue.
    let paid = a
        .orders()
        .await
        .iter()
        .filter(|o| o["carId"] == json!(car))
        .filter(|o| text(o, "status") == "PAID")
        .count();
    assert_eq!(paid, ORDERS, "orders settled with the car side down");
    eventually(SETTLE, || async {
        let (ready, consumers) = broker::queue_counts(&ns, "car").await?;
        ensure_that!(
            consumers == 0,
            "{} still has {consumers} consumers",
            ns.queue("car")
        );
        ensure_that!(
            ready as usize >= ORDERS,
            "{} holds {ready} messages, want at least {ORDERS}",
            ns.queue("car")
        );
        let (_, body) = readyz(&a).await;
        ensure_that!(
            body["transport"]["outboxPending"] == 0,
            "the order side has not published everything: {body}"
        );
        Ok(())
    })
    .await;

    b.start_again();
    wait_connected(&b, CONNECT).await;
    let b_api = b.api();
    assert_rental_consistent(&a_api, &b_api, car, STOCK, &seen.created, CONVERGE).await;
    assert_view_matches_orders(&a_api, &b_api, CONVERGE).await;

    // The demand (about 2 units an order) is above the stock: some rented, some rejected.
    assert_some_rented_some_rejected(&a_api, car).await;
    // The story's car was not touched again by the catch-up.
    availability_is(&b_api, story_car, Some(3), 1).await;
    wait_connected(&a, CONNECT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_kill_9_mid_500_orders_loses_nothing_and_applies_nothing_twice() {
    const CLIENTS: usize = 16;
    const MAX_ORDERS: usize = 500;
    const STOCK: u64 = 300;
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let mut host = Host::start(HostOptions::new().amqp(ns.name()));
    wait_connected(&host, CONNECT).await;
    let car = host.create_car("Avante", STOCK).await;

    let load = OrderLoad::start(&host, car, CLIENTS, MAX_ORDERS);
    let answered = load.wait_answered(200, Duration::from_secs(60)).await;
    host.kill();
    let attempted = load.sent();
    let seen = load.finish(Duration::from_secs(40)).await;
    eprintln!(
        "kill -9 after {answered} orders answered 201 ({} in all, {attempted} attempted)",
        seen.created.len()
    );
    assert!(
        seen.unexpected.is_empty(),
        "answers other than 201 under load: {:?}",
        seen.unexpected
    );
    assert!(
        seen.created.len() >= CLIENTS,
        "too few orders before the kill: {}",
        seen.created.len()
    );

    host.start_again();
    wait_connected(&host, CONNECT).await;
    let api = host.api();
    assert_rental_consistent(&api, &api, car, STOCK, &seen.created, CONVERGE).await;
    assert_view_matches_orders(&api, &api, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_broker_restart_under_load_loses_nothing() {
    const STOCK: u64 = 300;
    const MAX_ORDERS: usize = 400;
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let host = Host::start(HostOptions::new().amqp(ns.name()));
    wait_connected(&host, CONNECT).await;
    let car = host.create_car("Avante", STOCK).await;

    // A paced load, so that it runs through the outage.
    let load = OrderLoad::start_paced(&host, car, 4, MAX_ORDERS, Duration::from_millis(200));
    let before = load.wait_answered(20, Duration::from_secs(30)).await;
    assert!(before >= 20, "only {before} orders before the outage");

    // Started again when dropped, should the test fail while the broker is down.
    let outage = blocking(BrokerOutage::begin).await;
    let down_at = load.answered();
    eventually(Duration::from_secs(60), || async {
        let health = host.get("/healthz").await;
        ensure_that!(
            health.status == 200,
            "/healthz {}: {}",
            health.status,
            health.body
        );
        let (status, body) = readyz(&host).await;
        let transport = &body["transport"];
        ensure_that!(
            status == 200 && body["status"] == "degraded",
            "/readyz {status} with the broker down: {body}"
        );
        ensure_that!(
            transport["transport"] == "amqp"
                && transport["state"] != "connected"
                && transport["ready"] == false,
            "/readyz transport with the broker down: {body}"
        );
        Ok(())
    })
    .await;

    // Orders are still taken; their events wait in the outbox.
    let mut created = Created::new();
    for n in 0..5u64 {
        let order = host.place_order(car, 1, &format!("outage-{n}")).await;
        created.insert(id(&order, "id"), (id(&order, "paymentId"), 1));
    }
    let (_, body) = readyz(&host).await;
    assert!(
        body["transport"]["outboxPending"].as_u64().unwrap_or(0) >= 1,
        "events published with the broker down? {body}"
    );
    if !load.is_done() {
        let during = load
            .wait_answered(down_at + 1, Duration::from_secs(30))
            .await;
        assert!(
            during > down_at,
            "the load got no 201 while the broker was down\n{}",
            host.log_tail(40)
        );
    }

    blocking(move || outage.end()).await;

    // The load goes on a little, then stops.
    let after = load.answered();
    load.wait_answered(after + 20, Duration::from_secs(30))
        .await;
    let seen = load.finish(Duration::from_secs(60)).await;
    assert!(
        seen.unexpected.is_empty() && seen.transport_errors.is_empty(),
        "orders not answered 201 around the broker restart: {:?} {:?}\n{}",
        seen.unexpected,
        seen.transport_errors,
        host.log_tail(40)
    );
    eprintln!(
        "{} orders answered 201 by the load, {before} before the outage",
        seen.created.len()
    );
    created.extend(seen.created);

    wait_connected(&host, CONNECT).await;
    let api = host.api();
    assert_rental_consistent(&api, &api, car, STOCK, &created, CONVERGE).await;
    assert_view_matches_orders(&api, &api, CONVERGE).await;
    outbox_drained(&host).await;
    wait_connected(&host, CONNECT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_a_poison_event_goes_to_the_dead_letter_queue_and_later_events_flow() {
    let _serial = LOCK.lock().await;
    let ns = Namespace::new();
    let host = Host::start(HostOptions::new().with_chaos().amqp(ns.name()));
    wait_connected(&host, CONNECT).await;

    for n in 1..=2 {
        host.post_json(
            "/chaos/publish",
            &json!({"type": "ChaosPoison", "correlationId": format!("poison-{n}"), "data": {"n": n}}),
        )
        .await
        .expect(200);
    }
    let car = host.create_car("After the poison", 4).await;
    let order = host.place_order(car, 1, "after-poison").await;

    // The host's own record of what it gave up on.
    eventually(SETTLE, || async {
        let letters = host.get_list("/admin/dead-letters").await;
        let chaos: Vec<_> = letters.iter().filter(|l| l["context"] == "chaos").collect();
        ensure_that!(chaos.len() >= 2, "{} dead letters so far", chaos.len());
        assert_eq!(chaos.len(), 2, "dead letters: {letters:?}");
        let mut seen = Vec::new();
        for letter in &chaos {
            let reason = letter["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("poisoned") && letter["attempts"] == 5,
                "unexpected dead letter {letter}"
            );
            assert_eq!(letter["event"]["type"], "ChaosPoison", "{letter}");
            seen.push(text(&letter["event"], "correlationid").to_owned());
        }
        seen.sort();
        assert_eq!(seen, ["poison-1", "poison-2"], "dead letters: {letters:?}");
        Ok(())
    })
    .await;

    // And the broker's: both messages in the dead-letter queue (taken out as they come).
    let mut messages: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let mut others = Vec::new();
    let deadline = Instant::now() + SETTLE;
    loop {
        let last = match broker::take_dead_letter_messages(&ns).await {
            Ok(got) => {
                for (kind, correlation, body) in got {
                    if correlation.starts_with("poison-") {
                        messages.insert(correlation, (kind, body));
                    } else {
                        others.push((
                            kind,
                            correlation,
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                    }
                }
                format!(
                    "{} so far: {:?}",
                    messages.len(),
                    messages.keys().collect::<Vec<_>>()
                )
            }
            Err(e) => e,
        };
        if messages.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the poisoned messages did not reach {} within {SETTLE:?}; last: {last}",
            ns.dead_letter_queue()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(others.is_empty(), "other dead letters: {others:?}");
    for n in 1..=2u64 {
        let (kind, body) = &messages[&format!("poison-{n}")];
        assert_eq!(kind, "ChaosPoison", "type of dead letter poison-{n}");
        let data: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "dead letter poison-{n}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(data, json!({"n": n}), "body of dead letter poison-{n}");
    }

    // The events after the poison still flow.
    settled(
        &host,
        &host,
        "after-poison",
        id(&order, "id"),
        "RENTED",
        "APPROVED",
    )
    .await;
    availability_is(&host, car, Some(4), 3).await;
}
