//! NTFS behind the guest file API: reads through the `ntfs` crate, writes
//! through our own code.
//!
//! Reading goes through the [ntfs](https://crates.io/crates/ntfs) crate
//! (boot sector, MFT records, attributes and attribute lists, data runs with
//! sparse runs) over a [`DeviceCursor`] on our [`Device`], so reads see the
//! overlay. Two of the crate's limitations are worked around here: directory
//! indexes (`$I30`) are parsed by us (see the `index` module), and the stream
//! it reads lets an MFT record continue across the end of an MFT extent
//! (see the `stream` module).
//!
//! **Supported:** [`GuestFs::symlink_metadata`], [`GuestFs::read_dir`],
//! [`GuestFs::read_file`] (the unnamed `$DATA` stream, resident,
//! non-resident or sparse; bytes past the valid data length read as zeros),
//! [`GuestFs::read_link`] for NTFS symbolic links and junctions (see the
//! `reparse` module for how targets become guest paths), and
//! [`NtfsFs::volume_info`] (cluster size, size, free space from `$Bitmap`,
//! label, version, dirty flag).
//!
//! - Names are looked up case-insensitively, through the volume's `$UpCase`
//!   table, as Windows does; an exact-case match wins when two names differ
//!   only in case (possible in the POSIX namespace).
//! - Listings show each name once: DOS (8.3) names are skipped, and so are
//!   the metadata files (`$MFT`, `$Bitmap`, …: MFT records 0–15), `.`, `..`
//!   and names no guest path can hold (empty, or with `/` or NUL). Names are
//!   converted from UTF-16 lossily. Hidden metadata files can still be
//!   looked up by name.
//! - Metadata: mode `0o755` for directories, `0o777` for symlinks, `0o644`
//!   for files (`0o444` with the read-only attribute); uid and gid 0; times
//!   from `$STANDARD_INFORMATION` (`ctime` is its MFT-change time); inode is
//!   the MFT record number; nlink counts the non-DOS names; no xattrs.
//!
//! **Writes** (`write`, `tx`, `dirw`, `mft`, `attr`, `runlist`,
//! `preflight`): [`GuestFs::replace_file`], [`GuestFs::create_file`],
//! [`GuestFs::mkdir`], [`GuestFs::remove`] of regular files and empty
//! directories ([`FsError::NotEmpty`] otherwise) and [`GuestFs::rename`] of
//! regular files and directories, within a directory or into another (a
//! directory never into its own subtree), each one in-memory transaction
//! committed only when the whole operation succeeded (a refusal or no space
//! writes nothing), after the volume checks of `preflight` (version 3.1,
//! not dirty, not hibernated, `$LogFile` clean and version 1.1). A clean
//! `$LogFile` is left as it is (see `preflight`); no `$UsnJrnl` records are
//! written. Times come from the clock, or from [`NtfsFs::with_clock`]. A
//! new directory is what ntfs-3g makes (an empty `$I30` `$INDEX_ROOT`, the
//! record's directory flag, `I30_INDEX_PRESENT` in its `$FILE_NAME` and
//! index entry); a full `$INDEX_ROOT` moves down into an index block (see
//! `dirw`); `$MFT` grows when no record is free (see `mft`). What the
//! writer does not do is refused with [`FsError::Unsupported`] naming the
//! volume, the path and why: symlinks, files with an attribute list,
//! compressed, encrypted, sparse or reparse-point files, hard links, links
//! for remove, links for rename, a directory renamed onto an existing name,
//! a `$DATA` runlist that does not fit in the file's record, growing `$MFT`
//! beyond what record 0 can map without an attribute list, a non-resident
//! `$I30` `$BITMAP`. The `$I30` index is kept a B+tree with every leaf at
//! one depth (see `dirw`): full blocks split bottom-up, the root gains a
//! level, an entry leaves an internal node by its in-order predecessor
//! moving up, an emptied block is freed; blocks are not merged.
//!
//! **Refused for reading:** compressed or encrypted files, and files with a
//! reparse point other than a symlink or junction (WOF-compressed system
//! files, deduplicated files, cloud placeholders: their contents are not in
//! the unnamed `$DATA` stream).
//!
//! **Hostile images:** nothing the crate reads is trusted to it unchecked.
//! The boot sector is validated here first (sector and cluster size, volume
//! within the device, MFT within the volume, file record size at most 4
//! KiB), and every MFT record is parsed and validated by us (attribute
//! bounds, data runs inside the volume, attribute lists and the extension
//! records they name) before the crate walks its attributes; see the
//! `record` module. Listings stop at [`Limits::max_dir_entries`], reads at the
//! caller's limit before allocating, and every error of the crate becomes an
//! [`FsError::Corrupt`] naming the location and path (or [`FsError::Disk`]
//! for an I/O error of the device underneath). As defence in depth, every
//! call into the crate is made behind `vmie_disk::guard::catch`: a panic in
//! it becomes an [`FsError::Corrupt`] naming the volume, the guest path and
//! the MFT record, and the process goes on.
#![forbid(unsafe_code)]

mod attr;
mod boot;
mod dirw;
mod index;
mod le;
mod mft;
mod preflight;
mod record;
mod reparse;
mod runlist;
mod stream;
mod tx;
mod write;

use std::collections::HashSet;
use std::fmt;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::structured_values::NtfsVolumeFlags;
use ntfs::{
    Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek, NtfsTime,
};
use vmie_disk::{Device, DeviceCursor, DiskError};
use vmie_guestfs::{DirEntry, FileType, FsError, GuestFs, GuestPath, Limits, Metadata, Timestamp};

use crate::boot::Geometry;
use crate::index::{Entry, Step};
use crate::record::{Body, RawRecord};
use crate::stream::Stream;

