//! Opt-in fault injection, for resilience tests and benchmarks: only when the context's
//! configuration has `fault-injection = "true"` (off by default), `PUT /payments/faults` with
//! `{"latencyMs": 200, "trap": false, "trapRate": 0.0}` stores fault settings in payment's own
//! store, and every call of `payments.authorize` / `payments.get-payment` then sleeps
//! `latencyMs` and traps (always with `trap`, or with probability `trapRate`). `GET` reads
//! them back; `PUT` with `{}` clears them.

use ctxhost_sdk::body::JsonObject;
use ctxhost_sdk::{ApiResult, Response, config, store};
use serde::{Deserialize, Serialize};

/// The resource.
pub(crate) const PATH: &str = "/payments/faults";
/// Configuration key that enables fault injection.
pub(crate) const ENABLE_KEY: &str = "fault-injection";
/// Store key of the settings.
const KEY: &str = "faults/settings";
/// Longest injected latency.
const MAX_LATENCY_MS: u64 = 60_000;

/// The injected faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Faults {
    pub latency_ms: u64,
    pub trap: bool,
    pub trap_rate: f64,
}

/// Whether fault injection is enabled by configuration.
pub(crate) fn enabled() -> bool {
    config::get(ENABLE_KEY).is_some_and(|v| v.trim() == "true")
}

fn current() -> Faults {
    if !enabled() {
        return Faults::default();
    }
    store::get_json::<Faults>(KEY)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Apply the configured faults to the current call.
pub(crate) fn inject() {
    let f = current();
    if f.latency_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(f.latency_ms));
    }
    if f.trap || (f.trap_rate > 0.0 && random_unit() < f.trap_rate) {
        panic!("injected fault: payment traps");
    }
}

fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `GET /payments/faults`.
pub(crate) fn get() -> ApiResult {
    Ok(Response::json(200, &current()))
}

/// `PUT /payments/faults`.
pub(crate) fn put(req: &ctxhost_sdk::Request) -> ApiResult {
    let body = JsonObject::parse(req)?;
    let latency_ms = match body.value("latencyMs") {
        None => 0,
        Some(_) => body.int("latencyMs", 0)?,
    };
    if latency_ms > MAX_LATENCY_MS {
        return Err(ctxhost_sdk::body::field_error(
            "latencyMs",
            &format!("at most {MAX_LATENCY_MS}"),
        ));
    }
    let trap = match body.value("trap") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ctxhost_sdk::body::field_error("trap", "a boolean"))?,
    };
    let trap_rate = match body.value("trapRate") {
        None => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| ctxhost_sdk::body::field_error("trapRate", "a number from 0 to 1"))?,
    };
    let f = Faults {
        latency_ms,
        trap,
        trap_rate,
    };
    store::put_json(KEY, &f)?;
    Ok(Response::json(200, &f))
}
