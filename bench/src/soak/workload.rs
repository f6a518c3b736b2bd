//! The soak's clients: a bounded number of them, each placing orders (paced to a total
//! rate), following its orders until they settle, cancelling some once rented, and reading
//! cars, availability and its customers' orders in between. Every order is settled once it
//! is `RENTED` (and kept), `REJECTED` (its car sold out), or cancelled with its payment
//! `CANCELLED`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Orders a client follows at once; it places no more until some settle, so a host that
/// falls behind slows the clients down instead of piling up work.
const MAX_PENDING: usize = 32;
/// One order in this many is cancelled once rented.
const CANCEL_EVERY: u64 = 4;
/// One order in this many is for the sold-out car, so rejected by the car context.
const SOLD_OUT_EVERY: u64 = 8;
/// Customers per client; their orders make up the view's rows read back.
const CUSTOMERS_PER_CLIENT: u64 = 32;
/// First failures kept for the report.
const KEPT_FAILURES: usize = 5;

/// The cars the clients order: one that never runs out, one with no units.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cars {
    pub plenty: u64,
    pub sold_out: u64,
}

/// Counters the clients share and the sampler reads.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Orders created (201).
    pub created: AtomicU64,
    /// Orders settled: the three below together.
    pub settled: AtomicU64,
    pub rented: AtomicU64,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
    /// Requests sent, of any kind.
    pub requests: AtomicU64,
    /// Requests that failed (no answer, or a status the flow did not expect).
    pub failures: AtomicU64,
    /// Orders still being followed when the clients stopped.
    pub unsettled: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_failures.lock()
            && first.len() < KEPT_FAILURES
        {
            first.push(what);
        }
    }

    /// The first failures, as `METHOD path: what`.
    pub(crate) fn first_failures(&self) -> Vec<String> {
        self.first_failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }
}

/// When the clients stop placing orders, and how long they may then follow the rest.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    pub start: Instant,
    pub load: Duration,
    pub drain: Duration,
    /// Orders per second over all clients; 0: as fast as they can.
    pub rate: f64,
}

