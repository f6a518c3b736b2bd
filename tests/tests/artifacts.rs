//! What a host keeps on disk stays bounded: the `.wasm` files of a context are exactly those
//! of the versions its records still name (`keep_versions`), also after a crash left others
//! behind, and the compilation cache stays within `cache_max_mb`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ctxhost_tests::{Api, Host, HostOptions, TestDir, plugin_dir, with_marker};
use serde_json::Value;

/// The cache's bound in the test, in MiB: two compiled components of the test plugins fit
/// (each under 1 MiB), the five a host starts with do not.
const CACHE_MAX_MB: u64 = 2;

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// The files the versions of chaos need: those its stack, history and configured file name.
async fn referenced(api: &Api) -> BTreeSet<String> {
    let v = api.get_ok("/admin/plugins/chaos/versions").await;
    let list = |key: &str| -> Vec<Value> { v[key].as_array().cloned().unwrap_or_default() };
    assert!(list("stack").len() <= 2, "{v}");
    assert!(list("history").len() <= 2, "{v}");
    list("stack")
        .iter()
        .chain(&list("history"))
        .filter_map(|r| r["digest"].as_str())
        .chain(v["configured"].as_str())
        .map(|d| format!("{}.wasm", hex(d)))
        .collect()
}

/// The compiled components in `dir` and their total size; asserts the bound.
fn cache_within_bound(dir: &Path) -> BTreeSet<String> {
    let mut total = 0;
    let mut entries = BTreeSet::new();
    for e in std::fs::read_dir(dir).expect("read the cache") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cwasm") {
            total += e.metadata().expect("metadata").len();
            entries.insert(name);
        }
    }
    assert!(
        total <= CACHE_MAX_MB * 1024 * 1024,
        "the cache holds {total} bytes in {entries:?}"
    );
    entries
}

#[tokio::test]
async fn only_the_kept_versions_keep_their_files_and_the_cache_stays_bounded() {
    let cache = TestDir::new();
    let mut host = Host::start(
        HostOptions::new()
            .with_chaos()
            .cache_dir(cache.path())
            .host_config(&format!(
                "keep_versions = 2\ncache_max_mb = {CACHE_MAX_MB}\n"
            )),
    );
    let dir = host.data_dir().join("plugins").join("chaos");
    // Five components compiled at start, two fit.
    assert!(cache_within_bound(cache.path()).len() <= 2);

    let chaos = std::fs::read(plugin_dir().join("chaos.wasm")).expect("read chaos.wasm");
    let mut deployed = Vec::new();
    for n in 1..=5 {
        let report = host
            .send(
                reqwest::Method::PUT,
                "/admin/plugins/chaos",
                Some((
                    with_marker(&chaos, &format!("artifacts-{n}")),
                    "application/wasm",
                )),
            )
            .await
            .expect(200);
        let digest = report["digest"].as_str().expect("digest").to_string();
        assert_eq!(names(&dir), referenced(&host).await, "after deployment {n}");
        let compiled = cache_within_bound(cache.path());
        assert!(
            compiled.iter().any(|c| c.starts_with(hex(&digest))),
            "the version just deployed is cached: {compiled:?}"
        );
        deployed.push(digest);
    }
    // Two kept, the configured file besides: the first three deployed are gone.
    let kept = referenced(&host).await;
    for old in &deployed[..3] {
        assert!(!kept.contains(&format!("{}.wasm", hex(old))), "{kept:?}");
    }
    assert_eq!(kept.len(), 3, "{kept:?}");

    // Going back needs the previous file: it is there.
    let back = host
        .post_raw(
            "/admin/plugins/chaos/rollback",
            Vec::new(),
            "application/json",
        )
        .await
        .expect(200);
    assert_eq!(back["digest"].as_str(), Some(deployed[3].as_str()));
    assert_eq!(names(&dir), referenced(&host).await, "after the rollback");

    // A crash left a file no record names (written before a record that never committed)
    // and a temporary file; the next start deletes them, not one still being written.
    host.kill();
    let orphan = format!("{}.wasm", "0".repeat(64));
    std::fs::write(dir.join(&orphan), b"left by a crash").expect("write");
    let stale = dir.join(".crashed.tmp");
    std::fs::write(&stale, b"half written").expect("write");
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(600))
        .expect("mtime");
    std::fs::write(dir.join(".young.tmp"), b"being written").expect("write");
    host.start_again();
    let mut expected = referenced(&host).await;
    expected.insert(".young.tmp".to_string());
    assert_eq!(names(&dir), expected);
    assert!(
        host.log_text()
            .contains("deleted a file no version refers to"),
        "{}",
        host.log_tail(40)
    );
    cache_within_bound(cache.path());
    host.get_ok("/chaos/ok").await;
}
