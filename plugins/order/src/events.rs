//! Reactions to the car context's verdict: `CarRented` -> `RENTED`, `RentalRejected` ->
//! `REJECTED`, only from `PAID` (idempotent by state).

use ctxhost_sdk::events::{Event, data_json};
use ctxhost_sdk::{Error, log, store};
use serde::Deserialize;

use crate::model::{Order, after_rental, order_key};

/// The event types this context subscribes to.
pub(crate) const SUBSCRIPTIONS: &[&str] = &["CarRented", "RentalRejected"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RentalVerdict {
    order_id: u64,
}

/// Handle one delivered event; `Err` only for failures worth retrying.
pub(crate) fn handle(event: &Event) -> Result<(), String> {
    let rented = match event.type_.as_str() {
        "CarRented" => true,
        "RentalRejected" => false,
        other => {
            log::warn(&format!("ignoring unexpected event type {other}"));
            return Ok(());
        }
    };
    match data_json::<RentalVerdict>(event) {
        Ok(v) => apply(v.order_id, rented).map_err(String::from),
        Err(e) => {
            log::warn(&format!("ignoring event: {e}"));
            Ok(())
        }
    }
}

fn apply(order_id: u64, rented: bool) -> Result<(), Error> {
    let key = order_key(order_id);
    let Some(mut order) = store::get_json::<Order>(&key)? else {
        log::warn(&format!("rental verdict for unknown order {order_id}"));
        return Ok(());
    };
    match after_rental(order.status, rented) {
        Some(status) => {
            order.status = status;
            store::put_json(&key, &order)
        }
        None => {
            log::info(&format!(
                "order {order_id} is {:?}; keeping it",
                order.status
            ));
            Ok(())
        }
    }
}
