//! Writing long-form bmbt block maps: a fork whose extent list outgrows
//! the inode becomes a B+tree rooted in the inode (an `xfs_bmdr_block`
//! header, keys and pointers sized to the fork) over leaf blocks and, when
//! the root cannot point to every leaf, levels of interior node blocks
//! (each block the long-form btree header; on v5 also the disk address,
//! LSN, UUID, owner inode and CRC; node keys and pointers laid out by the
//! block's maximum record count, as xfs_bmbt_key_addr/ptr_addr do), and it
//! goes back to an extent list when its records fit in the fork again, as
//! the kernel's extents↔btree conversions do (the kernel's inode verifier
//! refuses a btree fork whose extents fit).
//!
//! Every change rewrites the whole map at the smallest height that holds
//! it: each level is filled evenly (so every block of a level of more than
//! one block holds at least half its maximum; only a lone child of the
//! root may hold fewer, as after the kernel's own root split), the blocks
//! the old tree used, at any level, are reused first (keeping their LSN),
//! extra ones come from the allocator near the inode, reverse-mapped as
//! bmbt blocks, and surplus ones are freed; the inode's block count
//! follows. A map deeper than the kernel allows for the fork
//! (xfs_bmap_compute_maxlevels), or with more extents than
//! [`Ctx::max_extents`], is refused.
//!
//! Reading for a write goes through the transaction ([`walk`]), with
//! every block checked: magic, v5 CRC/UUID/owner/disk address, level one
//! below its parent's, record counts, keys equal to the first offset
//! below them, sibling chains per level, records in file-offset order,
//! each block visited once.

use std::collections::HashSet;

use vmie_guestfs::FsError;

use crate::be::{be16, be32, be64, put32, put64};
use crate::dirw::{agno_of, encode_extent};
use crate::inode::{decode_extent, Extent, Fork, Inode, FMT_BTREE, FMT_EXTENTS};
use crate::tx::Tx;
use crate::Ctx;

const BMAP_MAGIC: u32 = 0x424d_4150;
const BMAP_CRC_MAGIC: u32 = 0x424d_4133;
const NULL_FSB: u64 = u64::MAX;
/// Deepest root level walked or written (the kernel's limit for a data
/// fork, root included, is 5 to 11 levels for 2^31 or 2^48 extents; the
/// 2^20 extents [`Ctx::max_extents`] allows by default need a root level
/// of 4 at most).
const MAX_LEVEL: u16 = 8;

/// A fork's block map as read from its bmbt.
#[derive(Debug, Default)]
pub(crate) struct Map {
    pub ext: Vec<Extent>,
    /// Every bmbt block below the inode root, level by level.
    pub blocks: Vec<u64>,
}

fn hdr_len(c: &Ctx) -> usize {
    if c.geo.v5 {
        72
    } else {
        24
    }
}

fn leaf_max(c: &Ctx) -> usize {
    (c.geo.block_size as usize - hdr_len(c)) / 16
}

fn fork_bytes(ip: &Inode, fork: Fork) -> &[u8] {
    match fork {
        Fork::Data => ip.data_fork(),
        Fork::Attr => ip.attr_fork().unwrap_or(&[]),
    }
}

/// The extents of `ip`'s data fork, reading bmbt blocks through `tx`
/// (they may have been rewritten earlier in the same operation).
pub(crate) fn data_extents(tx: &Tx, ip: &Inode, what: &str) -> Result<Vec<Extent>, FsError> {
    if ip.format == FMT_BTREE {
        Ok(walk(tx, ip, Fork::Data, what)?.ext)
    } else {
        tx.c.extents(ip, Fork::Data, what)
    }
}

