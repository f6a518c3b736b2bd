//! Compensation: `RentalRejected` and `OrderCancelled` cancel the order's `APPROVED` payment
//! and publish `PaymentCancelled` (idempotent by state).

use ctxhost_sdk::events::{Event, data_json, publish_json};
use ctxhost_sdk::{Error, log, store};
use serde::Deserialize;
use serde_json::json;

use crate::model::{Payment, Status, by_order_key, payment_key};

/// The event types this context subscribes to.
pub(crate) const SUBSCRIPTIONS: &[&str] = &["RentalRejected", "OrderCancelled"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderRef {
    order_id: u64,
}

/// Handle one delivered event; `Err` only for failures worth retrying.
pub(crate) fn handle(event: &Event) -> Result<(), String> {
    let reason = match event.type_.as_str() {
        "RentalRejected" => "rental-rejected",
        "OrderCancelled" => "order-cancelled",
        other => {
            log::warn(&format!("ignoring unexpected event type {other}"));
            return Ok(());
        }
    };
    match data_json::<OrderRef>(event) {
        Ok(o) => cancel(o.order_id, reason).map_err(String::from),
        Err(e) => {
            log::warn(&format!("ignoring event: {e}"));
            Ok(())
        }
    }
}

fn cancel(order_id: u64, reason: &str) -> Result<(), Error> {
    let Some(id) = store::get_json::<u64>(&by_order_key(order_id))? else {
        log::warn(&format!("{reason}: no payment for order {order_id}"));
        return Ok(());
    };
    let Some(mut payment) = store::get_json::<Payment>(&payment_key(id))? else {
        log::warn(&format!(
            "{reason}: payment {id} of order {order_id} is missing"
        ));
        return Ok(());
    };
    if payment.status != Status::Approved {
        log::info(&format!(
            "{reason}: payment {id} is already {}",
            payment.status.as_str()
        ));
        return Ok(());
    }
    payment.status = Status::Cancelled;
    store::put_json(&payment_key(id), &payment)?;
    publish_json(
        "PaymentCancelled",
        &order_id.to_string(),
        &json!({
            "paymentId": id,
            "orderId": order_id,
            "carId": payment.car_id,
            "qty": payment.qty,
            "reason": reason,
        }),
    )
}
