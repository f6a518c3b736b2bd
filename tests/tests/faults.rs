//! Failures confined to where they happen, with the `chaos` test component: a caller that
//! fails after a successful payment leaves no payment behind, and a trap fails only its own
//! request.

use ctxhost_tests::{Host, HostOptions, Resp, SETTLE, ensure_that, eventually, id, text};
use serde_json::json;

/// Asserts a 500 problem that names the component.
fn expect_component_failure(resp: &Resp, component: &str) {
    let problem = resp.expect_problem(500);
    let said = format!("{} {}", text(&problem, "title"), text(&problem, "detail"));
    assert!(
        said.contains(component),
        "{}: the problem does not name `{component}`: {problem}",
        resp.request
    );
}

#[tokio::test]
async fn payment_never_outlives_a_caller_that_fails_after_paying() {
    let host = Host::start(HostOptions::new().with_chaos());
    let car = host.create_car("Avante", 5).await;
    let payments_before = host.get_ok("/payments").await;

    // `chaos` calls payment's `authorize` (which succeeds), then traps.
    let resp = host
        .post_json(
            "/chaos/pay-then-fail",
            &json!({"orderId": 999001, "carId": car, "qty": 1, "mode": "trap"}),
        )
        .await;
    expect_component_failure(&resp, "chaos");

    // Same, but it answers with an error instead of trapping.
    let resp = host
        .post_json(
            "/chaos/pay-then-fail",
            &json!({"orderId": 999002, "carId": car, "qty": 1, "mode": "error"}),
        )
        .await;
    resp.expect_problem(500);

    let payments = host.payments().await;
    for payment in &payments {
        let order_id = id(payment, "orderId");
        assert!(
            order_id != 999001 && order_id != 999002,
            "a payment outlived the failed caller: {payment}"
        );
    }
    assert_eq!(
        host.get_ok("/payments").await,
        payments_before,
        "payments changed"
    );

    // No PaymentApproved escaped either: the car never took a unit.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let car_now = host.car(car).await;
    assert_eq!(car_now["available"], json!(5), "car: {car_now}");

    // Payment itself is unharmed: a real order still pays and rents.
    let order = host.place_order(car, 1, "alice").await;
    let order_id = id(&order, "id");
    eventually(SETTLE, || async {
        let order = host.order(order_id).await;
        ensure_that!(text(&order, "status") == "RENTED", "order: {order}");
        Ok(())
    })
    .await;
    assert_eq!(host.payments().await.len(), 1);
}

#[tokio::test]
async fn a_trapping_component_fails_only_its_own_request() {
    let host = Host::start(HostOptions::new().with_chaos());
    for _ in 0..3 {
        let resp = host.get("/chaos/panic").await;
        expect_component_failure(&resp, "chaos");
        host.get("/chaos/ok").await.expect(200);
        host.get("/cars").await.expect(200);
    }
    host.create_car("Avante", 1).await;
    host.get("/healthz").await.expect(200);
    host.get("/readyz").await.expect(200);
}
