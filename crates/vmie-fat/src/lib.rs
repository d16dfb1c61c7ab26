//! FAT12, FAT16 and FAT32 with VFAT long names behind the guest file API:
//! our own bounded reader and transactional writer.
//!
//! - Opening reads and checks the boot sector only (`bpb`); the FAT type
//!   comes from the cluster count, as Microsoft's specification says.
//! - Every operation, reading or writing, works through a `tx::Tx`: FAT
//!   bytes in 4 KiB chunks on first use, directories whole (at most the
//!   specification's 65536 entries), cluster chains checked (inside the
//!   data area, no loop, as long as the size needs). Writes stage every
//!   change in memory and reach the device only when the operation
//!   succeeded, so a refusal or NoSpace writes nothing.
//! - Writing refuses a volume marked dirty (boot-sector state bit, `FAT[1]`
//!   clean-shutdown bit) or with the hard-error bit, and FAT copies that
//!   disagree in any FAT chunk the operation reads or changes (checked as
//!   each chunk is loaded); every FAT copy is written, and FAT32's FSInfo
//!   free count and next-free hint are kept (left unknown when unknown).
//! - Every write is read back before it reaches the device through a reader
//!   that is not ours (the `verify` module): the staged bytes laid over the
//!   device are mounted read-only with the `fatfs` crate, and each path the
//!   operation touched must read back as written (contents, long name in
//!   its parent's listing, a directory that lists, a name that is gone).
//!   A disagreement or a panic in fatfs refuses the operation and nothing
//!   is written. Geometries fatfs cannot mount are named by
//!   [`FatFs::independent_check_gap`] and written with our checks only.
//! - Names: see the `name` module. Metadata: mode 0o755 for directories, 0o644 for
//!   files, 0o444 with the read-only attribute; the inode number is the
//!   byte offset of the short entry on the volume (1 for the root); times
//!   are FAT's local times read as UTC.
#![forbid(unsafe_code)]

mod bpb;
mod dir;
mod name;
mod tx;
mod verify;

use std::fmt;
use std::sync::Arc;

use vmie_disk::Device;
use vmie_guestfs::{
    DirEntry, FileType, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs, Timestamp,
};

pub use bpb::FatKind;
use dir::Entry;
use tx::Tx;
use verify::{Expect, Want};

/// A FAT volume.
pub struct FatFs {
    dev: Arc<dyn Device>,
    geo: bpb::Geo,
    location: String,
    limits: Limits,
    clock: Option<Timestamp>,
}

impl fmt::Debug for FatFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FatFs")
            .field("location", &self.location)
            .field("kind", &self.geo.kind)
            .field("clusters", &self.geo.clusters)
            .field("cluster_size", &self.geo.cs)
            .finish_non_exhaustive()
    }
}

impl FatFs {
    /// Open the FAT volume on `dev`, named `location` (image and partition)
    /// in messages. Reads and checks the boot sector only.
    pub fn open(dev: Arc<dyn Device>, location: impl Into<String>) -> Result<Self, FsError> {
        let location = location.into();
        let n = dev.len().min(4096) as usize;
        if n < 512 {
            return Err(FsError::Corrupt {
                fs: location,
                place: "boot sector (offset 0)".into(),
                detail: format!(
                    "the volume is {} bytes, smaller than a boot sector",
                    dev.len()
                ),
            });
        }
        let mut bs = vec![0u8; n];
        dev.read_at(0, &mut bs)?;
        let geo = bpb::Geo::parse(&bs, dev.len(), &location)?;
        Ok(Self {
            dev,
            geo,
            location,
            limits: Limits::default(),
            clock: None,
        })
    }

    /// Use `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Stamp new and changed entries with `now` instead of the system
    /// clock (tests, reproducible output).
    pub fn with_clock(mut self, now: Timestamp) -> Self {
        self.clock = Some(now);
        self
    }

    /// FAT12, FAT16 or FAT32.
    pub fn fat_kind(&self) -> FatKind {
        self.geo.kind
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.geo.cs
    }

    /// Number of data clusters.
    pub fn cluster_count(&self) -> u32 {
        self.geo.clusters
    }

    /// Why writes to this volume are not read back through the independent
    /// fatfs reader, if they are not: a geometry FAT allows that fatfs
    /// 0.3.6 cannot mount (both total sector counts set; on FAT32 a backup
    /// boot or FSInfo sector outside the reserved sectors, or an FSInfo
    /// sector without its signatures). `None`: every write is read back.
    pub fn independent_check_gap(&self) -> Result<Option<String>, FsError> {
        let mut bs = vec![0u8; 512];
        self.dev.read_at(0, &mut bs)?;
        let fsinfo = tx::read_fsinfo(&self.geo, &*self.dev)?;
        Ok(verify::blind_spot(&self.geo, &bs, fsinfo.is_some()))
    }

