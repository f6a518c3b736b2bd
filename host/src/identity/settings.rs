//! The `[auth]` table and its `CTXHOST_AUTH_*` variables, composed into [`AuthSettings`]:
//! a variable wins over the file; authentication is on as soon as a key source (a shared
//! secret or a JWKS file) is configured.
//!
//! ```toml
//! [auth]
//! jwks_file = "/etc/ctxhost/jwks/jwks.json"  # public keys (RS*, PS*, ES256/384, EdDSA), re-read on change
//! hs256_secret_file = "hs-secret"            # or hs256_secret = "..." (HS256/384/512, >= 32 bytes)
//! issuer = "https://idp.example.com/realms/shop"   # or a list
//! audience = "ctxhost"                       # or a list
//! roles_claim = "realm_access.roles"         # default "roles"; "scope" works too
//! leeway_secs = 30                           # clock skew allowed on exp/nbf, at most 300
//! admin_role = "ctxhost-admin"               # JWTs with this role may use the admin API
//! algorithms = ["RS256", "EdDSA"]            # default: every algorithm the keys allow
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Default claim holding the roles.
pub(crate) const DEFAULT_ROLES_CLAIM: &str = "roles";
/// Default clock skew allowed on `exp` and `nbf`.
const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Largest leeway an operator may set: past this, an expired token stays usable too long.
const MAX_LEEWAY_SECS: u64 = 300;
/// Shortest shared secret: as many bytes as SHA-256's output (RFC 7518, section 3.2).
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// A shared secret: kept out of `Debug` output and errors, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct HsSecret(Zeroizing<Vec<u8>>);

impl HsSecret {
    /// The secret's bytes, for the verification key.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, once resolved: a short secret is refused).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for HsSecret {
    fn from(bytes: Vec<u8>) -> Self {
        HsSecret(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for HsSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsSecret([redacted; {} bytes])", self.0.len())
    }
}

impl<'de> Deserialize<'de> for HsSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| HsSecret::from(s.into_bytes()))
    }
}

/// One string or a list of them (`issuer`, `audience`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The `[auth]` table as the file spells it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// The HMAC secret itself (`CTXHOST_AUTH_HS256_SECRET`); for development.
    pub(crate) hs256_secret: Option<HsSecret>,
    /// A file holding the HMAC secret (`CTXHOST_AUTH_HS256_SECRET_FILE`), read at start.
    pub(crate) hs256_secret_file: Option<PathBuf>,
    /// A JWKS file of public keys (`CTXHOST_AUTH_JWKS_FILE`), re-read when it changes.
    pub(crate) jwks_file: Option<PathBuf>,
    /// Accepted `iss` values (`CTXHOST_AUTH_ISSUER`, comma-separated).
    pub(crate) issuer: Option<OneOrMany>,
    /// Accepted `aud` values (`CTXHOST_AUTH_AUDIENCE`, comma-separated).
    pub(crate) audience: Option<OneOrMany>,
    /// Claim holding the roles, a dotted path into nested objects (`CTXHOST_AUTH_ROLES_CLAIM`).
    pub(crate) roles_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (`CTXHOST_AUTH_LEEWAY_SECS`).
    pub(crate) leeway_secs: Option<u64>,
    /// Role that opens the admin API to a JWT (`CTXHOST_AUTH_ADMIN_ROLE`).
    pub(crate) admin_role: Option<String>,
    /// Accepted algorithms (`CTXHOST_AUTH_ALGORITHMS`, comma-separated).
    pub(crate) algorithms: Option<Vec<String>>,
}

/// How bearer tokens are verified; `enabled()` is false when no key source is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// The shared secret of HS256/384/512 tokens.
    pub hs_secret: Option<HsSecret>,
    /// The JWKS file of RS*/PS*/ES256/ES384/EdDSA keys.
    pub jwks_file: Option<PathBuf>,
    /// Accepted issuers (empty: `iss` is not checked).
    pub issuers: Vec<String>,
    /// Accepted audiences (empty: a token carrying `aud` is refused, RFC 7519 section 4.1.3).
    pub audiences: Vec<String>,
    /// The claim holding the roles: a top-level name, else a dotted path.
    pub roles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Role that lets a JWT use the admin API (`None`: only the admin token does).
    pub admin_role: Option<String>,
    /// Accepted algorithms (`None`: every one the configured keys allow).
    pub algorithms: Option<Vec<Algorithm>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            hs_secret: None,
            jwks_file: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            roles_claim: DEFAULT_ROLES_CLAIM.into(),
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECS),
            admin_role: None,
            algorithms: None,
        }
    }
}

