//! The SDK's error type for failed host calls and (de)serialisation.

use std::fmt;

use crate::bindings::ctxhost::platform::store::StoreError;
use crate::http::Response;

/// A failure that is not the client's fault: a store error, a failed publish, bad stored JSON.
/// It becomes a 500 problem in HTTP handlers and an `err` (retry) in event handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    /// An error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidKey(m) => Error(format!("store: invalid key: {m}")),
            StoreError::TooLarge(m) => Error(format!("store: too large: {m}")),
            StoreError::Io(m) => Error(format!("store: i/o error: {m}")),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("json: {e}"))
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.0
    }
}

impl From<Error> for Response {
    fn from(e: Error) -> Self {
        Response::problem(500, "Internal Server Error", &e.0)
    }
}
