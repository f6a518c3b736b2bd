//! Assembling and running the host: state, runtime, contexts, event transport, gateway.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::admin;
use crate::bus::{EmbeddedBus, EventTransport, RetryPolicy};
use crate::config::Settings;
use crate::gateway::{RouteTable, dispatch};
use crate::runtime::Runtime;
use crate::state::{Committer, Db, db_tables};

/// What every request handler shares.
pub struct App {
    pub runtime: Runtime,
    routes: RwLock<Arc<RouteTable>>,
    pub transport: Arc<dyn EventTransport>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// The contexts this process is configured to run.
    pub contexts: Vec<String>,
}

impl App {
    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        match self.routes.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The axum router of the host.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/admin/plugins", get(admin::plugins))
        .route("/admin/dead-letters", get(admin::dead_letters))
        .route(
            "/admin/subscriptions/{context}/redeliver",
            post(admin::redeliver),
        )
        .fallback(dispatch)
        .with_state(app)
}

/// Start everything, print where the API listens, and serve until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let tables: Vec<_> = settings
        .plugins
        .iter()
        .flat_map(|p| db_tables(&p.name))
        .collect();
    let db = Db::open(&settings.data_dir, &tables)?;
    let committer = Committer::start(db.clone())?;
    let runtime = Runtime::new(settings.engine.clone(), db, committer)?;
    runtime.load_all(&settings.plugins).await?;

    let loaded = runtime.registry().all();
    let routes = RouteTable::build(loaded.iter().map(|c| (&c.name, c.routes.as_slice())))
        .map_err(anyhow::Error::msg)?;
    let transport: Arc<dyn EventTransport> =
        Arc::new(EmbeddedBus::new(runtime.clone(), RetryPolicy::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let contexts: Vec<String> = settings.plugins.iter().map(|p| p.name.clone()).collect();
    transport.start(contexts.clone(), stop_rx);

    let app = Arc::new(App {
        runtime,
        routes: RwLock::new(Arc::new(routes)),
        transport,
        body_limit: settings.body_limit,
        contexts,
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    println!("ctxhost listening on http://{addr}");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        })
        .await?;
    Ok(())
}
