//! The functional requirements end to end: register, order (with its synchronous payment),
//! rent, cancel, the rejection saga, payment's decline, and orders racing for the last units.

use ctxhost_tests::{
    Host, HostOptions, SETTLE, ensure_that, eventually, id, text, view_row, view_row_for,
};
use serde_json::{Value, json};

#[tokio::test]
async fn full_story_order_rents_cancel_refunds_and_restores_availability() {
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Avante", 5).await;
    let listed = host.cars().await;
    assert_eq!(listed.len(), 1, "GET /cars: {listed:?}");
    assert_eq!(id(&listed[0], "id"), car);

    // The view learns about the car from CarRegistered.
    eventually(SETTLE, || async {
        let (available, row) = host
            .availability(car)
            .await
            .ok_or("car not in the view yet")?;
        ensure_that!(available == 5, "view availability {available}, want 5");
        ensure_that!(row["name"] == json!("Avante"), "view name: {row}");
        Ok(())
    })
    .await;

    let order = host.place_order(car, 2, "alice").await;
    let order_id = id(&order, "id");
    let payment_id = id(&order, "paymentId");

    // The payment was made synchronously: it exists as soon as the order does.
    let payment = host.payment(payment_id).await;
    assert_eq!(id(&payment, "id"), payment_id);
    assert_eq!(id(&payment, "orderId"), order_id, "payment: {payment}");
    assert_eq!(id(&payment, "carId"), car, "payment: {payment}");
    assert_eq!(id(&payment, "qty"), 2, "payment: {payment}");
    assert_eq!(text(&payment, "status"), "APPROVED", "payment: {payment}");

    // PaymentApproved -> CarRented -> order RENTED, two units taken, the view follows.
    eventually(SETTLE, || async {
        let order = host.order(order_id).await;
        ensure_that!(text(&order, "status") == "RENTED", "order: {order}");
        ensure_that!(id(&order, "paymentId") == payment_id, "order: {order}");
        let car_now = host.car(car).await;
        ensure_that!(car_now["available"] == json!(3), "car: {car_now}");
        ensure_that!(car_now["stock"] == json!(5), "car: {car_now}");
        let (available, _) = host.availability(car).await.ok_or("car left the view")?;
        ensure_that!(available == 3, "view availability {available}, want 3");
        let rows = host.customer_orders("alice").await;
        ensure_that!(rows.len() == 1, "alice's orders: {rows:?}");
        let row = view_row_for(&rows, order_id).ok_or(format!("no view row: {rows:?}"))?;
        ensure_that!(
            text(row, view_row::ORDER_STATUS) == "RENTED",
            "view row: {row}"
        );
        ensure_that!(
            text(row, view_row::PAYMENT_STATUS) == "APPROVED",
            "view row: {row}"
        );
        ensure_that!(
            row[view_row::PAYMENT_ID] == json!(payment_id),
            "view row: {row}"
        );
        Ok(())
    })
    .await;

    let cancelled = host
        .post_json(&format!("/orders/{order_id}/cancel"), &json!({}))
        .await
        .expect(200);
    assert_eq!(id(&cancelled, "id"), order_id, "cancel: {cancelled}");
    assert_eq!(
        text(&cancelled, "status"),
        "CANCELLED",
        "cancel: {cancelled}"
    );
    let order_now = host.order(order_id).await;
    assert_eq!(
        text(&order_now, "status"),
        "CANCELLED",
        "order after cancel: {order_now}"
    );

    // OrderCancelled -> PaymentCancelled -> CarReturned; the view follows.
    eventually(SETTLE, || async {
        let payment = host.payment(payment_id).await;
        ensure_that!(
            text(&payment, "status") == "CANCELLED",
            "payment: {payment}"
        );
        let car_now = host.car(car).await;
        ensure_that!(car_now["available"] == json!(5), "car: {car_now}");
        let (available, _) = host.availability(car).await.ok_or("car left the view")?;
        ensure_that!(available == 5, "view availability {available}, want 5");
        let rows = host.customer_orders("alice").await;
        ensure_that!(rows.len() == 1, "alice's orders: {rows:?}");
        let row = view_row_for(&rows, order_id).ok_or(format!("no view row: {rows:?}"))?;
        ensure_that!(
            text(row, view_row::ORDER_STATUS) == "CANCELLED",
            "view row: {row}"
        );
        ensure_that!(
            text(row, view_row::PAYMENT_STATUS) == "CANCELLED",
            "view row: {row}"
        );
        Ok(())
    })
    .await;

    // Cancelling twice is a conflict, and changes nothing.
    host.post_json(&format!("/orders/{order_id}/cancel"), &json!({}))
        .await
        .expect_problem(409);
    let car_now = host.car(car).await;
    assert_eq!(
        car_now["available"],
        json!(5),
        "car after a second cancel: {car_now}"
    );
    assert_eq!(host.payments().await.len(), 1);
    assert_eq!(host.orders().await.len(), 1);
}

