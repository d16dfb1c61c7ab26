//! Node-form directories: data blocks below the 32 GiB leaf segment, a
//! hash tree in the leaf segment and freeindex blocks in the 64 GiB free
//! segment, each holding the longest free region of `free_max` data
//! blocks (block k covers data blocks from k times `free_max` on; a block
//! whose range holds no data block is not mapped).
//!
//! The hash tree's root stays at the leaf segment's first block: one
//! leafN block, or a da node of level 1 to 4 (the kernel's
//! XFS_DA_NODE_MAXDEPTH of 5 blocks from root to leaf) over nodes one
//! level down, and so on to the leafN blocks; the blocks of each level
//! are chained by sibling pointers, and a node holds for each child the
//! child's last hash (stale leaf entries included).
//!
//! Every block read is verified before anything is changed: magic, v5
//! CRC/owner/blkno/UUID, counts, hash order, level one below the parent,
//! the parent's hash for it, sibling pointers matching the parent's
//! neighbouring entries (at a node's edges: a sibling exactly when the
//! node has one), freeindex headers (first data block, valid and used
//! counts). Every block changed is rebuilt whole (stale leaf entries
//! compacted away, the log sequence number kept) and re-sealed; a
//! neighbour whose sibling pointer changes is checked to point back first.
//!
//! Adding splits a full leaf in two, its parent taking the new right half
//! after it; a full node splits the same way up the path, and a full root
//! moves its entries into two new blocks and becomes a node one level
//! higher over them (the root never moves). Hashes in the nodes above
//! follow a changed last hash. A data block past the mapped freeindex
//! ranges gets a new freeindex block.
//!
//! Removing frees an emptied data block (and a freeindex block left
//! without data blocks, never the first); a leaf or node at most half
//! full joins its neighbour under the same parent when the two fit in
//! three quarters of a block (the kernel's rule; an emptied leaf always
//! does), the parent losing an entry and maybe joining in turn, and a
//! root node left with one child takes the child's place, as often as
//! that repeats. A leaf that loses its last live entry but cannot join
//! keeps one stale entry at its hash, as the kernel's do. Refused: a tree
//! that would need a sixth block from root to leaf, and a full leaf
//! segment or data segment.
//!
//! Lookups in a node-form directory (the writers' checks for an existing
//! name) go down the hash tree to the name's leaf, and on through the
//! next leaves while equal hashes continue, instead of reading every
//! data block.

use vmie_guestfs::FsError;

use crate::be::{be16, be32, put32, put64};
use crate::dir::{data_entry_size, DATA_MAGIC_V2, DATA_MAGIC_V3};
use crate::dirw::{
    agno_of, build_area, dir_block_at, hashname, layout, place_entry, read_data_block, refuse,
    seal_data, set_extents, set_nblocks, set_size, write_data_header, Change, DEnt, Leaf1,
    NULL_DATAOFF,
};
use crate::inode::{Extent, Inode};
use crate::tx::Tx;
use crate::Ctx;

const LEAFN_MAGIC_V2: u16 = 0xd2ff;
const LEAFN_MAGIC_V3: u16 = 0x3dff;
const NODE_MAGIC_V2: u16 = 0xfebe;
const NODE_MAGIC_V3: u16 = 0x3ebe;
const FREE_MAGIC_V2: u32 = 0x5844_3246; // XD2F
const FREE_MAGIC_V3: u32 = 0x5844_4633; // XDF3

/// The directory geometry the node form needs.
struct G {
    v5: bool,
    ds: usize,
    fsbs: u64,
    /// File block of the leaf segment (the hash tree root).
    leaf_fo: u64,
    /// File block of the free segment (the freeindex block).
    free_fo: u64,
    /// Header sizes: leafN, da node, freeindex.
    lh: usize,
    nh: usize,
    fh: usize,
    leaf_max: usize,
    node_max: usize,
    free_max: usize,
}

fn geo(c: &Ctx) -> G {
    let g = &c.geo;
    let ds = g.dir_size as usize;
    let v5 = g.v5;
    let (lh, nh, fh) = if v5 { (64, 64, 64) } else { (16, 16, 16) };
    let leaf_fo = g.dir_leaf_fsb();
    G {
        v5,
        ds,
        fsbs: u64::from(g.dir_fsbs),
        leaf_fo,
        free_fo: leaf_fo * 2,
        lh,
        nh,
        fh,
        leaf_max: (ds - lh) / 8,
        node_max: (ds - nh) / 8,
        free_max: (ds - fh) / 2,
    }
}

fn place(what: &str, kind: &str, fo: u64) -> String {
    format!("{what} (directory {kind} block at file block {fo})")
}

/// A block of the leaf or free segment: file block, byte offset, bytes.
struct Blk {
    fo: u64,
    at: u64,
    raw: Vec<u8>,
}

fn read_blk(tx: &Tx, ext: &[Extent], fo: u64, kind: &str, what: &str) -> Result<Blk, FsError> {
    let c = tx.c;
    let at = dir_block_at(c, ext, fo).ok_or_else(|| {
        c.corrupt(
            &place(what, kind, fo),
            "the block is not mapped (or is split across extents)".into(),
        )
    })?;
    let raw = tx.read(at, geo(c).ds)?;
    Ok(Blk { fo, at, raw })
}

/// Clear a block for rebuilding, keeping its v5 log sequence number.
fn clear_keep_lsn(g: &G, raw: &mut [u8], lsn_off: usize) {
    let mut lsn = [0u8; 8];
    if g.v5 {
        lsn.copy_from_slice(&raw[lsn_off..lsn_off + 8]);
    }
    raw.fill(0);
    if g.v5 {
        raw[lsn_off..lsn_off + 8].copy_from_slice(&lsn);
    }
}

