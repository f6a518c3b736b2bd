//! `chaos`: a test-only context whose routes misbehave on purpose (panic, trap, stack
//! overflow, unbounded allocation, endless loop, failing after a typed call) so end-to-end
//! tests can check that the host confines each failure to its own request. Also raw store
//! and publish access for isolation tests, and `POST /chaos/flood`, which makes the host
//! hold too much (scans, writes, events, sequence names) for the tests of its limits; its
//! configuration read through the standard `wasi:config/store`, and whether a secret is
//! granted to it (with a digest of the value, never the value), for the tests of secrets.
//! Never shipped by default.

ctxhost_sdk::generate!(
    "ctxhost:chaos/chaos",
    "../../../wit",
    "../../../wit/rental",
    "wit"
);

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use ctxhost::rental::payments::{self, PaymentRequest};
use ctxhost_sdk::bindings::ctxhost::platform::store as raw_store;
use ctxhost_sdk::bindings::wasi::config::store as wasi_config_store;
use ctxhost_sdk::body::JsonObject;
use ctxhost_sdk::router::route;
use ctxhost_sdk::{ApiResult, Request, Response, store};
use exports::ctxhost::platform::{context, subscriber};
use exports::wasi::http::incoming_handler;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Events of this type are refused forever (for poison-message tests).
const POISON: &str = "ChaosPoison";
/// Events of this type add one to the count under `tally-<correlation id>`, so tests can
/// tell how often each was applied; refused while the key `fail-tally` holds a non-empty
/// value (set it, and clear it with an empty one, with `POST /chaos/write`), for the tests
/// of dead letters and their retries.
const TALLY: &str = "ChaosTally";
/// Events of this type make the handler store, under `who-<correlation id>`, the subject
/// of the principal the delivery runs for (`anonymous` when none): the tests of identity
/// read it back with `GET /chaos/read/{key}`.
const WHO: &str = "ChaosWho";

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/chaos/ok"),
    ("GET", "/chaos/panic"),
    ("GET", "/chaos/trap"),
    ("GET", "/chaos/overflow"),
    ("GET", "/chaos/alloc"),
    ("GET", "/chaos/loop"),
    ("POST", "/chaos/pay-then-fail"),
    ("POST", "/chaos/write"),
    ("GET", "/chaos/read/{key}"),
    ("POST", "/chaos/publish"),
    ("GET", "/chaos/payment-of/{orderId}"),
    ("GET", "/chaos/served"),
    ("POST", "/chaos/stderr"),
    ("POST", "/chaos/flood"),
    ("GET", "/chaos/config"),
    ("GET", "/chaos/config/{key}"),
    ("GET", "/chaos/secret/{name}"),
];

/// Requests this instance has served: guest memory, so it stays 1 when every request gets
/// a fresh instance and grows when the host reuses instances.
static SERVED: AtomicU64 = AtomicU64::new(0);

struct Chaos;

impl context::Guest for Chaos {
    /// Fails while the key `fail-ready` exists in the store (set it with `POST /chaos/write`),
    /// so tests can deploy a version that fails its readiness check.
    fn ready() -> Result<(), String> {
        match store::get("fail-ready") {
            Ok(Some(reason)) => Err(format!("not ready: {}", String::from_utf8_lossy(&reason))),
            Ok(None) => Ok(()),
            Err(e) => Err(format!("cannot read the store: {e:?}")),
        }
    }

