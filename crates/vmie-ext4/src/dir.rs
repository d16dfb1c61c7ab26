//! Directories: linear blocks and htree (dir_index) leaves and index nodes.

use vmie_guestfs::FsError;

use crate::dxhash;
use crate::geo::{le16, le32, put16, put32};
use crate::inode::{self, BlockMap};
use crate::tx::{DirKind, Tx};

pub(crate) const FT_REG: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_LNK: u8 = 7;

/// Most blocks we accept in one directory.
const MAX_DIR_BLOCKS: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) struct Ent {
    pub off: usize,
    pub ino: u32,
    pub rec: usize,
    pub name: Vec<u8>,
    pub ft: u8,
}

/// A directory as loaded in a transaction.
#[derive(Debug)]
pub(crate) struct Dir {
    pub ino: u32,
    pub raw: Vec<u8>,
    pub blocks: Vec<u64>,
    pub map: BlockMap,
}

pub(crate) fn rec_need(nlen: usize) -> usize {
    (8 + nlen + 3) & !3
}

fn dec_rec(v: u16, bs: usize) -> usize {
    if v == 0xFFFF || (v == 0 && bs == 65536) {
        65536
    } else {
        usize::from(v)
    }
}

fn enc_rec(v: usize) -> u16 {
    if v >= 65536 {
        0xFFFF
    } else {
        v as u16
    }
}

fn has_tail(tx: &Tx<'_>, blk: &[u8]) -> bool {
    let t = blk.len() - 12;
    tx.g.metadata_csum()
        && le32(blk, t) == 0
        && le16(blk, t + 4) == 12
        && blk[t + 6] == 0
        && blk[t + 7] == 0xDE
}

/// End of the entry area of a block (before a checksum tail).
fn entry_end(tx: &Tx<'_>, blk: &[u8]) -> usize {
    if has_tail(tx, blk) {
        blk.len() - 12
    } else {
        blk.len()
    }
}

/// Parse the entries of a directory block.
pub(crate) fn parse(tx: &Tx<'_>, blk: &[u8], place: &str) -> Result<Vec<Ent>, FsError> {
    let end = entry_end(tx, blk);
    let mut out = Vec::new();
    let mut off = 0;
    while off < end {
        if off + 8 > end {
            return Err(tx.corrupt(
                place,
                format!("directory entry at {off} runs past the block"),
            ));
        }
        let ino = le32(blk, off);
        let rec = dec_rec(le16(blk, off + 4), blk.len());
        let nlen = usize::from(blk[off + 6]);
        let ft = if tx.g.filetype() { blk[off + 7] } else { 0 };
        if rec < 8 || rec % 4 != 0 || off + rec > end || (ino != 0 && 8 + nlen > rec) {
            return Err(tx.corrupt(place, format!("bad directory entry at offset {off}")));
        }
        if ino > tx.g.inodes_count {
            return Err(tx.corrupt(place, format!("directory entry names inode {ino}")));
        }
        let name = blk
            .get(off + 8..off + 8 + nlen)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        out.push(Ent {
            off,
            ino,
            rec,
            name,
            ft,
        });
        off += rec;
    }
    Ok(out)
}