/// Write a da (leaf or node) block header: siblings, magic, v5 identity.
#[allow(clippy::too_many_arguments)]
fn da_header(
    c: &Ctx,
    g: &G,
    raw: &mut [u8],
    at: u64,
    owner: u64,
    forw: u32,
    back: u32,
    magic: u16,
) {
    clear_keep_lsn(g, raw, 24);
    put32(raw, 0, forw);
    put32(raw, 4, back);
    raw[8..10].copy_from_slice(&magic.to_be_bytes());
    if g.v5 {
        put64(raw, 16, at >> 9);
        raw[32..48].copy_from_slice(&c.geo.meta_uuid);
        put64(raw, 48, owner);
    }
}

fn seal_da(g: &G, raw: &mut [u8]) {
    if g.v5 {
        crate::csum::update(raw, 12);
    }
}

/// Most blocks on a root-to-leaf path of the hash tree (the kernel's
/// XFS_DA_NODE_MAXDEPTH): node levels 1 to 4 over the leaves.
const MAX_DEPTH: u16 = 5;

/// A block of the hash tree: a leafN block (level 0) or a da node (level
/// 1 and up), its live (hash, address or child block) entries in hash
/// order.
struct Da {
    blk: Blk,
    forw: u32,
    back: u32,
    level: u16,
    ents: Vec<(u32, u32)>,
    /// The last hash on disk, stale leaf entries included (what the
    /// parent node holds for this block), if the block holds any entry.
    last_any: Option<u32>,
    /// Written after the live entries as one stale leaf entry: keeps a
    /// leaf that loses its last live entry (and cannot join a neighbour)
    /// at the hash its parent holds for it, as the kernel does.
    stale_tail: Option<u32>,
}

impl Da {
    /// The last hash the block holds once written.
    fn last(&self) -> u32 {
        self.ents
            .last()
            .map(|e| e.0)
            .or(self.stale_tail)
            .unwrap_or(0)
    }

    fn new(blk: Blk, level: u16, forw: u32, back: u32, ents: Vec<(u32, u32)>) -> Self {
        Da {
            blk,
            forw,
            back,
            level,
            ents,
            last_any: None,
            stale_tail: None,
        }
    }

    fn kind(&self) -> &'static str {
        if self.level == 0 {
            "leafN"
        } else {
            "da node"
        }
    }
}

fn in_leaf_space(g: &G, fo: u64) -> bool {
    fo > g.leaf_fo && fo < g.free_fo && fo % g.fsbs == 0
}

/// Parse and check a hash tree block (either kind, told by its magic).
fn parse_da(c: &Ctx, g: &G, dir: &Inode, blk: Blk, what: &str) -> Result<Da, FsError> {
    let b = &blk.raw;
    let magic = be16(b, 8);
    let (leafn, node) = if g.v5 {
        (LEAFN_MAGIC_V3, NODE_MAGIC_V3)
    } else {
        (LEAFN_MAGIC_V2, NODE_MAGIC_V2)
    };
    let is_leaf = magic == leafn;
    let p = place(what, if is_leaf { "leafN" } else { "da node" }, blk.fo);
    let bad = |d: String| c.corrupt(&p, d);
    if !is_leaf && magic != node {
        return Err(bad(format!(
            "magic {magic:#x} is neither a leafN block's nor a da node's"
        )));
    }
    if g.v5 {
        c.check_v5_header(b, 12, 16, 32, 48, dir.ino, Some(blk.at >> 9))
            .map_err(&bad)?;
    }
    let (forw, back) = (be32(b, 0), be32(b, 4));
    for s in [forw, back] {
        if s != 0 && !in_leaf_space(g, u64::from(s)) {
            return Err(bad(format!("sibling pointer {s} outside the leaf segment")));
        }
    }
    if forw != 0 && forw == back {
        return Err(bad(format!("both sibling pointers name block {forw}")));
    }
    let mut ents = Vec::new();
    if is_leaf {
        let co = if g.v5 { 56 } else { 12 };
        let count = usize::from(be16(b, co));
        let stale = usize::from(be16(b, co + 2));
        if count > g.leaf_max || stale > count {
            return Err(bad(format!(
                "{count} entries ({stale} stale) in a block of {}",
                g.leaf_max
            )));
        }
        let mut prev = 0u32;
        for i in 0..count {
            let (h, a) = (be32(b, g.lh + i * 8), be32(b, g.lh + i * 8 + 4));
            if h < prev {
                return Err(bad(format!("entry {i} is out of hash order")));
            }
            prev = h;
            if a != 0 {
                ents.push((h, a));
            }
        }
        if ents.len() != count - stale {
            return Err(bad("the stale count does not match the entries".into()));
        }
        let last_any = (count > 0).then_some(prev);
        return Ok(Da {
            blk,
            forw,
            back,
            level: 0,
            ents,
            last_any,
            stale_tail: None,
        });
    }
    let co = g.nh - if g.v5 { 8 } else { 4 };
    let count = usize::from(be16(b, co));
    let level = be16(b, co + 2);
    if level == 0 || level >= MAX_DEPTH {
        return Err(bad(format!(
            "level {level} (a directory's hash tree has node levels 1 to {})",
            MAX_DEPTH - 1
        )));
    }
    if count == 0 || count > g.node_max {
        return Err(bad(format!("{count} entries in a node of {}", g.node_max)));
    }
    let mut prev = 0u32;
    for i in 0..count {
        let (h, before) = (be32(b, g.nh + i * 8), be32(b, g.nh + i * 8 + 4));
        if h < prev || !in_leaf_space(g, u64::from(before)) {
            return Err(bad(format!(
                "entry {i} (hash {h:#x}, block {before}) is out of order or outside the leaf segment"
            )));
        }
        prev = h;
        ents.push((h, before));
    }
    let mut kids: Vec<u32> = ents.iter().map(|e| e.1).collect();
    kids.sort_unstable();
    if let Some(w) = kids.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("block {} is named twice", w[0])));
    }
    Ok(Da {
        blk,
        forw,
        back,
        level,
        ents,
        last_any: Some(prev),
        stale_tail: None,
    })
}

