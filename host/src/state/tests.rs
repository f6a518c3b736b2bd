//! Tests of the unit of work and the committer against a real database file.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use super::error::StorageFault;
use super::small_disk::SmallDisk;
use super::*;

fn temp_db(tables: &[Table]) -> (Db, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ctxhost-state-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    (Db::open(&dir, tables).expect("open db"), dir)
}

fn t(name: &str) -> Table {
    Arc::from(name)
}

fn prefix(p: &str) -> ScanRange {
    ScanRange {
        start: Bound::Included(p.to_string()),
        end: Bound::Excluded(format!("{p}\u{10FFFF}")),
    }
}

async fn put_committed(db: &Db, c: &Committer, table: &Table, key: &str, value: &str) {
    let mut u = UnitOfWork::begin(db).expect("begin");
    u.put(table, key, Some(value.as_bytes().to_vec()));
    assert_eq!(
        c.commit(u).await.expect("commit"),
        CommitOutcome::Committed { events: None }
    );
}

#[tokio::test]
async fn unit_reads_its_own_writes_and_scans_merge_them_in_key_order() {
    let kv = t("ctx/a");
    let (db, _dir) = temp_db(std::slice::from_ref(&kv));
    let c = Committer::start(db.clone()).expect("committer");
    put_committed(&db, &c, &kv, "k/1", "one").await;
    put_committed(&db, &c, &kv, "k/3", "three").await;

    let mut u = UnitOfWork::begin(&db).expect("begin");
    u.put(&kv, "k/2", Some(b"two".to_vec()));
    u.put(&kv, "k/3", None);
    assert_eq!(u.get(&kv, "k/2").expect("get"), Some(b"two".to_vec()));
    assert_eq!(u.get(&kv, "k/3").expect("get"), None);
    let keys: Vec<String> = u
        .scan(&kv, prefix("k/"), None, &UnitLimits::default())
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["k/1", "k/2"]);
    let first: Vec<String> = u
        .scan(&kv, prefix("k/"), Some(1), &UnitLimits::default())
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(first, ["k/1"]);
}

