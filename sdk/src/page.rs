//! Paged lists: `GET /things?limit=100&after=42`.
//!
//! A list endpoint answers one page: at most `limit` items (default [`DEFAULT_LIMIT`], at
//! most [`MAX_LIMIT`]) whose ids are greater than `after` (default 0: from the first), in id
//! order, as a JSON array. When more follow, the answer carries a
//! `Link: </things?limit=100&after=142>; rel="next"` header (RFC 8288) naming the next page;
//! the last page has none. A `limit` or `after` that is not such a number is a 400 problem
//! naming the parameter.
//!
//! The rows must be stored under [`crate::store::id_key`] keys (`<table>/<id, 16 digits>`),
//! which sort like ids, so one page is one bounded scan (and a probe of one entry). A whole
//! list handler:
//!
//! ```text
//! fn list(req: &Request) -> ApiResult {
//!     page::list_json::<Car>(req, "car")
//! }
//! ```
//!
//! and, when each row needs more work, [`PageRequest::from_request`], [`scan_json`] and
//! [`Page::respond`] are the same steps one at a time.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::ctxhost::platform::store as raw;
use crate::store::id_key;
use crate::{ApiResult, Error, Request, Response};

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items one page may hold (a larger `limit` is a 400 problem).
pub const MAX_LIMIT: u32 = 1_000;

/// Which page a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Items on the page, 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Only items with a greater id (0: from the first).
    pub after: u64,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            after: 0,
        }
    }
}

impl PageRequest {
    /// The `limit` and `after` query parameters of `req`, with their defaults; a 400 problem
    /// naming the parameter when one is not a number in its range.
    pub fn from_request(req: &Request) -> Result<Self, Response> {
        Self::parse(
            req.query_param("limit").as_deref(),
            req.query_param("after").as_deref(),
        )
    }

    /// The page asked for by raw `limit` and `after` values (`None`: not given).
    pub fn parse(limit: Option<&str>, after: Option<&str>) -> Result<Self, Response> {
        let mut page = PageRequest::default();
        if let Some(raw) = limit {
            page.limit = digits(raw)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Response::bad_request(&format!(
                        "query parameter `limit` must be an integer from 1 to {MAX_LIMIT}, got {raw:?}"
                    ))
                })?;
        }
        if let Some(raw) = after {
            page.after = digits(raw).ok_or_else(|| {
                Response::bad_request(&format!(
                    "query parameter `after` must be an id (a non-negative integer), got {raw:?}"
                ))
            })?;
        }
        Ok(page)
    }
}

/// `raw` as a plain decimal number (no sign, no spaces).
fn digits(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// The id to continue after, when more items follow (`None` on the last page).
    pub next_after: Option<u64>,
    /// The page size asked for, repeated in the link to the next page.
    pub limit: u32,
}

impl<T> Page<T> {
    /// The same page position with other items (for example each index entry replaced by
    /// the row it points to).
    pub fn with_items<U>(self, items: Vec<U>) -> Page<U> {
        Page {
            items,
            next_after: self.next_after,
            limit: self.limit,
        }
    }

    /// The `Link` header value naming the next page of `req`, if there is one: `req`'s path
    /// and query with `limit` and `after` set.
    pub fn next_link(&self, req: &Request) -> Option<String> {
        let after = self.next_after?;
        let mut query: Vec<String> = req
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                !pair.is_empty() && name != "limit" && name != "after"
            })
            .map(str::to_string)
            .collect();
        query.push(format!("limit={}", self.limit));
        query.push(format!("after={after}"));
        Some(format!("<{}?{}>; rel=\"next\"", req.path, query.join("&")))
    }

    /// 200 with the items as a JSON array, and a `Link: <...>; rel="next"` header when more
    /// follow.
    pub fn respond(&self, req: &Request) -> Response
    where
        T: Serialize,
    {
        let response = Response::json(200, &self.items);
        match self.next_link(req) {
            Some(link) => response.with_header("link", &link),
            None => response,
        }
    }
}

/// The id of `key` if it is `<table>/<digits>`.
fn id_of(table: &str, key: &str) -> Option<u64> {
    key.strip_prefix(table)?.strip_prefix('/').and_then(digits)
}

/// The page `page` of the rows stored under `<table>/<id>` keys ([`id_key`]), values decoded
/// from JSON: one scan of `limit` entries and, when it is full, a scan of one more entry to
/// tell whether a next page exists, so a page costs the same wherever it is in the list and
/// never asks the host for more entries than the page holds (a host's scan limit of 1,000
/// entries serves a page of 1,000).
pub fn scan_json<T: DeserializeOwned>(table: &str, page: &PageRequest) -> Result<Page<T>, Error> {
    let limit = page.limit.clamp(1, MAX_LIMIT);
    let Some(first) = page.after.checked_add(1) else {
        return Ok(Page {
            items: Vec::new(),
            next_after: None,
            limit,
        });
    };
    // Just past every `<table>/...` key: '0' is the character after '/'.
    let end = format!("{table}0");
    let entries = raw::scan_range(&id_key(table, first), &end, Some(limit))?;
    let full = entries.len() >= limit as usize;
    let mut items = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        let id = id_of(table, &entry.key).ok_or_else(|| {
            Error::new(format!(
                "key {:?} is not `{table}/<id>`: it cannot be paged by id",
                entry.key
            ))
        })?;
        items.push(serde_json::from_slice(&entry.value)?);
        last = Some(id);
    }
    let more = match last.and_then(|id| id.checked_add(1)) {
        Some(next) if full => !raw::scan_range(&id_key(table, next), &end, Some(1))?.is_empty(),
        _ => false,
    };
    Ok(Page {
        items,
        next_after: if more { last } else { None },
        limit,
    })
}

