//! Read-only configuration of this context.

use crate::bindings::ctxhost::platform::config as raw;

/// The configured value of `key`, if any.
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}

/// Every configured key and value.
pub fn get_all() -> Vec<(String, String)> {
    raw::get_all()
}
