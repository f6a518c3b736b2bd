//! The `view` context: CQRS read models (availability per car, each customer's orders),
//! fed only by events and never reading another context's data.
//!
//! This file is the glue (bindings, manifest, exports); the domain lives in [`model`] (rows,
//! keys and merge rules), [`api`] (HTTP resources) and [`events`] (event handlers).

mod api;
mod events;
mod model;

ctxhost_sdk::generate!("ctxhost:rental/view", "../../wit", "../../wit/rental");

use exports::ctxhost::platform::{access, context, subscriber};
use exports::wasi::http::incoming_handler;

struct View;

impl context::Guest for View {
    fn ready() -> Result<(), String> {
        Ok(())
    }

    fn describe() -> context::Manifest {
        let route = |method: &str, path: &str| context::Route {
            method: method.into(),
            path: path.into(),
        };
        context::Manifest {
            version: env!("CARGO_PKG_VERSION").into(),
            routes: vec![
                route("GET", "/availability"),
                route("GET", "/availability/{carId}"),
                route("GET", "/customers/{customerId}/orders"),
            ],
            subscriptions: events::SUBSCRIPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl access::Guest for View {
    /// Availability is public; a customer's orders are for that customer or an admin (the
    /// ownership check is in [`api`]).
    fn rules() -> Vec<access::RouteRule> {
        let rule = |method: &str, path: &str, rule: access::Rule| access::RouteRule {
            method: method.into(),
            path: path.into(),
            rule,
        };
        vec![
            rule("GET", "/availability", access::Rule::Public),
            rule("GET", "/availability/{carId}", access::Rule::Public),
            rule(
                "GET",
                "/customers/{customerId}/orders",
                access::Rule::Authenticated,
            ),
        ]
    }
}

impl subscriber::Guest for View {
    fn handle(event: subscriber::Event) -> Result<(), String> {
        events::handle(&event)
    }
}

impl incoming_handler::Guest for View {
    fn handle(req: incoming_handler::IncomingRequest, out: incoming_handler::ResponseOutparam) {
        ctxhost_sdk::http::serve(req, out, api::handle);
    }
}

export!(View);
