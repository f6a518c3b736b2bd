//! RabbitMQ as the event transport.
//!
//! The event log stays the outbox: a relay publishes it with publisher confirms, and one
//! consumer per subscribing context applies its queue's messages through the same
//! exactly-once `deliver_all` as the embedded bus, acknowledging after the commit. A supervisor
//! owns the connection: it declares the topology, starts the relay and the consumers, and
//! when anything fails (broker down, restarted, a hung confirm) tears the connection down and
//! reconnects with backoff. HTTP keeps being served meanwhile; events wait in the outbox.

mod config;
mod consumer;
mod link;
mod message;
#[cfg(test)]
mod proptests;
mod relay;
mod topology;

use crate::sync::lock;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use self::consumer::{ConsumerSpec, Stopped};
use self::link::{Link, LinkState, redact};
use self::topology::Topology;
use super::envelope::Envelope;
use super::{BusError, Consumed, EventTransport, RetryPolicy, TransportStatus, subscribes};
use crate::bus::BusCtx;
use crate::state::StateError;

pub(crate) use self::config::{AmqpConfigError, AmqpFile};

/// How long connecting (TCP and AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the supervisor checks that the connection is still up.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Where and how to reach RabbitMQ.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: String,
    /// Prefix of every broker object, so several systems can share a broker.
    pub namespace: String,
    /// Unacknowledged messages a consumer may hold.
    pub prefetch: u16,
}

/// Failures of the link to the broker; each one ends the connection, which is then
/// re-established.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AmqpError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("no answer from the broker within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the broker did not confirm a publish within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the connection to the broker was lost")]
    ConnectionLost,
    #[error("the broker ended the consumer of {0}")]
    ConsumerEnded(String),
    #[error("a task of the broker link failed: {0}")]
    TaskFailed(String),
    #[error(transparent)]
    State(#[from] StateError),
}

struct Inner {
    bus: BusCtx,
    settings: AmqpSettings,
    policy: RetryPolicy,
    topology: Arc<Topology>,
    link: Arc<Link>,
    /// Subscribing contexts this process runs.
    contexts: Mutex<BTreeSet<String>>,
    /// Wakes the supervisor when contexts are added.
    added: Notify,
    /// The current connection, for operator commands.
    connection: Mutex<Option<Arc<Connection>>>,
}

/// The RabbitMQ transport.
pub(crate) struct AmqpBus {
    inner: Arc<Inner>,
    started: AtomicBool,
}

impl AmqpBus {
    pub(crate) fn new(
        bus: BusCtx,
        settings: AmqpSettings,
        policy: RetryPolicy,
    ) -> Result<Self, StateError> {
        let link = Arc::new(Link::new(&redact(&settings.url)));
        link.confirmed
            .store(relay::read_cursor(&bus)?, Ordering::Relaxed);
        Ok(AmqpBus {
            inner: Arc::new(Inner {
                bus,
                topology: Arc::new(Topology::new(&settings.namespace)),
                settings,
                policy,
                link,
                contexts: Mutex::new(BTreeSet::new()),
                added: Notify::new(),
                connection: Mutex::new(None),
            }),
            started: AtomicBool::new(false),
        })
    }

    fn pending(&self) -> u64 {
        let last = *self.inner.bus.committer().committed_events().borrow();
        self.inner.link.pending(last)
    }
}

