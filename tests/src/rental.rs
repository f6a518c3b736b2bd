//! The rental API: its domain calls on [`Api`] (cars, orders, payments, the view) with the
//! checks every answer must pass, and the invariants the rental state must reach after any
//! disturbance (a kill -9, a stopped process, a broker outage): nothing answered 201 is lost,
//! nothing is applied twice, and the car, the payments and the view agree ([`OrderLoad`],
//! [`assert_rental_consistent`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{Api, id, text};
use crate::{ensure_that, eventually};

/// How long the saga and the view get to converge, unless a test says otherwise.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Field names of a row of `GET /customers/{customerId}/orders` (the view's own table).
pub mod view_row {
    /// The order's id.
    pub const ORDER_ID: &str = "orderId";
    /// The order's status: `PAID`, `RENTED`, `REJECTED` or `CANCELLED`.
    pub const ORDER_STATUS: &str = "orderStatus";
    /// The payment's id.
    pub const PAYMENT_ID: &str = "paymentId";
    /// The payment's status: `APPROVED` or `CANCELLED`.
    pub const PAYMENT_STATUS: &str = "paymentStatus";
}

impl Api {
    /// `POST /cars`, asserting 201 and the echoed fields; returns the car's id.
    pub async fn create_car(&self, name: &str, stock: u64) -> u64 {
        let car = self
            .post_json("/cars", &json!({"name": name, "stock": stock}))
            .await
            .expect(201);
        assert_eq!(car["name"], json!(name), "POST /cars: name: {car}");
        assert_eq!(car["stock"], json!(stock), "POST /cars: stock: {car}");
        assert_eq!(
            car["available"],
            json!(stock),
            "POST /cars: available: {car}"
        );
        id(&car, "id")
    }

    /// `POST /orders`, asserting 201, status `PAID`, a payment id and the echoed fields.
    pub async fn place_order(&self, car_id: u64, qty: u64, customer: &str) -> Value {
        let order = self
            .post_json(
                "/orders",
                &json!({"carId": car_id, "qty": qty, "customerId": customer}),
            )
            .await
            .expect(201);
        check_placed_order(&order, car_id, qty, customer);
        order
    }

    /// `GET /cars/{id}`.
    pub async fn car(&self, car_id: u64) -> Value {
        self.get_ok(&format!("/cars/{car_id}")).await
    }

    /// `GET /orders/{id}`.
    pub async fn order(&self, order_id: u64) -> Value {
        self.get_ok(&format!("/orders/{order_id}")).await
    }

    /// `GET /payments/{id}`.
    pub async fn payment(&self, payment_id: u64) -> Value {
        self.get_ok(&format!("/payments/{payment_id}")).await
    }

    /// `GET /orders`, every page.
    pub async fn orders(&self) -> Vec<Value> {
        self.get_all_pages("/orders", false).await
    }

    /// `GET /payments`, every page.
    pub async fn payments(&self) -> Vec<Value> {
        self.get_all_pages("/payments", false).await
    }

    /// `GET /cars`, every page.
    pub async fn cars(&self) -> Vec<Value> {
        self.get_all_pages("/cars", false).await
    }

    /// `GET /availability/{carId}` as `(available, whole answer)`, or `None` while the view
    /// does not know the car yet (404).
    pub async fn availability(&self, car_id: u64) -> Option<(i64, Value)> {
        let resp = self.get(&format!("/availability/{car_id}")).await;
        if resp.status == 404 {
            return None;
        }
        let value = resp.expect(200);
        assert_eq!(
            value["carId"],
            json!(car_id),
            "availability: carId: {value}"
        );
        let available = value["available"]
            .as_i64()
            .unwrap_or_else(|| panic!("availability: `available` is not an integer: {value}"));
        Some((available, value))
    }

    /// `GET /customers/{customerId}/orders`, every page; an unknown customer (404) counts
    /// as no rows.
    pub async fn customer_orders(&self, customer: &str) -> Vec<Value> {
        self.get_all_pages(&format!("/customers/{customer}/orders"), true)
            .await
    }
}

