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

/// `wasi:config/store`, the standard interface over the same table, for components written
/// for other hosts.
impl crate::bindings::wasi_config::Host for CapabilityCtx {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, crate::bindings::wasi_config::Error>> {
        Ok(Ok(self.config.get(&key).cloned()))
    }

    fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, crate::bindings::wasi_config::Error>> {
        Ok(Ok(self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
