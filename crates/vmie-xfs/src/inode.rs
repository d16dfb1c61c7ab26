//! Inodes: the core, the data and attribute forks, and their block maps
//! (extent lists in the inode, or a bmbt B+tree below it).

use vmie_guestfs::{FileType, FsError, Timestamp};

use crate::be::{be16, be32, be64};
use crate::Ctx;

pub(crate) const INODE_MAGIC: u16 = 0x494e;
pub(crate) const FMT_DEV: u8 = 0;
pub(crate) const FMT_LOCAL: u8 = 1;
pub(crate) const FMT_EXTENTS: u8 = 2;
pub(crate) const FMT_BTREE: u8 = 3;

pub(crate) const DIFLAG_REALTIME: u16 = 0x1;
pub(crate) const DIFLAG2_REFLINK: u64 = 0x2;
pub(crate) const DIFLAG2_BIGTIME: u64 = 0x8;
pub(crate) const DIFLAG2_NREXT64: u64 = 0x10;

const BMAP_MAGIC: u32 = 0x424d_4150;
const BMAP_CRC_MAGIC: u32 = 0x424d_4133;
/// Deepest bmbt accepted (the kernel's limit for 2^54 extents is 9 or 10
/// levels depending on the block size; ours only bounds the walk).
const MAX_BMBT_LEVEL: u16 = 12;

/// Which fork of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fork {
    Data,
    Attr,
}

/// One mapping of file blocks to disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// First file block.
    pub off: u64,
    /// First filesystem block (AG-encoded).
    pub fsb: u64,
    /// Length in blocks.
    pub len: u64,
    /// Preallocated, reads as zeros.
    pub unwritten: bool,
}

/// A decoded, verified on-disk inode.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub ino: u64,
    /// Byte offset of the inode on the device.
    pub at: u64,
    pub raw: Vec<u8>,
    pub mode: u16,
    pub version: u8,
    pub format: u8,
    pub aformat: u8,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub nblocks: u64,
    pub nextents: u64,
    pub anextents: u64,
    pub flags: u16,
    pub flags2: u64,
    /// Size of the core (literal area starts here).
    pub core: usize,
    /// Attribute fork offset from the literal area, bytes (0: none).
    pub forkoff: usize,
}

/// Decode one extent record.
pub(crate) fn decode_extent(rec: &[u8]) -> Extent {
    let l0 = be64(rec, 0);
    let l1 = be64(rec, 8);
    Extent {
        unwritten: l0 >> 63 != 0,
        off: (l0 & ((1u64 << 63) - 1)) >> 9,
        fsb: ((l0 & 0x1FF) << 43) | (l1 >> 21),
        len: l1 & 0x1F_FFFF,
    }
}

impl Inode {
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(u32::from(self.mode))
    }

    fn lit_size(&self) -> usize {
        self.raw.len() - self.core
    }

    /// The data fork's bytes in the inode.
    pub fn data_fork(&self) -> &[u8] {
        let size = if self.forkoff == 0 {
            self.lit_size()
        } else {
            self.forkoff
        };
        &self.raw[self.core..self.core + size]
    }

    /// The attribute fork's bytes in the inode, if it has one.
    pub fn attr_fork(&self) -> Option<&[u8]> {
        if self.forkoff == 0 {
            return None;
        }
        Some(&self.raw[self.core + self.forkoff..])
    }

    pub fn time(&self, off: usize) -> Timestamp {
        if self.flags2 & DIFLAG2_BIGTIME != 0 {
            let ns = be64(&self.raw, off);
            Timestamp {
                secs: (ns / 1_000_000_000) as i64 - (1i64 << 31),
                nanos: (ns % 1_000_000_000) as u32,
            }
        } else {
            Timestamp {
                secs: i64::from(be32(&self.raw, off) as i32),
                nanos: be32(&self.raw, off + 4).min(999_999_999),
            }
        }
    }

    pub fn is_realtime(&self) -> bool {
        self.flags & DIFLAG_REALTIME != 0
    }
}

