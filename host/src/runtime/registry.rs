//! The registry of loaded contexts: `name -> Arc<LoadedContext>`. An invocation clones the
//! `Arc` it starts with, so replacing an entry never disturbs work in flight.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::context::LoadedContext;
use crate::sync::{read, write};

/// Loaded contexts and which context provides each cross-context interface.
#[derive(Default)]
pub struct Registry {
    contexts: RwLock<HashMap<String, Arc<LoadedContext>>>,
    providers: RwLock<HashMap<String, String>>,
}

impl Registry {
    /// The current version of context `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedContext>> {
        read(&self.contexts).get(name).cloned()
    }

    /// The context that currently exports `interface`.
    pub fn provider(&self, interface: &str) -> Option<Arc<LoadedContext>> {
        let name = read(&self.providers).get(interface).cloned()?;
        self.get(&name)
    }

    /// Every loaded context, by name.
    pub fn all(&self) -> Vec<Arc<LoadedContext>> {
        let mut v: Vec<_> = read(&self.contexts).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Install (or replace) a context and the interfaces it provides.
    pub fn insert(&self, ctx: Arc<LoadedContext>) {
        {
            let mut p = write(&self.providers);
            for iface in &ctx.exports {
                p.insert(iface.clone(), ctx.name.to_string());
            }
        }
        let replaced = write(&self.contexts).insert(ctx.name.to_string(), ctx);
        // Its idle instances hold it alive; invocations still running keep their own.
        if let Some(old) = replaced {
            old.warm.retire();
        }
    }
}
