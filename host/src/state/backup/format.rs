//! The byte layout of a backup (described in the parent module's documentation): the
//! [`Writer`] that encodes one, and [`read`], which decodes and checks one record by record
//! with bounded memory, handing what it finds to a [`Visit`].

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::error::BackupError;
use super::{BackupSummary, valid_file_name};

/// The first bytes of every backup.
pub(super) const MAGIC: [u8; 8] = *b"CTXHBKUP";
/// The version of the layout this build writes and reads.
pub(super) const VERSION: u32 = 1;
/// Bytes of the header: magic, version, snapshot time.
pub(super) const HEADER_LEN: usize = 8 + 4 + 8;
/// Bytes of a record's framing: tag and payload length.
pub(super) const FRAME_LEN: usize = 1 + 4;
/// Longest payload of one record. A damaged length cannot make a reader allocate more.
pub(super) const MAX_PAYLOAD: u32 = 1 << 20;
/// Longest key of an entry.
pub(super) const MAX_KEY: usize = 64 * 1024;
/// Longest table or file name.
pub(super) const MAX_NAME: usize = 4096;
/// Most bytes of a value or file the writer puts in one record.
pub(super) const CHUNK: usize = 256 * 1024;
/// Bytes of the trailer's payload: four counts and the SHA-256.
pub(super) const TRAILER_LEN: u32 = 4 * 8 + 32;

/// Record tags.
pub(super) const TAG_TABLE: u8 = 0x01;
pub(super) const TAG_ENTRY: u8 = 0x02;
pub(super) const TAG_FILE: u8 = 0x03;
pub(super) const TAG_DATA: u8 = 0x04;
pub(super) const TAG_TRAILER: u8 = 0xFF;

/// The key type of a table (every value is bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TableKind {
    /// UTF-8 string keys.
    Str,
    /// `u64` keys (8 bytes, little-endian, in the backup).
    U64,
}

impl TableKind {
    fn byte(self) -> u8 {
        match self {
            TableKind::Str => 0,
            TableKind::U64 => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(TableKind::Str),
            1 => Some(TableKind::U64),
            _ => None,
        }
    }
}

