//! On-disk cache of compiled components, keyed by the digest of the `.wasm` and the engine's
//! compatibility hash, so restarts and reloads skip Cranelift.
//!
//! The directory is bounded by size (`cache_max_mb`): each hit refreshes its file's
//! modification time, and after storing a new entry the least recently used ones go until
//! the entries fit (never the one just written). Several hosts may share the directory: an
//! entry another host removes is simply compiled again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The extension of a compiled component.
const EXTENSION: &str = "cwasm";
/// A temporary file older than this was left by a writer that died; younger ones may be
/// being written (by this host or another sharing the directory).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Compile `bytes` (whose sha256 is `digest_hex`), or load the cached compilation; keep the
/// cache directory within `max_bytes`.
pub(crate) fn compile_cached(
    engine: &Engine,
    cache_dir: &Path,
    max_bytes: u64,
    digest_hex: &str,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let file = cache_dir.join(format!("{digest_hex}-{:016x}.{EXTENSION}", h.finish()));
    if file.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash, into the host's own cache directory, renamed into place whole.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(c) => {
                touch(&file);
                return Ok(c);
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring unusable cached compilation")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    match store(cache_dir, &file, &component) {
        Ok(()) => evict(cache_dir, max_bytes, &file),
        Err(e) => {
            tracing::warn!(dir = %cache_dir.display(), error = %e, "cannot cache the compiled component")
        }
    }
    Ok(component)
}

fn store(dir: &Path, file: &Path, component: &Component) -> wasmtime::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}", uuid::Uuid::new_v4(), "tmp"));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Mark `file` as used now (its modification time), for the least-recently-used order.
fn touch(file: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(file)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(file = %file.display(), error = %e, "cannot mark the cached compilation as used");
    }
}

/// A compiled component in the cache directory.
struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// The compiled components in `dir`; removes temporary files left by dead writers.
fn entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        let Ok(meta) = item.metadata() else {
            // Removed meanwhile (by another host sharing the directory).
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            if used.elapsed().is_ok_and(|age| age > STALE_TEMP) && remove(&path) {
                tracing::info!(file = %path.display(), "removed a stale temporary file of the compilation cache");
            }
            continue;
        }
        if path.extension().is_some_and(|e| e == EXTENSION) {
            out.push(Entry {
                path,
                bytes: meta.len(),
                used,
            });
        }
    }
    Ok(out)
}

/// Remove `path`; true when it is gone (also when someone else removed it first).
fn remove(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove a file of the compilation cache");
            false
        }
    }
}

/// Remove the least recently used compiled components of `dir` until the rest hold at most
/// `max_bytes`, never `keep` (the entry just written).
fn evict(dir: &Path, max_bytes: u64, keep: &Path) {
    let mut entries = match entries(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the compilation cache to bound it");
            return;
        }
    };
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    if total <= max_bytes {
        return;
    }
    entries.sort_by_key(|e| e.used);
    for entry in entries.iter().filter(|e| e.path != keep) {
        if total <= max_bytes {
            break;
        }
        if remove(&entry.path) {
            total = total.saturating_sub(entry.bytes);
            tracing::info!(
                file = %entry.path.display(),
                bytes = entry.bytes,
                cache_bytes = total,
                max_bytes,
                "evicted the least recently used compiled component from the cache"
            );
        }
    }
    if total > max_bytes {
        tracing::warn!(
            file = %keep.display(),
            cache_bytes = total,
            max_bytes,
            "the newest compiled component alone is over the cache's bound (cache_max_mb)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ctxhost-cache-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    /// A cache entry of `bytes` bytes last used `age` ago.
    fn entry(dir: &Path, name: &str, bytes: usize, age: Duration) -> PathBuf {
        let path = dir.join(format!("{name}.{EXTENSION}"));
        std::fs::write(&path, vec![0u8; bytes]).expect("write");
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_modified(SystemTime::now() - age).expect("set mtime");
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_least_recently_used_entries_go_until_the_rest_fit() {
        let dir = temp_dir();
        entry(&dir, "a", 400, MIN * 4);
        entry(&dir, "b", 400, MIN * 3);
        let c = entry(&dir, "c", 400, MIN * 2);
        // `c` used since: it is now the most recent of the old ones.
        touch(&c);
        let new = entry(&dir, "new", 400, Duration::ZERO);
        evict(&dir, 1000, &new);
        assert_eq!(names(&dir), ["c.cwasm", "new.cwasm"]);
        // Within the bound: nothing goes.
        evict(&dir, 1000, &new);
        assert_eq!(names(&dir), ["c.cwasm", "new.cwasm"]);
    }

    #[test]
    fn the_entry_just_written_stays_even_alone_over_the_bound() {
        let dir = temp_dir();
        // Older than everything: it would go first if it were not the one just written.
        let new = entry(&dir, "new", 5000, MIN * 10);
        entry(&dir, "old", 100, MIN);
        std::fs::write(dir.join("notes.txt"), b"not an entry").expect("write");
        evict(&dir, 1000, &new);
        assert_eq!(names(&dir), ["new.cwasm", "notes.txt"]);
    }

    #[test]
    fn stale_temporary_files_go_and_fresh_ones_stay() {
        let dir = temp_dir();
        let stale = dir.join(".dead-writer.tmp");
        std::fs::write(&stale, b"x").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .expect("open")
            .set_modified(SystemTime::now() - STALE_TEMP - MIN)
            .expect("mtime");
        std::fs::write(dir.join(".writing.tmp"), b"x").expect("write");
        let new = entry(&dir, "new", 10, Duration::ZERO);
        entry(&dir, "old", 10, MIN);
        evict(&dir, 5, &new);
        assert_eq!(names(&dir), [".writing.tmp", "new.cwasm"]);
    }

    #[test]
    fn a_hit_refreshes_the_entry_and_a_miss_stores_within_the_bound() {
        let dir = temp_dir();
        let engine = Engine::default();
        let wasm = |n: u32| {
            wat::parse_str(format!(
                "(component (core module (func (export \"f{n}\") (result i32) i32.const {n})))"
            ))
            .expect("wat")
        };
        // Two components compiled, then the first used again: the second is now the
        // least recently used, and goes when a third needs room.
        let first = wasm(1);
        compile_cached(&engine, &dir, u64::MAX, "one", &first).expect("compile");
        compile_cached(&engine, &dir, u64::MAX, "two", &wasm(2)).expect("compile");
        let files = names(&dir);
        assert_eq!(files.len(), 2, "{files:?}");
        let one = dir.join(files.iter().find(|f| f.starts_with("one")).expect("one"));
        let two = dir.join(files.iter().find(|f| f.starts_with("two")).expect("two"));
        for f in [&one, &two] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .expect("open")
                .set_modified(SystemTime::now() - MIN)
                .expect("mtime");
        }
        compile_cached(&engine, &dir, u64::MAX, "one", &first).expect("hit");
        let size = |p: &Path| std::fs::metadata(p).expect("meta").len();
        // Room for two entries and a half: the third needs one to go.
        let bound = size(&one) + size(&two) + size(&two) / 2;
        compile_cached(&engine, &dir, bound, "three", &wasm(3)).expect("compile");
        let left = names(&dir);
        assert!(
            left.iter().any(|f| f.starts_with("one"))
                && left.iter().any(|f| f.starts_with("three")),
            "{left:?}"
        );
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