impl EventTransport for AmqpBus {
    fn start(&self, contexts: Vec<String>, shutdown: watch::Receiver<bool>) {
        {
            let mut set = lock(&self.inner.contexts);
            set.extend(
                contexts
                    .into_iter()
                    .filter(|name| subscribes(&self.inner.bus, name)),
            );
        }
        self.inner.added.notify_one();
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(supervise(self.inner.clone(), shutdown));
        }
    }

    fn redeliver<'a>(
        &'a self,
        context: &'a str,
        from_seq: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<u64>, BusError>> + Send + 'a>> {
        Box::pin(async move {
            if !lock(&self.inner.contexts).contains(context) {
                return Err(BusError::UnknownSubscriber(context.to_string()));
            }
            let conn = lock(&self.inner.connection)
                .clone()
                .ok_or_else(|| BusError::Unavailable("not connected to the broker".into()))?;
            let sent = republish(&self.inner, &conn, context, from_seq)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            tracing::info!(context, from_seq, sent, "redelivery requested");
            Ok(Some(sent))
        })
    }

    /// The relay's cursor: the broker holds every event before it, in the queues of the
    /// contexts that subscribe, wherever they run.
    fn consumed_through(&self) -> Result<Consumed, BusError> {
        Ok(Consumed {
            seq: relay::read_cursor(&self.inner.bus)?,
            held_by: Some("the broker relay".into()),
        })
    }

    fn status(&self) -> TransportStatus {
        let (state, detail) = self.inner.link.get();
        TransportStatus {
            transport: "amqp",
            ready: state == LinkState::Connected,
            state: state.as_str(),
            detail,
            outbox_pending: Some(self.pending()),
        }
    }
}

/// Publish the local events after `from_seq` that `context` subscribes to straight to its
/// queue (the default exchange routes by queue name); its inbox skips those it applied.
async fn republish(
    inner: &Inner,
    conn: &Connection,
    context: &str,
    from_seq: u64,
) -> Result<u64, AmqpError> {
    let subscriptions = inner
        .bus
        .subscriber(context)
        .map(|c| c.subscriptions().to_vec())
        .unwrap_or_default();
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let queue = inner.topology.queue(context);
    let mut after = from_seq;
    let mut sent = 0;
    loop {
        let batch = inner.bus.db().events_after(after, 512)?;
        let Some((last, _)) = batch.last() else { break };
        after = *last;
        for (seq, bytes) in batch {
            let Ok(event) = Envelope::decode(&bytes) else {
                continue;
            };
            if !subscriptions.contains(&event.event_type) {
                continue;
            }
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &event.data,
                    message::properties(seq, &event),
                )
                .await?;
            sent += 1;
        }
    }
    channel.wait_for_confirms().await?;
    let _ = channel.close(200, "redelivered".into()).await;
    Ok(sent)
}

