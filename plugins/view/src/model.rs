//! The view's rows, store keys, and the merge rules that make every event order converge.
//!
//! Events of one publisher arrive in order, but events of different publishers interleave
//! arbitrarily. So availability is set from the absolute value car events carry (they all
//! come from `car`), and each order row keeps, per status column, the most advanced state
//! seen: a later-stage status is never overwritten by an earlier-stage one.

use serde::{Deserialize, Serialize};

/// Availability of one car. Stored under [`car_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Availability {
    pub car_id: u64,
    /// `None` until `CarRegistered` is seen.
    pub name: Option<String>,
    pub available: u64,
}

/// One order as the customer sees it. Stored under [`order_key`] and indexed by
/// [`customer_key`] once the customer is known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderRow {
    pub order_id: u64,
    pub customer_id: Option<String>,
    pub car_id: Option<u64>,
    pub qty: Option<u64>,
    pub order_status: Option<OrderStatus>,
    pub payment_id: Option<u64>,
    pub payment_status: Option<PaymentStatus>,
    pub rental_status: Option<RentalStatus>,
}

/// The public shape of an order row (`GET /customers/{customerId}/orders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomerOrder {
    pub order_id: u64,
    pub car_id: Option<u64>,
    pub qty: Option<u64>,
    pub order_status: Option<OrderStatus>,
    pub payment_id: Option<u64>,
    pub payment_status: Option<PaymentStatus>,
    pub rental_status: Option<RentalStatus>,
}

impl From<OrderRow> for CustomerOrder {
    fn from(r: OrderRow) -> Self {
        CustomerOrder {
            order_id: r.order_id,
            car_id: r.car_id,
            qty: r.qty,
            order_status: r.order_status,
            payment_id: r.payment_id,
            payment_status: r.payment_status,
            rental_status: r.rental_status,
        }
    }
}

