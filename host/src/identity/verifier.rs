//! Verifying bearer tokens: the [`Authenticator`] built from [`AuthSettings`].
//!
//! Algorithm policy. The token's header never chooses the key: HS256/384/512 are accepted
//! only with the configured shared secret (each only when the secret is at least as long
//! as its hash), and RS*/PS*/ES256/ES384/EdDSA only with a JWKS key of the matching type
//! (and `alg`, when the JWK names one). A token whose `kid` names a JWKS key is verified with
//! that key alone, so an HS256 token made with a public key's bytes as its secret is
//! refused; `alg: none`, unknown algorithms and the ones left out by `auth.algorithms` are
//! refused before any key is looked at. Keys embedded in or linked from the header (`jwk`,
//! `jku`, `x5u`, `x5c`) are ignored, and a header with `crit` extensions is refused.
//!
//! Key choice. With a `kid`, the JWKS key of that `kid`; without, the one JWKS key fitting
//! the algorithm, if there is exactly one (else the token is refused as ambiguous). An HS
//! token uses the shared secret unless its `kid` names a JWKS key.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::cache::{self, Verified};
use super::claims::ClaimRules;
use super::jwks::{KeySet, Lookup};
use super::jwks_file::{JwksFile, RECHECK, RECHECK_ON_MISS};
use super::settings::{AuthConfigError, AuthSettings, MIN_SECRET_BYTES};
use super::{Principal, TokenError, crypto};

/// Longest token accepted, in bytes: a bound on the work one request can ask for.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Every algorithm this host verifies.
pub(super) const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Verifies bearer tokens into principals. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The shared secret's key, with the HS algorithms it is long enough for.
    secret: Option<DecodingKey>,
    jwks: Option<JwksFile>,
    /// The algorithms accepted at all.
    accepted: Vec<Algorithm>,
    /// One validation per accepted algorithm: signature and algorithm only (the claims are
    /// checked by [`ClaimRules`]).
    validations: Vec<(Algorithm, Validation)>,
    rules: ClaimRules,
    admin_role: Option<String>,
    description: String,
    /// Tokens verified recently.
    verified: Verified,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Authenticator")
            .field(&self.inner.description)
            .finish()
    }
}

impl Authenticator {
    /// The authenticator of `settings`; `None` when no key source is configured
    /// (authentication is off). A JWKS file that cannot be read or holds no usable key, or
    /// an algorithm setting no key can serve, is an error.
    pub fn new(settings: &AuthSettings) -> Result<Option<Authenticator>, AuthConfigError> {
        Self::with_recheck(settings, RECHECK, RECHECK_ON_MISS)
    }

