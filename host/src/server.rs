//! Assembling and running the host: state, runtime, contexts, event transport, gateway,
//! admin API, hot swap.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post, put};
use tokio::sync::watch;

use crate::admin;
use crate::bus::{AmqpBus, EmbeddedBus, EventTransport, RetryPolicy};
use crate::config::Settings;
use crate::gateway::RouteTable;
use crate::runtime::Runtime;
use crate::state::{Committer, Db, db_tables};
use crate::swap::{Swapper, VersionStore, startup_artifacts, watch_dir};

/// What every request handler shares.
pub struct App {
    pub runtime: Runtime,
    routes: Arc<RwLock<Arc<RouteTable>>>,
    pub transport: Arc<dyn EventTransport>,
    pub swapper: Arc<Swapper>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Largest plugin upload, in bytes.
    pub upload_limit: usize,
    /// Bearer token of the admin API.
    pub admin_token: String,
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
    let admin = Router::new()
        .route("/admin/plugins", get(admin::plugins))
        .route("/admin/plugins/{name}", put(admin::deploy))
        .route("/admin/plugins/{name}/rollback", post(admin::rollback))
        .route("/admin/plugins/{name}/versions", get(admin::versions))
        .route("/admin/dead-letters", get(admin::dead_letters))
        .route("/admin/resilience", get(crate::resilience::admin))
        .route(
            "/admin/subscriptions/{context}/redeliver",
            post(admin::redeliver),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admin::require_token,
        ));
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .merge(admin)
        .fallback(crate::resilience::gateway::limited_dispatch)
        .with_state(app)
}

/// The admin token: configured, or generated and written to `<data dir>/admin-token`.
fn admin_token(settings: &Settings) -> anyhow::Result<String> {
    if let Some(t) = &settings.admin_token {
        return Ok(t.clone());
    }
    let path = settings.data_dir.join("admin-token");
    let token =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    write_secret(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(file = %path.display(), "generated the admin token");
    Ok(token)
}

#[cfg(unix)]
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(secret.as_bytes())
}

#[cfg(not(unix))]
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, secret)
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
    let versions = VersionStore::new(runtime.clone(), &settings.data_dir);
    let artifacts = startup_artifacts(&versions, &settings.plugins).await?;
    runtime.load_all(artifacts).await?;

    let loaded = runtime.registry().all();
    let routes = RouteTable::build(loaded.iter().map(|c| (&c.name, c.routes.as_slice())))
        .map_err(anyhow::Error::msg)?;
    let routes = Arc::new(RwLock::new(Arc::new(routes)));
    let transport: Arc<dyn EventTransport> = match &settings.amqp {
        Some(amqp) => Arc::new(AmqpBus::new(
            runtime.clone(),
            amqp.clone(),
            RetryPolicy::default(),
        )?),
        None => Arc::new(EmbeddedBus::new(runtime.clone(), RetryPolicy::default())),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let contexts: Vec<String> = settings.plugins.iter().map(|p| p.name.clone()).collect();
    transport.start(contexts.clone(), stop_rx.clone());
    let swapper = Arc::new(Swapper::new(
        runtime.clone(),
        routes.clone(),
        transport.clone(),
        versions,
        settings.default_limits,
        stop_rx,
    ));
    swapper.spawn_self_healing();
    if let Some(dir) = &settings.watch_dir {
        watch_dir(swapper.clone(), dir.clone());
    }

    let app = Arc::new(App {
        runtime,
        routes,
        transport,
        swapper,
        body_limit: settings.body_limit,
        upload_limit: settings.upload_limit,
        admin_token: admin_token(&settings)?,
        contexts,
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    println!("ctxhost listening on http://{addr}");
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    })
    .await?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_generated_admin_token_is_readable_by_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("ctxhost-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("admin-token");
        super::write_secret(&path, "s3cret").expect("write");
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "s3cret");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
