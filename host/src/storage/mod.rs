//! Storage over time: retention of the event log, the inboxes and the dead letters (a
//! background [`pruner`] removes what every consumer has and retention no longer keeps),
//! the storage report operators read at `GET /admin/storage` and in the metrics, and the
//! check that keeps a redelivery from reaching past what retention kept.
//!
//! Sits beside the runtime: it reads and writes through `state` and asks the event
//! transport (`bus`) how far its consumers are.

mod duration;
mod pruner;
mod redelivery;
mod report;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::bus::{BusCtx, EventTransport};

pub use duration::Span;
pub(crate) use duration::format_duration;
pub(crate) use pruner::PruneStats;
pub(crate) use redelivery::RedeliveryRefused;
pub(crate) use settings::StorageFile;
pub use settings::{StorageConfigError, StorageSettings};

/// Retention and the storage report of one host.
pub(crate) struct Storage {
    bus: BusCtx,
    transport: Arc<dyn EventTransport>,
    settings: StorageSettings,
    data_dir: PathBuf,
    stats: Arc<PruneStats>,
}

impl Storage {
    /// Start the pruner in the background (it stops with `shutdown`).
    pub(crate) fn start(
        bus: BusCtx,
        transport: Arc<dyn EventTransport>,
        settings: StorageSettings,
        data_dir: PathBuf,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let stats = Arc::new(PruneStats::default());
        let pruner = pruner::Pruner::new(bus.clone(), transport.clone(), settings, stats.clone());
        tokio::spawn(pruner.run(shutdown));
        Arc::new(Storage {
            bus,
            transport,
            settings,
            data_dir,
            stats,
        })
    }
}