fn read_da(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    fo: u64,
    what: &str,
) -> Result<Da, FsError> {
    let blk = read_blk(tx, ext, fo, "hash tree", what)?;
    parse_da(tx.c, g, dir, blk, what)
}

/// Write a hash tree block whole: header, live entries (and the stale
/// tail entry of a leaf), v5 seal.
fn write_da(tx: &mut Tx, g: &G, dir: &Inode, d: &mut Da) -> Result<(), FsError> {
    let c = tx.c;
    let magic = match (d.level, g.v5) {
        (0, true) => LEAFN_MAGIC_V3,
        (0, false) => LEAFN_MAGIC_V2,
        (_, true) => NODE_MAGIC_V3,
        (_, false) => NODE_MAGIC_V2,
    };
    let raw = &mut d.blk.raw;
    da_header(c, g, raw, d.blk.at, dir.ino, d.forw, d.back, magic);
    let mut ents = d.ents.clone();
    let mut stale = 0u16;
    if d.level == 0 && ents.is_empty() {
        if let Some(h) = d.stale_tail {
            ents.push((h, 0));
            stale = 1;
        }
    }
    let count = ents.len() as u16;
    if d.level == 0 {
        let co = if g.v5 { 56 } else { 12 };
        raw[co..co + 2].copy_from_slice(&count.to_be_bytes());
        raw[co + 2..co + 4].copy_from_slice(&stale.to_be_bytes());
    } else {
        let co = g.nh - if g.v5 { 8 } else { 4 };
        raw[co..co + 2].copy_from_slice(&count.to_be_bytes());
        raw[co + 2..co + 4].copy_from_slice(&d.level.to_be_bytes());
    }
    for (i, (h, a)) in ents.iter().enumerate() {
        put32(raw, g.lh + i * 8, *h);
        put32(raw, g.lh + i * 8 + 4, *a);
    }
    seal_da(g, raw);
    tx.write(d.blk.at, raw.clone())
}

/// Point the sibling pointer (`back` or forward) of the hash tree block
/// at `fo`, a block of `level` that must point at `was`, at `now`; its
/// entries stay exactly as they are on disk (stale ones included), so the
/// hash its parent holds for it does not change.
#[allow(clippy::too_many_arguments)]
fn repoint(
    tx: &mut Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    fo: u32,
    level: u16,
    back: bool,
    was: u64,
    now: u32,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let mut d = read_da(tx, g, dir, ext, u64::from(fo), what)?;
    let cur = if back { d.back } else { d.forw };
    if d.level != level || u64::from(cur) != was {
        return Err(c.corrupt(
            &place(what, d.kind(), d.blk.fo),
            format!(
                "level {} and sibling pointer {cur}, not level {level} pointing at its neighbour {was}",
                d.level
            ),
        ));
    }
    put32(&mut d.blk.raw, if back { 4 } else { 0 }, now);
    seal_da(g, &mut d.blk.raw);
    tx.write(d.blk.at, d.blk.raw)
}

/// A child must sit one level below its node, end at the hash the node
/// holds for it, and have the node's neighbouring entries as siblings
/// (at the node's edges: a sibling exactly when the node has one).
fn check_child(c: &Ctx, n: &Da, i: usize, child: &Da, what: &str) -> Result<(), FsError> {
    let want_prev = if i > 0 {
        Some(n.ents[i - 1].1)
    } else if n.back == 0 {
        Some(0)
    } else {
        None
    };
    let want_next = match n.ents.get(i + 1) {
        Some(e) => Some(e.1),
        None if n.forw == 0 => Some(0),
        None => None,
    };
    let sib_ok = |have: u32, want: Option<u32>| match want {
        Some(w) => have == w,
        None => have != 0,
    };
    if child.level + 1 != n.level
        || child.last_any != Some(n.ents[i].0)
        || !sib_ok(child.back, want_prev)
        || !sib_ok(child.forw, want_next)
    {
        return Err(c.corrupt(
            &place(what, child.kind(), child.blk.fo),
            format!(
                "the block (level {}, last hash {:#x}, siblings {}/{}) does not match its entry {i} in the level {} node at file block {} (hash {:#x})",
                child.level,
                child.last_any.unwrap_or(0),
                child.back,
                child.forw,
                n.level,
                n.blk.fo,
                n.ents[i].0
            ),
        ));
    }
    Ok(())
}

/// The root of the hash tree, at the leaf segment's first block.
fn read_root(tx: &Tx, g: &G, dir: &Inode, ext: &[Extent], what: &str) -> Result<Da, FsError> {
    let r = read_da(tx, g, dir, ext, g.leaf_fo, what)?;
    if r.forw != 0 || r.back != 0 {
        return Err(tx.c.corrupt(
            &place(what, r.kind(), g.leaf_fo),
            "the hash tree root has siblings".into(),
        ));
    }
    Ok(r)
}

/// A root-to-leaf path: each node with the index of the child taken, and
/// the leaf (the root itself when the tree is one leaf).
struct Path {
    nodes: Vec<(Da, usize)>,
    leaf: Da,
}

/// Go down from `top` (node `nodes` holds the path above it) taking, at
/// each node, child `first(node)`, every block checked against its
/// parent.
#[allow(clippy::too_many_arguments)]
fn down(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    mut nodes: Vec<(Da, usize)>,
    mut top: Da,
    first: impl Fn(&Da) -> usize,
    what: &str,
) -> Result<Path, FsError> {
    loop {
        if top.level == 0 {
            return Ok(Path { nodes, leaf: top });
        }
        let i = first(&top).min(top.ents.len() - 1);
        let child = read_da(tx, g, dir, ext, u64::from(top.ents[i].1), what)?;
        check_child(tx.c, &top, i, &child, what)?;
        nodes.push((top, i));
        top = child;
    }
}

