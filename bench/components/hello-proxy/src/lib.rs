//! `bench-hello-proxy`: `bench-hello` as a plain `wasi:http/proxy` component (it exports only
//! `wasi:http/incoming-handler`), so `wasmtime serve` can run it. Per request it does the same
//! work as the SDK's glue in `bench-hello`: read method, path, headers and the whole body, then
//! write the same headers and the same fixed body.

wit_bindgen::generate!({
    inline: r#"
        package ctxhost-bench:hello-proxy;

        world hello-proxy {
            export wasi:http/incoming-handler@0.2.12;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// The fixed answer (the same bytes as `bench-hello`).
const BODY: &[u8] = br#"{"hello":"world"}"#;
/// Requests with a larger body are answered 413 (as the SDK does).
const MAX_BODY: usize = 4 * 1024 * 1024;

struct HelloProxy;

impl Guest for HelloProxy {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let (status, content_type, body) = match read(&req) {
            Some((_method, path, _headers, _body)) if path == "/hello" => {
                (200, "application/json", BODY.to_vec())
            }
            Some(_) => (404, "application/problem+json", b"{}".to_vec()),
            None => (400, "application/problem+json", b"{}".to_vec()),
        };
        drop(req);
        write(out, status, content_type, &body);
    }
}

export!(HelloProxy);

type Headers = Vec<(String, Vec<u8>)>;

fn read(req: &IncomingRequest) -> Option<(String, String, Headers, Vec<u8>)> {
    let method = match req.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(m) => m.to_ascii_uppercase(),
    };
    let path_with_query = req.path_with_query().unwrap_or_else(|| "/".into());
    let path = match path_with_query.split_once('?') {
        Some((p, _)) => p.to_string(),
        None => path_with_query,
    };
    let headers = req.headers().entries();
    let body = req.consume().ok()?;
    let mut data = Vec::new();
    {
        let stream = body.stream().ok()?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() > MAX_BODY {
                        return None;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return None,
            }
        }
    }
    drop(IncomingBody::finish(body));
    Some((method, path, headers, data))
}

fn write(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", content_type.as_bytes());
    let _ = headers.set("content-length", &[body.len().to_string().into_bytes()]);
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(status);
    let Ok(out_body) = outgoing.body() else {
        ResponseOutparam::set(out, Ok(outgoing));
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(stream) = out_body.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(out_body, None);
}
