//! `ctxhost`: a WebAssembly component host for business bounded contexts.
//!
//! Each context is a Wasm component behind the WIT contract in `wit/`; the host gives it an
//! HTTP gateway, its own transactional store, events and calls to other contexts.
//!
//! The library's entry points: [`Settings::resolve`] reads the configuration, [`build`]
//! starts a [`Host`], [`Host::router`] is its HTTP surface, [`serve`] serves it, and [`run`]
//! does all of that as `ctxhost serve` does. [`api`] holds the admin API's wire types.
//! [`install_tracing`] installs the log and, when configured, trace export.
//! [`verify_backup`] and [`restore_backup`] check and restore the backups that
//! `GET /admin/backup` streams (`ctxhost backup`, `ctxhost restore`).
//!
//! # Layout
//!
//! Dependencies point one way, from the top of this list down (see `docs/ARCHITECTURE.md`):
//!
//! - `server`: builds the parts and serves them (`build`, `Host::router`, `serve`, `run`).
//! - `gateway`: the entry point of API clients: rate-limit layer, route table, dispatch into
//!   a context as one unit of work, problem answers.
//! - `admin`: probes and the admin API (bearer token).
//! - `swap`: hot swap (deploy, rollback, versions, watched directory, self-healing).
//! - `storage`: retention (the background pruner of the event log, inboxes and dead
//!   letters), the storage report, and the redelivery check; beside `runtime`, on `state`
//!   and `bus`.
//! - `runtime`: engine, loading and linking components, invocations, calls between contexts.
//! - `capabilities`: the WIT imports given to components (store, events, config, log).
//! - `bus`: event envelopes and transports (the embedded bus, RabbitMQ), delivery with an
//!   inbox; it runs handlers through the runtime's `bus::Subscribers` implementation.
//! - `resilience`: breakers, bulkheads, retries, rate-limit buckets: policies and state.
//! - `state`: the redb database, units of work and the group committer.
//! - `config`: the file, variables and flags, composed from each subsystem's section.
//! - leaves: `api` (wire types), `bindings` (generated from `wit/`), `identity` (principals,
//!   access rules, token verification), `jitter` (exponential
//!   waits with jitter), `sync` (the one lock helper), `telemetry` (traces and the log
//!   format), `time`.

mod admin;
pub mod api;
mod bindings;
mod bus;
mod capabilities;
mod config;
mod gateway;
mod identity;
mod jitter;
mod resilience;
mod runtime;
mod server;
mod state;
mod storage;
mod swap;
mod sync;
mod telemetry;
mod time;

pub use config::{ConfigError, HttpSettings, Overrides, Settings, auth_settings};
pub use identity::{MintError, mint_token};
pub use runtime::engine_config;
pub use server::{Host, StartError, build, run, serve};
pub use state::backup::{BackupError, BackupSummary, RestoreReport};
pub use state::{CompactError, CompactReport, compact as compact_data_dir};
pub use storage::{Span, StorageConfigError, StorageSettings};
pub use telemetry::trace::{
    Exporter, LogFormat, ParentlessRule, Protocol, Sampling, TraceConfigError, TraceInitError,
    TraceSettings, Tracing, install as install_tracing,
};

/// Read and check the whole backup file at `path` (magic, version, framing, counts, digest),
/// writing nothing; what it holds.
pub fn verify_backup(path: &std::path::Path) -> Result<BackupSummary, BackupError> {
    state::backup::verify(path, &[swap::ARTIFACT_DIR])
}

/// Restore the backup file at `from` into the data directory `data_dir`, after checking all
/// of it: `data_dir` must be new or empty, unless `force`, which replaces its state database
/// and kept versions (`plugins/`) and keeps the rest; refused while a host runs on it.
pub fn restore_backup(
    from: &std::path::Path,
    data_dir: &std::path::Path,
    force: bool,
) -> Result<RestoreReport, BackupError> {
    let opts = state::backup::RestoreOptions {
        force,
        file_dirs: &[swap::ARTIFACT_DIR],
    };
    state::backup::restore(from, data_dir, &opts)
}
