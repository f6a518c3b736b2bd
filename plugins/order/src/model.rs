//! Order types, store keys, input validation and the status rules.

use ctxhost_sdk::Response;
use ctxhost_sdk::body::JsonObject;
use serde::{Deserialize, Serialize};

/// An order. Stored under [`order_key`]; it exists only once paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Order {
    pub id: u64,
    pub car_id: u64,
    pub qty: u32,
    pub customer_id: String,
    pub status: Status,
    pub payment_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Status {
    Paid,
    Rented,
    Rejected,
    Cancelled,
}

/// Sequence for order ids.
pub(crate) const ORDER_SEQUENCE: &str = "orders";
/// The order table: orders are stored under `order/<id>` and listed in pages of it.
pub(crate) const ORDER_TABLE: &str = "order";

/// `order/<id, 16 digits>`.
pub(crate) fn order_key(id: u64) -> String {
    ctxhost_sdk::store::id_key(ORDER_TABLE, id)
}

/// A validated `POST /orders` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewOrder {
    pub car_id: u64,
    pub qty: u32,
    pub customer_id: String,
}

impl NewOrder {
    /// Validate a `{"carId", "qty", "customerId"}` body; errors are 400 problems naming the field.
    pub(crate) fn parse(body: &JsonObject) -> Result<Self, Response> {
        Ok(NewOrder {
            car_id: body.int("carId", 1)?,
            qty: body.int_u32("qty", 1)?,
            customer_id: body.nonempty_string("customerId")?,
        })
    }
}

/// Whether an order in `status` may be cancelled (else 409).
pub(crate) fn can_cancel(status: Status) -> bool {
    matches!(status, Status::Paid | Status::Rented)
}

/// The status after the car context's verdict (`CarRented` or `RentalRejected`); only a
/// `PAID` order moves, every other state is kept (`None`).
pub(crate) fn after_rental(status: Status, rented: bool) -> Option<Status> {
    match (status, rented) {
        (Status::Paid, true) => Some(Status::Rented),
        (Status::Paid, false) => Some(Status::Rejected),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NewOrder, Response> {
        NewOrder::parse(&JsonObject::from_bytes(s.as_bytes())?)
    }

    fn detail(r: Response) -> String {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["detail"].as_str().unwrap().to_string()
    }

    #[test]
    fn validation() {
        let o = parse(r#"{"carId":1,"qty":2,"customerId":"c1"}"#).unwrap();
        assert_eq!((o.car_id, o.qty, o.customer_id.as_str()), (1, 2, "c1"));
        assert!(
            detail(parse(r#"{"carId":0,"qty":2,"customerId":"c"}"#).unwrap_err())
                .contains("`carId`")
        );
        assert!(
            detail(parse(r#"{"carId":1,"qty":0,"customerId":"c"}"#).unwrap_err()).contains("`qty`")
        );
        assert!(
            detail(parse(r#"{"carId":1,"qty":"2","customerId":"c"}"#).unwrap_err())
                .contains("`qty`")
        );
        assert!(
            detail(parse(r#"{"carId":1,"qty":2,"customerId":""}"#).unwrap_err())
                .contains("`customerId`")
        );
        assert!(detail(parse(r#"{"carId":1,"qty":2}"#).unwrap_err()).contains("`customerId`"));
        assert_eq!(parse("nope").unwrap_err().status, 400);
    }

    #[test]
    fn transitions() {
        assert_eq!(after_rental(Status::Paid, true), Some(Status::Rented));
        assert_eq!(after_rental(Status::Paid, false), Some(Status::Rejected));
        assert_eq!(after_rental(Status::Cancelled, true), None);
        assert_eq!(after_rental(Status::Rented, false), None);
        assert_eq!(after_rental(Status::Rejected, true), None);
        assert!(can_cancel(Status::Paid));
        assert!(can_cancel(Status::Rented));
        assert!(!can_cancel(Status::Cancelled));
        assert!(!can_cancel(Status::Rejected));
    }

    #[test]
    fn json_shape() {
        let o = Order {
            id: 1,
            car_id: 2,
            qty: 3,
            customer_id: "c".into(),
            status: Status::Paid,
            payment_id: 9,
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"id":1,"carId":2,"qty":3,"customerId":"c","status":"PAID","paymentId":9}"#
        );
        assert_eq!(order_key(3), "order/0000000000000003");
    }
}
