//! A JWKS document (RFC 7517) read into the public keys tokens may be verified with.
//!
//! Only signature keys the host can use are kept: RSA (RS256/384/512, PS256/384/512, of at
//! least 2048 bits), EC P-256 (ES256) and P-384 (ES384), and OKP Ed25519 (EdDSA). Keys for
//! encryption (`use: enc`), symmetric keys (`kty: oct`: the shared secret has its own
//! setting) and kinds this host does not know are skipped with a note; a document holding
//! private key material is refused, and so is one left without a usable key. Errors
//! describe the document, never its contents.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

/// Smallest RSA modulus accepted, in bits (ring verifies 2048 to 8192).
const MIN_RSA_BITS: usize = 2048;
/// Largest JWKS document read.
pub(super) const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// Why a JWKS document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("more than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not valid JSON ({0})")]
    Json(String),
    #[error("not a JWKS: the document must be an object with a \"keys\" array")]
    NotAJwks,
    #[error("key {0} holds private key material: mount the public keys only")]
    PrivateKey(String),
    #[error("key {key} is invalid: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("no key the host can verify with ({0})")]
    NoUsableKey(String),
}

/// A usable public key.
#[derive(Clone)]
pub(super) struct Key {
    /// Its `kid`, by which tokens choose it.
    pub(super) kid: Option<String>,
    /// The algorithms it verifies (one when the JWK names its `alg`).
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) decoding: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// What a token's `kid` and `alg` find in a key set.
pub(super) enum Lookup<'a> {
    /// The one key to verify with.
    Found(&'a Key),
    /// No key has that `kid` (or, without a `kid`, none fits the algorithm).
    Unknown,
    /// A key has that `kid` but is of another type or algorithm.
    WrongAlgorithm,
    /// Without a `kid`, several keys fit the algorithm.
    Ambiguous,
}

/// The usable keys of one JWKS document.
pub(super) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Read `bytes` as a JWKS, keeping the keys usable with one of `accepted`; `notes` gets a
    /// line per skipped key (its `kid` and why, never key material).
    pub(super) fn parse(
        bytes: &[u8],
        accepted: &[Algorithm],
        notes: &mut Vec<String>,
    ) -> Result<KeySet, JwksError> {
        if bytes.len() as u64 > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        // serde_json's messages may quote the input: keep only where it went wrong.
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
            JwksError::Json(format!(
                "{:?} error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NotAJwks);
        };
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let name = match entry.get("kid").and_then(Value::as_str) {
                Some(kid) => format!("{kid:?}"),
                None => format!("#{i} (no kid)"),
            };
            // `d` (RSA, EC, OKP), `p`/`q`/... (RSA) and `k` (oct) are private parts.
            if ["d", "p", "q", "dp", "dq", "qi", "k"]
                .iter()
                .any(|p| entry.get(p).is_some())
                && entry.get("kty").and_then(Value::as_str) != Some("oct")
            {
                return Err(JwksError::PrivateKey(name));
            }
            match usable(entry, accepted) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(Skip::Note(why)) => notes.push(format!("key {name} skipped: {why}")),
                Err(Skip::Invalid(reason)) => {
                    return Err(JwksError::InvalidKey { key: name, reason });
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(if notes.is_empty() {
                "the document has no keys".into()
            } else {
                notes.join("; ")
            }));
        }
        Ok(KeySet { keys })
    }

    /// How many keys the set holds.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key a token with `kid` and `alg` is verified with. With a `kid`, only the keys of
    /// that `kid`; without, the one key fitting `alg`, if there is exactly one.
    pub(super) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let mut same_kid = false;
        let mut found: Option<&Key> = None;
        for key in &self.keys {
            if let Some(kid) = kid {
                if key.kid.as_deref() != Some(kid) {
                    continue;
                }
                same_kid = true;
            }
            if key.fits(alg) {
                if found.is_some() {
                    return Lookup::Ambiguous;
                }
                found = Some(key);
            }
        }
        match found {
            Some(key) => Lookup::Found(key),
            None if same_kid => Lookup::WrongAlgorithm,
            None => Lookup::Unknown,
        }
    }

    /// Whether a key has this `kid`.
    pub(super) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Why a JWK is not kept.
