//! The `[telemetry]` table of the configuration file.

use std::net::SocketAddr;

use serde::Deserialize;

/// The `[telemetry]` table as the file spells it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetryFile {
    /// Record and serve metrics (default true).
    pub(crate) metrics: Option<bool>,
    /// Serve `GET /metrics` on this address instead of the main listener.
    pub(crate) metrics_listen: Option<String>,
    /// Ask for the admin token on `GET /metrics` (default false: open, like a scrape
    /// target expects).
    pub(crate) metrics_auth: Option<bool>,
}

/// Where and how `GET /metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Metrics are recorded and served.
    pub enabled: bool,
    /// A listener of its own; `None`: the main listener serves `/metrics`.
    pub listen: Option<SocketAddr>,
    /// `/metrics` needs the admin token.
    pub auth: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            listen: None,
            auth: false,
        }
    }
}

/// A `[telemetry]` key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.{key}: {reason}")]
pub struct TelemetryConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl MetricsSettings {
    pub(crate) fn resolve(f: &TelemetryFile) -> Result<Self, TelemetryConfigError> {
        let listen = match &f.metrics_listen {
            None => None,
            Some(s) => Some(s.parse().map_err(|e| TelemetryConfigError {
                key: "metrics_listen",
                reason: format!("{s:?} is not an address:port ({e})"),
            })?),
        };
        Ok(MetricsSettings {
            enabled: f.metrics.unwrap_or(true),
            listen,
            auth: f.metrics_auth.unwrap_or(false),
        })
    }
}
