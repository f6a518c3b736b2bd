//! The state of the connection to the broker, shared by the supervisor, the relay and the
//! consumers, and read by `/readyz` and operators.

use crate::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    Connecting,
    Connected,
    Disconnected,
}

impl LinkState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// Shared state of the link to the broker.
pub(super) struct Link {
    state: Mutex<(LinkState, String)>,
    /// Sequence number of the last event the broker confirmed.
    pub confirmed: AtomicU64,
    /// Events the broker confirmed since start.
    pub published: AtomicU64,
    /// Connections established since start.
    pub connections: AtomicU64,
}

impl Link {
    pub(super) fn new(endpoint: &str) -> Self {
        Link {
            state: Mutex::new((LinkState::Connecting, format!("connecting to {endpoint}"))),
            confirmed: AtomicU64::new(0),
            published: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    pub(super) fn set(&self, state: LinkState, detail: impl Into<String>) {
        *lock(&self.state) = (state, detail.into());
    }

    pub(super) fn get(&self) -> (LinkState, String) {
        lock(&self.state).clone()
    }

    /// Events committed up to `last` and not yet confirmed by the broker.
    pub(super) fn pending(&self, last: u64) -> u64 {
        last.saturating_sub(self.confirmed.load(Ordering::Relaxed))
    }
}

/// The URL without its credentials (user and password), for logs and status.
pub(super) fn redact(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!(
            "{}://{}:{}/{}",
            uri.scheme,
            uri.authority.host,
            uri.authority.port,
            if uri.vhost == "/" { "%2f" } else { &uri.vhost }
        ),
        Err(_) => "(unparsable url)".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_credentials_never_show() {
        let shown = super::redact("amqp://alice:s3cret@127.0.0.1:5672/%2f");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
        assert_eq!(shown, "amqp://127.0.0.1:5672/%2f");
    }
}
