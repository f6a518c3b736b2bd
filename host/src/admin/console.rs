//! `GET /console`: a page that shows the running system live, drawn from
//! `GET /admin/topology` about once a second (see docs/OBSERVABILITY.md).
//!
//! The page is static and open: its files are compiled into the binary (nothing is loaded
//! from elsewhere at run time) and it shows nothing until it is given the admin token, which
//! it sends to `/admin/topology`. Every file is served with a strict Content-Security-Policy
//! (only this origin's scripts, styles and connections; no inline code), and revalidated by
//! its ETag at each load, so a new host version is picked up at once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::gateway::problem::Problem;

/// Only this origin's files and connections; no inline scripts or styles, no plugins, no
/// framing. `data:` images are what the graph library may draw with.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        Asset {
            name,
            content_type,
            body,
            etag: OnceLock::new(),
        }
    }

    /// A strong ETag: the start of the body's SHA-256.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = hex::encode(Sha256::digest(self.body));
            let tag = format!("\"{}\"", digest.get(..32).unwrap_or(&digest));
            HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
    }
}

/// The page.
static INDEX: Asset = Asset::new(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("console/index.html"),
);

/// The files the page loads, under `/console/`.
static ASSETS: [Asset; 3] = [
    Asset::new(
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/console.js"),
    ),
    Asset::new(
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("console/console.css"),
    ),
    Asset::new(
        "cytoscape.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/cytoscape.min.js"),
    ),
];

/// `GET /console`: the page.
pub(super) async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /console/{file}`: a script or style sheet of the page.
pub(super) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            format!("the console has no file {file:?}"),
        )
        .into_response(),
    }
}

/// The asset, or 304 when the client's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().as_bytes() == etag.as_bytes())
        });
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = asset.body.into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        res
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag.clone());
    // Revalidate at every load: a new host version must not be shown with old scripts.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let page = std::str::from_utf8(INDEX.body).expect("utf-8");
        for asset in &ASSETS {
            if asset.name.ends_with(".js") {
                assert!(
                    page.contains(&format!("src=\"/console/{}\"", asset.name)),
                    "{} not loaded by the page",
                    asset.name
                );
            } else {
                assert!(page.contains(&format!("href=\"/console/{}\"", asset.name)));
            }
        }
        assert!(!page.contains("<script>"), "no inline script");
        assert!(!page.contains("style=\""), "no inline style");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[tokio::test]
    async fn assets_carry_their_type_the_policy_and_an_etag() {
        let res = page(HeaderMap::new()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii")
                .contains("default-src 'self'")
        );
        let etag = h[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(page(again).await.status(), StatusCode::NOT_MODIFIED);
        let js = asset(Path("console.js".into()), HeaderMap::new()).await;
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let missing = asset(Path("../mod.rs".into()), HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