/// The path to the leaf where hash `h` is (or goes): at each node the
/// first child whose hash reaches `h`, else the last.
fn descend(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    h: u32,
    what: &str,
) -> Result<Path, FsError> {
    let root = read_root(tx, g, dir, ext, what)?;
    down(
        tx,
        g,
        dir,
        ext,
        Vec::new(),
        root,
        |n| {
            n.ents
                .iter()
                .position(|e| e.0 >= h)
                .unwrap_or(n.ents.len() - 1)
        },
        what,
    )
}

/// Move the path to the next leaf to the right; false at the last leaf.
fn shift_right(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    p: Path,
    what: &str,
) -> Result<Option<Path>, FsError> {
    let mut nodes = p.nodes;
    let Some(k) = nodes.iter().rposition(|(n, i)| i + 1 < n.ents.len()) else {
        return Ok(None);
    };
    nodes.truncate(k + 1);
    let Some((n, i)) = nodes.pop() else {
        return Ok(None);
    };
    // Take child i + 1 of node k, then the leftmost children below it.
    let i = i + 1;
    let child = read_da(tx, g, dir, ext, u64::from(n.ents[i].1), what)?;
    check_child(tx.c, &n, i, &child, what)?;
    nodes.push((n, i));
    down(tx, g, dir, ext, nodes, child, |_| 0, what).map(Some)
}

/// A new, still unwritten hash tree block at the first unmapped block of
/// the leaf segment.
fn new_da_blk(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    what: &str,
) -> Result<Blk, FsError> {
    let c = tx.c;
    let fo = first_unmapped(g, ext, g.leaf_fo + g.fsbs, g.free_fo).ok_or_else(|| {
        refuse(
            c,
            what,
            "the directory's leaf segment has no unmapped block left".into(),
        )
    })?;
    let at = grow(tx, g, dir, ext, fo, what)?;
    Ok(Blk {
        fo,
        at,
        raw: vec![0u8; g.ds],
    })
}

/// The freeindex blocks: the best free length of every data block. Block
/// k of the free segment covers data blocks from k times `free_max` on;
/// a block whose range holds no data block is not mapped.
struct Free {
    /// The mapped freeindex blocks, by index in the free segment.
    blks: Vec<(usize, Blk)>,
    bests: Vec<u16>,
    /// Freeindex blocks whose range changed.
    dirty: Vec<usize>,
}

impl Free {
    fn set(&mut self, db: usize, v: u16, g: &G) {
        if self.bests.len() <= db {
            self.bests.resize(db + 1, NULL_DATAOFF);
        }
        self.bests[db] = v;
        let k = db / g.free_max;
        if !self.dirty.contains(&k) {
            self.dirty.push(k);
        }
    }
}

fn read_free(tx: &Tx, g: &G, dir: &Inode, ext: &[Extent], what: &str) -> Result<Free, FsError> {
    let c = tx.c;
    let mut f = Free {
        blks: Vec::new(),
        bests: Vec::new(),
        dirty: Vec::new(),
    };
    // Every mapped directory block of the free segment, in order.
    let mut fos: Vec<u64> = Vec::new();
    for e in ext.iter().filter(|e| e.off + e.len > g.free_fo) {
        let from = e.off.max(g.free_fo);
        let mut fo = (from - g.free_fo).div_ceil(g.fsbs) * g.fsbs + g.free_fo;
        while fo < e.off + e.len {
            fos.push(fo);
            if fos.len() > (g.leaf_fo / g.fsbs) as usize / g.free_max + 1 {
                return Err(c.corrupt(
                    &place(what, "freeindex", fo),
                    "more freeindex blocks than the data segment needs".into(),
                ));
            }
            fo += g.fsbs;
        }
    }
    fos.sort_unstable();
    fos.dedup();
    for fo in fos {
        let k = ((fo - g.free_fo) / g.fsbs) as usize;
        let blk = read_blk(tx, ext, fo, "freeindex", what)?;
        let p = place(what, "freeindex", fo);
        let bad = |d: String| c.corrupt(&p, d);
        let b = &blk.raw;
        let want = if g.v5 { FREE_MAGIC_V3 } else { FREE_MAGIC_V2 };
        if be32(b, 0) != want {
            return Err(bad(format!(
                "magic {:#x} is not a freeindex block's",
                be32(b, 0)
            )));
        }
        if g.v5 {
            c.check_v5_header(b, 4, 8, 24, 40, dir.ino, Some(blk.at >> 9))
                .map_err(&bad)?;
        }
        let h = if g.v5 { 48 } else { 4 };
        let (firstdb, nvalid, nused) = (
            be32(b, h) as usize,
            be32(b, h + 4) as usize,
            be32(b, h + 8) as usize,
        );
        if Some(firstdb) != k.checked_mul(g.free_max)
            || firstdb as u64 * g.fsbs >= g.leaf_fo
            || nvalid > g.free_max
            || nused > nvalid
        {
            return Err(bad(format!(
                "header: first data block {firstdb}, {nvalid} valid, {nused} used"
            )));
        }
        let bests: Vec<u16> = (0..nvalid).map(|i| be16(b, g.fh + i * 2)).collect();
        if bests.iter().filter(|&&x| x != NULL_DATAOFF).count() != nused {
            return Err(bad(format!("{nused} used does not match the table")));
        }
        if nvalid > 0 {
            f.bests.resize(firstdb, NULL_DATAOFF);
            f.bests.extend_from_slice(&bests);
        }
        f.blks.push((k, blk));
    }
    if !f.blks.iter().any(|(k, _)| *k == 0) {
        return Err(c.corrupt(
            &place(what, "freeindex", g.free_fo),
            "the first freeindex block is not mapped".into(),
        ));
    }
    Ok(f)
}

