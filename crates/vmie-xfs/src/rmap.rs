//! The reverse-mapping btree (rmapbt, ro_compat RMAPBT): one record per
//! owned extent of an AG, {startblock, blockcount, owner, offset with the
//! attr-fork / bmbt-block / unwritten flags in its top bits}, sorted by
//! (startblock, owner, offset) as xfs_rmapbt_diff_two_keys does. Its
//! nodes hold a low key and a high key per child (an overlapping-interval
//! btree: the high key is the largest (last block, owner, last offset)
//! under that child).
//!
//! Every change reads and verifies the whole tree of the AG (magic, v5
//! header, levels, record counts, order, the parents' low keys, sibling
//! chains, every block once), applies the change to the records in memory
//! the way the kernel's non-shared xfs_rmap_map / xfs_rmap_unmap do
//! (a new mapping merges with the records it touches that have the same
//! owner, fork, flags and contiguous offsets; an unmapping shrinks, splits
//! or removes the one record that covers it and must have the same owner),
//! and writes the tree back evenly filled (every non-root block at least
//! half full) into the blocks it had, taking more from the AGFL or giving
//! surplus back to it (rmapbt blocks are AGFL blocks, owned by
//! XFS_RMAP_OWN_AG like the AGFL itself, so moving one between the two
//! changes no mapping). agf_rmap_root, the rmap level, agf_rmap_blocks and
//! agf_btreeblks follow. The trees are a few blocks per AG on the volumes
//! this tool writes, so rewriting one per change is cheap and keeps every
//! node's high key exact by construction.
//!
//! With reflink the kernel maps data extents of reflinked inodes with
//! xfs_rmap_map_shared, which allows records of other owners to overlap;
//! the blocks we map are always newly allocated (never shared), where the
//! shared and non-shared code give the same records, and unmapping a
//! shared extent is refused before it gets here (unlink and replace
//! refuse shared blocks).

use std::collections::HashSet;

use vmie_guestfs::FsError;

use crate::be::{be16, be32, be64, put32, put64};
use crate::tx::Tx;

pub(crate) const MAGIC: u32 = 0x524D_4233;
const NULL_AGBNO: u32 = 0xFFFF_FFFF;
const HDR: usize = 56;
const REC: usize = 24;
const KEY: usize = 20;
/// Deepest rmapbt walked.
const MAX_LEVELS: u32 = 9;

pub(crate) const OWN_AG: u64 = -5i64 as u64;
pub(crate) const OWN_INOBT: u64 = -6i64 as u64;
pub(crate) const OWN_INODES: u64 = -7i64 as u64;
const OWN_NULL: u64 = u64::MAX;

const OFF_ATTR: u64 = 1 << 63;
const OFF_BMBT: u64 = 1 << 62;
const OFF_UNWRITTEN: u64 = 1 << 61;
const OFF_MASK: u64 = (1 << 54) - 1;

/// One reverse mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rec {
    pub start: u32,
    pub len: u32,
    pub owner: u64,
    /// File offset with the flag bits.
    pub off: u64,
}

/// Whose an extent is: an inode's fork (file offset) or a fixed owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub owner: u64,
    pub off: u64,
}

impl Owner {
    /// Blocks of AG metadata (AGFL, free-space and rmap btrees).
    pub const AG: Owner = Owner {
        owner: OWN_AG,
        off: 0,
    };
    pub const INOBT: Owner = Owner {
        owner: OWN_INOBT,
        off: 0,
    };
    pub const INODES: Owner = Owner {
        owner: OWN_INODES,
        off: 0,
    };
    /// Data-fork blocks of inode `ino` from file block `off`.
    pub fn data(ino: u64, off: u64) -> Owner {
        Owner {
            owner: ino,
            off: off & OFF_MASK,
        }
    }
    /// A block of inode `ino`'s block-map btree (bmbt). For the bmbt
    /// writer, which allocates such blocks through `alloc_for`.
    #[allow(dead_code)]
    pub fn bmbt(ino: u64) -> Owner {
        Owner {
            owner: ino,
            off: OFF_BMBT,
        }
    }
    /// The owner of the blocks `n` after these: the file offset moves on
    /// for an inode's fork blocks, not for bmbt or fixed-owner blocks.
    pub fn advance(self, n: u64) -> Owner {
        if !inode_owner(self.owner) || self.off & OFF_BMBT != 0 {
            return self;
        }
        let off = ((self.off & OFF_MASK).saturating_add(n) & OFF_MASK) | (self.off & !OFF_MASK);
        Owner { off, ..self }
    }
    /// The same blocks in the attribute fork.
    pub fn attr(self) -> Owner {
        Owner {
            off: self.off | OFF_ATTR,
            ..self
        }
    }
    /// The same blocks as an unwritten extent.
    pub fn unwritten(self) -> Owner {
        Owner {
            off: self.off | OFF_UNWRITTEN,
            ..self
        }
    }
}

