//! The dead letters in the admin API: listed a page at a time, read, deleted, retried one by
//! one or all of a context (see [`crate::bus::dead_letters`]).
//!
//! An id is the dead letter's key, `<context>/<seq, 20 digits>-<event id>` (or
//! `<context>/foreign/<uuid>` for a message that is not an event), so it holds `/`: one
//! route takes the rest of the path, `/admin/dead-letters/{id}` (GET, DELETE), and a POST to
//! `/admin/dead-letters/{id}/retry` retries one while `/admin/dead-letters/{context}/retry`
//! (a context name has no `/`) retries all of that context.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::Admin;
use crate::bus::dead_letters::{self, DEFAULT_PAGE, DeadLetterError, MAX_PAGE, Retried};
use crate::gateway::problem::Problem;
use crate::state::StateError;

/// The query of a listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only the dead letters of this context.
    context: Option<String>,
    /// The `next` of the previous page (the id of its last item).
    after: Option<String>,
    /// At most this many (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]).
    limit: Option<usize>,
}

/// An answer for a failure of state: 503 while storage recovers, else 500.
fn state_problem(e: &StateError) -> Response {
    if e.is_unavailable() {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .retry_after(1)
            .into_response()
    } else {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
    }
}

fn problem(e: &DeadLetterError) -> Response {
    let status = match e {
        DeadLetterError::NotFound(_) | DeadLetterError::NotLoaded(_) => StatusCode::NOT_FOUND,
        DeadLetterError::NotAnEvent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        DeadLetterError::NotSubscribed { .. } => StatusCode::CONFLICT,
        DeadLetterError::State(e) => return state_problem(e),
    };
    Problem::new(status, e.to_string()).into_response()
}

/// `s` as a query value: everything but unreserved characters and `/` percent-encoded.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /admin/dead-letters?context=&after=&limit=`: one page, `{"items": [...], "next":
/// <the after of the next page, or null>}`, each item the stored record with its `id`; the
/// next page is also in a `Link: <...>; rel="next"` header.
pub(super) async fn list(
    State(app): State<Arc<Admin>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                format!("expected ?context=&after=&limit=: {}", e.body_text()),
            )
            .into_response();
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be from 1 to {MAX_PAGE}"),
        )
        .into_response();
    }
    let context = q.context.as_deref().filter(|c| !c.is_empty());
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    match dead_letters::list(&app.bus, context, after, limit) {
        Ok(page) => {
            let link = page.next.as_ref().map(|next| {
                let mut target = format!("/admin/dead-letters?after={}", query_value(next));
                if let Some(c) = context {
                    target.push_str(&format!("&context={}", query_value(c)));
                }
                if q.limit.is_some() {
                    target.push_str(&format!("&limit={limit}"));
                }
                format!("<{target}>; rel=\"next\"")
            });
            let mut res = Json(page).into_response();
            if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
                res.headers_mut().insert(header::LINK, link);
            }
            res
        }
        Err(e) => state_problem(&e),
    }
}

/// `GET /admin/dead-letters/{id}`: one dead letter.
pub(super) async fn get(State(app): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match dead_letters::get(&app.bus, &id) {
        Ok(Some(item)) => Json(item).into_response(),
        Ok(None) => problem(&DeadLetterError::NotFound(id)),
        Err(e) => state_problem(&e),
    }
}

/// `DELETE /admin/dead-letters/{id}`: 204, or 404 when there is no such dead letter.
pub(super) async fn delete(State(app): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match dead_letters::delete(&app.bus, &id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(&DeadLetterError::NotFound(id)),
        Err(e) => state_problem(&e),
    }
}

/// `POST /admin/dead-letters/{id}/retry` (one) and `POST /admin/dead-letters/{context}/retry`
/// (all of a context): apply again, with the counts `retried`, `applied`, `stillFailing`
/// (and `alreadyApplied`, `notRetryable`, `failures`). One dead letter also has its
/// `outcome` (`applied`, `alreadyApplied` or `stillFailing` with the `reason` and
/// `attempts`); one that is not an event is refused (422), as is one of a context not
/// loaded here (404) or no longer subscribed to its type (409).
pub(super) async fn retry(State(app): State<Arc<Admin>>, Path(path): Path<String>) -> Response {
    let Some(target) = path.strip_suffix("/retry") else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "no resource at /admin/dead-letters/{path}: POST /admin/dead-letters/{{id}}/retry \
                 or /admin/dead-letters/{{context}}/retry"
            ),
        )
        .into_response();
    };
    if !target.contains('/') {
        return match dead_letters::retry_context(&app.bus, target).await {
            Ok(summary) => {
                let mut body = json!(summary);
                body["context"] = json!(target);
                Json(body).into_response()
            }
            Err(e) => problem(&e),
        };
    }
    match dead_letters::retry(&app.bus, target).await {
        Ok(outcome) => {
            let (name, applied, already_applied) = match &outcome {
                Retried::Applied => ("applied", 1, 0),
                Retried::AlreadyApplied => ("alreadyApplied", 1, 1),
                Retried::StillFailing { .. } => ("stillFailing", 0, 0),
            };
            let mut body = json!({
                "id": target,
                "outcome": name,
                "retried": 1,
                "applied": applied,
                "alreadyApplied": already_applied,
                "stillFailing": 1 - applied,
            });
            if let Retried::StillFailing { reason, attempts } = outcome {
                body["reason"] = json!(reason);
                body["attempts"] = json!(attempts);
            }
            Json(body).into_response()
        }
        Err(e) => problem(&e),
    }
}
