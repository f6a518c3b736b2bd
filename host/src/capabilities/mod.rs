//! Capabilities the host gives every context through WIT imports (`ctxhost:platform`
//! store, events, config, log, types). Each file implements one interface on
//! [`CapabilityCtx`], the capability state an invocation's store holds; guest-visible
//! failures are WIT values, host failures trap.
//!
//! The runtime links them with [`add_to_linker`] and binds the per-invocation parts (unit
//! of work, trace id) before each invocation; nothing here knows about instances or
//! engines.

mod config;
mod events;
mod log;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::Platform;
use crate::state::{Sequences, SharedUnit, Table};

/// What the capabilities of one invocation act on: the context they serve, and the unit of
/// work and trace of the invocation running now.
pub(crate) struct CapabilityCtx {
    /// The context's name: the source of its events, the prefix of its sequences.
    pub(crate) context: Arc<str>,
    /// The context's own table: the only keys its store reaches.
    pub(crate) table: Table,
    /// Read-only configuration of the context.
    pub(crate) config: Arc<BTreeMap<String, String>>,
    /// The host's sequences behind `store.next-id`.
    pub(crate) sequences: Arc<Sequences>,
    /// The unit of work of the running invocation (`None` between invocations).
    pub(crate) unit: Option<SharedUnit>,
    /// The trace of the running invocation.
    pub(crate) trace_id: Arc<str>,
}

impl CapabilityCtx {
    /// The unit of work of the running invocation; a call between invocations is a host bug
    /// and traps.
    pub(crate) fn unit(&self) -> wasmtime::Result<&SharedUnit> {
        self.unit
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("no invocation is running on this instance"))
    }
}

/// The `HasData` marker that lets the generated bindings reach a [`CapabilityCtx`].
struct Capabilities;

impl HasData for Capabilities {
    type Data<'a> = &'a mut CapabilityCtx;
}

/// Define every `ctxhost:platform` import in `linker`, on the [`CapabilityCtx`] that `get`
/// finds in the store's data.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut CapabilityCtx,
) -> wasmtime::Result<()> {
    Platform::add_to_linker::<T, Capabilities>(linker, get)
}

impl crate::bindings::types::Host for CapabilityCtx {}
