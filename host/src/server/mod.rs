//! Assembling and running the host, in three steps so tests can drive each one:
//! [`build`] starts every part (state, runtime, contexts, event transport, retention, hot
//! swap) from
//! the settings; [`Host::router`] is the HTTP surface (the host's own endpoints, the gateway
//! as their fallback); [`serve`] serves a router on a listener until shutdown, within the
//! connection bounds of [`connections`]. [`run`] does all three, as `ctxhost serve` does.

mod connections;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, Admin};
use crate::bus::{AmqpBus, BusCtx, EmbeddedBus, EventTransport, RetryPolicy};
use crate::config::{HttpSettings, Settings};
use crate::gateway::{self, Gateway, RouteError, RouteTable, SharedRoutes};
use crate::identity::{AuthConfigError, Authenticator};
use crate::resilience::{PolicyError, RateLimiter};
use crate::runtime::{EngineError, LoadError, Runtime};
use crate::state::{Committer, Db, RecoveryPolicy, StateError, db_tables};
use crate::storage::Storage;
use crate::swap::{SwapError, Swapper, VersionStore, load_at_start, watch_dir};

/// Why the host could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state: {0}")]
    State(#[from] StateError),
    #[error("cannot start the runtime: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot decide the versions to run: {0}")]
    Versions(#[from] SwapError),
    #[error("cannot load the configured contexts: {0}")]
    Load(#[from] LoadError),
    #[error("the contexts' routes do not fit together: {0}")]
    Routes(#[from] RouteError),
    #[error("invalid setting {0}")]
    RateLimit(#[from] PolicyError),
    #[error("cannot set up authentication: {0}")]
    Auth(#[from] AuthConfigError),
    #[error("cannot write the admin token to {path}: {source}")]
    AdminToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started host: every part running, not yet serving HTTP.
pub struct Host {
    pub runtime: Runtime,
    pub gateway: Arc<Gateway>,
    pub admin: Arc<Admin>,
    /// Tells the background tasks (event workers, self-healing, watcher) to stop.
    stop: watch::Sender<bool>,
}

impl Host {
    /// The HTTP surface: probes and the admin API, with the gateway as their fallback.
    pub fn router(&self) -> Router {
        admin::router(self.admin.clone()).fallback_service(gateway::router(self.gateway.clone()))
    }

    /// Stop the background tasks (the HTTP server is stopped by its own shutdown signal).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Start every part of the host from `settings`: the state, the runtime with the configured
/// contexts (the version deployed last, or the configured file), the event transport, hot
/// swap with self-healing and the watched directory.
pub async fn build(settings: &Settings) -> Result<Host, StartError> {
    // First what can be refused without touching the disk: the gateway's rate limits.
    let limiter = Arc::new(RateLimiter::new(settings.rate_limit.clone())?);
    let auth = Authenticator::new(&settings.auth)?;
    match &auth {
        Some(a) => {
            tracing::info!(auth = %a.describe(), "authentication on: routes follow their access rules")
        }
        None => tracing::warn!(
            "authentication off: no [auth] key source (CTXHOST_AUTH_HS256_SECRET, CTXHOST_AUTH_JWKS_FILE) is configured, so every route is open to anyone"
        ),
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let plugins = &settings.runtime.plugins;
    let tables: Vec<_> = plugins.iter().flat_map(|p| db_tables(&p.name)).collect();
    let recovery = RecoveryPolicy {
        unhealthy_after: settings.storage_unhealthy_after,
    };
    let db = Db::open_with(
        &settings.data_dir,
        &tables,
        recovery,
        settings.storage.db_cache_bytes,
    )?;
    let committer = Committer::start(db.clone())?;
    let runtime = Runtime::new(
        settings.runtime.engine.clone(),
        db.clone(),
        committer.clone(),
    )?;
    let mut versions = VersionStore::new(runtime.clone(), &settings.data_dir);
    if let Some(keep) = settings.keep_versions {
        versions = versions.keeping(keep);
    }
    load_at_start(&runtime, &versions, plugins)
        .await
        .map_err(|e| match e {
            SwapError::Load(e) => StartError::Load(e),
            other => StartError::Versions(other),
        })?;
    // Before any deployment: the files a crash or a refused deployment left behind.
    let swept = versions.sweep_orphans();
    if swept > 0 {
        tracing::info!(
            files = swept,
            "deleted the files of versions no longer kept"
        );
    }

    let loaded = runtime.registry().all();
    let routes = RouteTable::build(loaded.iter().map(|c| (&c.name, c.routes.as_slice())))?;
    let routes = Arc::new(SharedRoutes::new(routes));
    let bus = BusCtx::new(db, committer, Arc::new(runtime.clone()));
    let pruner_bus = bus.clone();
    let transport: Arc<dyn EventTransport> = match &settings.amqp {
        Some(amqp) => {
            crate::telemetry::trace::set_messaging_system("rabbitmq");
            Arc::new(AmqpBus::new(
                bus.clone(),
                amqp.clone(),
                RetryPolicy::default(),
            )?)
        }
        None => {
            crate::telemetry::trace::set_messaging_system("ctxhost");
            Arc::new(EmbeddedBus::new(bus.clone(), RetryPolicy::default()))
        }
    };
    let (stop, stop_rx) = watch::channel(false);
    crate::telemetry::metrics().set_enabled(settings.metrics.enabled);
    if settings.metrics.enabled {
        crate::telemetry::start_sampler(stop_rx.clone());
    }
    let contexts: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
    transport.start(contexts.clone(), stop_rx.clone());
    let storage = Storage::start(
        pruner_bus,
        transport.clone(),
        settings.storage,
        settings.data_dir.clone(),
        stop_rx.clone(),
    );
    let swapper = Arc::new(Swapper::new(
        runtime.clone(),
        routes.clone(),
        transport.clone(),
        versions,
        settings.runtime.default_limits,
        stop_rx,
    ));
    swapper.spawn_self_healing();
    if let Some(dir) = &settings.watch_dir {
        watch_dir(swapper.clone(), dir.clone());
    }
    let gateway = Arc::new(Gateway {
        runtime: runtime.clone(),
        routes,
        body_limit: settings.body_limit,
        body_idle_timeout: settings.http.body_idle_timeout,
        body_timeout: settings.http.body_timeout,
        limiter: limiter.clone(),
        auth: auth.clone(),
    });
    let admin = Arc::new(Admin {
        runtime: runtime.clone(),
        transport,
        bus,
        swapper,
        limiter,
        token: admin_token(settings)?,
        contexts,
        upload_limit: settings.upload_limit,
        metrics: settings.metrics,
        auth,
        storage,
    });
    Ok(Host {
        runtime,
        gateway,
        admin,
        stop,
    })
}

/// Serve `router` on `listener` within the connection bounds of `http` until `shutdown`
/// completes; requests in flight then get `http.drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    http: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let http = HttpSettings {
        max_connections: connections::fit_connections(http.max_connections),
        ..http
    };
    connections::serve_connections(listener, router, http, shutdown).await;
}

/// Start everything, print where the API listens, and serve until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let host = build(&settings).await?;
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: settings.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.listen,
        source,
    })?;
    let (closing, closed) = watch::channel(false);
    // Every listener is bound before the host says it listens: whoever waits for that line
    // (an operator's script, the tests) may then reach `/metrics` at once.
    if let Some(at) = settings.metrics.listen.filter(|_| settings.metrics.enabled) {
        let metrics = TcpListener::bind(at)
            .await
            .map_err(|source| StartError::Listen { addr: at, source })?;
        tracing::info!(addr = %at, "serving /metrics on its own listener");
        let router = admin::metrics_router(host.admin.clone());
        let mut closed = closed.clone();
        tokio::spawn(serve(metrics, router, settings.http, async move {
            let _ = closed.wait_for(|c| *c).await;
        }));
    }
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    println!("ctxhost listening on http://{addr}");
    let router = host.router();
    serve(listener, router, settings.http, async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = closing.send(true);
    })
    .await;
    host.stop();
    Ok(())
}

/// The admin token: configured, or generated and written to `<data dir>/admin-token`.
fn admin_token(settings: &Settings) -> Result<String, StartError> {
    if let Some(t) = &settings.admin_token {
        return Ok(t.clone());
    }
    let path = settings.data_dir.join("admin-token");
    let token =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    write_secret(&path, &token).map_err(|source| StartError::AdminToken {
        path: path.clone(),
        source,
    })?;
    tracing::info!(file = %path.display(), "generated the admin token");
    Ok(token)
}

/// Write `secret` to `path`, readable by its owner only. A symbolic link at `path` is an
/// error (`O_NOFOLLOW`), so whoever can write the data directory cannot make the host
/// overwrite another file with the token.
#[cfg(unix)]
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(secret.as_bytes())
}

#[cfg(not(unix))]
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, secret)
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

    #[test]
    fn the_admin_token_is_not_written_through_a_symbolic_link() {
        let dir = std::env::temp_dir().join(format!("ctxhost-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let target = dir.join("elsewhere");
        std::fs::write(&target, "precious").expect("write");
        let link = dir.join("admin-token");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        super::write_secret(&link, "s3cret").expect_err("a link is refused");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