fn inode_owner(owner: u64) -> bool {
    owner & (1 << 63) == 0
}

impl Rec {
    fn parse(b: &[u8]) -> Rec {
        Rec {
            start: be32(b, 0),
            len: be32(b, 4),
            owner: be64(b, 8),
            off: be64(b, 16),
        }
    }
    fn put(&self, b: &mut [u8]) {
        put32(b, 0, self.start);
        put32(b, 4, self.len);
        put64(b, 8, self.owner);
        put64(b, 16, self.off);
    }
    /// Whether offsets count file blocks (an inode's fork, not a bmbt
    /// block).
    fn has_offset(&self) -> bool {
        inode_owner(self.owner) && self.off & OFF_BMBT == 0
    }
    /// The low key: (startblock, owner, offset without the unwritten bit).
    fn low(&self) -> Key {
        Key {
            start: self.start,
            owner: self.owner,
            off: self.off & !OFF_UNWRITTEN,
        }
    }
    /// The high key: the last block and, for file blocks, the last offset.
    fn high(&self) -> Key {
        let adj = self.len.saturating_sub(1);
        let mut k = self.low();
        k.start = self.start.saturating_add(adj);
        if self.has_offset() {
            k.off = ((k.off & OFF_MASK) + u64::from(adj)) | (k.off & !OFF_MASK);
        }
        k
    }
    fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.len)
    }
    /// Whether `self` and `o` may form one record (xfs_rmap_is_mergeable).
    fn same_kind(&self, o: &Rec) -> bool {
        self.owner == o.owner && self.owner != OWN_NULL && self.off & !OFF_MASK == o.off & !OFF_MASK
    }
}

/// A node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    start: u32,
    owner: u64,
    off: u64,
}

impl Key {
    fn parse(b: &[u8]) -> Key {
        Key {
            start: be32(b, 0),
            owner: be64(b, 4),
            off: be64(b, 12),
        }
    }
    fn put(&self, b: &mut [u8]) {
        put32(b, 0, self.start);
        put64(b, 4, self.owner);
        put64(b, 12, self.off);
    }
    /// The order of xfs_rmapbt_diff_two_keys (offsets without flags).
    fn ord(&self) -> (u32, u64, u64) {
        (self.start, self.owner, self.off & OFF_MASK)
    }
}

fn sort_key(r: &Rec) -> (u32, u64, u64) {
    r.low().ord()
}

/// The rmapbt of one AG, read whole.
struct Tree {
    agno: u32,
    aglen: u32,
    /// Every block of the tree.
    blocks: Vec<u32>,
    recs: Vec<Rec>,
}

fn leaf_max(bs: usize) -> usize {
    (bs - HDR) / REC
}
fn node_max(bs: usize) -> usize {
    (bs - HDR) / (2 * KEY + 4)
}

/// The most levels an rmapbt of this AG size can have (over the minimum
/// records per block; with reflink every block may have several owners).
pub(crate) fn maxlevels(c: &crate::Ctx) -> u32 {
    let bs = c.geo.block_size as usize;
    let min_leaf = (leaf_max(bs) / 2).max(1) as u64;
    let min_node = (node_max(bs) / 2).max(2) as u64;
    let mut recs = u64::from(c.geo.agblocks);
    if c.geo.ro_compat & crate::sb::RO_COMPAT_REFLINK != 0 {
        recs = recs.saturating_mul(8);
    }
    let mut blocks = recs.div_ceil(min_leaf);
    let mut level = 1;
    while blocks > 1 && level < MAX_LEVELS {
        blocks = blocks.div_ceil(min_node);
        level += 1;
    }
    level
}

fn place(agno: u32, agbno: u32) -> String {
    format!("rmapbt of AG {agno} block {agbno}")
}

