//! Why a bearer token is refused.

/// Why a bearer token is refused. Its `Display` is fit for a client, in
/// `WWW-Authenticate: Bearer error="invalid_token", error_description="..."`: it never
/// repeats the token or any part of it, and has no quote or backslash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, too long, or a header this host does not support.
    #[error("the token is malformed")]
    Malformed,
    /// `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token has no `exp`: a token valid forever is refused.
    #[error("the token has no expiry time")]
    MissingExpiry,
    /// The signature does not verify with the key the token names.
    #[error("the token signature is invalid")]
    BadSignature,
    /// No configured key has the token's `kid`.
    #[error("the token names an unknown key")]
    UnknownKey,
    /// The token names no `kid` and several keys could verify it.
    #[error("the token names no key and several could verify it")]
    AmbiguousKey,
    /// `alg` is `none`, not accepted, or not one of the chosen key's.
    #[error("the token algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// `iss` is missing or not an accepted issuer.
    #[error("the token issuer is not accepted")]
    WrongIssuer,
    /// `aud` names no accepted audience (or is present while none is configured).
    #[error("the token audience is not accepted")]
    WrongAudience,
    /// `sub` is missing, empty or not a string.
    #[error("the token has no subject")]
    MissingSubject,
}

#[cfg(test)]
mod tests {
    use super::TokenError::*;

    #[test]
    fn descriptions_are_safe_in_a_header() {
        for e in [
            Malformed,
            Expired,
            NotYetValid,
            MissingExpiry,
            BadSignature,
            UnknownKey,
            AmbiguousKey,
            AlgorithmNotAllowed,
            WrongIssuer,
            WrongAudience,
            MissingSubject,
        ] {
            let text = e.to_string();
            assert!(
                text.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_'),
                "{text}"
            );
        }
    }
}