/// Encodes a backup into `out`, hashing every byte, record by record.
pub(super) struct Writer<W: Write> {
    out: W,
    hasher: Sha256,
    bytes: u64,
    taken_at_ms: u64,
    tables: u64,
    entries: u64,
    files: u64,
    file_bytes: u64,
    /// A record being assembled (framing and payload are written with one call).
    record: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Start a backup of a snapshot taken at `taken_at_ms` (milliseconds since the epoch).
    pub(super) fn new(out: W, taken_at_ms: u64) -> Result<Self, BackupError> {
        let mut w = Writer {
            out,
            hasher: Sha256::new(),
            bytes: 0,
            taken_at_ms,
            tables: 0,
            entries: 0,
            files: 0,
            file_bytes: 0,
            record: Vec::with_capacity(CHUNK + 1024),
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&taken_at_ms.to_le_bytes());
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.out.write_all(bytes).map_err(BackupError::Write)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Write one record: `tag`, then the payload the closure appends.
    fn emit(&mut self, tag: u8, payload: impl FnOnce(&mut Vec<u8>)) -> Result<(), BackupError> {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        record.push(tag);
        record.extend_from_slice(&[0; 4]);
        payload(&mut record);
        let len = record.len() - FRAME_LEN;
        debug_assert!(len <= MAX_PAYLOAD as usize);
        record[1..FRAME_LEN].copy_from_slice(&(len as u32).to_le_bytes());
        let written = self.put(&record);
        self.record = record;
        written
    }

    /// Begin table `name`, which holds `entries` entries (they follow).
    pub(super) fn table(
        &mut self,
        kind: TableKind,
        name: &str,
        entries: u64,
    ) -> Result<(), BackupError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(BackupError::Unsupported(format!(
                "a table name of {} bytes (the limit is {MAX_NAME})",
                name.len()
            )));
        }
        self.tables += 1;
        self.emit(TAG_TABLE, |p| {
            p.push(kind.byte());
            p.extend_from_slice(&entries.to_le_bytes());
            p.extend_from_slice(name.as_bytes());
        })
    }

    /// One entry of the current table; a long value continues in data records.
    pub(super) fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        if key.len() > MAX_KEY {
            return Err(BackupError::Unsupported(format!(
                "a key of {} bytes (the limit is {MAX_KEY})",
                key.len()
            )));
        }
        self.entries += 1;
        let inline = value.len().min(CHUNK);
        self.emit(TAG_ENTRY, |p| {
            p.extend_from_slice(&(key.len() as u32).to_le_bytes());
            p.extend_from_slice(key);
            p.extend_from_slice(&(value.len() as u64).to_le_bytes());
            p.extend_from_slice(&value[..inline]);
        })?;
        for chunk in value[inline..].chunks(CHUNK) {
            self.emit(TAG_DATA, |p| p.extend_from_slice(chunk))?;
        }
        Ok(())
    }

    /// A file of `size` bytes, read from `src`, stored under `name` (a relative path).
    pub(super) fn file(
        &mut self,
        name: &str,
        size: u64,
        mut src: impl Read,
    ) -> Result<(), BackupError> {
        let file_error = |source| BackupError::File {
            name: name.to_string(),
            source,
        };
        if !valid_file_name(name) {
            return Err(BackupError::Unsupported(format!("the file name {name:?}")));
        }
        self.files += 1;
        self.file_bytes += size;
        self.emit(TAG_FILE, |p| {
            p.extend_from_slice(&size.to_le_bytes());
            p.extend_from_slice(name.as_bytes());
        })?;
        let mut left = size;
        let mut buf = vec![0u8; CHUNK];
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let got = read_full(&mut src, &mut buf[..want]).map_err(file_error)?;
            if got < want {
                return Err(file_error(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file is shorter than the {size} bytes it had when the backup began"
                    ),
                )));
            }
            self.emit(TAG_DATA, |p| p.extend_from_slice(&buf[..want]))?;
            left -= want as u64;
        }
        Ok(())
    }

    /// Write the trailer (counts and digest); the writer's output and what it holds.
    pub(super) fn finish(mut self) -> Result<(W, BackupSummary), BackupError> {
        let counts = [self.tables, self.entries, self.files, self.file_bytes];
        let mut head = Vec::with_capacity(FRAME_LEN + 32);
        head.push(TAG_TRAILER);
        head.extend_from_slice(&TRAILER_LEN.to_le_bytes());
        for c in counts {
            head.extend_from_slice(&c.to_le_bytes());
        }
        self.put(&head)?;
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        self.out.write_all(&digest).map_err(BackupError::Write)?;
        self.bytes += 32;
        self.out.flush().map_err(BackupError::Write)?;
        let summary = BackupSummary {
            version: VERSION,
            taken_at_ms: self.taken_at_ms,
            bytes: self.bytes,
            tables: self.tables,
            entries: self.entries,
            files: self.files,
            file_bytes: self.file_bytes,
            sha256: hex::encode(digest),
        };
        Ok((self.out, summary))
    }
}

/// Read until `buf` is full or the input ends; how many bytes were read.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What a reader of a backup does with its content, as [`read`] finds it (already checked
/// for framing, not yet for the digest, which only the end of the file can confirm).
pub(super) trait Visit {
    /// A table begins; its entries follow.
    fn table(&mut self, _kind: TableKind, _name: &str) -> Result<(), BackupError> {
        Ok(())
    }
    /// An entry of the current table begins; its value follows in [`Visit::data`] calls.
    fn entry(&mut self, _key: &[u8]) -> Result<(), BackupError> {
        Ok(())
    }
    /// A file begins; its bytes follow in [`Visit::data`] calls.
    fn file(&mut self, _name: &str, _size: u64) -> Result<(), BackupError> {
        Ok(())
    }
    /// The next bytes of the current value or file.
    fn data(&mut self, _bytes: &[u8]) -> Result<(), BackupError> {
        Ok(())
    }
    /// The current value or file is complete.
    fn done(&mut self) -> Result<(), BackupError> {
        Ok(())
    }
}

/// The input of [`read`]: counts and hashes what it reads.
struct Input<R> {
    inner: R,
    path: String,
    hasher: Sha256,
    at: u64,
}

impl<R: Read> Input<R> {
    /// Fill `buf`, hashing it; at the end of the input, the error says where it ended and
    /// `inside` what.
    fn fill(&mut self, buf: &mut [u8], inside: &'static str) -> Result<(), BackupError> {
        let got = self.fill_raw(buf)?;
        if got < buf.len() {
            return Err(BackupError::Truncated {
                at: self.at,
                inside,
            });
        }
        Ok(())
    }

