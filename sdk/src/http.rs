//! Plain-Rust HTTP request and response types, and [`serve`]: the one place that speaks
//! wasi:http (read the whole incoming body, write the whole response).

use serde::Serialize;

use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Requests with a larger body are answered 413 without calling the handler.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What a handler returns: `Err` carries an error response (so `?` works on
/// `Result<_, Response>` and on [`crate::Error`], which becomes a 500).
pub type ApiResult = Result<Response, Response>;

/// An incoming request, fully read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ... (upper case).
    pub method: String,
    /// The path without the query, e.g. `/cars/1`.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// Header names (lower case, as wasi:http gives them) and raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with the given method and path-with-query and no headers or body (for tests).
    pub fn new(method: &str, path_with_query: &str) -> Self {
        let (path, query) = split_path(path_with_query);
        Request {
            method: method.to_ascii_uppercase(),
            path,
            query,
            ..Request::default()
        }
    }

    /// The first value of header `name` (case-insensitive), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (crate::router::percent_decode(k) == name)
                .then(|| crate::router::percent_decode(&v.replace('+', " ")))
        })
    }
}

fn split_path(path_with_query: &str) -> (String, Option<String>) {
    match path_with_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_with_query.to_string(), None),
    }
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no headers and no body.
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `value` as `application/json` (a 500 problem if it cannot be serialised).
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            },
            Err(e) => Response::problem(500, "Internal Server Error", &format!("json: {e}")),
        }
    }

    /// 201 with `value` as JSON and a `Location` header.
    pub fn created<T: Serialize + ?Sized>(location: &str, value: &T) -> Self {
        Response::json(201, value).with_header("location", location)
    }

    /// An RFC 9457 `application/problem+json` answer with `type` `about:blank`.
    pub fn problem(status: u16, title: &str, detail: &str) -> Self {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
        });
        Response {
            status,
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A problem whose title is the standard reason phrase of `status`.
    pub fn problem_status(status: u16, detail: &str) -> Self {
        Response::problem(status, reason_phrase(status), detail)
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: &str) -> Self {
        Response::problem_status(400, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: &str) -> Self {
        Response::problem_status(404, detail)
    }

    /// 405 Method Not Allowed, with an `Allow` header.
    pub fn method_not_allowed(method: &str, allow: &[&str]) -> Self {
        Response::problem_status(405, &format!("method {method} is not allowed here"))
            .with_header("allow", &allow.join(", "))
    }

    /// 401 Unauthorized, with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: &str) -> Self {
        Response::problem_status(401, detail).with_header("www-authenticate", "Bearer")
    }

    /// 403 Forbidden: the caller is known but may not do this.
    pub fn forbidden(detail: &str) -> Self {
        Response::problem_status(403, detail)
    }

    /// 409 Conflict.
    pub fn conflict(detail: &str) -> Self {
        Response::problem_status(409, detail)
    }

    /// 422 Unprocessable Content.
    pub fn unprocessable(detail: &str) -> Self {
        Response::problem_status(422, detail)
    }

    /// 503 Service Unavailable with `Retry-After: <seconds>`.
    pub fn unavailable(detail: &str, retry_after_secs: u32) -> Self {
        Response::problem_status(503, detail)
            .with_header("retry-after", &retry_after_secs.to_string())
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl From<Result<Response, Response>> for Response {
    fn from(r: Result<Response, Response>) -> Self {
        r.unwrap_or_else(|e| e)
    }
}

/// The standard reason phrase of the statuses contexts use.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Serve one wasi:http request with `handler`: read the request, call the handler, write its
/// answer. Call it from the component's `incoming-handler.handle`.
pub fn serve<F, R>(req: IncomingRequest, out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request) -> R,
    R: Into<Response>,
{
    let response = match read_request(&req) {
        Ok(request) => handler(request).into(),
        Err(problem) => problem,
    };
    drop(req);
    write_response(out, response);
}

fn read_request(req: &IncomingRequest) -> Result<Request, Response> {
    let method = match req.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(m) => m.to_ascii_uppercase(),
    };
    let (path, query) = split_path(&req.path_with_query().unwrap_or_else(|| "/".into()));
    let headers = req.headers().entries();
    let body = read_body(req)?;
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn read_body(req: &IncomingRequest) -> Result<Vec<u8>, Response> {
    let unreadable =
        |what: &str| Response::bad_request(&format!("cannot read the request body: {what}"));
    let body = req.consume().map_err(|()| unreadable("already consumed"))?;
    let mut data = Vec::new();
    {
        let stream = body.stream().map_err(|()| unreadable("no stream"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() > MAX_BODY {
                        return Err(Response::problem_status(
                            413,
                            &format!("the request body is larger than {MAX_BODY} bytes"),
                        ));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(unreadable(&e.to_debug_string()));
                }
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(data)
}

fn write_response(out: ResponseOutparam, response: Response) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        // A header the handler got wrong is dropped rather than failing the whole answer.
        let _ = headers.append(name, value.as_bytes());
    }
    let _ = headers.set(
        "content-length",
        &[response.body.len().to_string().into_bytes()],
    );
    let outgoing = OutgoingResponse::new(headers);
    if outgoing.set_status_code(response.status).is_err() {
        let _ = outgoing.set_status_code(500);
    }
    let Ok(body) = outgoing.body() else {
        ResponseOutparam::set(out, Ok(outgoing));
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(stream) = body.write() {
        for chunk in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing useful is left to do.
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parts() {
        let r = Request::new("get", "/cars/1?x=a%20b&y&z=1+2");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/cars/1");
        assert_eq!(r.query_param("x").as_deref(), Some("a b"));
        assert_eq!(r.query_param("y").as_deref(), Some(""));
        assert_eq!(r.query_param("z").as_deref(), Some("1 2"));
        assert_eq!(r.query_param("w"), None);
    }

    #[test]
    fn problems() {
        let r = Response::unavailable("payment is unavailable", 1);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Service Unavailable");
        assert_eq!(v["status"], 503);
        let c = Response::created("/cars/1", &serde_json::json!({"id": 1}));
        assert_eq!(c.status, 201);
        assert_eq!(c.header("location"), Some("/cars/1"));
    }
}
