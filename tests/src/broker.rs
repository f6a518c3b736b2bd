//! RabbitMQ for the tests of the AMQP transport: a unique [`Namespace`] per test (its broker
//! objects deleted when dropped), a look into the dead-letter queue, a message that is not
//! an event ([`publish_raw`]), and stopping and starting the local broker node.
//!
//! The broker is the one at `CTXHOST_TEST_AMQP_URL` (default [`DEFAULT_AMQP_URL`]).
//! [`stop_broker`] and [`start_broker`] drive the local node with `rabbitmqctl stop_app` and
//! `rabbitmqctl start_app` (the command can be replaced with `CTXHOST_TEST_RABBITMQCTL`).
//!
//! Everything here is bounded in time, and the synchronous functions run their AMQP work on
//! a runtime of their own in a separate thread, so they work from `Drop` and from inside a
//! `#[tokio::test]` alike.

use std::fmt;
use std::future::Future;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The broker the tests use when `CTXHOST_TEST_AMQP_URL` is not set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every context whose queue a test host may declare (`<namespace>.<context>`).
pub const QUEUE_CONTEXTS: [&str; 5] = ["order", "payment", "car", "view", "chaos"];

/// How long one connection attempt, and one cleanup or look into a queue, may take.
const AMQP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `rabbitmqctl` may run, and the broker may take to accept connections again.
const BROKER_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker URL of the tests: `CTXHOST_TEST_AMQP_URL`, or [`DEFAULT_AMQP_URL`].
pub fn amqp_url() -> String {
    std::env::var("CTXHOST_TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned())
}

/// A prefix for the broker objects of one test, unique across processes and runs
/// (`ctxhost-test-<pid>-<counter>-<nanos>`). Hosts given the same namespace are joined by
/// the broker; dropping the namespace deletes its exchanges and queues (best effort), so
/// drop it after the hosts that use it (declare it before them).
pub struct Namespace {
    name: String,
    url: String,
}

impl Namespace {
    /// A fresh namespace; panics with a clear message when the broker cannot be reached.
    pub fn new() -> Self {
        let url = amqp_url();
        Self::on_broker("ctxhost-test", &url).unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {}: {e} (start the broker, or point \
                 CTXHOST_TEST_AMQP_URL at one)",
                redacted(&url)
            )
        })
    }

    /// A fresh namespace named `<prefix>-...` on the broker at `url`, whose objects are
    /// deleted there when dropped; `Err` when the broker cannot be reached.
    pub fn on_broker(prefix: &str, url: &str) -> Result<Self, String> {
        let name = crate::unique_name(prefix);
        on_own_runtime(AMQP_TIMEOUT, {
            let url = url.to_owned();
            move || async move {
                let conn = connect(&url).await?;
                let _ = conn.close(200, "ok".into()).await;
                Ok::<(), String>(())
            }
        })
        .and_then(|r| r)?;
        Ok(Self {
            name,
            url: url.to_owned(),
        })
    }

    /// The namespace itself, as given to [`crate::HostOptions::amqp`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic exchange every event is published to: `<namespace>.events`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.name)
    }

    /// The fanout exchange of dead letters: `<namespace>.dead-letter`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.name)
    }

    /// The queue of dead letters: `<namespace>.dead-letters`.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.name)
    }

    /// The queue of a subscribing context: `<namespace>.<context>`.
    pub fn queue(&self, context: &str) -> String {
        format!("{}.{context}", self.name)
    }

    /// Deletes the namespace's exchanges and queues; errors are reported, not raised.
    fn delete_objects(&self) -> Result<(), String> {
        let url = self.url.clone();
        let exchanges = [self.events_exchange(), self.dead_letter_exchange()];
        let mut queues: Vec<String> = QUEUE_CONTEXTS.iter().map(|c| self.queue(c)).collect();
        queues.push(self.dead_letter_queue());
        on_own_runtime(AMQP_TIMEOUT, move || async move {
            let conn = connect(&url).await?;
            let mut failures = Vec::new();
            // A failed delete closes its channel (and deleting what does not exist may fail,
            // depending on the broker): one fresh channel per delete.
            let objects = queues
                .iter()
                .map(|q| ("queue", q))
                .chain(exchanges.iter().map(|e| ("exchange", e)));
            for (kind, name) in objects {
                let result = match conn.create_channel().await {
                    Ok(ch) => {
                        let r = if kind == "queue" {
                            ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                                .await
                                .map(drop)
                        } else {
                            ch.exchange_delete(
                                name.as_str().into(),
                                ExchangeDeleteOptions::default(),
                            )
                            .await
                        };
                        let _ = ch.close(200, "done".into()).await;
                        r
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result
                    && !is_not_found(&e)
                {
                    failures.push(format!("{kind} {name}: {e}"));
                }
            }
            let _ = conn.close(200, "done".into()).await;
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        })
        .and_then(|r| r)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({})", self.name)
    }
}

impl AsRef<str> for Namespace {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = self.delete_objects() {
            eprintln!(
                "could not delete the broker objects of namespace {}: {e}",
                self.name
            );
        }
    }
}