/// MFT record of `$MFT`.
const MFT_RECORD: u64 = 0;
/// MFT record of `$Volume`.
const VOLUME_RECORD: u64 = 3;
/// MFT record of the root directory.
const ROOT_RECORD: u64 = 5;
/// MFT record of `$Bitmap`.
const BITMAP_RECORD: u64 = 6;
/// MFT record of `$UpCase`.
const UPCASE_RECORD: u64 = 10;
/// Records below this one are the metadata files.
const FIRST_USER_RECORD: u64 = 16;

/// `$FILE_NAME` / `$STANDARD_INFORMATION` file attribute flags.
const FILE_ATTR_READ_ONLY: u32 = 0x0001;
const FILE_ATTR_REPARSE_POINT: u32 = 0x0400;
const FILE_ATTR_ENCRYPTED: u32 = 0x4000;
const FILE_ATTR_DIRECTORY: u32 = 0x1000_0000;

/// Attribute type of `$FILE_NAME` and `$REPARSE_POINT`.
const AT_FILE_NAME: u32 = 0x30;
const AT_REPARSE_POINT: u32 = 0xC0;

/// Size of `$UpCase`: one `u16` for each UTF-16 code unit.
const UPCASE_BYTES: u64 = 2 << 16;
/// Deepest index B-tree a lookup descends.
const MAX_INDEX_DEPTH: usize = 64;
/// Longest name NTFS allows, in UTF-16 code units.
const MAX_NAME_UNITS: usize = 255;
/// Bytes of `$Bitmap` read at a time.
const BITMAP_CHUNK: usize = 64 << 10;
/// Seconds from 1601-01-01 (NT epoch) to 1970-01-01.
const NT_TO_UNIX_SECS: i64 = 11_644_473_600;

/// Facts about an NTFS volume, for preflight checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfsVolumeInfo {
    /// Bytes per cluster.
    pub cluster_size: u32,
    /// Size of the volume in bytes (as the boot sector says).
    pub total_bytes: u64,
    /// Bytes in clusters `$Bitmap` marks free.
    pub free_bytes: u64,
    /// Volume label (lossily converted from UTF-16; empty if none).
    pub label: String,
    /// NTFS major version (3 for every Windows since 2000).
    pub major_version: u8,
    /// NTFS minor version (1 since XP).
    pub minor_version: u8,
    /// The dirty flag of `$Volume`: Windows did not shut down cleanly (or
    /// chkdsk is scheduled).
    pub dirty: bool,
    /// Volume serial number.
    pub serial_number: u64,
}

/// An NTFS filesystem.
pub struct NtfsFs {
    ntfs: Ntfs,
    geo: Geometry,
    upcase: Vec<u16>,
    dev: Arc<dyn Device>,
    /// The crate reads through `&mut` a stream; `GuestFs` methods take `&self`.
    cur: Mutex<Stream>,
    location: String,
    limits: Limits,
    /// The time writes stamp (NT time), fixed for tests; `None`: the clock.
    clock: Option<u64>,
}

impl fmt::Debug for NtfsFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtfsFs")
            .field("location", &self.location)
            .field("cluster_size", &self.geo.cluster_size)
            .field("size", &self.geo.size)
            .finish_non_exhaustive()
    }
}

/// One MFT record, loaded through the crate and validated by us, with the
/// extension records its attribute lists name.
struct Loaded<'n> {
    rn: u64,
    /// `PATH (MFT record N)`, naming it in errors.
    place: String,
    file: NtfsFile<'n>,
    raw: RawRecord,
    ext: Vec<RawRecord>,
}

impl Loaded<'_> {
    /// Every attribute of the file, base record first, with its record.
    fn raw_attrs(&self) -> impl Iterator<Item = (&RawRecord, &record::RawAttr)> {
        std::iter::once(&self.raw)
            .chain(&self.ext)
            .flat_map(|r| r.attrs.iter().map(move |a| (r, a)))
    }

    fn has_attr(&self, ty: u32) -> bool {
        self.raw_attrs().any(|(_, a)| a.ty == ty)
    }

    /// Data size and valid data length of the unnamed `$DATA` stream, when
    /// it is non-resident.
    fn data_sizes(&self) -> Option<(u64, u64)> {
        self.raw_attrs().find_map(|(_, a)| match &a.body {
            Body::NonResident {
                lowest_vcn: 0,
                data_size,
                init_size,
                ..
            } if a.ty == record::AT_DATA && a.name.is_empty() => Some((*data_size, *init_size)),
            _ => None,
        })
    }

    /// Names other than DOS names.
    fn link_count(&self) -> u64 {
        self.raw_attrs()
            .filter(|(_, a)| a.ty == AT_FILE_NAME)
            .filter_map(|(r, a)| index::parse_key(r.resident(a)?).ok())
            .filter(|k| k.namespace != index::NS_DOS)
            .count() as u64
    }
}

/// A write's target: the file's record and type when it exists, and the
/// parent directory's record and sequence numbers.
type WriteTarget = (Option<(u64, FileType)>, u64, u16);

fn unix_to_nt(t: Timestamp) -> u64 {
    let secs = t.secs.saturating_add(NT_TO_UNIX_SECS).max(0) as u64;
    secs.saturating_mul(10_000_000)
        .saturating_add(u64::from(t.nanos / 100))
}

fn nt_time(t: NtfsTime) -> Timestamp {
    let t = t.nt_timestamp();
    Timestamp {
        secs: (t / 10_000_000) as i64 - NT_TO_UNIX_SECS,
        nanos: ((t % 10_000_000) * 100) as u32,
    }
}

