//! The component runtime: one wasmtime engine, the components loaded from configuration,
//! and isolated instances for every invocation (an HTTP request, an event delivery, a call
//! from another context): fresh ones, or idle ones of the same version where a context
//! allows reuse.

mod cache;
mod context;
mod engine;
mod health;
mod invoke;
mod linking;
mod loader;
mod registry;
mod store_data;
mod warm;

pub use context::{ContextLimits, LoadedContext, RouteSpec};
pub use engine::{EngineSettings, Runtime, Unhealthy, engine_config};
pub use health::{Health, HealthPolicy};
pub use invoke::{HttpReply, InvokeError, lock as invoke_lock};
pub use loader::{Artifact, LoadError, PluginSource};
pub use registry::Registry;
pub use store_data::{Invocation, SharedUnit};
