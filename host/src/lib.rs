//! `ctxhost`: a WebAssembly component host for business bounded contexts.
//!
//! Each context is a Wasm component behind the WIT contract in `wit/`; the host gives it an
//! HTTP gateway, its own transactional store, events and calls to other contexts.
//!
//! # Layout
//!
//! - `config`: the TOML file, `CTXHOST_*` variables and flags, resolved into `Settings`.
//! - `server`: assembles the parts and serves (`run`).
//! - `gateway`: the axum entry point, route table and problem answers.
//! - `runtime`: engine, loading and linking components, running invocations.
//! - `capabilities`: the WIT imports given to components (store, events, config, log).
//! - `state`: the redb database, units of work and the group committer.
//! - `bus`: event envelopes, delivery with inbox (batched), the embedded transport and the
//!   RabbitMQ one (`bus::amqp`).
//! - `swap`: hot swap (deploy, rollback, versions, watched directory, self-healing).
//! - `admin`: health, readiness and operator endpoints (bearer token).
//! - `resilience`: timeouts, circuit breakers, bulkheads and retries of calls between
//!   contexts; rate limits at the gateway.

pub mod admin;
pub mod bindings;
pub mod bus;
mod capabilities;
pub mod config;
pub mod gateway;
pub mod resilience;
pub mod runtime;
pub mod server;
pub mod state;
pub mod swap;
pub mod time;

pub use config::{Overrides, Settings};
pub use server::run;
