//! The trace keys of the `[telemetry]` table and the standard OpenTelemetry variables,
//! composed into [`TraceSettings`]: variables win over the file; no endpoint means no
//! exporter.

use crate::telemetry::TelemetryFile;

/// Where traces go when only a base endpoint is given, for OTLP over HTTP.
const HTTP_TRACES_PATH: &str = "/v1/traces";
/// Service name when none is configured.
const DEFAULT_SERVICE: &str = "ctxhost";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Protobuf over HTTP (`http/protobuf`).
    HttpProtobuf,
    /// gRPC (`grpc`).
    Grpc,
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every trace, or none.
    Always(bool),
    /// This fraction of the traces, by trace id.
    Ratio(f64),
    /// What the caller's `traceparent` decided; for traces that start here, the inner rule.
    ParentBased(ParentlessRule),
}

/// How a parent-based sampler decides for traces that start in this host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentlessRule {
    /// Every trace, or none.
    Always(bool),
    /// This fraction of the traces, by trace id.
    Ratio(f64),
}

/// The format of the host's log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the trace and span ids of the current span.
    Json,
}

/// Where traces are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exporter {
    /// The URL the exporter sends to (for HTTP, with its `/v1/traces` path).
    pub endpoint: String,
    pub protocol: Protocol,
}

/// How the host traces and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// `None`: no endpoint is configured, traces are off.
    pub exporter: Option<Exporter>,
    pub service_name: String,
    pub sampling: Sampling,
    pub log_format: LogFormat,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            exporter: None,
            service_name: DEFAULT_SERVICE.into(),
            sampling: Sampling::ParentBased(ParentlessRule::Always(true)),
            log_format: LogFormat::Text,
        }
    }
}

/// A telemetry setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct TraceConfigError {
    /// The variable or the `telemetry.<key>` of the file.
    key: String,
    reason: String,
}

impl TraceSettings {
    /// The settings from the process's variables over `file`.
    pub(crate) fn resolve(file: &TelemetryFile) -> Result<Self, TraceConfigError> {
        Self::resolve_with(file, |name| std::env::var(name).ok())
    }

    /// The settings of the variables alone (for commands without a configuration file).
    pub fn from_env() -> Result<Self, TraceConfigError> {
        Self::resolve(&TelemetryFile::default())
    }

    /// The settings from the variables `var` looks up over `file`.
    fn resolve_with(
        file: &TelemetryFile,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TraceConfigError> {
        let pick = |name: &str, from_file: Option<String>| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (name.to_string(), v))
                .or_else(|| from_file.map(|v| (file_key(name), v)))
        };
        let protocol = match pick("OTEL_EXPORTER_OTLP_PROTOCOL", file.protocol.clone()) {
            None => Protocol::HttpProtobuf,
            Some((_, p)) if p == "http/protobuf" => Protocol::HttpProtobuf,
            Some((_, p)) if p == "grpc" => Protocol::Grpc,
            Some((key, p)) => {
                return Err(TraceConfigError {
                    key,
                    reason: format!(
                        "{p:?} is not a protocol of this build: use http/protobuf or grpc"
                    ),
                });
            }
        };
        let traces = pick(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            file.traces_endpoint.clone(),
        );
        let base = pick("OTEL_EXPORTER_OTLP_ENDPOINT", file.endpoint.clone());
        let endpoint = match (traces, base) {
            (Some((key, url)), _) => Some((key, url)),
            (None, Some((key, url))) => {
                let url = match protocol {
                    Protocol::HttpProtobuf => {
                        format!("{}{HTTP_TRACES_PATH}", url.trim_end_matches('/'))
                    }
                    Protocol::Grpc => url,
                };
                Some((key, url))
            }
            (None, None) => None,
        };
        let exporter = match endpoint {
            None => None,
            Some((key, url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(TraceConfigError {
                        key,
                        reason: format!("{url:?} is not an http:// or https:// URL"),
                    });
                }
                Some(Exporter {
                    endpoint: url,
                    protocol,
                })
            }
        };
        let service_name = pick("OTEL_SERVICE_NAME", file.service_name.clone())
            .map(|(_, v)| v)
            .unwrap_or_else(|| DEFAULT_SERVICE.into());
        let arg = match var("OTEL_TRACES_SAMPLER_ARG").filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(v.trim().parse::<f64>().map_err(|_| TraceConfigError {
                key: "OTEL_TRACES_SAMPLER_ARG".into(),
                reason: format!("{v:?} is not a number"),
            })?),
            None => file.sampler_arg,
        };
        let ratio = match arg {
            None => 1.0,
            Some(r) if (0.0..=1.0).contains(&r) => r,
            Some(r) => {
                return Err(TraceConfigError {
                    key: "OTEL_TRACES_SAMPLER_ARG (telemetry.sampler_arg)".into(),
                    reason: format!("{r} is not a ratio between 0 and 1"),
                });
            }
        };
        let sampling = match pick("OTEL_TRACES_SAMPLER", file.sampler.clone()) {
            None => Sampling::ParentBased(ParentlessRule::Always(true)),
            Some((key, name)) => match name.as_str() {
                "always_on" => Sampling::Always(true),
                "always_off" => Sampling::Always(false),
                "traceidratio" => Sampling::Ratio(ratio),
                "parentbased_always_on" => Sampling::ParentBased(ParentlessRule::Always(true)),
                "parentbased_always_off" => Sampling::ParentBased(ParentlessRule::Always(false)),
                "parentbased_traceidratio" => Sampling::ParentBased(ParentlessRule::Ratio(ratio)),
                other => {
                    return Err(TraceConfigError {
                        key,
                        reason: format!(
                            "{other:?} is not a sampler: use always_on, always_off, traceidratio \
                             or their parentbased_ forms"
                        ),
                    });
                }
            },
        };
        let log_format = match pick("CTXHOST_LOG_FORMAT", file.log_format.clone()) {
            None => LogFormat::Text,
            Some((_, f)) if f == "text" => LogFormat::Text,
            Some((_, f)) if f == "json" => LogFormat::Json,
            Some((key, f)) => {
                return Err(TraceConfigError {
                    key,
                    reason: format!("{f:?} is not a log format: use text or json"),
                });
            }
        };
        Ok(TraceSettings {
            exporter,
            service_name,
            sampling,
            log_format,
        })
    }
}

