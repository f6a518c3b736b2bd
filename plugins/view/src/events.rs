//! Turns each subscribed event into updates of the view's tables (idempotent merges).

use ctxhost_sdk::events::{Event, data_json};
use ctxhost_sdk::{Error, log, store};
use serde::Deserialize;

use crate::model::{
    Availability, OrderFact, OrderRow, OrderStatus, PaymentStatus, RentalStatus, car_key,
    customer_key, merge, order_key,
};

/// The event types this context subscribes to.
pub(crate) const SUBSCRIPTIONS: &[&str] = &[
    "CarRegistered",
    "CarRented",
    "CarReturned",
    "OrderPlaced",
    "PaymentApproved",
    "PaymentCancelled",
    "RentalRejected",
    "OrderCancelled",
];

/// Every field any subscribed event may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    order_id: Option<u64>,
    car_id: Option<u64>,
    qty: Option<u64>,
    customer_id: Option<String>,
    payment_id: Option<u64>,
    name: Option<String>,
    available: Option<u64>,
}

/// Handle one delivered event; `Err` only for failures worth retrying.
pub(crate) fn handle(event: &Event) -> Result<(), String> {
    let p = match data_json::<Payload>(event) {
        Ok(p) => p,
        Err(e) => {
            log::warn(&format!("ignoring event: {e}"));
            return Ok(());
        }
    };
    apply(&event.type_, p).map_err(String::from)
}

fn apply(event_type: &str, p: Payload) -> Result<(), Error> {
    let mut fact = OrderFact {
        customer_id: p.customer_id.clone(),
        car_id: p.car_id,
        qty: p.qty,
        payment_id: p.payment_id,
        ..OrderFact::default()
    };
    match event_type {
        "CarRegistered" => return set_availability(&p, p.name.clone()),
        "CarRented" => {
            set_availability(&p, None)?;
            fact.rental_status = Some(RentalStatus::Rented);
            fact.order_status = Some(OrderStatus::Rented);
        }
        "CarReturned" => {
            set_availability(&p, None)?;
            fact.rental_status = Some(RentalStatus::Returned);
        }
        "RentalRejected" => {
            fact.rental_status = Some(RentalStatus::Rejected);
            fact.order_status = Some(OrderStatus::Rejected);
        }
        "OrderPlaced" => fact.order_status = Some(OrderStatus::Placed),
        "PaymentApproved" => {
            fact.payment_status = Some(PaymentStatus::Approved);
            fact.order_status = Some(OrderStatus::Paid);
        }
        "PaymentCancelled" => fact.payment_status = Some(PaymentStatus::Cancelled),
        "OrderCancelled" => fact.order_status = Some(OrderStatus::Cancelled),
        other => {
            log::warn(&format!("ignoring unexpected event type {other}"));
            return Ok(());
        }
    }
    let Some(order_id) = p.order_id else {
        log::warn(&format!("ignoring {event_type} without orderId"));
        return Ok(());
    };
    update_order(order_id, fact)
}

/// Set a car's availability from the absolute value a car event carries.
fn set_availability(p: &Payload, name: Option<String>) -> Result<(), Error> {
    let (Some(car_id), Some(available)) = (p.car_id, p.available) else {
        log::warn("ignoring car event without carId or available");
        return Ok(());
    };
    let key = car_key(car_id);
    let mut row = store::get_json::<Availability>(&key)?.unwrap_or(Availability {
        car_id,
        name: None,
        available,
    });
    row.available = available;
    if name.is_some() {
        row.name = name;
    }
    store::put_json(&key, &row)
}

fn update_order(order_id: u64, fact: OrderFact) -> Result<(), Error> {
    let key = order_key(order_id);
    let mut row = store::get_json::<OrderRow>(&key)?.unwrap_or(OrderRow {
        order_id,
        ..OrderRow::default()
    });
    let had_customer = row.customer_id.is_some();
    merge(&mut row, fact);
    if let (false, Some(customer)) = (had_customer, &row.customer_id) {
        store::put_json(&customer_key(customer, order_id), &order_id)?;
    }
    store::put_json(&key, &row)
}
