//! `ctxhost compact`: the offline compaction of the state database gives the space freed by
//! deletions back to the filesystem, keeps every row, and refuses a database a running host
//! holds open.

use std::process::Command;

use ctxhost_tests::{Host, HostOptions, host_binary, id};

fn compact(dir: &std::path::Path) -> std::process::Output {
    Command::new(host_binary())
        .args(["compact", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run ctxhost compact")
}

#[tokio::test]
async fn compaction_keeps_every_row_and_waits_for_the_host_to_stop() {
    let mut host = Host::start(HostOptions::new());
    let car = host.create_car("Compact", 100).await;
    let order = id(&host.place_order(car, 1, "carol").await, "id");

    // While the host runs, the database is its own.
    let refused = compact(host.data_dir());
    assert!(!refused.status.success(), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("stop the host"), "{why}");

    host.stop();
    let done = compact(host.data_dir());
    assert!(done.status.success(), "{done:?}");
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.contains("state.redb") && said.contains("->"), "{said}");

    host.start_again();
    host.get(&format!("/orders/{order}")).await.expect(200);
    host.get(&format!("/cars/{car}")).await.expect(200);

    // Not a data directory: a clear error.
    let empty = ctxhost_tests::TestDir::new();
    let missing = compact(empty.path());
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no state database"));
}