/// Checks the answer of a successful `POST /orders`.
pub fn check_placed_order(order: &Value, car_id: u64, qty: u64, customer: &str) {
    assert_eq!(
        order["status"],
        json!("PAID"),
        "POST /orders: status: {order}"
    );
    assert_eq!(
        order["carId"],
        json!(car_id),
        "POST /orders: carId: {order}"
    );
    assert_eq!(order["qty"], json!(qty), "POST /orders: qty: {order}");
    assert_eq!(
        order["customerId"],
        json!(customer),
        "POST /orders: customerId: {order}"
    );
    id(order, "id");
    id(order, "paymentId");
}

/// The row of the customer-orders view for `order_id`, if any.
pub fn view_row_for(rows: &[Value], order_id: u64) -> Option<&Value> {
    rows.iter()
        .find(|row| row[view_row::ORDER_ID].as_u64() == Some(order_id))
}

/// Order id -> (payment id, qty) of every order answered 201.
pub type Created = BTreeMap<u64, (u64, u64)>;

/// What the clients of an [`OrderLoad`] saw.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Order id -> (payment id, qty) of every 201 answer.
    pub created: Created,
    /// Answers other than 201 (`status: body`).
    pub unexpected: Vec<String>,
    /// Requests that got no answer (after which their client stopped).
    pub transport_errors: Vec<String>,
}

/// `clients` concurrent clients placing orders for one car on one host, together at most
/// `max_orders`: order `n` has qty `1 + n % 3` and client `c` is customer `load-<c>`. A
/// client stops at the first request without an answer (the host is gone), when the orders
/// are used up, or when told to.
pub struct OrderLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    max_orders: usize,
    clients: Vec<tokio::task::JoinHandle<LoadOutcome>>,
}

impl OrderLoad {
    /// Clients sending their orders back to back.
    pub fn start(api: &Api, car: u64, clients: usize, max_orders: usize) -> Self {
        Self::start_paced(api, car, clients, max_orders, Duration::ZERO)
    }

