//! The data of one invocation's wasmtime `Store`: the context it runs, the unit of work it
//! writes into, its trace id, and a minimal sandboxed WASI (no files, sockets or env).

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::context::LoadedContext;
use super::engine::Runtime;
use crate::state::UnitOfWork;

/// Shared handle to a unit of work: the invocation that owns it and the contexts it calls.
pub type SharedUnit = Arc<std::sync::Mutex<UnitOfWork>>;

/// Per-invocation state. An instance kept for reuse keeps its `Store`, so the parts that
/// belong to one invocation (unit of work, trace id, depth) are bound before each one and
/// the unit is released after it.
pub struct Invocation {
    pub(crate) context: Arc<LoadedContext>,
    unit: Option<SharedUnit>,
    pub(crate) trace_id: Arc<str>,
    /// How many calls between contexts led here (0 for the entry invocation).
    pub(crate) depth: u32,
    pub(crate) runtime: Runtime,
    pub(crate) limits: StoreLimits,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl Invocation {
    pub(crate) fn new(
        runtime: Runtime,
        context: Arc<LoadedContext>,
        unit: SharedUnit,
        trace_id: Arc<str>,
        depth: u32,
    ) -> Self {
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(context.limits.memory_limit)
            .trap_on_grow_failure(true)
            .build();
        Invocation {
            context,
            unit: Some(unit),
            trace_id,
            depth,
            runtime,
            limits,
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        }
    }
}

impl Invocation {
    /// The unit of work of the running invocation.
    pub(crate) fn unit(&self) -> wasmtime::Result<&SharedUnit> {
        self.unit
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("no invocation is running on this instance"))
    }

    /// Make this store's next invocation write into `unit` under `trace_id`.
    pub(crate) fn bind(&mut self, unit: SharedUnit, trace_id: Arc<str>, depth: u32) {
        self.unit = Some(unit);
        self.trace_id = trace_id;
        self.depth = depth;
    }

    /// Let go of the finished invocation's unit of work, which its owner commits, and tell
    /// whether the instance left nothing behind in the host's resource table.
    pub(crate) fn release(&mut self) -> bool {
        self.unit = None;
        self.table.is_empty()
    }
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Invocation {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}
