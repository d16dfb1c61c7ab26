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

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};
use vmie_disk::Device;
use vmie_guestfs::{
    DirEntry, FileType, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs, Timestamp,
};

const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Incompatible features neither reader nor writer handles, refused at open
/// (ext4-view would refuse them at the first read): compression (0x1),
/// journal_dev (0x8), meta_bg (0x10), mmp (0x100), ea_inode (0x400),
/// dirdata (0x1000), inline_data (0x8000), and every bit past casefold.
const INCOMPAT_UNREADABLE: (u32, [(u32, &str); 7]) = (
    !0x3_FFFF,
    [
        (0x1, "compression"),
        (0x8, "journal_dev"),
        (0x10, "meta_bg"),
        (0x100, "mmp"),
        (0x400, "ea_inode"),
        (0x1000, "dirdata"),
        (0x8000, "inline_data"),
    ],
);

/// Adapter: ext4-view reads through our device.
///
/// ext4-view 1.0 refuses `large_dir` filesystems outright, yet the feature
/// only lifts two limits of the older format: an htree may have three index
/// levels instead of two, and a directory may exceed 2 GiB. ext4-view's
/// reader already handles both without the flag (its htree walk takes the
/// depth from the root block, and it reads `i_size_high` for every inode),
/// so the adapter shows it the primary superblock with that one bit cleared
/// (and the superblock checksum recomputed). Every other feature reaches it
/// unchanged.
///
/// ext4-view reads each group descriptor on its own (32 or 64 bytes), so the
/// adapter keeps the last aligned 4 KiB chunk it read and serves small reads
/// inside it from memory: loading a 100 GiB volume's 800 descriptors takes
/// 13 device reads instead of 800. The chunk lives as long as the ext4-view
/// instance, which [`Ext4Fs`] drops on every write, exactly like
/// ext4-view's own block cache.
struct DevReader {
    dev: Arc<dyn Device>,
    hide_large_dir: bool,
    chunk: Option<(u64, Vec<u8>)>,
}

const CHUNK: u64 = 4096;

impl DevReader {
    fn new(dev: &Arc<dyn Device>) -> Self {
        let mut sb = [0u8; 1024];
        let hide_large_dir = dev.read_at(SUPERBLOCK_OFFSET, &mut sb).is_ok()
            && le32(&sb, 0x60) & INCOMPAT_LARGEDIR != 0;
        Self {
            dev: Arc::clone(dev),
            hide_large_dir,
            chunk: None,
        }
    }
}

