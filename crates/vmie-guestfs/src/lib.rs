//! The guest file API.
//!
//! Every filesystem crate implements [`GuestFs`] with *primitives* on
//! already-resolved paths (every component but the last is a real directory,
//! and no symlink is followed by the filesystem itself). Path resolution with
//! symlinks happens once, here, in [`resolve`], so every filesystem confines
//! reads to the guest the same way:
//!
//! - absolute symlink targets resolve against the guest root, never the host's;
//! - `..` at the guest root stays at the guest root;
//! - a hop limit ([`Limits::max_symlink_hops`]) stops loops.
//!
//! [`GuestFsExt`] adds the following-symlinks conveniences (`metadata`,
//! `read`, `list`, ...) on top. [`MemFs`] is an in-memory implementation for
//! tests of the layers above.
#![forbid(unsafe_code)]

mod error;
mod memfs;
mod mounts;
mod path;
mod subdir;

pub use error::FsError;
pub use memfs::MemFs;
pub use mounts::Mounts;
pub use path::GuestPath;
pub use subdir::SubdirFs;

use std::fmt;

/// Kinds of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// Something the filesystem did not say.
    Unknown,
}

impl FileType {
    /// The `ls -l` type letter.
    pub fn letter(self) -> char {
        match self {
            Self::Regular => '-',
            Self::Directory => 'd',
            Self::Symlink => 'l',
            Self::CharDevice => 'c',
            Self::BlockDevice => 'b',
            Self::Fifo => 'p',
            Self::Socket => 's',
            Self::Unknown => '?',
        }
    }

    /// From the file-type bits of a Unix `st_mode`.
    pub fn from_mode(mode: u32) -> Self {
        match mode & 0o170000 {
            0o100000 => Self::Regular,
            0o040000 => Self::Directory,
            0o120000 => Self::Symlink,
            0o020000 => Self::CharDevice,
            0o060000 => Self::BlockDevice,
            0o010000 => Self::Fifo,
            0o140000 => Self::Socket,
            _ => Self::Unknown,
        }
    }
}

/// A point in time: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Full name with namespace, e.g. `security.selinux`.
    pub name: Vec<u8>,
    /// Raw value.
    pub value: Vec<u8>,
}

/// What a filesystem knows about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// File type.
    pub file_type: FileType,
    /// Permission bits (`0o7777` part of `st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of contents.
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Inode number, where the filesystem has one and the reader shows it.
    pub inode: Option<u64>,
    /// Hard link count, where known.
    pub nlink: Option<u64>,
    /// Extended attributes; `None` where this reader cannot read them.
    pub xattrs: Option<Vec<Xattr>>,
}

impl Metadata {
    /// `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        let t = match self.file_type {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
            FileType::Unknown => 0,
        };
        t | (self.mode & 0o7777)
    }

    /// The SELinux label, if the reader has xattrs and the file has one.
    pub fn selinux_label(&self) -> Option<&[u8]> {
        self.xattrs
            .as_ref()?
            .iter()
            .find(|x| x.name == b"security.selinux")
            .map(|x| x.value.as_slice())
    }
}

/// One directory entry (`.` and `..` are never listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Type, as the directory records it.
    pub file_type: FileType,
}

/// Attributes of a file to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttrs {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes to set (e.g. `security.selinux`).
    pub xattrs: Vec<Xattr>,
}

impl NewAttrs {
    /// The attributes of an existing file, to create another like it (a
    /// backup, a renamed copy): mode, owner and xattrs.
    pub fn like(m: &Metadata) -> Self {
        Self {
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            xattrs: m.xattrs.clone().unwrap_or_default(),
        }
    }
}

impl Default for NewAttrs {
    fn default() -> Self {
        Self {
            mode: 0o644,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Limits that keep hostile images from making us loop or allocate without
/// bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Symlinks followed while resolving one path (Linux: 40).
    pub max_symlink_hops: u32,
    /// Longest path accepted, in bytes (Linux: 4096).
    pub max_path_len: usize,
    /// Largest file [`GuestFsExt::read`] reads into memory.
    pub max_read: u64,
    /// Most entries one directory listing may return.
    pub max_dir_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_symlink_hops: 40,
            max_path_len: 4096,
            max_read: 256 << 20,
            max_dir_entries: 1 << 20,
        }
    }
}

