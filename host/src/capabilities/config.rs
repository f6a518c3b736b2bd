//! `ctxhost:platform/config`: the context's read-only settings from the host configuration.

use crate::bindings::config::Host;
use crate::runtime::Invocation;

impl Host for Invocation {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.context.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .context
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