/// Read and check the bmbt of one fork in btree format.
pub(crate) fn walk(tx: &Tx, ip: &Inode, fork: Fork, what: &str) -> Result<Map, FsError> {
    let c = tx.c;
    let bytes = fork_bytes(ip, fork);
    let bad = |d: String| c.corrupt(what, format!("inode {} {fork:?} fork bmbt: {d}", ip.ino));
    if bytes.len() < 4 + 16 {
        return Err(bad("fork too small for a btree root".into()));
    }
    let level = be16(bytes, 0);
    let numrecs = usize::from(be16(bytes, 2));
    let rootmax = (bytes.len() - 4) / 16;
    if level == 0 || level > MAX_LEVEL || numrecs == 0 || numrecs > rootmax {
        return Err(bad(format!(
            "root level {level} with {numrecs} records ({rootmax} fit)"
        )));
    }
    let bs = c.geo.block_size as usize;
    let hdr = hdr_len(c);
    let lmax = leaf_max(c);
    let nmax = (bs - hdr) / 16;
    let magic = if c.geo.v5 { BMAP_CRC_MAGIC } else { BMAP_MAGIC };
    // (key, ptr) of the level being read.
    let mut cur: Vec<(u64, u64)> = (0..numrecs)
        .map(|i| (be64(bytes, 4 + i * 8), be64(bytes, 4 + rootmax * 8 + i * 8)))
        .collect();
    let mut map = Map::default();
    let mut seen = HashSet::new();
    let cap = ip.nblocks.min(c.geo.dblocks);
    for lvl in (0..level).rev() {
        let mut next = Vec::new();
        let mut prev = NULL_FSB;
        // Every pointer of the level first, so a bad one is named as such
        // rather than as a broken sibling chain.
        let mut at = Vec::with_capacity(cur.len());
        for &(_, fsb) in &cur {
            let bad = |d: &str| bad(format!("pointer to block {fsb:#x} (level {lvl}): {d}"));
            if !seen.insert(fsb) || seen.len() as u64 > cap {
                return Err(bad("used twice, or more blocks than the inode owns"));
            }
            at.push(
                c.geo
                    .fsb_to_byte(fsb, 1)
                    .ok_or_else(|| bad("outside the filesystem"))?,
            );
        }
        for (i, &(key, fsb)) in cur.iter().enumerate() {
            let bad = |d: String| bad(format!("block {fsb:#x} (level {lvl}): {d}"));
            let b = tx.read(at[i], bs)?;
            if be32(&b, 0) != magic {
                return Err(bad("bad magic".into()));
            }
            if c.geo.v5 {
                if !crate::csum::verify(&b, 64) {
                    return Err(bad("CRC mismatch".into()));
                }
                if be64(&b, 56) != ip.ino || b[40..56] != c.geo.meta_uuid {
                    return Err(bad("owner or UUID is not this inode's".into()));
                }
                if Some(be64(&b, 24)) != c.geo.fsb_to_daddr(fsb) {
                    return Err(bad("records another disk address".into()));
                }
            }
            let bl = be16(&b, 4);
            let n = usize::from(be16(&b, 6));
            let max = if lvl == 0 { lmax } else { nmax };
            if bl != lvl || n == 0 || n > max {
                return Err(bad(format!("level {bl} with {n} records")));
            }
            let (left, right) = (be64(&b, 8), be64(&b, 16));
            let last = i + 1 == cur.len();
            if left != prev || (last && right != NULL_FSB) || (!last && right != cur[i + 1].1) {
                return Err(bad("sibling pointers do not chain".into()));
            }
            prev = fsb;
            let first = if lvl == 0 {
                decode_extent(&b[hdr..hdr + 16]).off
            } else {
                be64(&b, hdr)
            };
            if first != key {
                return Err(bad(format!(
                    "starts at file block {first}, its key says {key}"
                )));
            }
            for j in 0..n {
                if lvl == 0 {
                    if map.ext.len() as u64 >= c.max_extents() {
                        return Err(bad(format!("more than {} extents", c.max_extents())));
                    }
                    map.ext
                        .push(decode_extent(&b[hdr + j * 16..hdr + j * 16 + 16]));
                } else {
                    next.push((be64(&b, hdr + j * 8), be64(&b, hdr + nmax * 8 + j * 8)));
                }
            }
            map.blocks.push(fsb);
        }
        cur = next;
    }
    let mut end = 0u64;
    for (i, e) in map.ext.iter().enumerate() {
        if e.len == 0 || e.off < end || c.geo.fsb_to_byte(e.fsb, e.len).is_none() {
            return Err(bad(format!(
                "record {i} (file block {}, {} blocks at {:#x}) is empty, out of order or outside the filesystem",
                e.off, e.len, e.fsb
            )));
        }
        end = e.off.saturating_add(e.len);
    }
    Ok(map)
}

