//! Capabilities the host gives every context through WIT imports (`ctxhost:platform`
//! store, events, config, log, identity, secrets, types, and the standard
//! `wasi:config/store`). Each file implements one interface on
//! [`CapabilityCtx`], the capability state an invocation's store holds; guest-visible
//! failures are WIT values, host failures trap.
//!
//! The runtime links them with [`add_to_linker`] and binds the per-invocation parts (unit
//! of work, trace id) before each invocation; nothing here knows about instances or
//! engines.

mod config;
mod events;
mod identity;
mod log;
mod secrets;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

pub(crate) use events::valid_type as valid_event_type;
pub(crate) use secrets::{SecretGrants, SecretSource};

use crate::bindings::Platform;
use crate::identity::Principal;
use crate::state::{Sequences, SharedUnit, Table, UnitLimits};

/// What a guest may make the host hold through its imports: the limits of one unit of work
/// (scans, buffered writes, published events) and the lengths of the names it hands the
/// host to keep. Configured in `[limits]`; past a limit the guest gets a `store-error` or a
/// publish error naming the setting, never a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Scans, writes and events of one unit of work.
    pub unit: UnitLimits,
    /// Distinct `store.next-id` sequence names one context may use.
    pub sequences: usize,
    /// Longest sequence name, in bytes.
    pub sequence_name_bytes: usize,
    /// Longest correlation id of a published event, in bytes (it travels as a message
    /// header over RabbitMQ, where an oversized one would stall the relay).
    pub correlation_id_bytes: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            unit: UnitLimits::default(),
            sequences: 1_000,
            sequence_name_bytes: 128,
            correlation_id_bytes: 256,
        }
    }
}

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
    /// Who the running invocation acts for (`None`: anonymous).
    pub(crate) principal: Option<Arc<Principal>>,
    /// The secrets granted to the context.
    pub(crate) secrets: Arc<SecretGrants>,
    /// What the guest may make the host hold.
    pub(crate) limits: GuestLimits,
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
