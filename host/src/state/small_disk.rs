//! A disk for tests: the database file in memory, with a capacity beyond which writes fail
//! as they do on a full filesystem, and a switch that makes every access fail as a broken
//! device does. Both can change while a database uses it, and the same disk can be opened
//! again, so tests can fill it, free space, and watch the host recover.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Builder, Database, DatabaseError, StorageBackend};

use super::db::Storage;
use crate::sync::lock;

#[derive(Debug, Clone, Default)]
pub(super) struct SmallDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    capacity: Arc<AtomicU64>,
    broken: Arc<AtomicBool>,
}

impl SmallDisk {
    pub(super) fn new(capacity: u64) -> Self {
        let disk = SmallDisk::default();
        disk.capacity.store(capacity, Ordering::SeqCst);
        disk
    }

    /// Bytes the database file takes now.
    pub(super) fn used(&self) -> u64 {
        lock(&self.bytes).len() as u64
    }

    pub(super) fn set_capacity(&self, capacity: u64) {
        self.capacity.store(capacity, Ordering::SeqCst);
    }

    pub(super) fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    /// Open (or create) the database on this disk.
    pub(super) fn open(&self) -> Result<Database, DatabaseError> {
        Builder::new().create_with_backend(self.clone())
    }

    /// Whether `bytes` more fit.
    pub(super) fn room(&self, bytes: usize) -> io::Result<()> {
        self.check()?;
        self.fits(self.used() + bytes as u64)
    }

    /// The database's storage on this disk.
    pub(super) fn storage(&self) -> Storage {
        let (open, room) = (self.clone(), self.clone());
        Storage {
            open: Box::new(move || open.open()),
            room: Box::new(move |bytes| room.room(bytes)),
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(io::Error::other("the device is gone"));
        }
        Ok(())
    }

    fn fits(&self, end: u64) -> io::Result<()> {
        if end > self.capacity.load(Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "out of range")
}

impl StorageBackend for SmallDisk {
    fn len(&self) -> io::Result<u64> {
        self.check()?;
        Ok(self.used())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.check()?;
        let bytes = lock(&self.bytes);
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start + out.len();
        out.copy_from_slice(bytes.get(start..end).ok_or_else(out_of_range)?);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        let mut bytes = lock(&self.bytes);
        if len > bytes.len() as u64 {
            self.fits(len)?;
        }
        bytes.resize(usize::try_from(len).map_err(|_| out_of_range())?, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        let mut bytes = lock(&self.bytes);
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start + data.len();
        bytes
            .get_mut(start..end)
            .ok_or_else(out_of_range)?
            .copy_from_slice(data);
        Ok(())
    }
}
