//! Helpers for the end-to-end tests in `tests/tests/`: they start the real `ctxhost` binary
//! with the real plugins, each test on its own free port with its own data directory, and
//! speak HTTP to it like any API client. One module per concern, everything re-exported here:
//!
//! - `host`: process supervision of the binary: [`Host`] starts, SIGKILLs, SIGTERMs and
//!   restarts a host on the same data directory; where the binary and the plugins are.
//! - `config`: the host's configuration file, from [`HostOptions`].
//! - `http`: generic HTTP calls with strict checks ([`Api`], [`Resp`]).
//! - `rental`: the domain calls of the rental API on [`Api`], a load of orders
//!   ([`OrderLoad`]) and the invariants the rental state must reach after a disturbance
//!   ([`assert_rental_consistent`]).
//! - `poll`: bounded polling ([`eventually`], [`ensure_that!`]) for what the saga and the
//!   view settle asynchronously.
//! - `load`: a bounded background load of arbitrary requests ([`Load`]).
//! - `wasm`: a new version of a component with the same behaviour ([`with_marker`]).
//! - [`jwt`]: bearer tokens made independently of the host's JWT library (HS256 by the
//!   `hmac` crate, RS256 by the `openssl` command line).
//! - `tools`: external programs a test needs, installed from Debian's packages when
//!   missing ([`ensure_program`]).
//! - [`broker`]: RabbitMQ for the tests of the AMQP transport ([`HostOptions::amqp`]).
//! - [`otlp`]: a real OTLP trace receiver (HTTP/protobuf or gRPC) for the trace tests.
//! - [`netns`]: several machines on one, network namespaces joined by a bridge
//!   ([`netns::Network`]), and a relay to a service that listens on loopback only.
//! - [`oci`]: an OCI image unpacked and its entry point run as a container runtime would.
//! - `browser`: a headless Chromium driven over WebDriver, for the console ([`Browser`]).
//!
//! The binary and the plugins come from `CTXHOST_BIN` and `CTXHOST_PLUGIN_DIR` (set by
//! `cargo xtask test`) or from the workspace's `target/` directory (`cargo xtask build`).

pub mod broker;
mod browser;
mod config;
mod host;
mod http;
pub mod jwt;
mod load;
pub mod netns;
pub mod oci;
pub mod otlp;
mod poll;
mod rental;
mod tools;
mod wasm;

pub use browser::Browser;
pub use config::{ADMIN_TOKEN, HostOptions, PLUGINS};
pub use host::{Host, TestDir, host_binary, plugin_dir, test_cache_dir, unique_name};
pub use http::{Api, Resp, as_list, id, text};
pub use load::{Load, LoadRequest};
pub use poll::eventually;
pub use rental::{
    Created, LoadOutcome, OrderLoad, SETTLE, assert_rental_consistent,
    assert_rental_consistent_across, assert_some_rented_some_rejected, assert_view_matches_orders,
    availability_across, availability_is, check_placed_order, rental_snapshot, settled, sorted,
    view_row, view_row_for,
};
pub use tools::{ensure_program, find_program};
pub use wasm::with_marker;
