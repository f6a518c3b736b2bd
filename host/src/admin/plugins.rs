//! Deploying and rolling back plugins through the admin API (`ctxhost plugin ...` uses it).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::Admin;
use crate::gateway::problem::Problem;
use crate::runtime::valid_name;
use crate::swap::SwapError;

fn refused(e: SwapError) -> Response {
    let status = match &e {
        SwapError::Load(_) | SwapError::Routes(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SwapError::InvalidName(_) => StatusCode::BAD_REQUEST,
        SwapError::NoPrevious(_) => StatusCode::CONFLICT,
        SwapError::Unknown(_) => StatusCode::NOT_FOUND,
        SwapError::MissingArtifact { .. } | SwapError::Artifact { .. } | SwapError::Storage(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    tracing::warn!(error = %e, "deployment refused; the running version stays");
    Problem::new(status, e.to_string()).into_response()
}

/// `PUT /admin/plugins/{name}` with the `.wasm` as body: hot swap (or a new context).
pub(super) async fn deploy(
    State(app): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    if !valid_name(&name) {
        return refused(SwapError::InvalidName(name));
    }
    let bytes = match axum::body::to_bytes(body, app.upload_limit).await {
        Ok(b) => b,
        Err(_) => return Problem::too_large("the upload", app.upload_limit),
    };
    if bytes.is_empty() {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "the body must be a .wasm component",
        )
        .into_response();
    }
    match app.swapper.deploy(&name, bytes.to_vec(), "upload").await {
        Ok(report) => Json(report).into_response(),
        Err(e) => refused(e),
    }
}

/// `POST /admin/plugins/{name}/rollback`: back to the previous version.
pub(super) async fn rollback(State(app): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    match app.swapper.rollback(&name, "requested").await {
        Ok(report) => Json(report).into_response(),
        Err(e) => refused(e),
    }
}

/// `GET /admin/plugins/{name}/versions`: the kept versions and the deployment history.
pub(super) async fn versions(State(app): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    match app.swapper.versions(&name) {
        Ok(v) if v.stack.is_empty() && app.runtime.registry().get(&name).is_none() => {
            Problem::new(StatusCode::NOT_FOUND, format!("no context named {name}")).into_response()
        }
        Ok(v) => Json(v).into_response(),
        Err(e) => refused(e),
    }
}