enum Skip {
    /// Not a signature key this host can use: skipped.
    Note(String),
    /// A key of a supported kind that is malformed: the document is refused.
    Invalid(String),
}

/// The key `entry` stands for, if it verifies one of `accepted`.
fn usable(entry: &Value, accepted: &[Algorithm]) -> Result<Option<Key>, Skip> {
    let jwk: Jwk = serde_json::from_value(entry.clone())
        .map_err(|_| Skip::Note("not a JWK this host reads".into()))?;
    let common = &jwk.common;
    match &common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err(Skip::Note("not a signature key (use)".into())),
    }
    if let Some(ops) = &common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(Skip::Note("its key_ops do not include verify".into()));
    }
    let (family, algorithms): (AlgorithmFamily, Vec<Algorithm>) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64(&p.n).map_err(|_| Skip::Invalid("n is not base64url".into()))?;
            b64(&p.e).map_err(|_| Skip::Invalid("e is not base64url".into()))?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(Skip::Note(format!(
                    "an RSA key of {bits} bits is shorter than {MIN_RSA_BITS}"
                )));
            }
            (
                AlgorithmFamily::Rsa,
                AlgorithmFamily::Rsa.algorithms().to_vec(),
            )
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (alg, size) = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return Err(Skip::Note("an EC curve this host does not verify".into())),
            };
            for (name, c) in [("x", &p.x), ("y", &p.y)] {
                match b64(c) {
                    Ok(bytes) if bytes.len() == size => {}
                    _ => return Err(Skip::Invalid(format!("{name} is not a {size}-byte value"))),
                }
            }
            (AlgorithmFamily::Ec, vec![alg])
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err(Skip::Note("an OKP curve this host does not verify".into()));
            }
            match b64(&p.x) {
                Ok(x) if x.len() == 32 => {}
                _ => return Err(Skip::Invalid("x is not a 32-byte value".into())),
            }
            (AlgorithmFamily::Ed, vec![Algorithm::EdDSA])
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(Skip::Note(
                "a symmetric key (kty oct): configure the shared secret instead".into(),
            ));
        }
        _ => return Err(Skip::Note("a key type this host does not verify".into())),
    };
    // A JWK naming its algorithm verifies that one only.
    let algorithms = match &common.key_algorithm {
        None => algorithms,
        Some(named) => match key_algorithm(named) {
            Some(alg) if alg.family() == family && algorithms.contains(&alg) => vec![alg],
            _ => {
                return Err(Skip::Note(
                    "its alg is not a signature algorithm of its key type".into(),
                ));
            }
        },
    };
    let algorithms: Vec<Algorithm> = algorithms
        .into_iter()
        .filter(|a| accepted.contains(a))
        .collect();
    if algorithms.is_empty() {
        return Err(Skip::Note(
            "none of its algorithms is accepted (auth.algorithms)".into(),
        ));
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| Skip::Invalid(e.to_string()))?;
    Ok(Some(Key {
        kid: common.key_id.clone(),
        algorithms,
        decoding,
    }))
}

