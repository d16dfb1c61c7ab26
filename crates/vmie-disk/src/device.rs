//! The block-device abstraction every layer reads and writes through.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::DiskError;

/// A byte-addressed device of fixed length: a raw image file, a partition
/// window onto one, or the copy-on-write overlay in front of both.
///
/// Reads and writes are exact: a range that does not lie entirely inside
/// `0..len()` is an [`DiskError::OutOfBounds`] error naming the device, never a
/// short read. Methods take `&self` so one device can be shared (through
/// `Arc`) by the partition table, the probe and a filesystem at once.
pub trait Device: Send + Sync + fmt::Debug {
    /// Length in bytes.
    fn len(&self) -> u64;

    /// Whether the device has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;

    /// Write `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError>;

    /// Flush written bytes to stable storage.
    fn sync(&self) -> Result<(), DiskError> {
        Ok(())
    }

    /// Human description for error messages, such as `disk.raw partition 2`.
    fn describe(&self) -> String;
}

/// Check that `offset..offset+len` lies inside a device of `dev_len` bytes.
pub fn check_range(
    what: &dyn Fn() -> String,
    dev_len: u64,
    offset: u64,
    len: usize,
) -> Result<(), DiskError> {
    let len64 = u64::try_from(len).map_err(|_| DiskError::OutOfBounds {
        device: what(),
        offset,
        len: u64::MAX,
        size: dev_len,
    })?;
    match offset.checked_add(len64) {
        Some(end) if end <= dev_len => Ok(()),
        _ => Err(DiskError::OutOfBounds {
            device: what(),
            offset,
            len: len64,
            size: dev_len,
        }),
    }
}

