//! `bad-payments`: a test-only component whose `ctxhost:rental/payments` export does not
//! match the contract `order` was built against. Deploying it as `payment` must be refused.

ctxhost_sdk::generate!("ctxhost:rental/bad-payments", "../../../wit", "wit");

use ctxhost_sdk::{ApiResult, Request, Response};
use exports::ctxhost::platform::{context, subscriber};
use exports::ctxhost::rental::payments;
use exports::wasi::http::incoming_handler;

struct Bad;

impl context::Guest for Bad {
    fn describe() -> context::Manifest {
        context::Manifest {
            version: env!("CARGO_PKG_VERSION").into(),
            routes: Vec::new(),
            subscriptions: Vec::new(),
        }
    }

    fn ready() -> Result<(), String> {
        Ok(())
    }
}

impl subscriber::Guest for Bad {
    fn handle(_event: subscriber::Event) -> Result<(), String> {
        Ok(())
    }
}

impl payments::Guest for Bad {
    fn authorize(order_id: u64) -> Result<u64, String> {
        Ok(order_id)
    }
}

impl incoming_handler::Guest for Bad {
    fn handle(req: incoming_handler::IncomingRequest, out: incoming_handler::ResponseOutparam) {
        ctxhost_sdk::http::serve(req, out, handle);
    }
}

export!(Bad);

fn handle(req: Request) -> ApiResult {
    Err(Response::not_found(&format!("no resource at {}", req.path)))
}
