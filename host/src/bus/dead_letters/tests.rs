//! Tests of dead letters against a real database and committer, with a handler written in
//! Rust that fails while told to and counts what it applies.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::bus::delivery::{RetryPolicy, deliver_all, record_dead_letter};
use crate::bus::envelope::tests::sample;
use crate::bus::{HandlerError, Subscriber, Subscribers};
use crate::state::{Committer, Db, OutgoingEvent, SharedUnit, context_table, db_tables};
use crate::sync::lock;

const CONTEXT: &str = "tally";
const EVENT_TYPE: &str = "Counted";

/// A context that counts each event it applies under `count-<event id>` (and keeps its data
/// under `data-<event id>`), and refuses every event while `failing` is set.
struct Tally {
    subscriptions: Vec<String>,
    failing: Arc<AtomicBool>,
}

impl Subscriber for Tally {
    fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    fn handle<'a>(
        &'a self,
        unit: SharedUnit,
        event: &'a Envelope,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err(HandlerError::Refused("refused on purpose".into()));
            }
            let table = context_table(CONTEXT);
            let mut unit = lock(&unit);
            let key = format!("count-{}", event.id);
            let n = unit
                .get(&table, &key)
                .map_err(|e| HandlerError::Failed(Box::new(e)))?
                .map_or(0, |b| b[0]);
            unit.put(&table, &key, Some(vec![n + 1]));
            unit.put(
                &table,
                &format!("data-{}", event.id),
                Some(event.data.clone()),
            );
            Ok(())
        })
    }
}

#[derive(Default)]
struct Loaded(Mutex<HashMap<String, Arc<dyn Subscriber>>>);

impl Subscribers for Loaded {
    fn subscriber(&self, context: &str) -> Option<Arc<dyn Subscriber>> {
        lock(&self.0).get(context).cloned()
    }
}

struct Fixture {
    bus: BusCtx,
    failing: Arc<AtomicBool>,
    loaded: Arc<Loaded>,
    _dir: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!("ctxhost-dl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let db = Db::open(&dir, &db_tables(CONTEXT)).expect("open db");
        let committer = Committer::start(db.clone()).expect("committer");
        let failing = Arc::new(AtomicBool::new(true));
        let loaded = Arc::new(Loaded::default());
        lock(&loaded.0).insert(
            CONTEXT.into(),
            Arc::new(Tally {
                subscriptions: vec![EVENT_TYPE.into()],
                failing: failing.clone(),
            }),
        );
        Fixture {
            bus: BusCtx::new(db, committer, loaded.clone()),
            failing,
            loaded,
            _dir: dir,
        }
    }

    /// Deliver `events` (at positions 1, 2, ...) through the normal path, two attempts each.
    async fn deliver(&self, events: &[Envelope]) -> Vec<Delivered> {
        let run: Vec<(u64, Envelope)> = (1..).zip(events.iter().cloned()).collect();
        let policy = RetryPolicy {
            max_attempts: 2,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        deliver_all(&self.bus, CONTEXT, &run, None, &policy)
            .await
            .expect("deliver")
    }

    fn count(&self, event: &Envelope) -> u8 {
        self.bus
            .db()
            .read(&context_table(CONTEXT), &format!("count-{}", event.id))
            .expect("read")
            .map_or(0, |b| b[0])
    }

    fn ids(&self) -> Vec<String> {
        list(&self.bus, None, None, MAX_PAGE)
            .expect("list")
            .items
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_string())
            .collect()
    }
}

fn event(n: u32) -> Envelope {
    Envelope {
        id: format!("ev-{n}"),
        event_type: EVENT_TYPE.into(),
        data: format!("{{\"n\":{n}}}").into_bytes(),
        ..sample()
    }
}

fn key(seq: u64, event: &Envelope) -> String {
    format!("{CONTEXT}/{seq:020}-{}", event.id)
}

