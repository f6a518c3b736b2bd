//! The `view` context: CQRS read models (availability per car, each customer's orders),
//! fed only by events and never reading another context's data.
//!
//! This file is the glue (bindings, manifest, exports); the domain lives in [`model`] (rows,
//! keys and merge rules), [`api`] (HTTP resources) and [`events`] (event handlers).

mod api;
mod events;
mod model;

ctxhost_sdk::generate!("ctxhost:rental/view", "../../wit", "../../wit/rental");

use exports::ctxhost::platform::{context, subscriber};
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

// Placeholder until this context declares its access rules: no rule, so every route takes
// the host's default.
impl exports::ctxhost::platform::access::Guest for View {
    fn rules() -> Vec<exports::ctxhost::platform::access::RouteRule> {
        vec![]
    }
}

export!(View);
