//! What a component can make the host hold is bounded (`[limits]`): one scan, the buffered
//! writes and published events of one unit of work, the sequence names of a context and
//! the lengths of sequence names and correlation ids. Past a limit the component's call
//! fails with an error naming the setting, the component decides what to answer, and
//! nothing of the refused request is kept. The `chaos` component floods the host on
//! request (`POST /chaos/flood`) and answers 422 with the host's refusal.

use ctxhost_tests::{Host, HostOptions, Resp};
use serde_json::{Value, json};

const LIMITS: &str = "[limits]
scan_entries = 50
scan_bytes = 4096
write_entries = 20
write_bytes = 4096
events = 5
event_bytes = 4096
sequences = 10
sequence_name_bytes = 32
correlation_id_bytes = 64
";

async fn flood(host: &Host, body: Value) -> Resp {
    host.post_json("/chaos/flood", &body).await
}

/// Asserts the 200 of a flood that stayed within the limits and how much it did.
fn done(resp: &Resp, n: u64) {
    assert_eq!(resp.expect(200)["done"], json!(n), "{}", resp.body);
}

/// Asserts a refusal after `after` successful calls, naming `setting`.
fn refused(resp: &Resp, after: u64, setting: &str) {
    let problem = resp.expect_problem(422);
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("after {after}: ")) && detail.contains(setting),
        "want a refusal after {after} naming {setting}: {detail}"
    );
}

#[tokio::test]
async fn scans_writes_and_events_past_their_limits_fail_with_a_clear_error() {
    let host = Host::start(HostOptions::new().with_chaos().host_config(LIMITS));

    // Writes: 20 distinct keys per request, and 4096 bytes.
    let write = |start: u64, count: u64, size: u64, prefix: &str| json!({"what": "write", "start": start, "count": count, "size": size, "prefix": prefix});
    done(&flood(&host, write(0, 20, 10, "small/")).await, 20);
    refused(
        &flood(&host, write(100, 21, 10, "small/")).await,
        20,
        "limits.write_entries",
    );
    refused(
        &flood(&host, write(200, 1, 5000, "small/")).await,
        0,
        "limits.write_bytes",
    );
    // Nothing of a refused request was kept.
    host.get("/chaos/read/small%2F00000100")
        .await
        .expect_problem(404);
    host.get("/chaos/read/small%2F00000019").await.expect(200);

    // Scans: 60 small entries match, one scan answers at most 50.
    done(&flood(&host, write(20, 20, 10, "small/")).await, 20);
    done(&flood(&host, write(40, 20, 10, "small/")).await, 20);
    let scan = |limit: Option<u32>, prefix: &str| match limit {
        Some(limit) => json!({"what": "scan", "limit": limit, "prefix": prefix}),
        None => json!({"what": "scan", "prefix": prefix}),
    };
    refused(
        &flood(&host, scan(None, "small/")).await,
        0,
        "limits.scan_entries",
    );
    refused(
        &flood(&host, scan(Some(51), "small/")).await,
        0,
        "limits.scan_entries",
    );
    done(&flood(&host, scan(Some(50), "small/")).await, 50);
    // ... and at most 4096 bytes: five entries of 1012 bytes are too many, four are not.
    done(&flood(&host, write(0, 4, 1000, "big/")).await, 4);
    done(&flood(&host, write(4, 1, 1000, "big/")).await, 1);
    refused(
        &flood(&host, scan(Some(5), "big/")).await,
        0,
        "limits.scan_bytes",
    );
    done(&flood(&host, scan(Some(4), "big/")).await, 4);

    // Events: 5 per request, and 4096 bytes.
    let publish = |count: u64, size: u64| json!({"what": "publish", "count": count, "size": size});
    done(&flood(&host, publish(5, 10)).await, 5);
    refused(&flood(&host, publish(6, 10)).await, 5, "limits.events");
    refused(
        &flood(&host, publish(1, 5000)).await,
        0,
        "limits.event_bytes",
    );

    // The other contexts are not affected.
    let car = host.create_car("Calm", 5).await;
    host.place_order(car, 1, "calm").await;
}

#[tokio::test]
async fn sequence_names_and_correlation_ids_are_bounded() {
    let host = Host::start(HostOptions::new().with_chaos().host_config(LIMITS));
    let sequences = |start: u64, count: u64, size: u64| json!({"what": "sequences", "start": start, "count": count, "size": size});

    // Ten distinct names per context. They count even when the unit that asked for them
    // never commits (this request answers 422), because the host keeps them all the same.
    refused(
        &flood(&host, sequences(0, 11, 0)).await,
        10,
        "limits.sequences",
    );
    refused(
        &flood(&host, sequences(10, 1, 0)).await,
        0,
        "limits.sequences",
    );
    // Names in use go on.
    done(&flood(&host, sequences(0, 10, 0)).await, 10);
    // Another context has its own allowance: the rental contexts still assign ids.
    let car = host.create_car("Calm", 5).await;
    host.place_order(car, 1, "calm").await;

    // A name is at most 32 bytes.
    refused(
        &flood(&host, sequences(0, 1, 33)).await,
        0,
        "limits.sequence_name_bytes",
    );

    // A correlation id is at most 64 bytes.
    let publish = |correlation: String| json!({"type": "ChaosFlood", "correlationId": correlation, "data": {}});
    host.post_json("/chaos/publish", &publish("c".repeat(64)))
        .await
        .expect(200);
    host.post_json("/chaos/publish", &publish("c".repeat(65)))
        .await
        .expect_problem_naming(400, "limits.correlation_id_bytes");
}
