//! Host bindings of the `ctxhost:platform/platform` world, generated from `wit/`.
//!
//! Imports (store, events, config, log, identity, secrets, `wasi:config/store`) are
//! implemented in `capabilities/`; they return
//! `wasmtime::Result<T>` so a host bug traps while guest-visible failures are WIT values.
//! Exports (`context`, `subscriber`) are called asynchronously by the runtime. HTTP ingress
//! uses the `wasi:http` bindings of `wasmtime-wasi-http`.

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "ctxhost:platform/platform",
    imports: { default: trappable },
    exports: { default: async },
    require_store_data_send: true,
});

pub(crate) use self::ctxhost::platform::{config, events, identity, log, secrets, store, types};
pub(crate) use self::exports::ctxhost::platform::context::Manifest;
pub(crate) use self::wasi::config::store as wasi_config;

/// The optional `ctxhost:platform/access` export (world `access-rules`): bound on its own so
/// that a component without it still matches the `platform` world.
pub(crate) mod access {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ctxhost:platform/access-rules",
        exports: { default: async },
        require_store_data_send: true,
    });

    pub(crate) use self::exports::ctxhost::platform::access::{RouteRule, Rule};
}