/// Keep a connection up until `shutdown`, reconnecting with backoff.
async fn supervise(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let endpoint = redact(&inner.settings.url);
    let mut backoff = MIN_BACKOFF;
    loop {
        if *shutdown.borrow() {
            break;
        }
        inner
            .link
            .set(LinkState::Connecting, format!("connecting to {endpoint}"));
        let began = Instant::now();
        match session(&inner, &mut shutdown).await {
            Ok(()) => break,
            Err(e) => {
                *lock(&inner.connection) = None;
                // A session that lasted resets the backoff: this is a new outage.
                if began.elapsed() > Duration::from_secs(10) {
                    backoff = MIN_BACKOFF;
                }
                let last = *inner.bus.committer().committed_events().borrow();
                let pending = inner.link.pending(last);
                tracing::warn!(broker = %endpoint, error = %e, retry_in = ?backoff, outbox_pending = pending, "broker link down; events wait in the outbox");
                inner.link.set(
                    LinkState::Disconnected,
                    format!("{endpoint}: {e}; retrying in {} ms", backoff.as_millis()),
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    *lock(&inner.connection) = None;
    tracing::debug!("broker supervisor stopped");
}

/// One connection's life: declare, start the relay and the consumers, and watch them.
/// `Ok` only on shutdown.
async fn session(
    inner: &Arc<Inner>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), AmqpError> {
    let endpoint = redact(&inner.settings.url);
    let props = ConnectionProperties::default()
        .with_connection_name(format!("ctxhost-{}", std::process::id()).into());
    let conn = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&inner.settings.url, props),
    )
    .await
    .map_err(|_| AmqpError::ConnectTimeout(CONNECT_TIMEOUT))??;
    let conn = Arc::new(conn);
    let result = serve(inner, &conn, shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
    if result.is_ok() {
        tracing::info!(broker = %endpoint, "broker connection closed");
    }
    result
}

enum TaskEnd {
    Relay,
    Consumer(Stopped),
}

async fn serve(
    inner: &Arc<Inner>,
    conn: &Arc<Connection>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), AmqpError> {
    let endpoint = redact(&inner.settings.url);
    let shared = conn.create_channel().await?;
    inner.topology.declare_shared(&shared).await?;
    // Queues and bindings exist before the relay publishes anything, or the first events
    // after a start could find no queue and be dropped by the exchange.
    let contexts = lock(&inner.contexts).clone();
    for context in &contexts {
        let Some(ctx) = inner.bus.subscriber(context) else {
            continue;
        };
        inner.topology.declare_queue(conn, context).await?;
        for event_type in ctx.subscriptions() {
            inner.topology.bind(&shared, context, event_type).await?;
        }
    }
    let _ = shared.close(200, "declared".into()).await;

    let mut tasks: JoinSet<Result<TaskEnd, AmqpError>> = JoinSet::new();
    let relay_channel = conn.create_channel().await?;
    tasks.spawn(relay_task(inner.clone(), relay_channel));
    let mut consuming = BTreeSet::new();
    spawn_consumers(inner, conn, &mut tasks, &mut consuming);

    inner.link.connections.fetch_add(1, Ordering::Relaxed);
    *lock(&inner.connection) = Some(conn.clone());
    connected(inner, &endpoint, &consuming);
    tracing::info!(broker = %endpoint, namespace = %inner.settings.namespace, consumers = ?consuming, "connected to the broker");

    let mut watch = tokio::time::interval(WATCH_EVERY);
    let result = loop {
        tokio::select! {
            ended = tasks.join_next() => match ended {
                Some(Ok(Ok(TaskEnd::Consumer(Stopped::ContextGone(name))))) => {
                    tracing::info!(context = %name, "context unloaded; its events wait in its queue");
                    consuming.remove(&name);
                    lock(&inner.contexts).remove(&name);
                }
                Some(Ok(Ok(TaskEnd::Relay))) => break Err(AmqpError::ConnectionLost),
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(join)) => break Err(AmqpError::TaskFailed(join.to_string())),
                None => break Err(AmqpError::ConnectionLost),
            },
            _ = inner.added.notified() => {
                spawn_consumers(inner, conn, &mut tasks, &mut consuming);
                connected(inner, &endpoint, &consuming);
            }
            _ = watch.tick() => {
                if !conn.status().connected() {
                    break Err(AmqpError::ConnectionLost);
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Ok(());
                }
            }
        }
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    result
}

/// Report the link up, with the contexts consuming over it.
fn connected(inner: &Inner, endpoint: &str, consuming: &BTreeSet<String>) {
    let consumers = if consuming.is_empty() {
        "no context".to_string()
    } else {
        consuming.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    inner.link.set(
        LinkState::Connected,
        format!(
            "connected to {endpoint}, namespace {:?}, consuming for {consumers}",
            inner.settings.namespace
        ),
    );
}

async fn relay_task(inner: Arc<Inner>, channel: lapin::Channel) -> Result<TaskEnd, AmqpError> {
    relay::run(
        channel,
        inner.bus.clone(),
        inner.topology.clone(),
        inner.link.clone(),
        inner.policy.clone(),
    )
    .await?;
    Ok(TaskEnd::Relay)
}

fn spawn_consumers(
    inner: &Arc<Inner>,
    conn: &Arc<Connection>,
    tasks: &mut JoinSet<Result<TaskEnd, AmqpError>>,
    consuming: &mut BTreeSet<String>,
) {
    let wanted = lock(&inner.contexts).clone();
    for context in wanted {
        if !consuming.insert(context.clone()) {
            continue;
        }
        let spec = ConsumerSpec {
            bus: inner.bus.clone(),
            topology: inner.topology.clone(),
            context,
            prefetch: inner.settings.prefetch,
            policy: inner.policy.clone(),
        };
        let conn = conn.clone();
        tasks.spawn(async move { consumer::run(conn, spec).await.map(TaskEnd::Consumer) });
    }
}
