//! Who the running invocation acts for (`ctxhost:platform/identity`).
//!
//! The host verifies the bearer token of each request before the context sees it and
//! enforces each route's access rule (the `access` export); this module lets the domain
//! make the finer decisions, such as "only the order's customer or an admin".

use crate::bindings::ctxhost::platform::identity as raw;
use crate::http::Response;

pub use raw::Principal;

/// The principal of the running invocation; `None` for an anonymous caller.
pub fn caller() -> Option<Principal> {
    raw::caller()
}

/// Whether `principal` holds `role`.
pub fn has_role(principal: &Principal, role: &str) -> bool {
    principal.roles.iter().any(|r| r == role)
}

/// The principal of the running invocation, or a 401 problem when there is none (a route
/// the host let through anonymously, for example when authentication is off, that needs a
/// caller anyway).
pub fn require() -> Result<Principal, Response> {
    caller().ok_or_else(|| Response::unauthorized("this resource needs an authenticated caller"))
}

/// Whether the caller may act on a resource owned by `owner`: anonymous callers when the
/// host let them through (authentication off, or the operator opened the route), the owner
/// itself, or a holder of `admin_role`.
pub fn may_act_for(caller: Option<&Principal>, owner: &str, admin_role: &str) -> bool {
    match caller {
        None => true,
        Some(p) => p.subject == owner || has_role(p, admin_role),
    }
}
