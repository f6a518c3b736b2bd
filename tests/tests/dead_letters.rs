//! Dead letters through the admin API: events a handler refused are listed a page at a time
//! (every one exactly once), read, retried one by one and all of a context after the cause
//! is gone and a new version was swapped in (each effect applied exactly once, also when the
//! events are delivered again afterwards), and deleted; what cannot be retried is refused
//! with a problem. Also over RabbitMQ, where a message that is not an event is kept too.

use std::collections::BTreeSet;
use std::time::Duration;

use ctxhost_tests::{Api, Host, HostOptions, Resp, broker, eventually, plugin_dir, with_marker};
use serde_json::{Value, json};

/// Events published, each dead-lettered.
const EVENTS: usize = 5;

async fn publish_tally(api: &Api, correlation: &str) {
    api.post_json(
        "/chaos/publish",
        &json!({"type": "ChaosTally", "correlationId": correlation, "data": {}}),
    )
    .await
    .expect(200);
}

/// Makes chaos refuse (`Some(reason)`) or apply (`None`) its `ChaosTally` events.
async fn fail_tally(api: &Api, reason: Option<&str>) {
    api.post_json(
        "/chaos/write",
        &json!({"key": "fail-tally", "value": reason.unwrap_or("")}),
    )
    .await
    .expect(200);
}

/// How often chaos applied the tally event `correlation` (0: never).
async fn tally(api: &Api, correlation: &str) -> u64 {
    let r = api.get(&format!("/chaos/read/tally-{correlation}")).await;
    match r.status {
        404 => 0,
        _ => r.expect(200)["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("tally-{correlation}: {}", r.body)),
    }
}

async fn delete(api: &Api, path: &str) -> Resp {
    api.send(reqwest::Method::DELETE, path, None).await
}

async fn retry(api: &Api, target: &str) -> Resp {
    api.post_raw(
        &format!("/admin/dead-letters/{target}/retry"),
        Vec::new(),
        "application/json",
    )
    .await
}

/// Every dead letter of chaos, through pages of `limit` following `next` (and checking the
/// `Link` header names the same page), with the number of pages.
async fn all_pages(api: &Api, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut path = format!("/admin/dead-letters?context=chaos&limit={limit}");
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 100, "more than 100 pages");
        let r = api.get(&path).await;
        let page = r.expect(200);
        let got = page["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit, "{page}");
        items.extend(got);
        match page["next"].as_str() {
            Some(next) => {
                let link = r.next_page().expect("a Link to the next page");
                assert!(link.contains(&format!("after={next}")), "{link} vs {next}");
                path = link;
            }
            None => {
                assert!(page["next"].is_null(), "{page}");
                assert_eq!(r.next_page(), None, "no Link on the last page");
                return (items, pages);
            }
        }
    }
}

fn id(letter: &Value) -> String {
    letter["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {letter}"))
        .to_string()
}

