//! The wasmtime engine (pooling allocator, copy-on-write memory images, epoch deadlines),
//! the linker every context shares, and the `Runtime` handle that owns them with the state.

use crate::sync::lock;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::{WasiHttp, WasiHttpView};

use super::invoke::{Cause, cause};
use super::limits::InstanceShape;
use super::registry::Registry;
use super::store_data::Invocation;
use crate::state::{Committer, Db, Sequences};

/// How often the engine's epoch advances: the granularity of deadlines.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits and tuning of the runtime.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// CPU deadline of one invocation.
    pub deadline: Duration,
    /// Cap on the linear memory of one instance, in bytes.
    pub memory_limit: usize,
    /// Instances that may exist at once (pool size).
    pub max_instances: u32,
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Most bytes the compiled components in `cache_dir` may hold (least recently used go).
    pub cache_max_bytes: u64,
    /// Longest compilation of one component (at start and at deployment).
    pub compile_timeout: Duration,
    /// What one component instance may define and print.
    pub instance_shape: InstanceShape,
    /// Deepest chain of calls between contexts.
    pub max_call_depth: u32,
    /// Policies of calls between contexts.
    pub resilience: crate::resilience::ResilienceSettings,
    /// What a guest may make the host hold (`[limits]`).
    pub guest_limits: crate::capabilities::GuestLimits,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot {stage}: {source}")]
pub struct EngineError {
    stage: &'static str,
    #[source]
    source: Cause,
}

impl EngineError {
    fn at(stage: &'static str) -> impl Fn(wasmtime::Error) -> Self {
        move |e| EngineError {
            stage,
            source: cause(e),
        }
    }
}

/// A context version whose invocations keep failing.
#[derive(Debug, Clone)]
pub struct Unhealthy {
    pub context: String,
    pub digest: String,
}

/// The runtime's parts; the runtime's modules reach them through [`Runtime`]'s field.
pub(crate) struct Inner {
    pub(super) engine: Engine,
    pub(super) linker: Linker<Invocation>,
    db: Db,
    committer: Committer,
    sequences: Arc<Sequences>,
    registry: Registry,
    settings: EngineSettings,
    resilience: crate::resilience::Resilience,
    pub(super) unhealthy_tx: tokio::sync::mpsc::UnboundedSender<Unhealthy>,
    unhealthy_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Unhealthy>>>,
}

/// Dirty pages zeroed in place, rather than unmapped, when a pool slot is reset.
const KEEP_RESIDENT: usize = 1 << 20;

/// Whether the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7 and later).
fn pagemap_scan_supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    kernel_at_least(&release, (6, 7))
}

fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        _ => false,
    }
}

/// The engine configuration of the host: pooling allocator sized for `max_instances`
/// instances of at most `memory_limit` bytes of linear memory each and the default instance
/// shape (see `[limits]`), copy-on-write memory images, epoch interruption, no
/// component-model concurrency (3-4x cheaper calls). Public so benchmarks measure the same
/// engine.
pub fn engine_config(max_instances: u32, memory_limit: usize) -> Config {
    engine_config_for(max_instances, memory_limit, InstanceShape::default())
}

/// [`engine_config`] with the instance shape configured under `[limits]`.
pub(crate) fn engine_config_for(
    max_instances: u32,
    memory_limit: usize,
    shape: InstanceShape,
) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // One component instance may hold at most a fixed share of each pool (core instances,
    // memories, tables), so no single component can take what `max_instances` others need;
    // a component over these is refused when it is compiled.
    pool.total_component_instances(max_instances)
        .max_core_instances_per_component(shape.core_instances)
        .max_memories_per_component(shape.memories)
        .max_tables_per_component(shape.tables)
        .total_core_instances(max_instances.saturating_mul(shape.core_instances))
        .total_memories(max_instances.saturating_mul(shape.memories))
        .total_tables(max_instances.saturating_mul(shape.tables))
        .table_elements(shape.table_elements)
        .max_memory_size(memory_limit)
        .total_stacks(max_instances);
    // Resetting a slot: the PAGEMAP_SCAN ioctl (Linux 6.7+) finds the pages the instance
    // dirtied and, within the first MiB, they are zeroed in place instead of unmapped, so
    // the next instance takes no page faults and no TLB shootdowns there. Measured 1.5x on
    // the read path; without the ioctl, zeroing the whole MiB was slower than the faults it
    // saved, so it stays off where the kernel lacks it.
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    if pagemap_scan_supported() {
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config.concurrency_support(false);
    config
}

/// Cheap, clonable handle to the runtime.
#[derive(Clone)]
pub struct Runtime(pub(super) Arc<Inner>);

impl Runtime {
    /// Build the engine and the shared linker, and start the epoch ticker.
    pub fn new(
        settings: EngineSettings,
        db: Db,
        committer: Committer,
    ) -> Result<Self, EngineError> {
        let engine = Engine::new(&engine_config_for(
            settings.max_instances,
            settings.memory_limit,
            settings.instance_shape,
        ))
        .map_err(EngineError::at("create the wasmtime engine"))?;

        let mut linker = Linker::<Invocation>::new(&engine);
        let link = EngineError::at("link the host's imports");
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(&link)?;
        // Only the HTTP types: no `outgoing-handler`, so a context cannot reach the network
        // (and an invocation re-run after a conflict cannot repeat an outside effect).
        let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
        wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<_, WasiHttp>(
            &mut linker,
            &(&options).into(),
            <Invocation as WasiHttpView>::http,
        )
        .map_err(&link)?;
        crate::capabilities::add_to_linker(&mut linker, |s: &mut Invocation| &mut s.caps)
            .map_err(&link)?;

        let sequences = Arc::new(Sequences::new(db.clone(), settings.guest_limits.sequences));
        let resilience = crate::resilience::Resilience::new(settings.resilience.clone());
        let (unhealthy_tx, unhealthy_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            engine,
            linker,
            db,
            committer,
            sequences,
            registry: Registry::default(),
            settings,
            resilience,
            unhealthy_tx,
            unhealthy_rx: std::sync::Mutex::new(Some(unhealthy_rx)),
        });
        spawn_ticker(Arc::downgrade(&inner));
        Ok(Runtime(inner))
    }

    /// Reports of versions that became unhealthy (taken once, by the self-healing task).
    pub fn take_unhealthy_reports(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Unhealthy>> {
        lock(&self.0.unhealthy_rx).take()
    }

    /// The loaded contexts.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    pub fn committer(&self) -> &Committer {
        &self.0.committer
    }

    /// The sequences behind `store.next-id`.
    pub(crate) fn sequences(&self) -> &Arc<Sequences> {
        &self.0.sequences
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.0.settings
    }

    /// Policies and state of calls between contexts.
    pub fn resilience(&self) -> &crate::resilience::Resilience {
        &self.0.resilience
    }

    /// Deadline of one invocation, in epoch ticks.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// One thread per engine advances the epoch; it stops when the runtime is dropped.
fn spawn_ticker(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("ctxhost-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match inner.upgrade() {
                    Some(i) => i.engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch ticker: deadlines are off");
    }
}

#[cfg(test)]
mod kernel_tests {
    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(super::kernel_at_least("6.18.1-cloud-amd64\n", (6, 7)));
        assert!(super::kernel_at_least("6.7.0", (6, 7)));
        assert!(!super::kernel_at_least("6.1.0-37-amd64", (6, 7)));
        assert!(!super::kernel_at_least("5.15.0", (6, 7)));
        assert!(!super::kernel_at_least("garbage", (6, 7)));
    }
}