/// The signature algorithm a JWK's `alg` names.
fn key_algorithm(named: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> Result<(KeySet, Vec<String>), JwksError> {
        let mut notes = Vec::new();
        KeySet::parse(
            doc.as_bytes(),
            &crate::identity::verifier::ASYMMETRIC,
            &mut notes,
        )
        .map(|s| (s, notes))
    }

    /// An RSA modulus of `bits` bits (its value does not matter to parsing).
    fn n(bits: usize) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xc5u8; bits / 8])
    }

    fn xy(len: usize) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![7u8; len])
    }

    #[test]
    fn keys_are_kept_by_kind_and_chosen_by_kid() {
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"r","n":"{n}","e":"AQAB"}},
                {{"kty":"RSA","kid":"r2","alg":"PS256","use":"sig","n":"{n}","e":"AQAB"}},
                {{"kty":"EC","kid":"e","crv":"P-256","x":"{x}","y":"{x}"}},
                {{"kty":"OKP","kid":"o","crv":"Ed25519","x":"{x}"}},
                {{"kty":"RSA","kid":"enc","use":"enc","alg":"RSA-OAEP","n":"{n}","e":"AQAB"}},
                {{"kty":"oct","kid":"s","k":"c2VjcmV0"}},
                {{"kty":"RSA","kid":"small","n":"{small}","e":"AQAB"}},
                {{"kty":"EC","kid":"p521","crv":"P-521","x":"{x}","y":"{x}"}}
            ]}}"#,
            n = n(2048),
            small = n(1024),
            x = xy(32)
        );
        let (set, notes) = parse(&doc).expect("usable");
        assert_eq!(set.len(), 4);
        assert_eq!(notes.len(), 4, "{notes:?}");
        for kid in ["enc", "s", "small", "p521"] {
            assert!(
                notes.iter().any(|n| n.contains(&format!("{kid:?}"))),
                "{notes:?}"
            );
            assert!(!set.has_kid(kid));
        }
        assert!(matches!(
            set.lookup(Some("r"), Algorithm::RS256),
            Lookup::Found(k) if k.kid.as_deref() == Some("r")
        ));
        assert!(matches!(
            set.lookup(Some("r"), Algorithm::HS256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.lookup(Some("r2"), Algorithm::RS256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.lookup(Some("e"), Algorithm::ES384),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.lookup(Some("gone"), Algorithm::RS256),
            Lookup::Unknown
        ));
        // Without a kid: the one key fitting the algorithm, else nothing.
        assert!(matches!(
            set.lookup(None, Algorithm::EdDSA),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(None, Algorithm::PS256),
            Lookup::Ambiguous
        ));
        assert!(matches!(
            set.lookup(None, Algorithm::ES384),
            Lookup::Unknown
        ));
    }

    #[test]
    fn unusable_documents_are_refused_without_their_contents() {
        let private = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"k","n":"{}","e":"AQAB","d":"SECRETPART"}}]}}"#,
            n(2048)
        );
        for (doc, needle) in [
            ("{\"keys\": [", "line 1"),
            ("\"SECRETPART\"", "\"keys\" array"),
            ("{\"keys\": []}", "no keys"),
            (
                "{\"keys\": [{\"kty\":\"oct\",\"k\":\"U0VDUkVUUEFSVA\"}]}",
                "symmetric",
            ),
            (private.as_str(), "private key material"),
            (
                r#"{"keys":[{"kty":"EC","kid":"k","crv":"P-256","x":"SECRETPART","y":"AA"}]}"#,
                "32-byte",
            ),
            (
                r#"{"keys":[{"kty":"RSA","kid":"k","n":"SECRET*PART","e":"AQAB"}]}"#,
                "base64url",
            ),
        ] {
            let e = parse(doc).err().expect(doc).to_string();
            assert!(e.contains(needle), "{doc}: {e}");
            assert!(!e.contains("SECRETPART") && !e.contains("U0VDUkVU"), "{e}");
        }
        let big = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(1 << 20));
        assert!(matches!(parse(&big), Err(JwksError::TooLarge)));
    }

    #[test]
    fn only_accepted_algorithms_are_kept() {
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{}","e":"AQAB"}},{{"kty":"OKP","kid":"o","crv":"Ed25519","x":"{}"}}]}}"#,
            n(2048),
            xy(32)
        );
        let mut notes = Vec::new();
        let set = KeySet::parse(doc.as_bytes(), &[Algorithm::EdDSA], &mut notes).expect("ok");
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.lookup(Some("r"), Algorithm::RS256),
            Lookup::Unknown
        ));
        let e = KeySet::parse(doc.as_bytes(), &[Algorithm::ES256], &mut Vec::new())
            .err()
            .expect("nothing fits ES256");
        assert!(e.to_string().contains("no key"), "{e}");
    }
}