fn write_ent(tx: &Tx<'_>, blk: &mut [u8], off: usize, ino: u32, rec: usize, name: &[u8], ft: u8) {
    put32(blk, off, ino);
    put16(blk, off + 4, enc_rec(rec));
    blk[off + 6] = name.len() as u8;
    blk[off + 7] = if tx.g.filetype() { ft } else { 0 };
    blk[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

fn put_tail(tx: &Tx<'_>, blk: &mut [u8]) {
    if tx.g.metadata_csum() {
        let t = blk.len() - 12;
        blk[t..].fill(0);
        put16(blk, t + 4, 12);
        blk[t + 7] = 0xDE;
    }
}

/// An empty leaf block (one unused entry spanning it) with its tail.
pub(crate) fn empty_block(tx: &Tx<'_>) -> Vec<u8> {
    let bs = tx.g.bs as usize;
    let mut blk = vec![0u8; bs];
    let end = if tx.g.metadata_csum() { bs - 12 } else { bs };
    put16(&mut blk, 4, enc_rec(end));
    put_tail(tx, &mut blk);
    blk
}

/// The first block of a new directory.
pub(crate) fn new_dir_block(tx: &Tx<'_>, me: u32, parent: u32) -> Vec<u8> {
    let mut blk = empty_block(tx);
    let end = entry_end(tx, &blk);
    write_ent(tx, &mut blk, 0, me, 12, b".", FT_DIR);
    write_ent(tx, &mut blk, 12, parent, end - 12, b"..", FT_DIR);
    blk
}

pub(crate) fn check_inode_writable(
    tx: &mut Tx<'_>,
    ino: u32,
    raw: &[u8],
    op: &str,
) -> Result<(), FsError> {
    // The xattr block the inode names is counted in its i_blocks and kept
    // across the write: it must be a block of the volume holding an xattr
    // block, as the kernel checks before it trusts one (ext4_iget,
    // ext4_xattr_block_get). A corrupt pointer would otherwise be carried
    // into the recomputed block count.
    let acl = inode::file_acl(raw);
    if acl != 0 {
        if acl < tx.g.first_data_block.max(1) || acl >= tx.g.blocks_count {
            return Err(tx.corrupt(
                format!("inode {ino}"),
                format!("{op}: its extended attribute block {acl} is outside the volume"),
            ));
        }
        let blk = tx.read_blk(acl)?;
        if crate::geo::le32(&blk, 0) != 0xEA02_0000 || crate::geo::le32(&blk, 8) != 1 {
            return Err(tx.corrupt(
                format!("inode {ino}"),
                format!("{op}: its extended attribute block {acl} does not hold one"),
            ));
        }
    }
    let fl = inode::flags(raw);
    let why = if fl & inode::FL_ENCRYPT != 0 {
        "it is encrypted (fscrypt)"
    } else if fl & inode::FL_CASEFOLD != 0 {
        "it is a casefolded directory"
    } else if fl & inode::FL_VERITY != 0 {
        "it is an fs-verity file"
    } else if fl & inode::FL_INLINE_DATA != 0 {
        "it keeps its data inline in the inode (inline_data writes are not implemented)"
    } else if fl & (inode::FL_IMMUTABLE | inode::FL_APPEND) != 0 {
        "it is immutable or append-only"
    } else if fl & inode::FL_EA_INODE != 0 {
        "it is an xattr inode"
    } else {
        return Ok(());
    };
    Err(tx.unsupported(op.to_string(), format!("inode {ino}: {why}")))
}

pub(crate) fn open(tx: &mut Tx<'_>, ino: u32, place: &str) -> Result<Dir, FsError> {
    let raw = tx.get_inode(ino)?;
    if !inode::is_dir(&raw) {
        return Err(FsError::NotADirectory {
            fs: tx.loc.to_string(),
            path: place.to_string(),
        });
    }
    let map = inode::read_map(tx, ino, &raw)?;
    let size = inode::size(&raw);
    if size % tx.g.bs != 0 || size / tx.g.bs > MAX_DIR_BLOCKS {
        return Err(tx.corrupt(place, format!("directory size {size}")));
    }
    let n = size / tx.g.bs;
    let mut blocks = Vec::with_capacity(n as usize);
    for &(l, p, len) in &map.runs {
        if l != blocks.len() as u64 {
            return Err(tx.corrupt(place, "directory has a hole"));
        }
        if l + len > n {
            // Blocks past i_size: keep only those inside.
            for i in 0..n.saturating_sub(l) {
                blocks.push(p + i);
            }
            break;
        }
        blocks.extend(p..p + len);
    }
    if blocks.len() as u64 != n {
        return Err(tx.corrupt(place, "directory blocks do not cover its size"));
    }
    Ok(Dir {
        ino,
        raw,
        blocks,
        map,
    })
}

pub(crate) fn is_htree(d: &Dir) -> bool {
    inode::flags(&d.raw) & inode::FL_INDEX != 0
}

/// Find `name`: (logical block, entry).
pub(crate) fn lookup(
    tx: &mut Tx<'_>,
    d: &Dir,
    name: &[u8],
    place: &str,
) -> Result<Option<(usize, Ent)>, FsError> {
    if is_htree(d) && name != b"." && name != b".." {
        if let Some(found) = dx_lookup(tx, d, name, place)? {
            return Ok(found);
        }
    }
    for (i, &b) in d.blocks.iter().enumerate() {
        let blk = tx.read_blk(b)?;
        for e in parse(tx, &blk, place)? {
            if e.ino != 0 && e.name == name {
                return Ok(Some((i, e)));
            }
        }
    }
    Ok(None)
}

/// Whether the directory holds anything but `.` and `..`.
pub(crate) fn is_empty(tx: &mut Tx<'_>, d: &Dir, place: &str) -> Result<bool, FsError> {
    for &b in &d.blocks {
        let blk = tx.read_blk(b)?;
        for e in parse(tx, &blk, place)? {
            if e.ino != 0 && e.name != b"." && e.name != b".." {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn leaf_csum(tx: &mut Tx<'_>, d: &Dir, b: u64) {
    tx.dir_block_csum(b, d.ino, inode::generation(&d.raw), DirKind::Leaf);
}

/// Try to place an entry in block `b`; true if it fit.
fn insert_in_block(
    tx: &mut Tx<'_>,
    d: &Dir,
    b: u64,
    name: &[u8],
    ino: u32,
    ft: u8,
    place: &str,
) -> Result<bool, FsError> {
    let need = rec_need(name.len());
    let mut blk = tx.read_blk(b)?;
    for e in parse(tx, &blk, place)? {
        if e.ino == 0 && e.rec >= need {
            write_ent(tx, &mut blk, e.off, ino, e.rec, name, ft);
            tx.write_blk(b, blk)?;
            leaf_csum(tx, d, b);
            return Ok(true);
        }
        let used = rec_need(e.name.len());
        if e.ino != 0 && e.rec >= used + need {
            put16(&mut blk, e.off + 4, enc_rec(used));
            write_ent(tx, &mut blk, e.off + used, ino, e.rec - used, name, ft);
            tx.write_blk(b, blk)?;
            leaf_csum(tx, d, b);
            return Ok(true);
        }
    }
    Ok(false)
}

/// Append a block to directory `d` (allocated near its last block) holding
/// `content`; returns its logical number.
fn append_block(tx: &mut Tx<'_>, d: &mut Dir, content: Vec<u8>) -> Result<usize, FsError> {
    let goal = d.blocks.last().map_or(0, |b| b + 1);
    let p = tx.alloc_blocks(1, goal)?;
    let phys = p
        .first()
        .map(|r| r.0)
        .ok_or_else(|| tx.corrupt("allocator", "short allocation"))?;
    // Rebuild the map with the new block (old map blocks freed first).
    for &m in &d.map.meta {
        tx.free_blocks(m, 1)?;
    }
    d.blocks.push(phys);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &b in &d.blocks {
        match runs.last_mut() {
            Some((s, n)) if *s + *n == b => *n += 1,
            _ => runs.push((b, 1)),
        }
    }
    let meta = inode::write_map(tx, d.ino, &mut d.raw, &runs, goal)?;
    d.map = BlockMap {
        runs: Vec::new(),
        meta: meta.clone(),
    };
    let acl = u64::from(inode::file_acl(&d.raw) != 0);
    inode::set_blocks(
        tx,
        &mut d.raw,
        d.blocks.len() as u64 + meta.len() as u64 + acl,
    )?;
    let size = d.blocks.len() as u64 * tx.g.bs;
    inode::set_size(&mut d.raw, size);
    tx.write_blk(phys, content)?;
    leaf_csum(tx, d, phys);
    Ok(d.blocks.len() - 1)
}

/// Insert entry `name` -> `ino` into directory `d` (whose inode the caller
/// writes back afterwards).
pub(crate) fn insert(
    tx: &mut Tx<'_>,
    d: &mut Dir,
    name: &[u8],
    ino: u32,
    ft: u8,
    place: &str,
) -> Result<(), FsError> {
    if is_htree(d) {
        return dx_insert(tx, d, name, ino, ft, place);
    }
    for i in 0..d.blocks.len() {
        let b = d.blocks[i];
        if insert_in_block(tx, d, b, name, ino, ft, place)? {
            return Ok(());
        }
    }
    let mut blk = empty_block(tx);
    let end = entry_end(tx, &blk);
    write_ent(tx, &mut blk, 0, ino, end, name, ft);
    append_block(tx, d, blk)?;
    Ok(())
}

/// Remove the entry at `off` in logical block `lb`.
pub(crate) fn remove_at(
    tx: &mut Tx<'_>,
    d: &Dir,
    lb: usize,
    off: usize,
    place: &str,
) -> Result<(), FsError> {
    let b = d.blocks[lb];
    let mut blk = tx.read_blk(b)?;
    let ents = parse(tx, &blk, place)?;
    let i = ents
        .iter()
        .position(|e| e.off == off)
        .ok_or_else(|| tx.corrupt(place, "entry vanished"))?;
    if i > 0 {
        let prev = &ents[i - 1];
        put16(&mut blk, prev.off + 4, enc_rec(prev.rec + ents[i].rec));
    } else {
        put32(&mut blk, off, 0);
    }
    tx.write_blk(b, blk)?;
    leaf_csum(tx, d, b);
    Ok(())
}

/// Point entry at `off` in logical block `lb` at a different inode.
pub(crate) fn retarget(
    tx: &mut Tx<'_>,
    d: &Dir,
    lb: usize,
    off: usize,
    ino: u32,
    ft: u8,
) -> Result<(), FsError> {
    let b = d.blocks[lb];
    let mut blk = tx.read_blk(b)?;
    put32(&mut blk, off, ino);
    if tx.g.filetype() {
        blk[off + 7] = ft;
    }
    tx.write_blk(b, blk)?;
    leaf_csum(tx, d, b);
    Ok(())
}

// ---- htree ----

struct Node {
    /// Logical block of this index node.
    lb: usize,
    /// Offset of limit/count.
    off: usize,
    /// Index of the entry followed.
    at: usize,
}

fn dx_kind(n: &Node) -> DirKind {
    DirKind::Dx(n.off)
}

fn dx_full(tx: &mut Tx<'_>, d: &Dir, n: &Node) -> Result<bool, FsError> {
    let blk = tx.read_blk(d.blocks[n.lb])?;
    Ok(le16(&blk, n.off + 2) >= le16(&blk, n.off))
}

fn node_limit(tx: &Tx<'_>) -> usize {
    let tail = if tx.g.metadata_csum() { 8 } else { 0 };
    (tx.g.bs as usize - 8 - tail) / 8
}

fn mark_dx(tx: &mut Tx<'_>, d: &Dir, b: u64, off: usize) {
    tx.dir_block_csum(b, d.ino, inode::generation(&d.raw), DirKind::Dx(off));
}

/// An empty htree index node holding `entries` (block of entry 0 first).
fn new_node(tx: &Tx<'_>, entries: &[(u32, u32)]) -> Vec<u8> {
    let bs = tx.g.bs as usize;
    let mut blk = vec![0u8; bs];
    put16(&mut blk, 4, enc_rec(bs));
    put16(&mut blk, 8, node_limit(tx) as u16);
    put16(&mut blk, 10, entries.len() as u16);
    for (i, &(h, b)) in entries.iter().enumerate() {
        if i > 0 {
            put32(&mut blk, 8 + i * 8, h);
        }
        put32(&mut blk, 8 + i * 8 + 4, b);
    }
    blk
}

fn read_entries(blk: &[u8], off: usize) -> Vec<(u32, u32)> {
    let count = usize::from(le16(blk, off + 2));
    (0..count)
        .map(|i| {
            let h = if i == 0 { 0 } else { le32(blk, off + i * 8) };
            (h, le32(blk, off + i * 8 + 4))
        })
        .collect()
}

/// Make room for one more entry in the last index node of `path`.
fn make_index_room(
    tx: &mut Tx<'_>,
    d: &mut Dir,
    path: &mut Vec<Node>,
    max_levels: u8,
    place: &str,
) -> Result<(), FsError> {
    let k = path.len() - 1;
    let mut first_free = None;
    for j in (0..=k).rev() {
        if !dx_full(tx, d, &path[j])? {
            first_free = Some(j);
            break;
        }
    }
    let start = match first_free {
        Some(j) => j,
        None => {
            // Everything up to the root is full: add a level under the root.
            let levels = path.len() as u8 - 1;
            if levels >= max_levels {
                return Err(tx.unsupported(
                    format!("insert into {place}"),
                    "the htree index is full at its deepest allowed level",
                ));
            }
            let root_b = d.blocks[0];
            let mut root = tx.read_blk(root_b)?;
            let roff = path[0].off;
            let entries = read_entries(&root, roff);
            let node = new_node(tx, &entries);
            let nlb = append_block(tx, d, node)?;
            mark_dx(tx, d, d.blocks[nlb], 8);
            let count = usize::from(le16(&root, roff + 2));
            root[roff + 8..roff + count * 8].fill(0);
            put16(&mut root, roff + 2, 1);
            put32(&mut root, roff + 4, nlb as u32);
            root[0x1E] = levels + 1;
            tx.write_blk(root_b, root)?;
            mark_dx(tx, d, root_b, roff);
            let at = path[0].at;
            path[0].at = 0;
            path.insert(
                1,
                Node {
                    lb: nlb,
                    off: 8,
                    at,
                },
            );
            1
        }
    };
    // Split every full node below the first one with room, top down.
    for j in start + 1..path.len() {
        let (plb, poff, pat) = (path[j - 1].lb, path[j - 1].off, path[j - 1].at);
        let (nlb, noff, nat) = (path[j].lb, path[j].off, path[j].at);
        let nb = d.blocks[nlb];
        let mut nblk = tx.read_blk(nb)?;
        let entries = read_entries(&nblk, noff);
        let m = entries.len() / 2;
        if m == 0 {
            return Err(tx.corrupt(place, "htree index node too small to split"));
        }
        let key = entries[m].0;
        let upper = new_node(tx, &entries[m..]);
        let new_lb = append_block(tx, d, upper)?;
        mark_dx(tx, d, d.blocks[new_lb], 8);
        let count = entries.len();
        nblk[noff + m * 8..noff + count * 8].fill(0);
        put16(&mut nblk, noff + 2, m as u16);
        tx.write_blk(nb, nblk)?;
        mark_dx(tx, d, nb, noff);
        // Key for the new node in the parent, after the entry followed.
        let pb = d.blocks[plb];
        let mut pblk = tx.read_blk(pb)?;
        let pcount = usize::from(le16(&pblk, poff + 2));
        if pcount >= usize::from(le16(&pblk, poff)) {
            return Err(tx.corrupt(place, "htree parent full after making room"));
        }
        let pos = poff + (pat + 1) * 8;
        pblk.copy_within(pos..poff + pcount * 8, pos + 8);
        put32(&mut pblk, pos, key);
        put32(&mut pblk, pos + 4, new_lb as u32);
        put16(&mut pblk, poff + 2, (pcount + 1) as u16);
        tx.write_blk(pb, pblk)?;
        mark_dx(tx, d, pb, poff);
        if nat >= m {
            path[j - 1].at = pat + 1;
            path[j] = Node {
                lb: new_lb,
                off: 8,
                at: nat - m,
            };
        }
    }
    Ok(())
}

struct Walk {
    path: Vec<Node>,
    leaf_lb: usize,
    ver: u8,
    h: u32,
    max_levels: u8,
}

/// Walk the htree index of `d` to the leaf for `name`.
fn dx_walk(tx: &mut Tx<'_>, d: &Dir, name: &[u8], place: &str) -> Result<Walk, FsError> {
    let bs = tx.g.bs as usize;
    let root_b = *d
        .blocks
        .first()
        .ok_or_else(|| tx.corrupt(place, "empty htree directory"))?;
    let root = tx.read_blk(root_b)?;
    let info_len = usize::from(root[0x1D]);
    let levels = root[0x1E];
    let mut ver = root[0x1C];
    let max_levels = if tx.g.incompat & crate::geo::INCOMPAT_LARGEDIR != 0 {
        2
    } else {
        1
    };
    if info_len != 8 || levels > max_levels || ver > dxhash::TEA {
        return Err(tx.unsupported(
            format!("insert into {place}"),
            format!("htree root with hash version {ver}, {levels} levels"),
        ));
    }
    if ver <= dxhash::TEA && tx.g.hash_unsigned {
        ver += 3;
    }
    let h = dxhash::dx_hash(name, ver, tx.g.hash_seed);
    let mut path: Vec<Node> = Vec::new();
    let mut lb = 0usize;
    let mut off = 0x18 + info_len;
    let leaf_lb;
    loop {
        let blk = tx.read_blk(d.blocks[lb])?;
        let limit = usize::from(le16(&blk, off));
        let count = usize::from(le16(&blk, off + 2));
        if count == 0 || count > limit || off + limit * 8 > bs {
            return Err(tx.corrupt(
                place,
                format!("htree index in block {lb}: count {count}, limit {limit}"),
            ));
        }
        let mut at = 0;
        for i in 1..count {
            if le32(&blk, off + i * 8) <= h {
                at = i;
            } else {
                break;
            }
        }
        let child = (le32(&blk, off + at * 8 + 4) & 0x0FFF_FFFF) as usize;
        if child == 0 || child >= d.blocks.len() {
            return Err(tx.corrupt(place, format!("htree index points at block {child}")));
        }
        path.push(Node { lb, off, at });
        if path.len() > usize::from(levels) {
            leaf_lb = child;
            break;
        }
        lb = child;
        off = 8;
    }
    Ok(Walk {
        path,
        leaf_lb,
        ver,
        h,
        max_levels,
    })
}

/// Look `name` up through the htree index; `None` from the index means
/// "ask the linear scan" (an index we cannot follow, or a hash collision
/// chain that runs past the index node).
fn dx_lookup(
    tx: &mut Tx<'_>,
    d: &Dir,
    name: &[u8],
    place: &str,
) -> Result<Option<Option<(usize, Ent)>>, FsError> {
    let w = match dx_walk(tx, d, name, place) {
        Ok(w) => w,
        Err(FsError::Unsupported { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let node = w
        .path
        .last()
        .ok_or_else(|| tx.corrupt(place, "htree path"))?;
    let nblk = tx.read_blk(d.blocks[node.lb])?;
    let count = usize::from(le16(&nblk, node.off + 2));
    let mut at = node.at;
    let mut lb = w.leaf_lb;
    loop {
        let blk = tx.read_blk(d.blocks[lb])?;
        for e in parse(tx, &blk, place)? {
            if e.ino != 0 && e.name == name {
                return Ok(Some(Some((lb, e))));
            }
        }
        // A collision chain continues in the next leaf (hash | 1).
        if at + 1 >= count {
            // The chain might continue under the next node: let the
            // linear scan decide.
            return Ok(if at + 1 == count && w.path.len() > 1 {
                None
            } else {
                Some(None)
            });
        }
        let next_h = le32(&nblk, node.off + (at + 1) * 8);
        if next_h & 1 == 0 || next_h & !1 != w.h {
            return Ok(Some(None));
        }
        at += 1;
        lb = (le32(&nblk, node.off + at * 8 + 4) & 0x0FFF_FFFF) as usize;
        if lb == 0 || lb >= d.blocks.len() {
            return Err(tx.corrupt(place, format!("htree index points at block {lb}")));
        }
    }
}

fn dx_insert(
    tx: &mut Tx<'_>,
    d: &mut Dir,
    name: &[u8],
    ino: u32,
    ft: u8,
    place: &str,
) -> Result<(), FsError> {
    let Walk {
        mut path,
        leaf_lb,
        ver,
        h,
        max_levels,
    } = dx_walk(tx, d, name, place)?;
    let leaf_b = d.blocks[leaf_lb];
    if insert_in_block(tx, d, leaf_b, name, ino, ft, place)? {
        return Ok(());
    }
    // Split the leaf: its parent index needs room for one more entry,
    // which may mean splitting full index nodes above it, and (when the
    // root is full too) adding a level under the root.
    make_index_room(tx, d, &mut path, max_levels, place)?;
    let parent = path.last().ok_or_else(|| tx.corrupt(place, "htree path"))?;
    let pblk = tx.read_blk(d.blocks[parent.lb])?;
    let count = usize::from(le16(&pblk, parent.off + 2));
    let leaf = tx.read_blk(leaf_b)?;
    let mut ents: Vec<(u32, Ent)> = parse(tx, &leaf, place)?
        .into_iter()
        .filter(|e| e.ino != 0)
        .map(|e| (dxhash::dx_hash(&e.name, ver, tx.g.hash_seed), e))
        .collect();
    ents.sort_by_key(|(h, _)| *h);
    if ents.len() < 2 {
        return Err(tx.corrupt(place, "full htree leaf with fewer than two entries"));
    }
    let total: usize = ents.iter().map(|(_, e)| rec_need(e.name.len())).sum();
    let mut acc = 0;
    let mut m = 0;
    for (i, (_, e)) in ents.iter().enumerate() {
        if acc >= total / 2 {
            m = i;
            break;
        }
        acc += rec_need(e.name.len());
    }
    let m = m.clamp(1, ents.len() - 1);
    let split = ents[m].0;
    let cont = u32::from(ents[m - 1].0 == split);
    let fill = |tx: &Tx<'_>, part: &[(u32, Ent)]| -> Vec<u8> {
        let mut blk = empty_block(tx);
        let end = entry_end(tx, &blk);
        let mut o = 0;
        for (i, (_, e)) in part.iter().enumerate() {
            let rec = if i + 1 == part.len() {
                end - o
            } else {
                rec_need(e.name.len())
            };
            write_ent(tx, &mut blk, o, e.ino, rec, &e.name, e.ft);
            o += rec;
        }
        blk
    };
    let lower = fill(tx, &ents[..m]);
    let upper = fill(tx, &ents[m..]);
    tx.write_blk(leaf_b, lower)?;
    leaf_csum(tx, d, leaf_b);
    let new_lb = append_block(tx, d, upper)?;
    // Index entry after the one followed.
    let parent = path.last().ok_or_else(|| tx.corrupt(place, "htree path"))?;
    let pb = d.blocks[parent.lb];
    let mut pblk = tx.read_blk(pb)?;
    let pos = parent.off + (parent.at + 1) * 8;
    let endp = parent.off + count * 8;
    pblk.copy_within(pos..endp, pos + 8);
    put32(&mut pblk, pos, split | cont);
    put32(&mut pblk, pos + 4, new_lb as u32);
    put16(&mut pblk, parent.off + 2, (count + 1) as u16);
    tx.write_blk(pb, pblk)?;
    tx.dir_block_csum(pb, d.ino, inode::generation(&d.raw), dx_kind(parent));
    let target = if h >= split { d.blocks[new_lb] } else { leaf_b };
    if !insert_in_block(tx, d, target, name, ino, ft, place)? {
        return Err(tx.nospace(format!(
            "no room for the entry in {place} after splitting a leaf"
        )));
    }
    Ok(())
}