impl Ext4Read for DevReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let base = start_byte - start_byte % CHUNK;
        let end = start_byte.checked_add(dst.len() as u64);
        let in_one_chunk = end.is_some_and(|e| e <= base + CHUNK) && base + CHUNK <= self.dev.len();
        if in_one_chunk {
            if self.chunk.as_ref().map(|c| c.0) != Some(base) {
                let mut buf = vec![0u8; CHUNK as usize];
                self.dev
                    .read_at(base, &mut buf)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                self.chunk = Some((base, buf));
            }
            if let Some((_, buf)) = &self.chunk {
                let at = (start_byte - base) as usize;
                dst.copy_from_slice(&buf[at..at + dst.len()]);
            }
        } else {
            self.dev
                .read_at(start_byte, dst)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
        }
        let sb_end = SUPERBLOCK_OFFSET + 1024;
        if self.hide_large_dir
            && start_byte <= SUPERBLOCK_OFFSET
            && start_byte.saturating_add(dst.len() as u64) >= sb_end
        {
            let at = (SUPERBLOCK_OFFSET - start_byte) as usize;
            let sb = &mut dst[at..at + 1024];
            let incompat = le32(sb, 0x60) & !INCOMPAT_LARGEDIR;
            sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
            if le32(sb, 0x64) & RO_COMPAT_METADATA_CSUM != 0 {
                let c = vmie_disk::checksum::crc32c_update(!0, &sb[..0x3FC]);
                sb[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Bytes a directory may span before we refuse to let ext4-view walk it,
/// per entry [`Limits::max_dir_entries`] allows: the largest record one
/// entry can need (8 + 255 bytes, rounded to 264), doubled for deleted
/// space and htree index blocks. With the default limits: 528 MiB, a
/// directory of a million long names kept after as many were deleted.
const DIR_BYTES_PER_ENTRY: u64 = 2 * 264;

/// Longest symlink target ext2/3/4 stores (the kernel's PATH_MAX less the
/// terminating NUL); the writer refuses longer targets too.
const MAX_SYMLINK_TARGET: u64 = 4095;

/// What the self-check found at a path: its size, and its contents when
/// they were worth reading (a regular file of the size written).
type ReadBack = (u64, Option<Vec<u8>>);

/// The loaded ext4-view reader and the directories whose paths were
/// checked through it (see [`Ext4Fs::check_path`]). Both are dropped
/// together: by every write, and after ext4-view panicked.
struct View {
    fs: Ext4,
    dirs: HashSet<Vec<u8>>,
    /// ext4-view's metadata of paths already looked up. ext4-view walks a
    /// path from the root on every call, and a path is resolved one prefix
    /// at a time (`vmie_guestfs::resolve`), so without this each lookup
    /// re-read every directory above it once per component. Dropped with
    /// the view, i.e. by every write.
    meta: HashMap<Vec<u8>, ext4_view::Metadata>,
}

/// Most paths whose metadata one view keeps.
const META_CACHE: usize = 16_384;

/// A mounted-in-userspace ext2/3/4 filesystem.
///
/// Every call into ext4-view runs behind [`vmie_disk::guard::catch`]: a
/// panic in it becomes an [`FsError::Corrupt`] naming the volume and path,
/// and the reader instance (whose caches may be half-updated) is dropped
/// and reloaded by the next read. Allocations ext4-view sizes from the
/// image are validated first: a file is read whole only when its size is
/// within the caller's limit, a symlink target only when it is at most
/// 4095 bytes, a directory is walked only when its size is within
/// [`Limits::max_dir_entries`] x 528 bytes and the volume, and paths are
/// handed over only when every component but the last is a directory
/// (ext4-view follows symlinks in them, reading targets we did not check).
pub struct Ext4Fs {
    /// The ext4-view reader, loaded on first read and dropped by every write,
    /// so opening and writing cost only what they touch: ext4-view's load
    /// reads and checks every group descriptor, which grows with the volume.
    view: RefCell<Option<View>>,
    /// The primary superblock as read at open (UUID and label).
    sb: Box<[u8; 1024]>,
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
        } else if le32(&sb, 0x150) != 0 {
            // The kernel ignores the high half without 64bit, but ext4-view
            // does not: it would size its group table from it (found by the
            // ext4_read fuzz target: a 49 GB allocation).
            return Err(corrupt(
                "superblock (offset 1024)",
                format!(
                    "s_blocks_count_hi is {} on a filesystem without the 64bit feature",
                    le32(&sb, 0x150)
                ),
            ));
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
        // ext4-view keeps one record per group: bound the group count by
        // the rule every non-meta_bg ext2/3/4 obeys (meta_bg is refused
        // below), that the descriptor table fits in group 0, so a corrupted
        // blocks-per-group cannot make it allocate for millions of groups.
        let first_data_block = u64::from(le32(&sb, 0x14));
        let bpg = u64::from(le32(&sb, 0x20));
        let desc_size = if le32(&sb, 0x60) & INCOMPAT_64BIT != 0 {
            u64::from(le16(&sb, 0xFE)).max(64)
        } else {
            32
        };
        let groups = blocks
            .checked_sub(first_data_block)
            .filter(|_| bpg > 0)
            .map(|n| n.div_ceil(bpg.max(1)));
        let gdt_fits = groups
            .and_then(|g| g.checked_mul(desc_size))
            .is_some_and(|gdt| gdt <= bpg.saturating_mul(block_size));
        if !gdt_fits {
            return Err(corrupt(
                "superblock (offset 1024)",
                format!(
                    "{blocks} blocks in groups of {bpg}: the group descriptors do not fit in group 0"
                ),
            ));
        }
        let incompat = le32(&sb, 0x60);
        let (unknown, named) = INCOMPAT_UNREADABLE;
        let mut refused: Vec<String> = named
            .iter()
            .filter(|(bit, _)| incompat & bit != 0)
            .map(|(_, name)| (*name).to_string())
            .collect();
        if incompat & unknown != 0 {
            refused.push(format!("unknown 0x{:x}", incompat & unknown));
        }
        if !refused.is_empty() {
            return Err(FsError::Unsupported {
                fs: location,
                op: "read files".into(),
                why: format!(
                    "incompatible filesystem feature(s) {} are not supported",
                    refused.join(", ")
                ),
            });
        }
        Ok(Self {
            view: RefCell::new(None),
            sb: Box::new(sb),
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

    /// The ext4-view reader, loading it (behind the panic boundary) if no
    /// read happened since open or since the last write.
    fn fs(&self) -> Result<Ext4, FsError> {
        if let Some(v) = self.view.borrow().as_ref() {
            return Ok(v.fs.clone());
        }
        let fs = self.load("/")?;
        *self.view.borrow_mut() = Some(View {
            fs: fs.clone(),
            dirs: HashSet::new(),
            meta: HashMap::new(),
        });
        Ok(fs)
    }

    /// A fresh ext4-view instance over the device.
    fn load(&self, what: &str) -> Result<Ext4, FsError> {
        let dev = Arc::clone(&self.dev);
        match vmie_disk::guard::catch(
            || format!("{}: loading the filesystem", self.location),
            move || Ext4::load(Box::new(DevReader::new(&dev))),
        ) {
            Ok(r) => r.map_err(|e| map_err(&self.location, what, e)),
            Err(p) => Err(self.panicked(what, &p)),
        }
    }

    fn panicked(&self, path: &str, p: &vmie_disk::guard::Panicked) -> FsError {
        FsError::Corrupt {
            fs: self.location.clone(),
            place: path.to_string(),
            detail: format!("the ext4 reader failed on corrupt data ({})", p.message),
        }
    }

    /// Run `f` on the loaded reader behind the panic boundary. A panic
    /// drops the reader (its block cache may be half-updated), so the next
    /// read loads a fresh one.
    fn call<T>(
        &self,
        path: &str,
        f: impl FnOnce(&Ext4) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let fs = self.fs()?;
        match vmie_disk::guard::catch(|| format!("{}: {path}", self.location), || f(&fs)) {
            Ok(r) => r,
            Err(p) => {
                self.view.replace(None);
                Err(self.panicked(path, &p))
            }
        }
    }

    /// ext4-view's metadata of `path` (final symlink not followed).
    fn view_meta(&self, bytes: &[u8], shown: &str) -> Result<ext4_view::Metadata, FsError> {
        if let Some(m) = self.view.borrow().as_ref().and_then(|v| v.meta.get(bytes)) {
            return Ok(m.clone());
        }
        let p = self.path(bytes)?;
        let m = self.call(shown, |fs| {
            fs.symlink_metadata(p)
                .map_err(|e| map_err(&self.location, shown, e))
        })?;
        if let Some(v) = self.view.borrow_mut().as_mut() {
            if v.meta.len() < META_CACHE {
                v.meta.insert(bytes.to_vec(), m.clone());
            }
        }
        Ok(m)
    }

    /// The largest directory ext4-view is let walk.
    fn dir_cap(&self) -> u64 {
        (self.limits.max_dir_entries as u64)
            .saturating_mul(DIR_BYTES_PER_ENTRY)
            .min(self.dev.len())
    }

    /// A directory that ext4-view may walk: its size within [`Self::dir_cap`].
    fn check_dir_meta(&self, m: &ext4_view::Metadata, shown: &str) -> Result<(), FsError> {
        if !m.is_dir() {
            return Err(FsError::NotADirectory {
                fs: self.location.clone(),
                path: shown.to_string(),
            });
        }
        let cap = self.dir_cap();
        if m.len() > cap {
            return Err(FsError::Corrupt {
                fs: self.location.clone(),
                place: shown.to_string(),
                detail: format!(
                    "directory size {} bytes is over the {cap} bytes a directory may span here",
                    m.len()
                ),
            });
        }
        Ok(())
    }

    /// Check what ext4-view will walk before handing it `path`: the root
    /// and every component but the last must be directories of a sane size
    /// (not symlinks, which it would follow, reading a target of any size).
    /// Checked directories are remembered for the life of the reader.
    fn check_path(&self, path: &GuestPath) -> Result<(), FsError> {
        let comps = path.components();
        let n = comps.len().saturating_sub(1);
        let mut prefix = GuestPath::root();
        for i in 0..=n {
            if i > 0 {
                prefix = prefix.join(&comps[i - 1]);
            }
            let bytes = prefix.to_bytes();
            let known = self
                .view
                .borrow()
                .as_ref()
                .is_some_and(|v| v.dirs.contains(&bytes));
            if known {
                continue;
            }
            let shown = prefix.to_string();
            let m = self.view_meta(&bytes, &shown)?;
            self.check_dir_meta(&m, &shown)?;
            if let Some(v) = self.view.borrow_mut().as_mut() {
                v.dirs.insert(bytes);
            }
        }
        Ok(())
    }

    /// Run one write transaction; the next read re-loads the reader so it
    /// sees what was written.
    fn write_op(
        &mut self,
        op: impl FnOnce(&mut tx::Tx<'_>) -> Result<(), FsError>,
    ) -> Result<(), FsError> {
        self.view.replace(None);
        write::run(self.dev.as_ref(), &self.location, op)
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
        let fresh = self.load("/")?;
        for (path, want) in expected {
            let bytes = path.to_bytes();
            let shown = path.to_string();
            let p = self.path(&bytes)?;
            // (exists, size, contents): a file whose size differs from what
            // was written is a mismatch without being read, so the read is
            // never larger than what we wrote ourselves.
            let caught = vmie_disk::guard::catch(
                || format!("{}: self-check of {shown}", self.location),
                || -> Result<Option<ReadBack>, FsError> {
                    let m = match fresh.symlink_metadata(p) {
                        Ok(m) => m,
                        Err(Ext4Error::NotFound) => return Ok(None),
                        Err(e) => return Err(map_err(&self.location, &shown, e)),
                    };
                    let readable = m.file_type().is_regular_file()
                        && want.as_ref().is_some_and(|w| m.len() == w.len() as u64);
                    if !readable {
                        return Ok(Some((m.len(), None)));
                    }
                    match fresh.read(p) {
                        Ok(d) => Ok(Some((m.len(), Some(d)))),
                        Err(e) => Err(map_err(&self.location, &shown, e)),
                    }
                },
            );
            let got = match caught {
                Ok(r) => r?,
                Err(p) => return Err(self.panicked(&shown, &p)),
            };
            let detail = match (&got, want) {
                (None, None) => continue,
                (Some((_, Some(d))), Some(w)) if d == w => continue,
                (None, Some(_)) => "self-check: the file is missing after the write".to_string(),
                (Some(_), None) => "self-check: the file still exists".to_string(),
                (Some((len, _)), Some(w)) => format!(
                    "self-check: read back {len} bytes that differ from the {} written",
                    w.len()
                ),
            };
            return Err(FsError::Corrupt {
                fs: self.location.clone(),
                place: shown,
                detail,
            });
        }
        Ok(())
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> String {
        vmie_guestfs::format_uuid(&self.sb[0x68..0x78])
    }

    /// The filesystem label, lossily as UTF-8.
    pub fn label(&self) -> String {
        let l = &self.sb[0x78..0x88];
        let end = l.iter().position(|&b| b == 0).unwrap_or(l.len());
        String::from_utf8_lossy(&l[..end]).into_owned()
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
        self.check_path(path)?;
        let m = self.view_meta(&path.to_bytes(), &path.to_string())?;
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
        self.check_path(path)?;
        let bytes = path.to_bytes();
        let shown = path.to_string();
        // The directory itself: not a symlink ext4-view would follow, and
        // of a size it may walk.
        let m = self.view_meta(&bytes, &shown)?;
        self.check_dir_meta(&m, &shown)?;
        let p = self.path(&bytes)?;
        let err = |e| map_err(&self.location, &shown, e);
        self.call(&shown, |fs| {
            let mut out = Vec::new();
            for entry in fs.read_dir(p).map_err(err)? {
                let entry = entry.map_err(err)?;
                let name = entry.file_name().as_ref().to_vec();
                if name == b"." || name == b".." {
                    continue;
                }
                if out.len() >= self.limits.max_dir_entries {
                    return Err(FsError::Corrupt {
                        fs: self.location.clone(),
                        place: shown.clone(),
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
        })
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        let m = self.symlink_metadata(path)?;
        vmie_guestfs::require_regular(m.file_type, path, || self.location.clone())?;
        if m.size > limit {
            return Err(FsError::TooLarge {
                fs: self.location.clone(),
                path: path.to_string(),
                size: m.size,
                limit,
            });
        }
        let bytes = path.to_bytes();
        let shown = path.to_string();
        let p = self.path(&bytes)?;
        self.call(&shown, |fs| {
            fs.read(p).map_err(|e| map_err(&self.location, &shown, e))
        })
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        let m = self.symlink_metadata(path)?;
        let shown = path.to_string();
        if m.file_type != FileType::Symlink {
            return Err(FsError::NotASymlink {
                fs: self.location.clone(),
                path: shown,
            });
        }
        // ext4-view reads a long target whole, sized by the inode.
        if m.size > MAX_SYMLINK_TARGET {
            return Err(FsError::Corrupt {
                fs: self.location.clone(),
                place: shown,
                detail: format!(
                    "symlink target of {} bytes (at most {MAX_SYMLINK_TARGET})",
                    m.size
                ),
            });
        }
        let bytes = path.to_bytes();
        let p = self.path(&bytes)?;
        self.call(&shown, |fs| {
            fs.read_link(p)
                .map(|t| t.as_ref().to_vec())
                .map_err(|e| map_err(&self.location, &shown, e))
        })
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
