//! The data of one invocation's wasmtime `Store`: the context version it runs, the state of
//! the capabilities it imports (unit of work, trace id, ...), how deep in a chain of calls it
//! is, and a minimal sandboxed WASI (no files, sockets or env).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::context::LoadedContext;
use super::engine::Runtime;
use super::guest_log::GuestStderr;
use super::limits::InstanceLimits;
use crate::capabilities::CapabilityCtx;
use crate::state::SharedUnit;

/// Per-invocation state. An instance kept for reuse keeps its `Store`, so the parts that
/// belong to one invocation (unit of work, trace id, depth) are bound before each one and
/// the unit is released after it.
pub(crate) struct Invocation {
    pub(crate) context: Arc<LoadedContext>,
    /// What the `ctxhost:platform` imports act on.
    pub(crate) caps: CapabilityCtx,
    /// How many calls between contexts led here (0 for the entry invocation).
    pub(crate) depth: u32,
    pub(crate) runtime: Runtime,
    pub(crate) limits: InstanceLimits,
    /// When the running invocation's guest code passes its deadline (the epoch deadline
    /// in time, kept to restore it after waits on the host).
    pub(crate) guest_deadline: tokio::time::Instant,
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
        let shape = runtime.settings().instance_shape;
        let limits = InstanceLimits::new(context.limits.memory_limit, shape);
        let context_name = context.name.clone();
        let caps = CapabilityCtx {
            context: context.name.clone(),
            table: context.table.clone(),
            config: context.config.clone(),
            sequences: runtime.sequences().clone(),
            unit: Some(unit),
            trace_id,
            principal: None,
            secrets: context.secrets.clone(),
            limits: runtime.settings().guest_limits,
        };
        Invocation {
            context,
            caps,
            depth,
            runtime,
            limits,
            guest_deadline: tokio::time::Instant::now(),
            wasi: WasiCtx::builder()
                .stderr(GuestStderr::new(context_name, shape.stderr_bytes))
                .build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        }
    }

    /// The unit of work of the running invocation.
    pub(crate) fn unit(&self) -> wasmtime::Result<&SharedUnit> {
        self.caps.unit()
    }

    /// The trace of the running invocation.
    pub(crate) fn trace_id(&self) -> &Arc<str> {
        &self.caps.trace_id
    }

    /// Make this store's next invocation write into `unit` under `trace_id`.
    pub(crate) fn bind(&mut self, unit: SharedUnit, trace_id: Arc<str>, depth: u32) {
        self.caps.unit = Some(unit);
        self.caps.trace_id = trace_id;
        self.depth = depth;
    }

    /// Let go of the finished invocation's unit of work, which its owner commits, and tell
    /// whether the instance left nothing behind in the host's resource table.
    pub(crate) fn release(&mut self) -> bool {
        self.caps.unit = None;
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