/// `ext` with runs that continue each other merged.
fn merge(c: &Ctx, ext: &[Extent]) -> Vec<Extent> {
    let mut merged: Vec<Extent> = Vec::with_capacity(ext.len());
    for e in ext {
        if let Some(last) = merged.last_mut() {
            if last.unwritten == e.unwritten
                && last.off + last.len == e.off
                && last.fsb + last.len == e.fsb
                && (last.fsb >> c.geo.agblklog) == (e.fsb >> c.geo.agblklog)
                && last.len + e.len <= crate::alloc::MAX_EXTLEN
            {
                last.len += e.len;
                continue;
            }
        }
        merged.push(*e);
    }
    merged
}

fn set_nextents(ip: &mut Inode, n: u64) {
    if ip.flags2 & crate::inode::DIFLAG2_NREXT64 != 0 {
        put64(&mut ip.raw, 24, n);
    } else {
        put32(&mut ip.raw, 76, n as u32);
    }
    ip.nextents = n;
}

/// Records a bmbt block holds (leaf: 16-byte extent records; node:
/// 8-byte keys and 8-byte pointers, so the same count).
fn block_max(c: &Ctx) -> usize {
    leaf_max(c)
}

/// Records an inode root of `fsize` fork bytes holds (xfs_bmdr_maxrecs).
fn root_max(fsize: usize) -> usize {
    fsize.saturating_sub(4) / 16
}

/// The most levels, the inode root included, the kernel lets a data-fork
/// bmbt have on this filesystem.
fn max_levels(c: &Ctx) -> usize {
    let max_ext: u64 = if c.geo.incompat & crate::sb::INCOMPAT_NREXT64 != 0 {
        (1 << 48) - 1
    } else {
        (1 << 31) - 1
    };
    kernel_max_levels(max_ext, block_max(c))
}

/// xfs_bmap_compute_maxlevels for a data fork of at most `max_ext`
/// extents and blocks of `max` records: the levels, root included, of a
/// tree of half-full blocks under the smallest root a data fork may have
/// (XFS_BMDR_SPACE_CALC(MINDBTPTRS = 3): a 4-byte header and 3 records).
fn kernel_max_levels(max_ext: u64, max: usize) -> usize {
    let min = (max as u64 / 2).max(2);
    let min_root = root_max(4 + 3 * 16) as u64;
    let mut blocks = max_ext.div_ceil(min);
    let mut levels = 1;
    while blocks > 1 {
        blocks = if blocks <= min_root {
            1
        } else {
            blocks.div_ceil(min)
        };
        levels += 1;
    }
    levels
}

/// Blocks per level below the inode root (leaves first) of a bmbt holding
/// `n` records, `max` to a block, under a root of `rootmax` records; None
/// if that takes more than `levels` levels, the root included, or a root
/// level above [`MAX_LEVEL`].
fn shape(n: usize, max: usize, rootmax: usize, levels: usize) -> Option<Vec<usize>> {
    if max < 2 || rootmax == 0 {
        return None;
    }
    let mut counts = vec![n.div_ceil(max)];
    while let Some(&last) = counts.last() {
        if last <= rootmax {
            break;
        }
        if counts.len() + 2 > levels || counts.len() >= usize::from(MAX_LEVEL) {
            return None;
        }
        counts.push(last.div_ceil(max));
    }
    Some(counts)
}

/// Most extents a data fork of this inode can map: an extent list in the
/// fork, or a bmbt as deep as the kernel allows, within the extents one
/// fork may have ([`Ctx::max_extents`]).
pub(crate) fn max_mapped(c: &Ctx, ip: &Inode) -> usize {
    let fsize = ip.data_fork().len();
    let max = block_max(c);
    let mut cap = root_max(fsize);
    for _ in 1..max_levels(c).min(usize::from(MAX_LEVEL) + 1) {
        cap = cap.saturating_mul(max);
    }
    let limit = usize::try_from(c.max_extents()).unwrap_or(usize::MAX);
    cap.max(fsize / 16).min(limit)
}