/// The `[telemetry]` key standing for a variable, for error messages.
fn file_key(var: &str) -> String {
    let key = match var {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => "endpoint",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => "traces_endpoint",
        "OTEL_EXPORTER_OTLP_PROTOCOL" => "protocol",
        "OTEL_SERVICE_NAME" => "service_name",
        "OTEL_TRACES_SAMPLER" => "sampler",
        "CTXHOST_LOG_FORMAT" => "log_format",
        other => other,
    };
    format!("telemetry.{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(file: &str, vars: &[(&str, &str)]) -> Result<TraceSettings, TraceConfigError> {
        let file: TelemetryFile = toml::from_str(file).expect("a [telemetry] table");
        TraceSettings::resolve_with(&file, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let s = resolve("", &[]).expect("defaults");
        assert_eq!(s, TraceSettings::default());
    }

    #[test]
    fn variables_win_over_the_file() {
        let s = resolve(
            "endpoint = \"http://file:4318\"\nservice_name = \"from-file\"\nsampler = \"always_off\"\n",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://var:4318/"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
        )
        .expect("resolves");
        let exporter = s.exporter.expect("an exporter");
        assert_eq!(exporter.endpoint, "http://var:4318/v1/traces");
        assert_eq!(exporter.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.service_name, "from-file");
        assert_eq!(
            s.sampling,
            Sampling::ParentBased(ParentlessRule::Ratio(0.25))
        );
    }

    #[test]
    fn the_traces_endpoint_is_used_as_is_and_grpc_takes_the_base() {
        let s = resolve(
            "traces_endpoint = \"http://h:4318/custom\"\nendpoint = \"http://h:4318\"\n",
            &[],
        )
        .expect("resolves");
        assert_eq!(s.exporter.expect("on").endpoint, "http://h:4318/custom");
        let s = resolve(
            "endpoint = \"http://h:4317\"\nprotocol = \"grpc\"\nlog_format = \"json\"\n",
            &[],
        )
        .expect("resolves");
        assert_eq!(
            s.exporter,
            Some(Exporter {
                endpoint: "http://h:4317".into(),
                protocol: Protocol::Grpc
            })
        );
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (file, vars, key) in [
            ("protocol = \"http/json\"", vec![], "telemetry.protocol"),
            (
                "",
                vec![("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            ("sampler_arg = 2.0", vec![], "sampler_arg"),
            (
                "",
                vec![("OTEL_TRACES_SAMPLER_ARG", "x")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            ("endpoint = \"h:4318\"", vec![], "telemetry.endpoint"),
            (
                "",
                vec![("CTXHOST_LOG_FORMAT", "xml")],
                "CTXHOST_LOG_FORMAT",
            ),
        ] {
            let e = resolve(file, &vars).expect_err(file).to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