    /// Bytes of the volume, from the boot sector.
    pub fn volume_size(&self) -> u64 {
        self.geo.size
    }

    fn rtx(&self) -> Tx<'_> {
        Tx::read(
            &self.geo,
            &*self.dev,
            &self.location,
            self.limits.max_dir_entries,
        )
    }

    fn wtx(&self) -> Result<Tx<'_>, FsError> {
        let now = self.clock.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| Timestamp {
                    secs: i64::try_from(d.as_secs()).unwrap_or(0),
                    nanos: d.subsec_nanos(),
                })
                .unwrap_or_default()
        });
        Tx::begin(
            &self.geo,
            &*self.dev,
            &self.location,
            self.limits.max_dir_entries,
            now,
        )
    }

    fn not_found(&self, path: &GuestPath) -> FsError {
        FsError::NotFound {
            fs: self.location.clone(),
            path: path.to_string(),
        }
    }

    fn refuse(&self, op: &str, path: &GuestPath, why: impl Into<String>) -> FsError {
        FsError::Unsupported {
            fs: self.location.clone(),
            op: format!("{op} {path}"),
            why: why.into(),
        }
    }

    fn meta(&self, e: &Entry) -> Metadata {
        let dir = e.is_dir();
        let mode = if dir {
            0o755
        } else if e.attr() & dir::ATTR_READ_ONLY != 0 {
            0o444
        } else {
            0o644
        };
        Metadata {
            file_type: if dir {
                FileType::Directory
            } else {
                FileType::Regular
            },
            mode,
            uid: 0,
            gid: 0,
            size: if dir { 0 } else { u64::from(e.size()) },
            atime: e.atime(),
            mtime: e.mtime(),
            ctime: e.ctime(),
            inode: None,
            nlink: Some(1),
            xattrs: None,
        }
    }

    /// The entry at `path` (not the root), or NotFound.
    fn lookup(&self, tx: &mut Tx<'_>, path: &GuestPath) -> Result<(tx::Found, Entry), FsError> {
        let mut f = tx.walk(path)?;
        match f.entry.take() {
            Some(e) => Ok((f, e)),
            None => Err(self.not_found(path)),
        }
    }

    /// The byte offset of slot `slot` of directory `key`, the inode number.
    fn slot_offset(&self, tx: &mut Tx<'_>, key: u32, slot: usize) -> Result<u64, FsError> {
        let g = &self.geo;
        let d = tx.dir(key, "")?;
        let at = slot as u64 * 32;
        if d.clusters.is_empty() {
            return Ok(g.root_offset() + at);
        }
        let cs = u64::from(g.cs);
        let c = d.clusters.get((at / cs) as usize).copied().unwrap_or(2);
        Ok(g.cluster_offset(c) + at % cs)
    }

    // ---- writing ----

    /// The entries (long-name ones, then the short one) for `name` in
    /// directory `key`, from the short entry `short_raw` (its name bytes
    /// and NT flags are replaced).
    fn named_entries(
        &self,
        tx: &mut Tx<'_>,
        key: u32,
        path: &GuestPath,
        op: &str,
        mut short_raw: [u8; 32],
    ) -> Result<Vec<[u8; 32]>, FsError> {
        let comp = path.file_name().unwrap_or_default();
        let (s, u) = name::check_long(comp).map_err(|why| self.refuse(op, path, why))?;
        let taken = tx.shorts(key, &path.parent().to_string())?;
        let plan = name::plan(&s, &u, &|x| taken.contains(x))
            .ok_or_else(|| self.refuse(op, path, "no free ~N short name in the directory"))?;
        short_raw[..11].copy_from_slice(&plan.short);
        short_raw[12] = (short_raw[12] & !(name::NT_LOWER_BASE | name::NT_LOWER_EXT)) | plan.nt;
        let mut out = match &plan.lfn {
            Some(u) => name::lfn_entries(u, name::checksum(&plan.short)),
            None => Vec::new(),
        };
        out.push(short_raw);
        Ok(out)
    }

    /// The parent of `path`, which must not exist yet.
    fn new_place(&self, tx: &mut Tx<'_>, path: &GuestPath) -> Result<u32, FsError> {
        if path.is_root() {
            return Err(FsError::Exists {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        }
        let f = tx.walk(path)?;
        if f.entry.is_some() {
            return Err(FsError::Exists {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        }
        Ok(f.parent)
    }

    fn check_size(&self, path: &GuestPath, op: &str, data: &[u8]) -> Result<u32, FsError> {
        u32::try_from(data.len())
            .map_err(|_| self.refuse(op, path, "a FAT file holds at most 4 GiB - 1 bytes"))
    }

    fn chain_len(&self, len: usize) -> usize {
        len.div_ceil(self.geo.cs as usize)
    }
}

impl GuestFs for FatFs {
    fn kind(&self) -> &'static str {
        "vfat"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        if path.is_root() {
            return Ok(Metadata {
                file_type: FileType::Directory,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                atime: Timestamp::default(),
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                inode: Some(1),
                nlink: Some(1),
                xattrs: None,
            });
        }
        let mut tx = self.rtx();
        let (f, e) = self.lookup(&mut tx, path)?;
        let mut m = self.meta(&e);
        m.inode = Some(self.slot_offset(&mut tx, f.parent, e.slot)?);
        Ok(m)
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        let mut tx = self.rtx();
        let key = if path.is_root() {
            self.geo.root_key()
        } else {
            let (_, e) = self.lookup(&mut tx, path)?;
            if !e.is_dir() {
                return Err(FsError::NotADirectory {
                    fs: self.location.clone(),
                    path: path.to_string(),
                });
            }
            tx.key_of(&e, &path.to_string())?
        };
        let ents = tx.entries(key, &path.to_string())?;
        Ok(ents
            .into_iter()
            .map(|e| DirEntry {
                file_type: if e.is_dir() {
                    FileType::Directory
                } else {
                    FileType::Regular
                },
                name: e.name.into_bytes(),
            })
            .collect())
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        if path.is_root() {
            return Err(FsError::IsADirectory {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        }
        let mut tx = self.rtx();
        let (_, e) = self.lookup(&mut tx, path)?;
        vmie_guestfs::require_regular(self.meta(&e).file_type, path, || self.location.clone())?;
        let size = u64::from(e.size());
        if size > limit {
            return Err(FsError::TooLarge {
                fs: self.location.clone(),
                path: path.to_string(),
                size,
                limit,
            });
        }
        let ch = tx.file_chain(&e, path)?;
        tx.read_data(&ch, size as usize)
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        self.symlink_metadata(path)?;
        Err(FsError::NotASymlink {
            fs: self.location.clone(),
            path: path.to_string(),
        })
    }

    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        let size = self.check_size(path, "replace_file", data)?;
        if path.is_root() {
            return Err(FsError::IsADirectory {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        }
        let mut tx = self.wtx()?;
        let (f, e) = self.lookup(&mut tx, path)?;
        vmie_guestfs::require_regular(self.meta(&e).file_type, path, || self.location.clone())?;
        let old = tx.file_chain(&e, path)?;
        let ch = tx.resize(&old, self.chain_len(data.len()))?;
        tx.write_data(&ch, data);
        let mut raw = e.raw;
        dir::set_cluster(&mut raw, ch.first().copied().unwrap_or(0), self.geo.kind);
        dir::set_size(&mut raw, size);
        dir::stamp(&mut raw, tx.now, false);
        raw[11] |= dir::ATTR_ARCHIVE;
        tx.put_slot(f.parent, e.slot, &raw, &path.parent().to_string())?;
        tx.commit(&[Expect {
            path,
            listed: Some(e.name.clone()),
            want: Want::Bytes(data),
        }])
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let size = self.check_size(path, "create_file", data)?;
        let mut tx = self.wtx()?;
        let parent = self.new_place(&mut tx, path)?;
        let ch = tx.resize(&[], self.chain_len(data.len()))?;
        tx.write_data(&ch, data);
        let mut attr = dir::ATTR_ARCHIVE;
        if attrs.mode & 0o222 == 0 {
            attr |= dir::ATTR_READ_ONLY;
        }
        let mut raw = dir::new_short(&[b' '; 11], 0, attr, tx.now);
        dir::set_cluster(&mut raw, ch.first().copied().unwrap_or(0), self.geo.kind);
        dir::set_size(&mut raw, size);
        let ents = self.named_entries(&mut tx, parent, path, "create_file", raw)?;
        tx.insert(parent, &ents, &path.parent().to_string())?;
        tx.commit(&[Expect::new(path, Want::Bytes(data))])
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        let _ = attrs;
        let mut tx = self.wtx()?;
        let parent = self.new_place(&mut tx, path)?;
        let c = tx.alloc()?;
        tx.new_dir(c);
        let kind = self.geo.kind;
        let mut dot = dir::new_short(b".          ", 0, dir::ATTR_DIR, tx.now);
        dir::set_cluster(&mut dot, c, kind);
        let mut dotdot = dir::new_short(b"..         ", 0, dir::ATTR_DIR, tx.now);
        let up = if parent == self.geo.root_key() {
            0
        } else {
            parent
        };
        dir::set_cluster(&mut dotdot, up, kind);
        let place = path.to_string();
        tx.put_slot(c, 0, &dot, &place)?;
        tx.put_slot(c, 1, &dotdot, &place)?;
        let mut raw = dir::new_short(&[b' '; 11], 0, dir::ATTR_DIR, tx.now);
        dir::set_cluster(&mut raw, c, kind);
        let ents = self.named_entries(&mut tx, parent, path, "mkdir", raw)?;
        tx.insert(parent, &ents, &path.parent().to_string())?;
        tx.commit(&[Expect::new(path, Want::Dir)])
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        if from.is_root() || to.is_root() {
            return Err(self.refuse(
                "rename",
                from,
                "the root directory cannot be renamed or replaced",
            ));
        }
        let mut tx = self.wtx()?;
        let (sf, se) = self.lookup(&mut tx, from)?;
        let df = tx.walk(to)?;
        let kind = self.geo.kind;
        let src_key = if se.is_dir() {
            Some(tx.key_of(&se, &from.to_string())?)
        } else {
            None
        };
        if let Some(k) = src_key {
            if df.keys.contains(&k) {
                return Err(self.refuse(
                    "rename",
                    from,
                    format!("cannot move a directory into itself ({to})"),
                ));
            }
        }
        if let Some(de) = &df.entry {
            let same = df.parent == sf.parent && de.slot == se.slot;
            if !same {
                if de.is_dir() {
                    return Err(FsError::IsADirectory {
                        fs: self.location.clone(),
                        path: to.to_string(),
                    });
                }
                if se.is_dir() {
                    return Err(FsError::NotADirectory {
                        fs: self.location.clone(),
                        path: to.to_string(),
                    });
                }
                let ch = tx.file_chain(de, to)?;
                tx.free(&ch)?;
                tx.delete_slots(df.parent, de, &to.parent().to_string())?;
            }
        }
        tx.delete_slots(sf.parent, &se, &from.parent().to_string())?;
        let ents = self.named_entries(&mut tx, df.parent, to, "rename", se.raw)?;
        tx.insert(df.parent, &ents, &to.parent().to_string())?;
        if let Some(k) = src_key {
            if df.parent != sf.parent {
                let place = to.to_string();
                let d = tx.dir(k, &place)?;
                let mut dd = [0u8; 32];
                if let Some(s) = d.bytes.get(32..64) {
                    dd.copy_from_slice(s);
                }
                if &dd[..11] == b"..         " {
                    let up = if df.parent == self.geo.root_key() {
                        0
                    } else {
                        df.parent
                    };
                    dir::set_cluster(&mut dd, up, kind);
                    tx.put_slot(k, 1, &dd, &place)?;
                }
            }
        }
        let to_want = if src_key.is_some() {
            Want::Dir
        } else {
            // The file's clusters are not touched: its size and first
            // cluster (as our reader reads it) are compared.
            let size = u64::from(se.size());
            let n = size.min(u64::from(self.geo.cs)) as usize;
            let head = if n == 0 {
                Vec::new()
            } else {
                let first = se.cluster(kind);
                if !self.geo.valid_cluster(first) {
                    return Err(tx.corrupt(
                        from.to_string(),
                        format!("first cluster {first} outside the data area"),
                    ));
                }
                tx.read_data(&[first], n)?
            };
            Want::Head { size, head }
        };
        let mut expect = vec![Expect::new(to, to_want)];
        // A rename that only changes the case of the name leaves an entry
        // that matches the old name.
        let same_name = sf.parent == df.parent
            && name::eq_ci(
                &String::from_utf8_lossy(from.file_name().unwrap_or_default()),
                &String::from_utf8_lossy(to.file_name().unwrap_or_default()),
            );
        if !same_name {
            expect.push(Expect::new(from, Want::Gone));
        }
        tx.commit(&expect)
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        if path.is_root() {
            return Err(self.refuse("remove", path, "the root directory cannot be removed"));
        }
        let mut tx = self.wtx()?;
        let (f, e) = self.lookup(&mut tx, path)?;
        let place = path.to_string();
        let ch = if e.is_dir() {
            let k = tx.key_of(&e, &place)?;
            let d = tx.dir(k, &place)?;
            let busy = d
                .bytes
                .chunks_exact(32)
                .take_while(|s| s[0] != 0)
                .any(|s| s[0] != 0xE5 && !dir::is_dot(s));
            if busy {
                return Err(FsError::NotEmpty {
                    fs: self.location.clone(),
                    path: place,
                });
            }
            let max = tx.dir_max_clusters();
            tx.chain(k, max, &place)?
        } else {
            tx.file_chain(&e, path)?
        };
        tx.free(&ch)?;
        tx.delete_slots(f.parent, &e, &path.parent().to_string())?;
        tx.commit(&[Expect::new(path, Want::Gone)])
    }
}