/// Write the freeindex blocks whose range changed: rebuilt whole, a new
/// one mapped for a range that gained its first data block, one whose
/// range lost its last data block unmapped (never the first).
fn write_free(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    f: &mut Free,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    while f.bests.last() == Some(&NULL_DATAOFF) {
        f.bests.pop();
    }
    let mut dirty = std::mem::take(&mut f.dirty);
    dirty.sort_unstable();
    for k in dirty {
        let from = (k * g.free_max).min(f.bests.len());
        let to = ((k + 1) * g.free_max).min(f.bests.len());
        let mut range = &f.bests[from..to];
        while let [rest @ .., NULL_DATAOFF] = range {
            range = rest;
        }
        let used = range.iter().filter(|&&x| x != NULL_DATAOFF).count();
        let have = f.blks.iter().position(|(kk, _)| *kk == k);
        let fo = g.free_fo + k as u64 * g.fsbs;
        if used == 0 && k > 0 {
            if let Some(i) = have {
                f.blks.remove(i);
                shrink(tx, g, dir, ext, fo, what)?;
            }
            continue;
        }
        let blk = match have {
            Some(i) => &mut f.blks[i].1,
            None => {
                let at = grow(tx, g, dir, ext, fo, what)?;
                f.blks.push((
                    k,
                    Blk {
                        fo,
                        at,
                        raw: vec![0u8; g.ds],
                    },
                ));
                let n = f.blks.len() - 1;
                &mut f.blks[n].1
            }
        };
        let raw = &mut blk.raw;
        clear_keep_lsn(g, raw, 16);
        if g.v5 {
            put32(raw, 0, FREE_MAGIC_V3);
            put64(raw, 8, blk.at >> 9);
            raw[24..40].copy_from_slice(&c.geo.meta_uuid);
            put64(raw, 40, dir.ino);
        } else {
            put32(raw, 0, FREE_MAGIC_V2);
        }
        let h = if g.v5 { 48 } else { 4 };
        put32(raw, h, (k * g.free_max) as u32);
        put32(raw, h + 4, range.len() as u32);
        put32(raw, h + 8, used as u32);
        for (i, v) in range.iter().enumerate() {
            raw[g.fh + i * 2..g.fh + i * 2 + 2].copy_from_slice(&v.to_be_bytes());
        }
        if g.v5 {
            crate::csum::update(raw, 4);
        }
        tx.write(blk.at, raw.clone())?;
    }
    Ok(())
}

/// The first unmapped directory block in `from..to` (file blocks).
fn first_unmapped(g: &G, ext: &[Extent], from: u64, to: u64) -> Option<u64> {
    let mut fo = from;
    while fo + g.fsbs <= to {
        match ext
            .iter()
            .find(|e| e.off < fo + g.fsbs && fo < e.off + e.len)
        {
            None => return Some(fo),
            Some(e) => fo = (e.off + e.len).div_ceil(g.fsbs) * g.fsbs,
        }
    }
    None
}

/// Allocate and map one directory block at file block `fo`; its byte
/// offset. The block map must still fit in the inode (else refused).
///
/// The block continues the extent before `fo` when the blocks after it
/// are free. Otherwise it goes where the directory can keep growing in
/// place: at the end of a run of free blocks taken from the smallest free
/// extent that holds the run, the run's front given back. Allocations of
/// others (inode chunks, file data: best fit too) then use the smaller
/// front piece first, and the blocks after the directory's stay free, so
/// its block map stays within the few extents the inode holds.
fn grow(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    fo: u64,
    what: &str,
) -> Result<u64, FsError> {
    let c = tx.c;
    let pref = agno_of(c, dir.ino);
    let near = ext
        .iter()
        .find(|e| e.off + e.len == fo && !e.unwritten)
        .map(|e| e.fsb + e.len);
    let mut fsb = None;
    if let Some(n) = near {
        let got = crate::alloc::alloc_raw(tx, pref, g.fsbs, g.fsbs, Some(n), 1)?;
        let f = got
            .first()
            .map(|x| x.fsb)
            .ok_or_else(|| c.corrupt(what, "the allocator returned nothing".into()))?;
        if f == n {
            fsb = Some(f);
        } else {
            crate::alloc::free_raw_extent(tx, f, g.fsbs)?;
        }
    }
    let fsb = match fsb {
        Some(f) => f,
        None => roomy(tx, g, pref, what)?,
    };
    crate::rmap::map(tx, fsb, g.fsbs, crate::alloc::Owner::data(dir.ino, fo))?;
    let at = c
        .geo
        .fsb_to_byte(fsb, g.fsbs)
        .ok_or_else(|| c.corrupt(what, "allocated block outside the filesystem".into()))?;
    ext.push(Extent {
        off: fo,
        fsb,
        len: g.fsbs,
        unwritten: false,
    });
    ext.sort_by_key(|e| e.off);
    set_extents(tx, dir, ext, what)?;
    let nb = dir
        .nblocks
        .checked_add(g.fsbs)
        .ok_or_else(|| c.corrupt(what, format!("block count {} overflows", dir.nblocks)))?;
    set_nblocks(dir, nb);
    Ok(at)
}

