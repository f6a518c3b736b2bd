//! RFC 9457 problem details, the body of every error the host answers.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::api::ProblemDetails;

/// Media type of problem details.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A problem answer.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub(crate) fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 413 for a body over `limit` bytes. The rest of the body is left unread, so the
    /// connection cannot carry another request: the answer closes it, or a client would
    /// reuse it and fail.
    pub(crate) fn too_large(what: &str, limit: usize) -> Response {
        let mut res = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is over the limit of {limit} bytes"),
        )
        .into_response();
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    }
}

impl Problem {
    /// 408 for a body that did not arrive in time; the connection is closed, since the
    /// rest of the body may still come.
    pub(crate) fn body_timeout(detail: String) -> Response {
        let mut res = Problem::new(StatusCode::REQUEST_TIMEOUT, detail).into_response();
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemDetails {
            type_: "about:blank".into(),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}
