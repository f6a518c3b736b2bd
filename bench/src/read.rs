//! Read path: `GET /cars/{id}` through the host against the same handler written natively in
//! this process (axum over redb, the physical limit of this stack), with the same load
//! generator and connections, runs interleaved so drift on a noisy machine hits both sides.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::host::BenchHost;
use crate::load::{self, Report, Req};
use crate::median;

/// The car context's keyspace, as the host names it (`ctx/<context>`).
const CARS: TableDefinition<&str, &[u8]> = TableDefinition::new("ctx/car");

/// The car plugin's stored and served shape.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Car {
    id: u64,
    name: String,
    stock: u64,
    available: u64,
}

/// The car plugin's key of car `id` (`car/` and the id in 16 digits).
fn car_key(id: u64) -> String {
    format!("car/{id:016}")
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// The car plugin's `GET /cars/{id}`, natively: parse the id, read a fresh snapshot, decode
/// the stored JSON, answer it re-encoded (or a 404 problem).
async fn get_car(State(db): State<Arc<Database>>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return problem(StatusCode::BAD_REQUEST, "id must be a positive integer");
    };
    let read = || -> anyhow::Result<Option<Car>> {
        let txn = db.begin_read()?;
        let table = txn.open_table(CARS)?;
        match table.get(car_key(id).as_str())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    };
    match read() {
        Ok(Some(car)) => match serde_json::to_vec(&car) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Ok(None) => problem(StatusCode::NOT_FOUND, &format!("car {id} does not exist")),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The native server: a redb file in a temp dir holding `car_json` under the car plugin's
/// key, served by axum on a free loopback port of this process.
pub(crate) struct Native {
    pub base: String,
    dir: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Native {
    pub(crate) async fn start(id: u64, car_json: &[u8]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "ctxhost-bench-native-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir)?;
        let db = Database::create(dir.join("state.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(CARS)?
            .insert(car_key(id).as_str(), car_json)?;
        txn.commit()?;
        let app = axum::Router::new()
            .route("/cars/{id}", axum::routing::get(get_car))
            .with_state(Arc::new(db));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Native { base, dir, task })
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Register a car through the host; its id and its stored JSON as the host serves it.
pub(crate) async fn register_car(base: &str, stock: u64) -> anyhow::Result<(u64, Vec<u8>)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let r = client
        .post(format!("{base}/cars"))
        .json(&serde_json::json!({"name": "Bench", "stock": stock}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "POST /cars answered {}",
        r.status()
    );
    let car: serde_json::Value = r.json().await?;
    let id = car["id"].as_u64().context("no car id")?;
    let r = client.get(format!("{base}/cars/{id}")).send().await?;
    anyhow::ensure!(
        r.status().is_success(),
        "GET /cars/{id} answered {}",
        r.status()
    );
    Ok((id, r.bytes().await?.to_vec()))
}

/// A read load of `GET /cars/{id}` against `base`.
pub(crate) async fn read_load(
    base: &str,
    id: u64,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Report> {
    read_load_as(base, id, connections, seconds, None).await
}

/// [`read_load`] with a bearer token on every request.
pub(crate) async fn read_load_as(
    base: &str,
    id: u64,
    connections: usize,
    seconds: u64,
    bearer: Option<std::sync::Arc<str>>,
) -> anyhow::Result<Report> {
    let path = format!("/cars/{id}");
    load::run(
        base,
        connections,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        move |_, _| Req::get(path.clone()).bearing(bearer.as_ref()),
    )
    .await
}

/// Medians over runs of throughput, p50 and p99 (ms), and the total of failures.
pub(crate) struct Summary {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub failures: u64,
    pub first_failures: Vec<String>,
}

impl Summary {
    pub(crate) fn of(runs: &[Report]) -> Self {
        let pick = |f: &dyn Fn(&Report) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Summary {
            rps: pick(&|r| r.throughput()),
            p50: pick(&|r| r.quantile_ms(0.5)),
            p99: pick(&|r| r.quantile_ms(0.99)),
            failures: runs.iter().map(|r| r.failures).sum(),
            first_failures: runs
                .iter()
                .flat_map(|r| r.first_failures.iter().cloned())
                .take(3)
                .collect(),
        }
    }

    pub(crate) fn row(&self, name: &str, ratio: Option<f64>) {
        let ratio = ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {ratio} |",
            self.rps, self.p50, self.p99, self.failures
        );
    }
}

/// Run the read-path benchmark and print its table.
pub(crate) async fn run(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    // Two hosts on one data set would fight over the lock: each gets its own car, same JSON.
    let host = BenchHost::start(bin, plugin_dir, "")?;
    let reusing = BenchHost::start(bin, plugin_dir, "instance_reuse = 100000")?;
    let (id, json) = register_car(&host.base, 10).await?;
    let (reused_id, reused_json) = register_car(&reusing.base, 10).await?;
    anyhow::ensure!(
        (reused_id, &reused_json) == (id, &json),
        "the two hosts registered different cars"
    );
    let native = Native::start(id, &json).await?;
    let check = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{}/cars/{id}", native.base))
        .send()
        .await?
        .bytes()
        .await?;
    anyhow::ensure!(
        check.as_ref() == json.as_slice(),
        "the native handler answers {} where the host answers {}",
        String::from_utf8_lossy(&check),
        String::from_utf8_lossy(&json)
    );
    let (mut fresh, mut kept, mut natives) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        fresh.push(read_load(&host.base, id, connections, seconds).await?);
        kept.push(read_load(&reusing.base, id, connections, seconds).await?);
        natives.push(read_load(&native.base, id, connections, seconds).await?);
    }
    let (h, r, n) = (
        Summary::of(&fresh),
        Summary::of(&kept),
        Summary::of(&natives),
    );
    println!(
        "\n## Read path: `GET /cars/{{id}}` ({connections} connections, {rounds} interleaved runs of {seconds} s each, medians)\n"
    );
    println!("| server | req/s | p50 ms | p99 ms | failed | ratio to native |");
    println!("| --- | --- | --- | --- | --- | --- |");
    h.row(
        "host, fresh instance per request (default)",
        Some(h.rps / n.rps),
    );
    r.row(
        "host, instances reused (`instance_reuse`)",
        Some(r.rps / n.rps),
    );
    n.row("native axum + redb in the bench process", Some(1.0));
    println!(
        "\nhost / native throughput (target >= 0.70): fresh {:.2}, reused {:.2}; p50 {:.2}x / {:.2}x, p99 {:.2}x / {:.2}x",
        h.rps / n.rps,
        r.rps / n.rps,
        h.p50 / n.p50,
        r.p50 / n.p50,
        h.p99 / n.p99,
        r.p99 / n.p99
    );
    let served: f64 = kept.iter().map(|r| r.requests as f64).sum();
    println!(
        "instances of car created by the reusing host: {} (for {served:.0} measured requests and their warm-ups)",
        reusing.instances_created("car").await?
    );
    for f in h
        .first_failures
        .iter()
        .chain(&r.first_failures)
        .chain(&n.first_failures)
    {
        println!("  failure: {f}");
    }
    Ok(())
}
