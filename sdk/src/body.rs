//! JSON request bodies: parse errors become 400 problems that name the offending field.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::http::{Request, Response};

/// A request body that is a JSON object, with typed field accessors.
#[derive(Debug, Clone)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// Parse `req`'s body as a JSON object, or a 400 problem.
    pub fn parse(req: &Request) -> Result<Self, Response> {
        Self::from_bytes(&req.body)
    }

    /// Parse `bytes` as a JSON object, or a 400 problem.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Response> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(Response::bad_request(
                "the request body must be a JSON object",
            )),
            Err(e) => Err(Response::bad_request(&format!(
                "the request body is not valid JSON: {e}"
            ))),
        }
    }

    /// The raw value of field `name`, if present (`null` counts as present).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Field `name` as an integer >= `min`.
    pub fn int(&self, name: &str, min: u64) -> Result<u64, Response> {
        self.0
            .get(name)
            .and_then(Value::as_u64)
            .filter(|v| *v >= min)
            .ok_or_else(|| field_error(name, &format!("an integer >= {min}")))
    }

    /// Field `name` as an integer in `min..=u32::MAX`.
    pub fn int_u32(&self, name: &str, min: u32) -> Result<u32, Response> {
        self.0
            .get(name)
            .and_then(Value::as_u64)
            .filter(|v| *v >= u64::from(min))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| field_error(name, &format!("an integer >= {min} and <= {}", u32::MAX)))
    }

    /// Field `name` as a string (possibly empty).
    pub fn string(&self, name: &str) -> Result<String, Response> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| field_error(name, "a string"))
    }

    /// Field `name` as a string that is not empty or only whitespace.
    pub fn nonempty_string(&self, name: &str) -> Result<String, Response> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| field_error(name, "a non-empty string"))
    }

    /// Field `name` as one of `choices`.
    pub fn one_of(&self, name: &str, choices: &[&str]) -> Result<String, Response> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| choices.contains(s))
            .map(str::to_string)
            .ok_or_else(|| {
                let list: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
                field_error(name, &format!("one of {}", list.join(", ")))
            })
    }
}

/// The 400 problem "field `name` must be `what`".
pub fn field_error(name: &str, what: &str) -> Response {
    Response::bad_request(&format!("field `{name}` must be {what}"))
}

/// Deserialize `req`'s JSON body into `T` with serde; errors are 400 problems with serde's
/// message (which names missing or mistyped fields).
pub fn parse_json<T: DeserializeOwned>(req: &Request) -> Result<T, Response> {
    serde_json::from_slice(&req.body)
        .map_err(|e| Response::bad_request(&format!("invalid request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(r: Response) -> String {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], 400);
        v["detail"].as_str().unwrap().to_string()
    }

    #[test]
    fn fields() {
        let o =
            JsonObject::from_bytes(br#"{"name":"a","stock":3,"neg":-1,"f":1.5,"e":" "}"#).unwrap();
        assert_eq!(o.int("stock", 0).unwrap(), 3);
        assert_eq!(
            detail(o.int("neg", 0).unwrap_err()),
            "field `neg` must be an integer >= 0"
        );
        assert!(o.int("f", 0).is_err());
        assert!(o.int("missing", 0).is_err());
        assert!(o.int("stock", 4).is_err());
        assert_eq!(o.nonempty_string("name").unwrap(), "a");
        assert_eq!(
            detail(o.nonempty_string("e").unwrap_err()),
            "field `e` must be a non-empty string"
        );
        assert!(o.string("stock").is_err());
        assert_eq!(o.int_u32("stock", 1).unwrap(), 3);
    }

    #[test]
    fn not_an_object() {
        assert!(JsonObject::from_bytes(b"[1]").is_err());
        assert!(JsonObject::from_bytes(b"{").is_err());
        assert!(JsonObject::from_bytes(b"").is_err());
    }
}