impl NtfsFs {
    /// Open the NTFS volume on `dev`, named `location` (image and partition)
    /// in messages.
    pub fn open(dev: Arc<dyn Device>, location: impl Into<String>) -> Result<Self, FsError> {
        let location = location.into();
        let corrupt = |place: &str, detail: String| FsError::Corrupt {
            fs: location.clone(),
            place: place.to_string(),
            detail,
        };
        if dev.len() < 512 {
            return Err(corrupt(
                "boot sector",
                format!(
                    "the volume is {} bytes, smaller than a boot sector",
                    dev.len()
                ),
            ));
        }
        let mut bs = [0u8; 512];
        dev.read_at(0, &mut bs)?;
        let geo = boot::parse(&bs, dev.len()).map_err(|d| {
            if d == boot::BITLOCKER {
                FsError::Unsupported {
                    fs: location.clone(),
                    op: "open".into(),
                    why: d,
                }
            } else {
                corrupt("boot sector", d)
            }
        })?;

        // The crate reads $MFT's own record (0) raw on every file lookup, so
        // it must pass our checks before the first one.
        let mft = vmie_disk::read_vec(dev.as_ref(), geo.mft_offset, geo.file_record_size as usize)?;
        let mft = record::parse(&geo, mft).map_err(|d| corrupt("$MFT (MFT record 0)", d))?;

        let extents =
            stream::mft_extents(&geo, &mft).map_err(|d| corrupt("$MFT (MFT record 0)", d))?;
        let mut cur = Stream::new(DeviceCursor::new(Arc::clone(&dev)), extents);
        let ntfs = guarded_nt(&location, "boot sector", || Ntfs::new(&mut cur))?;
        let mut fs = Self {
            ntfs,
            geo,
            upcase: Vec::new(),
            dev,
            cur: Mutex::new(cur),
            location,
            limits: Limits::default(),
            clock: None,
        };
        fs.upcase = fs.read_upcase()?;
        {
            let mut g = fs.reader();
            fs.load(&mut g, MFT_RECORD, "$MFT")?;
            let root = fs.load(&mut g, ROOT_RECORD, "/")?;
            if !fs.guard(&root.place, || root.file.is_directory())? {
                return Err(fs.corrupt_at(
                    "/",
                    ROOT_RECORD,
                    "the root directory is not a directory",
                ));
            }
        }
        Ok(fs)
    }

    /// Replace the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Stamp writes with `t` instead of the current time (for tests).
    pub fn with_clock(mut self, t: Timestamp) -> Self {
        self.clock = Some(unix_to_nt(t));
        self
    }

