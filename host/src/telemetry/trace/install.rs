//! Installing the process's `tracing` subscriber: the log (text or JSON lines on stderr,
//! filtered by `CTXHOST_LOG`) and, when an endpoint is configured, the OpenTelemetry layer
//! exporting the host's spans over OTLP.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use super::config::{LogFormat, ParentlessRule, Protocol, Sampling, TraceSettings};
use super::json::JsonLines;
use super::spans::{TARGET, turn_on};

/// Why tracing could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TraceInitError {
    #[error("cannot create the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// The installed tracing; dropping it flushes the spans not yet exported.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("ctxhost: could not flush the last spans: {e}");
        }
    }
}

/// Install the log and, when `settings` name an exporter, trace export. Call once, inside
/// the async runtime (the gRPC exporter needs it).
pub fn install(settings: &TraceSettings) -> Result<Tracing, TraceInitError> {
    let env_filter =
        || EnvFilter::try_from_env("CTXHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match &settings.exporter {
        None => None,
        Some(exporter) => {
            let built = match exporter.protocol {
                Protocol::HttpProtobuf => SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(exporter.endpoint.clone())
                    .build(),
                Protocol::Grpc => SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(exporter.endpoint.clone())
                    .build(),
            }
            .map_err(|source| TraceInitError::Exporter {
                endpoint: exporter.endpoint.clone(),
                source,
            })?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(built)
                    .with_sampler(sampler(settings.sampling))
                    .with_resource(
                        Resource::builder()
                            .with_service_name(settings.service_name.clone())
                            .build(),
                    )
                    .build(),
            )
        }
    };
    // JSON lines show span ids: spans are made for them even without an exporter, by a
    // provider that exports nothing.
    let json = settings.log_format == LogFormat::Json;
    let tracer_provider = match (&provider, json) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(
            SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOff)
                .build(),
        ),
        (None, false) => None,
    };
    // Only the host's own spans go to OpenTelemetry; events stay in the log.
    // With a parent-based sampler nothing under an unsampled span can be sampled: such
    // traces are pruned at their root.
    let prune = provider.is_some() && matches!(settings.sampling, Sampling::ParentBased(_));
    let otel = tracer_provider.map(|p| {
        turn_on(prune);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ctxhost"))
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_filter(filter_fn(ours))
    });
    let log: Box<dyn Layer<Registry> + Send + Sync> = if json {
        // The JSON lines need the spans of the trace to find the current one.
        Box::new(JsonLines::new().with_filter(filter_fn(ours).or(env_filter())))
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal: a log file or collector gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(env_filter().and(filter_fn(|m| !ours(m)))),
        )
    };
    tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init()
        .map_err(TraceInitError::AlreadyInstalled)?;
    Ok(Tracing { provider })
}

/// Whether `meta` is one of the host's spans (made in `spans`).
fn ours(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == TARGET
}

/// The SDK's sampler for `sampling`.
fn sampler(sampling: Sampling) -> Sampler {
    let parentless = |rule| match rule {
        ParentlessRule::Always(true) => Sampler::AlwaysOn,
        ParentlessRule::Always(false) => Sampler::AlwaysOff,
        ParentlessRule::Ratio(r) => Sampler::TraceIdRatioBased(r),
    };
    match sampling {
        Sampling::Always(true) => Sampler::AlwaysOn,
        Sampling::Always(false) => Sampler::AlwaysOff,
        Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentBased(rule) => Sampler::ParentBased(Box::new(parentless(rule))),
    }
}
