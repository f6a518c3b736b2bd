//! Identity: who a request acts for. The principal a verified bearer token names, handed to
//! the component that serves the request, to the contexts it calls and, by its subject, to
//! the handlers of the events it causes.
//!
//! Tokens are verified by the [`Authenticator`] the `[auth]` settings ([`AuthSettings`])
//! describe: shared-secret HS256/384/512 and public keys from a JWKS file that is re-read
//! when it changes (docs/SECURITY.md).
//!
//! A leaf: every layer may use it; it imports nothing of the host's but its lock helpers.

mod access;
mod cache;
mod claims;
mod crypto;
mod jwks;
mod jwks_file;
mod mint;
mod principal;
mod settings;
mod token_error;
mod verifier;

pub(crate) use access::{Access, AccessOverrides, Decision};
pub use mint::{MintError, mint as mint_token};
pub(crate) use principal::Principal;
pub(crate) use settings::AuthFile;
#[cfg(test)]
pub(crate) use settings::HsSecret;
pub(crate) use settings::{AuthConfigError, AuthSettings};
pub(crate) use token_error::TokenError;
pub(crate) use verifier::Authenticator;