    /// [`Authenticator::new`] with the periods of the JWKS file's checks.
    pub(super) fn with_recheck(
        settings: &AuthSettings,
        recheck: Duration,
        recheck_on_miss: Duration,
    ) -> Result<Option<Authenticator>, AuthConfigError> {
        if !settings.enabled() {
            return Ok(None);
        }
        crypto::install();
        let algorithms_key = "auth.algorithms (CTXHOST_AUTH_ALGORITHMS)";
        let chosen = |alg: &Algorithm| settings.algorithms.as_ref().is_none_or(|a| a.contains(alg));
        // HS algorithms the secret is long enough for (RFC 7518 section 3.2).
        let hs: Vec<Algorithm> = match &settings.hs_secret {
            None => Vec::new(),
            Some(s) => [
                (Algorithm::HS256, MIN_SECRET_BYTES),
                (Algorithm::HS384, 48),
                (Algorithm::HS512, 64),
            ]
            .into_iter()
            .filter(|(_, min)| s.len() >= *min)
            .map(|(alg, _)| alg)
            .collect(),
        };
        let asymmetric: &[Algorithm] = match settings.jwks_file {
            Some(_) => &ASYMMETRIC,
            None => &[],
        };
        if let Some(wanted) = &settings.algorithms
            && let Some(alg) = wanted
                .iter()
                .find(|a| !hs.contains(a) && !asymmetric.contains(a))
        {
            let why = match alg.family() {
                AlgorithmFamily::Hmac if settings.hs_secret.is_some() => {
                    "the shared secret is too short for it (HS384 needs 48 bytes, HS512 64)"
                }
                AlgorithmFamily::Hmac => "it needs a shared secret (auth.hs256_secret)",
                _ => "it needs a JWKS file (auth.jwks_file)",
            };
            return Err(AuthConfigError::Setting {
                key: algorithms_key.into(),
                reason: format!("{alg:?} cannot be accepted: {why}"),
            });
        }
        let hs: Vec<Algorithm> = hs.into_iter().filter(chosen).collect();
        let asymmetric: Vec<Algorithm> = asymmetric.iter().copied().filter(chosen).collect();
        // A key source no accepted algorithm uses is a mistake, not a spare.
        for (unused, source) in [
            (
                settings.hs_secret.is_some() && hs.is_empty(),
                "the shared secret (auth.hs256_secret)",
            ),
            (
                settings.jwks_file.is_some() && asymmetric.is_empty(),
                "the JWKS file (auth.jwks_file)",
            ),
        ] {
            if unused {
                return Err(AuthConfigError::Setting {
                    key: algorithms_key.into(),
                    reason: format!("accepts no algorithm of {source}, which is configured"),
                });
            }
        }
        let secret = match &settings.hs_secret {
            Some(s) if !hs.is_empty() => Some(DecodingKey::from_secret(s.expose())),
            _ => None,
        };
        let jwks = match &settings.jwks_file {
            Some(path) if !asymmetric.is_empty() => Some(
                JwksFile::open(path, &asymmetric, recheck, recheck_on_miss).map_err(|e| {
                    AuthConfigError::Jwks {
                        key: "auth.jwks_file (CTXHOST_AUTH_JWKS_FILE)".into(),
                        path: path.display().to_string(),
                        source: e,
                    }
                })?,
            ),
            _ => None,
        };
        let accepted: Vec<Algorithm> = hs.iter().chain(&asymmetric).copied().collect();
        let validations = accepted
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.required_spec_claims.clear();
                v.validate_exp = false;
                v.validate_nbf = false;
                v.validate_aud = false;
                v.leeway = 0;
                (*alg, v)
            })
            .collect();
        let mut inner = Inner {
            secret,
            jwks,
            accepted,
            validations,
            rules: ClaimRules {
                issuers: settings.issuers.clone(),
                audiences: settings.audiences.clone(),
                leeway: settings.leeway.as_secs_f64(),
                roles_claim: settings.roles_claim.clone(),
            },
            admin_role: settings.admin_role.clone(),
            description: String::new(),
            verified: Verified::default(),
        };
        inner.description = inner.describe();
        Ok(Some(Authenticator {
            inner: Arc::new(inner),
        }))
    }

    /// Verify `token` (the bearer token, without `Bearer `) and name its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let inner = &*self.inner;
        let (alg, kid) = read_header(token)?;
        if !inner.accepted.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let keys = inner.jwks.as_ref().map(JwksFile::keys);
        let claims = match alg.family() {
            AlgorithmFamily::Hmac => {
                // A kid naming a public key: the token claims HS with that key's bytes.
                if let (Some(kid), Some(keys)) = (&kid, &keys)
                    && keys.has_kid(kid)
                {
                    return Err(TokenError::AlgorithmNotAllowed);
                }
                let key = inner
                    .secret
                    .as_ref()
                    .ok_or(TokenError::AlgorithmNotAllowed)?;
                inner.decode(token, alg, key)?
            }
            _ => {
                let (Some(file), Some(keys)) = (&inner.jwks, keys) else {
                    return Err(TokenError::AlgorithmNotAllowed);
                };
                inner.decode_with_jwks(token, alg, kid.as_deref(), file, keys)?
            }
        };
        inner.rules.principal(claims, now())
    }

    /// [`Authenticator::verify`] for the gateway: a token verified before (and still valid
    /// under the same keys) is answered from a bounded cache, so a client sending the same
    /// token with every request pays for its signature once.
    pub fn verify_cached(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let inner = &*self.inner;
        let key = cache::key_of(token);
        let keys = inner.jwks.as_ref().map(JwksFile::keys);
        let now = now();
        if let Some(p) = inner.verified.get(&key, now, &keys) {
            return Ok(p);
        }
        let principal = Arc::new(self.verify(token)?);
        // `exp` is required and was checked as a number.
        let exp = serde_json::from_str::<Value>(&principal.claims)
            .ok()
            .and_then(|c| c.get("exp").and_then(Value::as_f64));
        if let Some(exp) = exp {
            let valid_until = exp + inner.rules.leeway;
            inner
                .verified
                .put(key, principal.clone(), valid_until, keys, now);
        }
        Ok(principal)
    }

    /// The role that lets a JWT use the admin API (`None`: JWTs are not accepted there).
    pub fn admin_role(&self) -> Option<&str> {
        self.inner.admin_role.as_deref()
    }

    /// One line for the start log: algorithms, key sources, issuer, audience, roles claim,
    /// leeway and admin role; never key material.
    pub fn describe(&self) -> &str {
        &self.inner.description
    }
}

