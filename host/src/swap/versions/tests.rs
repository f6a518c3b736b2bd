//! Tests of the kept versions' files against a real database and data directory.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::*;

struct Fixture {
    store: VersionStore,
    data: PathBuf,
}

fn fixture(keep: usize) -> Fixture {
    let data = std::env::temp_dir().join(format!("ctxhost-versions-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data).expect("mkdir");
    let db = Db::open(&data, &[]).expect("open db");
    let committer = Committer::start(db.clone()).expect("committer");
    Fixture {
        store: VersionStore::on(db, committer, &data).keeping(keep),
        data,
    }
}

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn record(n: u32) -> VersionRecord {
    VersionRecord {
        digest: digest(n),
        version: format!("0.{n}.0"),
        origin: "test".into(),
        deployed_at: crate::time::now_rfc3339(),
    }
}

impl Fixture {
    /// The names of the files in the directory of `context`.
    fn files(&self, context: &str) -> BTreeSet<String> {
        match std::fs::read_dir(self.data.join("plugins").join(context)) {
            Ok(d) => d
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Deploy version `n` of `context` as the swapper does: its file, then the record.
    async fn deploy(&self, context: &str, n: u32) -> Versions {
        self.store
            .store_artifact(context, &digest(n), format!("wasm {n}").as_bytes())
            .expect("store");
        let mut v = self.store.load(context).expect("load");
        v.stack.push(record(n));
        v.history.push(record(n));
        self.store.save(context, &v).await.expect("save");
        self.store.load(context).expect("load")
    }
}

fn file(n: u32) -> String {
    format!("{n:064x}.wasm")
}

fn files(ns: &[u32]) -> BTreeSet<String> {
    ns.iter().map(|n| file(*n)).collect()
}

#[tokio::test]
async fn the_files_of_versions_no_longer_kept_go_with_their_records() {
    let f = fixture(2);
    let mut v = f.deploy("ctx", 1).await;
    v.configured = Some(digest(1));
    f.store.save("ctx", &v).await.expect("save");
    f.deploy("ctx", 2).await;
    assert_eq!(f.files("ctx"), files(&[1, 2]));
    // Version 1 leaves the stack and the history, but the configured file is still 1.
    let v = f.deploy("ctx", 3).await;
    let digests = |rs: &[VersionRecord]| rs.iter().map(|r| r.digest.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&v.stack), [digest(2), digest(3)]);
    assert_eq!(digests(&v.history), [digest(2), digest(3)]);
    assert_eq!(f.files("ctx"), files(&[1, 2, 3]));
    // A rollback keeps what the history still names.
    let mut v = f.store.load("ctx").expect("load");
    v.stack.pop();
    v.history.push(record(2));
    f.store.save("ctx", &v).await.expect("save");
    assert_eq!(
        f.files("ctx"),
        files(&[1, 2, 3]),
        "the history still names 3"
    );
    // The configured file changes: 1 is no longer needed.
    let mut v = f.store.load("ctx").expect("load");
    v.configured = Some(digest(4));
    f.store.save("ctx", &v).await.expect("save");
    assert_eq!(f.files("ctx"), files(&[2, 3]));
    f.deploy("ctx", 4).await;
    assert_eq!(f.files("ctx"), files(&[2, 4]));
    // Another context's files are its own.
    f.deploy("other", 1).await;
    f.deploy("ctx", 5).await;
    assert_eq!(f.files("ctx"), files(&[4, 5]));
    assert_eq!(f.files("other"), files(&[1]));
}

#[tokio::test]
async fn the_sweep_deletes_what_no_record_names_and_young_temporary_files_stay() {
    let f = fixture(20);
    f.deploy("ctx", 1).await;
    let dir = f.data.join("plugins").join("ctx");
    // Left by a crash, or by a deployment refused after its file was written.
    f.store
        .store_artifact("ctx", &digest(9), b"orphan")
        .expect("store");
    std::fs::write(dir.join(".young.tmp"), b"being written").expect("write");
    let stale = dir.join(".stale.tmp");
    std::fs::write(&stale, b"left by a crash").expect("write");
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(SystemTime::now() - TEMP_GRACE * 2)
        .expect("mtime");
    std::fs::write(dir.join("notes.txt"), b"not ours").expect("write");
    // A context without any record, and a directory that is no context.
    f.store
        .store_artifact("ghost", &digest(3), b"orphan")
        .expect("store");
    let odd = f.data.join("plugins").join("Not A Context");
    std::fs::create_dir_all(&odd).expect("mkdir");
    std::fs::write(odd.join(file(7)), b"x").expect("write");

    assert_eq!(f.store.sweep_orphans(), 3);
    assert_eq!(
        f.files("ctx"),
        BTreeSet::from([file(1), ".young.tmp".into(), "notes.txt".into()])
    );
    assert!(!f.data.join("plugins").join("ghost").exists());
    assert!(odd.join(file(7)).exists());
    assert_eq!(f.store.sweep_orphans(), 0);
}
