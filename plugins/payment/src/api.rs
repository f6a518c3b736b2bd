//! `payments.authorize` (called by `order`) and the read-only `/payments` resources.

use ctxhost_sdk::events::publish_json;
use ctxhost_sdk::identity::{self, may_act_for};
use ctxhost_sdk::page::PageRequest;
use ctxhost_sdk::router::route;
use ctxhost_sdk::{ApiResult, Error, Request, Response, config, log, page, store};
use serde_json::json;

use crate::exports::ctxhost::rental::payments as wit;
use crate::model::{
    ADMIN_ROLE, MAX_QTY_KEY, PAYMENT_SEQUENCE, PAYMENT_TABLE, Payment, Status, by_order_key,
    decline_reason, parse_max_qty, payment_key,
};

/// Approve a payment: decline over the configured maximum; otherwise store it as `APPROVED`
/// and publish `PaymentApproved`. Asking again for an order already paid returns the same
/// payment.
pub(crate) fn authorize(req: wit::PaymentRequest) -> Result<wit::Payment, wit::PaymentError> {
    crate::faults::inject();
    let max = parse_max_qty(config::get(MAX_QTY_KEY).as_deref()).unwrap_or_else(|warning| {
        log::warn(&warning);
        crate::model::DEFAULT_MAX_QTY
    });
    if let Some(reason) = decline_reason(req.qty, max) {
        return Err(wit::PaymentError::Declined(reason));
    }
    match approve(&req) {
        Ok(payment) => Ok(to_wit(payment)),
        // A store failure is not a decision: trap, so that nothing commits and the host
        // answers the caller with `host(trapped)`.
        Err(e) => panic!("payment store failure: {e}"),
    }
}

fn approve(req: &wit::PaymentRequest) -> Result<Payment, Error> {
    if let Some(id) = store::get_json::<u64>(&by_order_key(req.order_id))?
        && let Some(existing) = store::get_json::<Payment>(&payment_key(id))?
    {
        log::info(&format!(
            "order {}: already paid by payment {id}",
            req.order_id
        ));
        return Ok(existing);
    }
    let id = store::next_id(PAYMENT_SEQUENCE)?;
    let payment = Payment {
        id,
        order_id: req.order_id,
        car_id: req.car_id,
        qty: req.qty,
        status: Status::Approved,
        receipt: crate::receipt::receipt(id, req.order_id, req.qty),
        customer_id: req.customer_id.clone(),
        placed_by: identity::caller().map(|p| p.subject),
    };
    store::put_json(&payment_key(id), &payment)?;
    store::put_json(&by_order_key(req.order_id), &id)?;
    publish_json(
        "PaymentApproved",
        &req.order_id.to_string(),
        &json!({
            "paymentId": id,
            "orderId": req.order_id,
            "carId": req.car_id,
            "qty": req.qty,
            "customerId": req.customer_id,
        }),
    )?;
    Ok(payment)
}

/// The payment of an order, if any (a read; the host may retry it).
pub(crate) fn get_payment(order_id: u64) -> Result<Option<wit::Payment>, wit::PaymentError> {
    crate::faults::inject();
    let read = || -> Result<Option<Payment>, Error> {
        match store::get_json::<u64>(&by_order_key(order_id))? {
            Some(id) => store::get_json::<Payment>(&payment_key(id)),
            None => Ok(None),
        }
    };
    match read() {
        Ok(p) => Ok(p.map(to_wit)),
        Err(e) => panic!("payment store failure: {e}"),
    }
}

fn to_wit(p: Payment) -> wit::Payment {
    wit::Payment {
        id: p.id,
        order_id: p.order_id,
        car_id: p.car_id,
        qty: p.qty,
        status: p.status.as_str().into(),
    }
}

/// Route one request.
pub(crate) fn handle(req: Request) -> ApiResult {
    let method = req.method.as_str();
    if route("/payments", &req.path).is_some() {
        return match method {
            "GET" => list(&req),
            _ => Err(Response::method_not_allowed(method, &["GET"])),
        };
    }
    if route(crate::faults::PATH, &req.path).is_some() && crate::faults::enabled() {
        return match method {
            "GET" => crate::faults::get(),
            "PUT" => crate::faults::put(&req),
            _ => Err(Response::method_not_allowed(method, &["GET", "PUT"])),
        };
    }
    if let Some(p) = route("/payments/{id}", &req.path) {
        return match method {
            "GET" => get(p.id("id")?),
            _ => Err(Response::method_not_allowed(method, &["GET"])),
        };
    }
    Err(Response::not_found(&format!("no resource at {}", req.path)))
}

/// `GET /payments`: every payment for an admin (or when the host lets anonymous callers
/// through), else the caller's own.
fn list(req: &Request) -> ApiResult {
    let page = PageRequest::from_request(req)?;
    match identity::caller().filter(|p| !identity::has_role(p, ADMIN_ROLE)) {
        None => Ok(page::scan_json::<Payment>(PAYMENT_TABLE, &page)?.respond(req)),
        Some(me) => Ok(page::scan_json_where::<Payment>(PAYMENT_TABLE, &page, |p| {
            p.customer_id == me.subject
        })?
        .respond(req)),
    }
}

/// `GET /payments/{id}`: for the payment's customer or an admin (403 otherwise).
fn get(id: u64) -> ApiResult {
    match store::get_json::<Payment>(&payment_key(id))? {
        Some(p) if may_act_for(identity::caller().as_ref(), &p.customer_id, ADMIN_ROLE) => {
            Ok(Response::json(200, &p))
        }
        Some(_) => Err(Response::forbidden(&format!(
            "payment {id} belongs to another customer"
        ))),
        None => Err(Response::not_found(&format!("payment {id} does not exist"))),
    }
}
