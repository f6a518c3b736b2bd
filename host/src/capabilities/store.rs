//! `ctxhost:platform/store`: the context's own keyspace, read from the unit of work's
//! snapshot and written into its buffer. The table is fixed by the invocation's context, so
//! a guest cannot name another context's keys.

use std::ops::Bound;

use super::CapabilityCtx;
use crate::bindings::store::{Entry, Host, StoreError};
use crate::state::{LimitError, ScanError, ScanRange, SequenceError, Sequences};
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

fn over(e: LimitError) -> StoreError {
    StoreError::TooLarge(e.to_string())
}

fn scan_error(e: ScanError) -> StoreError {
    match e {
        ScanError::State(e) => io(e),
        ScanError::Limit(e) => over(e),
    }
}

fn sequence_error(e: SequenceError) -> StoreError {
    match e {
        SequenceError::TooMany { .. } => StoreError::InvalidKey(e.to_string()),
        SequenceError::State(e) => io(e),
    }
}

/// A sequence name is a key of the host's own table: not empty, at most `max` bytes.
fn check_sequence_name(name: &str, max: usize) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::InvalidKey("the sequence name is empty".into()));
    }
    if name.len() > max {
        return Err(StoreError::InvalidKey(format!(
            "the sequence name is {} bytes long, over the limit of {max} \
             (limits.sequence_name_bytes)",
            name.len()
        )));
    }
    Ok(())
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
        let limits = self.limits.unit;
        Ok(lock(self.unit()?)
            .put_bounded(&table, &key, Some(value), &limits)
            .map_err(over))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), StoreError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let table = self.table.clone();
        let limits = self.limits.unit;
        Ok(lock(self.unit()?)
            .put_bounded(&table, &key, None, &limits)
            .map_err(over))
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
        let limits = self.limits.unit;
        Ok(lock(self.unit()?)
            .scan(&table, range, limit.map(|l| l as usize), &limits)
            .map(entries)
            .map_err(scan_error))
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
        let limits = self.limits.unit;
        Ok(lock(self.unit()?)
            .scan(&table, range, limit.map(|l| l as usize), &limits)
            .map(entries)
            .map_err(scan_error))
    }

    fn next_id(&mut self, sequence: String) -> wasmtime::Result<Result<u64, StoreError>> {
        if let Err(e) = check_sequence_name(&sequence, self.limits.sequence_name_bytes) {
            return Ok(Err(e));
        }
        match self.sequences.next(&self.context, &sequence) {
            Ok(v) => {
                let key = Sequences::key(&self.context, &sequence);
                lock(self.unit()?).took_sequence(key, v);
                Ok(Ok(v))
            }
            Err(e) => Ok(Err(sequence_error(e))),
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

    #[test]
    fn sequence_names_are_checked_against_their_limit() {
        assert!(check_sequence_name("orders", 128).is_ok());
        assert!(check_sequence_name(&"s".repeat(128), 128).is_ok());
        assert!(check_sequence_name("", 128).is_err());
        let Err(StoreError::InvalidKey(why)) = check_sequence_name(&"s".repeat(129), 128) else {
            panic!("a name over the limit is an invalid key");
        };
        assert!(why.contains("limits.sequence_name_bytes"), "{why}");
    }
}
