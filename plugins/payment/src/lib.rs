//! The `payment` context: approves payments for orders (called synchronously by `order`) and
//! cancels them when the rental is rejected or the order cancelled.
//!
//! This file is the glue (bindings, manifest, exports); the domain lives in [`model`] (types
//! and rules), [`api`] (HTTP resources and `payments.authorize`), [`receipt`] (each
//! payment's HMAC under the granted secret `signing-key`) and [`events`] (event handlers).

mod api;
mod events;
mod faults;
mod model;
mod receipt;

ctxhost_sdk::generate!("ctxhost:rental/payment", "../../wit", "../../wit/rental");

use exports::ctxhost::platform::{access, context, subscriber};
use exports::ctxhost::rental::payments;
use exports::wasi::http::incoming_handler;

struct Payment;

impl context::Guest for Payment {
    fn ready() -> Result<(), String> {
        receipt::check_key();
        Ok(())
    }

    fn describe() -> context::Manifest {
        let route = |method: &str, path: &str| context::Route {
            method: method.into(),
            path: path.into(),
        };
        let mut routes = vec![route("GET", "/payments"), route("GET", "/payments/{id}")];
        if faults::enabled() {
            routes.push(route("GET", faults::PATH));
            routes.push(route("PUT", faults::PATH));
        }
        context::Manifest {
            version: env!("CARGO_PKG_VERSION").into(),
            routes,
            subscriptions: events::SUBSCRIPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl access::Guest for Payment {
    /// Payments need a caller; which a caller sees is the domain's rule (see [`api`]). The
    /// fault-injection resource, when enabled, is for admins.
    fn rules() -> Vec<access::RouteRule> {
        let rule = |method: &str, path: &str, rule: access::Rule| access::RouteRule {
            method: method.into(),
            path: path.into(),
            rule,
        };
        let mut rules = vec![
            rule("GET", "/payments", access::Rule::Authenticated),
            rule("GET", "/payments/{id}", access::Rule::Authenticated),
        ];
        if faults::enabled() {
            for method in ["GET", "PUT"] {
                rules.push(rule(
                    method,
                    faults::PATH,
                    access::Rule::Roles(vec![model::ADMIN_ROLE.into()]),
                ));
            }
        }
        rules
    }
}

impl subscriber::Guest for Payment {
    fn handle(event: subscriber::Event) -> Result<(), String> {
        events::handle(&event)
    }
}

impl payments::Guest for Payment {
    fn authorize(
        request: payments::PaymentRequest,
    ) -> Result<payments::Payment, payments::PaymentError> {
        api::authorize(request)
    }

    fn get_payment(order_id: u64) -> Result<Option<payments::Payment>, payments::PaymentError> {
        api::get_payment(order_id)
    }
}

impl incoming_handler::Guest for Payment {
    fn handle(req: incoming_handler::IncomingRequest, out: incoming_handler::ResponseOutparam) {
        ctxhost_sdk::http::serve(req, out, api::handle);
    }
}

export!(Payment);