    fn now(&self) -> u64 {
        self.clock.unwrap_or_else(|| {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            unix_to_nt(Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            })
        })
    }

    /// Create `path` (which must not exist) as `kind`: the shared body of
    /// `create_file` and `mkdir`.
    fn create(
        &mut self,
        path: &GuestPath,
        op: &str,
        kind: write::NewKind<'_>,
    ) -> Result<(), FsError> {
        let (file, dir, seq) = self.write_target(path, op)?;
        if file.is_some() {
            return Err(FsError::Exists {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        }
        let name = path
            .file_name()
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| self.unsupported(op, path, "the name is not UTF-8"))?
            .to_string();
        self.transact(
            |tx, ctx| write::create(tx, ctx, dir, seq, &name, kind),
            path,
        )
    }

    /// For a write of `path`: its MFT record (when it exists) and its
    /// parent directory's record number and sequence number.
    fn write_target(&self, path: &GuestPath, op: &str) -> Result<WriteTarget, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        if path.is_root() {
            return Err(self.unsupported(op, path, "the root directory"));
        }
        let parent = path.parent();
        let shown = parent.to_string();
        let d = self.lookup(fs, &parent)?;
        if !self.is_directory(&d)? || self.link_tag(fs, &d, &shown)?.is_some() {
            return Err(FsError::NotADirectory {
                fs: self.location.clone(),
                path: shown,
            });
        }
        let file = match self.lookup(fs, path) {
            Ok(l) => {
                let t = self.file_type(fs, &l, &path.to_string())?;
                Some((l.rn, t))
            }
            Err(FsError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok((file, d.rn, d.raw.seq))
    }

    /// Run one write transaction and commit it.
    fn transact(
        &self,
        f: impl FnOnce(&mut tx::Tx<'_>, &write::Ctx<'_>) -> Result<(), FsError>,
        path: &GuestPath,
    ) -> Result<(), FsError> {
        let mut t = tx::Tx::new(&self.geo, self.dev.as_ref(), &self.location, self.now())?;
        let ctx = write::Ctx {
            up: &self.upcase,
            path,
        };
        f(&mut t, &ctx)?;
        t.commit()?;
        Ok(())
    }

    /// Cluster size, size, free space, label, version and dirty flag.
    ///
    /// Free space counts the clear bits of `$Bitmap` for the volume's
    /// clusters, read in chunks (so this reads `clusters / 8` bytes).
    pub fn volume_info(&self) -> Result<NtfsVolumeInfo, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        let volume = self.load(fs, VOLUME_RECORD, "$Volume")?;
        let (major_version, minor_version, dirty, label) = self.nt(&volume.place, || {
            let vi = self.ntfs.volume_info(fs)?;
            let label = match self.ntfs.volume_name(fs) {
                None => String::new(),
                Some(name) => name?.name().to_string_lossy(),
            };
            Ok((
                vi.major_version(),
                vi.minor_version(),
                vi.flags().contains(NtfsVolumeFlags::IS_DIRTY),
                label,
            ))
        })?;

        let bitmap = self.load(fs, BITMAP_RECORD, "$Bitmap")?;
        let place = &bitmap.place;
        let item = self
            .nt(place, || bitmap.file.data(fs, "").transpose())?
            .ok_or_else(|| self.corrupt(place.clone(), "no $DATA attribute"))?;
        let attr = self.nt(place, || item.to_attribute())?;
        let clusters = self.geo.total_clusters;
        let need = clusters.div_ceil(8);
        let have = self.guard(place, || attr.value_length())?;
        if have < need {
            return Err(self.corrupt(
                place.clone(),
                format!("{have} bytes of bitmap for {clusters} clusters ({need} bytes needed)"),
            ));
        }
        let mut value = self.nt(place, || attr.value(fs))?;
        let mut buf = vec![0u8; BITMAP_CHUNK];
        let mut free = 0u64;
        let mut done = 0u64; // clusters counted
        while done < clusters {
            let left = (clusters - done).div_ceil(8);
            let n = usize::try_from(left).map_or(BITMAP_CHUNK, |l| l.min(BITMAP_CHUNK));
            let chunk = &mut buf[..n];
            self.nt(place, || value.read_exact(fs, chunk))?;
            for &b in chunk.iter() {
                let bits = (clusters - done).min(8);
                let mask = if bits == 8 { 0xFF } else { (1u8 << bits) - 1 };
                free += u64::from((!b & mask).count_ones());
                done += bits;
            }
        }
        Ok(NtfsVolumeInfo {
            cluster_size: self.geo.cluster_size,
            total_bytes: self.geo.size,
            free_bytes: free * u64::from(self.geo.cluster_size),
            label,
            major_version,
            minor_version,
            dirty,
            serial_number: self.geo.serial,
        })
    }

    /// The stream reader (a poisoned lock is taken over: the cursor holds no
    /// state but its position, which every use sets first).
    fn reader(&self) -> MutexGuard<'_, Stream> {
        self.cur.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn corrupt(&self, place: impl Into<String>, detail: impl Into<String>) -> FsError {
        FsError::Corrupt {
            fs: self.location.clone(),
            place: place.into(),
            detail: detail.into(),
        }
    }

    fn corrupt_at(&self, path: &str, rn: u64, detail: impl Into<String>) -> FsError {
        self.corrupt(format!("{path} (MFT record {rn})"), detail)
    }

    /// Run a call into the `ntfs` crate behind the panic boundary: a panic
    /// becomes [`FsError::Corrupt`] at `place` (path and MFT record).
    fn guard<T>(&self, place: &str, f: impl FnOnce() -> T) -> Result<T, FsError> {
        guarded(&self.location, place, f)
    }

    /// [`Self::guard`] for a call returning the crate's `Result`: its error
    /// is mapped as [`map_ntfs_err`] does.
    fn nt<T>(&self, place: &str, f: impl FnOnce() -> Result<T, NtfsError>) -> Result<T, FsError> {
        guarded_nt(&self.location, place, f)
    }

    /// Read `$UpCase`: 65536 code units.
    fn read_upcase(&self) -> Result<Vec<u16>, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        let up = self.load(fs, UPCASE_RECORD, "$UpCase")?;
        let place = &up.place;
        let item = self
            .nt(place, || up.file.data(fs, "").transpose())?
            .ok_or_else(|| self.corrupt(place.clone(), "no $DATA attribute"))?;
        let attr = self.nt(place, || item.to_attribute())?;
        let have = self.guard(place, || attr.value_length())?;
        if have != UPCASE_BYTES {
            return Err(self.corrupt(
                place.clone(),
                format!("{have} bytes instead of {UPCASE_BYTES}"),
            ));
        }
        let mut value = self.nt(place, || attr.value(fs))?;
        let mut buf = vec![0u8; UPCASE_BYTES as usize];
        self.nt(place, || value.read_exact(fs, &mut buf))?;
        Ok(buf.chunks_exact(2).map(|c| le::le16(c, 0)).collect())
    }

    /// Read and validate the record at byte `pos` of the volume, through the
    /// same stream (and so the same bytes) as the crate.
    fn raw_record(
        &self,
        fs: &mut Stream,
        pos: u64,
        rn: u64,
        path: &str,
    ) -> Result<RawRecord, FsError> {
        let size = u64::from(self.geo.file_record_size);
        if pos.checked_add(size).is_none_or(|end| end > self.geo.size) {
            return Err(self.corrupt_at(
                path,
                rn,
                format!("record at byte {pos} is outside the volume"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        fs.read_record(pos, &mut data).map_err(|e| match e {
            Ok(disk) => FsError::Disk(disk),
            Err(short) => self.corrupt_at(path, rn, short),
        })?;
        record::parse(&self.geo, data).map_err(|d| self.corrupt_at(path, rn, d))
    }

    /// Load MFT record `rn` through the crate and validate it (and the
    /// extension records of its attribute lists) before the crate walks its
    /// attributes. `path` names it in errors.
    fn load<'n>(&'n self, fs: &mut Stream, rn: u64, path: &str) -> Result<Loaded<'n>, FsError> {
        let place = format!("{path} (MFT record {rn})");
        let file = self.nt(&place, || self.ntfs.file(fs, rn))?;
        let pos = |f: &NtfsFile<'_>, place: &str| {
            self.guard(place, || f.position().value().map(|p| p.get()))?
                .ok_or_else(|| self.corrupt(place.to_string(), "record has no position"))
        };
        let raw = self.raw_record(fs, pos(&file, &place)?, rn, path)?;
        let mut ext = Vec::new();
        let mut named: Vec<u64> = Vec::new();
        for a in raw
            .attrs
            .iter()
            .filter(|a| a.ty == record::AT_ATTRIBUTE_LIST)
        {
            let list = match &a.body {
                Body::Resident(_) => raw.resident(a).unwrap_or_default().to_vec(),
                Body::NonResident {
                    data_size, runs, ..
                } => {
                    if *data_size > record::MAX_ATTRIBUTE_LIST {
                        return Err(self.corrupt(
                            place.clone(),
                            format!("attribute list of {data_size} bytes is too large"),
                        ));
                    }
                    record::read_runs(self.dev.as_ref(), &self.geo, runs, *data_size)
                        .map_err(|d| self.corrupt(place.clone(), format!("attribute list: {d}")))?
                }
            };
            for ern in
                record::list_records(&list, rn).map_err(|d| self.corrupt(place.clone(), d))?
            {
                if !named.contains(&ern) {
                    named.push(ern);
                }
            }
        }
        for ern in named {
            let eplace = format!("{place}, extension record {ern}");
            let ef = self.nt(&eplace, || self.ntfs.file(fs, ern))?;
            let epath = format!("{path} (extension of record {rn})");
            ext.push(self.raw_record(fs, pos(&ef, &eplace)?, ern, &epath)?);
        }
        Ok(Loaded {
            rn,
            place,
            file,
            raw,
            ext,
        })
    }

    /// Walk `path` from the root, one directory index at a time.
    fn lookup<'n>(&'n self, fs: &mut Stream, path: &GuestPath) -> Result<Loaded<'n>, FsError> {
        let mut cur = self.load(fs, ROOT_RECORD, "/")?;
        let mut at = GuestPath::root();
        for comp in path.components() {
            let parent = at.to_string();
            at = at.join(comp);
            let shown = at.to_string();
            if !self.is_directory(&cur)? || self.link_tag(fs, &cur, &parent)?.is_some() {
                return Err(FsError::NotADirectory {
                    fs: self.location.clone(),
                    path: parent,
                });
            }
            let fref =
                self.find_child(fs, &cur, comp, &parent)?
                    .ok_or_else(|| FsError::NotFound {
                        fs: self.location.clone(),
                        path: shown.clone(),
                    })?;
            let rn = fref & 0xFFFF_FFFF_FFFF;
            let seq = (fref >> 48) as u16;
            let next = self.load(fs, rn, &shown)?;
            if next.raw.flags & record::REC_IN_USE == 0 {
                return Err(self.corrupt_at(
                    &shown,
                    rn,
                    "the directory entry names a record that is not in use",
                ));
            }
            if seq != 0 && seq != next.raw.seq {
                return Err(self.corrupt_at(
                    &shown,
                    rn,
                    format!(
                        "stale directory entry: sequence number {seq}, the record has {}",
                        next.raw.seq
                    ),
                ));
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The file reference `name` has in directory `dir` (`shown` in errors).
    fn find_child(
        &self,
        fs: &mut Stream,
        dir: &Loaded<'_>,
        name: &[u8],
        shown: &str,
    ) -> Result<Option<u64>, FsError> {
        let Ok(name) = std::str::from_utf8(name) else {
            return Ok(None);
        };
        let target: Vec<u16> = name.encode_utf16().collect();
        if target.is_empty() || target.len() > MAX_NAME_UNITS {
            return Ok(None);
        }
        let up = &self.upcase;
        self.with_index(fs, dir, shown, |root, read| {
            // Exact case first (the index sorts case variants next to each
            // other), then any case.
            for exact in [true, false] {
                let cmp = |a: &[u16], b: &[u16]| {
                    if exact {
                        index::exact_cmp(up, a, b)
                    } else {
                        index::upcase_cmp(up, a, b)
                    }
                };
                let mut step = index::search_node(&root.entries, &target, cmp);
                let mut depth = 0;
                loop {
                    match step {
                        Step::Found(r) => return Ok(Some(r)),
                        Step::Missing => break,
                        Step::Descend(vcn) => {
                            depth += 1;
                            if depth > MAX_INDEX_DEPTH {
                                return Err(self.corrupt_at(
                                    shown,
                                    dir.rn,
                                    format!("directory index deeper than {MAX_INDEX_DEPTH} levels"),
                                ));
                            }
                            let node = read(vcn)?;
                            step = index::search_node(&node, &target, cmp);
                        }
                    }
                }
            }
            Ok(None)
        })
    }

    /// Run `f` on the `$I30` index of directory `dir`: its root, and a reader
    /// of nodes by VCN.
    fn with_index<R>(
        &self,
        fs: &mut Stream,
        dir: &Loaded<'_>,
        shown: &str,
        f: impl FnOnce(
            &index::Root,
            &mut dyn FnMut(i64) -> Result<Vec<Entry>, FsError>,
        ) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        let place = format!("{shown} (MFT record {})", dir.rn);
        let place = &place;
        let mut root_value: Option<Vec<u8>> = None;
        let mut alloc_item = None;
        let mut attrs = self.guard(place, || dir.file.attributes())?;
        while let Some(item) = self.nt(place, || attrs.next(fs).transpose())? {
            let (ty, i30) = self.nt(place, || {
                let a = item.to_attribute()?;
                Ok((a.ty()?, a.name()? == "$I30"))
            })?;
            if !i30 {
                continue;
            }
            match ty {
                NtfsAttributeType::IndexRoot if root_value.is_none() => {
                    let value = self.nt(place, || match item.to_attribute()?.value(fs)? {
                        NtfsAttributeValue::Resident(v) => Ok(Some(v.data().to_vec())),
                        _ => Ok(None),
                    })?;
                    match value {
                        Some(v) => root_value = Some(v),
                        None => {
                            return Err(self.corrupt(place.clone(), "$INDEX_ROOT is not resident"))
                        }
                    }
                }
                NtfsAttributeType::IndexAllocation if alloc_item.is_none() => {
                    alloc_item = Some(item)
                }
                _ => {}
            }
        }
        let root_value = root_value
            .ok_or_else(|| self.corrupt(place.clone(), "directory has no $I30 $INDEX_ROOT"))?;
        let root = index::parse_root(&root_value).map_err(|d| self.corrupt(place.clone(), d))?;
        let alloc_attr = self.nt(place, || {
            alloc_item.as_ref().map(|i| i.to_attribute()).transpose()
        })?;
        let alloc = self.nt(place, || {
            alloc_attr.as_ref().map(|a| a.value(fs)).transpose()
        })?;
        let alloc_len = self.guard(place, || alloc.as_ref().map_or(0, NtfsAttributeValue::len))?;

        let rs = u64::from(root.record_size);
        // Subnode VCNs count clusters, or 512-byte blocks when index records
        // are smaller than a cluster.
        let vcn_bytes = if root.record_size >= self.geo.cluster_size {
            u64::from(self.geo.cluster_size)
        } else {
            512
        };
        let mut read = |vcn: i64| -> Result<Vec<Entry>, FsError> {
            let value = alloc.as_ref().ok_or_else(|| {
                self.corrupt(
                    place.clone(),
                    "an index entry has a subnode, but the directory has no $INDEX_ALLOCATION",
                )
            })?;
            let off = u64::try_from(vcn)
                .ok()
                .and_then(|v| v.checked_mul(vcn_bytes))
                .filter(|&o| o % rs == 0 && o.checked_add(rs).is_some_and(|e| e <= alloc_len))
                .ok_or_else(|| {
                    self.corrupt(
                        place.clone(),
                        format!("index subnode VCN {vcn} is not a record of the {alloc_len}-byte index allocation"),
                    )
                })?;
            let mut buf = vec![0u8; rs as usize];
            self.nt(place, || {
                let mut v = value.clone();
                v.seek(fs, SeekFrom::Start(off))?;
                v.read_exact(fs, &mut buf)
            })?;
            index::parse_node(&mut buf, vcn)
                .map_err(|d| self.corrupt(place.clone(), format!("index node VCN {vcn}: {d}")))
        };
        f(&root, &mut read)
    }

    /// The reparse data of `l`, if it has a `$REPARSE_POINT` attribute.
    fn reparse_data(
        &self,
        fs: &mut Stream,
        l: &Loaded<'_>,
        path: &str,
    ) -> Result<Option<Vec<u8>>, FsError> {
        if !l.has_attr(AT_REPARSE_POINT) {
            return Ok(None);
        }
        let place = format!("{path} (MFT record {})", l.rn);
        let place = &place;
        let mut attrs = self.guard(place, || l.file.attributes())?;
        while let Some(item) = self.nt(place, || attrs.next(fs).transpose())? {
            let a = self.nt(place, || item.to_attribute())?;
            if self.nt(place, || a.ty())? != NtfsAttributeType::ReparsePoint {
                continue;
            }
            let len = self.guard(place, || a.value_length())?;
            if !(8..=reparse::MAX_REPARSE).contains(&len) {
                return Err(self.corrupt(place.clone(), format!("reparse point of {len} bytes")));
            }
            let mut buf = vec![0u8; len as usize];
            self.nt(place, || a.value(fs)?.read_exact(fs, &mut buf))?;
            return Ok(Some(buf));
        }
        Ok(None)
    }

    /// The reparse tag of `l` if it is a symlink or junction.
    fn link_tag(
        &self,
        fs: &mut Stream,
        l: &Loaded<'_>,
        path: &str,
    ) -> Result<Option<u32>, FsError> {
        Ok(self
            .reparse_data(fs, l, path)?
            .map(|d| le::le32(&d, 0))
            .filter(|&t| reparse::is_link(t)))
    }

    fn file_type(&self, fs: &mut Stream, l: &Loaded<'_>, path: &str) -> Result<FileType, FsError> {
        Ok(if self.link_tag(fs, l, path)?.is_some() {
            FileType::Symlink
        } else if self.is_directory(l)? {
            FileType::Directory
        } else {
            FileType::Regular
        })
    }

    fn metadata(&self, fs: &mut Stream, l: &Loaded<'_>, path: &str) -> Result<Metadata, FsError> {
        let place = format!("{path} (MFT record {})", l.rn);
        let place = &place;
        let (attrs, atime, mtime, ctime) = self.nt(place, || {
            let info = l.file.info()?;
            Ok((
                info.file_attributes().bits(),
                nt_time(info.access_time()),
                nt_time(info.modification_time()),
                nt_time(info.mft_record_modification_time()),
            ))
        })?;
        let file_type = self.file_type(fs, l, path)?;
        let size = match file_type {
            FileType::Regular => self.nt(place, || match l.file.data(fs, "") {
                None => Ok(0),
                Some(item) => Ok(item?.to_attribute()?.value_length()),
            })?,
            FileType::Symlink => self
                .reparse_data(fs, l, path)?
                .and_then(|d| reparse::link_target(&d).ok())
                .map_or(0, |t| t.len() as u64),
            _ => 0,
        };
        let mode = match file_type {
            FileType::Directory => 0o755,
            FileType::Symlink => 0o777,
            _ if attrs & FILE_ATTR_READ_ONLY != 0 => 0o444,
            _ => 0o644,
        };
        Ok(Metadata {
            file_type,
            mode,
            uid: 0,
            gid: 0,
            size,
            atime,
            mtime,
            ctime,
            inode: Some(l.rn),
            nlink: Some(l.link_count()),
            xattrs: None,
        })
    }

    /// Whether `l` is a directory (its record's flag, read by the crate).
    fn is_directory(&self, l: &Loaded<'_>) -> Result<bool, FsError> {
        self.guard(&l.place, || l.file.is_directory())
    }

    fn unsupported(&self, op: &str, path: &GuestPath, why: impl Into<String>) -> FsError {
        FsError::Unsupported {
            fs: self.location.clone(),
            op: format!("{op} {path}"),
            why: why.into(),
        }
    }
}

/// An error of the crate: an I/O error of our device stays one, anything
/// else is corruption at `place`.
fn map_ntfs_err(location: &str, place: &str, e: NtfsError) -> FsError {
    let corrupt = |detail: String| FsError::Corrupt {
        fs: location.to_string(),
        place: place.to_string(),
        detail,
    };
    match e {
        NtfsError::Io(io) => {
            let kind = io.kind();
            match io.into_inner().map(|inner| inner.downcast::<DiskError>()) {
                Some(Ok(disk)) => FsError::Disk(*disk),
                Some(Err(other)) => corrupt(other.to_string()),
                None => corrupt(kind.to_string()),
            }
        }
        other => corrupt(other.to_string()),
    }
}

/// Run a call into the `ntfs` crate behind the panic boundary
/// (`vmie_disk::guard`): a panic becomes [`FsError::Corrupt`] naming the
/// volume `location` and `place` (path and MFT record). The crate is only
/// handed records we validated; this is defence in depth.
fn guarded<T>(location: &str, place: &str, f: impl FnOnce() -> T) -> Result<T, FsError> {
    vmie_disk::guard::catch(|| format!("{location}: {place}"), f).map_err(|p| FsError::Corrupt {
        fs: location.to_string(),
        place: place.to_string(),
        detail: format!("the ntfs crate failed on corrupt data ({})", p.message),
    })
}

/// [`guarded`] for a call returning the crate's `Result`.
fn guarded_nt<T>(
    location: &str,
    place: &str,
    f: impl FnOnce() -> Result<T, NtfsError>,
) -> Result<T, FsError> {
    guarded(location, place, f)?.map_err(|e| map_ntfs_err(location, place, e))
}

/// Whether a listed name can be a guest path component.
fn usable_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl GuestFs for NtfsFs {
    fn kind(&self) -> &'static str {
        "ntfs"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        let l = self.lookup(fs, path)?;
        self.metadata(fs, &l, &path.to_string())
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        let shown = path.to_string();
        let l = self.lookup(fs, path)?;
        if !self.is_directory(&l)? || self.link_tag(fs, &l, &shown)?.is_some() {
            return Err(FsError::NotADirectory {
                fs: self.location.clone(),
                path: shown,
            });
        }
        let max = self.limits.max_dir_entries;
        self.with_index(fs, &l, &shown, |root, read| {
            let mut out = Vec::new();
            let mut seen: HashSet<i64> = HashSet::new();
            let mut todo: Vec<i64> = Vec::new();
            // Entries skipped from the listing (DOS names, metadata files)
            // count too, so a large index of hidden names is bounded as well.
            let mut budget = max.saturating_mul(4).max(64);
            let mut take = |entries: &[Entry], todo: &mut Vec<i64>| -> Result<(), FsError> {
                for e in entries {
                    budget = budget.checked_sub(1).ok_or_else(|| {
                        self.corrupt_at(
                            &shown,
                            l.rn,
                            format!("more than {} index entries", max.saturating_mul(4).max(64)),
                        )
                    })?;
                    if let Some(vcn) = e.subnode {
                        if !seen.insert(vcn) {
                            return Err(self.corrupt_at(
                                &shown,
                                l.rn,
                                format!("index node VCN {vcn} is reached twice: the index is not a tree"),
                            ));
                        }
                        todo.push(vcn);
                    }
                    let Some(k) = &e.key else { continue };
                    if k.namespace == index::NS_DOS || e.file_ref & 0xFFFF_FFFF_FFFF < FIRST_USER_RECORD {
                        continue;
                    }
                    let name = String::from_utf16_lossy(&k.name);
                    if !usable_name(&name) {
                        continue;
                    }
                    if out.len() >= max {
                        return Err(self.corrupt_at(
                            &shown,
                            l.rn,
                            format!("more than {max} directory entries"),
                        ));
                    }
                    let file_type = if k.file_attributes & FILE_ATTR_REPARSE_POINT != 0
                        && reparse::is_link(k.reparse_tag)
                    {
                        FileType::Symlink
                    } else if k.file_attributes & FILE_ATTR_DIRECTORY != 0 {
                        FileType::Directory
                    } else {
                        FileType::Regular
                    };
                    out.push(DirEntry {
                        name: name.into_bytes(),
                        file_type,
                    });
                }
                Ok(())
            };
            take(&root.entries, &mut todo)?;
            while let Some(vcn) = todo.pop() {
                let node = read(vcn)?;
                take(&node, &mut todo)?;
            }
            Ok(out)
        })
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        let shown = path.to_string();
        let l = self.lookup(fs, path)?;
        let place = format!("{shown} (MFT record {})", l.rn);
        let place = &place;
        let t = self.file_type(fs, &l, &shown)?;
        vmie_guestfs::require_regular(t, path, || self.location.clone())?;
        if let Some(data) = self.reparse_data(fs, &l, &shown)? {
            return Err(self.unsupported(
                "read",
                path,
                format!(
                    "the file has a reparse point (tag {:#010x}): its contents are not in its data stream",
                    le::le32(&data, 0)
                ),
            ));
        }
        let attrs = self.nt(place, || Ok(l.file.info()?.file_attributes().bits()))?;
        if attrs & FILE_ATTR_ENCRYPTED != 0 {
            return Err(self.unsupported("read", path, "the file is encrypted (EFS)"));
        }
        let Some(item) = self.nt(place, || l.file.data(fs, "").transpose())? else {
            return Ok(Vec::new());
        };
        let attr = self.nt(place, || item.to_attribute())?;
        let (flags, size) = self.guard(place, || (attr.flags(), attr.value_length()))?;
        if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(self.unsupported("read", path, "the file is encrypted (EFS)"));
        }
        if flags.contains(NtfsAttributeFlags::COMPRESSED) {
            return Err(self.unsupported("read", path, "the file is NTFS-compressed"));
        }
        if size > limit {
            return Err(FsError::TooLarge {
                fs: self.location.clone(),
                path: shown,
                size,
                limit,
            });
        }
        let n = usize::try_from(size).map_err(|_| FsError::TooLarge {
            fs: self.location.clone(),
            path: shown.clone(),
            size,
            limit,
        })?;
        let mut value = self.nt(place, || attr.value(fs))?;
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let k = self.nt(place, || value.read(fs, &mut buf[done..]))?;
            if k == 0 {
                return Err(self.corrupt(
                    place.clone(),
                    format!("the data runs end after {done} of the file's {n} bytes"),
                ));
            }
            done += k;
        }
        // Bytes past the valid data length read as zeros, as on Windows.
        if let Some((data_size, init)) = l.data_sizes() {
            if data_size == size && init < size {
                buf[init as usize..].fill(0);
            }
        }
        Ok(buf)
    }

    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        let (file, dir, _) = self.write_target(path, "replace_file")?;
        let Some((rn, t)) = file else {
            return Err(FsError::NotFound {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        };
        vmie_guestfs::require_regular(t, path, || self.location.clone())?;
        self.transact(|tx, ctx| write::replace(tx, ctx, rn, dir, data), path)
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &vmie_guestfs::NewAttrs,
    ) -> Result<(), FsError> {
        let _ = attrs; // NTFS keeps no Unix mode or owner; xattrs are not written
        self.create(path, "create_file", write::NewKind::File(data))
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &vmie_guestfs::NewAttrs) -> Result<(), FsError> {
        let _ = attrs; // NTFS keeps no Unix mode or owner
        self.create(path, "mkdir", write::NewKind::Dir)
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        let (file, dir, _) = self.write_target(path, "remove")?;
        let Some((rn, t)) = file else {
            return Err(FsError::NotFound {
                fs: self.location.clone(),
                path: path.to_string(),
            });
        };
        match t {
            FileType::Regular => {}
            FileType::Directory => {}
            _ => return Err(self.unsupported("remove", path, "removing links is not implemented")),
        }
        self.transact(|tx, ctx| write::remove(tx, ctx, rn, dir), path)
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        let (file, dir, _) = self.write_target(from, "rename")?;
        let (target, to_dir, _) = self.write_target(to, "rename")?;
        let Some((rn, t)) = file else {
            return Err(FsError::NotFound {
                fs: self.location.clone(),
                path: from.to_string(),
            });
        };
        match t {
            FileType::Regular | FileType::Directory => {}
            _ => return Err(self.unsupported("rename", from, "renaming links is not implemented")),
        }
        let victim = match target {
            None => None,
            Some((trn, _)) if trn == rn => None, // a change of case
            Some(_) if t == FileType::Directory => {
                return Err(FsError::Exists {
                    fs: self.location.clone(),
                    path: to.to_string(),
                })
            }
            Some((trn, FileType::Regular)) => Some(trn),
            Some((_, FileType::Directory)) => {
                return Err(FsError::IsADirectory {
                    fs: self.location.clone(),
                    path: to.to_string(),
                })
            }
            Some(_) => {
                return Err(self.unsupported("rename", to, "replacing a link is not implemented"))
            }
        };
        let name = to
            .file_name()
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| self.unsupported("rename", to, "the name is not UTF-8"))?
            .to_string();
        self.transact(
            |tx, ctx| {
                if let Some(v) = victim {
                    let vctx = write::Ctx {
                        up: ctx.up,
                        path: to,
                    };
                    write::remove(tx, &vctx, v, to_dir)?;
                }
                if to_dir == dir {
                    return write::rename(tx, ctx, rn, dir, &name);
                }
                let place = to.parent().to_string();
                write::move_to(tx, ctx, rn, dir, (to_dir, &place), &name)
            },
            from,
        )
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        let mut g = self.reader();
        let fs = &mut *g;
        let shown = path.to_string();
        let l = self.lookup(fs, path)?;
        let not_link = || FsError::NotASymlink {
            fs: self.location.clone(),
            path: shown.clone(),
        };
        let data = self.reparse_data(fs, &l, &shown)?.ok_or_else(not_link)?;
        if !reparse::is_link(le::le32(&data, 0)) {
            return Err(not_link());
        }
        reparse::link_target(&data)
            .map(String::into_bytes)
            .map_err(|why| self.unsupported("read_link", path, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_times_convert() {
        // 2023-01-23T20:45:00Z = 1674506700 Unix.
        let t = (1_674_506_700 + NT_TO_UNIX_SECS) as u64 * 10_000_000 + 1234567;
        let ts = nt_time(NtfsTime::from(t));
        assert_eq!(ts.secs, 1_674_506_700);
        assert_eq!(ts.nanos, 123_456_700);
        assert_eq!(nt_time(NtfsTime::from(0)).secs, -NT_TO_UNIX_SECS);
        assert!(nt_time(NtfsTime::from(u64::MAX)).secs > 0);
    }

    #[test]
    fn shareable_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<NtfsFs>();
    }

    #[test]
    fn names() {
        assert!(usable_name("a"));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(!usable_name(bad), "{bad:?}");
        }
    }
}
