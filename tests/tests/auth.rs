//! Identity at the gateway, end to end: bearer tokens verified by the host (HS256 with a
//! shared secret, RS256 with keys from a JWKS file that is re-read when it changes), each
//! route's access rule from its component (or the operator), 401 and 403 answers that never
//! reach a component, the principal inside the rental contexts (who may see and do what),
//! across the `order -> payment` call and into the events an order causes.
//!
//! Tokens are made independently of the host's JWT library (see `ctxhost_tests::jwt`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ctxhost_tests::jwt::{RsaKey, hs256, jwks, now, unsigned};
use ctxhost_tests::{Api, Host, HostOptions, SETTLE, TestDir, as_list, eventually, id, text};
use serde_json::{Value, json};

const SECRET: &[u8] = b"a-development-secret-of-32-bytes!!";
const ISSUER: &str = "https://login.rental.test/";
const AUDIENCE: &str = "rental-api";

/// Claims of a valid token for `sub` with `roles` (in Keycloak's nested claim).
fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "realm_access": { "roles": roles },
    })
}

fn token(sub: &str, roles: &[&str]) -> String {
    hs256(SECRET, &claims(sub, roles), json!({}))
}

/// A host with authentication: HS256 and the JWKS file `jwks`, issuer and audience checked,
/// roles from `realm_access.roles`, JWTs with `ops` accepted by the admin API.
fn options(jwks: &Path) -> HostOptions {
    HostOptions::new()
        .env(
            "CTXHOST_AUTH_HS256_SECRET",
            std::str::from_utf8(SECRET).expect("ASCII"),
        )
        .env("CTXHOST_AUTH_JWKS_FILE", jwks.to_str().expect("UTF-8 path"))
        .env("CTXHOST_AUTH_ISSUER", ISSUER)
        .env("CTXHOST_AUTH_AUDIENCE", AUDIENCE)
        .env("CTXHOST_AUTH_ROLES_CLAIM", "realm_access.roles")
        .env("CTXHOST_AUTH_ADMIN_ROLE", "ops")
}

/// A scratch directory with an RSA key `key-1` and a JWKS file holding it, for [`options`].
fn keyed() -> (TestDir, RsaKey, PathBuf) {
    let dir = TestDir::new();
    let key = RsaKey::generate(dir.path(), "key-1");
    let jwks_path = dir.path().join("jwks.json");
    write_jwks(&jwks_path, &[&key]);
    (dir, key, jwks_path)
}

/// Polls `check` until it holds, for at most `timeout`; panics naming `what` otherwise.
async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(timeout, || {
        let attempt = check();
        let what = what.to_string();
        async move {
            if attempt.await {
                Ok(())
            } else {
                Err(format!("not yet: {what}"))
            }
        }
    })
    .await
}

fn write_jwks(path: &Path, keys: &[&RsaKey]) {
    // Written whole then renamed, as a Kubernetes Secret volume swaps its files.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, jwks(keys).to_string()).expect("write the JWKS");
    std::fs::rename(&tmp, path).expect("replace the JWKS");
}

/// A 401 problem with a `WWW-Authenticate: Bearer` challenge, `error="invalid_token"`
/// exactly when `invalid`.
#[track_caller]
fn assert_401(resp: &ctxhost_tests::Resp, invalid: bool) {
    resp.expect_problem(401);
    let challenge = resp
        .www_authenticate
        .as_deref()
        .unwrap_or_else(|| panic!("{}: a 401 without WWW-Authenticate", resp.request));
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        invalid,
        "{}: {challenge}",
        resp.request
    );
}

