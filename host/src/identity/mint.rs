//! Development tokens: `ctxhost token` signs an HS256 token with the configured shared
//! secret, so the curl story and local tests need no identity provider. Production tokens
//! come from the operator's identity provider; this host never issues tokens on a request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::AuthSettings;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "no shared secret is configured: set CTXHOST_AUTH_HS256_SECRET (or _FILE, or [auth] hs256_secret_file) to the host's secret"
    )]
    NoSecret,
    #[error("invalid subject: it must not be empty")]
    EmptySubject,
    #[error("invalid lifetime: {0} s is over the limit of one day (86400 s)")]
    TooLong(u64),
}

/// Longest lifetime of a development token.
const MAX_TTL: Duration = Duration::from_secs(86_400);

/// An HS256 token for `subject` with `roles` (placed where `roles_claim` says: a dotted path
/// nests them, `scope` makes them one space-separated string), valid for `ttl`, with the
/// first configured issuer and audience.
pub fn mint(
    settings: &AuthSettings,
    subject: &str,
    roles: &[String],
    ttl: Duration,
) -> Result<String, MintError> {
    let secret = settings.hs_secret.as_ref().ok_or(MintError::NoSecret)?;
    if subject.is_empty() {
        return Err(MintError::EmptySubject);
    }
    if ttl > MAX_TTL {
        return Err(MintError::TooLong(ttl.as_secs()));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(subject));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl.as_secs()));
    if let Some(iss) = settings.issuers.first() {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = settings.audiences.first() {
        claims.insert("aud".into(), json!(aud));
    }
    let roles_value = if settings.roles_claim == "scope" {
        json!(roles.join(" "))
    } else {
        json!(roles)
    };
    place(&mut claims, &settings.roles_claim, roles_value);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
}

/// Put `value` at the dotted `path` of `claims`, making the objects on the way.
fn place(claims: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut here = claims;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            here.insert(part.to_string(), value);
            return;
        }
        let next = here
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        match next.as_object_mut() {
            Some(obj) => here = obj,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Authenticator, HsSecret};

    fn settings(roles_claim: &str) -> AuthSettings {
        AuthSettings {
            hs_secret: Some(HsSecret::from(
                b"a-development-secret-of-32-bytes!!".to_vec(),
            )),
            roles_claim: roles_claim.into(),
            issuers: vec!["dev".into()],
            audiences: vec!["api".into()],
            ..AuthSettings::default()
        }
    }

    #[test]
    fn minted_tokens_verify_with_their_roles() {
        for claim in ["roles", "realm_access.roles", "scope"] {
            let s = settings(claim);
            let auth = Authenticator::new(&s).expect("valid").expect("on");
            let roles = vec!["admin".to_string(), "user".to_string()];
            let token = mint(&s, "alice", &roles, Duration::from_secs(60)).expect("minted");
            let p = auth.verify(&token).expect("verifies");
            assert_eq!(p.subject, "alice");
            assert_eq!(p.roles, roles, "{claim}");
        }
    }

    #[test]
    fn minting_needs_a_secret_a_subject_and_a_short_life() {
        let off = AuthSettings::default();
        assert!(matches!(
            mint(&off, "a", &[], Duration::from_secs(1)),
            Err(MintError::NoSecret)
        ));
        let s = settings("roles");
        assert!(matches!(
            mint(&s, "", &[], Duration::from_secs(1)),
            Err(MintError::EmptySubject)
        ));
        assert!(matches!(
            mint(&s, "a", &[], Duration::from_secs(90_000)),
            Err(MintError::TooLong(_))
        ));
    }
}
