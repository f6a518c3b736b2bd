//! Backups of a real database: the round trip, and every kind of damaged file refused with
//! the error that names it and nothing written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};

use super::format::{FRAME_LEN, HEADER_LEN, MAX_PAYLOAD, TAG_DATA, TAG_TRAILER};
use super::*;
use crate::state::db::{EVENTS, kv};
use crate::state::{Db, Table};

const DIRS: &[&str] = &["plugins"];

/// A fresh directory under the temporary directory, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("ctxhost-backup-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&p).expect("mkdir");
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts(force: bool) -> RestoreOptions<'static> {
    RestoreOptions {
        force,
        file_dirs: DIRS,
    }
}

/// A database with string tables (one empty, one with a value spanning several records),
/// the event log, and files under `plugins/` (one empty, one spanning several records).
fn sample(dir: &Path, big: bool) -> (Db, Vec<(String, Vec<u8>)>) {
    let tables: Vec<Table> = vec![Arc::from("ctx/a"), Arc::from("ctx/empty")];
    fs::create_dir_all(dir).expect("mkdir");
    let db = Db::open(dir, &tables).expect("open");
    let txn = db.begin_write().expect("write");
    {
        let mut a = txn.open_table(kv("ctx/a")).expect("table");
        a.insert("k1", b"one".as_slice()).expect("insert");
        a.insert("k2", b"".as_slice()).expect("insert");
        a.insert("\u{e9}t\u{e9}", b"unicode".as_slice())
            .expect("insert");
        if big {
            let value: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
            a.insert("big", value.as_slice()).expect("insert");
        }
        let mut e = txn.open_table(EVENTS).expect("events");
        for seq in 1..=5u64 {
            e.insert(seq, format!("event {seq}").as_bytes())
                .expect("insert");
        }
        let mut c = txn.open_table(kv("sys/cursors")).expect("cursors");
        c.insert("a", 3u64.to_le_bytes().as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
    let mut files = vec![
        ("plugins/a/01.wasm".to_string(), b"\0asm first".to_vec()),
        ("plugins/a/02.wasm".to_string(), Vec::new()),
    ];
    if big {
        files.push((
            "plugins/b/03.wasm".to_string(),
            (0..600_000u32).map(|i| (i % 13) as u8).collect(),
        ));
    }
    (db, files)
}

/// Write `files` under `dir` and open them as a backup's data files.
fn data_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<DataFile> {
    files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, bytes).expect("write");
            DataFile {
                name: name.clone(),
                file: fs::File::open(&path).expect("open"),
                len: bytes.len() as u64,
            }
        })
        .collect()
}

/// Every table of the database file at `path`, as kind, name and entries.
type Content = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

fn content(db: &Database) -> Content {
    let r = db.begin_read().expect("read");
    let mut out = Content::new();
    for h in r.list_tables().expect("list") {
        let name = h.name().to_string();
        let rows = if name == EVENTS.name() {
            let t = r.open_table(EVENTS).expect("events");
            t.iter()
                .expect("iter")
                .map(|i| {
                    let (k, v) = i.expect("row");
                    (k.value().to_le_bytes().to_vec(), v.value().to_vec())
                })
                .collect()
        } else {
            let t = r.open_table(kv(&name)).expect("table");
            t.iter()
                .expect("iter")
                .map(|i| {
                    let (k, v) = i.expect("row");
                    (k.value().as_bytes().to_vec(), v.value().to_vec())
                })
                .collect()
        };
        out.insert(name, rows);
    }
    out
}

fn backup_bytes(db: &Db, files: Vec<DataFile>) -> (Vec<u8>, BackupSummary) {
    let snapshot = db.snapshot().expect("snapshot");
    dump(&snapshot, files, 1_700_000_000_123, Vec::new()).expect("dump")
}

/// A backup: its directory, bytes and summary, the database and the files it was made of.
type Made = (
    Temp,
    Vec<u8>,
    BackupSummary,
    Content,
    Vec<(String, Vec<u8>)>,
);

/// A small backup (every kind of record, no continuation) and a large one.
fn made(big: bool) -> Made {
    let t = Temp::new();
    let data = t.0.join("data");
    let (db, files) = sample(&data, big);
    let opened = data_files(&data, &files);
    let (bytes, summary) = backup_bytes(&db, opened);
    drop(db);
    let original = content(&Database::open(data.join("state.redb")).expect("reopen"));
    (t, bytes, summary, original, files)
}

