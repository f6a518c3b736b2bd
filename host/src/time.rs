//! Wall-clock timestamps in RFC 3339, as events and operators see them.

/// Now, as RFC 3339 UTC with millisecond precision.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// The instant an RFC 3339 timestamp names (`None` when it names none).
pub(crate) fn parse_rfc3339(text: &str) -> Option<std::time::SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(std::time::SystemTime::from)
}
