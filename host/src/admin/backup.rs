//! `GET /admin/backup`: an online backup of the host's state, streamed as the body (the
//! format is described in `state::backup`; `ctxhost backup` saves and checks it).
//!
//! One read transaction is the backup's snapshot: the database as of one commit, and the
//! kept component versions that commit records. A blocking thread writes the backup into a
//! bounded channel that the response body drains, so the host keeps serving, memory stays
//! bounded and a slow client slows only its own backup. If the backup fails midway, the body
//! ends with an error (the connection is cut before the trailer), so no client can take
//! what it received for a whole backup; the trailer's digest tells anyway.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::{mpsc, oneshot};

use super::Admin;
use crate::gateway::problem::Problem;
use crate::state::StateError;
use crate::state::backup::{BackupError, chain, dump};

/// Bytes the writer gathers before handing them to the body.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the client at most: with [`CHUNK`], what a backup holds in memory.
const IN_FLIGHT: usize = 8;

type Item = Result<Bytes, io::Error>;

/// An `io::Write` into the body's channel, in chunks; fails once the client is gone.
struct ChannelWriter {
    tx: mpsc::Sender<Item>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `GET /admin/backup`: the backup of one snapshot, streamed (`application/octet-stream`).
/// 503 when storage is unavailable, 500 when the snapshot or its versions cannot be read;
/// once the body has begun, a failure cuts it short.
pub(super) async fn backup(State(app): State<Arc<Admin>>) -> Response {
    let (tx, rx) = mpsc::channel::<Item>(IN_FLIGHT);
    let (ready_tx, ready_rx) = oneshot::channel::<Result<u64, StateError>>();
    let db = app.runtime.db().clone();
    let swapper = app.swapper.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let taken_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prepared = db
            .snapshot()
            .and_then(|snapshot| Ok((swapper.kept_files(&snapshot)?, snapshot)));
        let (files, snapshot) = match prepared {
            Ok(p) => {
                let _ = ready_tx.send(Ok(taken_at_ms));
                p
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match dump(&snapshot, files, taken_at_ms, out) {
            Ok((_, s)) => tracing::info!(
                bytes = s.bytes,
                tables = s.tables,
                entries = s.entries,
                files = s.files,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "backup sent"
            ),
            Err(BackupError::Write(_)) => {
                tracing::info!("backup abandoned: the client went away");
            }
            Err(e) => {
                let detail = chain(&e);
                tracing::warn!(error = %detail, "backup failed; its body is cut short");
                let _ = tx.blocking_send(Err(io::Error::other(detail)));
            }
        }
    });
    let taken_at_ms = match ready_rx.await {
        Ok(Ok(ms)) => ms,
        Ok(Err(e)) => {
            let status = if e.is_unavailable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            tracing::warn!(error = %chain(&e), "backup refused");
            return Problem::new(status, format!("cannot take a backup: {e}")).into_response();
        }
        Err(_) => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the backup stopped before it began",
            )
            .into_response();
        }
    };
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut res = Body::from_stream(body).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"ctxhost-{taken_at_ms}.backup\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}
