//! The HTTP gateway: the entry point of API clients. Each request goes to the context that
//! declared its route, as one unit of work; requests over a rate limit are refused first
//! ([`rate_limit`]), and everything the gateway answers by itself is an RFC 9457 problem
//! ([`problem`]).

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
}

/// The gateway as a router: every request reaches `dispatch` through the rate-limit layer.
/// The host mounts it as the fallback of its own endpoints.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let limiter = gateway.limiter.clone();
    Router::new()
        .fallback(dispatch::dispatch)
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            rate_limit::limit,
        ))
        .with_state(gateway)
}