#[tokio::test]
async fn dead_letters_page_retry_once_and_are_removed_with_the_effect() {
    let f = Fixture::new();
    let events: Vec<Envelope> = (1..=5).map(event).collect();
    let outcomes = f.deliver(&events).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Delivered::DeadLettered(r) if r.contains("refused on purpose"))),
        "{outcomes:?}"
    );

    // Pages of two: every dead letter exactly once, in the order of the log.
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = list(&f.bus, Some(CONTEXT), after.as_deref(), 2).expect("page");
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(
            page.items
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_string()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=5).zip(&events).map(|(s, e)| key(s, e)).collect();
    assert_eq!((seen, pages), (expected.clone(), 3));
    assert!(
        list(&f.bus, Some("other"), None, 10)
            .expect("list")
            .items
            .is_empty()
    );
    let one = get(&f.bus, &expected[0]).expect("get").expect("there");
    assert_eq!(
        (&one["id"], &one["attempts"], &one["event"]["id"]),
        (&json!(expected[0]), &json!(2), &json!("ev-1"))
    );

    // Still failing: kept, with one more attempt and when.
    let again = retry(&f.bus, &expected[0]).await.expect("retry");
    assert_eq!(
        again,
        Retried::StillFailing {
            reason: "handler refused the event: refused on purpose".into(),
            attempts: 3
        }
    );
    let kept = get(&f.bus, &expected[0]).expect("get").expect("kept");
    assert_eq!(kept["attempts"], 3);
    assert!(kept["lastRetriedAt"].is_string(), "{kept}");
    assert_eq!(f.count(&events[0]), 0);

    // Fixed: one, then the rest of the context; each effect exactly once.
    f.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        retry(&f.bus, &expected[0]).await.expect("retry"),
        Retried::Applied
    );
    assert_eq!(f.count(&events[0]), 1);
    assert!(get(&f.bus, &expected[0]).expect("get").is_none());
    assert!(matches!(
        retry(&f.bus, &expected[0]).await,
        Err(DeadLetterError::NotFound(_))
    ));
    let summary = retry_context(&f.bus, CONTEXT).await.expect("retry all");
    assert_eq!(
        summary,
        RetrySummary {
            retried: 4,
            applied: 4,
            ..RetrySummary::default()
        }
    );
    for e in &events {
        assert_eq!(f.count(e), 1, "{}", e.id);
    }
    assert!(f.ids().is_empty());
    assert_eq!(
        retry_context(&f.bus, CONTEXT).await.expect("nothing left"),
        RetrySummary::default()
    );
}

#[tokio::test]
async fn an_event_the_inbox_already_has_counts_as_applied_and_runs_no_handler() {
    let f = Fixture::new();
    let e = event(1);
    f.deliver(std::slice::from_ref(&e)).await;
    // Applied meanwhile (a redelivery, say): the inbox has it.
    f.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        f.deliver(std::slice::from_ref(&e)).await,
        [Delivered::Applied]
    );
    assert_eq!(f.count(&e), 1);
    assert_eq!(
        retry(&f.bus, &key(1, &e)).await.expect("retry"),
        Retried::AlreadyApplied
    );
    assert_eq!(f.count(&e), 1, "the handler did not run again");
    assert!(f.ids().is_empty());
}

#[tokio::test]
async fn what_cannot_be_applied_is_refused_and_can_be_deleted() {
    let f = Fixture::new();
    let foreign = format!("{CONTEXT}/foreign/1");
    let record = json!({
        "context": CONTEXT,
        "reason": "not an event: no type",
        "attempts": 0,
        "data": "garbage",
        "deadLetteredAt": crate::time::now_rfc3339(),
    });
    record_dead_letter(&f.bus, &foreign, &record, None)
        .await
        .expect("record");
    let err = retry(&f.bus, &foreign).await.expect_err("not an event");
    assert!(
        matches!(&err, DeadLetterError::NotAnEvent { .. })
            && err.to_string().contains("not an event: no type"),
        "{err}"
    );

    // An event type the loaded version no longer subscribes to.
    let other = Envelope {
        event_type: "Dropped".into(),
        ..event(2)
    };
    f.deliver(std::slice::from_ref(&event(1))).await;
    let dropped = key(7, &other);
    let record = json!({"context": CONTEXT, "seq": 7, "event": other, "data": "{}",
        "reason": "x", "attempts": 5, "deadLetteredAt": crate::time::now_rfc3339()});
    record_dead_letter(&f.bus, &dropped, &record, None)
        .await
        .expect("record");
    assert!(matches!(
        retry(&f.bus, &dropped).await,
        Err(DeadLetterError::NotSubscribed { .. })
    ));

    f.failing.store(false, Ordering::SeqCst);
    let summary = retry_context(&f.bus, CONTEXT).await.expect("retry all");
    assert_eq!(
        (summary.retried, summary.applied, summary.not_retryable),
        (1, 1, 2)
    );
    let failed: BTreeSet<&str> = summary.failures.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(failed, BTreeSet::from([foreign.as_str(), dropped.as_str()]));

    assert!(delete(&f.bus, &foreign).await.expect("delete"));
    assert!(!delete(&f.bus, &foreign).await.expect("delete again"));
    assert_eq!(f.ids(), [dropped]);

    // A context that is not loaded here.
    lock(&f.loaded.0).clear();
    assert!(matches!(
        retry_context(&f.bus, CONTEXT).await,
        Err(DeadLetterError::NotLoaded(_))
    ));
}

