//! ext2, ext3 and ext4 behind the guest file API.
//!
//! Reading goes through [ext4-view](https://crates.io/crates/ext4-view), an
//! independent, read-only implementation, over our [`Device`] (so reads see
//! the overlay's pending writes). ext4-view replays a journal that needs
//! recovery in memory when it loads, so reading a dirty ext3/4 volume shows
//! the state the kernel would see; it never writes.
//!
//! Before handing the device to ext4-view we check the superblock's sizes
//! ourselves, so a corrupted block count cannot make it allocate for a
//! filesystem larger than its partition.
//!
//! Writing (the `GuestFs` write primitives) is our own code: see the `write`
//! module. Each write operation is one transaction that changes nothing on
//! the device unless it succeeds as a whole; after it, the ext4-view reader
//! is re-loaded so reads see the new state, and [`Ext4Fs::verify_paths`]
//! re-reads changed paths through ext4-view as an independent self-check.
#![forbid(unsafe_code)]

mod csum;
mod dir;
mod dxhash;
mod geo;
mod inode;
mod tx;
mod write;

use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};
use vmie_disk::Device;
use vmie_guestfs::{
    DirEntry, FileType, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs, Timestamp,
};

const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

/// Adapter: ext4-view reads through our device.
struct DevReader(Arc<dyn Device>);

impl Ext4Read for DevReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0
            .read_at(start_byte, dst)
            .map_err(|e| Box::new(e) as _)
    }
}

/// A mounted-in-userspace ext2/3/4 filesystem.
pub struct Ext4Fs {
    fs: Ext4,
    dev: Arc<dyn Device>,
    location: String,
    limits: Limits,
}

impl std::fmt::Debug for Ext4Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Fs")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Ext4Fs {
    /// Open the filesystem on `dev`, named `location` (image and partition) in
    /// messages.
    pub fn open(dev: Arc<dyn Device>, location: impl Into<String>) -> Result<Self, FsError> {
        let location = location.into();
        let corrupt = |place: &str, detail: String| FsError::Corrupt {
            fs: location.clone(),
            place: place.to_string(),
            detail,
        };
        let mut sb = [0u8; 1024];
        dev.read_at(SUPERBLOCK_OFFSET, &mut sb)?;
        if le16(&sb, 0x38) != EXT4_MAGIC {
            return Err(corrupt(
                "superblock (offset 1024)",
                "no ext2/3/4 magic".into(),
            ));
        }
        let log_block = le32(&sb, 0x18);
        if log_block > 6 {
            return Err(corrupt(
                "superblock (offset 1024)",
                format!("block size 2^(10+{log_block}) is out of range"),
            ));
        }
        let block_size = 1024u64 << log_block;
        let mut blocks = u64::from(le32(&sb, 0x04));
        if le32(&sb, 0x60) & INCOMPAT_64BIT != 0 {
            blocks |= u64::from(le32(&sb, 0x150)) << 32;
        }
        let fs_bytes = blocks.checked_mul(block_size);
        match fs_bytes {
            Some(n) if n <= dev.len() => {}
            _ => {
                return Err(corrupt(
                    "superblock (offset 1024)",
                    format!(
                        "{blocks} blocks of {block_size} bytes do not fit in the {} bytes of the volume",
                        dev.len()
                    ),
                ))
            }
        }
        let fs = Ext4::load(Box::new(DevReader(Arc::clone(&dev))))
            .map_err(|e| map_err(&location, "/", e))?;
        Ok(Self {
            fs,
            dev,
            location,
            limits: Limits::default(),
        })
    }

    /// Replace the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Re-load the ext4-view reader so it sees what was written.
    fn reload(&mut self) -> Result<(), FsError> {
        self.fs = Ext4::load(Box::new(DevReader(Arc::clone(&self.dev))))
            .map_err(|e| map_err(&self.location, "/", e))?;
        Ok(())
    }

    /// Run one write transaction, then re-load the reader.
    fn write_op(
        &mut self,
        op: impl FnOnce(&mut tx::Tx<'_>) -> Result<(), FsError>,
    ) -> Result<(), FsError> {
        write::run(self.dev.as_ref(), &self.location, op)?;
        self.reload()
    }

    /// Whether this filesystem may be written, and if not, why: the same
    /// feature and state gate every write operation applies first.
    pub fn check_writable(&self) -> Result<(), FsError> {
        write::check(self.dev.as_ref(), &self.location)
    }

    /// Self-check: re-load an independent ext4-view reader over the same
    /// device and compare every path with what it should hold (`None`: must
    /// not exist). A mismatch is a [`FsError::Corrupt`] naming the path.
    pub fn verify_paths(&self, expected: &[(GuestPath, Option<Vec<u8>>)]) -> Result<(), FsError> {
        let fresh = Ext4::load(Box::new(DevReader(Arc::clone(&self.dev))))
            .map_err(|e| map_err(&self.location, "/", e))?;
        for (path, want) in expected {
            let bytes = path.to_bytes();
            let p = self.path(&bytes)?;
            let got = match fresh.read(p) {
                Ok(d) => Some(d),
                Err(Ext4Error::NotFound) => None,
                Err(e) => return Err(map_err(&self.location, &path.to_string(), e)),
            };
            if &got != want {
                return Err(FsError::Corrupt {
                    fs: self.location.clone(),
                    place: path.to_string(),
                    detail: match (&got, want) {
                        (None, Some(_)) => "self-check: the file is missing after the write".into(),
                        (Some(_), None) => "self-check: the file still exists".into(),
                        (Some(g), Some(w)) => format!(
                            "self-check: read back {} bytes that differ from the {} written",
                            g.len(),
                            w.len()
                        ),
                        (None, None) => String::new(),
                    },
                });
            }
        }
        Ok(())
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> String {
        self.fs.uuid().to_string()
    }

    /// The filesystem label, lossily as UTF-8.
    pub fn label(&self) -> String {
        self.fs.label().display().to_string()
    }
}

fn map_err(fs: &str, path: &str, e: Ext4Error) -> FsError {
    let fs = fs.to_string();
    let path = path.to_string();
    match e {
        Ext4Error::NotFound => FsError::NotFound { fs, path },
        Ext4Error::NotADirectory => FsError::NotADirectory { fs, path },
        Ext4Error::IsADirectory => FsError::IsADirectory { fs, path },
        Ext4Error::IsASpecialFile => FsError::NotAFile { fs, path },
        Ext4Error::NotASymlink => FsError::NotASymlink { fs, path },
        Ext4Error::TooManySymlinks => FsError::SymlinkLoop { fs, path, hops: 40 },
        Ext4Error::PathTooLong | Ext4Error::MalformedPath => FsError::PathTooLong { fs, path },
        Ext4Error::Encrypted => FsError::Unsupported {
            fs,
            op: format!("read {path}"),
            why: "the file is encrypted (fscrypt)".into(),
        },
        Ext4Error::Incompatible(i) => FsError::Unsupported {
            fs,
            op: format!("read {path}"),
            why: format!("incompatible filesystem: {i}"),
        },
        other => FsError::Corrupt {
            fs,
            place: path,
            detail: other.to_string(),
        },
    }
}

fn ts(t: ext4_view::Timestamp) -> Timestamp {
    Timestamp {
        secs: t.seconds(),
        nanos: t.nanoseconds(),
    }
}

fn file_type(t: ext4_view::FileType) -> FileType {
    if t.is_regular_file() {
        FileType::Regular
    } else if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_char_dev() {
        FileType::CharDevice
    } else if t.is_block_dev() {
        FileType::BlockDevice
    } else if t.is_fifo() {
        FileType::Fifo
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::Unknown
    }
}

impl Ext4Fs {
    fn path<'a>(&self, path: &'a [u8]) -> Result<ext4_view::Path<'a>, FsError> {
        ext4_view::Path::try_from(path).map_err(|_| FsError::PathTooLong {
            fs: self.location.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
        })
    }
}

