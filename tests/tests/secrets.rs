//! Secrets by grant: `payment` signs each payment with the secret `signing-key` granted to it
//! (a receipt checked here against an HMAC computed independently); without the secret,
//! payments carry no receipt and the log says why once. A context gets only the secrets
//! granted to it; a file-sourced secret rotated on disk is seen on the next read without a
//! restart; `wasi:config/store` reads the context's configuration; and no secret value ever
//! shows in the host's log or in an answer of its own endpoints.

use std::path::Path;
use std::process::Command;

use ctxhost_tests::{Api, Host, HostOptions, PLUGINS, TestDir, ensure_program, id, unique_name};
use serde_json::{Value, json};

/// Lowercase hex HMAC-SHA256 of `message` under `key`, by Python's `hmac` module.
fn python_hmac(key: &str, message: &str) -> String {
    python(
        "import hashlib, hmac, sys; \
         print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())",
        &[key, message],
    )
}

/// Lowercase hex SHA-256 of `value`, by Python's `hashlib`.
fn python_sha256(value: &str) -> String {
    python(
        "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
        &[value],
    )
}

fn python(program: &str, args: &[&str]) -> String {
    let python = ensure_program("python3", &["python3"]);
    let out = Command::new(python)
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python3 failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("python3 printed UTF-8")
        .trim()
        .to_string()
}

/// `[plugins.<plugin>.secrets]` with one entry, as a configuration snippet.
fn grant(plugin: &str, name: &str, source: &str) -> String {
    format!("[plugins.{plugin}.secrets]\n{name:?} = {source}\n")
}

/// A car, and an order of `qty` units of it; returns the order.
async fn order(api: &Api, car: u64, qty: u64) -> Value {
    api.place_order(car, qty, "alice").await
}

/// `GET /chaos/secret/{name}`.
async fn chaos_secret(api: &Api, name: &str) -> Value {
    api.get_ok(&format!("/chaos/secret/{name}")).await
}