/// Why the `[auth]` settings or their key sources cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A value out of its range or form; `key` is the variable or `auth.<key>`.
    #[error("invalid setting {key}: {reason}")]
    Setting { key: String, reason: String },
    /// The file named by a setting cannot be read.
    #[error("invalid setting {key}: cannot read {path}: {source}")]
    ReadFile {
        key: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The JWKS file holds no usable key, or is not a JWKS (its contents are never shown).
    #[error("invalid setting {key}: the JWKS file {path} cannot be used: {source}")]
    Jwks {
        key: String,
        path: String,
        #[source]
        source: super::jwks_file::LoadError,
    },
}

impl AuthConfigError {
    fn setting(key: impl Into<String>, reason: impl Into<String>) -> Self {
        AuthConfigError::Setting {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A value and the name it was set by (a variable, or `auth.<key>`), for error messages.
type Named<T> = (String, T);

impl AuthSettings {
    /// Whether tokens are verified: a shared secret or a JWKS file is configured.
    pub fn enabled(&self) -> bool {
        self.hs_secret.is_some() || self.jwks_file.is_some()
    }

    /// The settings from the process's variables over `file`; relative paths of the file
    /// are taken from `base` (the configuration file's directory).
    pub(crate) fn resolve(file: AuthFile, base: &Path) -> Result<Self, AuthConfigError> {
        Self::resolve_with(file, base, |name| std::env::var(name).ok())
    }

    /// The settings from the variables `var` looks up over `file`.
    pub(crate) fn resolve_with(
        file: AuthFile,
        base: &Path,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let relative = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let from_var = |name: &str| var(name).map(|v| (name.to_string(), v.trim().to_string()));
        let from_file = |key: &str, v: Option<String>| v.map(|v| (format!("auth.{key}"), v));

        let hs_secret = resolve_secret(
            var("CTXHOST_AUTH_HS256_SECRET").map(|v| HsSecret::from(v.into_bytes())),
            var("CTXHOST_AUTH_HS256_SECRET_FILE").map(PathBuf::from),
            file.hs256_secret,
            file.hs256_secret_file.map(relative),
        )?;
        let jwks_file = var("CTXHOST_AUTH_JWKS_FILE")
            .map(|v| PathBuf::from(v.trim()))
            .or(file.jwks_file.map(relative));
        let list = |name: &str, key: &str, f: Option<OneOrMany>| -> Result<_, AuthConfigError> {
            let (from, values) = match from_var(name) {
                Some((n, v)) => (n, v.split(',').map(str::to_string).collect()),
                None => match f {
                    Some(f) => (format!("auth.{key}"), f.into_vec()),
                    None => return Ok(None),
                },
            };
            let values: Vec<String> = values.iter().map(|v| v.trim().to_string()).collect();
            if values.is_empty() || values.iter().any(String::is_empty) {
                return Err(AuthConfigError::setting(from, "names an empty value"));
            }
            Ok(Some((from, values)))
        };
        let issuers = list("CTXHOST_AUTH_ISSUER", "issuer", file.issuer)?;
        let audiences = list("CTXHOST_AUTH_AUDIENCE", "audience", file.audience)?;
        let roles_claim = from_var("CTXHOST_AUTH_ROLES_CLAIM")
            .or_else(|| from_file("roles_claim", file.roles_claim.clone()));
        if let Some((key, claim)) = &roles_claim
            && (claim.trim().is_empty() || claim.split('.').any(|part| part.trim().is_empty()))
        {
            return Err(AuthConfigError::setting(
                key,
                format!("{claim:?} is not a claim name or a dotted path like realm_access.roles"),
            ));
        }
        let leeway = match from_var("CTXHOST_AUTH_LEEWAY_SECS") {
            Some((key, v)) => Some((
                key.clone(),
                v.parse::<u64>().map_err(|_| {
                    AuthConfigError::setting(key, format!("{v:?} is not a number of seconds"))
                })?,
            )),
            None => file
                .leeway_secs
                .map(|s| ("auth.leeway_secs".to_string(), s)),
        };
        if let Some((key, secs)) = &leeway
            && *secs > MAX_LEEWAY_SECS
        {
            return Err(AuthConfigError::setting(
                key,
                format!("{secs} s is more than the {MAX_LEEWAY_SECS} s allowed"),
            ));
        }
        let admin_role = from_var("CTXHOST_AUTH_ADMIN_ROLE")
            .or_else(|| from_file("admin_role", file.admin_role.clone()));
        if let Some((key, role)) = &admin_role
            && role.trim().is_empty()
        {
            return Err(AuthConfigError::setting(key, "is empty"));
        }
        let algorithms = match from_var("CTXHOST_AUTH_ALGORITHMS") {
            Some((key, v)) => Some((key, v.split(',').map(str::to_string).collect())),
            None => file
                .algorithms
                .clone()
                .map(|a| ("auth.algorithms".to_string(), a)),
        }
        .map(|(key, names): Named<Vec<String>>| parse_algorithms(&key, &names).map(|a| (key, a)))
        .transpose()?;

        let settings = AuthSettings {
            hs_secret: hs_secret.map(|(_, s)| s),
            jwks_file,
            issuers: issuers.clone().map(|(_, v)| v).unwrap_or_default(),
            audiences: audiences.clone().map(|(_, v)| v).unwrap_or_default(),
            roles_claim: roles_claim
                .clone()
                .map(|(_, c)| c.trim().to_string())
                .unwrap_or_else(|| DEFAULT_ROLES_CLAIM.into()),
            leeway: Duration::from_secs(leeway.as_ref().map_or(DEFAULT_LEEWAY_SECS, |l| l.1)),
            admin_role: admin_role.clone().map(|(_, r)| r.trim().to_string()),
            algorithms: algorithms.as_ref().map(|(_, a)| a.clone()),
        };
        if !settings.enabled() {
            // A setting without a key source is a typo'd or forgotten variable: refuse it
            // rather than serve every route without authentication.
            let set = [
                issuers.map(|x| x.0),
                audiences.map(|x| x.0),
                roles_claim.map(|x| x.0),
                leeway.map(|x| x.0),
                admin_role.map(|x| x.0),
                algorithms.map(|x| x.0),
            ];
            if let Some(key) = set.into_iter().flatten().next() {
                return Err(AuthConfigError::setting(
                    key,
                    "is set but authentication is off: configure a key source \
                     (CTXHOST_AUTH_JWKS_FILE / auth.jwks_file, or CTXHOST_AUTH_HS256_SECRET(_FILE) \
                     / auth.hs256_secret(_file))",
                ));
            }
        }
        Ok(settings)
    }
}

/// The shared secret: the variable, else the variable's file, else the file's
/// `hs256_secret_file`, else its `hs256_secret`. Two sources at one level are refused.
fn resolve_secret(
    var_value: Option<HsSecret>,
    var_file: Option<PathBuf>,
    file_value: Option<HsSecret>,
    file_file: Option<PathBuf>,
) -> Result<Option<Named<HsSecret>>, AuthConfigError> {
    if var_value.is_some() && var_file.is_some() {
        return Err(AuthConfigError::setting(
            "CTXHOST_AUTH_HS256_SECRET",
            "is set together with CTXHOST_AUTH_HS256_SECRET_FILE: set one of them",
        ));
    }
    if file_value.is_some() && file_file.is_some() {
        return Err(AuthConfigError::setting(
            "auth.hs256_secret",
            "is set together with auth.hs256_secret_file: set one of them",
        ));
    }
    let found = match (var_value, var_file, file_file, file_value) {
        (Some(s), ..) => Some(("CTXHOST_AUTH_HS256_SECRET".to_string(), s)),
        (None, Some(p), ..) => Some(read_secret("CTXHOST_AUTH_HS256_SECRET_FILE", &p)?),
        (None, None, Some(p), _) => Some(read_secret("auth.hs256_secret_file", &p)?),
        (None, None, None, Some(s)) => Some(("auth.hs256_secret".to_string(), s)),
        (None, None, None, None) => None,
    };
    if let Some((key, secret)) = &found
        && secret.len() < MIN_SECRET_BYTES
    {
        return Err(AuthConfigError::setting(
            key,
            format!(
                "the secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} \
                 (HS384 48, HS512 64): generate one with `openssl rand -base64 48`",
                secret.len()
            ),
        ));
    }
    Ok(found)
}

/// The secret kept in `path`, without one trailing newline (as `echo` and editors add).
fn read_secret(key: &str, path: &Path) -> Result<Named<HsSecret>, AuthConfigError> {
    let mut bytes = std::fs::read(path).map_err(|source| AuthConfigError::ReadFile {
        key: key.into(),
        path: path.display().to_string(),
        source,
    })?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok((key.to_string(), HsSecret::from(bytes)))
}

/// Algorithm names as JOSE spells them; `none` and unknown names are refused.
fn parse_algorithms(key: &str, names: &[String]) -> Result<Vec<Algorithm>, AuthConfigError> {
    let mut out = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        let alg = Algorithm::from_str(name).map_err(|_| {
            AuthConfigError::setting(
                key,
                format!(
                    "{name:?} is not an accepted algorithm: use HS256, HS384, HS512, RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                ),
            )
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    if out.is_empty() {
        return Err(AuthConfigError::setting(key, "names no algorithm"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(file: &str, vars: &[(&str, &str)]) -> Result<AuthSettings, AuthConfigError> {
        resolve_in(Path::new("/base"), file, vars)
    }

    fn resolve_in(
        base: &Path,
        file: &str,
        vars: &[(&str, &str)],
    ) -> Result<AuthSettings, AuthConfigError> {
        let file: AuthFile = toml::from_str(file).expect("an [auth] table");
        AuthSettings::resolve_with(file, base, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn nothing_configured_means_off_with_defaults() {
        let s = resolve("", &[]).expect("defaults");
        assert!(!s.enabled());
        assert_eq!(s, AuthSettings::default());
        assert_eq!(s.roles_claim, "roles");
        assert_eq!(s.leeway, Duration::from_secs(30));
    }

    #[test]
    fn variables_win_over_the_file_and_paths_are_relative_to_it() {
        let s = resolve(
            "jwks_file = \"keys/jwks.json\"\nissuer = \"https://file\"\naudience = [\"a\", \"b\"]\n\
             roles_claim = \"groups\"\nleeway_secs = 10\nadmin_role = \"ops\"\n",
            &[
                ("CTXHOST_AUTH_ISSUER", "https://one, https://two"),
                ("CTXHOST_AUTH_ROLES_CLAIM", "realm_access.roles"),
                ("CTXHOST_AUTH_LEEWAY_SECS", "0"),
                ("CTXHOST_AUTH_ALGORITHMS", "RS256,EdDSA"),
            ],
        )
        .expect("resolves");
        assert!(s.enabled());
        assert_eq!(s.jwks_file, Some(PathBuf::from("/base/keys/jwks.json")));
        assert_eq!(s.issuers, ["https://one", "https://two"]);
        assert_eq!(s.audiences, ["a", "b"]);
        assert_eq!(s.roles_claim, "realm_access.roles");
        assert_eq!(s.leeway, Duration::ZERO);
        assert_eq!(s.admin_role.as_deref(), Some("ops"));
        assert_eq!(s.algorithms, Some(vec![Algorithm::RS256, Algorithm::EdDSA]));
        let s = resolve(
            "jwks_file = \"keys/jwks.json\"\n",
            &[("CTXHOST_AUTH_JWKS_FILE", "/mnt/jwks.json")],
        )
        .expect("resolves");
        assert_eq!(s.jwks_file, Some(PathBuf::from("/mnt/jwks.json")));
    }

    #[test]
    fn the_secret_comes_from_a_variable_or_a_file_and_never_shows() {
        let d = std::env::temp_dir().join(format!("ctxhost-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("secret"), format!("{SECRET}\n")).expect("write");
        std::fs::write(d.join("crlf"), format!("{SECRET} \r\n")).expect("write");
        let s = resolve_in(&d, "hs256_secret_file = \"secret\"\n", &[]).expect("resolves");
        let secret = s.hs_secret.clone().expect("a secret");
        assert_eq!(secret.expose(), SECRET.as_bytes(), "one newline trimmed");
        for shown in [format!("{s:?}"), format!("{secret:?}")] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        let s = resolve_in(&d, "", &[("CTXHOST_AUTH_HS256_SECRET_FILE", "crlf")]);
        // A variable's relative path is the process's, not the file's directory.
        assert!(
            matches!(s, Err(AuthConfigError::ReadFile { ref key, .. }) if key == "CTXHOST_AUTH_HS256_SECRET_FILE"),
            "{s:?}"
        );
        let crlf = d.join("crlf").display().to_string();
        let s = resolve_in(&d, "", &[("CTXHOST_AUTH_HS256_SECRET_FILE", &crlf)]).expect("ok");
        assert_eq!(
            s.hs_secret.expect("secret").expose(),
            format!("{SECRET} ").as_bytes(),
            "only the line ending goes"
        );
        let s = resolve_in(
            &d,
            "hs256_secret_file = \"secret\"\n",
            &[(
                "CTXHOST_AUTH_HS256_SECRET",
                "from-the-variable-0123456789abcdef",
            )],
        )
        .expect("resolves");
        assert_eq!(
            s.hs_secret.expect("secret").expose(),
            b"from-the-variable-0123456789abcdef"
        );
    }

    #[test]
    fn a_short_secret_is_refused_without_showing_it() {
        let e = resolve("hs256_secret = \"short-secret\"\n", &[])
            .expect_err("12 bytes")
            .to_string();
        assert!(e.contains("auth.hs256_secret"), "{e}");
        assert!(e.contains("12 bytes") && e.contains("32"), "{e}");
        assert!(!e.contains("short-secret"), "{e}");
        let e = resolve("", &[("CTXHOST_AUTH_HS256_SECRET", "tiny")])
            .expect_err("4 bytes")
            .to_string();
        assert!(e.contains("CTXHOST_AUTH_HS256_SECRET"), "{e}");
        assert!(!e.contains("tiny"), "{e}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let key = format!("jwks_file = \"j.json\"\nhs256_secret = \"{SECRET}\"\n");
        for (file, vars, needle) in [
            (
                format!("{key}leeway_secs = 301\n"),
                vec![],
                "auth.leeway_secs",
            ),
            (
                key.clone(),
                vec![("CTXHOST_AUTH_LEEWAY_SECS", "soon")],
                "CTXHOST_AUTH_LEEWAY_SECS",
            ),
            (
                format!("{key}algorithms = [\"none\"]\n"),
                vec![],
                "auth.algorithms",
            ),
            (
                key.clone(),
                vec![("CTXHOST_AUTH_ALGORITHMS", "RS256,HS1")],
                "CTXHOST_AUTH_ALGORITHMS",
            ),
            (
                format!("{key}roles_claim = \"realm_access..roles\"\n"),
                vec![],
                "auth.roles_claim",
            ),
            (format!("{key}issuer = []\n"), vec![], "auth.issuer"),
            (
                key.clone(),
                vec![("CTXHOST_AUTH_AUDIENCE", "a,,b")],
                "CTXHOST_AUTH_AUDIENCE",
            ),
            (
                format!("{key}hs256_secret_file = \"s\"\n"),
                vec![],
                "auth.hs256_secret",
            ),
            (
                String::new(),
                vec![
                    ("CTXHOST_AUTH_HS256_SECRET", SECRET),
                    ("CTXHOST_AUTH_HS256_SECRET_FILE", "/s"),
                ],
                "CTXHOST_AUTH_HS256_SECRET",
            ),
            // Settings without a key source: authentication would silently stay off.
            (
                "issuer = \"https://idp\"\n".to_string(),
                vec![],
                "auth.issuer",
            ),
            (
                String::new(),
                vec![("CTXHOST_AUTH_ADMIN_ROLE", "ops")],
                "CTXHOST_AUTH_ADMIN_ROLE",
            ),
        ] {
            let e = resolve(&file, &vars).expect_err(&file).to_string();
            assert!(e.contains(needle), "{file} {vars:?}: {e}");
            assert!(!e.contains(SECRET), "{e}");
        }
        let e = toml::from_str::<AuthFile>("jwks = \"x\"\n").expect_err("unknown key");
        assert!(e.to_string().contains("jwks"), "{e}");
    }
}