/// One message of a queue: `(type, correlation id, body)` (the AMQP `type` and
/// `correlation_id` properties, empty when absent, and the raw body).
pub type QueueMessage = (String, String, Vec<u8>);

/// The messages now in `<namespace>.dead-letters`, left in the queue: each is fetched with
/// `basic.get` (acknowledgement required) and, once all are read, all are given back with
/// `basic.nack` (requeue). A broker with a delivery limit on that queue counts each of these
/// reads as a delivery, so poll it sparingly (or use [`take_dead_letter_messages`]).
/// `Err` when the broker or the queue is not there (yet).
pub async fn dead_letter_messages(ns: &Namespace) -> Result<Vec<QueueMessage>, String> {
    read_queue(ns.dead_letter_queue(), false).await
}

/// The messages now in `<namespace>.dead-letters`, removed from it (`basic.get`, then
/// `basic.ack`): a test polling for several messages keeps what earlier calls returned.
/// `Err` when the broker or the queue is not there (yet).
pub async fn take_dead_letter_messages(ns: &Namespace) -> Result<Vec<QueueMessage>, String> {
    read_queue(ns.dead_letter_queue(), true).await
}

/// `(ready messages, consumers)` of `<namespace>.<context>`, without changing it (a passive
/// declare); `Err` when the queue does not exist or the broker cannot be reached.
pub async fn queue_counts(ns: &Namespace, context: &str) -> Result<(u32, u32), String> {
    let queue = ns.queue(context);
    on_channel("inspecting the queue", async |ch| {
        let declared = ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue {queue}: {e}"))?;
        Ok((declared.message_count(), declared.consumer_count()))
    })
    .await
}

/// Publishes `body` to `<namespace>.events` with the routing key `routing_key` and no
/// properties: a message that is not an event of a host, for the tests of what a consumer
/// does with one. Waits for the broker's confirmation.
pub async fn publish_raw(ns: &Namespace, routing_key: &str, body: &[u8]) -> Result<(), String> {
    let exchange = ns.events_exchange();
    on_channel("publishing", async |ch| {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm.select: {e}"))?;
        ch.basic_publish(
            exchange.as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .map_err(|e| format!("basic.publish to {exchange}: {e}"))?
        .await
        .map_err(|e| format!("confirmation from {exchange}: {e}"))?;
        Ok(())
    })
    .await
}

/// Reads every message of `queue` (at most 10,000); `remove` acks them, otherwise they are
/// requeued.
async fn read_queue(queue: String, remove: bool) -> Result<Vec<QueueMessage>, String> {
    on_channel("reading the queue", async |ch| {
        let mut messages = Vec::new();
        let mut last_tag = None;
        while messages.len() < 10_000 {
            let got = ch
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| format!("basic.get from {queue}: {e}"))?;
            let Some(message) = got else { break };
            let delivery = message.delivery;
            let text = |v: &Option<lapin::types::ShortString>| {
                v.as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default()
            };
            messages.push((
                text(delivery.properties.kind()),
                text(delivery.properties.correlation_id()),
                delivery.data,
            ));
            last_tag = Some(delivery.delivery_tag);
        }
        if let Some(tag) = last_tag {
            if remove {
                ch.basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| format!("basic.ack on {queue}: {e}"))?;
            } else {
                ch.basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
                .map_err(|e| format!("basic.nack on {queue}: {e}"))?;
            }
        }
        Ok(messages)
    })
    .await
}

