//! XFS (v4 and v5) behind the guest file API.
//!
//! Reading is our own code, written from the on-disk format (xfsprogs'
//! `xfs_format.h`, `xfs_da_format.h`, `xfs_log_format.h`): the superblock
//! is validated at open (geometry against the volume size, v5 CRC, feature
//! bits), and every inode, bmbt block, directory block and attribute block
//! is checked (magic, v5 CRC, owner, UUID, disk address, every length and
//! offset) before a field of it is used. Collections are bounded by
//! [`Limits`] (directory entries, extents) or by fixed format limits
//! (symlink targets of 1024 bytes, xattr values of 64 KiB).
//!
//! Writing (the `write`, `unlink`, `alloc`, `btree`, `dirw`, `dirnode`,
//! `bmbt` and `tx` modules): `replace_file` (in place, growing into new blocks),
//! `create_file`, `symlink`, `mkdir`, `remove` and `rename`, each one
//! in-memory transaction staged in a `tx::Tx` and written only after every
//! check passed. Blocks come from (and go back to) the bnobt/cntbt, whose
//! blocks split, merge and change height (the AGFL kept at the kernel's
//! minimum), inodes from existing chunks or a new 64-inode chunk (on
//! sparse-inode volumes with no aligned whole chunk free, a sparse piece
//! of sb_spino_align blocks, merged into its chunk's record as the kernel
//! does; inobt/finobt; freed ones return there), entries go into and out of
//! shortform, block and leaf directories (converting shortform to block
//! and block to leaf when adding; a removal keeps the form and frees an
//! emptied leaf-form data block), block maps kept as extent lists or,
//! when they outgrow the inode, as a bmbt of any depth the kernel allows
//! (root in the inode over leaves and as many levels of nodes as the
//! root needs; converted back when they fit). On rmapbt filesystems
//! every block that changes owner gets or loses its reverse mapping
//! (`rmap`: file, directory and bmbt blocks, inode chunks, inode btree
//! blocks, AGFL refills and trims). Refused with [`FsError::Unsupported`],
//! writing nothing: a bmbt deeper than the kernel allows (or with more
//! extents than [`Limits`] lets a fork have),
//! overwriting or freeing shared
//! (reflink) blocks. A write first checks
//! that the log is clean (the last record is an unmount record ending at
//! the head, and the blocks before it carry the cycle the kernel expects);
//! the log is never replayed nor written.
#![forbid(unsafe_code)]

mod alloc;
mod attr;
mod be;
mod bmbt;
mod btree;
mod csum;
mod dir;
mod dirnode;
mod dirw;
mod inode;
mod log;
mod rmap;
mod sb;
mod tx;
mod unlink;
mod write;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use vmie_disk::Device;
use vmie_guestfs::{DirEntry, FileType, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs};

use be::{be32, be64};
use inode::{Fork, Inode, FMT_LOCAL};

/// Longest symlink target XFS stores (XFS_SYMLINK_MAXLEN).
const MAX_SYMLINK: u64 = 1024;
const SYMLINK_MAGIC: u32 = 0x5853_4c4d; // XSLM

/// What every reader function needs: the device, the validated geometry,
/// the location for messages and the limits.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub dev: Arc<dyn Device>,
    pub geo: sb::Geo,
    pub location: String,
    pub limits: Limits,
    /// The log found clean by the first write's check.
    pub log_state: std::sync::OnceLock<log::LogState>,
}

impl Ctx {
    pub fn corrupt(&self, place: &str, detail: String) -> FsError {
        FsError::Corrupt {
            fs: self.location.clone(),
            place: place.to_string(),
            detail,
        }
    }
}

/// An XFS filesystem on a device (a partition window over the overlay).
///
/// The last directory looked up is kept indexed by name, keyed by the
/// directory inode's bytes: any change to the directory changes its inode
/// (size, times, change counter), so a stale index is never used.
#[derive(Debug)]
pub struct XfsFs {
    ctx: Ctx,
    dir_cache: RefCell<Option<DirIndex>>,
}

#[derive(Debug)]
struct DirIndex {
    raw: Vec<u8>,
    by_name: HashMap<Vec<u8>, dir::Entry>,
}

impl XfsFs {
    /// Open the filesystem on `dev`, named `location` (image and partition)
    /// in messages. Reads and validates the primary superblock only.
    pub fn open(dev: Arc<dyn Device>, location: impl Into<String>) -> Result<Self, FsError> {
        let location = location.into();
        let mut first = vec![0u8; 512];
        dev.read_at(0, &mut first)?;
        // The v5 CRC covers the whole sector, whose size the sector says.
        let sect = u64::from(u16::from_be_bytes([first[102], first[103]]));
        let sb_bytes = if be32(&first, 0) == sb::XFS_SB_MAGIC
            && sect.is_power_of_two()
            && (512..=32768).contains(&sect)
            && sect <= dev.len()
        {
            let mut s = vec![0u8; sect as usize];
            dev.read_at(0, &mut s)?;
            s
        } else {
            first
        };
        let geo = sb::Geo::parse(&sb_bytes, dev.len()).map_err(|e| match e {
            sb::SbError::Corrupt(d) => FsError::Corrupt {
                fs: location.clone(),
                place: "superblock (offset 0)".into(),
                detail: d,
            },
            sb::SbError::Unsupported(why) => FsError::Unsupported {
                fs: location.clone(),
                op: "read files".into(),
                why: format!("XFS with {why} is not supported"),
            },
        })?;
        if geo.has(sb::INCOMPAT_NEEDSREPAIR) {
            return Err(FsError::Unsupported {
                fs: location,
                op: "read files".into(),
                why: "the filesystem is marked needsrepair: run xfs_repair first".into(),
            });
        }
        Ok(Self {
            ctx: Ctx {
                dev,
                geo,
                location,
                limits: Limits::default(),
                log_state: std::sync::OnceLock::new(),
            },
            dir_cache: RefCell::new(None),
        })
    }

