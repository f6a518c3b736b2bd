//! Identity: who a request acts for. The principal a verified bearer token names, handed to
//! the component that serves the request, to the contexts it calls and, by its subject, to
//! the handlers of the events it causes.
//!
//! A leaf: every layer may use it; it imports nothing of the host's.

mod access;
mod principal;

pub use access::{Access, AccessOverrides, Decision, RouteKey};
pub use principal::Principal;
