//! Node-form directories: data blocks below the 32 GiB leaf segment, a
//! hash tree in the leaf segment (its root at the segment's first block:
//! one leafN block, or a da node of level 1 over leafN blocks chained by
//! sibling pointers) and one freeindex block at the 64 GiB free segment
//! holding every data block's longest free region.
//!
//! Every block read is verified (magic, v5 CRC/owner/blkno/UUID, counts,
//! hash order, the node's hash for each leaf, sibling links, freeindex
//! counts) before anything is changed; every block changed is rebuilt
//! whole (stale leaf entries compacted away, the log sequence number
//! kept) and re-sealed. Adding splits a full leaf in two (a full root
//! leaf becomes a node over two leaves); removing frees an emptied data
//! block and an emptied leaf. Refused: a second node level (the root node
//! full), a second freeindex block, and a block map that would need a
//! btree fork.

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

/// A leafN block: its live (hash, address) entries in hash order.
struct LeafN {
    blk: Blk,
    forw: u32,
    back: u32,
    ents: Vec<(u32, u32)>,
    /// The last hash on disk, stale entries included (what the node's
    /// hash for this leaf is), if the block holds any entry.
    last_any: Option<u32>,
}

impl LeafN {
    fn last(&self) -> u32 {
        self.ents.last().map_or(0, |e| e.0)
    }
}

fn in_leaf_space(g: &G, fo: u64) -> bool {
    fo > g.leaf_fo && fo < g.free_fo && fo % g.fsbs == 0
}