#[tokio::test]
async fn tokens_are_verified_before_anything_reaches_a_component() {
    let (dir, key, jwks_path) = keyed();
    let host = Host::start(options(&jwks_path));
    let api = host.api();
    let with = |t: &str| api.with_bearer(t);

    // A valid HS256 token and an RS256 token signed by openssl both pass.
    with(&token("alice", &[])).get("/orders").await.expect(200);
    with(&key.sign(&claims("alice", &[])))
        .get("/orders")
        .await
        .expect(200);

    // No token: 401 with a bare challenge; a public route stays open.
    assert_401(&api.anonymous().get("/orders").await, false);
    api.anonymous().get("/cars").await.expect(200);

    let refused = |claims: Value| hs256(SECRET, &claims, json!({}));
    let mut expired = claims("alice", &[]);
    expired["exp"] = json!(now() - 3600);
    let mut early = claims("alice", &[]);
    early["nbf"] = json!(now() + 3600);
    let mut issuer = claims("alice", &[]);
    issuer["iss"] = json!("https://evil.test/");
    let mut audience = claims("alice", &[]);
    audience["aud"] = json!("another-api");
    let mut no_subject = claims("alice", &[]);
    no_subject.as_object_mut().expect("an object").remove("sub");
    let other_key = RsaKey::generate(dir.path(), "key-unknown");
    let bad_tokens = [
        ("expired", refused(expired)),
        ("not yet valid", refused(early)),
        ("wrong issuer", refused(issuer)),
        ("wrong audience", refused(audience)),
        ("no subject", refused(no_subject)),
        (
            "bad signature",
            hs256(
                b"another-secret-that-is-long-enough!",
                &claims("alice", &[]),
                json!({}),
            ),
        ),
        ("alg none", unsigned(&claims("alice", &["admin"]))),
        // Algorithm confusion: HS256 keyed with the RSA public key, naming its kid.
        (
            "HS256 with the RSA public key",
            hs256(
                &key.public_pem(),
                &claims("alice", &["admin"]),
                json!({"kid": "key-1"}),
            ),
        ),
        ("unknown kid", other_key.sign(&claims("alice", &[]))),
        ("malformed", "not.a.token".to_string()),
    ];
    for (what, bad) in &bad_tokens {
        let resp = with(bad).get("/orders").await;
        assert_401(&resp, true);
        assert!(
            !resp.body.contains(bad.as_str()),
            "{what}: the answer echoes the token"
        );
        // Even a public route refuses a bad token: a client learns its token is bad.
        assert_401(&with(bad).get("/cars").await, true);
        let order = json!({"carId": 1, "qty": 1, "customerId": "alice"});
        assert_401(&with(bad).post_json("/orders", &order).await, true);
    }
    // Not a bearer token at all.
    assert_401(
        &api.with_authorization_header("Basic YWxpY2U6c2VjcmV0")
            .get("/orders")
            .await,
        true,
    );
    // `ctxhost token` mints a development token the host accepts (the README's story).
    let minted = std::process::Command::new(ctxhost_tests::host_binary())
        .args([
            "token",
            "--subject",
            "carol",
            "--role",
            "admin",
            "--ttl-secs",
            "60",
        ])
        .env(
            "CTXHOST_AUTH_HS256_SECRET",
            std::str::from_utf8(SECRET).expect("ASCII"),
        )
        .env("CTXHOST_AUTH_ISSUER", ISSUER)
        .env("CTXHOST_AUTH_AUDIENCE", AUDIENCE)
        .env("CTXHOST_AUTH_ROLES_CLAIM", "realm_access.roles")
        .output()
        .expect("run ctxhost token");
    assert!(minted.status.success(), "{minted:?}");
    let minted = String::from_utf8(minted.stdout).expect("UTF-8");
    with(minted.trim())
        .post_json("/cars", &json!({"name": "Minted", "stock": 1}))
        .await
        .expect(201);
    let without_secret = std::process::Command::new(ctxhost_tests::host_binary())
        .args(["token", "--subject", "carol"])
        .env_remove("CTXHOST_AUTH_HS256_SECRET")
        .output()
        .expect("run ctxhost token");
    assert!(!without_secret.status.success());
    assert!(
        String::from_utf8_lossy(&without_secret.stderr).contains("CTXHOST_AUTH_HS256_SECRET"),
        "{without_secret:?}"
    );

    // Nothing refused reached a component: no order was written.
    let admin = with(&token("root", &["admin"]));
    assert_eq!(admin.get_list("/orders").await.len(), 0);
    // Operators see the refusals by reason.
    let metrics = api.get("/metrics").await.body;
    for reason in ["missing", "invalid"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!(
                "ctxhost_http_auth_refused_total{{reason=\"{reason}\"}}"
            ))),
            "no {reason} refusals in /metrics"
        );
    }

    // The JWKS rotates without a restart: a token of the new key passes within a few
    // seconds, and the old key's tokens are refused from then on.
    let new_key = RsaKey::generate(dir.path(), "key-2");
    write_jwks(&jwks_path, &[&new_key]);
    let fresh = new_key.sign(&claims("alice", &[]));
    wait_for(Duration::from_secs(10), "the rotated JWKS is used", || {
        let api = with(&fresh);
        async move { api.get("/orders").await.status == 200 }
    })
    .await;
    assert_401(
        &with(&key.sign(&claims("alice", &[]))).get("/orders").await,
        true,
    );
    // A broken JWKS file keeps the keys in force.
    std::fs::write(&jwks_path, b"{ not json").expect("write");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    with(&fresh).get("/orders").await.expect(200);
    assert!(
        host.log_text().contains("JWKS"),
        "the host logs why it kept the old keys"
    );
}

