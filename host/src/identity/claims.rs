//! The registered claims of a token whose signature verified, checked by the host itself
//! (strict types: an `exp` or `nbf` that is not a number is a malformed token, never an
//! absent one), and the principal they name.

use serde_json::{Map, Value};

use super::{Principal, TokenError};

/// What the claims must satisfy.
pub(super) struct ClaimRules {
    /// Accepted issuers (empty: any).
    pub(super) issuers: Vec<String>,
    /// Accepted audiences (empty: a token carrying `aud` is refused).
    pub(super) audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub(super) leeway: f64,
    /// Where the roles are.
    pub(super) roles_claim: String,
}

impl ClaimRules {
    /// Check `claims` at `now` (seconds since the Unix epoch) and name their principal.
    pub(super) fn principal(
        &self,
        claims: Map<String, Value>,
        now: f64,
    ) -> Result<Principal, TokenError> {
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(TokenError::Malformed),
        };
        let exp = time("exp")?.ok_or(TokenError::MissingExpiry)?;
        if now >= exp + self.leeway {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = time("nbf")?
            && now + self.leeway < nbf
        {
            return Err(TokenError::NotYetValid);
        }
        if !self.issuers.is_empty() {
            match claims.get("iss").and_then(Value::as_str) {
                Some(iss) if self.issuers.iter().any(|i| i == iss) => {}
                _ => return Err(TokenError::WrongIssuer),
            }
        }
        match claims.get("aud") {
            None if self.audiences.is_empty() => {}
            None => return Err(TokenError::WrongAudience),
            Some(aud) => {
                let accepted = |a: &str| self.audiences.iter().any(|x| x == a);
                let ok = match aud {
                    Value::String(a) => accepted(a),
                    Value::Array(list) => list.iter().filter_map(Value::as_str).any(accepted),
                    _ => false,
                };
                if !ok {
                    return Err(TokenError::WrongAudience);
                }
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::MissingSubject),
        };
        let roles = roles(&claims, &self.roles_claim);
        Ok(Principal {
            subject,
            roles,
            claims: Value::Object(claims).to_string(),
        })
    }
}

/// The roles at `path`: a top-level claim of that name (such as a namespaced
/// `https://example.com/roles`), else a dotted path into nested objects
/// (`realm_access.roles`). An array gives its strings, a string its space-separated words
/// (a `scope`); anything else, or nothing there, no role.
pub(super) fn roles(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let found = claims.get(path).or_else(|| {
        let mut parts = path.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.as_object()?.get(part))
    });
    match found {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuers: vec!["https://idp".into()],
            audiences: vec!["api".into(), "other".into()],
            leeway: 30.0,
            roles_claim: "roles".into(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    const NOW: f64 = 1_800_000_000.0;

    fn check(v: Value) -> Result<Principal, TokenError> {
        rules().principal(claims(v), NOW)
    }

    fn good() -> Value {
        json!({"sub": "alice", "iss": "https://idp", "aud": "api", "exp": NOW + 60.0, "roles": ["a", "b"]})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = good();
        v[key] = value;
        v
    }

    fn without(key: &str) -> Value {
        let mut v = good();
        v.as_object_mut().expect("object").remove(key);
        v
    }

    #[test]
    fn a_good_token_names_its_principal_with_every_claim() {
        let p = check(good()).expect("valid");
        assert_eq!(p.subject, "alice");
        assert_eq!(p.roles, ["a", "b"]);
        let back: Value = serde_json::from_str(&p.claims).expect("json");
        assert_eq!(back, good());
    }

    #[test]
    fn times_are_checked_with_the_leeway_and_strict_types() {
        assert_eq!(check(with("exp", json!(NOW - 10.0))).map(|_| ()), Ok(()));
        assert_eq!(
            check(with("exp", json!(NOW - 30.0))).err(),
            Some(TokenError::Expired)
        );
        assert_eq!(check(without("exp")).err(), Some(TokenError::MissingExpiry));
        assert_eq!(
            check(with("exp", json!("99999999999"))).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(check(with("nbf", json!(NOW + 20.0))).map(|_| ()), Ok(()));
        assert_eq!(
            check(with("nbf", json!(NOW + 31.0))).err(),
            Some(TokenError::NotYetValid)
        );
        // The type confusion of CVE-2026-25537: a string `nbf` is no absent `nbf`.
        assert_eq!(
            check(with("nbf", json!("99999999999"))).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(check(with("exp", json!(NOW + 0.5))).map(|_| ()), Ok(()));
    }

    #[test]
    fn issuer_audience_and_subject_are_required_as_configured() {
        assert_eq!(
            check(with("iss", json!("https://evil"))).err(),
            Some(TokenError::WrongIssuer)
        );
        assert_eq!(check(without("iss")).err(), Some(TokenError::WrongIssuer));
        assert_eq!(
            check(with("iss", json!(["https://idp"]))).err(),
            Some(TokenError::WrongIssuer)
        );
        assert_eq!(
            check(with("aud", json!("web"))).err(),
            Some(TokenError::WrongAudience)
        );
        assert_eq!(check(without("aud")).err(), Some(TokenError::WrongAudience));
        assert!(check(with("aud", json!(["web", "other"]))).is_ok());
        assert_eq!(
            check(with("aud", json!(["web", 1]))).err(),
            Some(TokenError::WrongAudience)
        );
        for sub in [json!(""), json!(7), json!(null)] {
            assert_eq!(
                check(with("sub", sub)).err(),
                Some(TokenError::MissingSubject)
            );
        }
        assert_eq!(
            check(without("sub")).err(),
            Some(TokenError::MissingSubject)
        );
        // Nothing configured: any issuer, and no audience may be claimed.
        let open = ClaimRules {
            issuers: vec![],
            audiences: vec![],
            ..rules()
        };
        assert!(open.principal(claims(without("aud")), NOW).is_ok());
        assert_eq!(
            open.principal(claims(good()), NOW).err(),
            Some(TokenError::WrongAudience)
        );
    }

    #[test]
    fn roles_come_from_an_array_a_nested_path_or_a_scope_string() {
        let c = claims(json!({
            "roles": ["admin", 3, "", "user"],
            "realm_access": {"roles": ["fleet"]},
            "resource_access": {"shop": {"roles": ["clerk"]}},
            "scope": "openid  orders:read orders:write",
            "https://example.com/roles": ["namespaced"],
            "deep": {"not_an_object": "x"},
        }));
        assert_eq!(roles(&c, "roles"), ["admin", "user"]);
        assert_eq!(roles(&c, "realm_access.roles"), ["fleet"]);
        assert_eq!(roles(&c, "resource_access.shop.roles"), ["clerk"]);
        assert_eq!(
            roles(&c, "scope"),
            ["openid", "orders:read", "orders:write"]
        );
        assert_eq!(roles(&c, "https://example.com/roles"), ["namespaced"]);
        assert!(roles(&c, "deep.not_an_object.roles").is_empty());
        assert!(roles(&c, "missing").is_empty());
        assert!(roles(&c, "realm_access").is_empty());
    }
}