/// Read `len` bytes at `offset` into a new vector, refusing ranges outside the
/// device before allocating (so a corrupted length field cannot make us
/// allocate more than the device holds).
pub fn read_vec(dev: &dyn Device, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
    check_range(&|| dev.describe(), dev.len(), offset, len)?;
    let mut buf = vec![0u8; len];
    dev.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Bytes and calls read, shared by every file one image is made of (its
/// extents, its backing files, the members of one archive), so the image's
/// [`FileDevice::read_stats`] counts them all.
#[derive(Debug, Default)]
struct ReadStats {
    bytes: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
}

/// A raw disk image file, or a byte range of one (a member of an archive,
/// see [`FileDevice::member`]).
#[derive(Debug)]
pub struct FileDevice {
    path: PathBuf,
    file: File,
    /// Where this device starts in the file (0 but for a member).
    base: u64,
    len: u64,
    writable: bool,
    /// The member's name inside the archive `path`.
    member: Option<String>,
    /// Bytes and calls read so far (statistics: `VMIE_STATS`, benchmarks).
    stats: Arc<ReadStats>,
}

impl FileDevice {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> Result<Self, DiskError> {
        Self::open_with(path, false, Arc::default())
    }

    /// Open `path` for reading and writing.
    pub fn open_rw(path: &Path) -> Result<Self, DiskError> {
        Self::open_with(path, true, Arc::default())
    }

    /// Open `path` read-only, counting its reads in the statistics of
    /// `with` (a file that is part of the same image: an extent, a backing
    /// file).
    pub fn open_counted_with(path: &Path, with: &FileDevice) -> Result<Self, DiskError> {
        Self::open_with(path, false, with.stats.clone())
    }

    fn open_with(path: &Path, writable: bool, stats: Arc<ReadStats>) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| DiskError::io(path.display().to_string(), "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| DiskError::io(path.display().to_string(), "stat", e))?;
        if meta.is_dir() {
            return Err(DiskError::NotAnImage {
                path: path.display().to_string(),
                why: "it is a directory".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            base: 0,
            len: meta.len(),
            writable,
            member: None,
            stats,
        })
    }

    /// A read-only device over `len` bytes at `start` of this one: the
    /// member `name` of an archive. Its reads count in this device's
    /// statistics. Refused when the range does not lie inside this device.
    pub fn member(&self, start: u64, len: u64, name: &str) -> Result<Self, DiskError> {
        match start.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(DiskError::OutOfBounds {
                    device: self.describe(),
                    offset: start,
                    len,
                    size: self.len,
                })
            }
        }
        let file = self
            .file
            .try_clone()
            .map_err(|e| DiskError::io(self.describe(), "duplicate the file handle", e))?;
        let member = match &self.member {
            Some(outer) => format!("{outer}/{name}"),
            None => name.to_string(),
        };
        Ok(Self {
            path: self.path.clone(),
            file,
            base: self.base + start,
            len,
            writable: false,
            member: Some(member),
            stats: self.stats.clone(),
        })
    }

    /// The member's name when this device is a member of an archive
    /// (see [`FileDevice::member`]); its [`FileDevice::path`] is then the
    /// archive's.
    pub fn member_name(&self) -> Option<&str> {
        self.member.as_deref()
    }

    /// (bytes, calls) read from the image so far, by anything (also from the
    /// files opened with [`FileDevice::open_counted_with`] this one and from
    /// its members).
    pub fn read_stats(&self) -> (u64, u64) {
        (
            self.stats.bytes.load(std::sync::atomic::Ordering::Relaxed),
            self.stats.calls.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Whether this device and `other` count their reads together (one
    /// image's files, one archive's members): sum their
    /// [`FileDevice::read_stats`] once.
    pub fn shares_read_stats(&self, other: &FileDevice) -> bool {
        Arc::ptr_eq(&self.stats, &other.stats)
    }

    /// The image's path as given (the archive's, for a member).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for identity checks; the whole archive for a member).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Device for FileDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        self.stats
            .bytes
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let at = self.base + offset;
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, at).map_err(|e| {
            DiskError::io(
                self.describe(),
                format!("read {} bytes at offset {offset}", buf.len()),
                e,
            )
        })
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        if !self.writable {
            return Err(DiskError::ReadOnly {
                device: self.describe(),
            });
        }
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        let at = self.base + offset;
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, at).map_err(|e| {
            DiskError::io(
                self.describe(),
                format!("write {} bytes at offset {offset}", buf.len()),
                e,
            )
        })
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.file
            .sync_all()
            .map_err(|e| DiskError::io(self.describe(), "fsync", e))
    }

    fn describe(&self) -> String {
        match &self.member {
            Some(m) => format!("{} member {m}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

/// A device held in memory, for tests and for small images built on the fly.
#[derive(Debug)]
pub struct MemDevice {
    name: String,
    data: Mutex<Vec<u8>>,
}

impl MemDevice {
    /// A device holding `data`, named `name` in error messages.
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            data: Mutex::new(data),
        }
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

impl Device for MemDevice {
    fn len(&self) -> u64 {
        self.data.lock().map(|d| d.len() as u64).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let data = self.data.lock().map_err(|_| DiskError::Poisoned {
            device: self.name.clone(),
        })?;
        check_range(&|| self.describe(), data.len() as u64, offset, buf.len())?;
        let start = usize::try_from(offset).map_err(|_| DiskError::OutOfBounds {
            device: self.describe(),
            offset,
            len: buf.len() as u64,
            size: data.len() as u64,
        })?;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        let mut data = self.data.lock().map_err(|_| DiskError::Poisoned {
            device: self.name.clone(),
        })?;
        check_range(&|| self.name.clone(), data.len() as u64, offset, buf.len())?;
        let start = usize::try_from(offset).map_err(|_| DiskError::OutOfBounds {
            device: self.name.clone(),
            offset,
            len: buf.len() as u64,
            size: data.len() as u64,
        })?;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// A bounds-checked window `start..start+len` onto another device: a partition.
///
/// Every access is checked against the window, so a filesystem parser working
/// on a partition can never read or write a neighbouring partition.
#[derive(Debug, Clone)]
pub struct Window {
    inner: Arc<dyn Device>,
    start: u64,
    len: u64,
    name: String,
}

impl Window {
    /// A window of `len` bytes at `start` of `inner`, called `name` in errors.
    /// Refused when the window does not lie inside `inner`.
    pub fn new(
        inner: Arc<dyn Device>,
        start: u64,
        len: u64,
        name: impl Into<String>,
    ) -> Result<Self, DiskError> {
        let name = name.into();
        match start.checked_add(len) {
            Some(end) if end <= inner.len() => Ok(Self {
                inner,
                start,
                len,
                name,
            }),
            _ => Err(DiskError::OutOfBounds {
                device: inner.describe(),
                offset: start,
                len,
                size: inner.len(),
            }),
        }
    }

    /// Offset of the window on the underlying device.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl Device for Window {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        self.inner.read_at(self.start + offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        self.inner.write_at(self.start + offset, buf)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.inner.sync()
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Adapts a [`Device`] to `std::io::{Read, Write, Seek}` for crates (mbrman,
/// gpt) that want a stream. Reads past the end return 0 bytes (EOF), never data
/// from elsewhere.
#[derive(Debug)]
pub struct DeviceCursor {
    dev: Arc<dyn Device>,
    pos: u64,
}

impl DeviceCursor {
    /// A cursor at offset 0 of `dev`.
    pub fn new(dev: Arc<dyn Device>) -> Self {
        Self { dev, pos: 0 }
    }
}

impl std::io::Read for DeviceCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let remaining = self.dev.len().saturating_sub(self.pos);
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.dev
            .read_at(self.pos, &mut buf[..n])
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Write for DeviceCursor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.dev
            .write_at(self.pos, buf)
            .map_err(std::io::Error::other)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for DeviceCursor {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.dev.len().checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek out of range",
            )),
        }
    }
}
