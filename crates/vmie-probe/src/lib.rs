//! Identify what a device holds, the way `blkid -p` does, in userspace and
//! without mounting: filesystems (ext2/3/4, XFS, Btrfs, NTFS, FAT, ISO9660),
//! swap, and containers (Linux MD RAID members, LVM2 physical volumes, LUKS
//! and BitLocker volumes), together with the state a repair tool must know
//! before touching the filesystem: journal needing recovery, recorded
//! errors, dirty flags, hibernation, encryption.
//!
//! [`probe`] tries the kinds in libblkid's order and with libblkid's
//! validation rules, so a RAID member or an encrypted volume is reported as
//! such and not as the filesystem a stale signature might suggest. The
//! reported `UUID`, `LABEL` and `VERSION` strings are formatted exactly as
//! `blkid -p -o export` prints them.
//!
//! Every read is of a small fixed region (the first 72 KiB are read once and
//! shared by all probers); variable-length structures are capped by
//! [`ProbeOptions`], and the total number of bytes read is bounded by
//! [`ProbeOptions::max_total_read_bytes`]. Guest data never sizes an
//! allocation beyond those caps, and all field arithmetic is checked. A
//! device too small for a structure is simply "not that kind"; only a
//! failing read is an error.
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::fmt;

use thiserror::Error;
use vmie_disk::{Device, DiskError};

mod bitlocker;
mod btrfs;
mod bytes;
mod ext;
mod iso9660;
mod luks;
mod lvm;
mod mdraid;
mod ntfs;
mod swap;
mod util;
mod vfat;
mod xfs;

use bytes::{Miss, PResult};

/// What a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2 (no journal, no ext3/ext4-only features).
    Ext2,
    /// ext3 (journal, no ext4-only features).
    Ext3,
    /// ext4 (any feature ext3 does not know; also blkid's `ext4dev`).
    Ext4,
    /// XFS, v4 or v5.
    Xfs,
    /// An XFS external log device (blkid `xfs_external_log`).
    #[serde(rename = "xfs_external_log")]
    XfsExternalLog,
    /// Btrfs (one device of it).
    Btrfs,
    /// NTFS.
    Ntfs,
    /// FAT12/16/32 (blkid `vfat`).
    Vfat,
    /// Linux swap; also a swap area holding a hibernation image (blkid
    /// `swsuspend`), see [`FsState::hibernated`].
    Swap,
    /// LVM2 physical volume (blkid `LVM2_member`).
    Lvm2,
    /// LUKS1/LUKS2 (blkid `crypto_LUKS`).
    Luks,
    /// BitLocker (blkid `BitLocker`).
    Bitlocker,
    /// ISO9660 (with or without Joliet), or High Sierra.
    Iso9660,
    /// Linux MD RAID member (blkid `linux_raid_member`).
    #[serde(rename = "linux_raid_member")]
    LinuxRaid,
}

