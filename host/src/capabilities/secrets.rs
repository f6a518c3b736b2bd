//! `ctxhost:platform/secrets`: the secrets the operator granted to a context, read from
//! their sources (an environment variable or a file) when the guest asks. A value never
//! leaves this module except to the guest: errors and logs name the secret only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::CapabilityCtx;
use crate::bindings::secrets::Host;

/// Where a granted secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the host process.
    Env(String),
    /// A file, such as a mounted Kubernetes Secret.
    File(PathBuf),
}

/// The secrets granted to one context: name -> source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretGrants {
    grants: BTreeMap<String, SecretSource>,
}

impl SecretGrants {
    /// Grants from `name -> source` pairs.
    pub fn new(grants: BTreeMap<String, SecretSource>) -> Self {
        SecretGrants { grants }
    }

    /// The granted names, for operators (never the values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.grants.keys().map(String::as_str)
    }

    /// The value of secret `name`, when granted and readable now.
    pub(crate) fn read(&self, context: &str, name: &str) -> Option<Vec<u8>> {
        match self.grants.get(name)? {
            SecretSource::Env(var) => match std::env::var_os(var) {
                Some(v) => Some(v.into_encoded_bytes()),
                None => {
                    tracing::warn!(context, secret = name, variable = %var, "granted secret's variable is not set");
                    None
                }
            },
            SecretSource::File(path) => match std::fs::read(path) {
                Ok(mut bytes) => {
                    if bytes.ends_with(b"\r\n") {
                        bytes.truncate(bytes.len() - 2);
                    } else if bytes.ends_with(b"\n") {
                        bytes.truncate(bytes.len() - 1);
                    }
                    Some(bytes)
                }
                Err(e) => {
                    tracing::warn!(context, secret = name, file = %path.display(), error = %e, "cannot read granted secret's file");
                    None
                }
            },
        }
    }
}

impl Host for CapabilityCtx {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.secrets.read(&self.context, &name))
    }
}