fn byte_of(tx: &Tx, agno: u32, aglen: u32, agbno: u32) -> Result<u64, FsError> {
    let g = &tx.c.geo;
    if agbno == 0 || agbno >= aglen {
        return Err(tx
            .c
            .corrupt(&place(agno, agbno), "pointer outside the AG".into()));
    }
    let fsb = (u64::from(agno) << g.agblklog) | u64::from(agbno);
    g.fsb_to_byte(fsb, 1).ok_or_else(|| {
        tx.c.corrupt(&place(agno, agbno), "pointer outside the filesystem".into())
    })
}

/// The root, level and block count the AGF records.
fn agf_fields(a: &[u8]) -> (u32, u32, u32) {
    (be32(a, 24), be32(a, 36), be32(a, 80))
}

/// Read and verify the whole rmapbt of `agno` (AGF bytes `agf`).
fn load(tx: &Tx, agno: u32, agf: &[u8]) -> Result<Tree, FsError> {
    let c = tx.c;
    let bs = c.geo.block_size as usize;
    let aglen = c.ag_len(agno);
    let (root, levels, nblocks) = agf_fields(agf);
    if !c.geo.v5 {
        return Err(c.corrupt(&format!("AG {agno}"), "an rmapbt on a v4 filesystem".into()));
    }
    if levels == 0 || levels > MAX_LEVELS.min(maxlevels(c)) {
        return Err(c.corrupt(
            &format!("AGF of AG {agno}"),
            format!("rmapbt of {levels} levels"),
        ));
    }
    let mut seen = HashSet::new();
    let mut blocks = Vec::new();
    let mut recs = Vec::new();
    // One level at a time, left to right, checking each parent's low and
    // high keys against the child it points to.
    let mut level_ptrs: Vec<(u32, Option<(Key, Key)>)> = vec![(root, None)];
    for level in (0..levels).rev() {
        let mut next = Vec::new();
        let mut prev = NULL_AGBNO;
        for (i, &(agbno, want)) in level_ptrs.iter().enumerate() {
            let bad = |d: String| c.corrupt(&place(agno, agbno), d);
            if !seen.insert(agbno) {
                return Err(bad("block used twice in the tree".into()));
            }
            if seen.len() > aglen as usize {
                return Err(bad("more blocks than the AG".into()));
            }
            let at = byte_of(tx, agno, aglen, agbno)?;
            let b = tx.read(at, bs)?;
            if be32(&b, 0) != MAGIC {
                return Err(bad(format!("bad magic {:#x}", be32(&b, 0))));
            }
            if !crate::csum::verify(&b, 52) {
                return Err(bad("CRC mismatch".into()));
            }
            if be64(&b, 16) != at >> 9 {
                return Err(bad("header records another disk address".into()));
            }
            if b[32..48] != c.geo.meta_uuid {
                return Err(bad("header UUID is not this filesystem's".into()));
            }
            if be32(&b, 48) != agno {
                return Err(bad(format!("header owner AG {}", be32(&b, 48))));
            }
            let lvl = u32::from(be16(&b, 4));
            let n = usize::from(be16(&b, 6));
            let max = if level == 0 {
                leaf_max(bs)
            } else {
                node_max(bs)
            };
            if lvl != level || n > max || (n == 0 && (level > 0 || levels > 1)) {
                return Err(bad(format!(
                    "level {lvl} (expected {level}) with {n} entries (at most {max})"
                )));
            }
            let right_want = level_ptrs.get(i + 1).map_or(NULL_AGBNO, |p| p.0);
            if be32(&b, 8) != prev || be32(&b, 12) != right_want {
                return Err(bad("sibling pointers disagree with the parent".into()));
            }
            prev = agbno;
            let got = if level == 0 {
                let start = recs.len();
                for j in 0..n {
                    let r = Rec::parse(&b[HDR + j * REC..]);
                    if r.len == 0 || r.end() > u64::from(aglen) {
                        return Err(bad(format!("record {}+{} outside the AG", r.start, r.len)));
                    }
                    if let Some(p) = recs.last() {
                        if sort_key(p) > sort_key(&r) {
                            return Err(bad("records out of order".into()));
                        }
                    }
                    recs.push(r);
                }
                let part = &recs[start..];
                part.first().map(|f| {
                    (
                        f.low(),
                        part.iter()
                            .map(Rec::high)
                            .max_by_key(Key::ord)
                            .unwrap_or(f.low()),
                    )
                })
            } else {
                let po = HDR + max * 2 * KEY;
                let mut high: Option<Key> = None;
                for j in 0..n {
                    let o = HDR + j * 2 * KEY;
                    let k = Key::parse(&b[o..]);
                    let h = Key::parse(&b[o + KEY..]);
                    if high.is_none_or(|x| h.ord() > x.ord()) {
                        high = Some(h);
                    }
                    next.push((be32(&b, po + j * 4), Some((k, h))));
                }
                high.map(|h| (Key::parse(&b[HDR..]), h))
            };
            // The parent's low key is this block's first, its high key the
            // largest high key under it.
            if let (Some((wl, wh)), Some((gl, gh))) = (want, got) {
                if wl.ord() != gl.ord() || wh.ord() != gh.ord() {
                    return Err(bad("the parent's keys disagree with the block".into()));
                }
            }
            blocks.push(agbno);
        }
        level_ptrs = next;
    }
    if blocks.len() as u64 != u64::from(nblocks) {
        return Err(c.corrupt(
            &format!("AGF of AG {agno}"),
            format!(
                "agf_rmap_blocks {nblocks}, the tree has {} blocks",
                blocks.len()
            ),
        ));
    }
    Ok(Tree {
        agno,
        aglen,
        blocks,
        recs,
    })
}