impl FsKind {
    /// Our short name: `ext2`, `ext3`, `ext4`, `xfs`, `xfs_external_log`,
    /// `btrfs`, `ntfs`, `vfat`, `swap`, `lvm2`, `luks`, `bitlocker`,
    /// `iso9660`, `linux_raid_member`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::XfsExternalLog => "xfs_external_log",
            FsKind::Btrfs => "btrfs",
            FsKind::Ntfs => "ntfs",
            FsKind::Vfat => "vfat",
            FsKind::Swap => "swap",
            FsKind::Lvm2 => "lvm2",
            FsKind::Luks => "luks",
            FsKind::Bitlocker => "bitlocker",
            FsKind::Iso9660 => "iso9660",
            FsKind::LinuxRaid => "linux_raid_member",
        }
    }

    /// The `TYPE=` value `blkid` prints for this kind (`crypto_LUKS`,
    /// `LVM2_member`, `BitLocker`, ...). A `swsuspend` swap area and an
    /// `ext4dev` filesystem carry their blkid type in
    /// [`Probe::details`] under `TYPE`.
    pub fn blkid_type(&self) -> &'static str {
        match self {
            FsKind::Lvm2 => "LVM2_member",
            FsKind::Luks => "crypto_LUKS",
            FsKind::Bitlocker => "BitLocker",
            other => other.as_str(),
        }
    }

    /// blkid's `USAGE=`: `filesystem`, `raid`, `crypto` or `other`.
    pub fn usage(&self) -> &'static str {
        match self {
            FsKind::LinuxRaid | FsKind::Lvm2 => "raid",
            FsKind::Luks | FsKind::Bitlocker => "crypto",
            FsKind::Swap | FsKind::XfsExternalLog => "other",
            _ => "filesystem",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    /// The kind.
    pub kind: FsKind,
    /// `UUID=` exactly as blkid prints it.
    pub uuid: Option<String>,
    /// `LABEL=` (UTF-8; NTFS, BitLocker and Joliet labels are decoded from
    /// UTF-16, other labels are the raw bytes, lossily decoded).
    pub label: Option<String>,
    /// `VERSION=` where blkid prints one.
    pub version: Option<String>,
    /// Size of the filesystem in bytes as its superblock states it (block
    /// count times block size; for XFS including an internal log, for Btrfs
    /// this device's share of the total).
    pub size: Option<u64>,
    /// Filesystem block (cluster, page) size in bytes.
    pub block_size: Option<u32>,
    /// Dirty, recovery, error, hibernation and encryption state.
    pub state: FsState,
    /// Further blkid-style tags: `SEC_TYPE`, `UUID_SUB`, `LABEL_FATBOOT`,
    /// `LOGUUID`, `EXT_JOURNAL`, `SUBSYSTEM`, `ENDIANNESS`, `FSSIZE`,
    /// `FSLASTBLOCK`, `FSBLOCKSIZE`, `BLOCK_SIZE`, ISO9660 ids, and `TYPE`
    /// where blkid's type differs from [`FsKind::blkid_type`]. `AMBIVALENT`
    /// lists other kinds whose signatures are also valid (blkid -p would
    /// refuse to choose).
    pub details: Vec<(String, String)>,
}

impl Probe {
    fn new(kind: FsKind) -> Self {
        Self {
            kind,
            uuid: None,
            label: None,
            version: None,
            size: None,
            block_size: None,
            state: FsState::default(),
            details: Vec::new(),
        }
    }

    /// The value of detail `key`, if present.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.details.push((key.to_string(), value.into()));
    }

    fn note(&mut self, note: impl Into<String>) {
        self.state.notes.push(note.into());
    }
}

/// State a repair tool must respect before writing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FsState {
    /// A journal/log must be replayed first: ext3/4 `RECOVER` incompat
    /// flag; XFS log head is not a clean unmount record; Btrfs log tree
    /// present; NTFS `$LogFile` not clean.
    pub needs_recovery: bool,
    /// The filesystem recorded errors or was not cleanly unmounted: ext
    /// `s_state` has `ERROR_FS` or lacks `VALID_FS`; XFS `needsrepair` or
    /// `sb_inprogress`; Btrfs error flag. `notes` names which.
    pub errors: bool,
    /// NTFS `$Volume` dirty flag; FAT dirty bit (boot sector, or the
    /// clean-shutdown bit of FAT entry 1).
    pub dirty: bool,
    /// NTFS: `hiberfil.sys` holds a hibernation image (Windows hibernated or
    /// shut down with Fast Startup); swap: a Linux hibernation image.
    pub hibernated: bool,
    /// LUKS or BitLocker.
    pub encrypted: bool,
    /// Feature bits we do not know, e.g. `ext4 incompat 0x00100000`.
    pub unknown_features: Vec<String>,
    /// Human-readable findings and limits of what was checked.
    pub notes: Vec<String>,
}

/// Limits for [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Longest label (and ISO9660 id string) reported, in bytes of UTF-8;
    /// also caps the raw bytes a label is decoded from.
    pub max_label_bytes: usize,
    /// Largest single read a prober may make (e.g. a FAT root directory,
    /// BitLocker metadata, an MFT record).
    pub max_read_bytes: usize,
    /// Budget of bytes read from the device in one [`probe`] call, beyond
    /// the first 72 KiB; when spent, the remaining checks are skipped and a
    /// note says so.
    pub max_total_read_bytes: u64,
    /// Check whether an internal XFS log is clean (a binary search over the
    /// log's cycle numbers plus a scan of at most `xfs_log_scan_bytes`).
    pub check_xfs_log: bool,
    /// Bytes of XFS log scanned around the head.
    pub xfs_log_scan_bytes: u64,
    /// Check NTFS `$LogFile` and look up `hiberfil.sys` in the root
    /// directory.
    pub check_ntfs_state: bool,
    /// Look for LUKS2 secondary headers when the primary one is gone
    /// (blkid -p does not).
    pub luks2_secondary_headers: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            max_label_bytes: 1024,
            max_read_bytes: 1 << 20,
            max_total_read_bytes: 16 << 20,
            check_xfs_log: true,
            xfs_log_scan_bytes: 2 << 20,
            check_ntfs_state: true,
            luks2_secondary_headers: false,
        }
    }
}