impl Inner {
    /// Verify with the JWKS key the token's `kid` and `alg` choose; an unknown `kid` makes
    /// the file be looked at again (a key rotated in a moment ago).
    fn decode_with_jwks(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        file: &JwksFile,
        keys: Arc<KeySet>,
    ) -> Result<Map<String, Value>, TokenError> {
        if let Some(done) = self.try_keys(token, alg, kid, &keys) {
            return done;
        }
        file.keys_after_miss(&keys)
            .and_then(|newer| self.try_keys(token, alg, kid, &newer))
            .unwrap_or(Err(TokenError::UnknownKey))
    }

    /// The outcome with `keys`, or `None` when they have no key of the token's `kid`.
    fn try_keys(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        keys: &KeySet,
    ) -> Option<Result<Map<String, Value>, TokenError>> {
        Some(match keys.lookup(kid, alg) {
            Lookup::Found(key) => self.decode(token, alg, &key.decoding),
            Lookup::Unknown if kid.is_some() => return None,
            Lookup::Unknown => Err(TokenError::UnknownKey),
            Lookup::WrongAlgorithm => Err(TokenError::AlgorithmNotAllowed),
            Lookup::Ambiguous => Err(TokenError::AmbiguousKey),
        })
    }

    /// Check the signature of `token` with `key` and read its claims.
    fn decode(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<Map<String, Value>, TokenError> {
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(TokenError::AlgorithmNotAllowed)?;
        jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::InvalidKeyFormat => TokenError::AlgorithmNotAllowed,
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::BadSignature,
            })
    }

    fn describe(&self) -> String {
        let algs: Vec<String> = self.accepted.iter().map(|a| format!("{a:?}")).collect();
        let mut keys = Vec::new();
        if self.secret.is_some() {
            keys.push("shared secret".to_string());
        }
        if let Some(f) = &self.jwks {
            keys.push(format!(
                "JWKS file {} ({} keys, re-read on change)",
                f.path().display(),
                f.keys().len()
            ));
        }
        let list = |v: &[String], none: &str| {
            if v.is_empty() {
                none.to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "JWT authentication on: algorithms {}; keys: {}; issuer: {}; audience: {}; \
             roles claim {}; leeway {} s; admin role: {}",
            algs.join(", "),
            keys.join(" and "),
            list(&self.rules.issuers, "any (not checked)"),
            list(&self.rules.audiences, "none (tokens with aud are refused)"),
            self.rules.roles_claim,
            self.rules.leeway,
            self.admin_role
                .as_deref()
                .unwrap_or("none (the admin API takes its token only)"),
        )
    }
}

/// The header's algorithm and `kid`, read before any key is chosen: `alg: none` (in any
/// case) and unknown algorithms are refused here, `crit` extensions too.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(TokenError::Malformed);
    };
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg
            .parse::<Algorithm>()
            .map_err(|_| TokenError::AlgorithmNotAllowed)?,
        _ => return Err(TokenError::AlgorithmNotAllowed),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok((alg, kid))
}

/// Now, in seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
