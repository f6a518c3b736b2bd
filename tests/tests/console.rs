//! The console, end to end: `GET /admin/topology` (only with the admin token, and its
//! shape), the page's files and headers, and the page itself in a real headless Chromium:
//! nothing without the token; with it, the four contexts and the `order -> payment` call
//! with its breaker closed; after `payment` is made to fail (its fault injection) and orders
//! trip the breaker, the same edge shown open.
//!
//! With `CTXHOST_CONSOLE_SCREENSHOT=<file.png>` the browser test also saves a screenshot of
//! the page under traffic there (docs/console.png was made so).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ctxhost_tests::{
    ADMIN_TOKEN, Api, Browser, Host, HostOptions, PLUGINS, ensure_that, eventually, plugin_dir,
    with_marker,
};
use serde_json::{Value, json};

/// Fault injection on, and a breaker that trips after a few failures and stays open long
/// enough for a page polling once a second to show it.
fn options() -> HostOptions {
    HostOptions::new()
        .plugin_config("payment", "fault-injection", "true")
        .host_config(
            "[resilience.payment]
timeout_ms = 2000
breaker = { consecutive_failures = 3, failure_rate = 0.5, window = 10, min_calls = 5, open_ms = 30000, max_open_ms = 60000, half_open_probes = 1 }
",
        )
}