/// A status column whose values are ordered by how far the flow has progressed.
pub(crate) trait Stage: Copy {
    fn rank(self) -> u8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OrderStatus {
    Placed,
    Paid,
    Rented,
    Rejected,
    Cancelled,
}

impl Stage for OrderStatus {
    fn rank(self) -> u8 {
        match self {
            OrderStatus::Placed => 0,
            OrderStatus::Paid => 1,
            OrderStatus::Rented | OrderStatus::Rejected => 2,
            OrderStatus::Cancelled => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum PaymentStatus {
    Approved,
    Cancelled,
}

impl Stage for PaymentStatus {
    fn rank(self) -> u8 {
        match self {
            PaymentStatus::Approved => 0,
            PaymentStatus::Cancelled => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RentalStatus {
    Rented,
    Rejected,
    Returned,
}

impl Stage for RentalStatus {
    fn rank(self) -> u8 {
        match self {
            RentalStatus::Rented | RentalStatus::Rejected => 0,
            RentalStatus::Returned => 1,
        }
    }
}

/// The more advanced of `current` and `new` (ties keep `current`).
pub(crate) fn advance<S: Stage>(current: Option<S>, new: S) -> Option<S> {
    match current {
        Some(c) if c.rank() >= new.rank() => Some(c),
        _ => Some(new),
    }
}

/// What one event says about one order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrderFact {
    pub customer_id: Option<String>,
    pub car_id: Option<u64>,
    pub qty: Option<u64>,
    pub order_status: Option<OrderStatus>,
    pub payment_id: Option<u64>,
    pub payment_status: Option<PaymentStatus>,
    pub rental_status: Option<RentalStatus>,
}

/// Merge `fact` into `row`: identity fields are filled when unknown, statuses only advance.
pub(crate) fn merge(row: &mut OrderRow, fact: OrderFact) {
    if row.customer_id.is_none() {
        row.customer_id = fact.customer_id;
    }
    if row.car_id.is_none() {
        row.car_id = fact.car_id;
    }
    if row.qty.is_none() {
        row.qty = fact.qty;
    }
    if row.payment_id.is_none() {
        row.payment_id = fact.payment_id;
    }
    if let Some(s) = fact.order_status {
        row.order_status = advance(row.order_status, s);
    }
    if let Some(s) = fact.payment_status {
        row.payment_status = advance(row.payment_status, s);
    }
    if let Some(s) = fact.rental_status {
        row.rental_status = advance(row.rental_status, s);
    }
}

/// The availability table: rows are stored under `car/<car id>` and listed in pages of it.
pub(crate) const CAR_TABLE: &str = "car";

/// `car/<car id, 16 digits>`.
pub(crate) fn car_key(car_id: u64) -> String {
    ctxhost_sdk::store::id_key(CAR_TABLE, car_id)
}

/// `order/<order id, 16 digits>`.
pub(crate) fn order_key(order_id: u64) -> String {
    ctxhost_sdk::store::id_key("order", order_id)
}

/// `customer/<escaped customer id>`: the table of one customer's order index, listed in
/// pages of it (the escaping keeps one customer's keys from matching another's).
pub(crate) fn customer_table(customer_id: &str) -> String {
    let mut escaped = String::with_capacity(customer_id.len());
    for c in customer_id.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    format!("customer/{escaped}")
}

/// `customer/<escaped customer id>/<order id, 16 digits>` -> the order id.
pub(crate) fn customer_key(customer_id: &str, order_id: u64) -> String {
    ctxhost_sdk::store::id_key(&customer_table(customer_id), order_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact_for(ty: &str) -> OrderFact {
        let mut f = OrderFact {
            car_id: Some(1),
            qty: Some(2),
            ..OrderFact::default()
        };
        match ty {
            "OrderPlaced" => {
                f.customer_id = Some("c".into());
                f.order_status = Some(OrderStatus::Placed);
            }
            "PaymentApproved" => {
                f.customer_id = Some("c".into());
                f.payment_id = Some(9);
                f.payment_status = Some(PaymentStatus::Approved);
                f.order_status = Some(OrderStatus::Paid);
            }
            "CarRented" => {
                f.rental_status = Some(RentalStatus::Rented);
                f.order_status = Some(OrderStatus::Rented);
            }
            "OrderCancelled" => {
                f.customer_id = Some("c".into());
                f.order_status = Some(OrderStatus::Cancelled);
            }
            "PaymentCancelled" => {
                f.payment_id = Some(9);
                f.payment_status = Some(PaymentStatus::Cancelled);
            }
            "CarReturned" => f.rental_status = Some(RentalStatus::Returned),
            _ => unreachable!(),
        }
        f
    }

    fn run(order: &[&str]) -> OrderRow {
        let mut row = OrderRow {
            order_id: 1,
            ..OrderRow::default()
        };
        for ty in order {
            merge(&mut row, fact_for(ty));
        }
        row
    }

    #[test]
    fn every_interleaving_of_a_cancelled_rental_converges() {
        // Per publisher order: order: Placed < Cancelled; payment: Approved < Cancelled;
        // car: Rented < Returned. Check a set of cross-publisher interleavings.
        let expected = run(&[
            "OrderPlaced",
            "PaymentApproved",
            "CarRented",
            "OrderCancelled",
            "PaymentCancelled",
            "CarReturned",
        ]);
        assert_eq!(expected.order_status, Some(OrderStatus::Cancelled));
        assert_eq!(expected.payment_status, Some(PaymentStatus::Cancelled));
        assert_eq!(expected.rental_status, Some(RentalStatus::Returned));
        assert_eq!(expected.customer_id.as_deref(), Some("c"));
        assert_eq!(expected.payment_id, Some(9));
        for order in [
            [
                "CarRented",
                "CarReturned",
                "PaymentApproved",
                "PaymentCancelled",
                "OrderPlaced",
                "OrderCancelled",
            ],
            [
                "OrderPlaced",
                "OrderCancelled",
                "CarRented",
                "PaymentApproved",
                "CarReturned",
                "PaymentCancelled",
            ],
            [
                "PaymentApproved",
                "OrderPlaced",
                "PaymentCancelled",
                "CarRented",
                "OrderCancelled",
                "CarReturned",
            ],
        ] {
            assert_eq!(run(&order), expected, "{order:?}");
        }
    }

    #[test]
    fn advance_never_goes_back() {
        assert_eq!(
            advance(None, OrderStatus::Placed),
            Some(OrderStatus::Placed)
        );
        assert_eq!(
            advance(Some(OrderStatus::Cancelled), OrderStatus::Rented),
            Some(OrderStatus::Cancelled)
        );
        assert_eq!(
            advance(Some(OrderStatus::Rented), OrderStatus::Paid),
            Some(OrderStatus::Rented)
        );
        assert_eq!(
            advance(Some(OrderStatus::Paid), OrderStatus::Rejected),
            Some(OrderStatus::Rejected)
        );
        assert_eq!(
            advance(Some(RentalStatus::Returned), RentalStatus::Rented),
            Some(RentalStatus::Returned)
        );
    }

    #[test]
    fn keys() {
        assert_eq!(customer_table("a/b%"), "customer/a%2Fb%25");
        assert_eq!(customer_key("c", 3), "customer/c/0000000000000003");
        assert!(!customer_key("a/b", 1).starts_with(&format!("{}/", customer_table("a"))));
        let out = serde_json::to_value(CustomerOrder::from(OrderRow {
            order_id: 1,
            ..OrderRow::default()
        }))
        .unwrap();
        assert_eq!(out["paymentStatus"], serde_json::Value::Null);
        assert_eq!(out["orderId"], 1);
    }
}