/// A guest filesystem.
///
/// Paths given to these primitives are resolved already: every component but
/// the last is an existing directory reached without symlinks, so an
/// implementation never follows a symlink itself. Use [`resolve`] or the
/// [`GuestFsExt`] methods rather than calling them with user paths.
///
/// Writes go to the filesystem's device (for images: the copy-on-write
/// overlay), never directly to an image. Implementations that do not write
/// keep the default methods, which refuse with [`FsError::Unsupported`].
pub trait GuestFs: fmt::Debug {
    /// Filesystem kind, e.g. `ext4`.
    fn kind(&self) -> &'static str;

    /// Where this filesystem lives, for messages (image and partition).
    fn location(&self) -> String;

    /// Limits in force.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Metadata of `path` itself (a final symlink is not followed).
    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError>;

    /// Entries of directory `path`, without `.` and `..`.
    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError>;

    /// Contents of regular file `path`; refuses files over `limit` bytes
    /// before reading them.
    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError>;

    /// Target of symlink `path`, as stored.
    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError>;

    /// Replace the contents of existing regular file `path`, keeping its inode,
    /// owner, mode and xattrs.
    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        let _ = data;
        Err(self.unsupported("replace_file", path))
    }

    /// Create regular file `path` (which must not exist) with `data`.
    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let _ = (data, attrs);
        Err(self.unsupported("create_file", path))
    }

    /// Rename `from` to `to`, replacing a non-directory `to`.
    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        let _ = to;
        Err(self.unsupported("rename", from))
    }

    /// Remove the file, symlink or empty directory `path`.
    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        Err(self.unsupported("remove", path))
    }

    /// Create directory `path`.
    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        let _ = attrs;
        Err(self.unsupported("mkdir", path))
    }

    /// Create symlink `path` pointing at `target`.
    fn symlink(
        &mut self,
        path: &GuestPath,
        target: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let _ = (target, attrs);
        Err(self.unsupported("symlink", path))
    }

    /// The error the default write methods return.
    fn unsupported(&self, op: &str, path: &GuestPath) -> FsError {
        FsError::Unsupported {
            fs: self.location(),
            op: format!("{op} {path}"),
            why: format!("writing to {} is not implemented", self.kind()),
        }
    }
}

