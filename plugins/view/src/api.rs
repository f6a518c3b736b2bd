//! The read-only resources: `/availability` and `/customers/{customerId}/orders`.

use ctxhost_sdk::router::{parse_id, route};
use ctxhost_sdk::{ApiResult, Request, Response, store};

use crate::model::{
    Availability, CAR_PREFIX, CustomerOrder, OrderRow, car_key, customer_prefix, order_key,
};

/// Route one request.
pub(crate) fn handle(req: Request) -> ApiResult {
    let method = req.method.as_str();
    if method != "GET" {
        return Err(Response::method_not_allowed(method, &["GET"]));
    }
    if route("/availability", &req.path).is_some() {
        let rows: Vec<Availability> = store::scan_prefix_json::<Availability>(CAR_PREFIX)?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        return Ok(Response::json(200, &rows));
    }
    if let Some(p) = route("/availability/{carId}", &req.path) {
        let raw = p.get("carId").unwrap_or_default();
        let unknown = || Response::not_found(&format!("no availability for car `{raw}`"));
        let id = parse_id(raw).ok_or_else(unknown)?;
        return match store::get_json::<Availability>(&car_key(id))? {
            Some(a) => Ok(Response::json(200, &a)),
            None => Err(unknown()),
        };
    }
    if let Some(p) = route("/customers/{customerId}/orders", &req.path) {
        let customer = p.get("customerId").unwrap_or_default();
        let mut orders = Vec::new();
        for (_, order_id) in store::scan_prefix_json::<u64>(&customer_prefix(customer))? {
            if let Some(row) = store::get_json::<OrderRow>(&order_key(order_id))? {
                orders.push(CustomerOrder::from(row));
            }
        }
        return Ok(Response::json(200, &orders));
    }
    Err(Response::not_found(&format!("no resource at {}", req.path)))
}
