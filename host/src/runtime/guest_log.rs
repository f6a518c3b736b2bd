//! A guest's standard error, routed into the host's log: one record per line, tagged with
//! the context, the line escaped (so a guest cannot forge host log records or terminal
//! sequences) and the output of one instance capped, past which it is counted and dropped.
//! The guest never sees an error for writing: a panic message must not become a second
//! failure.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::sync::lock;

/// Longest line logged as one record; longer ones are split.
const MAX_LINE: usize = 4 * 1024;

/// The standard error of one instance of `context`.
#[derive(Clone)]
pub(super) struct GuestStderr {
    state: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    context: Arc<str>,
    /// Bytes kept from this instance; the rest is dropped and counted.
    cap: usize,
    pending: Vec<u8>,
    logged: usize,
    dropped: usize,
}

impl GuestStderr {
    pub(super) fn new(context: Arc<str>, cap: usize) -> Self {
        GuestStderr {
            state: Arc::new(Mutex::new(LineBuffer {
                context,
                cap,
                pending: Vec::new(),
                logged: 0,
                dropped: 0,
            })),
        }
    }

    fn write(&self, bytes: &[u8]) {
        lock(&self.state).take(bytes);
    }
}

impl LineBuffer {
    fn take(&mut self, mut bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.logged + self.pending.len());
        if bytes.len() > room {
            self.dropped += bytes.len() - room;
            bytes = &bytes[..room];
        }
        for &b in bytes {
            if b == b'\n' {
                self.emit();
                self.logged += 1;
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        // `?` escapes: a newline or an escape sequence in the line stays inside the record.
        tracing::warn!(target: "ctxhost::guest", context = %self.context, line = ?line, "guest stderr");
        self.logged += self.pending.len();
        self.pending.clear();
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
        if self.dropped > 0 {
            tracing::warn!(
                target: "ctxhost::guest",
                context = %self.context,
                dropped_bytes = self.dropped,
                cap = self.cap,
                "guest stderr over its cap: the rest was dropped"
            );
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(AsyncStderr(self.clone()))
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        GuestStderr::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_LINE)
    }
}

/// The same stream for the async (WASIp3-style) interface.
struct AsyncStderr(GuestStderr);

impl tokio::io::AsyncWrite for AsyncStderr {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 64 * 1024;

    fn buffer() -> LineBuffer {
        LineBuffer {
            context: Arc::from("t"),
            cap: CAP,
            pending: Vec::new(),
            logged: 0,
            dropped: 0,
        }
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_counted() {
        let mut b = buffer();
        b.take(&vec![b'x'; CAP + 100]);
        assert_eq!(b.dropped, 100);
        assert!(b.logged + b.pending.len() <= CAP);
        b.take(b"more\n");
        assert_eq!(b.dropped, 105);
    }

    #[test]
    fn lines_are_split_at_newlines_and_at_the_line_cap() {
        let mut b = buffer();
        b.take(b"one\ntwo\n");
        assert_eq!(b.logged, 8);
        assert!(b.pending.is_empty());
        b.take(&vec![b'y'; MAX_LINE + 1]);
        assert_eq!(b.pending.len(), 1, "a long line was logged in parts");
    }
}