#[tokio::test]
async fn of_two_units_that_read_and_wrote_the_same_key_only_the_first_commits() {
    let kv = t("ctx/a");
    let (db, _dir) = temp_db(std::slice::from_ref(&kv));
    let c = Committer::start(db.clone()).expect("committer");
    put_committed(&db, &c, &kv, "stock", "1").await;

    let mut a = UnitOfWork::begin(&db).expect("begin");
    let mut b = UnitOfWork::begin(&db).expect("begin");
    for u in [&mut a, &mut b] {
        assert_eq!(u.get(&kv, "stock").expect("get"), Some(b"1".to_vec()));
        u.put(&kv, "stock", Some(b"0".to_vec()));
    }
    assert!(matches!(
        c.commit(a).await.expect("commit"),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(c.commit(b).await.expect("commit"), CommitOutcome::Conflict);
    assert_eq!(
        db.read("ctx/a", "stock").expect("read"),
        Some(b"0".to_vec())
    );
}

#[tokio::test]
async fn a_scan_conflicts_with_an_insert_into_the_range_it_read() {
    let kv = t("ctx/a");
    let (db, _dir) = temp_db(std::slice::from_ref(&kv));
    let c = Committer::start(db.clone()).expect("committer");
    put_committed(&db, &c, &kv, "k/1", "x").await;

    let mut full = UnitOfWork::begin(&db).expect("begin");
    full.scan(&kv, prefix("k/"), None, &UnitLimits::default())
        .expect("scan");
    full.put(&kv, "count", Some(b"1".to_vec()));
    let mut limited = UnitOfWork::begin(&db).expect("begin");
    limited
        .scan(&kv, prefix("k/"), Some(1), &UnitLimits::default())
        .expect("scan");
    limited.put(&kv, "first", Some(b"k/1".to_vec()));

    // Another unit inserts after what the limited scan consumed.
    put_committed(&db, &c, &kv, "k/2", "y").await;

    assert_eq!(
        c.commit(full).await.expect("commit"),
        CommitOutcome::Conflict
    );
    assert!(matches!(
        c.commit(limited).await.expect("commit"),
        CommitOutcome::Committed { .. }
    ));
}

#[tokio::test]
async fn rolling_back_to_a_savepoint_drops_later_writes_and_events_only() {
    let kv = t("ctx/a");
    let (db, _dir) = temp_db(std::slice::from_ref(&kv));
    let mut u = UnitOfWork::begin(&db).expect("begin");
    u.put(&kv, "caller", Some(b"1".to_vec()));
    u.publish(OutgoingEvent::new(b"caller-event".to_vec()));
    let sp = u.savepoint();
    u.put(&kv, "callee", Some(b"2".to_vec()));
    u.put(&kv, "caller", None);
    u.publish(OutgoingEvent::new(b"callee-event".to_vec()));
    u.rollback_to(sp);
    assert_eq!(u.get(&kv, "caller").expect("get"), Some(b"1".to_vec()));
    assert_eq!(u.get(&kv, "callee").expect("get"), None);
    assert_eq!(u.event_count(), 1);
}

#[tokio::test]
async fn events_get_consecutive_sequence_numbers_that_survive_a_reopen() {
    let kv = t("ctx/a");
    let (db, dir) = temp_db(std::slice::from_ref(&kv));
    let c = Committer::start(db.clone()).expect("committer");
    let mut handles = Vec::new();
    for i in 0..20u8 {
        let db = db.clone();
        let c = c.clone();
        let kv = kv.clone();
        handles.push(tokio::spawn(async move {
            let mut u = UnitOfWork::begin(&db).expect("begin");
            u.put(&kv, &format!("k/{i:02}"), Some(vec![i]));
            u.publish(OutgoingEvent::new(vec![i]));
            u.publish(OutgoingEvent::new(vec![i]));
            c.commit(u).await.expect("commit")
        }));
    }
    let mut ranges = Vec::new();
    for h in handles {
        match h.await.expect("join") {
            CommitOutcome::Committed { events: Some(r) } => ranges.push(r),
            other => panic!("unexpected {other:?}"),
        }
    }
    ranges.sort();
    let expected: Vec<(u64, u64)> = (0..20).map(|i| (2 * i + 1, 2 * i + 2)).collect();
    assert_eq!(ranges, expected);
    let events = db.events_after(0, 100).expect("events");
    assert_eq!(events.len(), 40);
    // Both events of one unit carry that unit's payload, next to each other.
    for pair in events.chunks(2) {
        assert_eq!(pair[0].1, pair[1].1);
    }
    drop(c);
    drop(db);
    // The committer thread owns a handle until its channel closes.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = Db::open(&dir, std::slice::from_ref(&kv)).expect("reopen");
    let c = Committer::start(db.clone()).expect("committer");
    let mut u = UnitOfWork::begin(&db).expect("begin");
    u.publish(OutgoingEvent::new(vec![99]));
    assert_eq!(
        c.commit(u).await.expect("commit"),
        CommitOutcome::Committed {
            events: Some((41, 41))
        }
    );
}

#[tokio::test]
async fn sequences_continue_above_committed_values_after_a_restart() {
    let (db, _dir) = temp_db(&[]);
    let c = Committer::start(db.clone()).expect("committer");
    let seq = Sequences::new(db.clone(), 10);
    let mut u = UnitOfWork::begin(&db).expect("begin");
    for expected in 1..=3 {
        let v = seq.next("order", "orders").expect("next");
        assert_eq!(v, expected);
        u.took_sequence("order/orders".into(), v);
    }
    c.commit(u).await.expect("commit");
    assert_eq!(
        Sequences::new(db.clone(), 10)
            .next("order", "orders")
            .expect("next"),
        4
    );
    assert_eq!(
        Sequences::new(db, 10).next("order", "other").expect("next"),
        1
    );
}

#[tokio::test]
async fn a_context_may_use_only_so_many_sequence_names_and_others_are_not_affected() {
    let (db, _dir) = temp_db(&[]);
    let seq = Sequences::new(db, 3);
    for name in ["a", "b", "c"] {
        assert_eq!(seq.next("order", name).expect("within the limit"), 1);
    }
    let err = seq.next("order", "d").expect_err("a fourth name");
    assert!(
        matches!(err, SequenceError::TooMany { max: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("limits.sequences"), "{err}");
    // Names already in use go on; other contexts have their own allowance.
    assert_eq!(seq.next("order", "a").expect("a known name"), 2);
    assert_eq!(seq.next("payment", "d").expect("another context"), 1);
}

fn small_limits() -> UnitLimits {
    UnitLimits {
        scan_entries: 3,
        scan_bytes: 64,
        write_entries: 2,
        write_bytes: 20,
        events: 2,
        event_bytes: 10,
    }
}

#[tokio::test]
async fn a_scan_over_its_entry_or_byte_limit_fails_instead_of_cutting_the_answer() {
    let kv = t("ctx/a");
    let (db, _dir) = temp_db(std::slice::from_ref(&kv));
    let c = Committer::start(db.clone()).expect("committer");
    for i in 1..=4 {
        put_committed(&db, &c, &kv, &format!("k/{i}"), "v").await;
    }
    let limits = small_limits();
    let mut u = UnitOfWork::begin(&db).expect("begin");
    // Four entries match: unlimited or with a limit above 3, the scan fails.
    for limit in [None, Some(4)] {
        match u.scan(&kv, prefix("k/"), limit, &limits) {
            Err(ScanError::Limit(LimitError::ScanEntries { max: 3 })) => {}
            other => panic!("{limit:?}: {other:?}"),
        }
    }
    // Paging within the limit works.
    let page = u.scan(&kv, prefix("k/"), Some(3), &limits).expect("a page");
    assert_eq!(page.len(), 3);
    // The unit's own writes count like stored entries: "k/0" and 30 bytes of value, then
    // "k/1" and "v" make 37 bytes.
    u.put(&kv, "k/0", Some(vec![b'x'; 30]));
    let bytes = UnitLimits {
        scan_bytes: 36,
        ..limits
    };
    match u.scan(&kv, prefix("k/"), Some(2), &bytes) {
        Err(ScanError::Limit(e @ LimitError::ScanBytes { max: 36 })) => {
            assert!(e.to_string().contains("limits.scan_bytes"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        u.scan(&kv, prefix("k/"), Some(1), &bytes)
            .expect("one")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_unit_holds_only_so_many_writes_and_events_and_a_savepoint_gives_them_back() {
    let kv = t("ctx/a");
    let (db, _dir) = temp_db(std::slice::from_ref(&kv));
    let limits = small_limits();
    let mut u = UnitOfWork::begin(&db).expect("begin");
    // Host bookkeeping (an inbox, a cursor) does not count against the guests' limits.
    for i in 0..5 {
        u.put(&t("inbox/a"), &format!("event-{i}"), Some(vec![0; 8]));
    }
    u.put_bounded(&kv, "a", Some(b"12345".to_vec()), &limits)
        .expect("first key");
    // Overwriting a key is no new entry, and only its new size counts.
    u.put_bounded(&kv, "a", Some(b"123456789".to_vec()), &limits)
        .expect("same key");
    let sp = u.savepoint();
    u.put_bounded(&kv, "b", None, &limits).expect("second key");
    assert_eq!(
        u.put_bounded(&kv, "c", None, &limits),
        Err(LimitError::WriteEntries { count: 3, max: 2 })
    );
    assert_eq!(
        u.put_bounded(&kv, "b", Some(vec![0; 10]), &limits),
        Err(LimitError::WriteBytes { bytes: 21, max: 20 })
    );
    u.rollback_to(sp);
    u.put_bounded(&kv, "c", Some(vec![0; 9]), &limits)
        .expect("room again after the rollback");

    let event = |n: usize| OutgoingEvent::new(vec![0; n]);
    u.publish_bounded(event(4), &limits).expect("first event");
    let sp = u.savepoint();
    u.publish_bounded(event(4), &limits).expect("second event");
    assert_eq!(
        u.publish_bounded(event(1), &limits),
        Err(LimitError::Events { count: 3, max: 2 })
    );
    u.rollback_to(sp);
    assert_eq!(
        u.publish_bounded(event(7), &limits),
        Err(LimitError::EventBytes { bytes: 11, max: 10 })
    );
    u.publish_bounded(event(6), &limits).expect("fits again");
    assert_eq!(u.event_count(), 2);
}

/// A database on a [`SmallDisk`] of `capacity` bytes.
fn small_db(disk: &SmallDisk, policy: RecoveryPolicy) -> Db {
    Db::with_storage(disk.storage(), "small disk", &[t("ctx/a")], policy).expect("open db")
}

/// Commit a change of `key` (with an event), retrying while storage is unavailable; how long
/// it took. Panics on any other error, or when storage has not recovered within 20 s.
async fn commit_when_recovered(db: &Db, c: &Committer, key: &str) -> Duration {
    let began = std::time::Instant::now();
    loop {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "storage did not recover: {:?}",
            db.storage_status()
        );
        match UnitOfWork::begin(db) {
            Ok(mut u) => {
                u.put(&t("ctx/a"), key, Some(b"after".to_vec()));
                u.publish(OutgoingEvent::new(b"after".to_vec()));
                match c.commit(u).await {
                    Ok(CommitOutcome::Committed { .. }) => return began.elapsed(),
                    Ok(CommitOutcome::Conflict) => {}
                    Err(e) => assert!(e.is_unavailable(), "not unavailable: {e:?}"),
                }
            }
            Err(e) => assert!(e.is_unavailable(), "not unavailable: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_changes_as_unavailable_and_the_committer_recovers_once_space_is_freed()
{
    let disk = SmallDisk::new(u64::MAX);
    let db = small_db(&disk, RecoveryPolicy::default());
    let c = Committer::start(db.clone()).expect("committer");
    let kv = t("ctx/a");
    // The disk is full just above what the database takes now.
    disk.set_capacity(disk.used() + 256 * 1024);
    let mut stored = Vec::new();
    let full = loop {
        let key = format!("k/{:04}", stored.len());
        let mut u = UnitOfWork::begin(&db).expect("begin");
        u.put(&kv, &key, Some(vec![7u8; 16 * 1024]));
        u.publish(OutgoingEvent::new(key.clone().into_bytes()));
        match c.commit(u).await {
            Ok(CommitOutcome::Committed { .. }) => stored.push(key),
            Ok(CommitOutcome::Conflict) => panic!("no unit conflicts here"),
            Err(e) => break e,
        }
        assert!(stored.len() < 1000, "the disk never filled");
    };
    assert!(
        !stored.is_empty(),
        "nothing fitted before the disk was full"
    );
    assert!(full.is_unavailable(), "{full:?}");
    assert_eq!(full.fault(), Some(StorageFault::Full));
    assert!(!full.to_string().contains("redb"), "{full}");
    let status = db.storage_status();
    assert!(!status.ready && status.live, "{status:?}");
    assert_eq!(status.state, "full");

    // Still full: changes keep being refused as unavailable, quickly, and storage stays
    // not ready (without the recovery, redb refuses them as a previous I/O error forever).
    for _ in 0..3 {
        let refused = match UnitOfWork::begin(&db) {
            Ok(mut u) => {
                u.put(&kv, "refused", Some(vec![1u8; 64 * 1024]));
                c.commit(u).await.expect_err("a full disk took a change")
            }
            Err(e) => e,
        };
        assert!(refused.is_unavailable(), "{refused:?}");
        assert!(!db.storage_status().ready);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // Reads are served meanwhile (on a fresh handle: the failed one refuses them too).
    let began = std::time::Instant::now();
    while db.read("ctx/a", &stored[0]).is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "reads fail on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!db.storage_status().ready);

    // Space is freed: the next change commits, without a restart.
    disk.set_capacity(u64::MAX);
    commit_when_recovered(&db, &c, "after").await;
    let status = db.storage_status();
    assert!(status.ready && status.live, "{status:?}");
    assert!(status.recoveries >= 1, "{status:?}");
    // Everything acknowledged before the fault is there, and the event log goes on.
    for key in &stored {
        assert!(db.read("ctx/a", key).expect("read").is_some(), "{key} lost");
    }
    assert_eq!(db.read("ctx/a", "refused").expect("read"), None);
    let events = db.events_after(0, 10_000).expect("events");
    assert_eq!(events.len(), stored.len() + 1);
    let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_database_that_cannot_be_reopened_fails_liveness_after_the_limit_and_recovers() {
    let disk = SmallDisk::new(u64::MAX);
    let db = small_db(
        &disk,
        RecoveryPolicy {
            unhealthy_after: Some(Duration::from_millis(200)),
        },
    );
    let c = Committer::start(db.clone()).expect("committer");
    put_committed(&db, &c, &t("ctx/a"), "before", "1").await;
    disk.set_broken(true);
    let mut u = UnitOfWork::begin(&db).expect("begin");
    u.put(&t("ctx/a"), "k", Some(b"v".to_vec()));
    let e = c
        .commit(u)
        .await
        .expect_err("a broken device took a change");
    assert_eq!(e.fault(), Some(StorageFault::Failing), "{e:?}");
    // Reopening fails on: not live once the limit has passed.
    let began = std::time::Instant::now();
    loop {
        let status = db.storage_status();
        assert!(!status.ready, "{status:?}");
        if !status.live {
            assert!(
                status.reason.is_some_and(|r| r.contains("restart")),
                "{status:?}"
            );
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "still live: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    disk.set_broken(false);
    commit_when_recovered(&db, &c, "after").await;
    let status = db.storage_status();
    assert!(status.ready && status.live, "{status:?}");
    assert_eq!(
        db.read("ctx/a", "before").expect("read"),
        Some(b"1".to_vec())
    );
}

#[tokio::test]
async fn pruned_events_leave_the_log_and_sequence_numbers_go_on_after_a_reopen() {
    let (db, dir) = temp_db(&[]);
    let c = Committer::start(db.clone()).expect("committer");
    let mut u = UnitOfWork::begin(&db).expect("begin");
    for i in 0..5u8 {
        u.publish(OutgoingEvent::new(vec![i]));
    }
    c.commit(u).await.expect("commit");
    let mut prune = UnitOfWork::begin(&db).expect("begin");
    prune.remove_events(1, 3);
    assert!(!prune.is_read_only());
    c.commit(prune).await.expect("commit");
    assert_eq!(db.event_log_extent().expect("extent"), Some((4, 5)));
    let mut prune = UnitOfWork::begin(&db).expect("begin");
    prune.remove_events(4, 5);
    c.commit(prune).await.expect("commit");
    assert_eq!(db.event_log_extent().expect("extent"), None);

    drop(c);
    drop(db);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let db = Db::open(&dir, &[]).expect("reopen");
    let c = Committer::start(db.clone()).expect("committer");
    assert_eq!(*c.committed_events().borrow(), 5);
    let mut u = UnitOfWork::begin(&db).expect("begin");
    u.publish(OutgoingEvent::new(vec![9]));
    assert_eq!(
        c.commit(u).await.expect("commit"),
        CommitOutcome::Committed {
            events: Some((6, 6))
        }
    );
}

#[tokio::test]
async fn the_page_cache_figure_follows_the_data_up_to_the_cache_size() {
    const CACHE: usize = 1024 * 1024;
    let kv = t("ctx/a");
    let dir = std::env::temp_dir().join(format!("ctxhost-state-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let db = Db::open_with(
        &dir,
        std::slice::from_ref(&kv),
        RecoveryPolicy::default(),
        CACHE,
    )
    .expect("open db");
    let c = Committer::start(db.clone()).expect("committer");
    put_committed(&db, &c, &kv, "k/0", "zero").await;
    let small = db.cache_used_bytes();
    assert!(small > 0, "a page just written is cached");
    // Four times the cache's size of values, a unit of 64 KiB at a time.
    let value = vec![b'x'; 1024];
    for unit in 0..64 {
        let mut u = UnitOfWork::begin(&db).expect("begin");
        for i in 0..64 {
            u.put(&kv, &format!("k/{unit:02}/{i:02}"), Some(value.clone()));
        }
        c.commit(u).await.expect("commit");
    }
    let full = db.cache_used_bytes();
    assert!(
        full > small && full <= CACHE as u64,
        "the cache grew from {small} to {full} bytes, past its {CACHE}"
    );
}
