//! Reactions to payment events: take units on `PaymentApproved`, give them back on
//! `PaymentCancelled`. Idempotent by the rental record of each order.

use ctxhost_sdk::events::{Event, data_json, publish_json};
use ctxhost_sdk::{Error, log, store};
use serde::Deserialize;
use serde_json::json;

use crate::model::{
    Car, RentDecision, Rental, RentalStatus, car_key, decide_rent, rental_key, returned_available,
};

/// The event types this context subscribes to.
pub(crate) const SUBSCRIPTIONS: &[&str] = &["PaymentApproved", "PaymentCancelled"];

/// The part of `PaymentApproved` / `PaymentCancelled` this context uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentEvent {
    order_id: u64,
    car_id: u64,
    qty: u64,
}

/// Handle one delivered event; `Err` only for failures worth retrying.
pub(crate) fn handle(event: &Event) -> Result<(), String> {
    let data = match data_json::<PaymentEvent>(event) {
        Ok(d) => d,
        Err(e) => {
            log::warn(&format!("ignoring event: {e}"));
            return Ok(());
        }
    };
    let result = match event.type_.as_str() {
        "PaymentApproved" => payment_approved(&data),
        "PaymentCancelled" => payment_cancelled(&data),
        other => {
            log::warn(&format!("ignoring unexpected event type {other}"));
            Ok(())
        }
    };
    result.map_err(String::from)
}

fn payment_approved(p: &PaymentEvent) -> Result<(), Error> {
    let key = rental_key(p.order_id);
    if store::get(&key)?.is_some() {
        log::info(&format!("order {}: rental already settled", p.order_id));
        return Ok(());
    }
    let car = store::get_json::<Car>(&car_key(p.car_id))?;
    let correlation = p.order_id.to_string();
    match decide_rent(car.as_ref(), p.car_id, p.qty) {
        RentDecision::Rent { available } => {
            if let Some(mut car) = car {
                car.available = available;
                store::put_json(&car_key(car.id), &car)?;
            }
            store::put_json(&key, &rental(p, RentalStatus::Rented))?;
            publish_json(
                "CarRented",
                &correlation,
                &json!({ "orderId": p.order_id, "carId": p.car_id, "qty": p.qty, "available": available }),
            )
        }
        RentDecision::Reject { reason } => {
            log::info(&format!("order {}: rental rejected: {reason}", p.order_id));
            store::put_json(&key, &rental(p, RentalStatus::Rejected))?;
            publish_json(
                "RentalRejected",
                &correlation,
                &json!({ "orderId": p.order_id, "carId": p.car_id, "qty": p.qty, "reason": reason }),
            )
        }
    }
}

fn payment_cancelled(p: &PaymentEvent) -> Result<(), Error> {
    let key = rental_key(p.order_id);
    let Some(mut rental) = store::get_json::<Rental>(&key)? else {
        log::info(&format!("order {}: no rental to return", p.order_id));
        return Ok(());
    };
    if rental.status != RentalStatus::Rented {
        log::info(&format!(
            "order {}: rental is {:?}, nothing to return",
            p.order_id, rental.status
        ));
        return Ok(());
    }
    let Some(mut car) = store::get_json::<Car>(&car_key(rental.car_id))? else {
        log::warn(&format!(
            "order {}: car {} vanished",
            p.order_id, rental.car_id
        ));
        return Ok(());
    };
    car.available = returned_available(&car, rental.qty);
    store::put_json(&car_key(car.id), &car)?;
    rental.status = RentalStatus::Returned;
    store::put_json(&key, &rental)?;
    publish_json(
        "CarReturned",
        &p.order_id.to_string(),
        &json!({ "orderId": p.order_id, "carId": car.id, "qty": rental.qty, "available": car.available }),
    )
}

fn rental(p: &PaymentEvent, status: RentalStatus) -> Rental {
    Rental {
        order_id: p.order_id,
        car_id: p.car_id,
        qty: p.qty,
        status,
    }
}
