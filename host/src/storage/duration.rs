//! Durations as operators write them: `0s`, `90s`, `15m`, `36h`, `7d`, `1d12h`, `250ms`,
//! or `forever`.

use std::time::Duration;

/// A duration setting: a span, or `forever` (never removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Of(Duration),
    Forever,
}

impl Span {
    /// The span, or `None` for `forever`.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Span::Of(d) => Some(d),
            Span::Forever => None,
        }
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Span::Forever => f.write_str("forever"),
            Span::Of(d) => f.write_str(&format_duration(*d)),
        }
    }
}

/// The longest span accepted (a larger one is a typo, or means `forever`).
const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Read `text` as a sequence of `<integer><unit>` parts (`ms`, `s`, `m`, `h`, `d`), or
/// `forever`.
pub(crate) fn parse_span(text: &str) -> Result<Span, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("forever") {
        return Ok(Span::Forever);
    }
    if t.is_empty() {
        return Err("is empty (write e.g. 0s, 90s, 15m, 36h, 7d or forever)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration (write e.g. 0s, 90s, 15m, 36h, 7d or forever)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "{text:?} has a number without a unit (ms, s, m, h, d)"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?} has an unknown unit {other:?} (ms, s, m, h, d)"
                ));
            }
        };
        let part = n
            .checked_mul(millis_per)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{text:?} is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    if total > MAX {
        return Err(format!("{text:?} is more than 100 years; write forever"));
    }
    Ok(Span::Of(total))
}

/// A duration in the largest units that write it exactly (`7d`, `36h`, `90s`, `250ms`).
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = ms;
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_operators_write_them() {
        let d = |s: &str| parse_span(s).expect(s).duration().expect("finite");
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("15m"), Duration::from_secs(900));
        assert_eq!(d("1d12h"), Duration::from_secs(36 * 3600));
        assert_eq!(d(" 250ms "), Duration::from_millis(250));
        assert_eq!(parse_span("Forever"), Ok(Span::Forever));
        for bad in [
            "",
            "7",
            "d",
            "7w",
            "7 d",
            "-1s",
            "1.5h",
            "99999999999999999999d",
            "200000d",
        ] {
            assert!(parse_span(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn spans_print_back_as_they_parse() {
        for s in ["0s", "90ms", "1m30s", "7d", "1d12h", "forever"] {
            assert_eq!(parse_span(s).expect(s).to_string(), s);
        }
    }
}