/// Sizes of `n` entries spread evenly over the fewest blocks of `max`.
fn spread(n: usize, max: usize) -> Vec<usize> {
    let blocks = n.div_ceil(max).max(1);
    (0..blocks)
        .map(|i| n / blocks + usize::from(i < n % blocks))
        .collect()
}

/// Write `t.recs` back as a tree, reusing its blocks, more from the AGFL,
/// surplus to the AGFL; then the AGF.
fn store(tx: &mut Tx, t: &Tree) -> Result<(), FsError> {
    let c = tx.c;
    let bs = c.geo.block_size as usize;
    let agno = t.agno;
    if t.recs.is_empty() {
        return Err(c.corrupt(
            &format!("rmapbt of AG {agno}"),
            "no record would be left".into(),
        ));
    }
    // The shape: entries per block at each level, leaves first.
    let mut shape = vec![spread(t.recs.len(), leaf_max(bs))];
    while shape.last().map_or(0, Vec::len) > 1 {
        let n = shape.last().map_or(0, Vec::len);
        shape.push(spread(n, node_max(bs)));
        if shape.len() as u32 > maxlevels(c) {
            return Err(crate::alloc::refuse(
                c,
                format!("the rmapbt of AG {agno} would grow past its height limit"),
            ));
        }
    }
    let total: usize = shape.iter().map(Vec::len).sum();
    let mut pool = t.blocks.clone();
    while pool.len() < total {
        pool.push(crate::alloc::agfl_get(tx, agno, true)?);
    }
    while pool.len() > total {
        if let Some(b) = pool.pop() {
            crate::alloc::agfl_put(tx, agno, b, true)?;
        }
    }
    pool.sort_unstable();
    let mut next_block = pool.into_iter();
    // Level by level: (block, low key, high key) of each block.
    let mut below: Vec<(u32, Key, Key)> = Vec::new();
    for (level, sizes) in shape.iter().enumerate() {
        let mut done = Vec::new();
        let bnos: Vec<u32> = sizes.iter().filter_map(|_| next_block.next()).collect();
        if bnos.len() != sizes.len() {
            return Err(c.corrupt(&format!("rmapbt of AG {agno}"), "block count".into()));
        }
        let mut at = 0usize;
        for (i, &n) in sizes.iter().enumerate() {
            let agbno = bnos[i];
            let addr = byte_of(tx, agno, t.aglen, agbno)?;
            let mut raw = vec![0u8; bs];
            put32(&mut raw, 0, MAGIC);
            raw[4..6].copy_from_slice(&(level as u16).to_be_bytes());
            raw[6..8].copy_from_slice(&(n as u16).to_be_bytes());
            put32(
                &mut raw,
                8,
                i.checked_sub(1).map_or(NULL_AGBNO, |j| bnos[j]),
            );
            put32(&mut raw, 12, bnos.get(i + 1).copied().unwrap_or(NULL_AGBNO));
            put64(&mut raw, 16, addr >> 9);
            raw[32..48].copy_from_slice(&c.geo.meta_uuid);
            put32(&mut raw, 48, agno);
            let (low, high);
            if level == 0 {
                let part = &t.recs[at..at + n];
                for (j, r) in part.iter().enumerate() {
                    r.put(&mut raw[HDR + j * REC..HDR + (j + 1) * REC]);
                }
                low = part[0].low();
                high = part
                    .iter()
                    .map(Rec::high)
                    .max_by_key(Key::ord)
                    .unwrap_or(low);
            } else {
                let part = &below[at..at + n];
                let po = HDR + node_max(bs) * 2 * KEY;
                for (j, (p, lk, hk)) in part.iter().enumerate() {
                    let o = HDR + j * 2 * KEY;
                    lk.put(&mut raw[o..o + KEY]);
                    hk.put(&mut raw[o + KEY..o + 2 * KEY]);
                    put32(&mut raw, po + j * 4, *p);
                }
                low = part[0].1;
                high = part.iter().map(|e| e.2).max_by_key(Key::ord).unwrap_or(low);
            }
            crate::csum::update(&mut raw, 52);
            tx.write(addr, raw)?;
            done.push((agbno, low, high));
            at += n;
        }
        below = done;
    }
    let root = below.first().map_or(NULL_AGBNO, |e| e.0);
    let levels = shape.len() as u32;
    let total = total as u32;
    crate::alloc::agf_change(tx, agno, |a| {
        put32(a, 24, root);
        put32(a, 36, levels);
        put32(a, 80, total);
        Ok(())
    })
}