/// Run `clients` clients against `base` until the schedule ends; the counters say what they
/// did. Returns when every client has stopped.
pub(crate) async fn run(
    base: &str,
    cars: Cars,
    clients: usize,
    schedule: Schedule,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let slots = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for id in 0..clients {
        let client = Client {
            id,
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?,
            base: base.to_owned(),
            cars,
            counts: counts.clone(),
            pending: VecDeque::new(),
            placed: 0,
            reads: 0,
        };
        tasks.push(tokio::spawn(client.run(schedule.clone(), slots.clone())));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Where a followed order stands.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Placed (`PAID`): waiting for `RENTED` or `REJECTED`.
    Placed { cancel: bool },
    /// Cancelled: waiting for its payment to be `CANCELLED`.
    Cancelled,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    payment: u64,
    stage: Stage,
}

struct Client {
    id: usize,
    http: reqwest::Client,
    base: String,
    cars: Cars,
    counts: Arc<Counts>,
    /// Orders followed, oldest first.
    pending: VecDeque<Pending>,
    placed: u64,
    reads: u64,
}

impl Client {
    async fn run(mut self, schedule: Schedule, slots: Arc<AtomicU64>) {
        let load_end = schedule.start + schedule.load;
        while Instant::now() < load_end {
            if self.pending.len() < MAX_PENDING {
                if schedule.rate > 0.0 {
                    let slot = slots.fetch_add(1, Ordering::Relaxed);
                    let at = schedule.start + Duration::from_secs_f64(slot as f64 / schedule.rate);
                    if at >= load_end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                self.place().await;
            }
            let moved = self.follow_oldest().await;
            if !moved && self.pending.len() >= MAX_PENDING {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.read().await;
        }
        let drain_end = load_end + schedule.drain;
        while !self.pending.is_empty() && Instant::now() < drain_end {
            // Each pass looks at every followed order once.
            let mut moved = false;
            for _ in 0..self.pending.len() {
                moved |= self.follow_oldest().await;
            }
            if !moved {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.counts
            .unsettled
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// `POST /orders`, one unit, for the sold-out car now and then.
    async fn place(&mut self) {
        let n = self.placed;
        self.placed += 1;
        let car = if n % SOLD_OUT_EVERY == SOLD_OUT_EVERY - 1 {
            self.cars.sold_out
        } else {
            self.cars.plenty
        };
        let customer = format!("soak-{}-{}", self.id, n % CUSTOMERS_PER_CLIENT);
        let body = serde_json::json!({"carId": car, "qty": 1, "customerId": customer});
        let Some((201, order)) = self
            .send(reqwest::Method::POST, "/orders", Some(body))
            .await
        else {
            return;
        };
        match (order["id"].as_u64(), order["paymentId"].as_u64()) {
            (Some(id), Some(payment)) => {
                self.counts.created.fetch_add(1, Ordering::Relaxed);
                self.pending.push_back(Pending {
                    id,
                    payment,
                    stage: Stage::Placed {
                        cancel: n % CANCEL_EVERY == 1,
                    },
                });
            }
            _ => self
                .counts
                .fail(format!("POST /orders: no id or paymentId in {order}")),
        }
    }

    /// Looks at the oldest followed order once and moves it on: settled, cancelled, or back
    /// in the queue. Whether it changed stage.
    async fn follow_oldest(&mut self) -> bool {
        let Some(p) = self.pending.pop_front() else {
            return false;
        };
        let next = match p.stage {
            Stage::Placed { cancel } => self.check_placed(p, cancel).await,
            Stage::Cancelled => self.check_cancelled(p).await,
        };
        match next {
            Some(next) => {
                let moved = !matches!(
                    (p.stage, next.stage),
                    (Stage::Placed { .. }, Stage::Placed { .. })
                        | (Stage::Cancelled, Stage::Cancelled)
                );
                self.pending.push_back(next);
                moved
            }
            None => true,
        }
    }

    /// A placed order: settled when rented (unless it is to be cancelled) or rejected.
    async fn check_placed(&mut self, p: Pending, cancel: bool) -> Option<Pending> {
        let path = format!("/orders/{}", p.id);
        let Some((200, order)) = self.send(reqwest::Method::GET, &path, None).await else {
            return Some(p);
        };
        match order["status"].as_str() {
            Some("RENTED") if cancel => {
                let path = format!("/orders/{}/cancel", p.id);
                match self.send(reqwest::Method::POST, &path, None).await {
                    Some((200, _)) => Some(Pending {
                        stage: Stage::Cancelled,
                        ..p
                    }),
                    _ => Some(p),
                }
            }
            Some("RENTED") => {
                self.settle(&self.counts.rented);
                None
            }
            Some("REJECTED") => {
                self.settle(&self.counts.rejected);
                None
            }
            Some("PAID") => Some(p),
            _ => {
                self.counts
                    .fail(format!("GET {path}: unexpected status in {order}"));
                None
            }
        }
    }

    /// A cancelled order: settled once its payment is cancelled.
    async fn check_cancelled(&mut self, p: Pending) -> Option<Pending> {
        let path = format!("/payments/{}", p.payment);
        match self.send(reqwest::Method::GET, &path, None).await {
            Some((200, payment)) if payment["status"] == "CANCELLED" => {
                self.settle(&self.counts.cancelled);
                None
            }
            _ => Some(p),
        }
    }

    fn settle(&self, kind: &AtomicU64) {
        kind.fetch_add(1, Ordering::Relaxed);
        self.counts.settled.fetch_add(1, Ordering::Relaxed);
    }

    /// One read, in turn: the car, its availability in the view, a customer's orders.
    async fn read(&mut self) {
        let n = self.reads;
        self.reads += 1;
        let path = match n % 3 {
            0 => format!("/cars/{}", self.cars.plenty),
            1 => format!("/availability/{}", self.cars.plenty),
            _ => format!(
                "/customers/soak-{}-{}/orders?limit=10",
                self.id,
                (n / 3) % CUSTOMERS_PER_CLIENT
            ),
        };
        // A customer without an order yet is unknown to the view (404); failures are
        // counted by `send`.
        let _ = self.send(reqwest::Method::GET, &path, None).await;
    }

    /// Sends one request; its status and JSON body (`Null` when not JSON), or `None` (counted
    /// as a failure) when it got no answer or one outside 2xx and 404.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = &body {
            req = req.json(body);
        }
        let answer = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.counts.fail(format!("{method} {path}: {e}"));
                return None;
            }
        };
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        if answer_ok(status) {
            Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        } else {
            self.counts
                .fail(format!("{method} {path}: {status} {text}"));
            None
        }
    }
}

/// Statuses the flow expects: success, and 404 for a customer the view has not seen yet.
fn answer_ok(status: u16) -> bool {
    (200..300).contains(&status) || status == 404
}