/// A directory block at the end of a run of free blocks (see [`grow`]):
/// the run is at most 8 MiB, half the AG's longest free extent and half
/// its free blocks; a plain best-fit block when that is too small.
fn roomy(tx: &mut Tx, g: &G, pref: u32, what: &str) -> Result<u64, FsError> {
    let c = tx.c;
    let geo = &c.geo;
    let first = |got: Vec<crate::alloc::Got>| {
        got.first()
            .copied()
            .ok_or_else(|| c.corrupt(what, "the allocator returned nothing".into()))
    };
    // AGF of the preferred AG: free blocks (offset 52), longest (56).
    let agf_at = geo
        .fsb_to_byte(u64::from(pref) << geo.agblklog, 1)
        .map(|b| b + u64::from(geo.sect_size));
    let run = match agf_at {
        Some(at) => {
            let a = tx.read(at, geo.sect_size as usize)?;
            let free = u64::from(be32(&a, 52));
            let longest = u64::from(be32(&a, 56));
            let res = u64::from(c.ag_len(pref) / 32 + 64);
            let cap = (8u64 << 20) / u64::from(geo.block_size);
            let r = cap.min(longest / 2).min(free.saturating_sub(res) / 2);
            r - r % g.fsbs
        }
        None => 0,
    };
    if run >= 4 * g.fsbs {
        let got = first(crate::alloc::alloc_raw(tx, pref, run, g.fsbs, None, 1)?)?;
        let keep = got.fsb + got.len - g.fsbs;
        if got.len > g.fsbs {
            crate::alloc::free_raw_extent(tx, got.fsb, got.len - g.fsbs)?;
        }
        return Ok(keep);
    }
    Ok(first(crate::alloc::alloc_raw(tx, pref, g.fsbs, g.fsbs, None, 1)?)?.fsb)
}

/// [`grow`] for the other directory forms: map a new directory block at
/// file block `fo` into `ext` (and the inode); its byte offset.
pub(crate) fn grow_dir(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    fo: u64,
    what: &str,
) -> Result<u64, FsError> {
    let g = geo(tx.c);
    grow(tx, &g, dir, ext, fo, what)
}

/// Unmap directory block `fo` and free its blocks.
fn shrink(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    fo: u64,
    what: &str,
) -> Result<(), FsError> {
    *ext = crate::dirw::unmap_dir_block(tx, dir, ext, fo, g.fsbs, what)?;
    Ok(())
}

/// Whether a non-block directory with this block map is in node form
/// (anything mapped past its single leaf block).
pub(crate) fn is_node(c: &Ctx, ext: &[Extent]) -> bool {
    let g = geo(c);
    ext.iter().any(|e| e.off + e.len > g.leaf_fo + g.fsbs)
}

/// Whether a leaf1 block holding `entries` live entries and `bests`
/// best-free values fits in one directory block.
pub(crate) fn leaf1_fits(c: &Ctx, entries: usize, bests: usize) -> bool {
    let g = geo(c);
    g.lh + entries * 8 + 4 + bests * 2 <= g.ds
}

/// Convert a leaf-form directory whose leaf1 block is full into node
/// form: the best-free table moves to a new freeindex block, the leaf1
/// block becomes the (root) leafN block, its stale entries dropped.
pub(crate) fn leaf_to_node(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    l1: Leaf1,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let g = geo(c);
    if l1.bests.len() > g.free_max || l1.leaf.len() > g.leaf_max {
        return Err(c.corrupt(
            &place(what, "leaf1", g.leaf_fo),
            format!(
                "{} entries and {} data blocks do not fit a node-form directory",
                l1.leaf.len(),
                l1.bests.len()
            ),
        ));
    }
    let mut ext = ext.to_vec();
    if first_unmapped(&g, &ext, g.free_fo, g.free_fo + g.fsbs) != Some(g.free_fo) {
        return Err(c.corrupt(
            &place(what, "freeindex", g.free_fo),
            "a leaf-form directory maps the free segment".into(),
        ));
    }
    let mut free = Free {
        blks: Vec::new(),
        bests: Vec::new(),
        dirty: vec![0],
    };
    for (db, v) in l1.bests.iter().enumerate() {
        free.set(db, *v, &g);
    }
    write_free(tx, &g, dir, &mut ext, &mut free, what)?;
    let mut ents = l1.leaf;
    ents.sort_by_key(|e| e.0);
    let blk = Blk {
        fo: g.leaf_fo,
        at: l1.lat,
        raw: l1.lb,
    };
    write_da(tx, &g, dir, &mut Da::new(blk, 0, 0, 0, ents))
}

/// Add `name` to a node-form directory.
pub(crate) fn add_node(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let g = geo(c);
    let l = layout(c);
    let mut ext = ext.to_vec();
    let mut free = read_free(tx, &g, dir, &ext, what)?;
    let h = hashname(name);
    // The hash tree is read and checked down to the name's leaf before
    // anything changes.
    let path = descend(tx, &g, dir, &ext, h, what)?;
    let size = data_entry_size(name.len(), c.geo.ftype);
    let fits = free
        .bests
        .iter()
        .position(|&b| b != NULL_DATAOFF && usize::from(b) >= size);
    let (db, at, b, ents) = match fits {
        Some(db) => {
            let (at, b, ents) = read_data_block(tx, dir, &ext, db, what)?;
            (db, at, b, ents)
        }
        None => {
            let fo = first_unmapped(&g, &ext, 0, g.leaf_fo)
                .ok_or_else(|| refuse(c, what, "the directory's data segment is full".into()))?;
            let db = (fo / g.fsbs) as usize;
            let at = grow(tx, &g, dir, &mut ext, fo, what)?;
            let mut b = vec![0u8; g.ds];
            write_data_header(
                c,
                &mut b,
                if g.v5 { DATA_MAGIC_V3 } else { DATA_MAGIC_V2 },
                at,
                dir.ino,
            );
            let end = (db as u64 + 1) * u64::from(c.geo.dir_size);
            if end > dir.size {
                set_size(dir, end);
            }
            (db, at, b, Vec::new())
        }
    };
    let new = DEnt {
        off: 0,
        ino,
        name: name.to_vec(),
        ftype,
    };
    let (off, best) = place_entry(tx, &l, (db, at, b, ents), new, "freeindex", what)?;
    free.set(db, best, &g);
    let addr = ((db as u64 * g.ds as u64 + off as u64) >> 3) as u32;
    insert_hash(tx, &g, dir, &mut ext, path, h, addr, what)?;
    write_free(tx, &g, dir, &mut ext, &mut free, what)
}