fn enabled(tx: &Tx) -> bool {
    tx.c.geo.ro_compat & crate::sb::RO_COMPAT_RMAPBT != 0
}

fn split_fsb(tx: &Tx, fsb: u64) -> (u32, u32) {
    let g = &tx.c.geo;
    (
        (fsb >> g.agblklog) as u32,
        (fsb & ((1u64 << g.agblklog) - 1)) as u32,
    )
}

/// Record that `len` blocks from `fsb` now belong to `who` (no-op without
/// an rmapbt).
pub(crate) fn map(tx: &mut Tx, fsb: u64, len: u64, who: Owner) -> Result<(), FsError> {
    if !enabled(tx) {
        return Ok(());
    }
    let (agno, s) = split_fsb(tx, fsb);
    map_ag(tx, agno, s, len, who)
}

/// Record that `len` blocks from `fsb` no longer belong to `who`.
pub(crate) fn unmap(tx: &mut Tx, fsb: u64, len: u64, who: Owner) -> Result<(), FsError> {
    if !enabled(tx) {
        return Ok(());
    }
    let (agno, s) = split_fsb(tx, fsb);
    unmap_ag(tx, agno, s, len, who)
}

fn new_rec(tx: &Tx, agno: u32, s: u32, len: u64, who: Owner) -> Result<Rec, FsError> {
    let l = u32::try_from(len)
        .ok()
        .filter(|&l| l > 0 && u64::from(s) + u64::from(l) <= u64::from(tx.c.ag_len(agno)))
        .ok_or_else(|| {
            tx.c.corrupt(
                &format!("rmapbt of AG {agno}"),
                format!("extent {s}+{len} outside the AG"),
            )
        })?;
    Ok(Rec {
        start: s,
        len: l,
        owner: who.owner,
        off: if inode_owner(who.owner) { who.off } else { 0 },
    })
}

/// Map in AG coordinates (the AGFL code calls this directly).
pub(crate) fn map_ag(tx: &mut Tx, agno: u32, s: u32, len: u64, who: Owner) -> Result<(), FsError> {
    if !enabled(tx) {
        return Ok(());
    }
    let (_, a) = crate::alloc::agf(tx, agno)?;
    let mut t = load(tx, agno, &a)?;
    let r = new_rec(tx, agno, s, len, who)?;
    // No record may cover any of these blocks (non-shared mapping).
    if let Some(o) = t
        .recs
        .iter()
        .find(|o| u64::from(o.start) < r.end() && u64::from(r.start) < o.end())
    {
        return Err(tx.c.corrupt(
            &format!("rmapbt of AG {agno}"),
            format!(
                "blocks {}+{} to map are already owned by {:#x} ({}+{})",
                r.start, r.len, o.owner, o.start, o.len
            ),
        ));
    }
    let contiguous = |a: &Rec, b: &Rec| {
        a.same_kind(b)
            && a.end() == u64::from(b.start)
            && (!a.has_offset() || (a.off & OFF_MASK) + u64::from(a.len) == b.off & OFF_MASK)
            && u64::from(a.len) + u64::from(b.len) <= u64::from(u32::MAX)
    };
    let mut new = r;
    if let Some(i) = t.recs.iter().position(|o| contiguous(o, &new)) {
        let o = t.recs.remove(i);
        new = Rec {
            start: o.start,
            len: o.len + new.len,
            owner: o.owner,
            off: o.off,
        };
    }
    if let Some(i) = t.recs.iter().position(|o| contiguous(&new, o)) {
        let o = t.recs.remove(i);
        new.len += o.len;
    }
    let at = t.recs.partition_point(|o| sort_key(o) < sort_key(&new));
    t.recs.insert(at, new);
    store(tx, &t)
}