    /// Clients pausing `pause` after each answer, so that the load lasts.
    pub fn start_paced(
        api: &Api,
        car: u64,
        clients: usize,
        max_orders: usize,
        pause: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|client| {
                let api = api.clone();
                let (stop, sent, answered) = (stop.clone(), sent.clone(), answered.clone());
                tokio::spawn(async move {
                    let mut seen = LoadOutcome::default();
                    let customer = format!("load-{client}");
                    while !stop.load(Ordering::Relaxed) {
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        if n >= max_orders {
                            break;
                        }
                        let qty = 1 + (n % 3) as u64;
                        let body = json!({"carId": car, "qty": qty, "customerId": customer});
                        match api.try_post_json("/orders", &body).await {
                            Ok(resp) if resp.status == 201 => {
                                let order = resp.json();
                                check_placed_order(&order, car, qty, &customer);
                                seen.created
                                    .insert(id(&order, "id"), (id(&order, "paymentId"), qty));
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(resp) => seen
                                .unexpected
                                .push(format!("{}: {}", resp.status, resp.body)),
                            // The host is gone: this client is done.
                            Err(e) => {
                                seen.transport_errors.push(e.to_string());
                                break;
                            }
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    seen
                })
            })
            .collect();
        Self {
            stop,
            sent,
            answered,
            max_orders,
            clients,
        }
    }

    /// How many orders were attempted so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed).min(self.max_orders)
    }

    /// How many orders were answered 201 so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether every client has stopped.
    pub fn is_done(&self) -> bool {
        self.clients.iter().all(|c| c.is_finished())
    }

    /// Tells the clients to stop after their current order.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until `n` orders were answered 201, every client stopped, or `timeout` passed;
    /// the number answered.
    pub async fn wait_answered(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.answered() < n && !self.is_done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.answered()
    }

    /// Waits for every client to stop by itself (orders used up, or the host gone), for at
    /// most `timeout`; panics otherwise. What they saw, together.
    pub async fn join(self, timeout: Duration) -> LoadOutcome {
        let deadline = Instant::now() + timeout;
        let mut all = LoadOutcome::default();
        for client in self.clients {
            let left = deadline.saturating_duration_since(Instant::now());
            let seen = tokio::time::timeout(left, client)
                .await
                .unwrap_or_else(|_| panic!("a load client did not stop within {timeout:?}"))
                .expect("a load client panicked");
            all.created.extend(seen.created);
            all.unexpected.extend(seen.unexpected);
            all.transport_errors.extend(seen.transport_errors);
        }
        all
    }

    /// [`OrderLoad::stop`], then [`OrderLoad::join`].
    pub async fn finish(self, timeout: Duration) -> LoadOutcome {
        self.stop();
        self.join(timeout).await
    }
}

/// Every order has its payment and every payment its order, ids are unique, nothing answered
/// 201 (`created`, all for `car`) is lost; panics otherwise.
fn check_pairs(orders: &[Value], payments: &[Value], car: u64, created: &Created) {
    let orders_by_id: BTreeMap<u64, &Value> = orders.iter().map(|o| (id(o, "id"), o)).collect();
    assert_eq!(orders_by_id.len(), orders.len(), "duplicate order ids");
    let payments_by_id: BTreeMap<u64, &Value> = payments.iter().map(|p| (id(p, "id"), p)).collect();
    assert_eq!(
        payments_by_id.len(),
        payments.len(),
        "duplicate payment ids"
    );
    for order in orders {
        let payment = payments_by_id
            .get(&id(order, "paymentId"))
            .unwrap_or_else(|| panic!("order without its payment: {order}"));
        assert_eq!(
            id(payment, "orderId"),
            id(order, "id"),
            "payment {payment} of {order}"
        );
        assert_eq!(payment["qty"], order["qty"], "payment {payment} of {order}");
        assert_eq!(
            payment["carId"], order["carId"],
            "payment {payment} of {order}"
        );
    }
    let mut paid_orders = BTreeSet::new();
    for payment in payments {
        let order_id = id(payment, "orderId");
        assert!(
            orders_by_id.contains_key(&order_id),
            "payment without its order: {payment}"
        );
        assert!(
            paid_orders.insert(order_id),
            "two payments for order {order_id}"
        );
    }
    for (order_id, (payment_id, qty)) in created {
        let order = orders_by_id
            .get(order_id)
            .unwrap_or_else(|| panic!("order {order_id} was answered 201 and is lost"));
        assert_eq!(id(order, "paymentId"), *payment_id, "order {order}");
        assert_eq!(id(order, "qty"), *qty, "order {order}");
        assert_eq!(id(order, "carId"), car, "order {order}");
    }
}

/// Asserts the rental state is consistent, and waits (at most `settle`) until it has settled:
///
/// - right away and at every poll: each order has exactly one payment and each payment its
///   order (same qty and car), ids are unique, and every order in `created` (answered 201,
///   all for `car`) is there with its payment id and qty;
/// - once settled: no order is `PAID` any more; every order of `car` is `RENTED` (payment
///   `APPROVED`) or `REJECTED` (payment `CANCELLED`), orders of other cars may also be
///   `CANCELLED` (payment `CANCELLED`); the car's availability never goes below zero and
///   `stock - available` is the qty of its rented orders; the view's availability of the car
///   is the car's.
///
/// `orders_api` serves `/orders` and `/payments`; `cars_api` serves `/cars` and the view
/// (`/availability`, `/customers/...`): the same host, or two processes.
pub async fn assert_rental_consistent(
    orders_api: &Api,
    cars_api: &Api,
    car: u64,
    stock: u64,
    created: &Created,
    settle: Duration,
) {
    assert_rental_consistent_across(orders_api, cars_api, cars_api, car, stock, created, settle)
        .await;
}

/// [`assert_rental_consistent`] with `/cars` served by `cars_api` and the view by `view_api`
/// (for contexts spread over three processes).
pub async fn assert_rental_consistent_across(
    orders_api: &Api,
    cars_api: &Api,
    view_api: &Api,
    car: u64,
    stock: u64,
    created: &Created,
    settle: Duration,
) {
    check_pairs(
        &orders_api.orders().await,
        &orders_api.payments().await,
        car,
        created,
    );

    eventually(settle, || async {
        let orders = orders_api.orders().await;
        let payments = orders_api.payments().await;
        let pending = orders
            .iter()
            .filter(|o| text(o, "status") == "PAID")
            .count();
        ensure_that!(pending == 0, "{pending} orders still PAID");
        let payment_status: BTreeMap<u64, &str> = payments
            .iter()
            .map(|p| (id(p, "id"), text(p, "status")))
            .collect();
        let mut rented_qty = 0;
        for order in &orders {
            let of_car = order["carId"].as_u64() == Some(car);
            let want = match text(order, "status") {
                "RENTED" => {
                    if of_car {
                        rented_qty += id(order, "qty") as i64;
                    }
                    "APPROVED"
                }
                "REJECTED" => "CANCELLED",
                "CANCELLED" if !of_car => "CANCELLED",
                other => panic!("unexpected order status {other}: {order}"),
            };
            let got = payment_status
                .get(&id(order, "paymentId"))
                .copied()
                .unwrap_or("");
            ensure_that!(got == want, "payment of {order} is {got}, want {want}");
        }
        let car_now = cars_api.car(car).await;
        let available = car_now["available"]
            .as_i64()
            .ok_or(format!("car: {car_now}"))?;
        assert!(available >= 0, "availability went negative: {car_now}");
        ensure_that!(
            stock as i64 - available == rented_qty,
            "stock {stock} - available {available} != rented qty {rented_qty}"
        );
        let (view, _) = view_api
            .availability(car)
            .await
            .ok_or("car not in the view")?;
        ensure_that!(
            view == available,
            "view availability {view} != car's {available}"
        );
        check_pairs(&orders, &payments, car, created);
        Ok(())
    })
    .await;
}

/// Waits (at most `settle`) until the view's customer rows match the orders: every
/// customer's rows are exactly their orders, each with the order's status, payment id and
/// the payment's status. `orders_api` serves `/orders` and `/payments`, `view_api` the view.
pub async fn assert_view_matches_orders(orders_api: &Api, view_api: &Api, settle: Duration) {
    eventually(settle, || async {
        let orders = orders_api.orders().await;
        let payments = orders_api.payments().await;
        let payment_status: BTreeMap<u64, &str> = payments
            .iter()
            .map(|p| (id(p, "id"), text(p, "status")))
            .collect();
        let mut by_customer: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for order in &orders {
            by_customer
                .entry(text(order, "customerId"))
                .or_default()
                .push(order);
        }
        for (customer, orders) in by_customer {
            let rows = view_api.customer_orders(customer).await;
            ensure_that!(
                rows.len() == orders.len(),
                "customer {customer}: {} view rows for {} orders",
                rows.len(),
                orders.len()
            );
            for order in orders {
                let order_id = id(order, "id");
                let row = view_row_for(&rows, order_id)
                    .ok_or(format!("customer {customer}: no view row for {order}"))?;
                ensure_that!(
                    text(row, view_row::ORDER_STATUS) == text(order, "status"),
                    "view row {row} of {order}"
                );
                ensure_that!(
                    row[view_row::PAYMENT_ID] == order["paymentId"],
                    "view row {row} of {order}"
                );
                let want = payment_status
                    .get(&id(order, "paymentId"))
                    .copied()
                    .unwrap_or("");
                ensure_that!(
                    text(row, view_row::PAYMENT_STATUS) == want,
                    "view row {row} of {order}: payment is {want}"
                );
            }
        }
        Ok(())
    })
    .await;
}

/// Waits up to [`SETTLE`] until the order has `status`, its payment `payment_status`, and
/// the view row of `customer` shows both with the order's payment id. `orders` serves orders
/// and payments, `view` the view (the same host, or two processes).
pub async fn settled(
    orders: &Api,
    view: &Api,
    customer: &str,
    order_id: u64,
    status: &str,
    payment_status: &str,
) {
    eventually(SETTLE, || async {
        let order = orders.order(order_id).await;
        ensure_that!(text(&order, "status") == status, "order: {order}");
        let payment = orders.payment(id(&order, "paymentId")).await;
        ensure_that!(
            text(&payment, "status") == payment_status,
            "payment: {payment}"
        );
        let rows = view.customer_orders(customer).await;
        let row = view_row_for(&rows, order_id).ok_or(format!("no view row: {rows:?}"))?;
        ensure_that!(
            text(row, view_row::ORDER_STATUS) == status,
            "view row: {row}"
        );
        ensure_that!(
            text(row, view_row::PAYMENT_STATUS) == payment_status,
            "view row: {row}"
        );
        ensure_that!(
            row[view_row::PAYMENT_ID] == order["paymentId"],
            "view row: {row}"
        );
        Ok(())
    })
    .await;
}

/// Asserts that of the orders of `car` (at `orders_api`) some were rented and some rejected:
/// what a load whose demand is above the car's stock must end with.
pub async fn assert_some_rented_some_rejected(orders_api: &Api, car: u64) {
    let orders = orders_api.orders().await;
    let count = |status: &str| {
        orders
            .iter()
            .filter(|o| o["carId"] == json!(car) && text(o, "status") == status)
            .count()
    };
    let (rented, rejected) = (count("RENTED"), count("REJECTED"));
    assert!(
        rented > 0 && rejected > 0,
        "orders of car {car}: {rented} rented, {rejected} rejected"
    );
}

/// Waits up to [`SETTLE`] until the car and the view both say `available` for `car` (and the
/// car's stock is `stock`, when given). `cars` serves the car and the view.
pub async fn availability_is(cars: &Api, car: u64, stock: Option<u64>, available: i64) {
    availability_across(cars, cars, car, stock, available).await;
}

/// [`availability_is`] with the car served by `cars` and the view by `view`.
pub async fn availability_across(
    cars: &Api,
    view: &Api,
    car: u64,
    stock: Option<u64>,
    available: i64,
) {
    eventually(SETTLE, || async {
        let car_now = cars.car(car).await;
        ensure_that!(car_now["available"] == json!(available), "car: {car_now}");
        if let Some(stock) = stock {
            ensure_that!(car_now["stock"] == json!(stock), "car: {car_now}");
        }
        let (in_view, _) = view.availability(car).await.ok_or("car not in the view")?;
        ensure_that!(
            in_view == available,
            "view availability {in_view}, want {available}"
        );
        Ok(())
    })
    .await;
}

/// A list sorted by its members' JSON text, so two reads can be compared whatever their order.
pub fn sorted(mut items: Vec<Value>) -> Vec<Value> {
    items.sort_by_key(|v| v.to_string());
    items
}

/// Everything a client can read about the rental state of `customers` (cars, orders,
/// payments, availability and each customer's view rows), every list sorted.
pub async fn rental_snapshot<S: AsRef<str>>(api: &Api, customers: &[S]) -> Value {
    let mut view = serde_json::Map::new();
    for customer in customers {
        let customer = customer.as_ref();
        view.insert(
            customer.to_owned(),
            json!(sorted(api.customer_orders(customer).await)),
        );
    }
    json!({
        "cars": sorted(api.cars().await),
        "orders": sorted(api.orders().await),
        "payments": sorted(api.payments().await),
        "availability": sorted(api.get_list("/availability").await),
        "customers": view,
    })
}