/// Probing failed because the device could not be read.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// A read failed.
    #[error("{device}: reading {len} bytes at offset {offset}: {source}")]
    Io {
        /// The device.
        device: String,
        /// Where.
        offset: u64,
        /// How much.
        len: usize,
        /// The underlying error.
        #[source]
        source: DiskError,
    },
}

/// Bytes read once up front and shared by every prober.
const HEAD_BYTES: usize = 72 * 1024;

/// blkid does not probe devices of 1024 bytes or less.
const MIN_DEVICE: u64 = 1024;

/// blkid's "tiny device" (floppy) limit: no RAID probing, first match wins.
const TINY_DEVICE: u64 = 1440 * 1024;

/// Shared state of one [`probe`] call: the device, the cached head, the read
/// budget.
pub(crate) struct Ctx<'a> {
    dev: &'a dyn Device,
    len: u64,
    opts: &'a ProbeOptions,
    head: Vec<u8>,
    spent: Cell<u64>,
    exhausted: Cell<bool>,
    notes: RefCell<Vec<String>>,
}

impl<'a> Ctx<'a> {
    fn new(dev: &'a dyn Device, opts: &'a ProbeOptions) -> Result<Self, ProbeError> {
        let len = dev.len();
        let head_len = usize::try_from(len.min(HEAD_BYTES as u64)).unwrap_or(0);
        let mut head = vec![0u8; head_len];
        dev.read_at(0, &mut head).map_err(|source| ProbeError::Io {
            device: dev.describe(),
            offset: 0,
            len: head_len,
            source,
        })?;
        Ok(Self {
            dev,
            len,
            opts,
            head,
            spent: Cell::new(0),
            exhausted: Cell::new(false),
            notes: RefCell::new(Vec::new()),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn opts(&self) -> &ProbeOptions {
        self.opts
    }

    /// Whether `off..off+len` lies inside the device.
    pub(crate) fn inside(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Read `len` bytes at `off`. "Not this kind" when the range is outside
    /// the device, larger than `max_read_bytes`, or over the budget.
    pub(crate) fn read(&self, off: u64, len: usize) -> PResult<Vec<u8>> {
        let len64 = u64::try_from(len).map_err(|_| Miss::Not)?;
        if !self.inside(off, len64) {
            return Err(Miss::Not);
        }
        if let Some(end) = off.checked_add(len64) {
            if end <= self.head.len() as u64 {
                let s = usize::try_from(off).map_err(|_| Miss::Not)?;
                let e = usize::try_from(end).map_err(|_| Miss::Not)?;
                return self.head.get(s..e).map(<[u8]>::to_vec).ok_or(Miss::Not);
            }
        }
        if len > self.opts.max_read_bytes {
            return Err(Miss::Not);
        }
        let spent = self.spent.get().saturating_add(len64);
        if spent > self.opts.max_total_read_bytes {
            if !self.exhausted.replace(true) {
                self.notes.borrow_mut().push(format!(
                    "read budget of {} bytes exhausted; later checks were skipped",
                    self.opts.max_total_read_bytes
                ));
            }
            return Err(Miss::Not);
        }
        self.spent.set(spent);
        let mut buf = vec![0u8; len];
        self.dev
            .read_at(off, &mut buf)
            .map_err(|source| ProbeError::Io {
                device: self.dev.describe(),
                offset: off,
                len,
                source,
            })?;
        Ok(buf)
    }

    /// The cached head of the device (at most 72 KiB).
    pub(crate) fn head(&self) -> bytes::Bytes<'_> {
        bytes::Bytes(&self.head)
    }

    /// Cap raw label bytes to `max_label_bytes`.
    pub(crate) fn cap<'b>(&self, b: &'b [u8]) -> &'b [u8] {
        b.get(..self.opts.max_label_bytes).unwrap_or(b)
    }
}

type Prober = fn(&Ctx<'_>, bool) -> PResult<Probe>;

/// The probers in libblkid's order, with whether they are RAID/crypto
/// (which end probing at once), whether they are skipped on tiny devices,
/// and whether blkid tolerates them next to another signature.
struct Entry {
    run: Prober,
    container: bool,
    raid: bool,
    tolerant: bool,
}

const PROBERS: &[Entry] = &[
    Entry {
        run: mdraid::probe,
        container: true,
        raid: true,
        tolerant: false,
    },
    Entry {
        run: lvm::probe,
        container: true,
        raid: true,
        tolerant: false,
    },
    Entry {
        run: luks::probe,
        container: true,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: bitlocker::probe,
        container: true,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: vfat::probe,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: swap::probe_swsuspend,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: swap::probe,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: xfs::probe,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: xfs::probe_log,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: ext::probe,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: iso9660::probe,
        container: false,
        raid: false,
        tolerant: true,
    },
    Entry {
        run: ntfs::probe,
        container: false,
        raid: false,
        tolerant: false,
    },
    Entry {
        run: btrfs::probe,
        container: false,
        raid: false,
        tolerant: false,
    },
];

/// Identify what `dev` holds.
///
/// Returns `Ok(None)` when nothing is recognised (including devices of 1024
/// bytes or less, which blkid ignores too), and `Err` only when a read
/// fails. Probing order and validation follow libblkid: RAID members, LVM2
/// PVs, LUKS and BitLocker are recognised before any filesystem and end the
/// search; otherwise every prober is tried, and if more than one filesystem
/// signature is valid the first (in blkid's order) is returned with an
/// `AMBIVALENT` detail and a note, where `blkid -p` would print nothing.
pub fn probe(dev: &dyn Device, opts: &ProbeOptions) -> Result<Option<Probe>, ProbeError> {
    if dev.len() <= MIN_DEVICE {
        return Ok(None);
    }
    let ctx = Ctx::new(dev, opts)?;
    let tiny = ctx.len() <= TINY_DEVICE;
    let mut first: Option<(usize, Probe)> = None;
    let mut others: Vec<String> = Vec::new();
    let mut intolerant = 0usize;
    for (i, entry) in PROBERS.iter().enumerate() {
        if entry.raid && tiny {
            continue;
        }
        match (entry.run)(&ctx, false) {
            Ok(p) => {
                if !entry.tolerant {
                    intolerant += 1;
                }
                if first.is_none() {
                    first = Some((i, p));
                    if entry.container || tiny {
                        break;
                    }
                } else {
                    others.push(p.detail("TYPE").unwrap_or(p.kind.blkid_type()).to_string());
                    if entry.container {
                        break;
                    }
                }
            }
            Err(Miss::Not) => {}
            Err(Miss::Io(e)) => return Err(e),
        }
    }
    let Some((idx, shallow)) = first else {
        return Ok(None);
    };
    // Run the winner again with the costlier state checks enabled.
    let mut probe = match PROBERS.get(idx).map(|e| (e.run)(&ctx, true)) {
        Some(Ok(p)) => p,
        Some(Err(Miss::Io(e))) => return Err(e),
        _ => shallow,
    };
    if !others.is_empty() && intolerant > 0 {
        probe.set("AMBIVALENT", others.join(","));
        probe.note(format!(
            "signatures of {} are valid too; blkid -p would report an ambivalent result",
            others.join(", ")
        ));
    }
    probe.state.notes.extend(ctx.notes.take());
    finish_labels(&mut probe, opts.max_label_bytes);
    Ok(Some(probe))
}

/// Apply `max_label_bytes` to everything label-like we report.
fn finish_labels(p: &mut Probe, max: usize) {
    let mut cut = false;
    if let Some(l) = p.label.as_mut() {
        cut |= util::truncate_utf8(l, max);
    }
    for (_, v) in p.details.iter_mut() {
        cut |= util::truncate_utf8(v, max);
    }
    if cut {
        p.note(format!("a label or id string was cut to {max} bytes"));
    }
}