/// Stops the broker application (`rabbitmqctl stop_app`); panics with the command's output
/// when it fails or runs over 60 s. Blocks: from async code, call it through
/// `tokio::task::spawn_blocking`.
pub fn stop_broker() {
    if let Err(e) = rabbitmqctl(&["stop_app"]) {
        panic!("stopping the broker failed: {e}");
    }
}

/// Starts the broker application (`rabbitmqctl start_app`) and waits until it accepts TCP
/// connections and an AMQP connection succeeds (at most 60 s); panics otherwise. Blocks:
/// from async code, call it through `tokio::task::spawn_blocking`.
pub fn start_broker() {
    if let Err(e) = try_start_broker() {
        panic!("starting the broker failed: {e}");
    }
}

/// [`start_broker`] without the panic.
pub fn try_start_broker() -> Result<(), String> {
    rabbitmqctl(&["start_app"])?;
    wait_for_broker(BROKER_COMMAND_TIMEOUT)
}

/// Waits until the broker accepts TCP connections on its port and an AMQP connection
/// succeeds, for at most `timeout`.
pub fn wait_for_broker(timeout: Duration) -> Result<(), String> {
    let url = amqp_url();
    let target = authority_of(&url)?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        let tcp = target
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_owned()))
            .and_then(|addr| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())
            });
        match tcp {
            Err(e) => last = format!("TCP {target}: {e}"),
            Ok(_) => {
                let url = url.clone();
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_secs(1), AMQP_TIMEOUT);
                match on_own_runtime(left, move || async move {
                    connect(&url).await?.close(200, "ok".into()).await.ok();
                    Ok::<(), String>(())
                })
                .and_then(|r| r)
                {
                    Ok(()) => return Ok(()),
                    Err(e) => last = format!("AMQP: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!(
        "the broker at {target} did not accept connections within {timeout:?}; last: {last}"
    ))
}

/// Stops the broker for the length of its life: [`BrokerOutage::begin`] stops it,
/// [`BrokerOutage::end`] starts it again, and dropping it while the broker is down (a test
/// that panicked) starts it too, so later tests find it running.
pub struct BrokerOutage {
    down: bool,
}

impl BrokerOutage {
    /// Stops the broker (see [`stop_broker`]). Blocks.
    pub fn begin() -> Self {
        let mut outage = Self { down: true };
        if let Err(e) = rabbitmqctl(&["stop_app"]) {
            // Whatever state it is in, make sure it runs again.
            let _ = try_start_broker();
            outage.down = false;
            panic!("stopping the broker failed: {e}");
        }
        outage
    }

    /// Starts the broker again and waits for it (see [`start_broker`]). Blocks.
    pub fn end(mut self) {
        self.down = false;
        start_broker();
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if self.down {
            self.down = false;
            if let Err(e) = try_start_broker() {
                eprintln!("could not start the broker again after the test: {e}");
            }
        }
    }
}

/// Runs `rabbitmqctl <args>`, killing it after 60 s; `Err` with its output on failure.
fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let program = std::env::var("CTXHOST_TEST_RABBITMQCTL")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "rabbitmqctl".to_owned());
    let command = args.join(" ");
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program} {command}`: {e}"))?;
    // Read both pipes to the end in threads, so the command never blocks on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = pipe.read_to_string(&mut out);
            out
        })
    })
    .collect();
    let deadline = Instant::now() + BROKER_COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("killed after {BROKER_COMMAND_TIMEOUT:?}"));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("waiting for it failed: {e}"));
            }
        }
    };
    let output: Vec<String> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    let output = output.join("\n");
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{program} {command}` failed ({s}):\n{output}")),
        Err(e) => Err(format!("`{program} {command}` {e}:\n{output}")),
    }
}

