//! `ctxhost backup` and `ctxhost restore`: a backup taken from a running host under a load
//! of orders restores, into a new data directory, a host that serves the same rows and the
//! same plugin versions; a backup taken in the middle of the load restores a consistent
//! state whose events the restored host finishes applying, none twice; damaged backups and
//! occupied directories are refused with nothing written.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ctxhost_tests::{
    ADMIN_TOKEN, Api, Created, Host, HostOptions, OrderLoad, SETTLE, TestDir,
    assert_rental_consistent, assert_view_matches_orders, host_binary, id, plugin_dir,
    rental_snapshot, with_marker,
};
use serde_json::{Value, json};

/// Run `ctxhost` with `args`, the admin token in its environment.
async fn ctxhost<S: AsRef<OsStr>>(args: &[S]) -> Output {
    tokio::process::Command::new(host_binary())
        .args(args)
        .env("CTXHOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("CTXHOST_URL")
        .env_remove("CTXHOST_DATA_DIR")
        .env_remove("CTXHOST_ADMIN_TOKEN_FILE")
        .output()
        .await
        .expect("run ctxhost")
}

fn said(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ctxhost backup --to <to>` against `api`'s host.
async fn backup(api: &Api, to: &Path) -> Output {
    ctxhost(&[
        OsStr::new("backup"),
        OsStr::new("--url"),
        OsStr::new(&api.url("")),
        OsStr::new("--to"),
        to.as_os_str(),
    ])
    .await
}

/// `ctxhost restore --from <from> --data-dir <dir>` (and `--force`).
async fn restore(from: &Path, dir: &Path, force: bool) -> Output {
    let mut args = vec![
        OsStr::new("restore"),
        OsStr::new("--from"),
        from.as_os_str(),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ];
    if force {
        args.push(OsStr::new("--force"));
    }
    ctxhost(&args).await
}

#[track_caller]
fn succeeded(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", said(out));
    said(out)
}

/// Each loaded context's digest, and the digests of car's kept versions.
async fn versions(api: &Api) -> (BTreeMap<String, String>, Vec<String>) {
    let loaded = api
        .get_list("/admin/plugins")
        .await
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_owned(),
                p["digest"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let car = api.get_ok("/admin/plugins/car/versions").await;
    let stack = car["stack"]
        .as_array()
        .unwrap_or_else(|| panic!("versions of car: {car}"))
        .iter()
        .map(|v| v["digest"].as_str().unwrap_or("").to_owned())
        .collect();
    (loaded, stack)
}

fn by_id(list: &Value) -> BTreeMap<u64, Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| (id(v, "id"), v.clone()))
        .collect()
}

/// Whether `dir` is absent or empty.
fn empty_or_absent(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

const STOCK: u64 = 1_000_000;
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_the_same_rows_and_versions_and_a_consistent_state() {
    let files = TestDir::new();
    let host = Host::start(HostOptions::new());
    // A deployed version on top of the configured one: a restored host must find its file.
    let car_wasm = std::fs::read(plugin_dir().join("car.wasm")).expect("car.wasm");
    host.send(
        reqwest::Method::PUT,
        "/admin/plugins/car",
        Some((with_marker(&car_wasm, "backup-test"), "application/wasm")),
    )
    .await
    .expect(200);
    let car = host.create_car("Backed-up", STOCK).await;

    // The backup runs in the middle of a load that goes on while it runs.
    let load = OrderLoad::start(&host.api(), car, CLIENTS, 1_000_000);
    assert!(load.wait_answered(150, Duration::from_secs(60)).await >= 150);
    let mid = files.path().join("mid.backup");
    let before = load.answered();
    let out = backup(&host, &mid).await;
    let during = load.answered() - before;
    let report = succeeded(&out, "the backup under load");
    assert!(
        report.contains("bytes")
            && report.contains("entries")
            && report.contains("component files"),
        "{report}"
    );
    assert!(!load.is_done(), "the load went on during the backup");
    assert!(
        load.wait_answered(load.answered() + 100, Duration::from_secs(60))
            .await
            > before
    );
    let outcome = load.finish(Duration::from_secs(30)).await;
    assert!(outcome.unexpected.is_empty(), "{:?}", outcome.unexpected);
    assert!(
        outcome.transport_errors.is_empty(),
        "{:?}",
        outcome.transport_errors
    );
    eprintln!(
        "{} orders, {during} of them answered while the backup ran: {report}",
        outcome.created.len()
    );
    assert_rental_consistent(&host, &host, car, STOCK, &outcome.created, SETTLE).await;
    assert_view_matches_orders(&host, &host, SETTLE).await;
    let customers: Vec<String> = (0..CLIENTS).map(|c| format!("load-{c}")).collect();

    // Once the load is done: a backup restores exactly what the host serves.
    let last = files.path().join("last.backup");
    succeeded(&backup(&host, &last).await, "the backup after the load");
    assert!(!files.path().join("last.backup.partial").exists());
    let original = rental_snapshot(&host, &customers).await;
    let original_versions = versions(&host).await;
    assert_eq!(original_versions.1.len(), 2, "{original_versions:?}");

    let restored_dir = files.path().join("restored");
    let said = succeeded(&restore(&last, &restored_dir, false).await, "restore");
    assert!(said.contains("restored"), "{said}");
    let restored = Host::start(HostOptions::new().data_dir(&restored_dir));
    assert_ne!(restored.url(""), host.url(""));
    assert_eq!(
        rental_snapshot(&restored, &customers).await,
        original,
        "restored rows"
    );
    assert_eq!(
        versions(&restored).await,
        original_versions,
        "restored versions"
    );
    // Its consumers had nothing left to apply: still the same once they had the time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rental_snapshot(&restored, &customers).await, original);
    // And it goes on with fresh ids.
    let next = restored.place_order(car, 1, "after-restore").await;
    let highest = by_id(&original["orders"])
        .keys()
        .copied()
        .max()
        .unwrap_or(0);
    assert!(id(&next, "id") > highest, "{next}");

    // The backup taken during the load: a consistent part of the same history. Orders it
    // caught before their saga ended are finished by the restored host's consumers, from
    // the cursors in the backup, each once.
    let mid_dir = files.path().join("restored-mid");
    succeeded(
        &restore(&mid, &mid_dir, false).await,
        "restore of the mid-load backup",
    );
    let partial = Host::start(HostOptions::new().data_dir(&mid_dir));
    assert_rental_consistent(&partial, &partial, car, STOCK, &Created::new(), SETTLE).await;
    assert_view_matches_orders(&partial, &partial, SETTLE).await;
    let partial_rows = rental_snapshot(&partial, &customers).await;
    let (all_orders, some_orders) = (by_id(&original["orders"]), by_id(&partial_rows["orders"]));
    assert!(
        !some_orders.is_empty() && some_orders.len() < all_orders.len(),
        "the mid-load backup holds {} of {} orders",
        some_orders.len(),
        all_orders.len()
    );
    assert!(
        some_orders.len() >= before,
        "every order answered before the backup began is in it"
    );
    for (order_id, order) in &some_orders {
        assert_eq!(all_orders.get(order_id), Some(order), "order {order_id}");
    }
    let (all_payments, some_payments) = (
        by_id(&original["payments"]),
        by_id(&partial_rows["payments"]),
    );
    assert_eq!(some_payments.len(), some_orders.len());
    for (payment_id, payment) in &some_payments {
        assert_eq!(
            all_payments.get(payment_id),
            Some(payment),
            "payment {payment_id}"
        );
    }
    let rented: u64 = some_orders.values().map(|o| id(o, "qty")).sum();
    let car_now = partial.car(car).await;
    assert_eq!(car_now["available"], json!(STOCK - rented), "{car_now}");
    assert_eq!(versions(&partial).await, original_versions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_and_occupied_directories_are_refused_with_nothing_written() {
    let files = TestDir::new();
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Kept", 10).await;
    let order = id(&host.place_order(car, 2, "dora").await, "id");
    let good = files.path().join("good.backup");
    succeeded(&backup(&host, &good).await, "backup");

    // An existing file is not overwritten; a refused backup leaves no file.
    let again = backup(&host, &good).await;
    assert!(!again.status.success());
    assert!(said(&again).contains("exists"), "{}", said(&again));
    let denied = files.path().join("denied.backup");
    let unauthorised = tokio::process::Command::new(host_binary())
        .args([
            OsStr::new("backup"),
            OsStr::new("--url"),
            OsStr::new(&host.url("")),
            OsStr::new("--to"),
            denied.as_os_str(),
        ])
        .env("CTXHOST_ADMIN_TOKEN", "not-the-token")
        .output()
        .await
        .expect("run ctxhost");
    assert!(!unauthorised.status.success());
    assert!(
        said(&unauthorised).contains("401"),
        "{}",
        said(&unauthorised)
    );
    assert!(!denied.exists() && !files.path().join("denied.backup.partial").exists());

    let bytes = std::fs::read(&good).expect("read the backup");
    let damaged: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            "no-trailer",
            bytes[..bytes.len() - 70].to_vec(),
            "truncated",
        ),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let at = b.len() - 40;
                b[at] ^= 0x01;
                b
            },
            "SHA-256",
        ),
        ("empty", Vec::new(), "truncated"),
        (
            "not-a-backup",
            b"{\"orders\": []}".to_vec(),
            "not a ctxhost backup",
        ),
    ];
    for (name, content, reason) in damaged {
        let file = files.path().join(format!("{name}.backup"));
        std::fs::write(&file, content).expect("write");
        let absent = files.path().join(format!("{name}-absent"));
        let out = restore(&file, &absent, false).await;
        assert!(!out.status.success(), "{name}: {}", said(&out));
        assert!(said(&out).contains(reason), "{name}: {}", said(&out));
        assert!(!absent.exists(), "{name}: nothing written");
        let empty = files.path().join(format!("{name}-empty"));
        std::fs::create_dir(&empty).expect("mkdir");
        let out = restore(&file, &empty, true).await;
        assert!(!out.status.success(), "{name}: {}", said(&out));
        assert!(empty_or_absent(&empty), "{name}: the directory stays empty");
    }
    let left: Vec<PathBuf> = std::fs::read_dir(files.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".restore-"))
        })
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");

    // A data directory in use, or not empty, is not restored into.
    let busy = restore(&good, host.data_dir(), false).await;
    assert!(!busy.status.success());
    assert!(said(&busy).contains("not empty"), "{}", said(&busy));
    let forced = restore(&good, host.data_dir(), true).await;
    assert!(!forced.status.success());
    assert!(said(&forced).contains("stop the host"), "{}", said(&forced));
    host.get(&format!("/orders/{order}")).await.expect(200);

    // Stopped, it is replaced by --force: the state of the backup, not what came after.
    let later = id(&host.place_order(car, 1, "dora").await, "id");
    let mut host = host;
    host.stop();
    let out = restore(&good, host.data_dir(), true).await;
    assert!(
        succeeded(&out, "forced restore").contains("replaced"),
        "{}",
        said(&out)
    );
    host.start_again();
    host.get(&format!("/orders/{order}")).await.expect(200);
    host.get(&format!("/orders/{later}")).await.expect(404);
}