#[tokio::test]
async fn the_rental_contexts_enforce_who_may_do_what() {
    let (_dir, key, jwks_path) = keyed();
    let host = Host::start(options(&jwks_path));
    let api = host.api();
    let alice = api.with_bearer(&token("alice", &["customer"]));
    let bob = api.with_bearer(&key.sign(&claims("bob", &["customer"])));
    let admin = api.with_bearer(&token("root", &["admin"]));
    let anonymous = api.anonymous();

    // Registering cars needs `admin`: 401 without a token, 403 with another role.
    assert_401(
        &anonymous
            .post_json("/cars", &json!({"name": "Polo", "stock": 10}))
            .await,
        false,
    );
    alice
        .post_json("/cars", &json!({"name": "Polo", "stock": 10}))
        .await
        .expect_problem(403);
    let car = admin.create_car("Polo", 10).await;
    // The fleet and the availability are public.
    anonymous.get(&format!("/cars/{car}")).await.expect(200);
    wait_for(SETTLE, "the view knows the car", || {
        let anonymous = anonymous.clone();
        async move { anonymous.get(&format!("/availability/{car}")).await.status == 200 }
    })
    .await;

    // Placing an order needs a caller; `customerId` defaults to the caller's subject.
    assert_401(
        &anonymous
            .post_json(
                "/orders",
                &json!({"carId": car, "qty": 1, "customerId": "alice"}),
            )
            .await,
        false,
    );
    let mine = alice
        .post_json("/orders", &json!({"carId": car, "qty": 1}))
        .await
        .expect(201);
    assert_eq!(text(&mine, "customerId"), "alice");
    let mine = id(&mine, "id");
    alice
        .post_json(
            "/orders",
            &json!({"carId": car, "qty": 1, "customerId": "alice"}),
        )
        .await
        .expect(201);
    // Only an admin orders for someone else.
    alice
        .post_json(
            "/orders",
            &json!({"carId": car, "qty": 1, "customerId": "bob"}),
        )
        .await
        .expect_problem(403);
    let for_bob = admin
        .post_json(
            "/orders",
            &json!({"carId": car, "qty": 2, "customerId": "bob"}),
        )
        .await
        .expect(201);
    assert_eq!(text(&for_bob, "customerId"), "bob");
    // The principal crossed the call into payment: the payment records who placed it.
    let payment = admin
        .get(&format!("/payments/{}", id(&for_bob, "paymentId")))
        .await
        .expect(200);
    assert_eq!(text(&payment, "customerId"), "bob");
    assert_eq!(text(&payment, "placedBy"), "root");

    // Reading and cancelling an order: its customer or an admin.
    alice.get(&format!("/orders/{mine}")).await.expect(200);
    bob.get(&format!("/orders/{mine}"))
        .await
        .expect_problem(403);
    admin.get(&format!("/orders/{mine}")).await.expect(200);
    bob.post_json(&format!("/orders/{mine}/cancel"), &json!({}))
        .await
        .expect_problem(403);

    // Lists: one's own, or everything for an admin.
    let customers = |list: Vec<Value>| -> Vec<String> {
        list.iter()
            .map(|o| text(o, "customerId").to_string())
            .collect()
    };
    assert_eq!(
        customers(alice.get_list("/orders").await),
        ["alice", "alice"]
    );
    assert_eq!(customers(bob.get_list("/orders").await), ["bob"]);
    assert_eq!(admin.get_list("/orders").await.len(), 3);
    assert_eq!(
        customers(alice.get_list("/payments").await),
        ["alice", "alice"]
    );
    assert_eq!(customers(bob.get_list("/payments").await), ["bob"]);
    assert_eq!(admin.get_list("/payments").await.len(), 3);
    alice
        .get(&format!("/payments/{}", id(&for_bob, "paymentId")))
        .await
        .expect_problem(403);

    // A customer's view: that customer or an admin.
    wait_for(SETTLE, "the view lists alice's orders", || {
        let alice = alice.clone();
        async move {
            let r = alice.get("/customers/alice/orders").await;
            r.status == 200 && as_list(&r.json()).is_some_and(|l| l.len() == 2)
        }
    })
    .await;
    bob.get("/customers/alice/orders").await.expect_problem(403);
    admin.get("/customers/alice/orders").await.expect(200);

    // The customer cancels; the saga runs on for the events that follow.
    alice
        .post_json(&format!("/orders/{mine}/cancel"), &json!({}))
        .await
        .expect(200);
    wait_for(SETTLE, "the cancelled units are back", || {
        let anonymous = anonymous.clone();
        async move {
            let r = anonymous.get(&format!("/availability/{car}")).await;
            r.status == 200 && r.json()["available"] == json!(10 - 1 - 2)
        }
    })
    .await;
}

