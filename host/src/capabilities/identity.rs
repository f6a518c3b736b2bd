//! `ctxhost:platform/identity`: the principal the running invocation acts for, bound by the
//! runtime from the request, the calling context or the event.

use super::CapabilityCtx;
use crate::bindings::identity::{Host, Principal};

impl Host for CapabilityCtx {
    fn caller(&mut self) -> wasmtime::Result<Option<Principal>> {
        Ok(self.principal.as_deref().map(|p| Principal {
            subject: p.subject.clone(),
            roles: p.roles.clone(),
            claims: p.claims.clone(),
        }))
    }
}