impl GuestFs for Ext4Fs {
    fn kind(&self) -> &'static str {
        "ext4"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        let bytes = path.to_bytes();
        let m = self
            .fs
            .symlink_metadata(self.path(&bytes)?)
            .map_err(|e| map_err(&self.location, &path.to_string(), e))?;
        Ok(Metadata {
            file_type: file_type(m.file_type()),
            mode: u32::from(m.mode()),
            uid: m.uid(),
            gid: m.gid(),
            size: m.len(),
            atime: ts(m.accessed()),
            mtime: ts(m.modified()),
            ctime: ts(m.modified()),
            inode: None,
            nlink: None,
            // ext4-view does not read extended attributes.
            xattrs: None,
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        let bytes = path.to_bytes();
        let err = |e| map_err(&self.location, &path.to_string(), e);
        let mut out = Vec::new();
        for entry in self.fs.read_dir(self.path(&bytes)?).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().as_ref().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            if out.len() >= self.limits.max_dir_entries {
                return Err(FsError::Corrupt {
                    fs: self.location.clone(),
                    place: path.to_string(),
                    detail: format!(
                        "more than {} directory entries",
                        self.limits.max_dir_entries
                    ),
                });
            }
            out.push(DirEntry {
                name,
                file_type: entry
                    .file_type()
                    .map(file_type)
                    .unwrap_or(FileType::Unknown),
            });
        }
        Ok(out)
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        let m = self.symlink_metadata(path)?;
        match m.file_type {
            FileType::Regular => {}
            FileType::Directory => {
                return Err(FsError::IsADirectory {
                    fs: self.location.clone(),
                    path: path.to_string(),
                })
            }
            _ => {
                return Err(FsError::NotAFile {
                    fs: self.location.clone(),
                    path: path.to_string(),
                })
            }
        }
        if m.size > limit {
            return Err(FsError::TooLarge {
                fs: self.location.clone(),
                path: path.to_string(),
                size: m.size,
                limit,
            });
        }
        let bytes = path.to_bytes();
        self.fs
            .read(self.path(&bytes)?)
            .map_err(|e| map_err(&self.location, &path.to_string(), e))
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        let bytes = path.to_bytes();
        let target = self
            .fs
            .read_link(self.path(&bytes)?)
            .map_err(|e| map_err(&self.location, &path.to_string(), e))?;
        Ok(target.as_ref().to_vec())
    }

    /// Replace the contents of an existing regular file, keeping its inode
    /// number, mode, owner, timestamps other than mtime/ctime, and xattrs.
    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        self.write_op(|tx| write::replace_file(tx, path, data))
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        self.write_op(|tx| write::create(tx, path, write::NewKindArg::File(data), attrs))
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        self.write_op(|tx| write::rename(tx, from, to))
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        self.write_op(|tx| write::remove(tx, path))
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        self.write_op(|tx| write::create(tx, path, write::NewKindArg::Dir, attrs))
    }

    fn symlink(
        &mut self,
        path: &GuestPath,
        target: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        self.write_op(|tx| write::create(tx, path, write::NewKindArg::Symlink(target), attrs))
    }
}
