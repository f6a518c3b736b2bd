//! The watched plugins directory: a `<context>.wasm` file that appears or changes there is
//! deployed as the new version of that context. Polling (twice a second) keeps this
//! portable and immune to editors that replace files instead of writing them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Swapper;

const POLL: Duration = Duration::from_millis(500);

/// Watch `dir` until shutdown, deploying changed files through `swapper`.
pub(crate) fn watch_dir(swapper: Arc<Swapper>, dir: PathBuf) {
    let mut shutdown = swapper.shutdown.clone();
    tokio::spawn(async move {
        tracing::info!(dir = %dir.display(), "watching for plugin files");
        let mut seen: HashMap<PathBuf, (SystemTime, u64)> = HashMap::new();
        loop {
            scan(&swapper, &dir, &mut seen).await;
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => break,
            }
        }
    });
}

async fn scan(swapper: &Swapper, dir: &PathBuf, seen: &mut HashMap<PathBuf, (SystemTime, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if seen.get(&path) == Some(&stamp) {
            continue;
        }
        // Let a writer finish: deploy only once the file stopped changing for one poll.
        let first_sight = !seen.contains_key(&path);
        seen.insert(path.clone(), stamp);
        if first_sight && swapper.runtime.registry().get(&name).is_none() && stamp.1 == 0 {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.len() as u64 != stamp.1 {
            seen.remove(&path);
            continue;
        }
        match swapper
            .deploy(&name, bytes, &format!("watch {}", path.display()))
            .await
        {
            Ok(r) if r.changed => {
                tracing::info!(context = %name, digest = %r.digest, "deployed from the watched directory")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(context = %name, file = %path.display(), error = %e, "watched file refused; the running version stays")
            }
        }
    }
}