impl Ctx {
    /// Read and verify inode `ino`. `place` names it in errors.
    pub fn inode(&self, ino: u64, place: &str) -> Result<Inode, FsError> {
        let g = &self.geo;
        let at = g.ino_to_byte(ino).ok_or_else(|| {
            self.corrupt(
                place,
                format!("inode number {ino} is outside the filesystem"),
            )
        })?;
        let mut raw = vec![0u8; g.inode_size as usize];
        self.dev.read_at(at, &mut raw)?;
        let bad = |d: String| self.corrupt(place, format!("inode {ino}: {d}"));
        if be16(&raw, 0) != INODE_MAGIC {
            return Err(bad("bad magic".into()));
        }
        let version = raw[4];
        let core = match (g.v5, version) {
            (true, 3) => 176,
            (false, 1 | 2) => 100,
            _ => return Err(bad(format!("version {version} on this filesystem"))),
        };
        if version == 3 {
            if !crate::csum::verify(&raw, 100) {
                return Err(bad("CRC mismatch".into()));
            }
            if be64(&raw, 152) != ino {
                return Err(bad(format!("records inode number {}", be64(&raw, 152))));
            }
            if raw[160..176] != g.meta_uuid {
                return Err(bad("belongs to another filesystem (UUID)".into()));
            }
        }
        let mode = be16(&raw, 2);
        if mode == 0 {
            return Err(bad("is free (mode 0)".into()));
        }
        let flags2 = if version == 3 { be64(&raw, 120) } else { 0 };
        let nrext64 = flags2 & DIFLAG2_NREXT64 != 0;
        if nrext64 && !g.has(crate::sb::INCOMPAT_NREXT64) {
            return Err(bad("nrext64 inode on a filesystem without nrext64".into()));
        }
        if flags2 & DIFLAG2_BIGTIME != 0 && !g.bigtime() {
            return Err(bad("bigtime inode on a filesystem without bigtime".into()));
        }
        let (nextents, anextents) = if nrext64 {
            (be64(&raw, 24), u64::from(be32(&raw, 76)))
        } else {
            (u64::from(be32(&raw, 76)), u64::from(be16(&raw, 80)))
        };
        let size = be64(&raw, 56);
        if size >> 63 != 0 {
            return Err(bad(format!("negative size {size:#x}")));
        }
        let forkoff = usize::from(raw[82]) * 8;
        let lit = raw.len() - core;
        if forkoff >= lit {
            return Err(bad(format!(
                "attribute fork offset {forkoff} beyond the inode"
            )));
        }
        let nlink = if version == 1 {
            u32::from(be16(&raw, 6))
        } else {
            be32(&raw, 16)
        };
        let ip = Inode {
            ino,
            at,
            mode,
            version,
            format: raw[5],
            aformat: raw[83],
            uid: be32(&raw, 8),
            gid: be32(&raw, 12),
            nlink,
            size,
            nblocks: be64(&raw, 64),
            nextents,
            anextents,
            flags: be16(&raw, 90),
            flags2,
            core,
            forkoff,
            raw,
        };
        self.check_forks(&ip, place)?;
        Ok(ip)
    }

