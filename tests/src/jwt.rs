//! Bearer tokens for the authentication tests, made independently of the host's own JWT
//! library: HS256 with the `hmac` crate and RS256 with the `openssl` command line, so a test
//! passes only if the host verifies what the standard says, not what its library writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::tools::ensure_program;

/// Base64url without padding, as JWTs use it.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `<header>.<claims>` in base64url: the signing input of a token.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// An HS256 token over `claims` under `secret`, with `header` fields added to
/// `{"alg":"HS256","typ":"JWT"}`.
pub fn hs256(secret: &[u8], claims: &Value, header: Value) -> String {
    let mut h = json!({"alg": "HS256", "typ": "JWT"});
    if let (Some(h), Value::Object(extra)) = (h.as_object_mut(), header) {
        h.extend(extra);
    }
    let input = signing_input(&h, claims);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// A token with `"alg": "none"` and an empty signature.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.",
        signing_input(&json!({"alg": "none", "typ": "JWT"}), claims)
    )
}

/// An RSA key made by `openssl`, with its key id.
pub struct RsaKey {
    pub kid: String,
    pem: PathBuf,
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let program = ensure_program("openssl", &["openssl"]);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
    if let Some(bytes) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("a piped stdin")
            .write_all(bytes)
            .expect("write to openssl");
    }
    let out = child.wait_with_output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl RsaKey {
    /// A new 2048-bit key in `dir`.
    pub fn generate(dir: &Path, kid: &str) -> RsaKey {
        let pem = dir.join(format!("{kid}.pem"));
        let path = pem.to_str().expect("a UTF-8 path");
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                path,
            ],
            None,
        );
        RsaKey {
            kid: kid.to_string(),
            pem,
        }
    }

    /// The public key as a JWK (`kty`, `kid`, `alg`, `use`, `n`, `e`).
    pub fn jwk(&self) -> Value {
        let path = self.pem.to_str().expect("a UTF-8 path");
        let out = String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"], None))
            .expect("UTF-8");
        let hex = out
            .trim()
            .strip_prefix("Modulus=")
            .expect("openssl prints Modulus=<hex>");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        json!({
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
            "n": b64url(&n),
            "e": b64url(&[1, 0, 1]),
        })
    }

    /// The public key in PEM (SubjectPublicKeyInfo), as an attacker could fetch it.
    pub fn public_pem(&self) -> Vec<u8> {
        let path = self.pem.to_str().expect("a UTF-8 path");
        openssl(&["pkey", "-in", path, "-pubout"], None)
    }

    /// An RS256 token over `claims`, signed by `openssl dgst`, with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let input = signing_input(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        );
        let path = self.pem.to_str().expect("a UTF-8 path");
        let sig = openssl(&["dgst", "-sha256", "-sign", path], Some(input.as_bytes()));
        format!("{input}.{}", b64url(&sig))
    }
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&RsaKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}
