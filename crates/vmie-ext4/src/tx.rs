//! A write transaction: every block the operation touches is read once into
//! memory, changed there, and written to the device only by [`Tx::commit`]
//! after the whole operation succeeded. An operation that fails (no space, a
//! refusal, a corrupt structure) therefore writes nothing at all.
//!
//! A group's bitmaps are trusted only after checks, made the first time the
//! transaction allocates in or frees into the group, so a corrupt bitmap or
//! descriptor refuses the write instead of leading the allocator onto blocks
//! or inodes in use (see [`Tx::check_block_group`] and
//! [`Tx::check_inode_group`]). Each allocated block is also checked against
//! the blocks mapped by every inode the transaction read (the directory
//! being extended, the file being replaced), and each allocated inode
//! against its own link count.

use std::collections::{BTreeMap, BTreeSet};

use vmie_disk::Device;
use vmie_guestfs::FsError;

use crate::csum::{crc16, crc32c};
use crate::geo::{le16, le32, put16, put32, Geo};

pub(crate) const BG_INODE_UNINIT: u16 = 1;
pub(crate) const BG_BLOCK_UNINIT: u16 = 2;

/// Kind of directory block, for its checksum at commit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DirKind {
    /// A leaf (plain entries, tail checksum if present).
    Leaf,
    /// An htree index block whose limit/count sit at this offset.
    Dx(usize),
}

#[derive(Debug)]
pub(crate) struct Tx<'a> {
    pub g: &'a Geo,
    dev: &'a dyn Device,
    pub loc: &'a str,
    pub sb: Vec<u8>,
    sb_orig: Vec<u8>,
    /// Group descriptors read so far (on first use, through the block cache).
    gds: BTreeMap<u32, Vec<u8>>,
    gd_dirty: BTreeSet<u32>,
    blocks: BTreeMap<u64, Vec<u8>>,
    dirty: BTreeSet<u64>,
    bb_dirty: BTreeSet<u32>,
    ib_dirty: BTreeSet<u32>,
    /// Directory blocks to checksum at commit: block -> (ino, gen, kind).
    dir_csum: BTreeMap<u64, (u32, u32, DirKind)>,
    /// Groups whose block bitmap passed [`Tx::check_block_group`].
    bb_ok: BTreeSet<u32>,
    /// Groups whose inode bitmap passed [`Tx::check_inode_group`].
    ib_ok: BTreeSet<u32>,
    /// Blocks mapped by the inodes this transaction read, less those it
    /// freed: start -> (length, inode). Ranges never overlap.
    mapped: BTreeMap<u64, (u64, u32)>,
    pub now: (i64, u32),
}

impl<'a> Tx<'a> {
    pub fn corrupt(&self, place: impl Into<String>, detail: impl Into<String>) -> FsError {
        FsError::Corrupt {
            fs: self.loc.to_string(),
            place: place.into(),
            detail: detail.into(),
        }
    }

    pub fn nospace(&self, what: impl Into<String>) -> FsError {
        FsError::NoSpace {
            fs: self.loc.to_string(),
            what: what.into(),
        }
    }

    pub fn unsupported(&self, op: impl Into<String>, why: impl Into<String>) -> FsError {
        FsError::Unsupported {
            fs: self.loc.to_string(),
            op: op.into(),
            why: why.into(),
        }
    }

