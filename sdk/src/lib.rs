//! `ctxhost-sdk`: what a bounded-context component needs besides its domain logic.
//!
//! * [`generate!`] generates a plugin's bindings for its world, sharing the platform and
//!   `wasi:http` types with this crate.
//! * [`http`]: plain [`Request`]/[`Response`] types and [`http::serve`], the whole wasi:http glue.
//! * [`router`]: `/cars/{id}`-style path matching.
//! * [`body`]: JSON body parsing whose errors are 400 problems naming the field.
//! * [`page`]: paged list endpoints (`?limit=&after=`, a `Link` to the next page).
//! * [`store`], [`events`], [`config`], [`log`]: JSON-friendly wrappers over the host imports.
//! * [`identity`]: the caller's principal, and the access rules a context declares.
//! * [`secrets`]: the secrets the operator granted to this context (an environment variable
//!   or a file, re-read on every call). [`config`] reads the same table as the standard
//!   `wasi:config/store`, bound as [`bindings::wasi::config::store`] for code written for
//!   other hosts.
//!
//! The smallest complete context is the workspace's `bench-hello` component, shown here from
//! its own files so this example is always the code CI builds: a `cdylib` crate with the
//! world file `wit/hello.wit`
//!
#![doc = concat!("```wit\n", include_str!("../../bench/components/hello/wit/hello.wit"), "```\n")]
//!
//! and this `src/lib.rs` (build with `cargo build --release --target wasm32-wasip2`; the
//! paths given to [`generate!`] are relative to the plugin's `Cargo.toml`):
//!
#![doc = concat!("```text\n", include_str!("../../bench/components/hello/src/lib.rs"), "```\n")]
#![warn(missing_docs)]

// Generated from `wit/`: the WIT documents these types, not Rust doc comments.
#[allow(missing_docs)]
pub mod bindings;
pub mod body;
pub mod config;
mod error;
pub mod events;
pub mod http;
pub mod identity;
pub mod log;
pub mod page;
pub mod router;
pub mod secrets;
pub mod store;

pub use bindings::ctxhost::platform::types::{CallError, Event};
pub use error::Error;
pub use http::{ApiResult, Request, Response};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Generates a plugin's bindings for `world` (for example `"ctxhost:rental/order"`) from the
/// given WIT directories (relative to the plugin's `Cargo.toml`; later ones may depend on
/// earlier ones), reusing this SDK's types for every platform import and `wasi:http/types`.
/// Everything else (the exports, other imports) is generated in the calling module, including
/// the `export!` macro.
#[macro_export]
macro_rules! generate {
    ($world:literal, $($path:literal),+ $(,)?) => {
        $crate::__wit_bindgen::generate!({
            world: $world,
            path: [$($path),+],
            runtime_path: "::ctxhost_sdk::__wit_bindgen::rt",
            with: {
                "ctxhost:platform/types@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::types,
                "ctxhost:platform/store@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::store,
                "ctxhost:platform/events@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::events,
                "ctxhost:platform/config@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::config,
                "ctxhost:platform/log@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::log,
                "ctxhost:platform/identity@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::identity,
                "ctxhost:platform/secrets@0.1.0": ::ctxhost_sdk::bindings::ctxhost::platform::secrets,
                "wasi:config/store@0.2.0-draft": ::ctxhost_sdk::bindings::wasi::config::store,
                "wasi:http/types@0.2.12": ::ctxhost_sdk::bindings::wasi::http::types,
                "wasi:io/error@0.2.12": ::ctxhost_sdk::bindings::wasi::io::error,
                "wasi:io/poll@0.2.12": ::ctxhost_sdk::bindings::wasi::io::poll,
                "wasi:io/streams@0.2.12": ::ctxhost_sdk::bindings::wasi::io::streams,
                "wasi:clocks/monotonic-clock@0.2.12": ::ctxhost_sdk::bindings::wasi::clocks::monotonic_clock,
            },
            generate_all,
        });
    };
}
