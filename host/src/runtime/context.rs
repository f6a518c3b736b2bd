//! A loaded context: its compiled, linked and pre-instantiated component plus what it
//! declared about itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use super::store_data::Invocation;
use crate::bindings::PlatformIndices;
use crate::state::Table;

/// One HTTP route a context declared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
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
    /// The context's own table.
    pub table: Table,
    pub(crate) pre: InstancePre<Invocation>,
    pub(crate) platform: PlatformIndices,
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
