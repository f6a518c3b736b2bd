//! Generic HTTP access to a host: [`Api`] sends requests with the admin token and reads
//! every answer in full into a [`Resp`], with strict checks of statuses and RFC 9457
//! problems; and small accessors of JSON answers ([`as_list`], [`id`], [`text`]).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::ADMIN_TOKEN;

/// Upper bound for one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer, read in full.
#[derive(Clone, Debug)]
pub struct Resp {
    /// The request, for messages (`GET /cars`).
    pub request: String,
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body as text.
    pub body: String,
    /// The `x-context-version` header: which context version answered.
    pub context_version: Option<String>,
    /// The `Link` header, if any (the next page of a list).
    pub link: Option<String>,
    /// The `WWW-Authenticate` header, if any (a 401's challenge).
    pub www_authenticate: Option<String>,
}

impl Resp {
    /// The target of the `Link` header's `rel="next"` (path and query), if there is one;
    /// panics when a `Link` header is there but not of that form.
    pub fn next_page(&self) -> Option<String> {
        let link = self.link.as_deref()?;
        let (target, params) = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("{}: `Link: {link}` is not `<target>; ...`", self.request));
        assert!(
            params.split(';').any(|p| p.trim() == "rel=\"next\""),
            "{}: `Link: {link}` is not rel=\"next\"",
            self.request
        );
        Some(target.to_owned())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.request, self.body))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: unexpected status; body: {}",
            self.request, self.body
        );
        self.json()
    }

    /// Asserts an RFC 9457 problem with this status (content type `application/problem+json`,
    /// `type`, `title`, `status` and `detail` members) and returns it.
    pub fn expect_problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: unexpected status; body: {}",
            self.request, self.body
        );
        let ct = self.content_type.as_deref().unwrap_or("");
        assert!(
            ct.starts_with("application/problem+json"),
            "{}: content type `{ct}` is not application/problem+json; body: {}",
            self.request,
            self.body
        );
        let problem = self.json();
        assert_eq!(
            problem["status"],
            json!(status),
            "{}: problem.status: {problem}",
            self.request
        );
        assert!(
            problem["title"].is_string(),
            "{}: problem.title missing: {problem}",
            self.request
        );
        assert!(
            problem["type"].is_string(),
            "{}: problem.type missing: {problem}",
            self.request
        );
        assert!(
            problem["detail"].is_string(),
            "{}: problem.detail missing: {problem}",
            self.request
        );
        problem
    }

    /// Asserts a problem whose `detail` names `field`.
    pub fn expect_problem_naming(&self, status: u16, field: &str) -> Value {
        let problem = self.expect_problem(status);
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(field),
            "{}: problem detail does not name `{field}`: {problem}",
            self.request
        );
        problem
    }
}

/// HTTP access to one host process; cheap to clone and move into tasks.
#[derive(Clone, Debug)]
pub struct Api {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for the host at `addr`, sending the admin token with every request.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self::with_authorization(addr, Some(&format!("Bearer {ADMIN_TOKEN}")))
    }

    /// A client for the same host sending `Authorization: Bearer <token>` with every request.
    pub fn with_bearer(&self, token: &str) -> Api {
        Self::with_authorization(self.addr, Some(&format!("Bearer {token}")))
    }

    /// A client for the same host sending this exact `Authorization` header.
    pub fn with_authorization_header(&self, value: &str) -> Api {
        Self::with_authorization(self.addr, Some(value))
    }

    /// A client for the same host sending no `Authorization` header.
    pub fn anonymous(&self) -> Api {
        Self::with_authorization(self.addr, None)
    }

    fn with_authorization(addr: SocketAddr, authorization: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(auth) = authorization {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                reqwest::header::HeaderValue::from_str(auth).expect("a valid header value"),
            );
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build the HTTP client");
        Self {
            addr,
            base: format!("http://{addr}"),
            client,
        }
    }

    /// The address of the host.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `Err` only for transport failures (connection refused, reset, ...).
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Resp, reqwest::Error> {
        let request = format!("{method} {path}");
        let mut builder = self.client.request(method, self.url(path));
        if let Some((bytes, content_type)) = body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = builder.send().await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let context_version = header(reqwest::header::HeaderName::from_static(
            "x-context-version",
        ));
        let link = header(reqwest::header::LINK);
        let www_authenticate = header(reqwest::header::WWW_AUTHENTICATE);
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(Resp {
            request,
            status,
            content_type,
            retry_after,
            body,
            context_version,
            link,
            www_authenticate,
        })
    }

    /// Sends a request; panics on transport failures.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Resp {
        let what = format!("{method} {path}");
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, body.to_string().into_bytes(), "application/json")
            .await
    }

    /// `POST path` with any body.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> Resp {
        self.send(reqwest::Method::POST, path, Some((body, content_type)))
            .await
    }

    /// `POST path` with a JSON body; `Err` on transport failures.
    pub async fn try_post_json(&self, path: &str, body: &Value) -> Result<Resp, reqwest::Error> {
        self.try_send(
            reqwest::Method::POST,
            path,
            Some((body.to_string().into_bytes(), "application/json")),
        )
        .await
    }

    /// `GET path`, asserting 200, as JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        self.get(path).await.expect(200)
    }

    /// `GET path`, asserting 200, as a list (a JSON array, or an object with an `items` array):
    /// one page of a paged list.
    pub async fn get_list(&self, path: &str) -> Vec<Value> {
        let value = self.get_ok(path).await;
        as_list(&value).unwrap_or_else(|| panic!("GET {path}: not a list: {value}"))
    }

    /// Every item of the paged list at `path`: its first page and each next page its
    /// `Link: <...>; rel="next"` names, asserting 200 for each (a 404 on the first page is
    /// an empty list when `missing_is_empty`).
    pub async fn get_all_pages(&self, path: &str, missing_is_empty: bool) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(page) = next {
            pages += 1;
            assert!(pages <= 10_000, "GET {path}: more than 10,000 pages");
            let resp = self.get(&page).await;
            if missing_is_empty && pages == 1 && resp.status == 404 {
                return items;
            }
            let value = resp.expect(200);
            items.extend(
                as_list(&value).unwrap_or_else(|| panic!("GET {page}: not a list: {value}")),
            );
            next = resp.next_page();
        }
        items
    }
}

/// A list answer: a JSON array, or an object whose `items` member is one.
pub fn as_list(value: &Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) => Some(items.clone()),
        Value::Object(map) => map.get("items").and_then(Value::as_array).cloned(),
        _ => None,
    }
}

/// The non-negative integer member `field` of `value`; panics when absent or not one.
pub fn id(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not a non-negative integer in {value}"))
}

/// The string member `field` of `value` (empty when absent).
pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("")
}
