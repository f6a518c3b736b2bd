//! `bench-hello`: the smallest useful context, for the peer benchmark. `GET /hello` answers
//! 200 with a fixed small JSON body through the SDK's wasi:http glue (read the request, write
//! the whole answer). `bench-hello-proxy` does the same work as a plain `wasi:http/proxy`
//! component for `wasmtime serve`.

ctxhost_sdk::generate!("ctxhost-bench:hello/hello", "../../../wit", "wit");

use ctxhost_sdk::{ApiResult, Request, Response};
use exports::ctxhost::platform::{context, subscriber};
use exports::wasi::http::incoming_handler;

/// The fixed answer (the same bytes as `bench-hello-proxy`).
const BODY: &[u8] = br#"{"hello":"world"}"#;

struct Hello;

impl context::Guest for Hello {
    fn describe() -> context::Manifest {
        context::Manifest {
            version: env!("CARGO_PKG_VERSION").into(),
            routes: vec![context::Route {
                method: "GET".into(),
                path: "/hello".into(),
            }],
            subscriptions: vec![],
        }
    }

    fn ready() -> Result<(), String> {
        Ok(())
    }
}

impl subscriber::Guest for Hello {
    fn handle(_event: subscriber::Event) -> Result<(), String> {
        Ok(())
    }
}

impl incoming_handler::Guest for Hello {
    fn handle(req: incoming_handler::IncomingRequest, out: incoming_handler::ResponseOutparam) {
        ctxhost_sdk::http::serve(req, out, handle);
    }
}

export!(Hello);

fn handle(req: Request) -> ApiResult {
    if req.path != "/hello" {
        return Err(Response::not_found(&format!("no resource at {}", req.path)));
    }
    Ok(Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: BODY.to_vec(),
    })
}