    /// Replace the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.ctx.limits = limits;
        self
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> String {
        vmie_guestfs::format_uuid(&self.ctx.geo.uuid)
    }

    /// The filesystem label.
    pub fn label(&self) -> String {
        let l = &self.ctx.geo.label;
        let end = l.iter().position(|&b| b == 0).unwrap_or(l.len());
        String::from_utf8_lossy(&l[..end]).into_owned()
    }

    /// The data fork block map of `path` as our reader sees it: (file
    /// block, filesystem block, block count) per extent, in file order
    /// (for comparing with other tools).
    pub fn block_map(&self, path: &GuestPath) -> Result<Vec<(u64, u64, u64)>, FsError> {
        let ip = self.inode_at(path)?;
        let ext = self.ctx.extents(&ip, Fork::Data, &path.to_string())?;
        Ok(ext.iter().map(|e| (e.off, e.fsb, e.len)).collect())
    }

    /// Whether this filesystem may be written, and if not, why: the same
    /// feature and log gate every write operation applies first.
    pub fn check_writable(&self) -> Result<(), FsError> {
        write::check(&self.ctx).map(|_| ())
    }

    /// Self-check: re-open the filesystem over the same device and compare
    /// every path with what it should hold (`None`: must not exist).
    pub fn verify_paths(&self, expected: &[(GuestPath, Option<Vec<u8>>)]) -> Result<(), FsError> {
        let fresh = XfsFs::open(Arc::clone(&self.ctx.dev), self.ctx.location.clone())?
            .with_limits(self.ctx.limits);
        for (path, want) in expected {
            let shown = path.to_string();
            let got = match fresh.inode_at(path) {
                Ok(ip) => Some(ip),
                Err(FsError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            let detail = match (got, want) {
                (None, None) => continue,
                (Some(ip), Some(w)) => {
                    if ip.file_type() == FileType::Regular && ip.size == w.len() as u64 {
                        let d = fresh.file_bytes(&ip, &shown, w.len() as u64)?;
                        if d == *w {
                            continue;
                        }
                    }
                    format!(
                        "self-check: read back {} bytes that differ from the {} written",
                        ip.size,
                        w.len()
                    )
                }
                (None, Some(_)) => "self-check: the file is missing after the write".into(),
                (Some(_), None) => "self-check: the file still exists".into(),
            };
            return Err(FsError::Corrupt {
                fs: self.ctx.location.clone(),
                place: shown,
                detail,
            });
        }
        Ok(())
    }

    /// The inode at a resolved path (no symlink followed).
    fn inode_at(&self, path: &GuestPath) -> Result<Inode, FsError> {
        let c = &self.ctx;
        let mut ip = c.inode(c.geo.rootino, "/")?;
        let mut cur = GuestPath::root();
        for name in path.components() {
            if ip.file_type() != FileType::Directory {
                return Err(FsError::NotADirectory {
                    fs: c.location.clone(),
                    path: cur.to_string(),
                });
            }
            let shown = cur.to_string();
            let e = self.lookup(&ip, name, &shown)?;
            cur = cur.join(name);
            let Some(e) = e else {
                return Err(FsError::NotFound {
                    fs: c.location.clone(),
                    path: path.to_string(),
                });
            };
            ip = c.inode(e.ino, &cur.to_string())?;
        }
        Ok(ip)
    }

    /// Find `name` in directory `ip`: small directories are scanned, a
    /// large one is indexed once and kept while its inode is unchanged.
    fn lookup(&self, ip: &Inode, name: &[u8], shown: &str) -> Result<Option<dir::Entry>, FsError> {
        if ip.format == FMT_LOCAL || ip.size <= u64::from(self.ctx.geo.dir_size) {
            return self.ctx.dir_lookup(ip, name, shown);
        }
        if let Some(ix) = self.dir_cache.borrow().as_ref() {
            if ix.raw == ip.raw {
                return Ok(ix.by_name.get(name).cloned());
            }
        }
        let entries = self.ctx.dir_entries(ip, shown)?;
        let found = entries.iter().find(|e| e.name == name).cloned();
        let by_name = entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        *self.dir_cache.borrow_mut() = Some(DirIndex {
            raw: ip.raw.clone(),
            by_name,
        });
        Ok(found)
    }

    /// The first `size` bytes of regular file `ip`.
    fn file_bytes(&self, ip: &Inode, shown: &str, size: u64) -> Result<Vec<u8>, FsError> {
        let c = &self.ctx;
        if ip.is_realtime() {
            return Err(FsError::Unsupported {
                fs: c.location.clone(),
                op: format!("read {shown}"),
                why: "the file's data is on the realtime device".into(),
            });
        }
        let ext = c.extents(ip, Fork::Data, shown)?;
        let len = usize::try_from(size).map_err(|_| c.corrupt(shown, "size".into()))?;
        c.read_mapped(&ext, 0, len)
    }

    fn metadata_of(&self, ip: &Inode, shown: &str) -> Result<Metadata, FsError> {
        let xattrs = self.ctx.xattrs(ip, shown)?;
        Ok(Metadata {
            file_type: ip.file_type(),
            mode: u32::from(ip.mode) & 0o7777,
            uid: ip.uid,
            gid: ip.gid,
            size: ip.size,
            atime: ip.time(32),
            mtime: ip.time(40),
            ctime: ip.time(48),
            inode: Some(ip.ino),
            nlink: Some(u64::from(ip.nlink)),
            xattrs: Some(xattrs),
        })
    }

    fn symlink_target(&self, ip: &Inode, shown: &str) -> Result<Vec<u8>, FsError> {
        let c = &self.ctx;
        let bad = |d: String| c.corrupt(shown, format!("symlink inode {}: {d}", ip.ino));
        if ip.size == 0 || ip.size > MAX_SYMLINK {
            return Err(bad(format!(
                "target of {} bytes (1 to {MAX_SYMLINK})",
                ip.size
            )));
        }
        let size = ip.size as usize;
        if ip.format == FMT_LOCAL {
            return Ok(ip.data_fork()[..size].to_vec());
        }
        let ext = c.extents(ip, Fork::Data, shown)?;
        if !c.geo.v5 {
            return c.read_mapped(&ext, 0, size);
        }
        let bs = c.geo.block_size as usize;
        let per = bs - 56;
        let mut out = Vec::with_capacity(size);
        let mut blk = 0u64;
        while out.len() < size {
            let b = c.read_mapped(&ext, blk * bs as u64, bs)?;
            if be32(&b, 0) != SYMLINK_MAGIC {
                return Err(bad(format!("block {blk}: bad magic")));
            }
            c.check_v5_header(&b, 12, 40, 16, 32, ip.ino, c.daddr_of(&ext, blk))
                .map_err(|d| bad(format!("block {blk}: {d}")))?;
            let off = be32(&b, 4) as usize;
            let bytes = be32(&b, 8) as usize;
            let want = (size - out.len()).min(per);
            if off != out.len() || bytes != want {
                return Err(bad(format!("block {blk} holds {off}+{bytes}")));
            }
            out.extend_from_slice(&b[56..56 + bytes]);
            blk += 1;
        }
        let _ = be64;
        Ok(out)
    }
}

impl GuestFs for XfsFs {
    fn kind(&self) -> &'static str {
        "xfs"
    }

    fn location(&self) -> String {
        self.ctx.location.clone()
    }

    fn limits(&self) -> Limits {
        self.ctx.limits
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        let ip = self.inode_at(path)?;
        self.metadata_of(&ip, &path.to_string())
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        let ip = self.inode_at(path)?;
        let shown = path.to_string();
        if ip.file_type() != FileType::Directory {
            return Err(FsError::NotADirectory {
                fs: self.ctx.location.clone(),
                path: shown,
            });
        }
        let entries = self.ctx.dir_entries(&ip, &shown)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let file_type = match e.ftype {
                Some(t) => dir::ftype_to_type(t),
                // No ftype: the type is in the inode.
                None => {
                    let p = path.join(&e.name).to_string();
                    self.ctx.inode(e.ino, &p)?.file_type()
                }
            };
            out.push(DirEntry {
                name: e.name,
                file_type,
            });
        }
        Ok(out)
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        let ip = self.inode_at(path)?;
        let shown = path.to_string();
        vmie_guestfs::require_regular(ip.file_type(), path, || self.ctx.location.clone())?;
        if ip.size > limit {
            return Err(FsError::TooLarge {
                fs: self.ctx.location.clone(),
                path: shown,
                size: ip.size,
                limit,
            });
        }
        self.file_bytes(&ip, &shown, ip.size)
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        let ip = self.inode_at(path)?;
        let shown = path.to_string();
        if ip.file_type() != FileType::Symlink {
            return Err(FsError::NotASymlink {
                fs: self.ctx.location.clone(),
                path: shown,
            });
        }
        self.symlink_target(&ip, &shown)
    }

    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        write::replace_file(self, path, data)
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        write::create_file(self, path, data, attrs)
    }

    fn symlink(
        &mut self,
        path: &GuestPath,
        target: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        write::symlink(self, path, target, attrs)
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        write::mkdir(self, path, attrs)
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        unlink::remove(self, path)
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        unlink::rename(self, from, to)
    }
}
