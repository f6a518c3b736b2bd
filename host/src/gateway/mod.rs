//! The HTTP gateway: one axum entry point that sends each request to the context that
//! declared its route, as one unit of work, and answers errors as RFC 9457 problems.

mod dispatch;
pub mod problem;
mod routes;

pub use dispatch::dispatch;
pub use routes::{Resolved, RouteTable};
