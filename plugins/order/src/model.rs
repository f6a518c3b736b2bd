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

/// The role that may act for any customer.
pub(crate) const ADMIN_ROLE: &str = "admin";

/// Sequence for order ids.
pub(crate) const ORDER_SEQUENCE: &str = "orders";
/// The order table: orders are stored under `order/<id>` and listed in pages of it.
pub(crate) const ORDER_TABLE: &str = "order";

/// `order/<id, 16 digits>`.
pub(crate) fn order_key(id: u64) -> String {
    ctxhost_sdk::store::id_key(ORDER_TABLE, id)
}

/// Who places an order: the caller's subject and whether it holds [`ADMIN_ROLE`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub subject: &'a str,
    pub admin: bool,
}

/// A validated `POST /orders` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewOrder {
    pub car_id: u64,
    pub qty: u32,
    pub customer_id: String,
}

impl NewOrder {
    /// Validate a `{"carId", "qty", "customerId"}` body placed by `caller`; errors are 400
    /// problems naming the field. `customerId` defaults to the caller's subject and may name
    /// another customer only for an admin (403); without a caller (authentication off) it
    /// is required, as before authentication existed.
    pub(crate) fn parse(body: &JsonObject, caller: Option<Caller<'_>>) -> Result<Self, Response> {
        let customer_id = match caller {
            None => body.nonempty_string("customerId")?,
            Some(me) => match body.value("customerId") {
                None | Some(serde_json::Value::Null) => me.subject.to_string(),
                Some(_) => {
                    let c = body.nonempty_string("customerId")?;
                    if c != me.subject && !me.admin {
                        return Err(Response::forbidden(&format!(
                            "only an admin may place an order for another customer ({c:?})"
                        )));
                    }
                    c
                }
            },
        };
        Ok(NewOrder {
            car_id: body.int("carId", 1)?,
            qty: body.int_u32("qty", 1)?,
            customer_id,
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
        NewOrder::parse(&JsonObject::from_bytes(s.as_bytes())?, None)
    }

    fn parse_as(s: &str, subject: &str, admin: bool) -> Result<NewOrder, Response> {
        NewOrder::parse(
            &JsonObject::from_bytes(s.as_bytes())?,
            Some(Caller { subject, admin }),
        )
    }

    #[test]
    fn the_customer_is_the_caller_unless_an_admin_names_another() {
        let own = parse_as(r#"{"carId":1,"qty":1}"#, "alice", false).unwrap();
        assert_eq!(own.customer_id, "alice");
        let same = parse_as(
            r#"{"carId":1,"qty":1,"customerId":"alice"}"#,
            "alice",
            false,
        );
        assert_eq!(same.unwrap().customer_id, "alice");
        let other = parse_as(r#"{"carId":1,"qty":1,"customerId":"bob"}"#, "alice", false);
        assert_eq!(other.unwrap_err().status, 403);
        let admin = parse_as(r#"{"carId":1,"qty":1,"customerId":"bob"}"#, "root", true);
        assert_eq!(admin.unwrap().customer_id, "bob");
        let empty = parse_as(r#"{"carId":1,"qty":1,"customerId":""}"#, "alice", false);
        assert_eq!(empty.unwrap_err().status, 400);
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