/// Unmap in AG coordinates.
pub(crate) fn unmap_ag(
    tx: &mut Tx,
    agno: u32,
    s: u32,
    len: u64,
    who: Owner,
) -> Result<(), FsError> {
    if !enabled(tx) {
        return Ok(());
    }
    let (_, a) = crate::alloc::agf(tx, agno)?;
    let mut t = load(tx, agno, &a)?;
    let r = new_rec(tx, agno, s, len, who)?;
    let bad = |d: String| tx.c.corrupt(&format!("rmapbt of AG {agno}"), d);
    let Some(i) = t
        .recs
        .iter()
        .position(|o| o.start <= r.start && r.end() <= o.end() && o.owner == r.owner)
    else {
        return Err(bad(format!(
            "no record of owner {:#x} covers blocks {}+{} to unmap",
            r.owner, r.start, r.len
        )));
    };
    let o = t.recs.remove(i);
    if o.has_offset() {
        let want = (o.off & OFF_MASK) + u64::from(r.start - o.start);
        if want != r.off & OFF_MASK || o.off & OFF_ATTR != r.off & OFF_ATTR {
            return Err(bad(format!(
                "blocks {}+{} of owner {:#x} map file offset {want}, not {}",
                r.start,
                r.len,
                r.owner,
                r.off & OFF_MASK
            )));
        }
    }
    let mut keep = Vec::new();
    if o.start < r.start {
        keep.push(Rec {
            start: o.start,
            len: r.start - o.start,
            owner: o.owner,
            off: o.off,
        });
    }
    if r.end() < o.end() {
        let skip = (r.end() - u64::from(o.start)) as u32;
        let off = if o.has_offset() {
            ((o.off & OFF_MASK) + u64::from(skip)) | (o.off & !OFF_MASK)
        } else {
            o.off
        };
        keep.push(Rec {
            start: o.start + skip,
            len: o.len - skip,
            owner: o.owner,
            off,
        });
    }
    for k in keep {
        let at = t.recs.partition_point(|x| sort_key(x) < sort_key(&k));
        t.recs.insert(at, k);
    }
    store(tx, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_keys_follow_the_kernel() {
        let file = Rec {
            start: 100,
            len: 8,
            owner: 131,
            off: 40 | OFF_UNWRITTEN,
        };
        let h = file.high();
        assert_eq!((h.start, h.owner, h.off), (107, 131, 47));
        assert_eq!(file.low().off, 40);
        let ag = Rec {
            start: 5,
            len: 3,
            owner: OWN_AG,
            off: 0,
        };
        assert_eq!((ag.high().start, ag.high().off), (7, 0));
        let bmbt = Rec {
            start: 9,
            len: 2,
            owner: 131,
            off: OFF_BMBT | OFF_ATTR,
        };
        assert_eq!(bmbt.high().off, OFF_BMBT | OFF_ATTR);
    }

    #[test]
    fn owners_advance_only_file_offsets() {
        assert_eq!(Owner::data(7, 3).advance(4), Owner::data(7, 7));
        assert_eq!(Owner::data(7, 3).attr().advance(1).off, 4 | OFF_ATTR);
        assert_eq!(Owner::bmbt(7).advance(5), Owner::bmbt(7));
        assert_eq!(Owner::AG.advance(5), Owner::AG);
    }

    #[test]
    fn blocks_are_filled_evenly_and_at_least_half() {
        for max in [5usize, 40, 168] {
            for n in 1..1000 {
                let s = spread(n, max);
                assert_eq!(s.iter().sum::<usize>(), n);
                assert_eq!(s.len(), n.div_ceil(max));
                if s.len() > 1 {
                    assert!(
                        s.iter().all(|&k| k <= max && k >= max / 2),
                        "{n} {max} {s:?}"
                    );
                }
            }
        }
    }
}
