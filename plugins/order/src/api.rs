//! The `/orders` resources, including the synchronous payment on `POST /orders`.

use ctxhost_sdk::body::JsonObject;
use ctxhost_sdk::events::publish_json;
use ctxhost_sdk::identity::{self, may_act_for};
use ctxhost_sdk::page::PageRequest;
use ctxhost_sdk::router::route;
use ctxhost_sdk::{ApiResult, CallError, Request, Response, log, page, store};
use serde_json::json;

use crate::ctxhost::rental::payments::{self, PaymentError, PaymentRequest};
use crate::model::{
    ADMIN_ROLE, Caller, NewOrder, ORDER_SEQUENCE, ORDER_TABLE, Order, Status, can_cancel, order_key,
};

/// Route one request.
pub(crate) fn handle(req: Request) -> ApiResult {
    let method = req.method.as_str();
    if route("/orders", &req.path).is_some() {
        return match method {
            "GET" => list(&req),
            "POST" => place(&req),
            _ => Err(Response::method_not_allowed(method, &["GET", "POST"])),
        };
    }
    if let Some(p) = route("/orders/{id}", &req.path) {
        return match method {
            "GET" => get(p.id("id")?),
            _ => Err(Response::method_not_allowed(method, &["GET"])),
        };
    }
    if let Some(p) = route("/orders/{id}/cancel", &req.path) {
        return match method {
            "POST" => cancel(p.id("id")?),
            _ => Err(Response::method_not_allowed(method, &["POST"])),
        };
    }
    Err(Response::not_found(&format!("no resource at {}", req.path)))
}

/// `GET /orders`: every order for an admin (or when the host lets anonymous callers
/// through), else the caller's own.
fn list(req: &Request) -> ApiResult {
    let page = PageRequest::from_request(req)?;
    match identity::caller().filter(|p| !identity::has_role(p, ADMIN_ROLE)) {
        None => Ok(page::scan_json::<Order>(ORDER_TABLE, &page)?.respond(req)),
        Some(me) => {
            Ok(
                page::scan_json_where::<Order>(ORDER_TABLE, &page, |o| {
                    o.customer_id == me.subject
                })?
                .respond(req),
            )
        }
    }
}

/// `POST /orders`: publish `OrderPlaced`, pay synchronously, store the order as `PAID`.
/// Any failure answers >= 400, so nothing of it commits.
fn place(req: &Request) -> ApiResult {
    let caller = identity::caller();
    let who = caller.as_ref().map(|p| Caller {
        subject: &p.subject,
        admin: identity::has_role(p, ADMIN_ROLE),
    });
    let new = NewOrder::parse(&JsonObject::parse(req)?, who)?;
    let id = store::next_id(ORDER_SEQUENCE)?;
    publish_json(
        "OrderPlaced",
        &id.to_string(),
        &json!({ "orderId": id, "carId": new.car_id, "qty": new.qty, "customerId": new.customer_id }),
    )?;
    let payment = payments::authorize(&PaymentRequest {
        order_id: id,
        car_id: new.car_id,
        qty: new.qty,
        customer_id: new.customer_id.clone(),
    })
    .map_err(payment_failed)?;
    let order = Order {
        id,
        car_id: new.car_id,
        qty: new.qty,
        customer_id: new.customer_id,
        status: Status::Paid,
        payment_id: payment.id,
    };
    store::put_json(&order_key(id), &order)?;
    Ok(Response::created(&format!("/orders/{id}"), &order))
}

/// The answer when payment did not approve: 422 when it declined, 503 + `Retry-After` when
/// it could not answer.
fn payment_failed(e: PaymentError) -> Response {
    match e {
        PaymentError::Declined(reason) => {
            Response::unprocessable(&format!("payment declined: {reason}"))
        }
        PaymentError::Host(e) => {
            let why = match e {
                CallError::Unavailable(m) => format!("unavailable: {m}"),
                CallError::Trapped(m) => format!("failed: {m}"),
                CallError::Timeout(m) => format!("timed out: {m}"),
                CallError::Rejected(m) => format!("overloaded: {m}"),
            };
            log::warn(&format!("payment call {why}"));
            Response::unavailable(
                &format!("payment is unavailable ({why}); try again shortly"),
                1,
            )
        }
    }
}

/// `POST /orders/{id}/cancel`: `CANCELLED`, publish `OrderCancelled`; 409 when already
/// cancelled or rejected.
fn cancel(id: u64) -> ApiResult {
    let mut order = load_own(id)?;
    if !can_cancel(order.status) {
        return Err(Response::conflict(&format!(
            "order {id} is {} and cannot be cancelled",
            status_name(order.status)
        )));
    }
    order.status = Status::Cancelled;
    store::put_json(&order_key(id), &order)?;
    publish_json(
        "OrderCancelled",
        &id.to_string(),
        &json!({ "orderId": id, "carId": order.car_id, "qty": order.qty, "customerId": order.customer_id }),
    )?;
    Ok(Response::json(200, &order))
}

fn get(id: u64) -> ApiResult {
    Ok(Response::json(200, &load_own(id)?))
}

/// Order `id` when the caller is its customer or an admin; 403 otherwise.
fn load_own(id: u64) -> Result<Order, Response> {
    let order = load(id)?;
    if may_act_for(identity::caller().as_ref(), &order.customer_id, ADMIN_ROLE) {
        Ok(order)
    } else {
        Err(Response::forbidden(&format!(
            "order {id} belongs to another customer"
        )))
    }
}

fn load(id: u64) -> Result<Order, Response> {
    store::get_json::<Order>(&order_key(id))?
        .ok_or_else(|| Response::not_found(&format!("order {id} does not exist")))
}

fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
