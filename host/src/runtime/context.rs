//! A loaded context: its compiled, linked and pre-instantiated component plus what it
//! declared about itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, ComponentExportIndex, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use super::health::Health;
use super::store_data::Invocation;
use super::warm::WarmPool;
use crate::bindings::PlatformIndices;
use crate::bindings::access::AccessRulesIndices;
use crate::capabilities::SecretGrants;
use crate::identity::{Access, AccessOverrides};
use crate::state::Table;

/// One HTTP route a context declared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
}

/// The access rule of one route, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteAccess {
    pub method: String,
    pub path: String,
    pub rule: Access,
    /// `component`, `operator` or `default` (the route declares nothing).
    pub origin: &'static str,
}

/// Everything needed to run invocations of one context version.
#[derive(Clone)]
pub struct LoadedContext {
    pub name: Arc<str>,
    /// The version the component reports in its manifest.
    pub version: String,
    /// `sha256:<hex>` of the `.wasm` bytes.
    pub digest: String,
    /// RFC 3339 time of the load.
    pub loaded_at: String,
    pub routes: Vec<RouteSpec>,
    pub subscriptions: Vec<String>,
    /// Interfaces this context imports from other contexts.
    pub imports: Vec<String>,
    /// Interfaces this context exports to other contexts.
    pub exports: Vec<String>,
    /// Read-only configuration handed to the guest.
    pub config: Arc<BTreeMap<String, String>>,
    /// The secrets granted to it.
    pub secrets: Arc<SecretGrants>,
    /// Who may call each route: one entry per route of `routes`, the operator's override
    /// applied, in the same order.
    pub access: Vec<RouteAccess>,
    /// The operator's rules this version was loaded with (kept for the next version).
    pub access_overrides: Arc<AccessOverrides>,
    /// The context's own table.
    pub table: Table,
    /// Where this version came from (`config <path>`, `upload`, `watch <path>`, `rollback`, ...).
    pub origin: String,
    /// Deadline and memory cap of its invocations.
    pub limits: ContextLimits,
    /// Invocations of this version running now.
    pub in_flight: Arc<AtomicUsize>,
    /// Outcomes of its recent invocations.
    pub health: Arc<Health>,
    /// Its idle instances, when `limits.instance_reuse` keeps them.
    pub(crate) warm: Arc<WarmPool>,
    pub(crate) component: Component,
    pub(crate) pre: InstancePre<Invocation>,
    pub(crate) platform: PlatformIndices,
    /// The optional `access` export, when the component has it.
    pub(crate) access_rules: Option<AccessRulesIndices>,
    pub(crate) proxy: ProxyIndices,
    /// `interface -> function -> export index`, for calls from other contexts.
    pub(crate) functions: HashMap<String, HashMap<String, ComponentExportIndex>>,
}

impl std::fmt::Debug for LoadedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedContext")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Per-context limits of every invocation.
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    /// CPU deadline (epoch interruption), with a wall-clock backstop.
    pub deadline: Duration,
    /// Cap on the linear memory of one instance, in bytes.
    pub memory_limit: usize,
    /// Invocations one instance may serve: 1 (the default) gives every invocation a fresh
    /// instance; more lets an instance that finished cleanly serve later ones, which is
    /// faster but lets the guest's memory outlive a request.
    pub instance_reuse: u32,
}

/// Counts an invocation as in flight until dropped.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LoadedContext {
    pub(crate) fn enter(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.in_flight.clone())
    }

    /// The access rule of the route `method path` (a declared pattern), if it is one.
    pub fn access_of(&self, method: &str, path: &str) -> Option<&RouteAccess> {
        self.access
            .iter()
            .find(|a| a.method == method && a.path == path)
    }

    /// A short id of this version for logs and headers: `<name>@<first 12 hex of digest>`.
    pub fn short_id(&self) -> String {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        format!("{}@{}", self.name, hex.get(..12).unwrap_or(hex))
    }
}