    /// Start a transaction: reads the superblock. Group descriptors are read
    /// when first used, so an operation reads what it touches, not a table
    /// that grows with the volume.
    pub fn begin(g: &'a Geo, dev: &'a dyn Device, loc: &'a str) -> Result<Self, FsError> {
        let mut sb = vec![0u8; 1024];
        dev.read_at(1024, &mut sb)?;
        g.check_writable(&sb, loc)?;
        let mut free_blocks = u64::from(le32(&sb, 0x0C));
        if g.is64() {
            free_blocks |= u64::from(le32(&sb, 0x158)) << 32;
        }
        let free_inodes = le32(&sb, 0x10);
        if free_blocks > g.blocks_count || free_inodes > g.inodes_count {
            return Err(FsError::Corrupt {
                fs: loc.to_string(),
                place: "superblock (offset 1024)".into(),
                detail: format!(
                    "{free_blocks} free blocks of {} or {free_inodes} free inodes of {}",
                    g.blocks_count, g.inodes_count
                ),
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos()))
            .unwrap_or((0, 0));
        Ok(Self {
            g,
            dev,
            loc,
            sb_orig: sb.clone(),
            sb,
            gds: BTreeMap::new(),
            gd_dirty: BTreeSet::new(),
            blocks: BTreeMap::new(),
            dirty: BTreeSet::new(),
            bb_dirty: BTreeSet::new(),
            ib_dirty: BTreeSet::new(),
            dir_csum: BTreeMap::new(),
            bb_ok: BTreeSet::new(),
            ib_ok: BTreeSet::new(),
            mapped: BTreeMap::new(),
            now,
        })
    }

    // ---- group descriptors ----

    /// Where descriptor `grp` lives: (block, offset in it).
    fn gd_place(&self, grp: u32) -> (u64, usize) {
        let per = (self.g.bs as usize) / self.g.desc_size;
        let b = self.g.first_data_block + 1 + (grp as usize / per) as u64;
        (b, (grp as usize % per) * self.g.desc_size)
    }

    /// Descriptor `grp`, read and checked on first use: its checksum (when
    /// the filesystem has one) and that its bitmaps and inode table lie
    /// inside the filesystem.
    fn gd(&mut self, grp: u32) -> Result<&mut Vec<u8>, FsError> {
        if grp >= self.g.groups {
            return Err(self.corrupt(
                format!("group {grp}"),
                format!(
                    "group number out of range (the filesystem has {})",
                    self.g.groups
                ),
            ));
        }
        if !self.gds.contains_key(&grp) {
            let (b, o) = self.gd_place(grp);
            let n = self.g.desc_size;
            let d = self.blk(b)?[o..o + n].to_vec();
            if let Some(c) = self.gd_csum(grp, &d) {
                if le16(&d, 0x1E) != c {
                    return Err(self.corrupt(
                        format!("group descriptor {grp}"),
                        "descriptor checksum mismatch",
                    ));
                }
            }
            let big = self.g.desc_size >= 64;
            let field = |lo: usize, hi: usize| {
                let mut v = u64::from(le32(&d, lo));
                if big {
                    v |= u64::from(le32(&d, hi)) << 32;
                }
                v
            };
            let it_span = (u64::from(self.g.ipg) * self.g.inode_size as u64).div_ceil(self.g.bs);
            for (what, b, span) in [
                ("block bitmap", field(0x0, 0x20), 1),
                ("inode bitmap", field(0x4, 0x24), 1),
                ("inode table", field(0x8, 0x28), it_span),
            ] {
                if b < self.g.first_data_block || b.saturating_add(span) > self.g.blocks_count {
                    return Err(self.corrupt(
                        format!("group descriptor {grp}"),
                        format!("{what} at block {b} outside the filesystem"),
                    ));
                }
            }
            self.gds.insert(grp, d);
        }
        self.gds.get_mut(&grp).ok_or_else(|| FsError::Corrupt {
            fs: self.loc.to_string(),
            place: format!("group descriptor {grp}"),
            detail: "internal: descriptor not loaded".into(),
        })
    }

    fn gd_u64(&mut self, grp: u32, lo: usize, hi: usize) -> Result<u64, FsError> {
        let big = self.g.desc_size >= 64;
        let d = self.gd(grp)?;
        let mut v = u64::from(le32(d, lo));
        if big {
            v |= u64::from(le32(d, hi)) << 32;
        }
        Ok(v)
    }
    fn gd_u32(&mut self, grp: u32, lo: usize, hi: usize) -> Result<u32, FsError> {
        let big = self.g.desc_size >= 64;
        let d = self.gd(grp)?;
        let mut v = u32::from(le16(d, lo));
        if big {
            v |= u32::from(le16(d, hi)) << 16;
        }
        Ok(v)
    }
    fn gd_set_u32(&mut self, grp: u32, lo: usize, hi: usize, v: u32) -> Result<(), FsError> {
        let big = self.g.desc_size >= 64;
        let d = self.gd(grp)?;
        put16(d, lo, v as u16);
        if big {
            put16(d, hi, (v >> 16) as u16);
        }
        self.gd_dirty.insert(grp);
        Ok(())
    }
    pub fn gd_block_bitmap(&mut self, grp: u32) -> Result<u64, FsError> {
        self.gd_u64(grp, 0x0, 0x20)
    }
    pub fn gd_inode_bitmap(&mut self, grp: u32) -> Result<u64, FsError> {
        self.gd_u64(grp, 0x4, 0x24)
    }
    pub fn gd_inode_table(&mut self, grp: u32) -> Result<u64, FsError> {
        self.gd_u64(grp, 0x8, 0x28)
    }
    fn gd_free_blocks(&mut self, grp: u32) -> Result<u32, FsError> {
        self.gd_u32(grp, 0xC, 0x2C)
    }
    fn gd_free_inodes(&mut self, grp: u32) -> Result<u32, FsError> {
        self.gd_u32(grp, 0xE, 0x2E)
    }
    fn gd_flags(&mut self, grp: u32) -> Result<u16, FsError> {
        Ok(le16(self.gd(grp)?, 0x12))
    }
    fn gd_set_flags(&mut self, grp: u32, f: u16) -> Result<(), FsError> {
        put16(self.gd(grp)?, 0x12, f);
        self.gd_dirty.insert(grp);
        Ok(())
    }
    fn gd_itable_unused(&mut self, grp: u32) -> Result<u32, FsError> {
        self.gd_u32(grp, 0x1C, 0x32)
    }

    // ---- superblock counters ----

    fn sb_free_blocks(&self) -> u64 {
        let mut v = u64::from(le32(&self.sb, 0x0C));
        if self.g.is64() {
            v |= u64::from(le32(&self.sb, 0x158)) << 32;
        }
        v
    }
    fn sb_set_free_blocks(&mut self, v: u64) {
        put32(&mut self.sb, 0x0C, v as u32);
        if self.g.is64() {
            put32(&mut self.sb, 0x158, (v >> 32) as u32);
        }
    }
    fn sb_free_inodes(&self) -> u32 {
        le32(&self.sb, 0x10)
    }

    // ---- blocks ----

    /// The cached contents of block `b` (read on first use).
    pub fn blk(&mut self, b: u64) -> Result<&mut Vec<u8>, FsError> {
        if b >= self.g.blocks_count {
            return Err(self.corrupt(format!("block {b}"), "beyond the end of the filesystem"));
        }
        let (dev, bs) = (self.dev, self.g.bs);
        match self.blocks.entry(b) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                Ok(e.insert(vmie_disk::read_vec(dev, b * bs, bs as usize)?))
            }
        }
    }

    /// A copy of block `b`.
    pub fn read_blk(&mut self, b: u64) -> Result<Vec<u8>, FsError> {
        Ok(self.blk(b)?.clone())
    }

    /// Replace block `b` with `data` (one block), marking it dirty.
    pub fn write_blk(&mut self, b: u64, data: Vec<u8>) -> Result<(), FsError> {
        if b >= self.g.blocks_count || data.len() as u64 != self.g.bs {
            return Err(self.corrupt(format!("block {b}"), "internal: bad block write"));
        }
        self.blocks.insert(b, data);
        self.dirty.insert(b);
        Ok(())
    }

    pub fn dir_block_csum(&mut self, b: u64, ino: u32, gen: u32, kind: DirKind) {
        self.dir_csum.insert(b, (ino, gen, kind));
        self.dirty.insert(b);
    }

    // ---- bitmaps ----

    /// Block bitmap of `grp`, initialising a BLOCK_UNINIT group's bitmap.
    fn block_bitmap(&mut self, grp: u32) -> Result<u64, FsError> {
        let bb = self.gd_block_bitmap(grp)?;
        if self.g.uninit_bg()
            && self.gd_flags(grp)? & BG_BLOCK_UNINIT != 0
            && !self.bb_dirty.contains(&grp)
        {
            let mut map = vec![0u8; self.g.bs as usize];
            let g = self.g;
            let first = g.group_first(grp);
            let len = g.group_len(grp);
            let set = |blk: u64, map: &mut Vec<u8>| {
                if blk >= first && blk < first + g.bpg {
                    let i = (blk - first) as usize;
                    map[i / 8] |= 1 << (i % 8);
                }
            };
            if self.g.has_super(grp) {
                for b in first..first + 1 + self.g.gdt_blocks + self.g.reserved_gdt {
                    set(b, &mut map);
                }
            }
            let it_len = (u64::from(self.g.ipg) * self.g.inode_size as u64).div_ceil(self.g.bs);
            // With flex_bg any group's metadata may live here: the one
            // place that reads every descriptor, and only for a group that
            // was never used.
            for o in 0..self.g.groups {
                set(self.gd_block_bitmap(o)?, &mut map);
                set(self.gd_inode_bitmap(o)?, &mut map);
                let t = self.gd_inode_table(o)?;
                if t + it_len > first && t < first + self.g.bpg {
                    for b in t..t + it_len {
                        set(b, &mut map);
                    }
                }
            }
            for i in len..(self.g.bs * 8) {
                let i = i as usize;
                map[i / 8] |= 1 << (i % 8);
            }
            let used = (0..len as usize)
                .filter(|&i| map[i / 8] & (1 << (i % 8)) != 0)
                .count() as u64;
            let recorded = self.gd_free_blocks(grp)?;
            if len - used != u64::from(recorded) {
                return Err(self.corrupt(
                    format!("group {grp}"),
                    format!(
                        "uninitialised block group has {recorded} free blocks recorded, {} by layout",
                        len - used
                    ),
                ));
            }
            self.write_blk(bb, map)?;
            let f = self.gd_flags(grp)? & !BG_BLOCK_UNINIT;
            self.gd_set_flags(grp, f)?;
            self.bb_dirty.insert(grp);
        }
        self.check_block_group(grp, bb)?;
        Ok(bb)
    }

    /// Inode bitmap of `grp`, initialising an INODE_UNINIT group's bitmap.
    fn inode_bitmap(&mut self, grp: u32) -> Result<u64, FsError> {
        let ib = self.gd_inode_bitmap(grp)?;
        if self.g.uninit_bg()
            && self.gd_flags(grp)? & BG_INODE_UNINIT != 0
            && !self.ib_dirty.contains(&grp)
        {
            let mut map = vec![0u8; self.g.bs as usize];
            for i in self.g.ipg as usize..map.len() * 8 {
                map[i / 8] |= 1 << (i % 8);
            }
            self.write_blk(ib, map)?;
            let f = self.gd_flags(grp)? & !BG_INODE_UNINIT;
            self.gd_set_flags(grp, f)?;
            self.ib_dirty.insert(grp);
        }
        self.check_inode_group(grp, ib)?;
        Ok(ib)
    }

    // ---- trusting a group ----

    /// The stored checksum of a bitmap: 16 bits at `lo` in a 32-byte
    /// descriptor, 32 bits (`hi` the upper half) in a 64-byte one.
    fn stored_bitmap_csum(
        &mut self,
        grp: u32,
        lo: usize,
        hi: usize,
    ) -> Result<(u32, u32), FsError> {
        let big = self.g.desc_size >= 64;
        let d = self.gd(grp)?;
        let mut v = u32::from(le16(d, lo));
        if big {
            v |= u32::from(le16(d, hi)) << 16;
        }
        Ok((v, if big { u32::MAX } else { 0xFFFF }))
    }

    /// Before the first allocation in or free into group `grp`, check that
    /// its block bitmap agrees with what we know without scanning inodes,
    /// as the kernel does before it trusts a bitmap (ext4_validate_block_bitmap,
    /// and mballoc's bitmap-vs-descriptor count) and as e2fsck's pass 5 does:
    ///
    /// - its checksum (`metadata_csum`) matches the descriptor's;
    /// - the padding bits past the group's last block are set;
    /// - its zero bits number exactly the descriptor's free-blocks count;
    /// - every metadata block lying in the group is marked in use: the
    ///   superblock backup, descriptor table and reserved descriptor blocks
    ///   of a group that has them, and the block bitmap, inode bitmap and
    ///   inode table of every group of its flex group (the kernel skips this
    ///   with flex_bg; the descriptors are in one or two blocks);
    /// - the free blocks of the groups checked so far sum to no more than the
    ///   superblock's count (exact on a cleanly unmounted filesystem, which
    ///   is all we write).
    ///
    /// A group initialised here from `BLOCK_UNINIT` was built from the
    /// layout and its count checked against it already. Any disagreement
    /// refuses the whole operation, naming the group: nothing is written.
    fn check_block_group(&mut self, grp: u32, bb: u64) -> Result<(), FsError> {
        if self.bb_ok.contains(&grp) {
            return Ok(());
        }
        let built = self.bb_dirty.contains(&grp);
        let map = self.read_blk(bb)?;
        let bad = |tx: &Self, detail: String| tx.corrupt(format!("group {grp}"), detail);
        let first = self.g.group_first(grp);
        let len = self.g.group_len(grp);
        if !built {
            if self.g.metadata_csum() {
                let (stored, mask) = self.stored_bitmap_csum(grp, 0x18, 0x38)?;
                let n = (self.g.bpg / 8) as usize;
                let c = crc32c(self.g.csum_seed, &map[..n.min(map.len())]);
                if c & mask != stored {
                    return Err(bad(
                        self,
                        format!("block bitmap (block {bb}) checksum mismatch"),
                    ));
                }
            }
            let bits = self.g.bs * 8;
            let padding_ok = ones(&map, len, bits) == bits - len;
            if let Some(i) = (len..bits).find(|&i| !padding_ok && !bit(&map, i)) {
                return Err(bad(
                    self,
                    format!(
                        "block bitmap padding bit {i} (past the group's {len} blocks) is not set"
                    ),
                ));
            }
            let zeros = len - ones(&map, 0, len);
            let recorded = u64::from(self.gd_free_blocks(grp)?);
            if zeros != recorded {
                return Err(bad(
                    self,
                    format!(
                        "the block bitmap has {zeros} free blocks, the group descriptor {recorded}"
                    ),
                ));
            }
        }
        let in_group = |b: u64| b >= first && b < first + len;
        let mut meta: Vec<(&str, u32, u64, u64)> = Vec::new();
        if self.g.has_super(grp) {
            let span = 1 + self.g.gdt_blocks + self.g.reserved_gdt;
            meta.push(("superblock and group descriptor copy", grp, first, span));
        }
        let flex = self.g.flex.max(1);
        let f0 = grp - grp % flex;
        let f1 = f0.saturating_add(flex.min(1024)).min(self.g.groups);
        let it_len = (u64::from(self.g.ipg) * self.g.inode_size as u64).div_ceil(self.g.bs);
        for o in f0..f1 {
            meta.push(("block bitmap", o, self.gd_block_bitmap(o)?, 1));
            meta.push(("inode bitmap", o, self.gd_inode_bitmap(o)?, 1));
            meta.push(("inode table", o, self.gd_inode_table(o)?, it_len));
        }
        for (what, o, start, n) in meta {
            // The part of the span inside this group, all set?
            let (lo, hi) = (start.max(first), start.saturating_add(n).min(first + len));
            if lo >= hi || ones(&map, lo - first, hi - first) == hi - lo {
                continue;
            }
            for b in lo..hi {
                if in_group(b) && !bit(&map, b - first) {
                    return Err(bad(
                        self,
                        format!(
                            "{what} of group {o} (block {b}) is not marked in use in the block bitmap"
                        ),
                    ));
                }
            }
        }
        self.bb_ok.insert(grp);
        let mut sum = 0u64;
        for o in self.bb_ok.clone() {
            sum += u64::from(self.gd_free_blocks(o)?);
        }
        if sum > self.sb_free_blocks() {
            return Err(bad(
                self,
                format!(
                    "the groups checked have {sum} free blocks, more than the superblock's {}",
                    self.sb_free_blocks()
                ),
            ));
        }
        Ok(())
    }

    /// Before the first allocation in or free into group `grp`, check its
    /// inode bitmap as e2fsck's pass 5 would, without scanning inodes: its
    /// checksum (`metadata_csum`); padding bits past the group's inodes set;
    /// zero bits equal to the descriptor's free-inodes count; no inode in
    /// use in the part of the table `itable_unused` says was never used; the
    /// reserved inodes of group 0 in use; and the free inodes of the groups
    /// checked so far no more than the superblock's count. A group
    /// initialised here from `INODE_UNINIT` must record every inode free.
    fn check_inode_group(&mut self, grp: u32, ib: u64) -> Result<(), FsError> {
        if self.ib_ok.contains(&grp) {
            return Ok(());
        }
        let built = self.ib_dirty.contains(&grp);
        let map = self.read_blk(ib)?;
        let bad = |tx: &Self, detail: String| tx.corrupt(format!("group {grp}"), detail);
        let ipg = u64::from(self.g.ipg);
        let recorded = u64::from(self.gd_free_inodes(grp)?);
        if built {
            if recorded != ipg {
                return Err(bad(
                    self,
                    format!(
                        "uninitialised inode group has {recorded} free inodes recorded, {ipg} by layout"
                    ),
                ));
            }
        } else {
            if self.g.metadata_csum() {
                let (stored, mask) = self.stored_bitmap_csum(grp, 0x1A, 0x3A)?;
                let n = (ipg / 8) as usize;
                let c = crc32c(self.g.csum_seed, &map[..n.min(map.len())]);
                if c & mask != stored {
                    return Err(bad(
                        self,
                        format!("inode bitmap (block {ib}) checksum mismatch"),
                    ));
                }
            }
            let bits = self.g.bs * 8;
            let padding_ok = ones(&map, ipg, bits) == bits - ipg;
            if let Some(i) = (ipg..bits).find(|&i| !padding_ok && !bit(&map, i)) {
                return Err(bad(
                    self,
                    format!(
                        "inode bitmap padding bit {i} (past the group's {ipg} inodes) is not set"
                    ),
                ));
            }
            let zeros = ipg - ones(&map, 0, ipg);
            if zeros != recorded {
                return Err(bad(
                    self,
                    format!(
                        "the inode bitmap has {zeros} free inodes, the group descriptor {recorded}"
                    ),
                ));
            }
            if self.g.uninit_bg() {
                let unused = u64::from(self.gd_itable_unused(grp)?);
                if unused > ipg {
                    return Err(bad(self, format!("{unused} unused inodes of {ipg}")));
                }
                let tail_used = ones(&map, ipg - unused, ipg) != 0;
                if let Some(i) = (ipg - unused..ipg).find(|&i| tail_used && bit(&map, i)) {
                    return Err(bad(
                        self,
                        format!(
                            "inode {} is in use in the part of the inode table marked never used",
                            u64::from(grp) * ipg + i + 1
                        ),
                    ));
                }
            }
            if grp == 0 {
                let reserved = u64::from(self.g.first_ino - 1).min(ipg);
                if let Some(i) = (0..reserved).find(|&i| !bit(&map, i)) {
                    return Err(bad(
                        self,
                        format!("reserved inode {} is not marked in use", i + 1),
                    ));
                }
            }
        }
        self.ib_ok.insert(grp);
        let mut sum = 0u64;
        for o in self.ib_ok.clone() {
            sum += u64::from(self.gd_free_inodes(o)?);
        }
        if sum > u64::from(self.sb_free_inodes()) {
            return Err(bad(
                self,
                format!(
                    "the groups checked have {sum} free inodes, more than the superblock's {}",
                    self.sb_free_inodes()
                ),
            ));
        }
        Ok(())
    }

    /// Record the blocks inode `ino` maps (data runs, map blocks), read by
    /// this transaction: the allocator refuses to hand any of them out, so
    /// a bitmap that marks them free is caught before a block is shared.
    /// A block already recorded for another inode is mapped twice.
    pub fn note_mapped(&mut self, ino: u32, runs: &[(u64, u64)]) -> Result<(), FsError> {
        for &(s, l) in runs {
            if l == 0 {
                continue;
            }
            let e = s.saturating_add(l);
            let (mut lo, mut hi) = (s, e);
            for (rs, rl, other) in self.overlapping(s, e) {
                if other != ino {
                    return Err(self.corrupt(
                        format!("inode {ino}"),
                        format!(
                            "blocks {}..{} are also mapped by inode {other}",
                            rs.max(s),
                            (rs + rl).min(e)
                        ),
                    ));
                }
                self.mapped.remove(&rs);
                lo = lo.min(rs);
                hi = hi.max(rs + rl);
            }
            self.mapped.insert(lo, (hi - lo, ino));
        }
        Ok(())
    }

    /// Recorded ranges overlapping blocks `s..e`: (start, len, inode).
    fn overlapping(&self, s: u64, e: u64) -> Vec<(u64, u64, u32)> {
        let mut out = Vec::new();
        for (&rs, &(rl, ino)) in self.mapped.range(..e).rev() {
            if rs + rl <= s {
                break;
            }
            out.push((rs, rl, ino));
        }
        out
    }

    /// Forget blocks `s..s+l` (freed by this transaction).
    fn unnote_mapped(&mut self, s: u64, l: u64) {
        let e = s.saturating_add(l);
        for (rs, rl, ino) in self.overlapping(s, e) {
            self.mapped.remove(&rs);
            if rs < s {
                self.mapped.insert(rs, (s - rs, ino));
            }
            if rs + rl > e {
                self.mapped.insert(e, (rs + rl - e, ino));
            }
        }
    }

    /// Allocate `n` blocks, as few runs as possible, starting the search at
    /// block `goal`. Returns (first, len) runs in allocation order.
    pub fn alloc_blocks(&mut self, n: u64, goal: u64) -> Result<Vec<(u64, u64)>, FsError> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        if self.sb_free_blocks() < n {
            return Err(self.nospace(format!("{n} blocks needed, {} free", self.sb_free_blocks())));
        }
        let goal = goal.clamp(self.g.first_data_block, self.g.blocks_count - 1);
        let g0 = ((goal - self.g.first_data_block) / self.g.bpg) as u32;
        let mut left = n;
        for k in 0..=self.g.groups {
            if left == 0 {
                break;
            }
            let grp = (g0 + k) % self.g.groups;
            if self.gd_free_blocks(grp)? == 0 {
                continue;
            }
            let bb = self.block_bitmap(grp)?;
            let first = self.g.group_first(grp);
            let len = self.g.group_len(grp);
            let start = if k == 0 { goal - first } else { 0 };
            // k == groups revisits the goal group from its start.
            let (from, to) = if k == self.g.groups {
                (0, (goal - first).min(len))
            } else {
                (start, len)
            };
            let mut map = self.read_blk(bb)?;
            let mut taken = 0u32;
            let mut i = from;
            while i < to && left > 0 {
                let byte = map[(i / 8) as usize];
                if byte == 0xFF && i % 8 == 0 {
                    i += 8;
                    continue;
                }
                if byte & (1 << (i % 8)) == 0 {
                    map[(i / 8) as usize] |= 1 << (i % 8);
                    taken += 1;
                    left -= 1;
                    let blk = first + i;
                    match out.last_mut() {
                        Some((s, l)) if *s + *l == blk => *l += 1,
                        _ => out.push((blk, 1)),
                    }
                }
                i += 1;
            }
            if taken > 0 {
                let free = self.gd_free_blocks(grp)?;
                if taken > free {
                    return Err(self.corrupt(
                        format!("group {grp}"),
                        "block bitmap disagrees with free count",
                    ));
                }
                self.write_blk(bb, map)?;
                self.bb_dirty.insert(grp);
                self.gd_set_u32(grp, 0xC, 0x2C, free - taken)?;
                let sf = self.sb_free_blocks() - u64::from(taken);
                self.sb_set_free_blocks(sf);
            }
        }
        if left > 0 {
            return Err(self.nospace(format!("{n} blocks needed, the bitmaps have fewer free")));
        }
        for &(s, l) in &out {
            if let Some((rs, _, ino)) = self.overlapping(s, s + l).first() {
                let b = s.max(*rs);
                let grp = (b - self.g.first_data_block) / self.g.bpg;
                return Err(self.corrupt(
                    format!("group {grp}"),
                    format!("the block bitmap marks block {b} free, but inode {ino} maps it"),
                ));
            }
        }
        Ok(out)
    }

    /// Free `len` blocks from `start`.
    pub fn free_blocks(&mut self, start: u64, len: u64) -> Result<(), FsError> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.g.blocks_count && start >= self.g.first_data_block)
            .ok_or_else(|| {
                self.corrupt(format!("blocks {start}+{len}"), "outside the filesystem")
            })?;
        self.unnote_mapped(start, len);
        let mut b = start;
        while b < end {
            let grp = ((b - self.g.first_data_block) / self.g.bpg) as u32;
            let first = self.g.group_first(grp);
            let stop = end.min(first + self.g.bpg);
            let bb = self.block_bitmap(grp)?;
            let mut map = self.read_blk(bb)?;
            let mut n = 0u32;
            for x in b..stop {
                let i = (x - first) as usize;
                if map[i / 8] & (1 << (i % 8)) == 0 {
                    return Err(
                        self.corrupt(format!("block {x}"), "freeing a block that is not in use")
                    );
                }
                map[i / 8] &= !(1 << (i % 8));
                n += 1;
            }
            self.write_blk(bb, map)?;
            self.bb_dirty.insert(grp);
            let f = self.gd_free_blocks(grp)?.saturating_add(n);
            self.gd_set_u32(grp, 0xC, 0x2C, f)?;
            let sf = self.sb_free_blocks() + u64::from(n);
            self.sb_set_free_blocks(sf);
            b = stop;
        }
        Ok(())
    }

    /// Allocate an inode, preferring group `goal`.
    pub fn alloc_inode(&mut self, goal: u32, is_dir: bool) -> Result<u32, FsError> {
        if self.sb_free_inodes() == 0 {
            return Err(self.nospace("no free inode"));
        }
        for k in 0..self.g.groups {
            let grp = (goal % self.g.groups + k) % self.g.groups;
            let free = self.gd_free_inodes(grp)?;
            if free == 0 {
                continue;
            }
            let ib = self.inode_bitmap(grp)?;
            let mut map = self.read_blk(ib)?;
            let base = grp * self.g.ipg;
            let mut found = None;
            for i in 0..self.g.ipg {
                let ino = base + i + 1;
                if ino < self.g.first_ino {
                    continue;
                }
                if map[(i / 8) as usize] & (1 << (i % 8)) == 0 {
                    found = Some(i);
                    break;
                }
            }
            let Some(i) = found else { continue };
            // An inode in the initialised part of the table that the bitmap
            // calls free must not be linked: else the bitmap lost it.
            let initialised =
                !self.g.uninit_bg() || i < self.g.ipg.saturating_sub(self.gd_itable_unused(grp)?);
            if initialised {
                let (b, o) = self.inode_loc(base + i + 1)?;
                let links = le16(self.blk(b)?, o + 0x1A);
                if links != 0 {
                    return Err(self.corrupt(
                        format!("group {grp}"),
                        format!(
                            "the inode bitmap marks inode {} free, but it has {links} link(s)",
                            base + i + 1
                        ),
                    ));
                }
            }
            map[(i / 8) as usize] |= 1 << (i % 8);
            self.write_blk(ib, map)?;
            self.ib_dirty.insert(grp);
            self.gd_set_u32(grp, 0xE, 0x2E, free - 1)?;
            if is_dir {
                let d = self.gd_u32(grp, 0x10, 0x30)?.saturating_add(1);
                self.gd_set_u32(grp, 0x10, 0x30, d)?;
            }
            if self.g.uninit_bg() {
                let unused = self.gd_itable_unused(grp)?;
                if i >= self.g.ipg.saturating_sub(unused) {
                    self.gd_set_u32(grp, 0x1C, 0x32, self.g.ipg - i - 1)?;
                }
            }
            let sf = self.sb_free_inodes() - 1;
            put32(&mut self.sb, 0x10, sf);
            return Ok(base + i + 1);
        }
        Err(self.nospace("no free inode in the bitmaps"))
    }

    /// Free inode `ino`.
    pub fn free_inode(&mut self, ino: u32, is_dir: bool) -> Result<(), FsError> {
        let grp = (ino - 1) / self.g.ipg;
        let i = (ino - 1) % self.g.ipg;
        let ib = self.inode_bitmap(grp)?;
        let mut map = self.read_blk(ib)?;
        if map[(i / 8) as usize] & (1 << (i % 8)) == 0 {
            return Err(self.corrupt(
                format!("inode {ino}"),
                "freeing an inode that is not in use",
            ));
        }
        map[(i / 8) as usize] &= !(1 << (i % 8));
        self.write_blk(ib, map)?;
        self.ib_dirty.insert(grp);
        let f = self.gd_free_inodes(grp)?.saturating_add(1);
        self.gd_set_u32(grp, 0xE, 0x2E, f)?;
        if is_dir {
            let d = self.gd_u32(grp, 0x10, 0x30)?.saturating_sub(1);
            self.gd_set_u32(grp, 0x10, 0x30, d)?;
        }
        let sf = self.sb_free_inodes() + 1;
        put32(&mut self.sb, 0x10, sf);
        Ok(())
    }

    // ---- inodes ----

    fn inode_loc(&mut self, ino: u32) -> Result<(u64, usize), FsError> {
        if ino == 0 || ino > self.g.inodes_count {
            return Err(self.corrupt(format!("inode {ino}"), "inode number out of range"));
        }
        let grp = (ino - 1) / self.g.ipg;
        let idx = u64::from((ino - 1) % self.g.ipg);
        let off = self.gd_inode_table(grp)? * self.g.bs + idx * self.g.inode_size as u64;
        Ok((off / self.g.bs, (off % self.g.bs) as usize))
    }

    /// Per-inode checksum seed.
    pub fn inode_seed(&self, ino: u32, gen: u32) -> u32 {
        let c = crc32c(self.g.csum_seed, &ino.to_le_bytes());
        crc32c(c, &gen.to_le_bytes())
    }

    pub fn get_inode(&mut self, ino: u32) -> Result<Vec<u8>, FsError> {
        let (b, o) = self.inode_loc(ino)?;
        let n = self.g.inode_size;
        let raw = self.blk(b)?[o..o + n].to_vec();
        if self.g.metadata_csum() {
            let want = self.inode_csum(ino, &raw);
            let mut have = u32::from(le16(&raw, 0x7C));
            if n > 128 && usize::from(le16(&raw, 0x80)) >= 4 {
                have |= u32::from(le16(&raw, 0x82)) << 16;
            } else {
                have |= want & 0xFFFF_0000;
            }
            if have != want {
                return Err(self.corrupt(format!("inode {ino}"), "inode checksum mismatch"));
            }
        }
        Ok(raw)
    }

    fn inode_csum(&self, ino: u32, raw: &[u8]) -> u32 {
        let mut r = raw.to_vec();
        put16(&mut r, 0x7C, 0);
        let has_hi = r.len() > 128 && usize::from(le16(&r, 0x80)) >= 4;
        if has_hi {
            put16(&mut r, 0x82, 0);
        }
        let seed = self.inode_seed(ino, le32(&r, 0x64));
        crc32c(seed, &r)
    }

    pub fn put_inode(&mut self, ino: u32, raw: &[u8]) -> Result<(), FsError> {
        let (b, o) = self.inode_loc(ino)?;
        let mut r = raw.to_vec();
        if self.g.metadata_csum() {
            let c = self.inode_csum(ino, &r);
            put16(&mut r, 0x7C, c as u16);
            if r.len() > 128 && usize::from(le16(&r, 0x80)) >= 4 {
                put16(&mut r, 0x82, (c >> 16) as u16);
            }
        }
        let n = self.g.inode_size;
        self.blk(b)?[o..o + n].copy_from_slice(&r);
        self.dirty.insert(b);
        Ok(())
    }

    // ---- commit ----

    fn bitmap_csums(&mut self) -> Result<(), FsError> {
        if !self.g.metadata_csum() {
            return Ok(());
        }
        let big = self.g.desc_size >= 64;
        for grp in std::mem::take(&mut self.bb_dirty) {
            let bb = self.gd_block_bitmap(grp)?;
            let n = (self.g.bpg / 8) as usize;
            let c = crc32c(self.g.csum_seed, &self.blk(bb)?[..n]);
            let d = self.gd(grp)?;
            put16(d, 0x18, c as u16);
            if big {
                put16(d, 0x38, (c >> 16) as u16);
            }
            self.gd_dirty.insert(grp);
        }
        for grp in std::mem::take(&mut self.ib_dirty) {
            let ib = self.gd_inode_bitmap(grp)?;
            let n = (self.g.ipg / 8) as usize;
            let c = crc32c(self.g.csum_seed, &self.blk(ib)?[..n]);
            let d = self.gd(grp)?;
            put16(d, 0x1A, c as u16);
            if big {
                put16(d, 0x3A, (c >> 16) as u16);
            }
            self.gd_dirty.insert(grp);
        }
        Ok(())
    }

    fn gd_csum(&self, grp: u32, d: &[u8]) -> Option<u16> {
        let le = grp.to_le_bytes();
        if self.g.metadata_csum() {
            let mut c = crc32c(self.g.csum_seed, &le);
            c = crc32c(c, &d[..0x1E]);
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, &d[0x20..]);
            Some(c as u16)
        } else if self.g.gdt_csum() {
            let mut c = crc16(!0, &self.g.uuid);
            c = crc16(c, &le);
            c = crc16(c, &d[..0x1E]);
            if self.g.is64() && d.len() > 0x20 {
                c = crc16(c, &d[0x20..]);
            }
            Some(c)
        } else {
            None
        }
    }

    fn dir_csums(&mut self) -> Result<(), FsError> {
        if !self.g.metadata_csum() {
            return Ok(());
        }
        let bs = self.g.bs as usize;
        for (b, (ino, gen, kind)) in std::mem::take(&mut self.dir_csum) {
            let seed = self.inode_seed(ino, gen);
            let blk = self.blk(b)?;
            match kind {
                DirKind::Leaf => {
                    let t = bs - 12;
                    if le32(blk, t) == 0
                        && le16(blk, t + 4) == 12
                        && blk[t + 6] == 0
                        && blk[t + 7] == 0xDE
                    {
                        let c = crc32c(seed, &blk[..t]);
                        put32(blk, t + 8, c);
                    }
                }
                DirKind::Dx(off) => {
                    let limit = usize::from(le16(blk, off));
                    let count = usize::from(le16(blk, off + 2));
                    let tail = off + limit * 8;
                    if count <= limit && tail + 8 <= bs {
                        let mut c = crc32c(seed, &blk[..off + count * 8]);
                        c = crc32c(c, &blk[tail..tail + 4]);
                        c = crc32c(c, &[0; 4]);
                        put32(blk, tail + 4, c);
                    }
                }
            }
        }
        Ok(())
    }

    /// Write every change to the device.
    pub fn commit(mut self) -> Result<(), FsError> {
        self.dir_csums()?;
        self.bitmap_csums()?;
        for grp in std::mem::take(&mut self.gd_dirty) {
            let mut d = self.gd(grp)?.clone();
            if let Some(c) = self.gd_csum(grp, &d) {
                put16(&mut d, 0x1E, c);
            }
            let (b, o) = self.gd_place(grp);
            self.blk(b)?[o..o + d.len()].copy_from_slice(&d);
            self.dirty.insert(b);
        }
        // Superblock: lives in block 0 (or block 1 with 1 KiB blocks).
        if self.g.metadata_csum() {
            let c = crc32c(!0, &self.sb[..0x3FC]);
            put32(&mut self.sb, 0x3FC, c);
        }
        let mut run: Option<(u64, Vec<u8>)> = None;
        for b in std::mem::take(&mut self.dirty) {
            let data = match self.blocks.get(&b) {
                Some(d) => d,
                None => continue,
            };
            match &mut run {
                Some((start, buf)) if *start + (buf.len() as u64) / self.g.bs == b => {
                    buf.extend_from_slice(data);
                }
                _ => {
                    if let Some((s, buf)) = run.take() {
                        self.dev.write_at(s * self.g.bs, &buf)?;
                    }
                    run = Some((b, data.clone()));
                }
            }
        }
        if let Some((s, buf)) = run.take() {
            self.dev.write_at(s * self.g.bs, &buf)?;
        }
        if self.sb != self.sb_orig {
            self.dev.write_at(1024, &self.sb)?;
        }
        Ok(())
    }
}

/// Bit `i` of a bitmap (false past its end).
fn bit(map: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|at| map.get(at))
        .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
}

/// Set bits of a bitmap in `from..to` (bits past its end count as unset),
/// a byte at a time where whole bytes are covered.
fn ones(map: &[u8], from: u64, to: u64) -> u64 {
    let mut n = 0u64;
    let mut i = from;
    while i < to && i % 8 != 0 {
        n += u64::from(bit(map, i));
        i += 1;
    }
    while i + 8 <= to {
        n += usize::try_from(i / 8)
            .ok()
            .and_then(|at| map.get(at))
            .map_or(0, |b| u64::from(b.count_ones()));
        i += 8;
    }
    while i < to {
        n += u64::from(bit(map, i));
        i += 1;
    }
    n
}