    fn check_forks(&self, ip: &Inode, place: &str) -> Result<(), FsError> {
        let bad = |d: String| self.corrupt(place, format!("inode {}: {d}", ip.ino));
        let t = ip.file_type();
        let fmt_ok = match t {
            FileType::Regular => matches!(ip.format, FMT_EXTENTS | FMT_BTREE),
            FileType::Directory | FileType::Symlink => {
                matches!(ip.format, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE)
            }
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
                ip.format == FMT_DEV
            }
            FileType::Unknown => {
                return Err(bad(format!("unknown file type in mode {:o}", ip.mode)))
            }
        };
        if !fmt_ok {
            return Err(bad(format!("data fork format {} for a {t:?}", ip.format)));
        }
        let check = |fork: &[u8], fmt: u8, n: u64, what: &str| -> Result<(), FsError> {
            match fmt {
                FMT_EXTENTS => {
                    if n.saturating_mul(16) > fork.len() as u64 {
                        return Err(bad(format!(
                            "{n} {what} extents do not fit in the {}-byte fork",
                            fork.len()
                        )));
                    }
                }
                FMT_BTREE => {
                    if fork.len() < 4 + 16 {
                        return Err(bad(format!("{what} fork too small for a btree root")));
                    }
                }
                FMT_LOCAL => {}
                FMT_DEV => {}
                f => return Err(bad(format!("{what} fork format {f}"))),
            }
            Ok(())
        };
        check(ip.data_fork(), ip.format, ip.nextents, "data")?;
        if ip.format == FMT_LOCAL && ip.size > ip.data_fork().len() as u64 {
            return Err(bad(format!(
                "inline data of {} bytes in a {}-byte fork",
                ip.size,
                ip.data_fork().len()
            )));
        }
        if let Some(af) = ip.attr_fork() {
            if !matches!(ip.aformat, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE) {
                return Err(bad(format!("attribute fork format {}", ip.aformat)));
            }
            check(af, ip.aformat, ip.anextents, "attribute")?;
        } else if ip.anextents != 0 {
            return Err(bad("attribute extents without an attribute fork".into()));
        }
        Ok(())
    }

    /// The block map of one fork, sorted, validated (in range, not
    /// overlapping), at most `Limits`-bounded in count.
    pub fn extents(&self, ip: &Inode, fork: Fork, place: &str) -> Result<Vec<Extent>, FsError> {
        let (bytes, fmt, n) = match fork {
            Fork::Data => (ip.data_fork(), ip.format, ip.nextents),
            Fork::Attr => match ip.attr_fork() {
                Some(a) => (a, ip.aformat, ip.anextents),
                None => return Ok(Vec::new()),
            },
        };
        let bad = |d: String| self.corrupt(place, format!("inode {} {fork:?} fork: {d}", ip.ino));
        let mut out = Vec::new();
        match fmt {
            FMT_EXTENTS => {
                for i in 0..n as usize {
                    out.push(decode_extent(&bytes[i * 16..i * 16 + 16]));
                }
            }
            FMT_BTREE => {
                let level = be16(bytes, 0);
                let numrecs = usize::from(be16(bytes, 2));
                let maxrecs = (bytes.len() - 4) / 16;
                if level == 0 || level > MAX_BMBT_LEVEL || numrecs == 0 || numrecs > maxrecs {
                    return Err(bad(format!(
                        "btree root level {level} with {numrecs} records"
                    )));
                }
                let mut budget = self.max_extents();
                let mut blocks_left = ip.nblocks.saturating_add(1).min(self.geo.dblocks);
                for i in 0..numrecs {
                    let ptr = be64(bytes, 4 + maxrecs * 8 + i * 8);
                    self.bmbt_walk(
                        ip,
                        ptr,
                        level - 1,
                        &mut out,
                        &mut budget,
                        &mut blocks_left,
                        place,
                    )?;
                }
            }
            FMT_LOCAL | FMT_DEV => return Ok(Vec::new()),
            f => return Err(bad(format!("format {f}"))),
        }
        if out.len() as u64 > self.max_extents() {
            return Err(bad(format!("more than {} extents", self.max_extents())));
        }
        let mut next = 0u64;
        for e in &out {
            if e.len == 0 || e.off < next {
                return Err(bad(format!(
                    "extent at file block {} ({} blocks) is empty or overlaps the previous one",
                    e.off, e.len
                )));
            }
            if self.geo.fsb_to_byte(e.fsb, e.len).is_none() {
                return Err(bad(format!(
                    "extent at file block {} points outside the filesystem (block {:#x}, {} blocks)",
                    e.off, e.fsb, e.len
                )));
            }
            next = e.off + e.len;
        }
        Ok(out)
    }

    /// Most extents one fork may have before we refuse to collect them.
    pub fn max_extents(&self) -> u64 {
        (self.limits.max_dir_entries as u64).max(1 << 16)
    }

    #[allow(clippy::too_many_arguments)]
    fn bmbt_walk(
        &self,
        ip: &Inode,
        fsb: u64,
        level: u16,
        out: &mut Vec<Extent>,
        budget: &mut u64,
        blocks_left: &mut u64,
        place: &str,
    ) -> Result<(), FsError> {
        let bad =
            |d: String| self.corrupt(place, format!("inode {} bmbt block {fsb:#x}: {d}", ip.ino));
        if *blocks_left == 0 {
            return Err(bad("more btree blocks than the inode owns".into()));
        }
        *blocks_left -= 1;
        let at = self
            .geo
            .fsb_to_byte(fsb, 1)
            .ok_or_else(|| bad("outside the filesystem".into()))?;
        let bs = self.geo.block_size as usize;
        let mut b = vec![0u8; bs];
        self.dev.read_at(at, &mut b)?;
        let (magic, hdr) = if self.geo.v5 {
            (BMAP_CRC_MAGIC, 72)
        } else {
            (BMAP_MAGIC, 24)
        };
        if be32(&b, 0) != magic {
            return Err(bad("bad magic".into()));
        }
        if self.geo.v5 {
            if !crate::csum::verify(&b, 64) {
                return Err(bad("CRC mismatch".into()));
            }
            if be64(&b, 56) != ip.ino || b[40..56] != self.geo.meta_uuid {
                return Err(bad("owner or UUID is not this inode's".into()));
            }
            if Some(be64(&b, 24)) != self.geo.fsb_to_daddr(fsb) {
                return Err(bad("records another disk address".into()));
            }
        }
        let lvl = be16(&b, 4);
        let numrecs = usize::from(be16(&b, 6));
        let maxrecs = (bs - hdr) / 16;
        if lvl != level || numrecs == 0 || numrecs > maxrecs {
            return Err(bad(format!(
                "level {lvl} (expected {level}) with {numrecs} records"
            )));
        }
        if level == 0 {
            if numrecs as u64 > *budget {
                return Err(bad(format!("more than {} extents", self.max_extents())));
            }
            *budget -= numrecs as u64;
            for i in 0..numrecs {
                out.push(decode_extent(&b[hdr + i * 16..hdr + i * 16 + 16]));
            }
        } else {
            for i in 0..numrecs {
                let ptr = be64(&b, hdr + maxrecs * 8 + i * 8);
                self.bmbt_walk(ip, ptr, level - 1, out, budget, blocks_left, place)?;
            }
        }
        Ok(())
    }

    /// Bytes `start..start+len` of a fork mapped by `ext` (holes and
    /// unwritten extents read as zeros). The caller bounds `len`.
    pub fn read_mapped(&self, ext: &[Extent], start: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let mut out = vec![0u8; len];
        let bs = u64::from(self.geo.block_size);
        let end = start + len as u64;
        for e in ext {
            let e_start = e.off * bs;
            let e_end = e_start + e.len * bs;
            if e_end <= start || e_start >= end || e.unwritten {
                continue;
            }
            let from = e_start.max(start);
            let to = e_end.min(end);
            let disk = self.geo.fsb_to_byte(e.fsb, e.len).ok_or_else(|| {
                self.corrupt(
                    "block map",
                    format!("extent {:#x} outside the filesystem", e.fsb),
                )
            })?;
            self.dev.read_at(
                disk + (from - e_start),
                &mut out[(from - start) as usize..(to - start) as usize],
            )?;
        }
        Ok(out)
    }
}
