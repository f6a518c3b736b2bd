//! JSON helpers over the context's own ordered key-value store.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::ctxhost::platform::store as raw;

/// The key `<prefix>/<id>` with `id` zero-padded to 16 digits, so keys sort like ids.
pub fn id_key(prefix: &str, id: u64) -> String {
    format!("{prefix}/{id:016}")
}

/// The value under `key`, decoded from JSON.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match raw::get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

/// Store `value` as JSON under `key`.
pub fn put_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    raw::put(key, &serde_json::to_vec(value)?)?;
    Ok(())
}

/// The raw bytes under `key`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(raw::get(key)?)
}

/// Store raw bytes under `key`.
pub fn put(key: &str, value: &[u8]) -> Result<(), Error> {
    Ok(raw::put(key, value)?)
}

/// Remove `key` (absent keys are fine).
pub fn delete(key: &str) -> Result<(), Error> {
    Ok(raw::delete(key)?)
}

/// Every entry whose key starts with `prefix`, in key order, values decoded from JSON.
///
/// The host refuses a scan whose answer would pass its limits (by default 1,000 entries or
/// 4 MiB): for a table that grows, page with [`crate::page`] or [`scan_range_json`] and a
/// limit.
pub fn scan_prefix_json<T: DeserializeOwned>(prefix: &str) -> Result<Vec<(String, T)>, Error> {
    raw::scan_prefix(prefix, None)?
        .into_iter()
        .map(|e| Ok((e.key, serde_json::from_slice(&e.value)?)))
        .collect()
}

/// Entries with `start <= key < end`, in key order, at most `limit`, values decoded from
/// JSON (the host's scan limits apply, see [`scan_prefix_json`]).
pub fn scan_range_json<T: DeserializeOwned>(
    start: &str,
    end: &str,
    limit: Option<u32>,
) -> Result<Vec<(String, T)>, Error> {
    raw::scan_range(start, end, limit)?
        .into_iter()
        .map(|e| Ok((e.key, serde_json::from_slice(&e.value)?)))
        .collect()
}

/// The next value of the named sequence: the way to assign ids without conflicts.
pub fn next_id(sequence: &str) -> Result<u64, Error> {
    Ok(raw::next_id(sequence)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys_sort_numerically() {
        assert_eq!(id_key("car", 42), "car/0000000000000042");
        assert!(id_key("car", 9) < id_key("car", 10));
        assert!(id_key("car", 999) < id_key("car", u64::MAX));
    }
}
