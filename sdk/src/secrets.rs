//! Secrets the operator granted to this context (`ctxhost:platform/secrets`).
//!
//! The operator maps each name to a source (an environment variable or a file) in the
//! context's `[plugins.<name>.secrets]` table. The host reads the source on every call, so a
//! rotated file takes effect on the next read: read a secret where it is used rather than
//! keeping it. A name that is not granted, or whose source cannot be read now, is `None`
//! (the host logs why, naming only the secret). Never log a value or put it in an answer.

use crate::bindings::ctxhost::platform::secrets as raw;

/// The value of the secret `name`, when granted to this context and readable now.
pub fn get(name: &str) -> Option<Vec<u8>> {
    raw::get(name)
}

/// The value of the secret `name` as text; `None` also when it is not UTF-8.
pub fn get_string(name: &str) -> Option<String> {
    get(name).and_then(|bytes| String::from_utf8(bytes).ok())
}
