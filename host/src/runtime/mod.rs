//! The component runtime: one wasmtime engine, the components loaded from configuration,
//! and isolated instances for every invocation (an HTTP request, an event delivery, a call
//! from another context): fresh ones, or idle ones of the same version where a context
//! allows reuse.

mod cache;
mod calls;
mod config;
mod context;
mod engine;
mod guest_log;
mod health;
mod invoke;
mod limits;
mod linking;
mod loader;
mod registry;
mod store_data;
mod subscriber;
mod warm;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub(crate) use config::{
    LimitsFile, PluginEntry, RuntimeConfigError, RuntimeFile, RuntimeSettings, valid_name,
};
pub(crate) use context::{ContextLimits, LoadedContext, RouteSpec};
pub use engine::engine_config;
pub(crate) use engine::{EngineError, Runtime};
pub(crate) use invoke::{HttpReply, InvokeError};
pub(crate) use loader::{Artifact, LoadError, PluginSource};
pub(crate) use store_data::Scope;