async fn admin_get(api: &Api, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(api.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("admin request")
}

async fn set_faults(api: &Api, faults: Value) {
    api.send(
        reqwest::Method::PUT,
        "/payments/faults",
        Some((faults.to_string().into_bytes(), "application/json")),
    )
    .await
    .expect(200);
}

/// Orders and reads paced at about 10 a second until the flag is set, so rates show.
fn traffic(api: Api, car: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _ = api
                .try_post_json(
                    "/orders",
                    &json!({"carId": car, "qty": 1, "customerId": format!("console-{}", i % 5)}),
                )
                .await;
            let _ = api.try_send(reqwest::Method::GET, "/cars", None).await;
            let _ = api
                .try_send(reqwest::Method::GET, &format!("/availability/{car}"), None)
                .await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test]
async fn the_topology_endpoint_needs_the_token_and_describes_the_running_system() {
    let host = Host::start(options());
    let anonymous = admin_get(&host, "/admin/topology", None).await;
    assert_eq!(anonymous.status().as_u16(), 401);
    let wrong = admin_get(&host, "/admin/topology", Some("not-the-token")).await;
    assert_eq!(wrong.status().as_u16(), 401);

    let car = host.create_car("Console", 100).await;
    host.place_order(car, 1, "topology").await;
    let r = admin_get(&host, "/admin/topology", Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.expect("json");

    let mut names: Vec<&str> = t["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes: {t}"))
        .iter()
        .map(|n| n["name"].as_str().expect("a name"))
        .collect();
    names.sort_unstable();
    let mut expected = PLUGINS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "{t}");
    for n in t["nodes"].as_array().into_iter().flatten() {
        assert_eq!(n["health"], "running", "{n}");
        assert!(n["version"].is_string() && n["id"].is_string(), "{n}");
        assert!(n["inFlight"].is_u64() && n["idle"].is_u64(), "{n}");
        assert!(n["requests"]["perSec"].is_number(), "{n}");
    }
    let calls = t["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "only order calls another context: {t}");
    let call = &calls[0];
    assert_eq!(
        (&call["caller"], &call["target"]),
        (&json!("order"), &json!("payment"))
    );
    assert_eq!(call["breaker"], "closed");
    assert!(
        call["interfaces"].as_array().is_some_and(|i| i
            .iter()
            .any(|i| i.as_str().is_some_and(|i| i.contains("payments")))),
        "{call}"
    );
    assert!(call["rate"]["errorRatio"].is_number(), "{call}");
    assert!(t["events"].is_array(), "{t}");
    assert!(t["deployments"].is_array(), "{t}");
    assert_eq!(t["deadLetters"], 0, "{t}");
    assert_eq!(t["broker"]["transport"], "embedded", "{t}");
    assert_eq!(t["broker"]["ready"], true, "{t}");
    assert!(t["at"].is_string() && t["windowS"].is_number(), "{t}");
}

#[tokio::test]
async fn the_console_page_is_served_with_a_strict_policy() {
    let host = Host::start(HostOptions::new());
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/console/cytoscape.min.js", "text/javascript"),
    ] {
        let r = reqwest::get(host.url(path)).await.expect("request");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        let header = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(!header("etag").is_empty(), "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
    let page = host.get("/console").await.body;
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "loads only from the host"
    );
    host.get("/console/nothing.js").await.expect_problem(404);
}

/// What the page shows, read from its text rendering.
async fn shown(browser: &Browser) -> Value {
    browser
        .eval(
            "const rows = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
             return {
               updates: Number(document.body.getAttribute('data-updates') || 0),
               loginShown: !document.getElementById('login').hidden,
               consoleShown: !document.getElementById('console').hidden,
               nodes: rows('[data-node]', r => r.getAttribute('data-node')),
               calls: rows('[data-edge]', r => ({ edge: r.getAttribute('data-edge'), breaker: r.getAttribute('data-breaker') })),
               graph: document.querySelector('#graph canvas') !== null,
               broker: document.getElementById('broker').getAttribute('data-broker'),
               deadLetters: document.getElementById('dead-letters').getAttribute('data-dead-letters'),
               deployments: rows('[data-deployment]', r => r.getAttribute('data-deployment') + ' ' + r.className),
               url: window.location.href,
               status: document.getElementById('status').textContent,
             };",
        )
        .await
}

fn breaker_of<'a>(page: &'a Value, edge: &str) -> Option<&'a str> {
    page["calls"]
        .as_array()?
        .iter()
        .find(|c| c["edge"] == edge)?["breaker"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_the_topology_live_and_the_breaker_opening() {
    let host = Host::start(options());
    let car = host.create_car("Console", 1_000_000).await;
    host.place_order(car, 1, "console").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(host.api(), car, stop.clone());
    let browser = Browser::start().await;

    // Without the token: the form, and not one context.
    browser.open(&host.url("/console")).await;
    let page = eventually(Duration::from_secs(10), || async {
        let page = shown(&browser).await;
        ensure_that!(page["loginShown"] == true, "no token form: {page}");
        Ok(page)
    })
    .await;
    assert_eq!(page["nodes"], json!([]), "{page}");
    assert_eq!(page["calls"], json!([]), "{page}");
    assert_eq!(page["consoleShown"], false, "{page}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = shown(&browser).await;
    assert_eq!(
        page["nodes"],
        json!([]),
        "still nothing a second later: {page}"
    );

    // With it: the four contexts and the call, its breaker closed.
    browser
        .open(&host.url(&format!("/console#token={ADMIN_TOKEN}")))
        .await;
    let page = eventually(Duration::from_secs(10), || async {
        let page = shown(&browser).await;
        let mut nodes: Vec<String> = page["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        nodes.sort_unstable();
        let mut expected: Vec<String> = PLUGINS.iter().map(|p| p.to_string()).collect();
        expected.sort_unstable();
        ensure_that!(nodes == expected, "contexts shown: {page}");
        ensure_that!(
            breaker_of(&page, "order->payment") == Some("closed"),
            "order -> payment closed: {page}"
        );
        Ok(page)
    })
    .await;
    assert_eq!(page["graph"], true, "the graph is drawn: {page}");
    assert_eq!(page["broker"], "connected", "{page}");
    assert_eq!(page["deadLetters"], "0", "{page}");
    assert!(
        !page["url"]
            .as_str()
            .unwrap_or_default()
            .contains(ADMIN_TOKEN),
        "the token stays in the address bar: {page}"
    );
    // Live: the page keeps polling.
    let before = page["updates"].as_u64().unwrap_or(0);
    eventually(Duration::from_secs(5), || async {
        let page = shown(&browser).await;
        ensure_that!(
            page["updates"].as_u64().unwrap_or(0) >= before + 2,
            "no new update: {page}"
        );
        Ok(())
    })
    .await;

    // A new version of car is deployed: the page lists the deployment.
    let car_wasm = std::fs::read(plugin_dir().join("car.wasm")).expect("car.wasm");
    host.send(
        reqwest::Method::PUT,
        "/admin/plugins/car",
        Some((with_marker(&car_wasm, "console"), "application/wasm")),
    )
    .await
    .expect(200);
    eventually(Duration::from_secs(10), || async {
        let page = shown(&browser).await;
        ensure_that!(
            page["deployments"] == json!(["car deploy"]),
            "the deployment of car: {page}"
        );
        Ok(())
    })
    .await;

    // payment fails: orders trip the breaker, and the page shows it open.
    set_faults(&host, json!({"trap": true})).await;
    eventually(Duration::from_secs(15), || async {
        let r = host
            .post_json(
                "/orders",
                &json!({"carId": car, "qty": 1, "customerId": "trip"}),
            )
            .await;
        ensure_that!(
            r.status == 503 && r.body.contains("circuit breaker"),
            "not refused by the breaker yet: {} {}",
            r.status,
            r.body
        );
        Ok(())
    })
    .await;
    let page = eventually(Duration::from_secs(10), || async {
        let page = shown(&browser).await;
        ensure_that!(
            breaker_of(&page, "order->payment") == Some("open"),
            "order -> payment open: {page}"
        );
        Ok(page)
    })
    .await;
    assert_eq!(page["nodes"].as_array().map(Vec::len), Some(4), "{page}");

    if let Some(path) = std::env::var_os("CTXHOST_CONSOLE_SCREENSHOT").filter(|p| !p.is_empty()) {
        // Let a few more updates in, so the rates under the failure show.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = std::path::PathBuf::from(path);
        // Relative to the workspace, like the docs it goes into.
        let path = if path.is_relative() {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(path)
        } else {
            path
        };
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("screenshot saved to {}", path.display());
    }

    stop.store(true, Ordering::Relaxed);
    load.await.expect("traffic task");
}
