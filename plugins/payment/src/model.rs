//! Payment types, store keys and the approval rules.

use serde::{Deserialize, Serialize};

/// A payment. Stored under [`payment_key`], indexed by [`by_order_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Payment {
    pub id: u64,
    pub order_id: u64,
    pub car_id: u64,
    pub qty: u32,
    pub status: Status,
    /// Lowercase hex HMAC-SHA256 of `"<id>:<orderId>:<qty>"` under the secret
    /// `signing-key`; `None` (JSON `null`) when the key was not available when the payment
    /// was made, or for a payment stored before receipts existed.
    #[serde(default)]
    pub receipt: Option<String>,
    /// The customer the order is for (empty in payments stored before it was recorded).
    #[serde(default)]
    pub customer_id: String,
    /// The subject of the caller whose request made the payment (the principal the host
    /// passes along `order`'s call), when the request had one: an admin may place an order
    /// for another customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Status {
    Approved,
    Cancelled,
}

impl Status {
    /// The wire name (`APPROVED`, `CANCELLED`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "APPROVED",
            Status::Cancelled => "CANCELLED",
        }
    }
}

/// The role that may see every customer's payments.
pub(crate) const ADMIN_ROLE: &str = "admin";

/// Sequence for payment ids.
pub(crate) const PAYMENT_SEQUENCE: &str = "payments";
/// The payment table: payments are stored under `payment/<id>` and listed in pages of it.
pub(crate) const PAYMENT_TABLE: &str = "payment";
/// Configuration key of the largest `qty` one order may pay for.
pub(crate) const MAX_QTY_KEY: &str = "max-qty-per-order";
/// Its default.
pub(crate) const DEFAULT_MAX_QTY: u32 = 10;

/// `payment/<id, 16 digits>`.
pub(crate) fn payment_key(id: u64) -> String {
    ctxhost_sdk::store::id_key(PAYMENT_TABLE, id)
}

/// `by-order/<order id, 16 digits>` -> the payment id (JSON number).
pub(crate) fn by_order_key(order_id: u64) -> String {
    ctxhost_sdk::store::id_key("by-order", order_id)
}

/// The configured maximum: `Ok` when usable, `Err(message)` (use the default) when set but
/// not a positive integer.
pub(crate) fn parse_max_qty(raw: Option<&str>) -> Result<u32, String> {
    match raw {
        None => Ok(DEFAULT_MAX_QTY),
        Some(s) => match s.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "config `{MAX_QTY_KEY}` = {s:?} is not a positive integer; using {DEFAULT_MAX_QTY}"
            )),
        },
    }
}

/// `Some(reason)` when a payment for `qty` units must be declined.
pub(crate) fn decline_reason(qty: u32, max: u32) -> Option<String> {
    if qty == 0 {
        Some("qty must be at least 1".into())
    } else if qty > max {
        Some(format!("qty {qty} exceeds the maximum of {max} per order"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_qty() {
        assert_eq!(parse_max_qty(None), Ok(10));
        assert_eq!(parse_max_qty(Some("3")), Ok(3));
        assert_eq!(parse_max_qty(Some(" 7 ")), Ok(7));
        assert!(parse_max_qty(Some("x")).is_err());
        assert!(parse_max_qty(Some("0")).is_err());
        assert!(parse_max_qty(Some("-2")).is_err());
    }

    #[test]
    fn declines() {
        assert_eq!(decline_reason(10, 10), None);
        assert_eq!(
            decline_reason(11, 10).as_deref(),
            Some("qty 11 exceeds the maximum of 10 per order")
        );
        assert!(decline_reason(0, 10).is_some());
    }

    #[test]
    fn shape() {
        let p = Payment {
            id: 1,
            order_id: 2,
            car_id: 3,
            qty: 4,
            status: Status::Approved,
            receipt: Some("ab".into()),
            customer_id: "c".into(),
            placed_by: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"id":1,"orderId":2,"carId":3,"qty":4,"status":"APPROVED","receipt":"ab","customerId":"c"}"#
        );
        let unsigned = Payment { receipt: None, ..p };
        assert_eq!(
            serde_json::to_string(&unsigned).unwrap(),
            r#"{"id":1,"orderId":2,"carId":3,"qty":4,"status":"APPROVED","receipt":null,"customerId":"c"}"#
        );
        // A payment stored before receipts and customers were recorded still reads.
        let old: Payment =
            serde_json::from_str(r#"{"id":1,"orderId":2,"carId":3,"qty":4,"status":"APPROVED"}"#)
                .unwrap();
        assert_eq!(
            (old.receipt, old.customer_id.as_str(), old.placed_by),
            (None, "", None)
        );
        assert_eq!(by_order_key(5), "by-order/0000000000000005");
        assert_eq!(payment_key(5), "payment/0000000000000005");
    }
}
