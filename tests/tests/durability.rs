//! What must survive: state across a graceful restart, redelivered events applied once, and
//! a kill -9 in the middle of a load of orders losing nothing and applying nothing twice.

use std::time::{Duration, Instant};

use ctxhost_tests::{
    Api, Host, HostOptions, OrderLoad, assert_rental_consistent, availability_is, id,
    rental_snapshot, settled, sorted, text,
};
use serde_json::json;

async fn cancel(api: &Api, order_id: u64) {
    let answer = api
        .post_json(&format!("/orders/{order_id}/cancel"), &json!({}))
        .await
        .expect(200);
    assert_eq!(text(&answer, "status"), "CANCELLED", "cancel: {answer}");
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_data_dir() {
    let mut host = Host::start(HostOptions::new());
    let avante = host.create_car("Avante", 4).await;
    let morning = host.create_car("Morning", 2).await;

    let rented = id(&host.place_order(avante, 1, "alice").await, "id");
    let to_cancel = id(&host.place_order(avante, 2, "alice").await, "id");
    let rejected = id(&host.place_order(morning, 3, "bob").await, "id");
    settled(&host, &host, "alice", rented, "RENTED", "APPROVED").await;
    settled(&host, &host, "alice", to_cancel, "RENTED", "APPROVED").await;
    cancel(&host, to_cancel).await;
    settled(&host, &host, "alice", to_cancel, "CANCELLED", "CANCELLED").await;
    settled(&host, &host, "bob", rejected, "REJECTED", "CANCELLED").await;
    availability_is(&host, avante, None, 3).await;
    availability_is(&host, morning, None, 2).await;

    let before = rental_snapshot(&host, &["alice", "bob"]).await;
    assert_eq!(
        before["orders"].as_array().map(Vec::len),
        Some(3),
        "{before}"
    );
    assert_eq!(
        before["payments"].as_array().map(Vec::len),
        Some(3),
        "{before}"
    );

    host.restart();

    let after = rental_snapshot(&host, &["alice", "bob"]).await;
    assert_eq!(after, before, "state changed across a restart");

    // The restarted host keeps working: new ids are fresh and the saga still runs.
    let order = host.place_order(avante, 1, "alice").await;
    let max_order = [rented, to_cancel, rejected].into_iter().max().unwrap();
    assert!(
        id(&order, "id") > max_order,
        "order id reused after restart: {order}"
    );
    let max_payment = before["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| id(p, "id"))
        .max()
        .unwrap();
    assert!(
        id(&order, "paymentId") > max_payment,
        "payment id reused after restart: {order}"
    );
    settled(
        &host,
        &host,
        "alice",
        id(&order, "id"),
        "RENTED",
        "APPROVED",
    )
    .await;
    availability_is(&host, avante, None, 2).await;
}

#[tokio::test]
async fn redelivered_events_after_a_restart_are_applied_once() {
    let mut host = Host::start(HostOptions::new());
    let car = host.create_car("Avante", 5).await;
    let kept = id(&host.place_order(car, 2, "alice").await, "id");
    let returned = id(&host.place_order(car, 1, "alice").await, "id");
    settled(&host, &host, "alice", kept, "RENTED", "APPROVED").await;
    settled(&host, &host, "alice", returned, "RENTED", "APPROVED").await;
    cancel(&host, returned).await;
    settled(&host, &host, "alice", returned, "CANCELLED", "CANCELLED").await;
    availability_is(&host, car, None, 3).await;
    let before = rental_snapshot(&host, &["alice"]).await;

    host.restart();

    for context in ["view", "car"] {
        let answer = host
            .post_json(
                &format!("/admin/subscriptions/{context}/redeliver"),
                &json!({"fromSeq": 0}),
            )
            .await
            .expect(200);
        assert_eq!(
            answer,
            json!({"context": context, "fromSeq": 0}),
            "redeliver answer"
        );
    }
    host.post_json(
        "/admin/subscriptions/nope/redeliver",
        &json!({"fromSeq": 0}),
    )
    .await
    .expect_problem(404);
    // A position past the end of the log would park the cursor in the future.
    let problem = host
        .post_json(
            "/admin/subscriptions/view/redeliver",
            &json!({"fromSeq": 1_000_000_000u64}),
        )
        .await
        .expect_problem(422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("beyond the end of the event log"),
        "{problem}"
    );

    // A marker published after the rewind is delivered after every redelivered event, so
    // once the view and the car have handled it they have seen the whole log again.
    let marker_car = host.create_car("Marker", 1).await;
    let marker = id(&host.place_order(marker_car, 1, "marker").await, "id");
    settled(&host, &host, "marker", marker, "RENTED", "APPROVED").await;
    availability_is(&host, marker_car, None, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Nothing was applied twice: stock was not taken or returned again, rows not duplicated.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let car_now = host.car(car).await;
        assert_eq!(
            car_now["available"],
            json!(3),
            "car after redelivery: {car_now}"
        );
        assert_eq!(
            car_now["stock"],
            json!(5),
            "car after redelivery: {car_now}"
        );
        let (view, row) = host.availability(car).await.expect("car in the view");
        assert_eq!(view, 3, "view availability after redelivery: {row}");
        let rows = sorted(host.customer_orders("alice").await);
        assert_eq!(
            json!(rows),
            before["customers"]["alice"],
            "alice's view rows changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = rental_snapshot(&host, &["alice"]).await;
    for part in ["orders", "payments"] {
        let mut now = after[part].as_array().unwrap().clone();
        now.retain(|v| id(v, if part == "orders" { "id" } else { "orderId" }) != marker);
        assert_eq!(json!(now), before[part], "{part} changed by the redelivery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_no_order_or_payment_and_applies_nothing_twice() {
    const CLIENTS: usize = 16;
    const MAX_ORDERS: usize = 2000;
    const STOCK: u64 = 300;
    let mut host = Host::start(HostOptions::new());
    let car = host.create_car("Avante", STOCK).await;

    let load = OrderLoad::start(&host, car, CLIENTS, MAX_ORDERS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.kill();
    let attempted = load.sent();
    let seen = load.finish(Duration::from_secs(40)).await;
    eprintln!(
        "kill -9 after {} orders answered 201 ({attempted} attempted)",
        seen.created.len(),
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

    // Every order has its payment and every payment its order (checked right after the
    // restart, before the saga has settled, and again once it has), and the saga, the car
    // and the view settle consistently.
    let api = host.api();
    assert_rental_consistent(
        &api,
        &api,
        car,
        STOCK,
        &seen.created,
        Duration::from_secs(90),
    )
    .await;
}
