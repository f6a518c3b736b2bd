//! On-disk cache of compiled components, keyed by the digest of the `.wasm` and the engine's
//! compatibility hash, so restarts and reloads skip Cranelift.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::Component;

/// Compile `bytes` (whose sha256 is `digest_hex`), or load the cached compilation.
pub(crate) fn compile_cached(
    engine: &Engine,
    cache_dir: &Path,
    digest_hex: &str,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let file = cache_dir.join(format!("{digest_hex}-{:016x}.cwasm", h.finish()));
    if file.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash, into the host's own cache directory, renamed into place whole.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring unusable cached compilation")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(cache_dir, &file, &component) {
        tracing::warn!(dir = %cache_dir.display(), error = %e, "cannot cache the compiled component");
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
