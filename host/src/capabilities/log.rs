//! `ctxhost:platform/log`: guest log lines in the host's log, tagged with context and trace.

use super::CapabilityCtx;
use crate::bindings::log::{Host, Level};

/// Longest message kept; the rest is cut so a guest cannot flood the log line by line.
const MAX_MESSAGE: usize = 4096;

impl Host for CapabilityCtx {
    fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let context = &*self.context;
        let trace_id = &*self.trace_id;
        match level {
            Level::Trace => tracing::trace!(target: "guest", context, trace_id, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", context, trace_id, "{message}"),
            Level::Info => tracing::info!(target: "guest", context, trace_id, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", context, trace_id, "{message}"),
            Level::Error => tracing::error!(target: "guest", context, trace_id, "{message}"),
        }
        Ok(())
    }
}
