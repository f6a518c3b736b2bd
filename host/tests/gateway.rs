//! The gateway's contract, in process: the host is built by the library from a real
//! configuration file with the real plugins, and each request goes through its router with
//! `oneshot` (no socket, no child process). Validation answers, unknown routes, methods and
//! ids, the body size limit, problem bodies, the probes and the plugin listing.
//!
//! What needs a real process (kill -9, restarts, RabbitMQ, hot swap under load) stays in
//! `tests/tests/`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use ctxhost::{Overrides, Settings};
use ctxhost_tests::{ADMIN_TOKEN, HostOptions, PLUGINS, Resp, TestDir, as_list, text};
use http::{Method, Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A body that is not valid JSON.
const MALFORMED: &[u8] = br#"{"name": "Avante", "stock": "#;

/// A host built in this process; its files are removed on drop.
struct InProcess {
    router: Router,
    _host: ctxhost::Host,
    _dir: TestDir,
}

impl InProcess {
    async fn start(opts: HostOptions) -> Self {
        let dir = TestDir::new();
        let config = opts.write_config(dir.path());
        let settings = Settings::resolve(Overrides {
            config: Some(config),
            ..Overrides::default()
        })
        .expect("the test configuration resolves");
        let host = ctxhost::build(&settings).await.expect("the host starts");
        InProcess {
            router: host.router(),
            _host: host,
            _dir: dir,
        }
    }

    /// Send one request through the router and read the whole answer.
    async fn send(&self, method: Method, path: &str, body: Option<(&[u8], &str)>) -> Resp {
        self.send_as(method, path, body, None).await
    }

    /// [`InProcess::send`] with `x-client-id: <client>` when a client is named.
    async fn send_as(
        &self,
        method: Method,
        path: &str,
        body: Option<(&[u8], &str)>,
        client: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
        if let Some(client) = client {
            req = req.header("x-client-id", client);
        }
        let body = match body {
            Some((bytes, content_type)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes.to_vec())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("a valid request");
        // As the server does for a real connection: the peer's address.
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let res = self.raw(req).await;
        let header_text = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header_text("content-type");
        let retry_after = header_text("retry-after");
        let context_version = header_text("x-context-version");
        let link = header_text("link");
        let www_authenticate = header_text("www-authenticate");
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("the whole body")
            .to_bytes();
        Resp {
            request: format!("{method} {path}"),
            status,
            content_type,
            retry_after,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            context_version,
            link,
            www_authenticate,
        }
    }

    /// Send `req` as it is (no admin token added) and return the router's answer.
    async fn raw(&self, req: Request<Body>) -> http::Response<Body> {
        self.router
            .clone()
            .oneshot(req)
            .await
            .expect("the router answers every request")
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &[u8]) -> Resp {
        self.send(Method::POST, path, Some((body, "application/json")))
            .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.post(path, body.to_string().as_bytes()).await
    }

    async fn list(&self, path: &str) -> Vec<Value> {
        let value = self.get(path).await.expect(200);
        as_list(&value).unwrap_or_else(|| panic!("GET {path}: not a list: {value}"))
    }

    async fn create_car(&self, name: &str, stock: u64) -> u64 {
        let car = self
            .post_json("/cars", &json!({"name": name, "stock": stock}))
            .await
            .expect(201);
        car["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("car without an id: {car}"))
    }
}

#[tokio::test]
async fn validation_of_post_cars_names_each_bad_field() {
    let host = InProcess::start(HostOptions::new()).await;
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
    host.post("/cars", MALFORMED).await.expect_problem(400);
    host.post("/cars", b"").await.expect_problem(400);
    host.post("/cars", b"[1, 2]").await.expect_problem(400);

    assert!(
        host.list("/cars").await.is_empty(),
        "a car was stored by an invalid request"
    );
    // A valid body still works after all of that, and stock 0 is allowed.
    host.create_car("Avante", 0).await;
}

#[tokio::test]
async fn validation_of_post_orders_names_each_bad_field() {
    let host = InProcess::start(HostOptions::new()).await;
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
    host.post(
        "/orders",
        br#"{"carId": 1, "qty": 1, "customerId": "alice""#,
    )
    .await
    .expect_problem(400);
    host.post("/orders", b"").await.expect_problem(400);
    host.post("/orders", b"\"alice\"").await.expect_problem(400);

    assert!(
        host.list("/orders").await.is_empty(),
        "an order was stored by an invalid request"
    );
    assert!(
        host.list("/payments").await.is_empty(),
        "a payment was made for an invalid request"
    );
    let order = host
        .post_json(
            "/orders",
            &json!({"carId": car, "qty": 1, "customerId": "alice"}),
        )
        .await
        .expect(201);
    assert_eq!(order["status"], "PAID", "{order}");
}

#[tokio::test]
async fn unknown_routes_and_unknown_ids_are_404_problems() {
    let host = InProcess::start(HostOptions::new()).await;
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
async fn a_known_path_with_another_method_is_a_405_problem_with_allow() {
    let host = InProcess::start(HostOptions::new()).await;
    let resp = host.send(Method::DELETE, "/cars", None).await;
    let problem = resp.expect_problem(405);
    assert!(
        text(&problem, "detail").contains("DELETE"),
        "the detail names the method: {problem}"
    );
    // The router answered: the car context was not invoked, and nothing changed.
    assert!(resp.context_version.is_none(), "{resp:?}");
    assert!(host.list("/cars").await.is_empty());
}

#[tokio::test]
async fn request_body_over_the_limit_is_a_413_problem_and_nothing_is_stored() {
    let host = InProcess::start(HostOptions::new()).await;
    let name = "x".repeat(2 * 1024 * 1024);
    let body = json!({"name": name, "stock": 1}).to_string();
    host.post("/cars", body.as_bytes())
        .await
        .expect_problem(413);
    assert!(
        host.list("/cars").await.is_empty(),
        "the oversized car was stored"
    );
    host.create_car("Avante", 1).await;
}

#[tokio::test]
async fn a_context_answer_names_its_version_and_every_answer_its_trace() {
    let host = InProcess::start(HostOptions::new()).await;
    host.create_car("Avante", 1).await;
    let resp = host.get("/cars").await;
    resp.expect(200);
    let version = resp.context_version.clone().unwrap_or_default();
    assert!(version.starts_with("car@"), "x-context-version: {resp:?}");
    // A traceparent's trace id is taken over.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = host
        .raw(
            Request::get("/nope")
                .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(trace)
    );
}

#[tokio::test]
async fn the_host_header_cannot_change_the_path_the_component_sees() {
    let host = InProcess::start(HostOptions::new()).await;
    let car = host.create_car("Avante", 5).await;
    let order = host
        .post_json(
            "/orders",
            &json!({"carId": car, "qty": 1, "customerId": "alice"}),
        )
        .await
        .expect(201);
    let id = order["id"].as_u64().expect("an order id");
    // Routed as a cancel; a Host of `x/orders?` once made the component see `POST /orders`
    // and place a new order from this body instead.
    let body = json!({"carId": car, "qty": 1, "customerId": "mallory"}).to_string();
    let cancel = |host_header: &'static str| {
        Request::post(format!("/orders/{id}/cancel"))
            .header(header::HOST, host_header)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .expect("a valid request")
    };
    for forged in ["x/orders?", "x?y", "a b"] {
        let res = host.raw(cancel(forged)).await;
        assert_eq!(res.status(), 400, "Host: {forged}");
    }
    assert_eq!(host.list("/orders").await.len(), 1, "no order was placed");
    assert_eq!(host.list("/payments").await.len(), 1, "no payment was made");
    // A real authority, with a port, reaches the component with the routed path.
    let res = host.raw(cancel("rental.example:8080")).await;
    assert_eq!(res.status(), 200);
    let order = host.get(&format!("/orders/{id}")).await.expect(200);
    assert_eq!(order["status"], "CANCELLED", "{order}");
}

#[tokio::test]
async fn the_admin_api_needs_its_token() {
    let host = InProcess::start(HostOptions::new()).await;
    let res = host
        .raw(
            Request::get("/admin/plugins")
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    // The probes stay open, and without the token tell only whether the host is ready.
    let res = host
        .raw(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await;
    assert_eq!(res.status(), 200);
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    let anonymous: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(anonymous, json!({"status": "ready"}));
    // With it, the details.
    let detailed = host.get("/readyz").await.expect(200);
    assert_eq!(detailed["transport"]["transport"], "embedded", "{detailed}");
    assert_eq!(detailed["storage"]["state"], "ok", "{detailed}");
    assert_eq!(
        detailed["contexts"].as_array().map(Vec::len),
        Some(4),
        "{detailed}"
    );
    host.get("/healthz").await.expect(200);
}

#[tokio::test]
async fn gateway_rate_limits_refuse_the_excess_with_429() {
    let host = InProcess::start(HostOptions::new().host_config(
        "[rate_limit]
client_header = \"x-client-id\"
[rate_limit.routes.\"GET /cars\"]
client_rate = 1.0
client_burst = 5
[rate_limit.routes.\"GET /payments\"]
rate = 0.5
burst = 3
",
    ))
    .await;
    let get =
        |path: &'static str, who: &'static str| host.send_as(Method::GET, path, None, Some(who));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = get("/cars", "alice").await;
        if r.status == 429 {
            r.expect_problem(429);
            assert_eq!(r.retry_after.as_deref(), Some("1"));
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another client, another route, the host's own endpoints: not limited.
    assert_eq!(get("/cars", "bob").await.status, 200);
    for _ in 0..10 {
        assert_eq!(host.get("/orders").await.status, 200);
        assert_eq!(host.get("/healthz").await.status, 200);
        assert_eq!(host.get("/admin/plugins").await.status, 200);
    }
    // A route limit counts every client together.
    let mut ok = 0;
    for who in ["a", "b", "c", "d", "e", "f"] {
        let s = get("/payments", who).await.status;
        assert!(s == 200 || s == 429, "{s}");
        ok += usize::from(s == 200);
    }
    assert_eq!(ok, 3);
    let r = host.get("/payments").await;
    let p = r.expect_problem(429);
    assert!(text(&p, "detail").contains("GET /payments"), "{p}");
    assert_eq!(r.retry_after.as_deref(), Some("2"));
}

#[tokio::test]
async fn a_client_named_by_an_untrusted_header_is_still_limited_by_its_address() {
    let host = InProcess::start(HostOptions::new().host_config(
        "[rate_limit]
client_rate = 1.0
client_burst = 3
",
    ))
    .await;
    // Without `client_header`, `x-client-id` is the client's own claim: a fresh value per
    // request must not buy a fresh bucket.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let who = format!("random-{i}");
        statuses.push(
            host.send_as(Method::GET, "/cars", None, Some(who.as_str()))
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429, 429],
        "one peer, one bucket"
    );
}

#[tokio::test]
async fn health_readiness_and_the_plugin_listing() {
    let host = InProcess::start(HostOptions::new()).await;
    host.get("/healthz").await.expect(200);
    host.get("/readyz").await.expect(200);

    let listing = host.get("/admin/plugins").await.expect(200);
    let plugins =
        as_list(&listing).unwrap_or_else(|| panic!("GET /admin/plugins: not a list: {listing}"));
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
        for field in ["routes", "subscriptions"] {
            assert!(
                plugin[field].as_array().is_some_and(|a| !a.is_empty()),
                "every rental context has {field}: {plugin}"
            );
        }
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

    let find = |name: &str| {
        plugins
            .iter()
            .find(|p| text(p, "name") == name)
            .unwrap_or_else(|| panic!("{name} is listed"))
    };
    let mentions =
        |plugin: &Value, field: &str, needle: &str| plugin[field].to_string().contains(needle);
    for (name, field, needle) in [
        ("car", "routes", "/cars"),
        ("order", "routes", "/orders"),
        ("payment", "routes", "/payments"),
        ("view", "routes", "/availability"),
        ("car", "subscriptions", "PaymentApproved"),
        ("view", "subscriptions", "CarRegistered"),
    ] {
        assert!(
            mentions(find(name), field, needle),
            "{name} {field} must mention {needle}: {}",
            find(name)
        );
    }
}
