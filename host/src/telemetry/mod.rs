//! Telemetry: a leaf every layer may use. `trace` holds distributed traces (OpenTelemetry
//! over OTLP, W3C trace context) and the log format.

pub(crate) mod trace;
