//! Car types, store keys and the pure rules for renting and returning units.

use serde::{Deserialize, Serialize};

/// A car model with its stock of rentable units. Stored under [`car_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Car {
    pub id: u64,
    pub name: String,
    pub stock: u64,
    pub available: u64,
}

/// What happened to the units of one order. Stored under [`rental_key`]; its presence makes
/// `PaymentApproved` idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rental {
    pub order_id: u64,
    pub car_id: u64,
    pub qty: u64,
    pub status: RentalStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RentalStatus {
    /// Units taken.
    Rented,
    /// Not enough units (or unknown car): nothing taken.
    Rejected,
    /// Units given back after a cancelled payment.
    Returned,
}

/// Sequence for car ids.
pub(crate) const CAR_SEQUENCE: &str = "cars";
/// The car table: cars are stored under `car/<id>` and listed in pages of it.
pub(crate) const CAR_TABLE: &str = "car";

/// `car/<id, 16 digits>`.
pub(crate) fn car_key(id: u64) -> String {
    ctxhost_sdk::store::id_key(CAR_TABLE, id)
}

/// `rental/<order id, 16 digits>`.
pub(crate) fn rental_key(order_id: u64) -> String {
    ctxhost_sdk::store::id_key("rental", order_id)
}

/// The outcome of a `PaymentApproved` for a car that may not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RentDecision {
    /// Take the units; `available` is what is left.
    Rent { available: u64 },
    /// Take nothing, for this reason.
    Reject { reason: String },
}

/// Decide whether `qty` units of `car` can be rented. Availability never goes negative.
pub(crate) fn decide_rent(car: Option<&Car>, car_id: u64, qty: u64) -> RentDecision {
    match car {
        None => RentDecision::Reject {
            reason: format!("car {car_id} does not exist"),
        },
        Some(_) if qty == 0 => RentDecision::Reject {
            reason: "qty must be at least 1".into(),
        },
        Some(car) => match car.available.checked_sub(qty) {
            Some(available) => RentDecision::Rent { available },
            None => RentDecision::Reject {
                reason: format!(
                    "only {} unit(s) of car {car_id} available, {qty} requested",
                    car.available
                ),
            },
        },
    }
}

/// The availability after returning `qty` units, capped at the stock.
pub(crate) fn returned_available(car: &Car, qty: u64) -> u64 {
    car.available.saturating_add(qty).min(car.stock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn car(available: u64) -> Car {
        Car {
            id: 1,
            name: "Model S".into(),
            stock: 5,
            available,
        }
    }

    #[test]
    fn rent_rules() {
        assert_eq!(
            decide_rent(Some(&car(3)), 1, 2),
            RentDecision::Rent { available: 1 }
        );
        assert_eq!(
            decide_rent(Some(&car(3)), 1, 3),
            RentDecision::Rent { available: 0 }
        );
        assert!(matches!(
            decide_rent(Some(&car(3)), 1, 4),
            RentDecision::Reject { .. }
        ));
        assert!(matches!(
            decide_rent(None, 7, 1),
            RentDecision::Reject { .. }
        ));
        assert!(matches!(
            decide_rent(Some(&car(3)), 1, 0),
            RentDecision::Reject { .. }
        ));
    }

    #[test]
    fn return_rules() {
        assert_eq!(returned_available(&car(1), 2), 3);
        assert_eq!(returned_available(&car(4), 2), 5);
    }

    #[test]
    fn keys_and_json() {
        assert_eq!(car_key(42), "car/0000000000000042");
        assert!(car_key(42).starts_with(&format!("{CAR_TABLE}/")));
        assert_eq!(rental_key(7), "rental/0000000000000007");
        let r = Rental {
            order_id: 1,
            car_id: 2,
            qty: 3,
            status: RentalStatus::Rented,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"orderId":1,"carId":2,"qty":3,"status":"RENTED"}"#
        );
    }
}