/// Rows one filtered page reads at most ([`scan_json_where`]).
pub const FILTER_BUDGET: u32 = 1_000;

/// The page `page` of the rows under `<table>/<id>` keys that `keep` accepts: rows are read
/// in id order from `after`, at most [`FILTER_BUDGET`] of them, until `limit` are kept. A
/// page may therefore hold fewer than `limit` items while a next page follows (its link
/// continues after the last row read), and a caller who owns few rows of a large table pages
/// through it in bounded steps. For lists a caller reads often, an index table (as the
/// `view` context keeps) is cheaper.
pub fn scan_json_where<T: DeserializeOwned>(
    table: &str,
    page: &PageRequest,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<T>, Error> {
    let limit = page.limit.clamp(1, MAX_LIMIT);
    let mut items = Vec::new();
    let mut last = page.after;
    let mut read = 0u32;
    loop {
        let step = PageRequest {
            limit: limit.min(FILTER_BUDGET - read),
            after: last,
        };
        let rows = scan_json::<serde_json::Value>(table, &step)?;
        let mut stopped_early = false;
        let batch = rows.items.len();
        for (n, value) in rows.items.into_iter().enumerate() {
            read += 1;
            last = value
                .get("id")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| Error::new(format!("a row of {table} has no numeric `id`")))?;
            let item: T = serde_json::from_value(value)?;
            if keep(&item) {
                items.push(item);
            }
            if items.len() == limit as usize {
                stopped_early = n + 1 < batch;
                break;
            }
        }
        let exhausted = rows.next_after.is_none() && !stopped_early;
        if exhausted {
            return Ok(Page {
                items,
                next_after: None,
                limit,
            });
        }
        if items.len() == limit as usize || read >= FILTER_BUDGET {
            return Ok(Page {
                items,
                next_after: Some(last),
                limit,
            });
        }
    }
}

/// A whole list handler: the page `req` asks for of the rows under `<table>/<id>` keys, as
/// [`Page::respond`] answers it (400 for a bad `limit` or `after`).
pub fn list_json<T: DeserializeOwned + Serialize>(req: &Request, table: &str) -> ApiResult {
    let page = PageRequest::from_request(req)?;
    Ok(scan_json::<T>(table, &page)?.respond(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(r: Response) -> String {
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["detail"].as_str().unwrap().to_string()
    }

    #[test]
    fn limits_and_cursors_are_parsed_with_defaults_and_bounds() {
        assert_eq!(
            PageRequest::from_request(&Request::new("GET", "/cars")).unwrap(),
            PageRequest {
                limit: 100,
                after: 0
            }
        );
        assert_eq!(
            PageRequest::from_request(&Request::new("GET", "/cars?limit=1000&after=42")).unwrap(),
            PageRequest {
                limit: 1000,
                after: 42
            }
        );
        for bad in ["0", "1001", "-1", "ten", "", "1e3", "99999999999"] {
            let why = detail(PageRequest::parse(Some(bad), None).unwrap_err());
            assert!(why.contains("`limit`"), "{bad}: {why}");
        }
        for bad in ["-1", "x", "", "+3", "18446744073709551616"] {
            let why = detail(PageRequest::parse(None, Some(bad)).unwrap_err());
            assert!(why.contains("`after`"), "{bad}: {why}");
        }
    }

    #[test]
    fn the_next_link_keeps_the_path_and_other_parameters() {
        let page = Page {
            items: vec![1, 2],
            next_after: Some(2),
            limit: 2,
        };
        let req = Request::new("GET", "/customers/a%2Fb/orders?x=1&limit=2&after=0");
        assert_eq!(
            page.next_link(&req).as_deref(),
            Some("</customers/a%2Fb/orders?x=1&limit=2&after=2>; rel=\"next\"")
        );
        let response = page.respond(&req);
        assert_eq!(response.body, b"[1,2]");
        assert!(response.header("link").is_some());
        let last = page.with_items(vec!["a"]);
        let last = Page {
            next_after: None,
            ..last
        };
        assert_eq!(last.next_link(&req), None);
        assert_eq!(last.respond(&req).header("link"), None);
    }

    #[test]
    fn ids_come_from_id_keys_only() {
        assert_eq!(id_of("car", &id_key("car", 42)), Some(42));
        assert_eq!(id_of("car", "car/x"), None);
        assert_eq!(id_of("car", "cars/1"), None);
        assert_eq!(id_of("customer/a", &id_key("customer/a", 7)), Some(7));
    }
}
