//! Capabilities the host gives every context through WIT imports. Each file implements one
//! `ctxhost:platform` interface on the invocation's store data; guest-visible failures are
//! WIT values, host failures trap.

mod config;
mod events;
mod log;
mod store;

impl crate::bindings::types::Host for crate::runtime::Invocation {}
