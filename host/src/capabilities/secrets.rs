//! `ctxhost:platform/secrets`: the secrets the operator granted to a context, read from
//! their sources (an environment variable or a file) each time the guest asks, so a rotated
//! file takes effect on the next read without a restart.
//!
//! A value never leaves this module except to the guest: logs name the secret, the kind of
//! its source and why it cannot be read, never a byte of the value, and nothing here
//! implements `Debug` or `Display` over a value.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::CapabilityCtx;
use crate::bindings::secrets::Host;

/// Largest secret value, in bytes. A larger source (a file, or a variable) is refused: a
/// secret that size is a mistake (the wrong file mounted), and the guest would copy it into
/// its memory on every read.
pub(crate) const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Where a granted secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the host process, read as is.
    Env(String),
    /// A regular file, such as a key of a mounted Kubernetes Secret (symbolic links are
    /// followed); one trailing newline (`\n` or `\r\n`) is dropped.
    File(PathBuf),
}

impl SecretSource {
    /// `env` or `file`, for logs and operators.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "env",
            SecretSource::File(_) => "file",
        }
    }

    /// The value now.
    fn read(&self) -> Result<Vec<u8>, Unreadable> {
        match self {
            SecretSource::Env(var) => {
                let value = std::env::var_os(var).ok_or(Unreadable::Unset)?;
                let bytes = value.into_encoded_bytes();
                if bytes.len() > MAX_SECRET_BYTES {
                    return Err(Unreadable::TooLarge);
                }
                Ok(bytes)
            }
            SecretSource::File(path) => read_file(path),
        }
    }
}

/// Why a granted secret cannot be read now: the kind of failure only, nothing of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Unreadable {
    #[error("the variable is not set")]
    Unset,
    #[error("the file does not exist")]
    Missing,
    #[error("not a regular file (a directory, a device or a pipe)")]
    NotAFile,
    #[error("larger than the limit of {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    #[error("cannot read it: {0}")]
    Io(std::io::ErrorKind),
}

impl From<std::io::Error> for Unreadable {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Unreadable::Missing,
            std::io::ErrorKind::IsADirectory => Unreadable::NotAFile,
            kind => Unreadable::Io(kind),
        }
    }
}

/// A secret file's value: a regular file (a directory, a pipe that would block, or a device
/// is refused) of at most [`MAX_SECRET_BYTES`], without one trailing newline.
fn read_file(path: &Path) -> Result<Vec<u8>, Unreadable> {
    // Follows symbolic links, as a mounted Secret's keys are links into a directory that
    // the kubelet swaps atomically on rotation.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Unreadable::NotAFile);
    }
    if meta.len() > MAX_SECRET_BYTES as u64 {
        return Err(Unreadable::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may have grown since: read one byte past the limit to tell.
    std::fs::File::open(path)?
        .take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(Unreadable::TooLarge);
    }
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    Ok(bytes)
}

/// The secrets granted to one context: name -> source, and the failures already logged.
#[derive(Default)]
pub struct SecretGrants {
    grants: BTreeMap<String, SecretSource>,
    /// The last failure logged for each secret that cannot be read, so that a source that
    /// stays broken is logged once per distinct failure, not on every read.
    reported: Mutex<BTreeMap<String, Unreadable>>,
}

impl fmt::Debug for SecretGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.grants.iter()).finish()
    }
}

impl SecretGrants {
    /// Grants from `name -> source` pairs.
    pub fn new(grants: BTreeMap<String, SecretSource>) -> Self {
        SecretGrants {
            grants,
            reported: Mutex::default(),
        }
    }

    /// The granted names, for operators (never the values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.grants.keys().map(String::as_str)
    }

    /// The value of secret `name`, when granted and readable now. A granted secret that
    /// cannot be read is logged (by name, source kind and reason) the first time it fails
    /// that way, and again only when the failure changes or after it was readable again.
    pub(crate) fn read(&self, context: &str, name: &str) -> Option<Vec<u8>> {
        let Some(source) = self.grants.get(name) else {
            tracing::debug!(context, secret = name, "secret not granted");
            return None;
        };
        match source.read() {
            Ok(value) => {
                if self.recovered(name) {
                    tracing::info!(
                        context,
                        secret = name,
                        source = source.kind(),
                        "granted secret is readable again"
                    );
                }
                Some(value)
            }
            Err(why) => {
                if self.first_report(name, why) {
                    tracing::warn!(
                        context,
                        secret = name,
                        source = source.kind(),
                        reason = %why,
                        "granted secret cannot be read; the context gets none"
                    );
                }
                None
            }
        }
    }

    /// Record `why` as the failure of `name`; true when it differs from the one recorded
    /// (so it is worth a log line).
    fn first_report(&self, name: &str, why: Unreadable) -> bool {
        let mut reported = crate::sync::lock(&self.reported);
        reported.insert(name.to_string(), why) != Some(why)
    }

    /// Forget any failure of `name`; true when there was one.
    fn recovered(&self, name: &str) -> bool {
        let mut reported = crate::sync::lock(&self.reported);
        !reported.is_empty() && reported.remove(name).is_some()
    }
}

