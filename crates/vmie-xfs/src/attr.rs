//! Extended attributes: shortform (in the inode), leaf and node forms (a
//! dabtree in the attribute fork), with local and remote values.

use std::collections::HashSet;

use vmie_guestfs::{FsError, Xattr};

use crate::be::{be16, be32, be64};
use crate::inode::{Extent, Fork, Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use crate::Ctx;

const LEAF_MAGIC_V2: u16 = 0xfbee;
const LEAF_MAGIC_V3: u16 = 0x3bee;
const NODE_MAGIC_V2: u16 = 0xfebe;
const NODE_MAGIC_V3: u16 = 0x3ebe;
const RMT_MAGIC: u32 = 0x5841_524d; // XARM

const ATTR_LOCAL: u8 = 0x01;
const ATTR_ROOT: u8 = 0x02;
const ATTR_SECURE: u8 = 0x04;
const ATTR_PARENT: u8 = 0x08;
const ATTR_INCOMPLETE: u8 = 0x80;

/// Largest value Linux lets an xattr have.
const MAX_VALUE: usize = 65536;
/// Deepest dabtree (XFS_DA_NODE_MAXDEPTH).
const MAX_DEPTH: u32 = 5;
/// Most attributes read from one inode, and their total bytes.
const MAX_ATTRS: usize = 1 << 16;
const MAX_TOTAL: usize = 64 << 20;

fn full_name(flags: u8, name: &[u8]) -> Option<Vec<u8>> {
    if flags & (ATTR_INCOMPLETE | ATTR_PARENT) != 0 {
        return None;
    }
    let prefix: &[u8] = if flags & ATTR_SECURE != 0 {
        b"security."
    } else if flags & ATTR_ROOT != 0 {
        b"trusted."
    } else {
        b"user."
    };
    let mut n = prefix.to_vec();
    n.extend_from_slice(name);
    Some(n)
}

impl Ctx {
    /// Every extended attribute of `ip` (parent pointers and incomplete
    /// ones left out).
    pub fn xattrs(&self, ip: &Inode, place: &str) -> Result<Vec<Xattr>, FsError> {
        let bad = |d: String| self.corrupt(place, format!("inode {} attributes: {d}", ip.ino));
        let Some(fork) = ip.attr_fork() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        match ip.aformat {
            FMT_LOCAL => {
                if fork.len() < 4 {
                    return Err(bad("fork too small".into()));
                }
                let total = usize::from(be16(fork, 0));
                let count = usize::from(fork[2]);
                if total < 4 || total > fork.len() {
                    return Err(bad(format!("shortform size {total}")));
                }
                let d = &fork[..total];
                let mut pos = 4;
                for i in 0..count {
                    if pos + 3 > d.len() {
                        return Err(bad(format!("shortform entry {i} truncated")));
                    }
                    let nl = usize::from(d[pos]);
                    let vl = usize::from(d[pos + 1]);
                    let flags = d[pos + 2];
                    let end = pos + 3 + nl + vl;
                    if end > d.len() {
                        return Err(bad(format!("shortform entry {i} overruns the fork")));
                    }
                    if let Some(name) = full_name(flags, &d[pos + 3..pos + 3 + nl]) {
                        out.push(Xattr {
                            name,
                            value: d[pos + 3 + nl..end].to_vec(),
                        });
                    }
                    pos = end;
                }
            }
            FMT_EXTENTS | FMT_BTREE => {
                let ext = self.extents(ip, Fork::Attr, place)?;
                if ext.is_empty() {
                    return Ok(out);
                }
                self.attr_tree(ip, &ext, &mut out, place)?;
            }
            f => return Err(bad(format!("format {f}"))),
        }
        Ok(out)
    }

    fn attr_block(
        &self,
        ip: &Inode,
        ext: &[Extent],
        blk: u64,
        place: &str,
    ) -> Result<Vec<u8>, FsError> {
        let mapped = ext
            .iter()
            .any(|e| e.off <= blk && blk < e.off + e.len && !e.unwritten);
        if !mapped {
            return Err(self.corrupt(
                place,
                format!("inode {} attribute block {blk} is not mapped", ip.ino),
            ));
        }
        let bs = u64::from(self.geo.block_size);
        self.read_mapped(ext, blk * bs, bs as usize)
    }

    fn check_da_v5(&self, ip: &Inode, ext: &[Extent], blk: u64, b: &[u8]) -> Result<(), String> {
        // xfs_da3_blkinfo: forw, back, magic, pad, crc, blkno, lsn, uuid, owner.
        self.check_v5_header(b, 12, 16, 32, 48, ip.ino, self.daddr_of(ext, blk))
    }

    fn attr_tree(
        &self,
        ip: &Inode,
        ext: &[Extent],
        out: &mut Vec<Xattr>,
        place: &str,
    ) -> Result<(), FsError> {
        let bad = |blk: u64, d: String| {
            self.corrupt(
                place,
                format!("inode {} attribute block {blk}: {d}", ip.ino),
            )
        };
        let v5 = self.geo.v5;
        // Descend from block 0 to the leftmost leaf.
        let mut blk = 0u64;
        let mut depth = 0;
        let first_leaf = loop {
            let b = self.attr_block(ip, ext, blk, place)?;
            let magic = be16(&b, 8);
            if v5 {
                self.check_da_v5(ip, ext, blk, &b)
                    .map_err(|d| bad(blk, d))?;
            }
            match (v5, magic) {
                (true, LEAF_MAGIC_V3) | (false, LEAF_MAGIC_V2) => break (blk, b),
                (true, NODE_MAGIC_V3) | (false, NODE_MAGIC_V2) => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(bad(blk, "dabtree deeper than 5 levels".into()));
                    }
                    let hdr = if v5 { 64 } else { 16 };
                    let count = usize::from(be16(&b, if v5 { 56 } else { 12 }));
                    if count == 0 || hdr + count * 8 > b.len() {
                        return Err(bad(blk, format!("node with {count} entries")));
                    }
                    blk = u64::from(be32(&b, hdr + 4));
                }
                _ => return Err(bad(blk, format!("bad magic {magic:#x}"))),
            }
        };
        // Walk the leaves left to right.
        let (mut blk, mut b) = first_leaf;
        let mut seen = HashSet::new();
        let mut total = 0usize;
        loop {
            if !seen.insert(blk) || seen.len() as u64 > self.geo.dblocks {
                return Err(bad(blk, "leaf chain loops".into()));
            }
            self.attr_leaf(ip, ext, blk, &b, out, &mut total, place)?;
            let forw = u64::from(be32(&b, 0));
            if forw == 0 {
                return Ok(());
            }
            blk = forw;
            b = self.attr_block(ip, ext, blk, place)?;
            if v5 {
                self.check_da_v5(ip, ext, blk, &b)
                    .map_err(|d| bad(blk, d))?;
            }
            let magic = be16(&b, 8);
            if magic != if v5 { LEAF_MAGIC_V3 } else { LEAF_MAGIC_V2 } {
                return Err(bad(blk, format!("leaf chain reaches magic {magic:#x}")));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attr_leaf(
        &self,
        ip: &Inode,
        ext: &[Extent],
        blk: u64,
        b: &[u8],
        out: &mut Vec<Xattr>,
        total: &mut usize,
        place: &str,
    ) -> Result<(), FsError> {
        let bad =
            |d: String| self.corrupt(place, format!("inode {} attribute leaf {blk}: {d}", ip.ino));
        let (count_off, hdr) = if self.geo.v5 { (56, 80) } else { (12, 32) };
        let count = usize::from(be16(b, count_off));
        if hdr + count * 8 > b.len() {
            return Err(bad(format!("{count} entries do not fit")));
        }
        for i in 0..count {
            let e = hdr + i * 8;
            let nameidx = usize::from(be16(b, e + 4));
            let flags = b[e + 6];
            if nameidx < hdr + count * 8 || nameidx >= b.len() {
                return Err(bad(format!("entry {i} name index {nameidx}")));
            }
            let (name, value) = if flags & ATTR_LOCAL != 0 {
                if nameidx + 3 > b.len() {
                    return Err(bad(format!("entry {i} truncated")));
                }
                let vl = usize::from(be16(b, nameidx));
                let nl = usize::from(b[nameidx + 2]);
                let end = nameidx + 3 + nl + vl;
                if end > b.len() {
                    return Err(bad(format!("entry {i} overruns the block")));
                }
                (
                    &b[nameidx + 3..nameidx + 3 + nl],
                    Some(b[nameidx + 3 + nl..end].to_vec()),
                )
            } else {
                if nameidx + 9 > b.len() {
                    return Err(bad(format!("entry {i} truncated")));
                }
                let nl = usize::from(b[nameidx + 8]);
                if nameidx + 9 + nl > b.len() {
                    return Err(bad(format!("entry {i} overruns the block")));
                }
                (&b[nameidx + 9..nameidx + 9 + nl], None)
            };
            let Some(full) = full_name(flags, name) else {
                continue;
            };
            let value = match value {
                Some(v) => v,
                None => {
                    let valueblk = u64::from(be32(b, nameidx));
                    let valuelen = be32(b, nameidx + 4) as usize;
                    self.remote_value(ip, ext, valueblk, valuelen, place)?
                }
            };
            *total = total.saturating_add(full.len() + value.len());
            if out.len() >= MAX_ATTRS || *total > MAX_TOTAL {
                return Err(bad(format!(
                    "more than {MAX_ATTRS} attributes or {MAX_TOTAL} bytes of them"
                )));
            }
            out.push(Xattr { name: full, value });
        }
        Ok(())
    }

    fn remote_value(
        &self,
        ip: &Inode,
        ext: &[Extent],
        blk: u64,
        len: usize,
        place: &str,
    ) -> Result<Vec<u8>, FsError> {
        let bad = |d: String| {
            self.corrupt(
                place,
                format!(
                    "inode {} remote attribute value at block {blk}: {d}",
                    ip.ino
                ),
            )
        };
        if len > MAX_VALUE {
            return Err(bad(format!("{len} bytes (at most {MAX_VALUE})")));
        }
        let bs = self.geo.block_size as usize;
        let mut out = Vec::with_capacity(len);
        if !self.geo.v5 {
            let nblk = len.div_ceil(bs) as u64;
            for i in 0..nblk {
                let b = self.attr_block(ip, ext, blk + i, place)?;
                let take = (len - out.len()).min(bs);
                out.extend_from_slice(&b[..take]);
            }
            return Ok(out);
        }
        // v5: each block has a 56-byte header: magic, offset, bytes, crc,
        // uuid, owner, blkno, lsn.
        let per = bs - 56;
        let nblk = len.div_ceil(per).max(1) as u64;
        for i in 0..nblk {
            let b = self.attr_block(ip, ext, blk + i, place)?;
            if be32(&b, 0) != RMT_MAGIC {
                return Err(bad("bad magic".into()));
            }
            if !crate::csum::verify(&b, 12) {
                return Err(bad("CRC mismatch".into()));
            }
            if b[16..32] != self.geo.meta_uuid || be64(&b, 32) != ip.ino {
                return Err(bad("UUID or owner mismatch".into()));
            }
            if Some(be64(&b, 40)) != self.daddr_of(ext, blk + i) {
                return Err(bad("header records another disk address".into()));
            }
            let off = be32(&b, 4) as usize;
            let bytes = be32(&b, 8) as usize;
            let want = (len - out.len()).min(per);
            if off != out.len() || bytes != want {
                return Err(bad(format!(
                    "block {i} holds bytes {off}+{bytes}, expected {}+{want}",
                    out.len()
                )));
            }
            out.extend_from_slice(&b[56..56 + bytes]);
        }
        Ok(out)
    }
}
