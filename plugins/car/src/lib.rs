//! The `car` context: the fleet of car models and their available units.
//!
//! This file is the glue (bindings, manifest, exports); the domain lives in [`model`] (types
//! and rules), [`api`] (HTTP resources) and [`events`] (event handlers).

mod api;
mod events;
mod model;

ctxhost_sdk::generate!("ctxhost:rental/car", "../../wit", "../../wit/rental");

use exports::ctxhost::platform::{context, subscriber};
use exports::wasi::http::incoming_handler;

struct Car;

impl context::Guest for Car {
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
                route("POST", "/cars"),
                route("GET", "/cars"),
                route("GET", "/cars/{id}"),
            ],
            subscriptions: events::SUBSCRIPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl subscriber::Guest for Car {
    fn handle(event: subscriber::Event) -> Result<(), String> {
        events::handle(&event)
    }
}

impl incoming_handler::Guest for Car {
    fn handle(req: incoming_handler::IncomingRequest, out: incoming_handler::ResponseOutparam) {
        ctxhost_sdk::http::serve(req, out, api::handle);
    }
}

// Placeholder until this context declares its access rules: no rule, so every route takes
// the host's default.
impl exports::ctxhost::platform::access::Guest for Car {
    fn rules() -> Vec<exports::ctxhost::platform::access::RouteRule> {
        vec![]
    }
}

export!(Car);
