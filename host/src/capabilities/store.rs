//! `ctxhost:platform/store`: the context's own keyspace, read from the unit of work's
//! snapshot and written into its buffer. The table is fixed by the invocation's context, so
//! a guest cannot name another context's keys.

use std::ops::Bound;

use super::CapabilityCtx;
use crate::bindings::store::{Entry, Host, StoreError};
use crate::state::ScanRange;
use crate::sync::lock;

/// Longest key, in bytes.
pub(super) const MAX_KEY_LEN: usize = 1024;
/// Largest value, in bytes.
pub(super) const MAX_VALUE_LEN: usize = 1024 * 1024;

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::InvalidKey(format!(
            "the key is {} bytes long, over the limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

/// The smallest string greater than every string starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Bound<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Bound::Excluded(chars.into_iter().collect());
        }
    }
    Bound::Unbounded
}

fn io(e: crate::state::StateError) -> StoreError {
    StoreError::Io(e.to_string())
}

fn entries(v: Vec<(String, Vec<u8>)>) -> Vec<Entry> {
    v.into_iter()
        .map(|(key, value)| Entry { key, value })
        .collect()
}

impl Host for CapabilityCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, StoreError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let table = self.table.clone();
        Ok(lock(self.unit()?).get(&table, &key).map_err(io))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), StoreError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        if value.len() > MAX_VALUE_LEN {
            return Ok(Err(StoreError::TooLarge(format!(
                "the value is {} bytes, over the limit of {MAX_VALUE_LEN}",
                value.len()
            ))));
        }
        let table = self.table.clone();
        lock(self.unit()?).put(&table, &key, Some(value));
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), StoreError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let table = self.table.clone();
        lock(self.unit()?).put(&table, &key, None);
        Ok(Ok(()))
    }

    fn scan_prefix(
        &mut self,
        prefix: String,
        limit: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<Entry>, StoreError>> {
        let range = ScanRange {
            end: prefix_end(&prefix),
            start: Bound::Included(prefix),
        };
        let table = self.table.clone();
        Ok(lock(self.unit()?)
            .scan(&table, range, limit.map(|l| l as usize))
            .map(entries)
            .map_err(io))
    }

    fn scan_range(
        &mut self,
        start: String,
        end: String,
        limit: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<Entry>, StoreError>> {
        if end <= start {
            return Ok(Ok(Vec::new()));
        }
        let range = ScanRange {
            start: Bound::Included(start),
            end: Bound::Excluded(end),
        };
        let table = self.table.clone();
        Ok(lock(self.unit()?)
            .scan(&table, range, limit.map(|l| l as usize))
            .map(entries)
            .map_err(io))
    }

    fn next_id(&mut self, sequence: String) -> wasmtime::Result<Result<u64, StoreError>> {
        if let Err(e) = check_key(&sequence) {
            return Ok(Err(e));
        }
        let key = format!("{}/{sequence}", self.context);
        match self.sequences.next(&key) {
            Ok(v) => {
                lock(self.unit()?).took_sequence(key, v);
                Ok(Ok(v))
            }
            Err(e) => Ok(Err(io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_end("car/"), Bound::Excluded("car0".to_string()));
        assert_eq!(prefix_end(""), Bound::Unbounded);
        assert_eq!(prefix_end("a\u{10FFFF}"), Bound::Excluded("b".to_string()));
        assert_eq!(
            prefix_end("x\u{D7FF}"),
            Bound::Excluded("x\u{E000}".to_string())
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(check_key("order/1").is_ok());
    }
}
