//! The gateway's contract: validation answers, unknown routes and ids, the body size limit,
//! the health endpoints and the plugin listing.

use ctxhost_tests::{Host, HostOptions, PLUGINS, Resp, as_list, text};
use serde_json::{Value, json};

/// A body that is not valid JSON.
const MALFORMED: &[u8] = br#"{"name": "Avante", "stock": "#;

async fn post_body(host: &Host, path: &str, body: &[u8]) -> Resp {
    host.post_raw(path, body.to_vec(), "application/json").await
}

#[tokio::test]
async fn validation_of_post_cars_names_each_bad_field() {
    let host = Host::start(HostOptions::new());
    let cases: &[(&str, Value)] = &[
        ("name", json!({"stock": 5})),
        ("name", json!({"name": 42, "stock": 5})),
        ("name", json!({"name": null, "stock": 5})),
        ("name", json!({"name": "", "stock": 5})),
        ("stock", json!({"name": "Avante"})),
        ("stock", json!({"name": "Avante", "stock": "5"})),
        ("stock", json!({"name": "Avante", "stock": -1})),
        ("stock", json!({"name": "Avante", "stock": 1.5})),
        ("stock", json!({"name": "Avante", "stock": null})),
    ];
    for (field, body) in cases {
        let resp = host.post_json("/cars", body).await;
        resp.expect_problem_naming(400, field);
    }
    post_body(&host, "/cars", MALFORMED)
        .await
        .expect_problem(400);
    post_body(&host, "/cars", b"").await.expect_problem(400);
    post_body(&host, "/cars", b"[1, 2]")
        .await
        .expect_problem(400);

    assert!(
        host.cars().await.is_empty(),
        "a car was stored by an invalid request"
    );
    // A valid body still works after all of that, and stock 0 is allowed.
    host.create_car("Avante", 0).await;
}

#[tokio::test]
async fn validation_of_post_orders_names_each_bad_field() {
    let host = Host::start(HostOptions::new());
    let car = host.create_car("Avante", 5).await;
    let cases: &[(&str, Value)] = &[
        ("carId", json!({"qty": 1, "customerId": "alice"})),
        (
            "carId",
            json!({"carId": "1", "qty": 1, "customerId": "alice"}),
        ),
        (
            "carId",
            json!({"carId": -1, "qty": 1, "customerId": "alice"}),
        ),
        (
            "carId",
            json!({"carId": null, "qty": 1, "customerId": "alice"}),
        ),
        ("qty", json!({"carId": car, "customerId": "alice"})),
        (
            "qty",
            json!({"carId": car, "qty": "2", "customerId": "alice"}),
        ),
        (
            "qty",
            json!({"carId": car, "qty": 0, "customerId": "alice"}),
        ),
        (
            "qty",
            json!({"carId": car, "qty": -2, "customerId": "alice"}),
        ),
        (
            "qty",
            json!({"carId": car, "qty": 1.5, "customerId": "alice"}),
        ),
        ("customerId", json!({"carId": car, "qty": 1})),
        (
            "customerId",
            json!({"carId": car, "qty": 1, "customerId": 7}),
        ),
        (
            "customerId",
            json!({"carId": car, "qty": 1, "customerId": ""}),
        ),
    ];
    for (field, body) in cases {
        let resp = host.post_json("/orders", body).await;
        resp.expect_problem_naming(400, field);
    }
    post_body(
        &host,
        "/orders",
        br#"{"carId": 1, "qty": 1, "customerId": "alice""#,
    )
    .await
    .expect_problem(400);
    post_body(&host, "/orders", b"").await.expect_problem(400);
    post_body(&host, "/orders", b"\"alice\"")
        .await
        .expect_problem(400);

    assert!(
        host.orders().await.is_empty(),
        "an order was stored by an invalid request"
    );
    assert!(
        host.payments().await.is_empty(),
        "a payment was made for an invalid request"
    );
    host.place_order(car, 1, "alice").await;
}

#[tokio::test]
async fn unknown_routes_and_unknown_ids_are_404_problems() {
    let host = Host::start(HostOptions::new());
    for path in ["/nope", "/cars/1/nope", "/admin/nope"] {
        host.get(path).await.expect_problem(404);
    }
    host.post_json("/nope", &json!({}))
        .await
        .expect_problem(404);

    for path in [
        "/cars/999999",
        "/orders/999999",
        "/payments/999999",
        "/availability/999999",
    ] {
        host.get(path).await.expect_problem(404);
    }
    host.post_json("/orders/999999/cancel", &json!({}))
        .await
        .expect_problem(404);

    // The host is still fine.
    host.get("/healthz").await.expect(200);
}