#[test]
fn a_backup_restores_every_table_entry_and_file() {
    let (t, bytes, summary, original, files) = made(true);
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.files, 3);
    assert_eq!(summary.file_bytes, 600_000 + 10);
    assert_eq!(
        summary.tables as usize,
        original.len(),
        "every table: {original:?}"
    );
    assert_eq!(
        summary.entries as usize,
        original.values().map(Vec::len).sum::<usize>()
    );
    assert!(original.contains_key("ctx/empty"));
    assert_eq!(summary.taken_at(), "2023-11-14T22:13:20.123Z");

    let file = t.0.join("backup");
    fs::write(&file, &bytes).expect("write");
    assert_eq!(verify(&file, DIRS).expect("verify"), summary);

    let target = t.0.join("restored");
    let report = restore(&file, &target, &opts(false)).expect("restore");
    assert_eq!(report.backup, summary);
    assert!(!report.replaced);
    let restored = Database::open(target.join("state.redb")).expect("open restored");
    assert_eq!(content(&restored), original);
    for (name, want) in &files {
        assert_eq!(&fs::read(target.join(name)).expect("file"), want, "{name}");
    }
    let left: Vec<_> = fs::read_dir(&t.0)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 3, "no staging directory left: {left:?}");
}

#[test]
fn a_backup_holds_its_snapshot_and_nothing_committed_after_it() {
    let t = Temp::new();
    let (db, _) = sample(&t.0.join("data"), false);
    let snapshot = db.snapshot().expect("snapshot");
    let txn = db.begin_write().expect("write");
    {
        let mut a = txn.open_table(kv("ctx/a")).expect("table");
        a.insert("later", b"x".as_slice()).expect("insert");
        a.remove("k1").expect("remove");
    }
    txn.commit().expect("commit");
    let (bytes, _) = dump(&snapshot, Vec::new(), 0, Vec::new()).expect("dump");
    let file = t.0.join("backup");
    fs::write(&file, &bytes).expect("write");
    let target = t.0.join("restored");
    restore(&file, &target, &opts(false)).expect("restore");
    let restored = content(&Database::open(target.join("state.redb")).expect("open"));
    let keys: Vec<&[u8]> = restored["ctx/a"]
        .iter()
        .map(|(k, _)| k.as_slice())
        .collect();
    assert!(keys.contains(&b"k1".as_slice()), "{keys:?}");
    assert!(!keys.contains(&b"later".as_slice()), "{keys:?}");
}

/// The offsets where records begin (the header's end first), and the file's end.
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut at = HEADER_LEN;
    let mut out = vec![at];
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        let trailer = bytes[at] == TAG_TRAILER;
        at += FRAME_LEN + len;
        out.push(at);
        if trailer {
            break;
        }
    }
    assert_eq!(at, bytes.len(), "the trailer ends the file");
    out
}

/// Restore `bytes` into a new directory: the error, after checking nothing was written.
fn refused(bytes: &[u8]) -> BackupError {
    let t = Temp::new();
    let file = t.0.join("backup");
    fs::write(&file, bytes).expect("write");
    let target = t.0.join("restored");
    let e = restore(&file, &target, &opts(false)).expect_err("a damaged backup is refused");
    let left: Vec<_> = fs::read_dir(&t.0)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["backup"], "nothing written for {e}");
    assert!(e.is_damaged(), "{e}");
    e
}

#[test]
fn a_truncated_backup_is_refused_at_every_record_boundary_and_inside_records() {
    let (_t, bytes, _, _, _) = made(true);
    let edges = boundaries(&bytes);
    assert!(edges.len() > 10, "{edges:?}");
    let mut cuts: Vec<usize> = (0..HEADER_LEN).collect();
    for pair in edges.windows(2) {
        cuts.push(pair[0]);
        cuts.push(pair[0] + 1);
        cuts.push(pair[0] + FRAME_LEN);
        cuts.push((pair[0] + pair[1]) / 2);
        cuts.push(pair[1] - 1);
    }
    for cut in cuts {
        match refused(&bytes[..cut]) {
            BackupError::Truncated { at, .. } => {
                assert_eq!(at, cut as u64, "cut at {cut}")
            }
            e => panic!("cut at {cut}: {e}"),
        }
    }
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let (_t, bytes, _, _, _) = made(false);
    // Wherever it is (magic, version, framing, names, keys, values, counts, digest), a
    // flipped byte is refused as damage: `refused` checks that, and that nothing is written.
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x20;
        let e = refused(&damaged);
        if i >= bytes.len() - 64 {
            assert!(
                matches!(e, BackupError::Digest { .. }),
                "trailer byte {i}: {e}"
            );
        }
    }
    // A byte of a value or of a file's content: only the digest can tell.
    for needle in [b"event 5".as_slice(), b"first".as_slice()] {
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("present");
        let mut damaged = bytes.clone();
        damaged[at + needle.len() - 1] ^= 0x01;
        assert!(matches!(refused(&damaged), BackupError::Digest { .. }));
    }
}