#[tokio::test]
async fn operators_override_rules_and_admins_use_their_jwt() {
    let (_dir, _key, jwks_path) = keyed();
    let host = Host::start(options(&jwks_path).with_chaos().plugin_setting(
        "car",
        "access = { \"POST /cars\" = \"public\", \"GET /cars/{id}\" = \"roles:fleet\" }",
    ));
    let api = host.api();
    let anonymous = api.anonymous();

    // The operator opened registration and closed a car's page to `fleet`.
    let car = id(
        &anonymous
            .post_json("/cars", &json!({"name": "Golf", "stock": 1}))
            .await
            .expect(201),
        "id",
    );
    anonymous.get("/cars").await.expect(200);
    assert_401(&anonymous.get(&format!("/cars/{car}")).await, false);
    api.with_bearer(&token("alice", &["customer"]))
        .get(&format!("/cars/{car}"))
        .await
        .expect_problem(403);
    api.with_bearer(&token("van", &["fleet"]))
        .get(&format!("/cars/{car}"))
        .await
        .expect(200);

    // The admin API: its own token (the test client's default), or a JWT with `ops`.
    let plugins = api.get("/admin/plugins").await.expect(200);
    let ops = api.with_bearer(&token("op", &["ops"]));
    assert_eq!(ops.get("/admin/plugins").await.expect(200), plugins);
    assert_401(
        &api.with_bearer(&token("alice", &["admin"]))
            .get("/admin/plugins")
            .await,
        false,
    );
    // Each route shows its rule and where it comes from.
    let rule = |context: &str, method: &str, path: &str| -> (String, String) {
        let c = as_list(&plugins)
            .expect("a list")
            .into_iter()
            .find(|c| c["name"] == json!(context))
            .unwrap_or_else(|| panic!("{context} in {plugins}"));
        let r = as_list(&c["routes"])
            .expect("routes")
            .into_iter()
            .find(|r| r["method"] == json!(method) && r["path"] == json!(path))
            .unwrap_or_else(|| panic!("{method} {path} in {c}"));
        (
            text(&r["access"], "rule").to_string(),
            text(&r["access"], "origin").to_string(),
        )
    };
    assert_eq!(
        rule("car", "POST", "/cars"),
        ("public".into(), "operator".into())
    );
    assert_eq!(
        rule("car", "GET", "/cars"),
        ("public".into(), "component".into())
    );
    assert_eq!(
        rule("order", "POST", "/orders"),
        ("authenticated".into(), "component".into())
    );
    // A component built before access rules (chaos exports none) keeps loading, and each
    // of its routes needs a caller.
    let chaos = as_list(&plugins)
        .expect("a list")
        .into_iter()
        .find(|c| c["name"] == json!("chaos"))
        .expect("chaos is loaded");
    let first = &as_list(&chaos["routes"]).expect("routes")[0];
    assert_eq!(first["access"]["origin"], json!("default"));
    assert_eq!(first["access"]["rule"], json!("authenticated"));
    let path = text(first, "path").replace("{id}", "1");
    assert_401(
        &anonymous
            .send(
                text(first, "method").parse().expect("a method"),
                &path,
                None,
            )
            .await,
        false,
    );
}

