//! The HTTP gateway: the entry point of API clients. Each request goes to the context that
//! declared its route, as one unit of work, when its caller passes the route's access rule
//! ([`auth`]); requests over a rate limit are refused first ([`rate_limit`]), and everything the gateway answers by itself is an RFC 9457 problem
//! ([`problem`]).

mod auth;
mod body;
mod dispatch;
pub(crate) mod problem;
mod rate_limit;
mod routes;

#[cfg(test)]
mod proptests;

use std::sync::Arc;

use axum::Router;

pub(crate) use routes::{RouteError, RouteTable, SharedRoutes};

use crate::identity::Authenticator;
use crate::resilience::RateLimiter;
use crate::runtime::Runtime;

/// What the gateway needs to serve the contexts' routes.
pub struct Gateway {
    pub runtime: Runtime,
    /// The route table in force (hot swap replaces it).
    pub routes: Arc<SharedRoutes>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Longest pause between two parts of a request body.
    pub body_idle_timeout: std::time::Duration,
    /// Longest time to read a whole request body.
    pub body_timeout: std::time::Duration,
    /// The limits of the `[rate_limit]` table and their buckets.
    pub limiter: Arc<RateLimiter>,
    /// Verifies bearer tokens; `None` when authentication is off.
    pub auth: Option<Authenticator>,
}

/// The gateway as a router: every request reaches `dispatch` through the authentication
/// layer (which verifies a bearer token once) and then the rate-limit layer (which keys on
/// the token's subject when there is one). The host mounts it as the fallback of its own
/// endpoints.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let limiter = gateway.limiter.clone();
    let auth = gateway.auth.clone();
    Router::new()
        .fallback(dispatch::dispatch)
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            rate_limit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
        .with_state(gateway)
}
