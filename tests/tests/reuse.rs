//! Instance reuse (`instance_reuse`): by default every invocation gets a fresh instance;
//! a context that allows reuse serves later invocations with instances that finished
//! cleanly, drops the ones that failed, and keeps the rental story consistent.

use std::time::Duration;

use ctxhost_tests::{
    Api, Host, HostOptions, OrderLoad, SETTLE, assert_rental_consistent,
    assert_view_matches_orders, plugin_dir, with_marker,
};
use serde_json::Value;

/// The `/admin/plugins` entry of `name`.
async fn plugin(api: &Api, name: &str) -> Value {
    api.get_list("/admin/plugins")
        .await
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in /admin/plugins"))
}

/// Instances created so far for the current version of `name`.
async fn created(api: &Api, name: &str) -> u64 {
    plugin(api, name).await["instances"]["created"]
        .as_u64()
        .unwrap_or_else(|| panic!("no instances.created for {name}"))
}

/// How many requests the instance answering `/chaos/served` has served, that one included.
async fn served(api: &Api) -> u64 {
    api.get("/chaos/served").await.expect(200)["served"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn reuse_by_default_every_request_gets_a_fresh_instance() {
    let host = Host::start(HostOptions::new().with_chaos());
    let before = created(&host, "chaos").await;
    for _ in 0..20 {
        assert_eq!(served(&host).await, 1, "guest memory outlived its request");
    }
    assert_eq!(created(&host, "chaos").await, before + 20);
    let chaos = plugin(&host, "chaos").await;
    assert_eq!(chaos["limits"]["instanceReuse"], 1, "{chaos}");
    assert_eq!(chaos["instances"]["idle"], 0, "{chaos}");
}

#[tokio::test]
async fn reuse_serves_requests_with_kept_instances_and_drops_the_ones_that_fail() {
    let host = Host::start(
        HostOptions::new()
            .with_chaos()
            .plugin_setting("chaos", "instance_reuse = 50"),
    );
    let before = created(&host, "chaos").await;
    // One client at a time: one instance serves 50 requests, then a new one takes over.
    let counts: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..120 {
            v.push(served(&host).await);
        }
        v
    };
    assert_eq!(counts[..50], (1..=50).collect::<Vec<_>>()[..], "{counts:?}");
    assert_eq!(
        counts[50], 1,
        "an instance served more than 50 requests: {counts:?}"
    );
    assert_eq!(created(&host, "chaos").await, before + 3);
    let chaos = plugin(&host, "chaos").await;
    assert_eq!(chaos["limits"]["instanceReuse"], 50, "{chaos}");
    assert_eq!(chaos["instances"]["idle"], 1, "{chaos}");

    // A failure fails only its own request, and its instance is not kept: the next request
    // runs on a fresh one.
    for (path, status) in [("/chaos/panic", 500), ("/chaos/trap", 500)] {
        host.get(path).await.expect_problem(status);
        assert_eq!(served(&host).await, 1, "after {path}");
        assert_eq!(served(&host).await, 2, "after {path}");
    }
}

#[tokio::test]
async fn reuse_a_deployed_version_starts_with_its_own_instances() {
    let host = Host::start(
        HostOptions::new()
            .with_chaos()
            .plugin_setting("chaos", "instance_reuse = 50"),
    );
    for n in 1..=3 {
        assert_eq!(served(&host).await, n);
    }
    let path = plugin_dir().join("chaos.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    host.send(
        reqwest::Method::PUT,
        "/admin/plugins/chaos",
        Some((with_marker(&bytes, "reuse-v2"), "application/wasm")),
    )
    .await
    .expect(200);
    // The old version's idle instance is not handed to the new one, and the setting stays.
    assert_eq!(served(&host).await, 1);
    assert_eq!(served(&host).await, 2);
    let chaos = plugin(&host, "chaos").await;
    assert_eq!(chaos["instances"]["created"], 1, "{chaos}");
    assert_eq!(chaos["limits"]["instanceReuse"], 50, "{chaos}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_keeps_the_rental_story_consistent_under_concurrent_load() {
    const STOCK: u64 = 150;
    let host = Host::start(HostOptions::new().host_setting("instance_reuse = 1000"));
    let car = host.create_car("Reused", STOCK).await;
    let load = OrderLoad::start(&host, car, 16, 300);
    let seen = load.join(Duration::from_secs(120)).await;
    assert!(
        seen.unexpected.is_empty() && seen.transport_errors.is_empty(),
        "unexpected answers: {:?} {:?}",
        seen.unexpected,
        seen.transport_errors
    );
    assert_eq!(seen.created.len(), 300);
    assert_rental_consistent(&host, &host, car, STOCK, &seen.created, SETTLE).await;
    assert_view_matches_orders(&host, &host, SETTLE).await;
    // Every context ran hundreds of invocations (requests, typed calls, events) on a
    // handful of instances.
    for name in ["order", "payment", "car", "view"] {
        let made = created(&host, name).await;
        eprintln!("{name}: {made} instances");
        assert!(
            (1..=64).contains(&made),
            "{name} created {made} instances for hundreds of invocations"
        );
    }
}