#[tokio::test]
async fn rejection_saga_when_stock_runs_out_refunds_and_rejects() {
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Morning", 1).await;

    // Payment approves (it does not know the stock); the car context then refuses.
    let order = host.place_order(car, 2, "bob").await;
    let order_id = id(&order, "id");
    let payment_id = id(&order, "paymentId");

    eventually(SETTLE, || async {
        let order = host.order(order_id).await;
        ensure_that!(text(&order, "status") == "REJECTED", "order: {order}");
        let payment = host.payment(payment_id).await;
        ensure_that!(
            text(&payment, "status") == "CANCELLED",
            "payment: {payment}"
        );
        let rows = host.customer_orders("bob").await;
        let row = view_row_for(&rows, order_id).ok_or(format!("no view row: {rows:?}"))?;
        ensure_that!(
            text(row, view_row::ORDER_STATUS) == "REJECTED",
            "view row: {row}"
        );
        ensure_that!(
            text(row, view_row::PAYMENT_STATUS) == "CANCELLED",
            "view row: {row}"
        );
        let (available, _) = host.availability(car).await.ok_or("car not in the view")?;
        ensure_that!(available == 1, "view availability {available}, want 1");
        Ok(())
    })
    .await;

    let car_now = host.car(car).await;
    assert_eq!(car_now["available"], json!(1), "car: {car_now}");
    assert_eq!(car_now["stock"], json!(1), "car: {car_now}");

    // A rejected order cannot be cancelled.
    host.post_json(&format!("/orders/{order_id}/cancel"), &json!({}))
        .await
        .expect_problem(409);

    // The one unit is still there for an order that fits.
    let fits = host.place_order(car, 1, "bob").await;
    let fits_id = id(&fits, "id");
    eventually(SETTLE, || async {
        let order = host.order(fits_id).await;
        ensure_that!(text(&order, "status") == "RENTED", "order: {order}");
        let car_now = host.car(car).await;
        ensure_that!(car_now["available"] == json!(0), "car: {car_now}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn payment_declines_qty_over_default_max_and_nothing_is_stored() {
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Sonata", 50).await;
    let orders_before = host.get_ok("/orders").await;
    let payments_before = host.get_ok("/payments").await;

    let resp = host
        .post_json(
            "/orders",
            &json!({"carId": car, "qty": 11, "customerId": "carol"}),
        )
        .await;
    resp.expect_problem(422);

    assert_eq!(
        host.get_ok("/orders").await,
        orders_before,
        "an order was stored"
    );
    assert_eq!(
        host.get_ok("/payments").await,
        payments_before,
        "a payment was stored"
    );

    // The default maximum is 10, inclusive.
    let order = host.place_order(car, 10, "carol").await;
    assert_eq!(host.orders().await.len(), 1);
    let payments = host.payments().await;
    assert_eq!(payments.len(), 1, "payments: {payments:?}");
    assert_eq!(id(&payments[0], "orderId"), id(&order, "id"));
}

#[tokio::test]
async fn payment_max_qty_per_order_comes_from_its_component_config() {
    let host = Host::start(HostOptions::new().plugin_config("payment", "max-qty-per-order", "3"));
    let car = host.create_car("Tucson", 50).await;

    host.post_json(
        "/orders",
        &json!({"carId": car, "qty": 4, "customerId": "dave"}),
    )
    .await
    .expect_problem(422);
    assert!(host.orders().await.is_empty(), "an order was stored");
    assert!(host.payments().await.is_empty(), "a payment was stored");

    host.place_order(car, 3, "dave").await;
    assert_eq!(host.orders().await.len(), 1);
    assert_eq!(host.payments().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_orders_for_ten_units_rent_exactly_ten() {
    const UNITS: u64 = 10;
    const ORDERS: usize = 50;
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Ioniq", UNITS).await;

    let api = host.api();
    let placed: Vec<Value> = futures::future::join_all((0..ORDERS).map(|_| {
        let api = api.clone();
        async move { api.place_order(car, 1, "crowd").await }
    }))
    .await;
    let mut order_ids: Vec<u64> = placed.iter().map(|o| id(o, "id")).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    assert_eq!(order_ids.len(), ORDERS, "order ids are not distinct");

    eventually(SETTLE, || async {
        // Availability must never go below zero, at any poll.
        let car_now = host.car(car).await;
        let available = car_now["available"]
            .as_i64()
            .ok_or(format!("car: {car_now}"))?;
        assert!(available >= 0, "car availability went negative: {car_now}");
        if let Some((view_available, row)) = host.availability(car).await {
            assert!(
                view_available >= 0,
                "view availability went negative: {row}"
            );
        }

        let orders = host.orders().await;
        ensure_that!(orders.len() == ORDERS, "{} orders", orders.len());
        let rented = orders
            .iter()
            .filter(|o| text(o, "status") == "RENTED")
            .count();
        let rejected = orders
            .iter()
            .filter(|o| text(o, "status") == "REJECTED")
            .count();
        ensure_that!(
            rented + rejected == ORDERS,
            "not settled: {rented} rented, {rejected} rejected"
        );
        assert_eq!(rented, UNITS as usize, "rented orders");
        assert_eq!(rejected, ORDERS - UNITS as usize, "rejected orders");

        let payments = host.payments().await;
        for order in &orders {
            let payment_id = id(order, "paymentId");
            let payment = payments
                .iter()
                .find(|p| id(p, "id") == payment_id)
                .unwrap_or_else(|| panic!("no payment for {order}"));
            assert_eq!(id(payment, "orderId"), id(order, "id"), "payment {payment}");
            let want = if text(order, "status") == "RENTED" {
                "APPROVED"
            } else {
                "CANCELLED"
            };
            ensure_that!(
                text(payment, "status") == want,
                "payment {payment} of {order}"
            );
        }
        ensure_that!(available == 0, "car availability {available}, want 0");
        let (view_available, _) = host.availability(car).await.ok_or("car not in the view")?;
        ensure_that!(
            view_available == 0,
            "view availability {view_available}, want 0"
        );

        let rows = host.customer_orders("crowd").await;
        ensure_that!(rows.len() == ORDERS, "{} view rows", rows.len());
        let view_rented = rows
            .iter()
            .filter(|r| text(r, view_row::ORDER_STATUS) == "RENTED")
            .count();
        let view_rejected = rows
            .iter()
            .filter(|r| text(r, view_row::ORDER_STATUS) == "REJECTED")
            .count();
        ensure_that!(
            view_rented == UNITS as usize && view_rejected == ORDERS - UNITS as usize,
            "view: {view_rented} rented, {view_rejected} rejected"
        );
        Ok(())
    })
    .await;

    let car_now = host.car(car).await;
    assert_eq!(car_now["available"], json!(0), "car: {car_now}");
    assert_eq!(car_now["stock"], json!(UNITS), "car: {car_now}");
}
