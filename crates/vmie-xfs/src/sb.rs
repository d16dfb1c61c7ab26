//! The XFS superblock: geometry and features, validated before anything
//! else is read.

use crate::be::{be16, be32, be64};

pub(crate) const XFS_SB_MAGIC: u32 = 0x5846_5342;

// sb_versionnum bits (v4).
const VERSION_ATTRBIT: u16 = 0x0010;
const VERSION_DIRV2BIT: u16 = 0x2000;
const VERSION_BORGBIT: u16 = 0x4000;
const VERSION_MOREBITSBIT: u16 = 0x8000;
const VERSION_NLINKBIT: u16 = 0x0020;
/// v4 bits we know (everything in the low 16 but the version nibble).
const VERSION_KNOWN: u16 = 0xFFF0;

// sb_features2 (v4; v5 has them implied).
const FEATURES2_FTYPE: u32 = 0x0200;
const FEATURES2_CRC: u32 = 0x0100;
const FEATURES2_KNOWN: u32 = 0x0001 | 0x0002 | 0x0008 | 0x0080 | 0x0100 | 0x0200;

// v5 feature words.
pub(crate) const INCOMPAT_FTYPE: u32 = 1 << 0;
pub(crate) const INCOMPAT_SPINODES: u32 = 1 << 1;
pub(crate) const INCOMPAT_META_UUID: u32 = 1 << 2;
pub(crate) const INCOMPAT_BIGTIME: u32 = 1 << 3;
pub(crate) const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
pub(crate) const INCOMPAT_NREXT64: u32 = 1 << 5;
pub(crate) const INCOMPAT_EXCHRANGE: u32 = 1 << 6;
pub(crate) const INCOMPAT_PARENT: u32 = 1 << 7;

pub(crate) const RO_COMPAT_FINOBT: u32 = 1 << 0;
pub(crate) const RO_COMPAT_RMAPBT: u32 = 1 << 1;
pub(crate) const RO_COMPAT_REFLINK: u32 = 1 << 2;
pub(crate) const RO_COMPAT_INOBTCNT: u32 = 1 << 3;

/// Incompatible features this reader understands.
const INCOMPAT_READABLE: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

/// Names of the incompat bits, for messages.
pub(crate) fn incompat_names(bits: u32) -> Vec<String> {
    const NAMES: [&str; 11] = [
        "ftype",
        "sparse inodes",
        "meta_uuid",
        "bigtime",
        "needsrepair",
        "nrext64",
        "exchange-range",
        "parent pointers",
        "metadir",
        "zoned",
        "zone gaps",
    ];
    (0..32)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| match NAMES.get(i) {
            Some(n) => (*n).to_string(),
            None => format!("unknown bit {i}"),
        })
        .collect()
}

/// Validated geometry and features of one XFS filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Geo {
    pub block_size: u32,
    pub sect_size: u32,
    /// Extended attributes may be added (attr2 layout: any fork offset).
    pub attr2: bool,
    pub nlink_bit: bool,
    /// The v4 attribute bit (set by the first attribute ever added).
    pub attrbit: bool,
    pub block_log: u32,
    pub inode_size: u32,
    pub inode_log: u32,
    pub inopblog: u32,
    pub agblocks: u32,
    pub agblklog: u32,
    pub agcount: u32,
    pub dblocks: u64,
    pub rootino: u64,
    pub logstart: u64,
    pub logblocks: u32,
    /// Directory block size in bytes.
    pub dir_size: u32,
    /// Directory block size in filesystem blocks.
    pub dir_fsbs: u32,
    pub v5: bool,
    pub ftype: bool,
    pub ascii_ci: bool,
    pub uuid: [u8; 16],
    /// The UUID stamped into v5 metadata (sb_meta_uuid with META_UUID).
    pub meta_uuid: [u8; 16],
    pub incompat: u32,
    pub ro_compat: u32,
    pub log_incompat: u32,
    pub label: [u8; 12],
}