#[tokio::test]
async fn rate_limits_key_on_the_token_subject() {
    let (_dir, key, jwks_path) = keyed();
    let host = Host::start(
        options(&jwks_path).host_config("[rate_limit]\nclient_rate = 0.1\nclient_burst = 2\n"),
    );
    let api = host.api();
    let alice = api.with_bearer(&token("alice", &[]));
    // Two tokens of alice's (one per signing method) share one budget...
    let alice_rs = api.with_bearer(&key.sign(&claims("alice", &[])));
    alice.get("/orders").await.expect(200);
    alice_rs.get("/orders").await.expect(200);
    alice.get("/orders").await.expect_problem(429);
    // ... and bob, from the same address, has his own.
    let bob = api.with_bearer(&token("bob", &[]));
    bob.get("/orders").await.expect(200);
}

#[tokio::test]
async fn without_a_key_source_authentication_is_off_and_says_so() {
    let host = Host::start(HostOptions::new());
    let api = host.api();
    let anonymous: Api = api.anonymous();
    // Everything behaves as before authentication existed.
    let car = anonymous.create_car("Up", 3).await;
    let order = anonymous.place_order(car, 1, "carol").await;
    anonymous
        .get(&format!("/orders/{}", id(&order, "id")))
        .await
        .expect(200);
    anonymous
        .post_json("/orders", &json!({"carId": car, "qty": 1}))
        .await
        .expect_problem_naming(400, "customerId");
    // A token is ignored rather than refused.
    api.with_bearer("anything").get("/orders").await.expect(200);
    assert!(
        host.log_text().contains("authentication off"),
        "the start log says authentication is off"
    );
}

#[tokio::test]
async fn an_event_carries_the_subject_of_the_request_that_caused_it() {
    let (_dir, _key, jwks_path) = keyed();
    let host = Host::start(options(&jwks_path).with_chaos());
    let api = host.api();
    let alice = api.with_bearer(&token("alice", &[]));
    let event =
        |correlation: &str| json!({"type": "ChaosWho", "correlationId": correlation, "data": {}});
    alice
        .post_json("/chaos/publish", &event("by-alice"))
        .await
        .expect(200);
    // The handler ran for alice's subject, in its own delivery.
    wait_for(SETTLE, "the handler saw alice", || {
        let alice = alice.clone();
        async move {
            let r = alice.get("/chaos/read/who-by-alice").await;
            r.status == 200 && r.json()["value"] == json!("alice")
        }
    })
    .await;
    // An order's events run their handlers for the customer's subject too: the saga works
    // under it (order -> payment -> car -> order), and the order ends RENTED.
    let admin = api.with_bearer(&token("root", &["admin"]));
    let car = admin.create_car("Fiesta", 5).await;
    let order = alice
        .post_json("/orders", &json!({"carId": car, "qty": 1}))
        .await
        .expect(201);
    let path = format!("/orders/{}", id(&order, "id"));
    wait_for(SETTLE, "the order is rented", || {
        let (alice, path) = (alice.clone(), path.clone());
        async move { alice.get(&path).await.json()["status"] == json!("RENTED") }
    })
    .await;
}

#[tokio::test]
async fn a_hot_swap_brings_the_new_version_s_rules() {
    let (_dir, _key, jwks_path) = keyed();
    let host = Host::start(options(&jwks_path));
    let api = host.api();
    let anonymous = api.anonymous();
    anonymous.get("/availability").await.expect(200);
    // A version without access rules (the chaos component, built before them) replaces
    // `view`: its routes need a caller from the moment it serves, and the old version's
    // public route is gone with it.
    let chaos = std::fs::read(ctxhost_tests::plugin_dir().join("chaos.wasm")).expect("chaos.wasm");
    api.send(
        reqwest::Method::PUT,
        "/admin/plugins/view",
        Some((chaos, "application/wasm")),
    )
    .await
    .expect(200);
    assert_401(&anonymous.get("/chaos/ok").await, false);
    api.with_bearer(&token("alice", &[]))
        .get("/chaos/ok")
        .await
        .expect(200);
    anonymous.get("/availability").await.expect_problem(404);
    // Rolling back brings the old version's rules back with it.
    api.post_json("/admin/plugins/view/rollback", &json!({}))
        .await
        .expect(200);
    anonymous.get("/availability").await.expect(200);
    anonymous.get("/chaos/ok").await.expect_problem(404);
}