/// Insert (hash, address) into the leaf `path` ends at, splitting a full
/// leaf and, upwards, full nodes (a full root moves into two new blocks
/// and becomes a node one level higher over them).
#[allow(clippy::too_many_arguments)]
fn insert_hash(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    path: Path,
    h: u32,
    addr: u32,
    what: &str,
) -> Result<(), FsError> {
    let Path { mut nodes, leaf } = path;
    let mut cur = leaf;
    let at = cur.ents.partition_point(|e| e.0 <= h);
    cur.ents.insert(at, (h, addr));
    // `cur` is the changed block; `carry` a new right sibling of it that
    // its parent must take in after it.
    let mut carry: Option<(u32, u32)> = None;
    loop {
        if cur.ents.len() > g.leaf_max {
            if nodes.is_empty() {
                return split_root(tx, g, dir, ext, cur, what);
            }
            let blk = new_da_blk(tx, g, dir, ext, what)?;
            let upper = cur.ents.split_off(cur.ents.len() / 2);
            let mut right = Da::new(blk, cur.level, cur.forw, cur.blk.fo as u32, upper);
            if cur.forw != 0 {
                repoint(
                    tx,
                    g,
                    dir,
                    ext,
                    cur.forw,
                    cur.level,
                    true,
                    cur.blk.fo,
                    right.blk.fo as u32,
                    what,
                )?;
            }
            cur.forw = right.blk.fo as u32;
            write_da(tx, g, dir, &mut right)?;
            carry = Some((right.last(), right.blk.fo as u32));
        }
        write_da(tx, g, dir, &mut cur)?;
        let Some((mut n, i)) = nodes.pop() else {
            return Ok(());
        };
        let last = cur.last();
        if n.ents[i].0 == last && carry.is_none() {
            // Nothing above changes.
            return Ok(());
        }
        n.ents[i].0 = last;
        if let Some(e) = carry.take() {
            n.ents.insert(i + 1, e);
        }
        cur = n;
    }
}

/// The root block overflowed: its entries go to two new blocks of its
/// level, and the root becomes a node one level up over them.
fn split_root(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    mut root: Da,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    if root.level + 2 > MAX_DEPTH {
        return Err(refuse(
            c,
            what,
            format!(
                "the directory's hash tree is {MAX_DEPTH} blocks deep, the most the kernel reads"
            ),
        ));
    }
    let ablk = new_da_blk(tx, g, dir, ext, what)?;
    let bblk = new_da_blk(tx, g, dir, ext, what)?;
    let upper = root.ents.split_off(root.ents.len() / 2);
    let lower = std::mem::take(&mut root.ents);
    let (fa, fb) = (ablk.fo as u32, bblk.fo as u32);
    let mut a = Da::new(ablk, root.level, fb, 0, lower);
    let mut b = Da::new(bblk, root.level, 0, fa, upper);
    write_da(tx, g, dir, &mut a)?;
    write_da(tx, g, dir, &mut b)?;
    let mut top = Da::new(
        root.blk,
        root.level + 1,
        0,
        0,
        vec![(a.last(), fa), (b.last(), fb)],
    );
    write_da(tx, g, dir, &mut top)
}

/// A name's data block: its number, byte offset, bytes and entries, and
/// the entry's index.
struct Found {
    db: usize,
    at: u64,
    b: Vec<u8>,
    ents: Vec<DEnt>,
    k: usize,
}

/// Resolve a leaf entry's address to its data block entry if it is
/// `name`.
fn probe(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    addr: u32,
    name: &[u8],
    what: &str,
) -> Result<Option<Found>, FsError> {
    let c = tx.c;
    let byte = u64::from(addr) * 8;
    let db = (byte / g.ds as u64) as usize;
    let off = (byte % g.ds as u64) as usize;
    if db as u64 * g.fsbs >= g.leaf_fo {
        return Err(c.corrupt(
            what,
            format!("directory leaf address {addr:#x} is outside the data segment"),
        ));
    }
    let (at, b, ents) = read_data_block(tx, dir, ext, db, what)?;
    let Some(k) = ents.iter().position(|e| e.off == off) else {
        return Err(c.corrupt(
            &format!("{what} (directory block {db})"),
            format!("a leaf entry points at offset {off}, where no entry starts"),
        ));
    };
    if ents[k].name != name {
        return Ok(None);
    }
    Ok(Some(Found { db, at, b, ents, k }))
}

/// The leaf entry of `name` in a node-form directory: from the leaf the
/// name's hash leads to, on to the next leaves while they end in equal
/// hashes. The path to the leaf, the entry's index there and its data
/// block; None when the name is not there.
fn find(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    name: &[u8],
    what: &str,
) -> Result<Option<(Path, usize, Found)>, FsError> {
    let h = hashname(name);
    let mut path = descend(tx, g, dir, ext, h, what)?;
    loop {
        let lf = &path.leaf;
        let start = lf.ents.partition_point(|e| e.0 < h);
        for idx in start..lf.ents.len() {
            if lf.ents[idx].0 != h {
                break;
            }
            if let Some(f) = probe(tx, g, dir, ext, lf.ents[idx].1, name, what)? {
                return Ok(Some((path, idx, f)));
            }
        }
        if lf.last_any != Some(h) {
            return Ok(None);
        }
        match shift_right(tx, g, dir, ext, path, what)? {
            Some(p) => path = p,
            None => return Ok(None),
        }
    }
}