#[test]
fn the_wrong_magic_or_version_is_named() {
    let (_t, bytes, _, _, _) = made(false);
    let mut other = bytes.clone();
    other[0] = b'X';
    assert!(matches!(refused(&other), BackupError::NotABackup));
    assert!(matches!(
        refused(b"{\"not\": \"a backup\"}"),
        BackupError::NotABackup
    ));
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    match refused(&newer) {
        BackupError::Version { found, supported } => {
            assert_eq!((found, supported), (2, 1));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn an_oversize_length_is_refused_before_anything_is_allocated() {
    let (_t, bytes, _, _, _) = made(false);
    let edges = boundaries(&bytes);
    for &at in &edges[..edges.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[at + 1..at + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        match refused(&damaged) {
            BackupError::Oversize {
                at: where_,
                len,
                max,
            } => {
                assert_eq!(
                    (where_, len, max),
                    (at as u64, u64::from(u32::MAX), 1 << 20)
                );
            }
            e => panic!("record at {at}: {e}"),
        }
    }
    let mut damaged = bytes.clone();
    let at = edges[0];
    damaged[at + 1..at + 5].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    assert!(matches!(refused(&damaged), BackupError::Oversize { .. }));
}

#[test]
fn bytes_after_the_trailer_or_records_out_of_place_are_refused() {
    let (_t, bytes, _, _, _) = made(false);
    let mut joined = bytes.clone();
    joined.extend_from_slice(&bytes);
    assert!(matches!(refused(&joined), BackupError::Damaged { .. }));
    // A data record where no value or file is open.
    let edges = boundaries(&bytes);
    let mut stray = bytes[..edges[0]].to_vec();
    stray.extend_from_slice(&[TAG_DATA, 1, 0, 0, 0, 7]);
    stray.extend_from_slice(&bytes[edges[0]..]);
    assert!(matches!(refused(&stray), BackupError::Damaged { .. }));
}

#[test]
fn a_file_outside_the_restored_directories_is_refused() {
    let t = Temp::new();
    let (db, _) = sample(&t.0.join("data"), false);
    let files = data_files(&t.0, &[("secrets/key".to_string(), b"k".to_vec())]);
    let (bytes, _) = backup_bytes(&db, files);
    assert!(matches!(refused(&bytes), BackupError::Outside { .. }));
}

#[test]
fn a_non_empty_directory_needs_force_and_a_held_database_is_never_replaced() {
    let (t, bytes, summary, original, files) = made(true);
    let file = t.0.join("backup");
    fs::write(&file, &bytes).expect("write");
    let target = t.0.join("existing");
    fs::create_dir_all(target.join("plugins/old")).expect("mkdir");
    fs::write(target.join("plugins/old/x.wasm"), b"old").expect("write");
    fs::write(target.join("admin-token"), b"token").expect("write");
    let old = Db::open(&target, &[Arc::from("ctx/old")]).expect("old db");

    let e = restore(&file, &target, &opts(false)).expect_err("not empty");
    assert!(matches!(e, BackupError::NotEmpty { .. }), "{e}");
    let e = restore(&file, &target, &opts(true)).expect_err("held");
    assert!(matches!(e, BackupError::InUse { .. }), "{e}");
    assert_eq!(
        fs::read(target.join("plugins/old/x.wasm")).expect("kept"),
        b"old"
    );
    drop(old);

    let report = restore(&file, &target, &opts(true)).expect("forced");
    assert!(report.replaced);
    assert_eq!(report.backup, summary);
    let restored = Database::open(target.join("state.redb")).expect("open");
    assert_eq!(content(&restored), original);
    assert!(!target.join("plugins/old").exists(), "plugins/ is replaced");
    for (name, want) in &files {
        assert_eq!(&fs::read(target.join(name)).expect("file"), want);
    }
    assert_eq!(
        fs::read(target.join("admin-token")).expect("kept"),
        b"token"
    );
    let mut left: Vec<_> = fs::read_dir(&target)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["admin-token", "plugins", "state.redb"]);
}
