//! The read-only resources: `/availability` and `/customers/{customerId}/orders`.

use ctxhost_sdk::identity;
use ctxhost_sdk::page::{self, PageRequest};
use ctxhost_sdk::router::{parse_id, route};
use ctxhost_sdk::{ApiResult, Request, Response, store};

use crate::model::{
    Availability, CAR_TABLE, CustomerOrder, OrderRow, car_key, customer_table, order_key,
};

/// Route one request.
pub(crate) fn handle(req: Request) -> ApiResult {
    let method = req.method.as_str();
    if method != "GET" {
        return Err(Response::method_not_allowed(method, &["GET"]));
    }
    if route("/availability", &req.path).is_some() {
        return page::list_json::<Availability>(&req, CAR_TABLE);
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
        if !identity::may_act_for(identity::caller().as_ref(), customer, "admin") {
            return Err(Response::forbidden(&format!(
                "the orders of customer {customer:?} are for that customer or an admin"
            )));
        }
        let index =
            page::scan_json::<u64>(&customer_table(customer), &PageRequest::from_request(&req)?)?;
        let mut orders = Vec::with_capacity(index.items.len());
        for order_id in &index.items {
            if let Some(row) = store::get_json::<OrderRow>(&order_key(*order_id))? {
                orders.push(CustomerOrder::from(row));
            }
        }
        return Ok(index.with_items(orders).respond(&req));
    }
    Err(Response::not_found(&format!("no resource at {}", req.path)))
}
