//! jsonwebtoken's cryptography, done by ring.
//!
//! jsonwebtoken (10 and later) leaves its signature primitives to a crypto provider; its
//! own are aws-lc-rs or the RustCrypto crates, both a second copy of what ring, already in
//! the host through rustls, does. This provider verifies with ring: HMAC-SHA2, RSA PKCS#1
//! v1.5 and PSS (2048 to 8192 bits), ECDSA P-256/P-384 and Ed25519. The host verifies
//! tokens and never issues them, so signing exists only in the tests.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{digest, hmac, signature as sig};

/// The provider: verification by ring, no signing outside the tests.
static RING: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest,
    },
};

/// Make ring jsonwebtoken's provider for this process (idempotent). Before any token is
/// verified; a provider installed earlier by someone else stays.
pub(super) fn install() {
    let _ = CryptoProvider::install_default(&RING);
}

fn unsupported() -> Error {
    ErrorKind::Provider("this host verifies tokens only".into()).into()
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(digest::digest(alg, data).as_ref().to_vec())
}

/// How one key checks a signature.
enum Check {
    Hmac(hmac::Key),
    /// RSA from its modulus and exponent (a JWK).
    RsaComponents {
        params: &'static sig::RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Any other public key ring parses itself: RSA PKCS#1 DER, an uncompressed EC point,
    /// an Ed25519 key.
    Public(sig::UnparsedPublicKey<Vec<u8>>),
}

struct RingVerifier {
    alg: Algorithm,
    check: Check,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match &self.check {
            Check::Hmac(key) => hmac::verify(key, msg, signature),
            Check::RsaComponents { params, n, e } => sig::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(params, msg, signature),
            Check::Public(key) => key.verify(msg, signature),
        };
        ok.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The verifier of `alg` with `key`; a key of another family is refused here, whatever
/// the token's header says (no HMAC with a public key's bytes).
fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let public = |a: &'static dyn sig::VerificationAlgorithm| -> Result<Check, Error> {
        Ok(Check::Public(sig::UnparsedPublicKey::new(
            a,
            key.try_get_as_bytes()?.to_vec(),
        )))
    };
    let rsa = |params: &'static sig::RsaParameters| -> Check {
        match key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => Check::RsaComponents {
                params,
                n: n.clone(),
                e: e.clone(),
            },
            DecodingKeyKind::SecretOrDer(der) => {
                Check::Public(sig::UnparsedPublicKey::new(params, der.clone()))
            }
        }
    };
    let hmac = |a: hmac::Algorithm| -> Result<Check, Error> {
        Ok(Check::Hmac(hmac::Key::new(a, key.try_get_as_bytes()?)))
    };
    let check = match alg {
        Algorithm::HS256 => hmac(hmac::HMAC_SHA256)?,
        Algorithm::HS384 => hmac(hmac::HMAC_SHA384)?,
        Algorithm::HS512 => hmac(hmac::HMAC_SHA512)?,
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => public(&sig::ECDSA_P256_SHA256_FIXED)?,
        Algorithm::ES384 => public(&sig::ECDSA_P384_SHA384_FIXED)?,
        Algorithm::EdDSA => public(&sig::ED25519)?,
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    Ok(Box::new(RingVerifier { alg, check }))
}

#[cfg(not(test))]
fn new_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(unsupported())
}

#[cfg(test)]
use test_signer::new_signer;

/// Signing, for the tests' own tokens: HMAC from the secret, RSA from PKCS#8 or PKCS#1 DER,
/// ECDSA and Ed25519 from PKCS#8 DER.
#[cfg(test)]
mod test_signer {
    use super::*;
    use ring::rand::SystemRandom;

    enum Sign {
        Hmac(hmac::Key),
        Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
        Ecdsa(sig::EcdsaKeyPair),
        Ed(sig::Ed25519KeyPair),
    }

    struct RingSigner {
        alg: Algorithm,
        sign: Sign,
    }

    impl signature::Signer<Vec<u8>> for RingSigner {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
            let rng = SystemRandom::new();
            let fail = |_| signature::Error::new();
            Ok(match &self.sign {
                Sign::Hmac(key) => hmac::sign(key, msg).as_ref().to_vec(),
                Sign::Rsa(pair, encoding) => {
                    let mut out = vec![0; pair.public().modulus_len()];
                    pair.sign(*encoding, &rng, msg, &mut out).map_err(fail)?;
                    out
                }
                Sign::Ecdsa(pair) => pair.sign(&rng, msg).map_err(fail)?.as_ref().to_vec(),
                Sign::Ed(pair) => pair.sign(msg).as_ref().to_vec(),
            })
        }
    }

    impl JwtSigner for RingSigner {
        fn algorithm(&self) -> Algorithm {
            self.alg
        }
    }

    pub(super) fn new_signer(
        alg: &Algorithm,
        key: &EncodingKey,
    ) -> Result<Box<dyn JwtSigner>, Error> {
        let alg = *alg;
        if key.family() != alg.family() {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let der = key.as_bytes();
        let rsa = |encoding: &'static dyn sig::RsaEncoding| -> Result<Sign, Error> {
            let pair = sig::RsaKeyPair::from_pkcs8(der)
                .or_else(|_| sig::RsaKeyPair::from_der(der))
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
            Ok(Sign::Rsa(pair, encoding))
        };
        let ecdsa = |a: &'static sig::EcdsaSigningAlgorithm| -> Result<Sign, Error> {
            sig::EcdsaKeyPair::from_pkcs8(a, der, &SystemRandom::new())
                .map(Sign::Ecdsa)
                .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
        };
        let sign = match alg {
            Algorithm::HS256 => Sign::Hmac(hmac::Key::new(hmac::HMAC_SHA256, der)),
            Algorithm::HS384 => Sign::Hmac(hmac::Key::new(hmac::HMAC_SHA384, der)),
            Algorithm::HS512 => Sign::Hmac(hmac::Key::new(hmac::HMAC_SHA512, der)),
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256)?,
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384)?,
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512)?,
            Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256)?,
            Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384)?,
            Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512)?,
            Algorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)?,
            Algorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING)?,
            Algorithm::EdDSA => Sign::Ed(
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|_| ErrorKind::InvalidEddsaKey)?,
            ),
            _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
        };
        Ok(Box::new(RingSigner { alg, sign }))
    }
}