/// A filesystem's 16-byte UUID as blkid prints it
/// (`8-4-4-4-12` lower-case hex). Fewer than 16 bytes give what is there.
pub fn format_uuid(u: &[u8]) -> String {
    let hex = |r: std::ops::Range<usize>| {
        u.get(r)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// `Ok` when `t` is a regular file; otherwise the error reading `path` as a
/// file gives: [`FsError::IsADirectory`] for a directory,
/// [`FsError::NotAFile`] for anything else. `fs` names the filesystem (only
/// called on error).
pub fn require_regular(
    t: FileType,
    path: &GuestPath,
    fs: impl FnOnce() -> String,
) -> Result<(), FsError> {
    match t {
        FileType::Regular => Ok(()),
        FileType::Directory => Err(FsError::IsADirectory {
            fs: fs(),
            path: path.to_string(),
        }),
        _ => Err(FsError::NotAFile {
            fs: fs(),
            path: path.to_string(),
        }),
    }
}

/// Resolve `path` inside the guest.
///
/// Relative paths are taken from the guest root. Symlinks in intermediate
/// components are always followed; the final one only with `follow_final`.
/// An absolute symlink target restarts at the guest root; `..` never leaves
/// it. Returns the resolved path, which need not exist when only its final
/// component is missing (so callers can create it).
pub fn resolve(fs: &dyn GuestFs, path: &[u8], follow_final: bool) -> Result<GuestPath, FsError> {
    let limits = fs.limits();
    let shown = || String::from_utf8_lossy(path).into_owned();
    if path.len() > limits.max_path_len {
        return Err(FsError::PathTooLong {
            fs: fs.location(),
            path: shown(),
        });
    }
    // Components still to walk, in reverse order (next one last).
    let mut todo: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut cur = GuestPath::root();
    let mut hops = 0u32;
    let mut walked = 0usize;
    while let Some(comp) = todo.pop() {
        walked += comp.len() + 1;
        if walked
            > limits
                .max_path_len
                .saturating_mul(limits.max_symlink_hops as usize + 1)
        {
            return Err(FsError::PathTooLong {
                fs: fs.location(),
                path: shown(),
            });
        }
        match comp.as_slice() {
            b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let next = cur.join(&comp);
        let is_last = todo.is_empty();
        if is_last && !follow_final {
            return Ok(next);
        }
        let meta = match fs.symlink_metadata(&next) {
            Ok(m) => m,
            Err(FsError::NotFound { .. }) if is_last => return Ok(next),
            Err(e) => return Err(e),
        };
        match meta.file_type {
            FileType::Symlink => {
                hops += 1;
                if hops > limits.max_symlink_hops {
                    return Err(FsError::SymlinkLoop {
                        fs: fs.location(),
                        path: shown(),
                        hops: limits.max_symlink_hops,
                    });
                }
                let target = fs.read_link(&next)?;
                if target.len() > limits.max_path_len {
                    return Err(FsError::PathTooLong {
                        fs: fs.location(),
                        path: next.to_string(),
                    });
                }
                if target.first() == Some(&b'/') {
                    cur = GuestPath::root();
                }
                todo.extend(
                    target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(<[u8]>::to_vec),
                );
            }
            FileType::Directory => cur = next,
            _ if is_last => return Ok(next),
            _ => {
                return Err(FsError::NotADirectory {
                    fs: fs.location(),
                    path: next.to_string(),
                })
            }
        }
    }
    Ok(cur)
}

/// Path-level operations that follow symlinks inside the guest.
pub trait GuestFsExt: GuestFs {
    /// Metadata of what `path` points at (symlinks followed).
    fn metadata(&self, path: &str) -> Result<(GuestPath, Metadata), FsError> {
        let p = resolve(self.as_dyn(), path.as_bytes(), true)?;
        let m = self.symlink_metadata(&p)?;
        Ok((p, m))
    }

    /// Metadata of `path` itself (a final symlink not followed).
    fn lstat(&self, path: &str) -> Result<(GuestPath, Metadata), FsError> {
        let p = resolve(self.as_dyn(), path.as_bytes(), false)?;
        let m = self.symlink_metadata(&p)?;
        Ok((p, m))
    }

    /// Whether `path` exists (following symlinks).
    fn exists(&self, path: &str) -> Result<bool, FsError> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(FsError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Contents of the regular file at `path` (symlinks followed).
    fn read(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let (p, m) = self.metadata(path)?;
        require_regular(m.file_type, &p, || self.location())?;
        self.read_file(&p, self.limits().max_read)
    }

    /// Entries of the directory at `path` (symlinks followed), sorted by name.
    fn list(&self, path: &str) -> Result<(GuestPath, Vec<DirEntry>), FsError> {
        let (p, m) = self.metadata(path)?;
        if m.file_type != FileType::Directory {
            return Err(FsError::NotADirectory {
                fs: self.location(),
                path: p.to_string(),
            });
        }
        let mut entries = self.read_dir(&p)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((p, entries))
    }

    /// The target of the symlink at `path` (intermediate symlinks followed).
    fn readlink(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let p = resolve(self.as_dyn(), path.as_bytes(), false)?;
        self.read_link(&p)
    }

    /// This filesystem as a trait object.
    fn as_dyn(&self) -> &dyn GuestFs;
}

impl<T: GuestFs> GuestFsExt for T {
    fn as_dyn(&self) -> &dyn GuestFs {
        self
    }
}

impl GuestFsExt for dyn GuestFs + '_ {
    fn as_dyn(&self) -> &dyn GuestFs {
        self
    }
}