fn parse_leafn(c: &Ctx, g: &G, dir: &Inode, blk: Blk, what: &str) -> Result<LeafN, FsError> {
    let p = place(what, "leafN", blk.fo);
    let bad = |d: String| c.corrupt(&p, d);
    let b = &blk.raw;
    let want = if g.v5 { LEAFN_MAGIC_V3 } else { LEAFN_MAGIC_V2 };
    if be16(b, 8) != want {
        return Err(bad(format!(
            "magic {:#x} is not a leafN block's",
            be16(b, 8)
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
    let co = if g.v5 { 56 } else { 12 };
    let count = usize::from(be16(b, co));
    let stale = usize::from(be16(b, co + 2));
    if count > g.leaf_max || stale > count {
        return Err(bad(format!(
            "{count} entries ({stale} stale) in a block of {}",
            g.leaf_max
        )));
    }
    let mut ents = Vec::with_capacity(count);
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
    Ok(LeafN {
        blk,
        forw,
        back,
        ents,
        last_any,
    })
}

fn read_leafn(
    tx: &Tx,
    g: &G,
    dir: &Inode,
    ext: &[Extent],
    fo: u64,
    what: &str,
) -> Result<LeafN, FsError> {
    let blk = read_blk(tx, ext, fo, "leafN", what)?;
    parse_leafn(tx.c, g, dir, blk, what)
}

fn write_leafn(tx: &mut Tx, g: &G, dir: &Inode, l: &mut LeafN) -> Result<(), FsError> {
    let c = tx.c;
    let magic = if g.v5 { LEAFN_MAGIC_V3 } else { LEAFN_MAGIC_V2 };
    let raw = &mut l.blk.raw;
    da_header(c, g, raw, l.blk.at, dir.ino, l.forw, l.back, magic);
    let co = if g.v5 { 56 } else { 12 };
    raw[co..co + 2].copy_from_slice(&(l.ents.len() as u16).to_be_bytes());
    for (i, (h, a)) in l.ents.iter().enumerate() {
        put32(raw, g.lh + i * 8, *h);
        put32(raw, g.lh + i * 8 + 4, *a);
    }
    seal_da(g, raw);
    tx.write(l.blk.at, raw.clone())
}

/// Rewrite only a leafN block's sibling pointers (`forw`, `back`), its
/// entries left exactly as they are on disk, stale ones included, so its
/// last hash, which the node holds for it, does not change.
fn write_siblings(tx: &mut Tx, g: &G, l: &mut LeafN) -> Result<(), FsError> {
    put32(&mut l.blk.raw, 0, l.forw);
    put32(&mut l.blk.raw, 4, l.back);
    seal_da(g, &mut l.blk.raw);
    tx.write(l.blk.at, l.blk.raw.clone())
}

/// The root da node (level 1): (hash, leaf file block) per child.
struct Node {
    blk: Blk,
    ents: Vec<(u32, u32)>,
}

fn write_node(tx: &mut Tx, g: &G, dir: &Inode, n: &mut Node) -> Result<(), FsError> {
    let c = tx.c;
    let magic = if g.v5 { NODE_MAGIC_V3 } else { NODE_MAGIC_V2 };
    let raw = &mut n.blk.raw;
    da_header(c, g, raw, n.blk.at, dir.ino, 0, 0, magic);
    let co = g.nh - if g.v5 { 8 } else { 4 };
    raw[co..co + 2].copy_from_slice(&(n.ents.len() as u16).to_be_bytes());
    raw[co + 2..co + 4].copy_from_slice(&1u16.to_be_bytes());
    for (i, (h, b)) in n.ents.iter().enumerate() {
        put32(raw, g.nh + i * 8, *h);
        put32(raw, g.nh + i * 8 + 4, *b);
    }
    seal_da(g, raw);
    tx.write(n.blk.at, raw.clone())
}

enum Root {
    Leaf(LeafN),
    Node(Node),
}

fn read_root(tx: &Tx, g: &G, dir: &Inode, ext: &[Extent], what: &str) -> Result<Root, FsError> {
    let c = tx.c;
    let blk = read_blk(tx, ext, g.leaf_fo, "hash tree root", what)?;
    let magic = be16(&blk.raw, 8);
    let leafn = if g.v5 { LEAFN_MAGIC_V3 } else { LEAFN_MAGIC_V2 };
    let node = if g.v5 { NODE_MAGIC_V3 } else { NODE_MAGIC_V2 };
    if magic == leafn {
        let l = parse_leafn(c, g, dir, blk, what)?;
        if l.forw != 0 || l.back != 0 {
            return Err(c.corrupt(
                &place(what, "leafN", g.leaf_fo),
                "the root leaf has siblings".into(),
            ));
        }
        return Ok(Root::Leaf(l));
    }
    let p = place(what, "da node", g.leaf_fo);
    let bad = |d: String| c.corrupt(&p, d);
    if magic != node {
        return Err(bad(format!(
            "magic {magic:#x} is neither a node's nor a leafN's"
        )));
    }
    let b = &blk.raw;
    if g.v5 {
        c.check_v5_header(b, 12, 16, 32, 48, dir.ino, Some(blk.at >> 9))
            .map_err(&bad)?;
    }
    if be32(b, 0) != 0 || be32(b, 4) != 0 {
        return Err(bad("the root node has siblings".into()));
    }
    let co = g.nh - if g.v5 { 8 } else { 4 };
    let count = usize::from(be16(b, co));
    let level = be16(b, co + 2);
    if level != 1 {
        return Err(refuse(
            c,
            what,
            format!("the directory's hash tree has {level} node levels (writing more than one is not implemented)"),
        ));
    }
    if count == 0 || count > g.node_max {
        return Err(bad(format!("{count} entries in a node of {}", g.node_max)));
    }
    let mut ents = Vec::with_capacity(count);
    let mut prev = 0u32;
    for i in 0..count {
        let (h, before) = (be32(b, g.nh + i * 8), be32(b, g.nh + i * 8 + 4));
        if h < prev || !in_leaf_space(g, u64::from(before)) {
            return Err(bad(format!(
                "entry {i} (hash {h:#x}, block {before}) is out of order or outside the leaf segment"
            )));
        }
        prev = h;
        if ents.iter().any(|e: &(u32, u32)| e.1 == before) {
            return Err(bad(format!(
                "entry {i} names leaf block {before} a second time"
            )));
        }
        ents.push((h, before));
    }
    Ok(Root::Node(Node { blk, ents }))
}

/// The freeindex block: the best free length of each data block.
struct Free {
    blk: Blk,
    bests: Vec<u16>,
}

fn read_free(tx: &Tx, g: &G, dir: &Inode, ext: &[Extent], what: &str) -> Result<Free, FsError> {
    let c = tx.c;
    if ext.iter().any(|e| e.off + e.len > g.free_fo + g.fsbs) {
        return Err(refuse(
            c,
            what,
            "the directory has more than one freeindex block (writing those is not implemented)"
                .into(),
        ));
    }
    let blk = read_blk(tx, ext, g.free_fo, "freeindex", what)?;
    let p = place(what, "freeindex", g.free_fo);
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
    let (firstdb, nvalid, nused) = (be32(b, h), be32(b, h + 4) as usize, be32(b, h + 8) as usize);
    if firstdb != 0 || nvalid > g.free_max || nused > nvalid {
        return Err(bad(format!(
            "header: first data block {firstdb}, {nvalid} valid, {nused} used"
        )));
    }
    let bests: Vec<u16> = (0..nvalid).map(|i| be16(b, g.fh + i * 2)).collect();
    if bests.iter().filter(|&&x| x != NULL_DATAOFF).count() != nused {
        return Err(bad(format!("{nused} used does not match the table")));
    }
    Ok(Free { blk, bests })
}

fn write_free(tx: &mut Tx, g: &G, dir: &Inode, f: &mut Free) -> Result<(), FsError> {
    let c = tx.c;
    while f.bests.last() == Some(&NULL_DATAOFF) {
        f.bests.pop();
    }
    let raw = &mut f.blk.raw;
    clear_keep_lsn(g, raw, 16);
    if g.v5 {
        put32(raw, 0, FREE_MAGIC_V3);
        put64(raw, 8, f.blk.at >> 9);
        raw[24..40].copy_from_slice(&c.geo.meta_uuid);
        put64(raw, 40, dir.ino);
    } else {
        put32(raw, 0, FREE_MAGIC_V2);
    }
    let h = if g.v5 { 48 } else { 4 };
    let used = f.bests.iter().filter(|&&x| x != NULL_DATAOFF).count();
    put32(raw, h, 0);
    put32(raw, h + 4, f.bests.len() as u32);
    put32(raw, h + 8, used as u32);
    for (i, v) in f.bests.iter().enumerate() {
        raw[g.fh + i * 2..g.fh + i * 2 + 2].copy_from_slice(&v.to_be_bytes());
    }
    if g.v5 {
        crate::csum::update(raw, 4);
    }
    tx.write(f.blk.at, raw.clone())
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
    let fat = grow(tx, &g, dir, &mut ext, g.free_fo, what)?;
    let mut free = Free {
        blk: Blk {
            fo: g.free_fo,
            at: fat,
            raw: vec![0u8; g.ds],
        },
        bests: l1.bests,
    };
    write_free(tx, &g, dir, &mut free)?;
    let mut ents = l1.leaf;
    ents.sort_by_key(|e| e.0);
    let mut leaf = LeafN {
        blk: Blk {
            fo: g.leaf_fo,
            at: l1.lat,
            raw: l1.lb,
        },
        forw: 0,
        back: 0,
        ents,
        last_any: None,
    };
    write_leafn(tx, &g, dir, &mut leaf)
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
    let root = read_root(tx, &g, dir, &ext, what)?;
    let h = hashname(name);
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
            if db >= g.free_max {
                return Err(refuse(
                    c,
                    what,
                    format!(
                        "data block {db} would need a second freeindex block (not implemented)"
                    ),
                ));
            }
            let at = grow(tx, &g, dir, &mut ext, fo, what)?;
            let mut b = vec![0u8; g.ds];
            write_data_header(
                c,
                &mut b,
                if g.v5 { DATA_MAGIC_V3 } else { DATA_MAGIC_V2 },
                at,
                dir.ino,
            );
            if free.bests.len() <= db {
                free.bests.resize(db + 1, NULL_DATAOFF);
            }
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
    free.bests[db] = best;
    let addr = ((db as u64 * g.ds as u64 + off as u64) >> 3) as u32;
    insert_hash(tx, &g, dir, &mut ext, root, h, addr, what)?;
    write_free(tx, &g, dir, &mut free)
}

/// Insert (hash, address) into the hash tree, splitting a full leaf.
#[allow(clippy::too_many_arguments)]
fn insert_hash(
    tx: &mut Tx,
    g: &G,
    dir: &mut Inode,
    ext: &mut Vec<Extent>,
    root: Root,
    h: u32,
    addr: u32,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let no_room = || {
        refuse(
            c,
            what,
            "the directory's leaf segment has no unmapped block left".into(),
        )
    };
    match root {
        Root::Leaf(mut l) => {
            let at = l.ents.partition_point(|e| e.0 <= h);
            l.ents.insert(at, (h, addr));
            if l.ents.len() <= g.leaf_max {
                return write_leafn(tx, g, dir, &mut l);
            }
            // The root splits: its entries go to two new leaves, the root
            // block becomes a node over them.
            let fa = first_unmapped(g, ext, g.leaf_fo + g.fsbs, g.free_fo).ok_or_else(no_room)?;
            let aat = grow(tx, g, dir, ext, fa, what)?;
            let fb = first_unmapped(g, ext, g.leaf_fo + g.fsbs, g.free_fo).ok_or_else(no_room)?;
            let bat = grow(tx, g, dir, ext, fb, what)?;
            let mid = l.ents.len() / 2;
            let upper = l.ents.split_off(mid);
            let mut a = LeafN {
                blk: Blk {
                    fo: fa,
                    at: aat,
                    raw: vec![0u8; g.ds],
                },
                forw: fb as u32,
                back: 0,
                ents: std::mem::take(&mut l.ents),
                last_any: None,
            };
            let mut b = LeafN {
                blk: Blk {
                    fo: fb,
                    at: bat,
                    raw: vec![0u8; g.ds],
                },
                forw: 0,
                back: fa as u32,
                ents: upper,
                last_any: None,
            };
            write_leafn(tx, g, dir, &mut a)?;
            write_leafn(tx, g, dir, &mut b)?;
            let mut n = Node {
                blk: l.blk,
                ents: vec![(a.last(), fa as u32), (b.last(), fb as u32)],
            };
            write_node(tx, g, dir, &mut n)
        }
        Root::Node(mut n) => {
            let i = n
                .ents
                .iter()
                .position(|e| e.0 >= h)
                .unwrap_or(n.ents.len() - 1);
            let cfo = u64::from(n.ents[i].1);
            let mut child = read_leafn(tx, g, dir, ext, cfo, what)?;
            check_child(c, g, &n, i, &child, what)?;
            let at = child.ents.partition_point(|e| e.0 <= h);
            child.ents.insert(at, (h, addr));
            if child.ents.len() <= g.leaf_max {
                write_leafn(tx, g, dir, &mut child)?;
                if n.ents[i].0 != child.last() {
                    n.ents[i].0 = child.last();
                    write_node(tx, g, dir, &mut n)?;
                }
                return Ok(());
            }
            if n.ents.len() >= g.node_max {
                return Err(refuse(
                    c,
                    what,
                    format!(
                        "the directory's hash tree root node is full ({} leaves); adding a second node level is not implemented",
                        n.ents.len()
                    ),
                ));
            }
            let fnew = first_unmapped(g, ext, g.leaf_fo + g.fsbs, g.free_fo).ok_or_else(no_room)?;
            let nat = grow(tx, g, dir, ext, fnew, what)?;
            if child.forw != 0 {
                let mut sib = read_leafn(tx, g, dir, ext, u64::from(child.forw), what)?;
                if u64::from(sib.back) != cfo {
                    return Err(c.corrupt(
                        &place(what, "leafN", sib.blk.fo),
                        format!("back pointer {} is not its left sibling {cfo}", sib.back),
                    ));
                }
                sib.back = fnew as u32;
                write_siblings(tx, g, &mut sib)?;
            }
            let mid = child.ents.len() / 2;
            let upper = child.ents.split_off(mid);
            let mut new = LeafN {
                blk: Blk {
                    fo: fnew,
                    at: nat,
                    raw: vec![0u8; g.ds],
                },
                forw: child.forw,
                back: cfo as u32,
                ents: upper,
                last_any: None,
            };
            child.forw = fnew as u32;
            write_leafn(tx, g, dir, &mut child)?;
            write_leafn(tx, g, dir, &mut new)?;
            n.ents[i].0 = child.last();
            n.ents.insert(i + 1, (new.last(), fnew as u32));
            write_node(tx, g, dir, &mut n)
        }
    }
}

/// The node's hash for child `i` must be the child's last hash, and the
/// child's siblings the node's neighbours.
fn check_child(
    c: &Ctx,
    g: &G,
    n: &Node,
    i: usize,
    child: &LeafN,
    what: &str,
) -> Result<(), FsError> {
    let prev = if i > 0 { n.ents[i - 1].1 } else { 0 };
    let next = n.ents.get(i + 1).map_or(0, |e| e.1);
    if child.last_any != Some(n.ents[i].0) || child.back != prev || child.forw != next {
        return Err(c.corrupt(
            &place(what, "leafN", child.blk.fo),
            format!(
                "the leaf (last hash {:#x}, siblings {}/{}) does not match its node entry (hash {:#x}, neighbours {prev}/{next})",
                child.last_any.unwrap_or(0),
                child.back,
                child.forw,
                n.ents[i].0
            ),
        ));
    }
    let _ = g;
    Ok(())
}

/// Where a name's leaf entry lives: the child index (None for a root
/// leaf) and the entry index.
struct Hit {
    child: Option<usize>,
    idx: usize,
    found: Found,
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
    let root = read_root(tx, &g, dir, &ext, what)?;
    let h = hashname(name);
    // Find the entry: in the root leaf, or from the first child whose
    // hash reaches the name's, on while equal hashes continue.
    let mut hit: Option<Hit> = None;
    let mut child_leaf: Option<LeafN> = None;
    match &root {
        Root::Leaf(lf) => {
            let start = lf.ents.partition_point(|e| e.0 < h);
            for idx in start..lf.ents.len() {
                if lf.ents[idx].0 != h {
                    break;
                }
                if let Some(found) = probe(tx, &g, dir, &ext, lf.ents[idx].1, name, what)? {
                    hit = Some(Hit {
                        child: None,
                        idx,
                        found,
                    });
                    break;
                }
            }
        }
        Root::Node(n) => {
            let Some(first) = n.ents.iter().position(|e| e.0 >= h) else {
                return Ok(None);
            };
            'children: for i in first..n.ents.len() {
                let cl = read_leafn(tx, &g, dir, &ext, u64::from(n.ents[i].1), what)?;
                check_child(c, &g, n, i, &cl, what)?;
                let start = cl.ents.partition_point(|e| e.0 < h);
                for idx in start..cl.ents.len() {
                    if cl.ents[idx].0 != h {
                        break 'children;
                    }
                    if let Some(found) = probe(tx, &g, dir, &ext, cl.ents[idx].1, name, what)? {
                        hit = Some(Hit {
                            child: Some(i),
                            idx,
                            found,
                        });
                        child_leaf = Some(cl);
                        break 'children;
                    }
                }
                if cl.last_any != Some(h) {
                    break;
                }
            }
        }
    }
    let Some(Hit {
        child,
        idx,
        found:
            Found {
                db,
                at,
                mut b,
                mut ents,
                k,
            },
    }) = hit
    else {
        return Ok(None);
    };
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
    if ents.is_empty() {
        // An emptied data block is freed; the table and the directory
        // size shrink past trailing holes.
        shrink(tx, &g, dir, &mut ext, db as u64 * g.fsbs, what)?;
        match free.bests.get_mut(db) {
            Some(x) => *x = NULL_DATAOFF,
            None => {
                return Err(c.corrupt(
                    &place(what, "freeindex", g.free_fo),
                    format!("no entry for data block {db}"),
                ))
            }
        }
        while free.bests.last() == Some(&NULL_DATAOFF) {
            free.bests.pop();
        }
        set_size(dir, free.bests.len() as u64 * u64::from(c.geo.dir_size));
    } else {
        let best = build_area(c, &mut b, &l, g.ds, &ents);
        seal_data(c, &mut b);
        tx.write(at, b)?;
        match free.bests.get_mut(db) {
            Some(x) => *x = best,
            None => {
                return Err(c.corrupt(
                    &place(what, "freeindex", g.free_fo),
                    format!("no entry for data block {db}"),
                ))
            }
        }
    }
    match (root, child, child_leaf) {
        (Root::Leaf(mut lf), _, _) => {
            lf.ents.remove(idx);
            write_leafn(tx, &g, dir, &mut lf)?;
        }
        (Root::Node(mut n), Some(i), Some(mut cl)) => {
            cl.ents.remove(idx);
            // A leaf at most half full joins a neighbour when the two fit
            // in three quarters of a block (the kernel's rule); an empty
            // one always goes. The left one of the pair takes the entries.
            let mut pair = None;
            if n.ents.len() > 1 && cl.ents.len() * 8 + g.lh <= g.ds / 2 {
                let j = if i + 1 < n.ents.len() { i + 1 } else { i - 1 };
                let nb = read_leafn(tx, &g, dir, &ext, u64::from(n.ents[j].1), what)?;
                check_child(c, &g, &n, j, &nb, what)?;
                if cl.ents.is_empty() || (cl.ents.len() + nb.ents.len()) * 8 + g.lh <= g.ds * 3 / 4
                {
                    pair = Some((j, nb));
                }
            }
            match pair {
                Some((j, nb)) => {
                    let (li, mut left, right) = if j > i { (i, cl, nb) } else { (j, nb, cl) };
                    left.ents.extend_from_slice(&right.ents);
                    left.forw = right.forw;
                    if right.forw != 0 {
                        let mut s = read_leafn(tx, &g, dir, &ext, u64::from(right.forw), what)?;
                        if u64::from(s.back) != right.blk.fo {
                            return Err(c.corrupt(
                                &place(what, "leafN", s.blk.fo),
                                format!(
                                    "back pointer {} is not its left sibling {}",
                                    s.back, right.blk.fo
                                ),
                            ));
                        }
                        s.back = left.blk.fo as u32;
                        write_siblings(tx, &g, &mut s)?;
                    }
                    shrink(tx, &g, dir, &mut ext, right.blk.fo, what)?;
                    n.ents.remove(li + 1);
                    if left.ents.is_empty() && n.ents.len() > 1 {
                        // Both held only stale entries: the pair goes.
                        for (s, fix_forw) in [(left.back, true), (left.forw, false)] {
                            if s != 0 {
                                let mut sib = read_leafn(tx, &g, dir, &ext, u64::from(s), what)?;
                                let points = if fix_forw { sib.forw } else { sib.back };
                                if u64::from(points) != left.blk.fo {
                                    return Err(c.corrupt(
                                        &place(what, "leafN", sib.blk.fo),
                                        format!(
                                            "sibling pointer {points} is not its neighbour {}",
                                            left.blk.fo
                                        ),
                                    ));
                                }
                                if fix_forw {
                                    sib.forw = left.forw;
                                } else {
                                    sib.back = left.back;
                                }
                                write_siblings(tx, &g, &mut sib)?;
                            }
                        }
                        shrink(tx, &g, dir, &mut ext, left.blk.fo, what)?;
                        n.ents.remove(li);
                    } else {
                        n.ents[li].0 = left.last();
                        write_leafn(tx, &g, dir, &mut left)?;
                    }
                }
                None => {
                    write_leafn(tx, &g, dir, &mut cl)?;
                    if !cl.ents.is_empty() {
                        n.ents[i].0 = cl.last();
                    }
                }
            }
            if n.ents.len() == 1 {
                // One leaf left: it becomes the root again (the kernel's
                // root join), its block freed.
                let only = read_leafn(tx, &g, dir, &ext, u64::from(n.ents[0].1), what)?;
                let mut root = LeafN {
                    blk: n.blk,
                    forw: 0,
                    back: 0,
                    ents: only.ents,
                    last_any: None,
                };
                write_leafn(tx, &g, dir, &mut root)?;
                shrink(tx, &g, dir, &mut ext, only.blk.fo, what)?;
            } else {
                write_node(tx, &g, dir, &mut n)?;
            }
        }
        _ => {
            return Err(c.corrupt(what, "directory hash tree lookup lost its leaf".into()));
        }
    }
    write_free(tx, &g, dir, &mut free)?;
    Ok(Some(old))
}