    /// Blocks (asleep in a host call, out of reach of the CPU deadline) while the key
    /// `hang-describe` exists in the store, so tests can deploy a version whose `describe`
    /// never returns.
    fn describe() -> context::Manifest {
        if let Ok(Some(_)) = store::get("hang-describe") {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        context::Manifest {
            version: env!("CARGO_PKG_VERSION").into(),
            routes: ROUTES
                .iter()
                .map(|(method, path)| context::Route {
                    method: (*method).into(),
                    path: (*path).into(),
                })
                .collect(),
            subscriptions: vec![POISON.into(), WHO.into(), TALLY.into()],
        }
    }
}

impl subscriber::Guest for Chaos {
    fn handle(event: subscriber::Event) -> Result<(), String> {
        if event.type_ == POISON {
            return Err("poisoned".into());
        }
        if event.type_ == TALLY {
            return tally(&event.correlation_id);
        }
        if event.type_ == WHO {
            let who = ctxhost_sdk::identity::caller()
                .map(|p| p.subject)
                .unwrap_or_else(|| "anonymous".into());
            store::put(&format!("who-{}", event.correlation_id), who.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl incoming_handler::Guest for Chaos {
    fn handle(req: incoming_handler::IncomingRequest, out: incoming_handler::ResponseOutparam) {
        ctxhost_sdk::http::serve(req, out, handle);
    }
}

export!(Chaos);

fn handle(req: Request) -> ApiResult {
    SERVED.fetch_add(1, Ordering::Relaxed);
    let Some((method, pattern)) = ROUTES
        .iter()
        .find(|(_, pattern)| route(pattern, &req.path).is_some())
    else {
        return Err(Response::not_found(&format!("no resource at {}", req.path)));
    };
    if req.method != *method {
        return Err(Response::method_not_allowed(&req.method, &[method]));
    }
    match *pattern {
        "/chaos/served" => Ok(Response::json(
            200,
            &json!({ "served": SERVED.load(Ordering::Relaxed) }),
        )),
        "/chaos/ok" => Ok(Response::json(200, &json!({ "ok": true }))),
        "/chaos/panic" => panic!("chaos: panic requested"),
        "/chaos/trap" => trap(),
        "/chaos/overflow" => Ok(Response::json(200, &json!({ "depth": recurse(0) }))),
        "/chaos/alloc" => allocate_forever(),
        "/chaos/loop" => spin_forever(),
        "/chaos/pay-then-fail" => pay_then_fail(&req),
        "/chaos/write" => write(&req),
        "/chaos/read/{key}" => {
            let key = route(pattern, &req.path)
                .and_then(|p| p.get("key").map(str::to_string))
                .unwrap_or_default();
            read(&key)
        }
        "/chaos/publish" => publish(&req),
        "/chaos/config" => wasi_config_all(),
        "/chaos/config/{key}" => {
            let key = route(pattern, &req.path)
                .and_then(|p| p.get("key").map(str::to_string))
                .unwrap_or_default();
            wasi_config(&key)
        }
        "/chaos/secret/{name}" => {
            let name = route(pattern, &req.path)
                .and_then(|p| p.get("name").map(str::to_string))
                .unwrap_or_default();
            Ok(secret(&name))
        }
        "/chaos/stderr" => stderr(&req),
        "/chaos/flood" => flood(&req),
        "/chaos/payment-of/{orderId}" => {
            let order_id = route(pattern, &req.path)
                .and_then(|p| p.get("orderId").and_then(|v| v.parse::<u64>().ok()))
                .unwrap_or(0);
            payment_of(order_id)
        }
        _ => Err(Response::not_found("unhandled chaos route")),
    }
}

/// Apply a `ChaosTally` event: refused while `fail-tally` is set, else one more under
/// `tally-<correlation id>`.
fn tally(correlation_id: &str) -> Result<(), String> {
    let failing = store::get("fail-tally").map_err(|e| e.to_string())?;
    if let Some(reason) = failing.filter(|r| !r.is_empty()) {
        return Err(format!(
            "tally refused: {}",
            String::from_utf8_lossy(&reason)
        ));
    }
    let key = format!("tally-{correlation_id}");
    let count = store::get(&key)
        .map_err(|e| e.to_string())?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    store::put(&key, (count + 1).to_string().as_bytes()).map_err(|e| e.to_string())
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Unbounded, non-tail recursion with a live stack frame: a stack overflow.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(false) {
        return depth;
    }
    let frame = black_box([depth; 32]);
    recurse(frame[0] + 1).wrapping_add(black_box(frame)[31])
}

/// Keep allocating and touching 1 MiB blocks until the memory cap stops us.
fn allocate_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        blocks.push(black_box(block));
    }
}

/// Spin until the deadline stops us.
fn spin_forever() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// `{"orderId","carId","qty","mode":"trap"|"error"}`: pay, then fail after the payment.
fn pay_then_fail(req: &Request) -> ApiResult {
    let body = JsonObject::parse(req)?;
    let order_id = body.int("orderId", 0)?;
    let car_id = body.int("carId", 0)?;
    let qty = body.int_u32("qty", 0)?;
    let mode = body.one_of("mode", &["trap", "error"])?;
    match payments::authorize(&PaymentRequest {
        order_id,
        car_id,
        qty,
        customer_id: "chaos".into(),
    }) {
        Ok(payment) if mode == "trap" => {
            panic!("chaos: trapping after payment {}", payment.id)
        }
        Ok(payment) => Err(Response::problem_status(
            500,
            &format!("chaos: failing after payment {}", payment.id),
        )),
        Err(e) => Err(Response::problem_status(
            502,
            &format!("payment failed: {e:?}"),
        )),
    }
}

/// `{"key","value"}`: store a raw string value.
fn write(req: &Request) -> ApiResult {
    let body = JsonObject::parse(req)?;
    let key = body.nonempty_string("key")?;
    let value = body.string("value")?;
    store::put(&key, value.as_bytes())?;
    Ok(Response::json(200, &json!({ "key": key, "value": value })))
}

fn read(key: &str) -> ApiResult {
    match store::get(key)? {
        Some(bytes) => Ok(Response::json(
            200,
            &json!({ "key": key, "value": String::from_utf8_lossy(&bytes) }),
        )),
        None => Err(Response::not_found(&format!("no value under `{key}`"))),
    }
}

/// `{"text","times"}`: write `text` to standard error `times` times.
fn stderr(req: &Request) -> ApiResult {
    use std::io::Write;
    let body = JsonObject::parse(req)?;
    let text = body.string("text")?;
    let times = body.int("times", 1)?;
    let mut err = std::io::stderr();
    for _ in 0..times {
        // A write error must not fail the request: the host decides what it keeps.
        let _ = err.write_all(text.as_bytes());
    }
    Ok(Response::json(
        200,
        &json!({ "written": text.len() as u64 * times }),
    ))
}

/// `{"type","correlationId","data"}`: publish an arbitrary event.
fn publish(req: &Request) -> ApiResult {
    let body = JsonObject::parse(req)?;
    let event_type = body.nonempty_string("type")?;
    let correlation_id = body.string("correlationId")?;
    let data = body
        .value("data")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    ctxhost_sdk::events::publish_json(&event_type, &correlation_id, &data)
        .map_err(|e| Response::bad_request(&e.to_string()))?;
    Ok(Response::json(200, &json!({ "published": event_type })))
}

/// `GET /chaos/payment-of/{orderId}`: `payments.get-payment`, an idempotent call the host may
/// retry; 503 when the host could not get an answer.
fn payment_of(order_id: u64) -> ApiResult {
    match payments::get_payment(order_id) {
        Ok(p) => Ok(Response::json(
            200,
            &json!({ "orderId": order_id, "paymentId": p.map(|p| p.id) }),
        )),
        Err(e) => Err(Response::unavailable(&format!("payment: {e:?}"), 1)),
    }
}

/// `{"what", "count", "size", "start", "prefix", "limit"}`: ask the host to hold a lot, one
/// call at a time, and stop at the first refusal:
///
/// - `write`: put `count` values of `size` bytes under `<prefix><start + i, 8 digits>`
///   (`prefix` defaults to `flood/`);
/// - `scan`: one `scan-prefix` of `prefix` with `limit` (absent: none);
/// - `publish`: publish `count` events `ChaosFlood` with `size` bytes of data;
/// - `sequences`: `next-id` of `count` names `seq-<start + i>`, padded with `x` to `size`
///   bytes.
///
/// 200 `{"done": n}` (for a scan, `n` entries), or 422 whose detail is the host's refusal,
/// prefixed by how many calls succeeded before it (`after 10: ...`).
fn flood(req: &Request) -> ApiResult {
    let body = JsonObject::parse(req)?;
    let what = body.one_of("what", &["write", "scan", "publish", "sequences"])?;
    let optional = |name: &str| match body.value(name) {
        Some(_) => body.int(name, 0),
        None => Ok(0),
    };
    let count = optional("count")?;
    let size = optional("size")? as usize;
    let start = optional("start")?;
    let prefix = match body.value("prefix") {
        Some(_) => body.nonempty_string("prefix")?,
        None => "flood/".to_string(),
    };
    let refused = |done: u64, e: String| Response::unprocessable(&format!("after {done}: {e}"));
    match what.as_str() {
        "scan" => {
            let limit = match body.value("limit") {
                Some(_) => Some(body.int_u32("limit", 0)?),
                None => None,
            };
            return match raw_store::scan_prefix(&prefix, limit) {
                Ok(entries) => Ok(Response::json(200, &json!({ "done": entries.len() }))),
                Err(e) => Err(refused(0, ctxhost_sdk::Error::from(e).0)),
            };
        }
        "write" => {
            for i in 0..count {
                let key = format!("{prefix}{:08}", start + i);
                if let Err(e) = store::put(&key, &vec![b'w'; size]) {
                    return Err(refused(i, e.0));
                }
            }
        }
        "publish" => {
            let data = "p".repeat(size);
            for i in 0..count {
                if let Err(e) = ctxhost_sdk::events::publish_json("ChaosFlood", "flood", &data) {
                    return Err(refused(i, e.0));
                }
            }
        }
        _ => {
            for i in 0..count {
                let mut name = format!("seq-{}", start + i);
                while name.len() < size {
                    name.push('x');
                }
                if let Err(e) = store::next_id(&name) {
                    return Err(refused(i, e.0));
                }
            }
        }
    }
    Ok(Response::json(200, &json!({ "done": count })))
}

/// `GET /chaos/config/{key}`: the value through the standard `wasi:config/store` (not the
/// host's own `config` interface), 404 when not configured.
fn wasi_config(key: &str) -> ApiResult {
    match wasi_config_store::get(key) {
        Ok(Some(value)) => Ok(Response::json(200, &json!({ "key": key, "value": value }))),
        Ok(None) => Err(Response::not_found(&format!("`{key}` is not configured"))),
        Err(e) => Err(Response::problem_status(
            500,
            &format!("wasi:config: {e:?}"),
        )),
    }
}

/// `GET /chaos/config`: every key and value through `wasi:config/store`'s `get-all`.
fn wasi_config_all() -> ApiResult {
    match wasi_config_store::get_all() {
        Ok(pairs) => {
            let map: serde_json::Map<String, serde_json::Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            Ok(Response::json(200, &serde_json::Value::Object(map)))
        }
        Err(e) => Err(Response::problem_status(
            500,
            &format!("wasi:config: {e:?}"),
        )),
    }
}

/// `GET /chaos/secret/{name}`: whether the secret is granted and readable, with the length
/// and the lowercase hex SHA-256 of its value so tests can tell values apart. A test
/// component only: a real context never answers anything derived from a secret.
fn secret(name: &str) -> Response {
    match ctxhost_sdk::secrets::get(name) {
        Some(value) => {
            let sha256: String = Sha256::digest(&value)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Response::json(
                200,
                &json!({ "name": name, "granted": true, "length": value.len(), "sha256": sha256 }),
            )
        }
        None => Response::json(200, &json!({ "name": name, "granted": false })),
    }
}