/// Store `ext` (sorted by file offset) as `ip`'s data fork: an extent
/// list when it fits in the fork, else a bmbt under a root in the inode,
/// as many levels of interior nodes above the leaves as the root needs.
/// Blocks of an old bmbt are reused or freed, new ones allocated; the
/// inode's block count follows (the caller adds or removes data blocks
/// on top of `ip.nblocks` afterwards).
pub(crate) fn store(
    tx: &mut Tx,
    ip: &mut Inode,
    ext: &[Extent],
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let merged = merge(c, ext);
    let old = if ip.format == FMT_BTREE {
        walk(tx, ip, Fork::Data, what)?.blocks
    } else {
        Vec::new()
    };
    let fsize = ip.data_fork().len();
    let core = ip.core;
    let unsupported = |why: String| FsError::Unsupported {
        fs: c.location.clone(),
        op: format!("write {what}"),
        why,
    };
    let bmbt = crate::alloc::Owner::bmbt(ip.ino);
    let nb_delta: i64;
    if merged.len() * 16 <= fsize {
        for &b in &old {
            crate::alloc::free_for(tx, b, 1, bmbt)?;
        }
        let fork = &mut ip.raw[core..core + fsize];
        fork.fill(0);
        for (i, e) in merged.iter().enumerate() {
            fork[i * 16..i * 16 + 16].copy_from_slice(&encode_extent(e));
        }
        ip.raw[5] = FMT_EXTENTS;
        ip.format = FMT_EXTENTS;
        nb_delta = -(old.len() as i64);
    } else {
        let rootmax = root_max(fsize);
        if merged.len() as u64 > c.max_extents() {
            return Err(unsupported(format!(
                "inode {}: {} extents, more than the {} one fork may have",
                ip.ino,
                merged.len(),
                c.max_extents()
            )));
        }
        let counts = shape(merged.len(), block_max(c), rootmax, max_levels(c)).ok_or_else(|| {
            unsupported(format!(
                "inode {}: {} extents need a bmbt deeper than the {} levels the kernel allows (or the data fork, {fsize} bytes, has no room for a btree root)",
                ip.ino,
                merged.len(),
                max_levels(c)
            ))
        })?;
        let total: usize = counts.iter().sum();
        let reused: HashSet<u64> = old.iter().copied().take(total).collect();
        for &b in old.iter().skip(total) {
            crate::alloc::free_for(tx, b, 1, bmbt)?;
        }
        let mut blocks: Vec<u64> = old.iter().copied().take(total).collect();
        let more = total - blocks.len();
        if more > 0 {
            let got =
                crate::alloc::alloc_for(tx, bmbt, agno_of(c, ip.ino), more as u64, 1, None, more)?;
            for g in got {
                for k in 0..g.len {
                    blocks.push(g.fsb + k);
                }
            }
        }
        if blocks.len() != total {
            return Err(c.corrupt(what, "the allocator returned the wrong count".into()));
        }
        // Leaves first in disk order, then each node level.
        blocks.sort_unstable();
        let mut items: Vec<Item> = merged.iter().map(|e| Item::Rec(*e)).collect();
        let mut rest = &blocks[..];
        for (level, &n) in counts.iter().enumerate() {
            let (mine, more) = rest
                .split_at_checked(n)
                .ok_or_else(|| c.corrupt(what, "bmbt levels sized wrongly".into()))?;
            rest = more;
            items = write_level(tx, ip.ino, level as u16, &items, mine, &reused, what)?;
        }
        let fork = &mut ip.raw[core..core + fsize];
        fork.fill(0);
        fork[0..2].copy_from_slice(&(counts.len() as u16).to_be_bytes());
        fork[2..4].copy_from_slice(&(items.len() as u16).to_be_bytes());
        for (i, it) in items.iter().enumerate() {
            if let Item::Ptr(k, p) = it {
                put64(fork, 4 + i * 8, *k);
                put64(fork, 4 + rootmax * 8 + i * 8, *p);
            }
        }
        ip.raw[5] = FMT_BTREE;
        ip.format = FMT_BTREE;
        nb_delta = total as i64 - old.len() as i64;
    }
    set_nextents(ip, merged.len() as u64);
    let nb = ip.nblocks.checked_add_signed(nb_delta).ok_or_else(|| {
        c.corrupt(
            what,
            format!("inode {} counts fewer blocks than its bmbt", ip.ino),
        )
    })?;
    crate::dirw::set_nblocks(ip, nb);
    Ok(())
}

/// A record of one bmbt level: an extent (leaves) or a key and the block
/// it points to (nodes and the root).
#[derive(Clone, Copy)]
enum Item {
    Rec(Extent),
    Ptr(u64, u64),
}

impl Item {
    fn key(&self) -> u64 {
        match self {
            Item::Rec(e) => e.off,
            Item::Ptr(k, _) => *k,
        }
    }
}