/// Every answer of the host's own endpoints, as text: the admin API (each route that
/// answers a `GET`, including each context's versions), the probes and the metrics.
async fn host_answers(api: &Api, contexts: &[&str]) -> Vec<(String, String)> {
    let mut paths: Vec<String> = [
        "/admin/plugins",
        "/admin/dead-letters",
        "/admin/resilience",
        "/admin/topology",
        "/readyz",
        "/healthz",
        "/metrics",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.extend(
        contexts
            .iter()
            .map(|c| format!("/admin/plugins/{c}/versions")),
    );
    let mut answers = Vec::new();
    for path in paths {
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        answers.push((path, r.body));
    }
    answers
}

/// Panics when any of `values` shows in the host's log or in an answer of its endpoints.
async fn assert_never_shown(host: &Host, contexts: &[&str], values: &[&str]) {
    let log = host.log_text();
    for value in values {
        assert!(
            !log.contains(value),
            "a secret value shows in the host's log:\n{}",
            host.log_tail(40)
        );
    }
    for (path, body) in host_answers(host, contexts).await {
        for value in values {
            assert!(!body.contains(value), "a secret value shows in GET {path}");
        }
    }
}

/// The `secrets` of each context in `GET /admin/plugins`.
async fn listed_secrets(api: &Api) -> Vec<(String, Value)> {
    api.get_list("/admin/plugins")
        .await
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["secrets"].clone(),
            )
        })
        .collect()
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Lines of the host's log containing every one of `parts`.
fn log_lines(host: &Host, parts: &[&str]) -> usize {
    host.log_text()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

#[tokio::test]
async fn granted_secrets_sign_payments_rotate_from_files_and_never_show() {
    let secrets_dir = TestDir::new();
    let token_file = secrets_dir.path().join("token");
    let variable = unique_name("CTXHOST_TEST_SIGNING_KEY").replace('-', "_");
    let key = unique_name("signing-key-value");
    let first_token = unique_name("first-token-value");
    let second_token = unique_name("second-token-value");
    write(&token_file, &format!("{first_token}\n"));

    let host = Host::start(
        HostOptions::new()
            .with_chaos()
            .env(&variable, &key)
            .host_config(&grant(
                "payment",
                "signing-key",
                &format!("{{ env = {variable:?} }}"),
            ))
            .host_config(&grant(
                "chaos",
                "token",
                &format!("{{ file = {:?} }}", token_file.display().to_string()),
            ))
            .plugin_config("chaos", "greeting", "hello through wasi:config"),
    );
    let contexts: Vec<&str> = PLUGINS.iter().copied().chain(["chaos"]).collect();

    // Each payment carries the HMAC of "<paymentId>:<orderId>:<qty>" under the key, the
    // same in the list and by id.
    let car = host.create_car("Signed", 100).await;
    let mut receipts = Vec::new();
    for qty in [2, 3] {
        let o = order(&host, car, qty).await;
        let (order_id, payment_id) = (id(&o, "id"), id(&o, "paymentId"));
        let payment = host.payment(payment_id).await;
        let expected = python_hmac(&key, &format!("{payment_id}:{order_id}:{qty}"));
        assert_eq!(payment["receipt"], json!(expected), "{payment}");
        receipts.push((payment_id, expected));
    }
    let listed = host.payments().await;
    for (payment_id, receipt) in &receipts {
        let p = listed
            .iter()
            .find(|p| p["id"] == json!(payment_id))
            .unwrap_or_else(|| panic!("payment {payment_id} not listed"));
        assert_eq!(p["receipt"], json!(receipt), "{p}");
    }
    assert_ne!(receipts[0].1, receipts[1].1);

    // A context sees only its own grants: chaos asking for payment's key gets none.
    assert_eq!(
        chaos_secret(&host, "signing-key").await,
        json!({"name": "signing-key", "granted": false})
    );
    assert_eq!(
        chaos_secret(&host, "nothing-by-that-name").await["granted"],
        false
    );

    // A file-sourced secret, without its trailing newline; rotated on disk (a new file
    // renamed over it, as a mounted Secret changes), seen on the next read.
    let token = chaos_secret(&host, "token").await;
    assert_eq!(token["granted"], true, "{token}");
    assert_eq!(token["length"], json!(first_token.len()), "{token}");
    assert_eq!(
        token["sha256"],
        json!(python_sha256(&first_token)),
        "{token}"
    );
    let next = secrets_dir.path().join("token.next");
    write(&next, &second_token);
    std::fs::rename(&next, &token_file).expect("rotate the token file");
    let token = chaos_secret(&host, "token").await;
    assert_eq!(
        token["sha256"],
        json!(python_sha256(&second_token)),
        "{token}"
    );

    // A source that cannot be read gives none and is logged once per distinct failure,
    // naming the secret and never a value; once readable again the context gets it back.
    std::fs::remove_file(&token_file).expect("remove the token file");
    for _ in 0..3 {
        assert_eq!(chaos_secret(&host, "token").await["granted"], false);
    }
    std::fs::create_dir(&token_file).expect("a directory where the file was");
    for _ in 0..3 {
        assert_eq!(chaos_secret(&host, "token").await["granted"], false);
    }
    let warning = "granted secret cannot be read";
    assert_eq!(
        log_lines(&host, &[warning, "token", "does not exist"]),
        1,
        "{}",
        host.log_tail(30)
    );
    assert_eq!(
        log_lines(&host, &[warning, "token", "not a regular file"]),
        1,
        "{}",
        host.log_tail(30)
    );
    std::fs::remove_dir(&token_file).expect("remove the directory");
    write(&token_file, &second_token);
    assert_eq!(chaos_secret(&host, "token").await["granted"], true);

    // The standard wasi:config/store reads the context's configuration.
    assert_eq!(
        host.get_ok("/chaos/config/greeting").await,
        json!({"key": "greeting", "value": "hello through wasi:config"})
    );
    host.get("/chaos/config/absent").await.expect_problem(404);
    assert_eq!(
        host.get_ok("/chaos/config").await,
        json!({"greeting": "hello through wasi:config"})
    );

    // Operators see the names of the grants, never the values: not in any answer of the
    // host's own endpoints, not in its log.
    for (name, secrets) in listed_secrets(&host).await {
        let expected = match name.as_str() {
            "payment" => json!(["signing-key"]),
            "chaos" => json!(["token"]),
            _ => json!([]),
        };
        assert_eq!(secrets, expected, "{name}");
    }
    assert_never_shown(&host, &contexts, &[&key, &first_token, &second_token]).await;
}

#[tokio::test]
async fn without_the_signing_key_payments_carry_no_receipt_and_the_log_says_why_once() {
    // Granted from a variable that is not set.
    let variable = unique_name("CTXHOST_TEST_UNSET_KEY").replace('-', "_");
    let host = Host::start(HostOptions::new().host_config(&grant(
        "payment",
        "signing-key",
        &format!("{{ env = {variable:?} }}"),
    )));
    let car = host.create_car("Unsigned", 10).await;
    for qty in [1, 2] {
        let o = order(&host, car, qty).await;
        let payment = host.payment(id(&o, "paymentId")).await;
        assert_eq!(payment["receipt"], Value::Null, "{payment}");
    }
    // Once at start from payment; once from the host for the unreadable source, although
    // payment read it at start and for each payment.
    assert_eq!(
        log_lines(&host, &["payments carry no receipt", "signing-key"]),
        1,
        "{}",
        host.log_tail(30)
    );
    assert_eq!(
        log_lines(
            &host,
            &[
                "granted secret cannot be read",
                "signing-key",
                "env",
                "not set"
            ]
        ),
        1,
        "{}",
        host.log_tail(30)
    );
    assert_eq!(
        listed_secrets(&host)
            .await
            .into_iter()
            .find(|(n, _)| n == "payment")
            .map(|(_, s)| s),
        Some(json!(["signing-key"]))
    );
}