impl Host for CapabilityCtx {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.secrets.read(&self.context, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "ctxhost-secrets-{name}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&path).expect("create a scratch directory");
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn grants(pairs: &[(&str, SecretSource)]) -> SecretGrants {
        SecretGrants::new(
            pairs
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
        )
    }

    #[test]
    fn a_file_is_read_again_on_every_call_so_a_rotation_takes_effect() {
        let dir = Dir::new("rotation");
        let file = dir.0.join("key");
        std::fs::write(&file, "first\n").expect("write");
        let g = grants(&[("key", SecretSource::File(file.clone()))]);
        assert_eq!(g.read("c", "key").as_deref(), Some(&b"first"[..]));
        // The kubelet's way: a new file renamed over the old one.
        let next = dir.0.join("key.new");
        std::fs::write(&next, "second").expect("write");
        std::fs::rename(&next, &file).expect("rename");
        assert_eq!(g.read("c", "key").as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn one_trailing_newline_of_a_file_is_dropped_and_nothing_else() {
        let dir = Dir::new("trim");
        let file = dir.0.join("key");
        let g = grants(&[("key", SecretSource::File(file.clone()))]);
        for (content, value) in [
            (&b"abc\n"[..], &b"abc"[..]),
            (b"abc\r\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b" abc ", b" abc "),
            (b"\n", b""),
            (b"", b""),
            (b"\xff\x00\n", b"\xff\x00"),
        ] {
            std::fs::write(&file, content).expect("write");
            assert_eq!(g.read("c", "key").as_deref(), Some(value), "{content:?}");
        }
    }

    #[test]
    fn a_missing_file_a_directory_or_a_huge_file_gives_none() {
        let dir = Dir::new("refused");
        let file = dir.0.join("key");
        let g = grants(&[("key", SecretSource::File(file.clone()))]);
        assert_eq!(read_file(&file), Err(Unreadable::Missing));
        assert_eq!(g.read("c", "key"), None);
        std::fs::create_dir(&file).expect("mkdir");
        assert_eq!(read_file(&file), Err(Unreadable::NotAFile));
        assert_eq!(g.read("c", "key"), None);
        std::fs::remove_dir(&file).expect("rmdir");
        std::fs::write(&file, vec![b'k'; MAX_SECRET_BYTES + 1]).expect("write");
        assert_eq!(read_file(&file), Err(Unreadable::TooLarge));
        assert_eq!(g.read("c", "key"), None);
        std::fs::write(&file, vec![b'k'; MAX_SECRET_BYTES]).expect("write");
        assert_eq!(
            g.read("c", "key").map(|v| v.len()),
            Some(MAX_SECRET_BYTES),
            "the limit itself is allowed"
        );
    }

    #[test]
    fn a_variable_is_read_as_is_and_an_unset_one_gives_none() {
        // Variables this process already has: setting one would race other tests' threads.
        let path = std::env::var_os("PATH").expect("PATH is set");
        let unset = format!("CTXHOST_SECRET_TEST_UNSET_{}", std::process::id());
        let g = grants(&[
            ("a", SecretSource::Env("PATH".into())),
            ("b", SecretSource::Env(unset)),
        ]);
        assert_eq!(g.read("c", "a"), Some(path.into_encoded_bytes()));
        assert_eq!(g.read("c", "b"), None);
    }

    #[test]
    fn a_name_not_granted_gives_none() {
        let g = grants(&[("key", SecretSource::Env("PATH".into()))]);
        assert!(g.read("c", "key").is_some());
        assert_eq!(g.read("c", "other"), None);
        assert_eq!(g.read("c", ""), None);
        assert_eq!(g.names().collect::<Vec<_>>(), ["key"]);
    }

    #[test]
    fn a_failure_is_logged_once_until_it_changes_or_the_secret_recovers() {
        let g = grants(&[]);
        assert!(g.first_report("k", Unreadable::Missing));
        assert!(!g.first_report("k", Unreadable::Missing));
        assert!(g.first_report("other", Unreadable::Missing), "per secret");
        assert!(g.first_report("k", Unreadable::NotAFile), "a new failure");
        assert!(!g.first_report("k", Unreadable::NotAFile));
        assert!(g.recovered("k"));
        assert!(!g.recovered("k"));
        assert!(g.first_report("k", Unreadable::NotAFile), "failing again");
    }

    #[test]
    fn debug_shows_names_and_sources_only() {
        let g = grants(&[
            ("a", SecretSource::Env("VAR".into())),
            ("b", SecretSource::File("/run/secret".into())),
        ]);
        assert_eq!(
            format!("{g:?}"),
            r#"{"a": Env("VAR"), "b": File("/run/secret")}"#
        );
    }
}