/// Write `items` evenly over `blocks` (one level, siblings chained, keys
/// and pointers laid out by the block's maximum as xfs_bmbt_key_addr and
/// xfs_bmbt_ptr_addr do); the pointers to them for the level above.
fn write_level(
    tx: &mut Tx,
    ino: u64,
    level: u16,
    items: &[Item],
    blocks: &[u64],
    reused: &HashSet<u64>,
    what: &str,
) -> Result<Vec<Item>, FsError> {
    let c = tx.c;
    let bs = c.geo.block_size as usize;
    let hdr = hdr_len(c);
    let max = block_max(c);
    let nblocks = blocks.len();
    if nblocks == 0 || items.len() > nblocks.saturating_mul(max) || items.len() < nblocks {
        return Err(c.corrupt(what, "bmbt level sized wrongly".into()));
    }
    let outside = || c.corrupt(what, "bmbt block outside the filesystem".into());
    let base = items.len() / nblocks;
    let extra = items.len() % nblocks;
    let mut from = 0usize;
    let mut up = Vec::with_capacity(nblocks);
    for (i, &fsb) in blocks.iter().enumerate() {
        let n = base + usize::from(i < extra);
        let recs = &items[from..from + n];
        let at = c.geo.fsb_to_byte(fsb, 1).ok_or_else(outside)?;
        let lsn = if c.geo.v5 && reused.contains(&fsb) {
            be64(&tx.read(at, bs)?, 32)
        } else {
            0
        };
        let mut b = vec![0u8; bs];
        put32(
            &mut b,
            0,
            if c.geo.v5 { BMAP_CRC_MAGIC } else { BMAP_MAGIC },
        );
        b[4..6].copy_from_slice(&level.to_be_bytes());
        b[6..8].copy_from_slice(&(n as u16).to_be_bytes());
        put64(&mut b, 8, if i == 0 { NULL_FSB } else { blocks[i - 1] });
        put64(&mut b, 16, blocks.get(i + 1).copied().unwrap_or(NULL_FSB));
        if c.geo.v5 {
            put64(&mut b, 24, c.geo.fsb_to_daddr(fsb).ok_or_else(outside)?);
            put64(&mut b, 32, lsn);
            b[40..56].copy_from_slice(&c.geo.meta_uuid);
            put64(&mut b, 56, ino);
        }
        for (j, it) in recs.iter().enumerate() {
            match it {
                Item::Rec(e) => {
                    b[hdr + j * 16..hdr + j * 16 + 16].copy_from_slice(&encode_extent(e));
                }
                Item::Ptr(k, p) => {
                    put64(&mut b, hdr + j * 8, *k);
                    put64(&mut b, hdr + max * 8 + j * 8, *p);
                }
            }
        }
        if c.geo.v5 {
            crate::csum::update(&mut b, 64);
        }
        tx.write(at, b)?;
        up.push(Item::Ptr(recs[0].key(), fsb));
        from += n;
    }
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::{kernel_max_levels, shape};

    #[test]
    fn kernel_heights() {
        let (ext31, ext48) = ((1u64 << 31) - 1, (1u64 << 48) - 1);
        // 4 KiB v5 blocks: 251 records, at least 125.
        assert_eq!(kernel_max_levels(ext31, 251), 5);
        // 1 KiB v5 blocks: 59 records, at least 29.
        assert_eq!(kernel_max_levels(ext31, 59), 7);
        assert!(kernel_max_levels(ext48, 59) > 7);
    }

    #[test]
    fn shapes() {
        // 1 KiB v4 blocks (62 records), a 256-byte inode's root (9).
        assert_eq!(shape(63, 62, 9, 7), Some(vec![2]));
        assert_eq!(shape(558, 62, 9, 7), Some(vec![9]));
        assert_eq!(shape(559, 62, 9, 7), Some(vec![10, 1]));
        assert_eq!(shape(34_596, 62, 9, 7), Some(vec![558, 9]));
        assert_eq!(shape(34_597, 62, 9, 7), Some(vec![559, 10, 1]));
        // The height limit counts the root: 3 levels are root, nodes, leaves.
        assert_eq!(shape(34_596, 62, 9, 3), Some(vec![558, 9]));
        assert_eq!(shape(34_597, 62, 9, 3), None);
        assert_eq!(shape(usize::MAX / 2, 62, 9, 100), None);
        assert_eq!(shape(10, 62, 0, 7), None);
    }
}
