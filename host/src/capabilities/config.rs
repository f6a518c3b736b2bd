//! `ctxhost:platform/config`: the context's read-only settings from the host configuration.

use super::CapabilityCtx;
use crate::bindings::config::Host;

impl Host for CapabilityCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
