//! A tiny path matcher for `/cars/{id}`-style patterns (the same patterns a manifest declares).

use crate::http::Response;

/// The parameters captured by a matched pattern, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of parameter `name`, if the pattern has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parameter `name` as a positive integer id, or a 404 problem (a path with a non-numeric
    /// id names no resource).
    pub fn id(&self, name: &str) -> Result<u64, Response> {
        let raw = self.get(name).unwrap_or_default();
        parse_id(raw).ok_or_else(|| Response::not_found(&format!("no resource with id `{raw}`")))
    }
}

/// `raw` as an id: a decimal integer >= 1 without sign or padding tricks.
pub fn parse_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok().filter(|id| *id >= 1)
}

/// Match `path` (without query) against `pattern`; `{name}` segments capture one segment.
/// A single trailing slash on `path` is ignored.
pub fn route(pattern: &str, path: &str) -> Option<Params> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let mut pat = pattern.split('/');
    let mut segs = path.split('/');
    let mut params = Vec::new();
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return Some(Params(params)),
            (Some(p), Some(s)) => {
                if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    if s.is_empty() {
                        return None;
                    }
                    params.push((name.to_string(), percent_decode(s)));
                } else if p != s {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Decode `%XX` escapes; invalid escapes or non-UTF-8 results are kept as they are.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_and_params() {
        assert!(route("/cars", "/cars").is_some());
        assert!(route("/cars", "/cars/").is_some());
        assert!(route("/cars", "/car").is_none());
        assert!(route("/cars", "/cars/1").is_none());
        let p = route("/orders/{id}/cancel", "/orders/12/cancel").unwrap();
        assert_eq!(p.get("id"), Some("12"));
        assert_eq!(p.id("id").ok(), Some(12));
        assert!(route("/orders/{id}/cancel", "/orders/12").is_none());
        assert!(route("/cars/{id}", "/cars/").is_none());
        let p = route("/customers/{customerId}/orders", "/customers/a%20b/orders").unwrap();
        assert_eq!(p.get("customerId"), Some("a b"));
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("42"), Some(42));
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id("+1"), None);
        assert_eq!(parse_id("x"), None);
        assert_eq!(parse_id("99999999999999999999999"), None);
        assert_eq!(
            route("/cars/{id}", "/cars/abc")
                .unwrap()
                .id("id")
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