#[tokio::test]
async fn request_body_over_the_limit_is_a_413_problem() {
    let host = Host::start(HostOptions::new());
    let name = "x".repeat(2 * 1024 * 1024);
    let body = json!({"name": name, "stock": 1}).to_string().into_bytes();

    // The host may answer before it has read the whole body and close the connection, which
    // can race with the upload; allow a few tries for a transport error, not for a wrong
    // answer.
    let mut answer = None;
    let mut last_error = String::new();
    for _ in 0..5 {
        match host
            .try_send(
                reqwest::Method::POST,
                "/cars",
                Some((body.clone(), "application/json")),
            )
            .await
        {
            Ok(resp) => {
                answer = Some(resp);
                break;
            }
            Err(err) => last_error = err.to_string(),
        }
    }
    let resp = answer.unwrap_or_else(|| panic!("no answer to a 2 MiB body: {last_error}"));
    resp.expect_problem(413);

    assert!(host.cars().await.is_empty(), "the oversized car was stored");
    host.create_car("Avante", 1).await;
}

#[tokio::test]
async fn health_readiness_and_the_plugin_listing() {
    let host = Host::start(HostOptions::new());
    host.get("/healthz").await.expect(200);
    host.get("/readyz").await.expect(200);

    let listing = host.get_ok("/admin/plugins").await;
    let plugins = as_list(&listing)
        .or_else(|| listing.get("plugins").and_then(as_list))
        .unwrap_or_else(|| panic!("GET /admin/plugins: not a list: {listing}"));
    let mut names: Vec<&str> = plugins.iter().map(|p| text(p, "name")).collect();
    names.sort_unstable();
    let mut want = PLUGINS.to_vec();
    want.sort_unstable();
    assert_eq!(names, want, "plugins: {listing}");

    let mut digests = Vec::new();
    for plugin in &plugins {
        for field in ["name", "version", "digest", "state", "loadedAt"] {
            assert!(
                plugin[field].as_str().is_some_and(|s| !s.is_empty()),
                "plugin `{field}` missing or empty: {plugin}"
            );
        }
        assert!(plugin["routes"].is_array(), "plugin routes: {plugin}");
        assert!(
            plugin["subscriptions"].is_array(),
            "plugin subscriptions: {plugin}"
        );
        assert!(
            !plugin["routes"].as_array().is_some_and(Vec::is_empty),
            "plugin without routes: {plugin}"
        );
        assert!(
            !plugin["subscriptions"]
                .as_array()
                .is_some_and(Vec::is_empty),
            "every rental context listens to some event: {plugin}"
        );
        let digest = text(plugin, "digest");
        assert!(
            digest.chars().filter(char::is_ascii_hexdigit).count() >= 64,
            "digest is not a sha-256 in hex: {plugin}"
        );
        digests.push(digest.to_owned());
    }
    digests.sort();
    digests.dedup();
    assert_eq!(
        digests.len(),
        PLUGINS.len(),
        "digests are not distinct: {listing}"
    );

    let find = |name: &str| plugins.iter().find(|p| text(p, "name") == name).unwrap();
    let mentions =
        |plugin: &Value, field: &str, needle: &str| plugin[field].to_string().contains(needle);
    assert!(
        mentions(find("car"), "routes", "/cars"),
        "car routes: {}",
        find("car")
    );
    assert!(
        mentions(find("order"), "routes", "/orders"),
        "order routes: {}",
        find("order")
    );
    assert!(
        mentions(find("payment"), "routes", "/payments"),
        "payment: {}",
        find("payment")
    );
    assert!(
        mentions(find("view"), "routes", "/availability"),
        "view: {}",
        find("view")
    );
    assert!(
        mentions(find("car"), "subscriptions", "PaymentApproved"),
        "car must listen to PaymentApproved: {}",
        find("car")
    );
    assert!(
        mentions(find("view"), "subscriptions", "CarRegistered"),
        "view must listen to CarRegistered: {}",
        find("view")
    );
}