    /// Read up to `buf.len()` bytes, hashing them; how many there were.
    fn fill_raw(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let got = read_full(&mut self.inner, buf).map_err(|source| BackupError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.hasher.update(&buf[..got]);
        self.at += got as u64;
        Ok(got)
    }

    /// Read up to `buf.len()` bytes without hashing them (the digest itself).
    fn fill_unhashed(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let got = read_full(&mut self.inner, buf).map_err(|source| BackupError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.at += got as u64;
        Ok(got)
    }
}

fn damaged(at: u64, what: impl Into<String>) -> BackupError {
    BackupError::Damaged {
        at,
        what: what.into(),
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Where the reader is: which table it is in, and what value or file still has bytes to
/// come.
struct Position {
    /// The current table: its name, kind, declared and seen entries.
    table: Option<(String, TableKind, u64, u64)>,
    /// Bytes of the current value or file still to come.
    pending: u64,
    /// Whether files have begun (tables come first).
    in_files: bool,
}

impl Position {
    /// Close the current table, which must hold the entries it declared.
    fn close_table(&mut self, at: u64) -> Result<(), BackupError> {
        if let Some((name, _, declared, seen)) = self.table.take()
            && declared != seen
        {
            return Err(damaged(
                at,
                format!("table {name} declares {declared} entries but holds {seen}"),
            ));
        }
        Ok(())
    }
}

/// Decode and check the backup in `input` (`path` names it in errors), handing its content
/// to `visit`; what it holds once every check passed: magic, version, framing and length
/// bounds, names, the entries of each table, the trailer's counts and digest, and that
/// nothing follows the trailer.
pub(super) fn read(
    input: impl Read,
    path: &str,
    visit: &mut impl Visit,
) -> Result<BackupSummary, BackupError> {
    let mut input = Input {
        inner: input,
        path: path.to_string(),
        hasher: Sha256::new(),
        at: 0,
    };
    let mut header = [0u8; HEADER_LEN];
    let got = input.fill_raw(&mut header[..MAGIC.len()])?;
    if header[..got] != MAGIC[..got] {
        return Err(BackupError::NotABackup);
    }
    if got < MAGIC.len() {
        return Err(BackupError::Truncated {
            at: input.at,
            inside: "inside its header",
        });
    }
    input.fill(&mut header[8..12], "inside its header")?;
    let version = u32_at(&header, 8);
    if version != VERSION {
        return Err(BackupError::Version {
            found: version,
            supported: VERSION,
        });
    }
    input.fill(&mut header[12..20], "inside its header")?;
    let taken_at_ms = u64_at(&header, 12);

    let mut pos = Position {
        table: None,
        pending: 0,
        in_files: false,
    };
    let (mut tables, mut entries, mut files, mut file_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut table_names = BTreeSet::new();
    let mut file_names = BTreeSet::new();
    let mut payload = Vec::new();
    loop {
        let at = input.at;
        let mut frame = [0u8; FRAME_LEN];
        let got = input.fill_raw(&mut frame)?;
        if got == 0 {
            return Err(BackupError::Truncated {
                at,
                inside: "before its trailer",
            });
        }
        if got < FRAME_LEN {
            return Err(BackupError::Truncated {
                at: input.at,
                inside: "inside a record's framing",
            });
        }
        let tag = frame[0];
        let len = u32_at(&frame, 1);
        if len > MAX_PAYLOAD {
            return Err(BackupError::Oversize {
                at,
                len: u64::from(len),
                max: u64::from(MAX_PAYLOAD),
            });
        }
        if tag == TAG_TRAILER {
            if len != TRAILER_LEN {
                return Err(damaged(
                    at,
                    format!("a trailer of {len} bytes (it has {TRAILER_LEN})"),
                ));
            }
            if pos.pending > 0 {
                return Err(damaged(
                    at,
                    format!(
                        "the trailer comes {} bytes before a value or file ends",
                        pos.pending
                    ),
                ));
            }
            pos.close_table(at)?;
            let mut counts = [0u8; 32];
            input.fill(&mut counts, "inside its trailer")?;
            let computed: [u8; 32] = input.hasher.clone().finalize().into();
            let mut digest = [0u8; 32];
            if input.fill_unhashed(&mut digest)? < digest.len() {
                return Err(BackupError::Truncated {
                    at: input.at,
                    inside: "inside its trailer",
                });
            }
            if digest != computed {
                return Err(BackupError::Digest {
                    expected: hex::encode(digest),
                    actual: hex::encode(computed),
                });
            }
            let declared = [
                ("tables", u64_at(&counts, 0), tables),
                ("entries", u64_at(&counts, 8), entries),
                ("component files", u64_at(&counts, 16), files),
                ("bytes of component files", u64_at(&counts, 24), file_bytes),
            ];
            for (what, declared, found) in declared {
                if declared != found {
                    return Err(BackupError::Counts {
                        what,
                        declared,
                        found,
                    });
                }
            }
            let mut extra = [0u8; 1];
            if input.fill_unhashed(&mut extra)? > 0 {
                return Err(damaged(
                    input.at - 1,
                    "bytes follow its trailer (two files joined?)",
                ));
            }
            return Ok(BackupSummary {
                version,
                taken_at_ms,
                bytes: input.at,
                tables,
                entries,
                files,
                file_bytes,
                sha256: hex::encode(computed),
            });
        }
        payload.resize(len as usize, 0);
        input.fill(&mut payload, "inside a record")?;
        let p = payload.as_slice();
        if tag != TAG_DATA && pos.pending > 0 {
            return Err(damaged(
                at,
                format!(
                    "a new record begins {} bytes before a value or file ends",
                    pos.pending
                ),
            ));
        }
        match tag {
            TAG_TABLE => {
                if pos.in_files {
                    return Err(damaged(at, "a table after the component files"));
                }
                pos.close_table(at)?;
                if p.len() < 10 || p.len() > 9 + MAX_NAME {
                    return Err(damaged(at, format!("a table record of {len} bytes")));
                }
                let kind = TableKind::from_byte(p[0])
                    .ok_or_else(|| damaged(at, format!("unknown table kind {}", p[0])))?;
                let declared = u64_at(p, 1);
                let name = std::str::from_utf8(&p[9..])
                    .map_err(|_| damaged(at, "a table name that is not UTF-8"))?;
                if !table_names.insert(name.to_string()) {
                    return Err(damaged(at, format!("table {name} appears twice")));
                }
                tables += 1;
                visit.table(kind, name)?;
                pos.table = Some((name.to_string(), kind, declared, 0));
            }
            TAG_ENTRY => {
                let Some((name, kind, _, seen)) = pos.table.as_mut() else {
                    return Err(damaged(at, "an entry outside any table"));
                };
                if p.len() < 12 {
                    return Err(damaged(at, format!("an entry record of {len} bytes")));
                }
                let key_len = u32_at(p, 0) as usize;
                if key_len > MAX_KEY || 4 + key_len + 8 > p.len() {
                    return Err(damaged(
                        at,
                        format!("an entry with a key of {key_len} bytes"),
                    ));
                }
                let key = &p[4..4 + key_len];
                match kind {
                    TableKind::Str if std::str::from_utf8(key).is_err() => {
                        return Err(damaged(at, format!("a key of {name} that is not UTF-8")));
                    }
                    TableKind::U64 if key.len() != 8 => {
                        return Err(damaged(
                            at,
                            format!("a key of {name} of {key_len} bytes (it has 8)"),
                        ));
                    }
                    _ => {}
                }
                let value_len = u64_at(p, 4 + key_len);
                let inline = &p[4 + key_len + 8..];
                if inline.len() as u64 > value_len {
                    return Err(damaged(
                        at,
                        format!(
                            "an entry with {} bytes of a value of {value_len}",
                            inline.len()
                        ),
                    ));
                }
                *seen += 1;
                entries += 1;
                visit.entry(key)?;
                visit.data(inline)?;
                pos.pending = value_len - inline.len() as u64;
                if pos.pending == 0 {
                    visit.done()?;
                }
            }
            TAG_FILE => {
                pos.close_table(at)?;
                pos.in_files = true;
                if p.len() < 9 || p.len() > 8 + MAX_NAME {
                    return Err(damaged(at, format!("a file record of {len} bytes")));
                }
                let size = u64_at(p, 0);
                let name = std::str::from_utf8(&p[8..])
                    .ok()
                    .filter(|n| valid_file_name(n))
                    .ok_or_else(|| damaged(at, "a file name that is not a plain relative path"))?;
                if !file_names.insert(name.to_string()) {
                    return Err(damaged(at, format!("file {name} appears twice")));
                }
                files += 1;
                file_bytes = file_bytes.saturating_add(size);
                visit.file(name, size)?;
                pos.pending = size;
                if size == 0 {
                    visit.done()?;
                }
            }
            TAG_DATA => {
                if p.is_empty() || p.len() as u64 > pos.pending {
                    return Err(damaged(
                        at,
                        format!(
                            "a data record of {len} bytes where {} are expected",
                            pos.pending
                        ),
                    ));
                }
                visit.data(p)?;
                pos.pending -= p.len() as u64;
                if pos.pending == 0 {
                    visit.done()?;
                }
            }
            other => return Err(damaged(at, format!("unknown record tag {other:#04x}"))),
        }
    }
}