#[tokio::test]
async fn a_retry_applies_the_exact_bytes_from_the_log_or_the_record() {
    let f = Fixture::new();
    // Not UTF-8: the record keeps the bytes besides its text.
    let binary = Envelope {
        data: vec![0xff, 0x00, 0xfe],
        ..event(1)
    };
    f.deliver(std::slice::from_ref(&binary)).await;
    let stored = get(&f.bus, &key(1, &binary)).expect("get").expect("there");
    assert!(stored["dataBase64"].is_string(), "{stored}");

    // An event the log holds at its position: taken from there, exactly as published.
    let logged = event(2);
    let mut unit = UnitOfWork::begin(f.bus.db()).expect("begin");
    unit.publish(OutgoingEvent::new(logged.encode()));
    f.bus.committer().commit(unit).await.expect("commit");
    let (seq, _) = f.bus.db().events_after(0, 1).expect("log")[0];
    let mut record = json!({"context": CONTEXT, "seq": seq, "event": logged,
        "data": "not what was published", "reason": "x", "attempts": 5,
        "deadLetteredAt": crate::time::now_rfc3339()});
    record_dead_letter(&f.bus, &key(seq, &logged), &record, None)
        .await
        .expect("record");
    // The same position in another host's log (over RabbitMQ): the record's copy.
    let elsewhere = event(3);
    record["event"] = json!(elsewhere);
    record["data"] = json!("{\"n\":3}");
    record_dead_letter(&f.bus, &key(seq, &elsewhere), &record, None)
        .await
        .expect("record");

    f.failing.store(false, Ordering::SeqCst);
    let summary = retry_context(&f.bus, CONTEXT).await.expect("retry all");
    assert_eq!(summary.applied, 3, "{summary:?}");
    let data = |e: &Envelope| {
        f.bus
            .db()
            .read(&context_table(CONTEXT), &format!("data-{}", e.id))
            .expect("read")
    };
    assert_eq!(data(&binary), Some(vec![0xff, 0x00, 0xfe]));
    assert_eq!(data(&logged), Some(logged.data.clone()));
    assert_eq!(data(&elsewhere), Some(b"{\"n\":3}".to_vec()));
}

#[tokio::test]
async fn prune_expired_deletes_old_dead_letters_a_few_at_a_time() {
    let f = Fixture::new();
    let at =
        |t: &str| json!({"context": CONTEXT, "reason": "x", "attempts": 1, "deadLetteredAt": t});
    let old = [
        "2020-01-01T00:00:00.000Z",
        "2021-06-01T12:00:00Z",
        "1600000000",
    ];
    for (n, t) in old.iter().enumerate() {
        record_dead_letter(&f.bus, &format!("a/old-{n}"), &at(t), None)
            .await
            .expect("record");
    }
    let now = crate::time::now_rfc3339();
    record_dead_letter(&f.bus, "a/recent", &at(&now), None)
        .await
        .expect("record");
    record_dead_letter(&f.bus, "b/timeless", &json!({"context": "b"}), None)
        .await
        .expect("record");
    record_dead_letter(&f.bus, "b/garbled", &json!("not a record"), None)
        .await
        .expect("record");

    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    assert_eq!(prune_expired(&f.bus, day_ago, 0).await.expect("prune"), 0);
    assert_eq!(prune_expired(&f.bus, day_ago, 2).await.expect("prune"), 2);
    assert_eq!(f.ids().len(), 4);
    assert_eq!(prune_expired(&f.bus, day_ago, 2).await.expect("prune"), 1);
    assert_eq!(prune_expired(&f.bus, day_ago, 2).await.expect("prune"), 0);
    assert_eq!(f.ids(), ["a/recent", "b/garbled", "b/timeless"]);
    // A bound in the future takes the recent one too, never those without a time.
    let later = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(prune_expired(&f.bus, later, 10).await.expect("prune"), 1);
    assert_eq!(f.ids(), ["b/garbled", "b/timeless"]);
}
