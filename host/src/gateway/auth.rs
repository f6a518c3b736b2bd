//! Authentication in front of the contexts' routes: the bearer token of a request is
//! verified once, before the rate limit (which then keys on the token's subject), and the
//! outcome travels with the request as a [`Caller`]. Whether the caller may reach the route
//! is decided in `dispatch`, once the route (and so its access rule) is known: a request
//! refused here never reaches a component.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, header};

use super::problem::Problem;
use crate::identity::{Access, Authenticator, Decision, Principal, TokenError};

/// Who sent a request, as the authentication layer found it.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// No token (or authentication is off).
    Anonymous,
    /// A valid token's principal.
    Principal(Arc<Principal>),
    /// A token was sent and refused: the request is answered 401 whatever its route.
    Refused(Arc<TokenError>),
}

impl Caller {
    /// The verified principal, if any.
    pub(crate) fn principal(&self) -> Option<&Arc<Principal>> {
        match self {
            Caller::Principal(p) => Some(p),
            _ => None,
        }
    }
}

/// The bearer token of `req`: `None` without an `Authorization` header, `Some(Err)` for a
/// header that is not `Bearer <token>`.
fn bearer(req: &Request<Body>) -> Option<Result<&str, TokenError>> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        })
        .filter(|t| !t.is_empty());
    Some(token.ok_or(TokenError::Malformed))
}

/// Middleware: verify the request's bearer token, when authentication is on, and attach
/// the [`Caller`] to the request. When it is off, tokens are ignored, as before
/// authentication existed.
pub(crate) async fn authenticate(
    State(auth): State<Option<Authenticator>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let caller = match (&auth, bearer(&req)) {
        (None, _) | (Some(_), None) => Caller::Anonymous,
        (Some(_), Some(Err(e))) => Caller::Refused(Arc::new(e)),
        (Some(auth), Some(Ok(token))) => match auth.verify_cached(token) {
            Ok(p) => Caller::Principal(p),
            Err(e) => Caller::Refused(Arc::new(e)),
        },
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Why the gateway refused a caller: answered 401 or 403.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Denied {
    #[error("this resource needs a bearer token")]
    Missing,
    #[error("the bearer token was refused: {0}")]
    Invalid(Arc<TokenError>),
    #[error("this resource needs one of the roles {0}")]
    Forbidden(String),
}

/// Whether `caller` may reach a route with `rule`; authentication off lets everyone in.
pub(crate) fn admit(enabled: bool, caller: &Caller, rule: &Access) -> Result<(), Denied> {
    if !enabled {
        return Ok(());
    }
    let principal = match caller {
        Caller::Refused(e) => return Err(Denied::Invalid(e.clone())),
        Caller::Anonymous => None,
        Caller::Principal(p) => Some(&**p),
    };
    match rule.decide(principal) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(Denied::Missing),
        Decision::Forbidden => Err(Denied::Forbidden(match rule {
            Access::Roles(r) => r.join(", "),
            other => other.to_string(),
        })),
    }
}

impl Denied {
    /// 401 with `WWW-Authenticate: Bearer` (`error="invalid_token"` when a token was sent),
    /// or 403.
    pub(crate) fn respond(&self) -> Response {
        crate::telemetry::metrics().auth_refused(match self {
            Denied::Missing => "missing",
            Denied::Invalid(_) => "invalid",
            Denied::Forbidden(_) => "forbidden",
        });
        let detail = self.to_string();
        match self {
            Denied::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN, detail).into_response(),
            Denied::Missing => challenge(detail, "Bearer".into()),
            Denied::Invalid(e) => {
                let description: String = e
                    .to_string()
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                    .collect();
                challenge(
                    detail,
                    format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
                )
            }
        }
    }
}

fn challenge(detail: String, value: String) -> Response {
    let mut res = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    let value =
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    res.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    res
}