/// A broker user of one test, allowed only the objects of one [`Namespace`] (configure,
/// write and read permissions on `<namespace>.*` in the default virtual host): what a host
/// on another machine connects as, since `guest` may only connect from loopback. Created
/// with `rabbitmqctl` on the local node and deleted when dropped.
pub struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    /// Creates the user for `ns`, with a password of its own; panics with `rabbitmqctl`'s
    /// output when that fails.
    pub fn for_namespace(ns: &Namespace) -> BrokerUser {
        let name = format!("{}-user", ns.name());
        let password = crate::unique_name("pw").replace('-', "");
        let user = BrokerUser { name, password };
        if let Err(e) = rabbitmqctl(&["add_user", &user.name, &user.password]) {
            panic!("creating the broker user {}: {e}", user.name);
        }
        let objects = format!("^{}\\.", ns.name().replace('.', "\\."));
        if let Err(e) = rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &user.name,
            &objects,
            &objects,
            &objects,
        ]) {
            panic!("granting the broker user {} its namespace: {e}", user.name);
        }
        user
    }

    /// The AMQP URL of the default virtual host at `addr` as this user.
    pub fn url_at(&self, addr: std::net::SocketAddr) -> String {
        format!("amqp://{}:{}@{addr}/%2f", self.name, self.password)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_user", &self.name]) {
            eprintln!("could not delete the broker user {}: {e}", self.name);
        }
    }
}

/// The address (`host:port`) of the tests' broker, from [`amqp_url`].
pub fn broker_addr() -> Result<std::net::SocketAddr, String> {
    addr_of(&amqp_url())
}

/// The socket address of the broker of an AMQP URL.
pub fn addr_of(url: &str) -> Result<std::net::SocketAddr, String> {
    let target = authority_of(url)?;
    target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))
}

/// `host:port` of the broker of an AMQP URL.
fn authority_of(url: &str) -> Result<String, String> {
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| format!("{} is not an AMQP URI: {e}", redacted(url)))?;
    Ok(format!("{}:{}", uri.authority.host, uri.authority.port))
}

/// One AMQP connection to `url`, bounded by [`AMQP_TIMEOUT`].
async fn connect(url: &str) -> Result<Connection, String> {
    match tokio::time::timeout(
        AMQP_TIMEOUT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", redacted(url))),
        Err(_) => Err(format!(
            "connecting to {} took over {AMQP_TIMEOUT:?}",
            redacted(url)
        )),
    }
}

/// Runs `work` on a channel of a new connection to the tests' broker, then closes both; the
/// whole is bounded by [`AMQP_TIMEOUT`] (`what` names it in the error).
async fn on_channel<T>(
    what: &str,
    work: impl AsyncFnOnce(&Channel) -> Result<T, String>,
) -> Result<T, String> {
    let run = async {
        let conn = connect(&amqp_url()).await?;
        let result = match conn.create_channel().await {
            Ok(ch) => {
                let result = work(&ch).await;
                let _ = ch.close(200, "done".into()).await;
                result
            }
            Err(e) => Err(format!("open a channel: {e}")),
        };
        let _ = conn.close(200, "done".into()).await;
        result
    };
    tokio::time::timeout(AMQP_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(format!("{what} took over {AMQP_TIMEOUT:?}")))
}

/// Whether an AMQP error is the broker's 404 NOT_FOUND.
fn is_not_found(e: &lapin::Error) -> bool {
    let text = e.to_string();
    text.contains("NOT_FOUND") || text.contains("NotFound") || text.contains("404")
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Runs `make()`'s future on a new current-thread runtime in a thread of its own, for at
/// most `timeout` (the thread is left behind if it overruns): usable from `Drop` and from
/// inside another runtime.
fn on_own_runtime<T, F, Fut>(timeout: Duration, make: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(format!("cannot build a runtime: {e}")));
                return;
            }
        };
        let result = runtime.block_on(async move {
            tokio::time::timeout(timeout, make())
                .await
                .map_err(|_| format!("did not finish within {timeout:?}"))
        });
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(result) => result,
        Err(_) => Err(format!("did not finish within {timeout:?}")),
    }
}
