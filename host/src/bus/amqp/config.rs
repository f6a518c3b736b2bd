//! The `[amqp]` table, `CTXHOST_AMQP_URL` and `--amqp-url`: RabbitMQ as the event transport.
//!
//! ```toml
//! [amqp]
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"   # unset: the embedded bus
//! namespace = "ctxhost"                           # prefix of every broker object
//! prefetch = 128                                  # unacknowledged messages per consumer
//! ```

use serde::Deserialize;

use super::AmqpSettings;

/// The `[amqp]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpFile {
    url: Option<String>,
    namespace: Option<String>,
    prefetch: Option<u16>,
}

/// Why the RabbitMQ settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AmqpConfigError {
    #[error(
        "invalid setting amqp: the [amqp] table needs a url (or set CTXHOST_AMQP_URL / --amqp-url)"
    )]
    NoUrl,
    #[error("invalid setting amqp: url is not an AMQP URI: {0}")]
    NotAnAmqpUri(String),
    #[error("invalid setting amqp: only amqp:// is supported (this build has no TLS for amqps://)")]
    Tls,
    #[error("invalid setting amqp: namespace {0:?} must be 1-100 letters, digits, '-', '_' or '.'")]
    Namespace(String),
    #[error("invalid setting amqp: prefetch must be at least 1")]
    Prefetch,
}

impl AmqpSettings {
    /// The RabbitMQ settings when a URL is given by flag or variable (`url`) or by the file;
    /// `None`: the embedded bus.
    pub fn resolve(
        url: Option<String>,
        file: Option<AmqpFile>,
    ) -> Result<Option<AmqpSettings>, AmqpConfigError> {
        let file = file.unwrap_or_default();
        let Some(url) = url.or(file.url).filter(|u| !u.trim().is_empty()) else {
            if file.namespace.is_some() || file.prefetch.is_some() {
                return Err(AmqpConfigError::NoUrl);
            }
            return Ok(None);
        };
        let parsed: lapin::uri::AMQPUri = url.parse().map_err(AmqpConfigError::NotAnAmqpUri)?;
        if parsed.scheme != lapin::uri::AMQPScheme::AMQP {
            return Err(AmqpConfigError::Tls);
        }
        let namespace = file.namespace.unwrap_or_else(|| "ctxhost".into());
        if namespace.is_empty()
            || namespace.len() > 100
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(AmqpConfigError::Namespace(namespace));
        }
        let prefetch = file.prefetch.unwrap_or(128);
        if prefetch == 0 {
            return Err(AmqpConfigError::Prefetch);
        }
        Ok(Some(AmqpSettings {
            url,
            namespace,
            prefetch,
        }))
    }
}