#[tokio::test]
async fn dead_letters_page_retry_once_and_delete() {
    let host = Host::start(HostOptions::new().with_chaos());
    fail_tally(&host, Some("broken on purpose")).await;
    let names: Vec<String> = (1..=EVENTS).map(|n| format!("t{n}")).collect();
    for name in &names {
        publish_tally(&host, name).await;
    }
    eventually(Duration::from_secs(60), || async {
        let page = host.get_ok("/admin/dead-letters?context=chaos").await;
        let n = page["items"].as_array().map_or(0, Vec::len);
        if n < EVENTS {
            return Err(format!("{n} dead letters so far"));
        }
        Ok(())
    })
    .await;

    // Pages of two: every dead letter exactly once, in the order of publication.
    let (letters, pages) = all_pages(&host, 2).await;
    assert_eq!(pages, 3);
    let ids: Vec<String> = letters.iter().map(id).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), EVENTS, "{ids:?}");
    let correlations: Vec<&str> = letters
        .iter()
        .map(|l| l["event"]["correlationid"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(correlations, names);
    for letter in &letters {
        assert_eq!(letter["context"], "chaos", "{letter}");
        assert_eq!(letter["attempts"], 5, "{letter}");
        assert!(
            letter["reason"]
                .as_str()
                .is_some_and(|r| r.contains("tally refused: broken on purpose")),
            "{letter}"
        );
        assert!(id(letter).starts_with("chaos/"), "{letter}");
    }
    // The whole list, unfiltered, has them too; another context has none.
    let everything = host.get_ok("/admin/dead-letters").await;
    assert_eq!(everything["items"].as_array().map(Vec::len), Some(EVENTS));
    let none = host.get_ok("/admin/dead-letters?context=order").await;
    assert_eq!(none, json!({"items": [], "next": null}));
    host.get("/admin/dead-letters?limit=0")
        .await
        .expect_problem_naming(400, "limit");
    host.get("/admin/dead-letters?bogus=1")
        .await
        .expect_problem(400);

    // One, read by its id.
    let first = &ids[0];
    let one = host.get_ok(&format!("/admin/dead-letters/{first}")).await;
    assert_eq!(one, letters[0]);

    // Retried while the cause is still there: kept, with one more attempt.
    let still = retry(&host, first).await.expect(200);
    assert_eq!(
        (&still["outcome"], &still["retried"], &still["stillFailing"]),
        (&json!("stillFailing"), &json!(1), &json!(1)),
        "{still}"
    );
    assert_eq!(still["attempts"], 6, "{still}");
    let kept = host.get_ok(&format!("/admin/dead-letters/{first}")).await;
    assert_eq!(kept["attempts"], 6, "{kept}");
    assert!(kept["lastRetriedAt"].is_string(), "{kept}");
    assert_eq!(tally(&host, "t1").await, 0);

    // The cause goes, and a new version of chaos is swapped in: retries run on it.
    fail_tally(&host, None).await;
    let bytes = std::fs::read(plugin_dir().join("chaos.wasm")).expect("read chaos.wasm");
    let report = host
        .send(
            reqwest::Method::PUT,
            "/admin/plugins/chaos",
            Some((with_marker(&bytes, "dead-letters"), "application/wasm")),
        )
        .await
        .expect(200);
    assert_eq!(report["changed"], true, "{report}");

    let applied = retry(&host, first).await.expect(200);
    assert_eq!(
        (
            &applied["outcome"],
            &applied["applied"],
            &applied["stillFailing"]
        ),
        (&json!("applied"), &json!(1), &json!(0)),
        "{applied}"
    );
    assert_eq!(tally(&host, "t1").await, 1);
    host.get(&format!("/admin/dead-letters/{first}"))
        .await
        .expect_problem(404);
    retry(&host, first).await.expect_problem(404);

    // One deleted: gone, never applied.
    let last = &ids[EVENTS - 1];
    let r = delete(&host, &format!("/admin/dead-letters/{last}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    delete(&host, &format!("/admin/dead-letters/{last}"))
        .await
        .expect_problem(404);

    // The rest of the context at once.
    let all = retry(&host, "chaos").await.expect(200);
    assert_eq!(
        (
            &all["retried"],
            &all["applied"],
            &all["stillFailing"],
            &all["notRetryable"]
        ),
        (&json!(EVENTS - 2), &json!(EVENTS - 2), &json!(0), &json!(0)),
        "{all}"
    );
    assert_eq!(all["context"], "chaos");
    assert_eq!(counts(&host, &names).await, [1, 1, 1, 1, 0], "{names:?}");
    assert_eq!(
        host.get_ok("/admin/dead-letters?context=chaos").await,
        json!({"items": [], "next": null})
    );
    let nothing = retry(&host, "chaos").await.expect(200);
    assert_eq!(
        (&nothing["retried"], &nothing["applied"]),
        (&json!(0), &json!(0))
    );

    // Delivered all over again: the inbox has every retried event, so only the deleted one
    // is applied now, and nothing twice.
    host.post_json(
        "/admin/subscriptions/chaos/redeliver",
        &json!({"fromSeq": 0}),
    )
    .await
    .expect(200);
    eventually(Duration::from_secs(30), || async {
        match tally(&host, &names[EVENTS - 1]).await {
            1 => Ok(()),
            n => Err(format!("the deleted event applied {n} times")),
        }
    })
    .await;
    assert_eq!(counts(&host, &names).await, [1; EVENTS]);

    // What cannot be retried here.
    retry(&host, "nosuch")
        .await
        .expect_problem_naming(404, "nosuch");
    retry(&host, "chaos/00000000000000000001-nope")
        .await
        .expect_problem(404);
    host.post_raw(
        "/admin/dead-letters/chaos/x",
        Vec::new(),
        "application/json",
    )
    .await
    .expect_problem(404);
    let anonymous = host.anonymous().get("/admin/dead-letters").await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
}

/// The tally of each of `names`, in order.
async fn counts(api: &Api, names: &[String]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(names.len());
    for name in names {
        counts.push(tally(api, name).await);
    }
    counts
}

#[tokio::test]
async fn a_poison_event_retried_stays_with_its_new_reason() {
    let host = Host::start(HostOptions::new().with_chaos());
    host.post_json(
        "/chaos/publish",
        &json!({"type": "ChaosPoison", "correlationId": "poison", "data": {"n": 1}}),
    )
    .await
    .expect(200);
    let letter = eventually(Duration::from_secs(30), || async {
        let page = host.get_ok("/admin/dead-letters?context=chaos").await;
        page["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
            .ok_or_else(|| "no dead letter yet".to_string())
    })
    .await;
    let all = retry(&host, "chaos").await.expect(200);
    assert_eq!(
        (&all["retried"], &all["applied"], &all["stillFailing"]),
        (&json!(1), &json!(0), &json!(1)),
        "{all}"
    );
    assert_eq!(all["failures"][0]["id"], letter["id"], "{all}");
    assert!(
        all["failures"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("poisoned")),
        "{all}"
    );
    let kept = host
        .get_ok(&format!("/admin/dead-letters/{}", id(&letter)))
        .await;
    assert_eq!(kept["attempts"], 6, "{kept}");
    assert_eq!(kept["event"], letter["event"], "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rabbitmq_an_event_is_retried_and_a_message_that_is_not_one_is_refused() {
    let ns = broker::Namespace::new();
    let host = Host::start(HostOptions::new().with_chaos().amqp(ns.name()));
    eventually(Duration::from_secs(30), || async {
        let ready = host.get("/readyz").await.json();
        match ready["transport"]["state"].as_str() {
            Some("connected") => Ok(()),
            other => Err(format!("transport {other:?}")),
        }
    })
    .await;
    fail_tally(&host, Some("broken over the broker")).await;
    publish_tally(&host, "over-amqp").await;
    let letters = |n: usize| {
        let host = &host;
        async move {
            eventually(Duration::from_secs(60), || async {
                let page = host.get_ok("/admin/dead-letters?context=chaos").await;
                let items = page["items"].as_array().cloned().unwrap_or_default();
                if items.len() < n {
                    return Err(format!("{} dead letters so far", items.len()));
                }
                Ok(items)
            })
            .await
        }
    };
    // Dead-lettered: the consumer of chaos is bound to the type; now a message of that
    // type that is not an event.
    letters(1).await;
    broker::publish_raw(&ns, "ChaosTally", b"not an event")
        .await
        .expect("publish a raw message");
    let letters = letters(2).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let (events, foreign): (Vec<&Value>, Vec<&Value>) =
        letters.iter().partition(|l| l.get("event").is_some());
    assert_eq!((events.len(), foreign.len()), (1, 1), "{letters:?}");
    let foreign_id = id(foreign[0]);
    assert!(foreign_id.starts_with("chaos/foreign/"), "{foreign_id}");

    // Not an event: refused, and left as it was.
    retry(&host, &foreign_id)
        .await
        .expect_problem_naming(422, "not an event");
    fail_tally(&host, None).await;
    let all = retry(&host, "chaos").await.expect(200);
    assert_eq!(
        (&all["retried"], &all["applied"], &all["notRetryable"]),
        (&json!(1), &json!(1), &json!(1)),
        "{all}"
    );
    assert_eq!(all["failures"][0]["id"], json!(foreign_id), "{all}");
    assert_eq!(tally(&host, "over-amqp").await, 1);
    let r = delete(&host, &format!("/admin/dead-letters/{foreign_id}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        host.get_ok("/admin/dead-letters").await,
        json!({"items": [], "next": null})
    );
}