/// Look `name` up in a node-form directory through its hash tree, every
/// block on the way checked.
pub(crate) fn lookup_node(
    c: &Ctx,
    dir: &Inode,
    ext: &[Extent],
    name: &[u8],
    what: &str,
) -> Result<Option<crate::dir::Entry>, FsError> {
    let tx = Tx::new(c);
    let g = geo(c);
    Ok(find(&tx, &g, dir, ext, name, what)?.map(|(_, _, f)| {
        let e = &f.ents[f.k];
        crate::dir::Entry {
            name: e.name.clone(),
            ino: e.ino,
            ftype: c.geo.ftype.then_some(e.ftype),
        }
    }))
}

/// Remove or retarget `name` in a node-form directory.
pub(crate) fn change_node(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    name: &[u8],
    change: Change,
    what: &str,
) -> Result<Option<u64>, FsError> {
    let c = tx.c;
    let g = geo(c);
    let l = layout(c);
    let mut ext = ext.to_vec();
    let mut free = read_free(tx, &g, dir, &ext, what)?;
    let Some((path, idx, found)) = find(tx, &g, dir, &ext, name, what)? else {
        return Ok(None);
    };
    let Found {
        db,
        at,
        mut b,
        mut ents,
        k,
    } = found;
    let old = ents[k].ino;
    if let Change::Retarget { ino, ftype } = change {
        ents[k].ino = ino;
        ents[k].ftype = ftype;
        build_area(c, &mut b, &l, g.ds, &ents);
        seal_data(c, &mut b);
        tx.write(at, b)?;
        return Ok(Some(old));
    }
    ents.remove(k);
    if db >= free.bests.len() || free.bests[db] == NULL_DATAOFF {
        return Err(c.corrupt(
            &place(what, "freeindex", g.free_fo),
            format!("no entry for data block {db}"),
        ));
    }
    if ents.is_empty() {
        // An emptied data block is freed; the table and the directory
        // size shrink past trailing holes.
        shrink(tx, &g, dir, &mut ext, db as u64 * g.fsbs, what)?;
        free.set(db, NULL_DATAOFF, &g);
        while free.bests.last() == Some(&NULL_DATAOFF) {
            free.bests.pop();
        }
        set_size(dir, free.bests.len() as u64 * u64::from(c.geo.dir_size));
    } else {
        let best = build_area(c, &mut b, &l, g.ds, &ents);
        seal_data(c, &mut b);
        tx.write(at, b)?;
        free.set(db, best, &g);
    }
    remove_hash(tx, &g, dir, &mut ext, path, idx, what)?;
    write_free(tx, &g, dir, &mut ext, &mut free, what)?;
    Ok(Some(old))
}

/// Whether a block holding `n` entries is at most half full (the kernel
/// then tries to join it with a neighbour).
fn too_small(g: &G, n: usize) -> bool {
    n * 8 + g.lh <= g.ds / 2
}

/// Remove leaf entry `idx` of the leaf `path` ends at. Upwards, a block
/// at most half full joins a neighbour under the same parent when the two
/// fit in three quarters of a block (the kernel's rule; an empty leaf
/// always goes), the parent losing an entry; hashes in the parents follow
/// the last hash below; a root node left with one child takes that
/// child's place (the kernel's root join), repeatedly.
fn remove_hash(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    path: Path,
    idx: usize,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let Path { mut nodes, leaf } = path;
    let mut cur = leaf;
    cur.ents.remove(idx);
    let mut shrank = true;
    while let Some((mut n, i)) = nodes.pop() {
        let mut pair = None;
        if shrank && n.ents.len() > 1 && too_small(g, cur.ents.len()) {
            let j = if i + 1 < n.ents.len() { i + 1 } else { i - 1 };
            let nb = read_da(tx, g, dir, ext, u64::from(n.ents[j].1), what)?;
            check_child(c, &n, j, &nb, what)?;
            let both = cur.ents.len() + nb.ents.len();
            if (cur.level == 0 && cur.ents.is_empty()) || both * 8 + g.lh <= g.ds * 3 / 4 {
                pair = Some((j, nb));
            }
        }
        let joined = pair.is_some();
        match pair {
            Some((j, nb)) => {
                let (li, mut left, right) = if j > i { (i, cur, nb) } else { (j, nb, cur) };
                // The pair's last hash, for a leaf left with none live.
                let tail = n.ents[li + 1].0;
                left.ents.extend_from_slice(&right.ents);
                left.forw = right.forw;
                if right.forw != 0 {
                    repoint(
                        tx,
                        g,
                        dir,
                        ext,
                        right.forw,
                        right.level,
                        true,
                        right.blk.fo,
                        left.blk.fo as u32,
                        what,
                    )?;
                }
                shrink(tx, g, dir, ext, right.blk.fo, what)?;
                n.ents.remove(li + 1);
                if left.ents.is_empty() {
                    left.stale_tail = Some(tail);
                }
                write_da(tx, g, dir, &mut left)?;
                n.ents[li].0 = left.last();
            }
            None => {
                if cur.ents.is_empty() {
                    // A leaf with no live entry left keeps one stale entry
                    // at the hash its parent holds for it.
                    cur.stale_tail = Some(n.ents[i].0);
                }
                write_da(tx, g, dir, &mut cur)?;
                n.ents[i].0 = cur.last();
            }
        }
        shrank = joined;
        cur = n;
    }
    // `cur` is the root now.
    while cur.level > 0 && cur.ents.len() == 1 {
        let only = read_da(tx, g, dir, ext, u64::from(cur.ents[0].1), what)?;
        check_child(c, &cur, 0, &only, what)?;
        shrink(tx, g, dir, ext, only.blk.fo, what)?;
        cur = Da::new(cur.blk, only.level, 0, 0, only.ents);
    }
    write_da(tx, g, dir, &mut cur)
}
