//! Serving HTTP/1 connections with bounds a slow or idle client cannot get around: at most
//! `max_connections` at once (beyond it the listener stops accepting and clients wait in the
//! backlog), the request head within `header_timeout` (which also closes idle keep-alive
//! connections), and at shutdown `drain_timeout` for requests in flight before the
//! remaining connections are closed. Body timeouts are the gateway's, which reads bodies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::config::HttpSettings;

/// Pause after an accept error that is not about one connection (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve `router` on `listener` within `limits` until `shutdown` completes, then drain.
pub(super) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    let mut out_of_descriptors = false;
    loop {
        // Reap finished connections so the set stays as large as the live ones.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if !out_of_descriptors {
                        tracing::error!(error = %e, "cannot accept connections; retrying");
                        out_of_descriptors = true;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        out_of_descriptors = false;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        let service = router
            .clone()
            .map_request(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            drain_ms = limits.drain_timeout.as_millis() as u64,
            "draining connections"
        );
    }
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "the drain deadline passed: closing the remaining connections"
        );
    }
    connections.shutdown().await;
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Raise the process's open-file limit towards what `max_connections` needs, and return
/// how many connections fit under the limit in force (some descriptors stay for files, the
/// database and the broker).
pub(super) fn fit_connections(max_connections: usize) -> usize {
    const RESERVED: u64 = 256;
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if !got {
            return max_connections;
        }
        let wanted = (max_connections as u64).saturating_add(RESERVED);
        if lim.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
        let fits = lim.rlim_cur.saturating_sub(RESERVED).max(1) as usize;
        if fits < max_connections {
            tracing::warn!(
                max_connections,
                open_files = lim.rlim_cur,
                serving = fits,
                "the open-file limit allows fewer connections than http.max_connections"
            );
        }
        fits.min(max_connections)
    }
    #[cfg(not(unix))]
    {
        max_connections
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_connection_cap_fits_under_the_open_file_limit() {
        let fits = super::fit_connections(usize::MAX / 2);
        assert!((1..usize::MAX / 2).contains(&fits), "{fits}");
        assert_eq!(super::fit_connections(10), 10);
    }
}
