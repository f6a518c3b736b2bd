//! Crash isolation: each misbehaviour of a component (panic, trap, stack overflow, unbounded
//! allocation, endless loop) fails only its own request, with a problem naming the context
//! and the cause, while concurrent requests to the other contexts all succeed.

use std::time::{Duration, Instant};

use ctxhost_tests::{Host, HostOptions, Load};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_each_misbehaviour_fails_only_its_own_request() {
    let host = Host::start(
        HostOptions::new()
            .with_chaos()
            .plugin_setting("chaos", "deadline_ms = 300")
            .plugin_setting("chaos", "memory_limit_mb = 32"),
    );
    let car = host.create_car("Calm", 1_000_000).await;

    let load = Load::start(&host, 16, move |c, i| {
        if (c + i).is_multiple_of(2) {
            (reqwest::Method::GET, format!("/cars/{car}"), None)
        } else {
            (
                reqwest::Method::POST,
                "/orders".to_string(),
                Some(json!({"carId": car, "qty": 1, "customerId": "calm"})),
            )
        }
    });

    // The answer names the context and the trace; the cause (wasmtime's words) is only in
    // the host's log, under that trace id.
    let cases = [
        ("/chaos/panic", 500, "chaos trapped"),
        ("/chaos/trap", 500, "unreachable"),
        ("/chaos/overflow", 500, "chaos trapped"),
        ("/chaos/alloc", 500, "chaos trapped"),
        ("/chaos/loop", 504, "deadline of 300 ms"),
    ];
    for round in 0..2 {
        for (path, status, cause) in cases {
            let started = Instant::now();
            let problem = host.get(path).await.expect_problem(status);
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with("chaos "),
                "round {round}, {path}: {detail}"
            );
            if status == 500 {
                assert!(
                    !detail.contains("wasm") && !detail.contains(cause),
                    "round {round}, {path}: the answer leaks the cause: {detail}"
                );
                let trace = detail
                    .split("(trace ")
                    .nth(1)
                    .and_then(|t| t.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{path}: no trace id in {detail:?}"));
                let log = host.log_tail(4000);
                assert!(
                    log.lines().any(|l| l.contains(trace) && l.contains(cause)),
                    "{path}: no log line with trace {trace} and {cause:?}:\n{}",
                    log.lines()
                        .filter(|l| l.contains(trace))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            } else {
                assert!(detail.contains(cause), "round {round}, {path}: {detail}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} took {:?}",
                started.elapsed()
            );
            host.get("/chaos/ok").await.expect(200);
        }
    }
    let (total, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {total} requests to other contexts failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 100, "only {total} requests ran");
    let list = host.get_list("/admin/plugins").await;
    let chaos = list
        .iter()
        .find(|p| p["name"] == "chaos")
        .cloned()
        .unwrap_or_default();
    assert!(
        chaos["health"]["failures"].as_u64().unwrap_or(0) >= 10,
        "{chaos}"
    );
    assert_eq!(chaos["limits"]["deadlineMs"], 300);
}

#[tokio::test]
async fn isolation_guest_stderr_is_logged_escaped_tagged_and_capped() {
    let host = Host::start(HostOptions::new().with_chaos());
    let forged = "2030-01-01T00:00:00.000000Z  INFO ctxhost: forged by a guest";
    host.post_json(
        "/chaos/stderr",
        &json!({"text": format!("hello\n{forged}\n\u{1b}[31mred\n"), "times": 1}),
    )
    .await
    .expect(200);
    // 1 MiB of output: the host keeps 64 KiB of it.
    host.post_json(
        "/chaos/stderr",
        &json!({"text": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", "times": 16384}),
    )
    .await
    .expect(200);
    let log = host.log_tail(100_000);
    let guest: Vec<&str> = log.lines().filter(|l| l.contains("guest stderr")).collect();
    assert!(
        guest
            .iter()
            .any(|l| l.contains("context=chaos") && l.contains("hello")),
        "{guest:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a guest forged a host log line"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a raw escape sequence reached the log"
    );
    let kept = guest
        .iter()
        .filter(|l| l.contains("0123456789abcdef"))
        .count();
    assert!(
        kept > 0 && kept * 64 <= 64 * 1024,
        "{kept} lines of 64 bytes kept"
    );
    assert!(
        log.contains("guest stderr over its cap"),
        "the dropped part is reported"
    );
}

#[tokio::test]
async fn isolation_a_poison_event_is_dead_lettered_and_later_events_still_flow() {
    let host = Host::start(HostOptions::new().with_chaos());
    for n in 1..=2 {
        host.post_json(
            "/chaos/publish",
            &json!({"type": "ChaosPoison", "correlationId": format!("poison-{n}"), "data": {"n": n}}),
        )
        .await
        .expect(200);
    }
    let car = host.create_car("After the poison", 4).await;
    ctxhost_tests::eventually(Duration::from_secs(30), || async {
        let letters = host.get_list("/admin/dead-letters").await;
        let chaos: Vec<_> = letters.iter().filter(|l| l["context"] == "chaos").collect();
        if chaos.len() < 2 {
            return Err(format!("{} dead letters so far", chaos.len()));
        }
        // The second poison was reached: the stream moved past the first.
        for (letter, n) in chaos.iter().zip(1..) {
            let reason = letter["reason"].as_str().unwrap_or_default();
            if !reason.contains("poisoned") || letter["attempts"] != 5 {
                return Err(format!("unexpected dead letter {letter}"));
            }
            if letter["event"]["type"] != "ChaosPoison"
                || letter["event"]["correlationid"] != format!("poison-{n}").as_str()
            {
                return Err(format!("wrong event {letter}"));
            }
        }
        Ok(())
    })
    .await;
    ctxhost_tests::eventually(Duration::from_secs(30), || async {
        match host.availability(car).await {
            Some((4, _)) => Ok(()),
            other => Err(format!("view not caught up: {other:?}")),
        }
    })
    .await;
}
