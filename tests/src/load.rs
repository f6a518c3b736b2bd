//! A bounded background load of arbitrary requests ([`Load`]): concurrent clients sending
//! what a closure says, recording every answer that is not 2xx, for the tests that disturb
//! a host under traffic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::host::Host;

/// One request of a [`Load`]: method, path and an optional JSON body.
pub type LoadRequest = (reqwest::Method, String, Option<Value>);

/// A bounded background load: `clients` loops, each sending `next(client, i)` until
/// [`Load::finish`] (at most 5,000 requests each, and 60 s), recording every answer that
/// is not 2xx.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Start the clients against `host`.
    pub fn start<F>(host: &Host, clients: u64, next: F) -> Load
    where
        F: Fn(u64, u64) -> LoadRequest + Send + Sync + 'static,
    {
        let next = std::sync::Arc::new(next);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let api = host.api();
            let (next, stop, done, failures) =
                (next.clone(), stop.clone(), done.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && i < 5_000 {
                    let (method, path, body) = next(c, i);
                    let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
                    let failure = match api.try_send(method, &path, body).await {
                        Ok(r) if r.status < 300 => None,
                        Ok(r) => Some(format!("{}: {} {}", r.request, r.status, r.body)),
                        Err(e) => Some(format!("transport: {e}")),
                    };
                    if let Some(f) = failure {
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(f);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            }));
        }
        Load {
            stop,
            done,
            failures,
            tasks,
        }
    }

    /// Stop the clients; the number of requests sent and the failures seen.
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load client task");
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.done.load(Ordering::SeqCst), failures)
    }
}