impl Geo {
    /// Parse and validate the primary superblock `sb` (at least 512 bytes;
    /// the whole first sector for the v5 CRC) of a volume of `dev_len`
    /// bytes. Errors are plain strings; the caller adds the location.
    pub fn parse(sb: &[u8], dev_len: u64) -> Result<Self, SbError> {
        let bad = |s: String| Err(SbError::Corrupt(s));
        if sb.len() < 512 || be32(sb, 0) != XFS_SB_MAGIC {
            return bad("no XFS superblock magic".into());
        }
        let block_size = be32(sb, 4);
        let block_log = u32::from(sb[120]);
        if !(9..=16).contains(&block_log) || block_size != 1 << block_log {
            return bad(format!("block size {block_size} (log {block_log})"));
        }
        let sect_size = u32::from(be16(sb, 102));
        let sect_log = u32::from(sb[121]);
        if !(9..=15).contains(&sect_log) || sect_size != 1 << sect_log || sect_size > block_size {
            return bad(format!("sector size {sect_size} (log {sect_log})"));
        }
        let versionnum = be16(sb, 100);
        let version = versionnum & 0xF;
        let v5 = match version {
            5 => true,
            4 => false,
            v => {
                return Err(SbError::Unsupported(format!(
                    "superblock version {v} (only 4 and 5 exist in filesystems Linux mounts)"
                )))
            }
        };
        let inode_size = u32::from(be16(sb, 104));
        let inode_log = u32::from(sb[122]);
        let min_inode_log = if v5 { 9 } else { 8 };
        if !(min_inode_log..=11).contains(&inode_log)
            || inode_size != 1 << inode_log
            || inode_size > block_size
        {
            return bad(format!("inode size {inode_size} (log {inode_log})"));
        }
        let inopblock = u32::from(be16(sb, 106));
        let inopblog = u32::from(sb[123]);
        if inopblog != block_log - inode_log || inopblock != 1 << inopblog {
            return bad(format!("{inopblock} inodes per block (log {inopblog})"));
        }
        let agblocks = be32(sb, 84);
        let agblklog = u32::from(sb[124]);
        let agcount = be32(sb, 88);
        // XFS_MIN_AG_BLOCKS is 64; agblklog is log2 rounded up.
        if agblocks < 64
            || agblklog > 31
            || agblocks > 1 << agblklog
            || agblocks <= 1 << agblklog >> 1
        {
            return bad(format!("{agblocks} blocks per AG (log {agblklog})"));
        }
        if agblklog + inopblog > 32 {
            return bad("AG too large for 32-bit AG inode numbers".into());
        }
        let dblocks = be64(sb, 8);
        let max_blocks = u64::from(agcount) * u64::from(agblocks);
        if agcount == 0 || dblocks > max_blocks || dblocks <= max_blocks - u64::from(agblocks) {
            return bad(format!(
                "{dblocks} blocks do not make {agcount} AGs of {agblocks}"
            ));
        }
        let fs_bytes = dblocks.checked_mul(u64::from(block_size));
        if fs_bytes.is_none_or(|n| n > dev_len) {
            return bad(format!(
                "{dblocks} blocks of {block_size} bytes do not fit in the {dev_len} bytes of the volume"
            ));
        }
        let dirblklog = u32::from(sb[192]);
        if block_log + dirblklog > 16 {
            return bad(format!("directory block log {dirblklog}"));
        }
        if v5 {
            let sect = sb.get(..sect_size as usize).ok_or_else(|| {
                SbError::Corrupt("superblock sector shorter than the sector size".into())
            })?;
            if !crate::csum::verify(sect, 224) {
                return bad("superblock CRC mismatch".into());
            }
        }
        let features2 = be32(sb, 200);
        let (ro_compat, incompat, log_incompat) = if v5 {
            (be32(sb, 212), be32(sb, 216), be32(sb, 220))
        } else {
            (0, 0, 0)
        };
        if !v5 {
            if versionnum & !VERSION_KNOWN & 0xFFF0 != 0 {
                return Err(SbError::Unsupported(format!(
                    "unknown v4 version bits 0x{versionnum:04x}"
                )));
            }
            if versionnum & VERSION_DIRV2BIT == 0 {
                return Err(SbError::Unsupported(
                    "version 1 directories (IRIX-era XFS)".into(),
                ));
            }
            if versionnum & VERSION_MOREBITSBIT != 0 && features2 & !FEATURES2_KNOWN != 0 {
                return Err(SbError::Unsupported(format!(
                    "unknown v4 features2 bits 0x{:x}",
                    features2 & !FEATURES2_KNOWN
                )));
            }
            if features2 & FEATURES2_CRC != 0 {
                return bad("a v4 superblock with the CRC feature".into());
            }
        }
        if incompat & !INCOMPAT_READABLE != 0 {
            return Err(SbError::Unsupported(format!(
                "incompatible feature(s) {}",
                incompat_names(incompat & !INCOMPAT_READABLE).join(", ")
            )));
        }
        let more = versionnum & VERSION_MOREBITSBIT != 0;
        let ftype = if v5 {
            incompat & INCOMPAT_FTYPE != 0
        } else {
            more && features2 & FEATURES2_FTYPE != 0
        };
        let rootino = be64(sb, 56);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[32..48]);
        let mut meta_uuid = uuid;
        if v5 && incompat & INCOMPAT_META_UUID != 0 {
            meta_uuid.copy_from_slice(&sb[248..264]);
        }
        let mut label = [0u8; 12];
        label.copy_from_slice(&sb[108..120]);
        Ok(Self {
            block_size,
            sect_size,
            attr2: v5 || (more && features2 & 0x8 != 0),
            attrbit: v5 || versionnum & VERSION_ATTRBIT != 0,
            nlink_bit: v5 || versionnum & VERSION_NLINKBIT != 0,
            block_log,
            inode_size,
            inode_log,
            inopblog,
            agblocks,
            agblklog,
            agcount,
            dblocks,
            rootino,
            logstart: be64(sb, 48),
            logblocks: be32(sb, 96),
            dir_size: block_size << dirblklog,
            dir_fsbs: 1 << dirblklog,
            v5,
            ftype,
            ascii_ci: !v5 && versionnum & VERSION_BORGBIT != 0,
            uuid,
            meta_uuid,
            incompat,
            ro_compat,
            log_incompat,
            label,
        })
    }

    pub fn bigtime(&self) -> bool {
        self.incompat & INCOMPAT_BIGTIME != 0
    }

    pub fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    /// Byte offset of filesystem block `fsb` (AG-encoded) spanning `len`
    /// blocks, when the whole run lies inside one AG of the filesystem.
    pub fn fsb_to_byte(&self, fsb: u64, len: u64) -> Option<u64> {
        let agno = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        if agno >= u64::from(self.agcount) || len == 0 {
            return None;
        }
        let end = agbno.checked_add(len)?;
        if end > u64::from(self.agblocks) {
            return None;
        }
        let linear = agno * u64::from(self.agblocks) + agbno;
        if linear.checked_add(len)? > self.dblocks {
            return None;
        }
        linear.checked_mul(u64::from(self.block_size))
    }

    /// The 512-byte disk address of filesystem block `fsb` (what v5
    /// headers record as `blkno`).
    pub fn fsb_to_daddr(&self, fsb: u64) -> Option<u64> {
        self.fsb_to_byte(fsb, 1).map(|b| b >> 9)
    }

    /// Byte offset of inode `ino`, when its number is well formed.
    pub fn ino_to_byte(&self, ino: u64) -> Option<u64> {
        let agino_bits = self.agblklog + self.inopblog;
        let agno = ino >> agino_bits;
        let agino = ino & ((1u64 << agino_bits) - 1);
        let agbno = agino >> self.inopblog;
        let idx = agino & ((1u64 << self.inopblog) - 1);
        if agno >= u64::from(self.agcount) || agbno >= u64::from(self.agblocks) || agbno == 0 {
            return None;
        }
        let block = self.fsb_to_byte((agno << self.agblklog) | agbno, 1)?;
        Some(block + (idx << self.inode_log))
    }

    /// Filesystem-block offset of the directory leaf segment (32 GiB).
    pub fn dir_leaf_fsb(&self) -> u64 {
        (32u64 << 30) >> self.block_log
    }
}

/// Why a superblock was refused.
#[derive(Debug)]
pub(crate) enum SbError {
    Corrupt(String),
    Unsupported(String),
}
