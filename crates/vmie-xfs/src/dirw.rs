//! Adding, removing and retargeting directory entries: shortform (in the
//! inode, re-encoded whole on each change with 4- or 8-byte inode numbers
//! as the kernel chooses them), block form (one directory block with its own hash leaf), leaf
//! form (data blocks and one leaf1 block with the sorted hashes and the
//! best-free table) and, in [`crate::dirnode`], node form (data blocks, a
//! hash tree of leafN blocks under da nodes of any level the kernel
//! reads, freeindex blocks). Every block touched is re-verified, rebuilt
//! whole (entries at their offsets, the gaps as free regions, bestfree[]
//! recomputed, stale leaf entries compacted away) and re-sealed. Adding converts shortform to block,
//! block to leaf, and leaf to node when the leaf1 block cannot take the
//! new hash (and best) any more. Removing keeps the form but frees a
//! leaf- or node-form data block it empties (xfs_repair junks empty
//! ones). Block maps in extents or btree form alike (`bmbt` converts
//! between them).

use vmie_guestfs::FsError;

use crate::be::{be16, be32, be64, put32, put64};
use crate::dir::{data_entry_size, BLOCK_MAGIC_V2, BLOCK_MAGIC_V3, DATA_MAGIC_V2, DATA_MAGIC_V3};
use crate::inode::{Extent, Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use crate::tx::Tx;
use crate::Ctx;

const LEAF1_MAGIC_V2: u16 = 0xd2f1;
const LEAF1_MAGIC_V3: u16 = 0x3df1;
pub(crate) const FREE_TAG: u16 = 0xFFFF;
pub(crate) const NULL_DATAOFF: u16 = 0xFFFF;

/// The directory name hash (xfs_da_hashname).
pub(crate) fn hashname(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    let mut n = name;
    while n.len() >= 4 {
        h = (u32::from(n[0]) << 21)
            ^ (u32::from(n[1]) << 14)
            ^ (u32::from(n[2]) << 7)
            ^ u32::from(n[3])
            ^ h.rotate_left(28);
        n = &n[4..];
    }
    match n.len() {
        3 => (u32::from(n[0]) << 14) ^ (u32::from(n[1]) << 7) ^ u32::from(n[2]) ^ h.rotate_left(21),
        2 => (u32::from(n[0]) << 7) ^ u32::from(n[1]) ^ h.rotate_left(14),
        1 => u32::from(n[0]) ^ h.rotate_left(7),
        _ => h,
    }
}

/// One entry of a data block, at its byte offset.
#[derive(Debug, Clone)]
pub(crate) struct DEnt {
    pub off: usize,
    pub ino: u64,
    pub name: Vec<u8>,
    pub ftype: u8,
}

pub(crate) fn refuse(c: &Ctx, what: &str, why: String) -> FsError {
    FsError::Unsupported {
        fs: c.location.clone(),
        op: format!("change the entries of {what}"),
        why,
    }
}

/// Encode one extent record.
pub(crate) fn encode_extent(e: &Extent) -> [u8; 16] {
    let l0 = (u64::from(e.unwritten) << 63) | (e.off << 9) | (e.fsb >> 43);
    let l1 = (e.fsb << 21) | (e.len & 0x1F_FFFF);
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&l0.to_be_bytes());
    r[8..].copy_from_slice(&l1.to_be_bytes());
    r
}

/// Store `ext` as the inode's data fork: an extent list when it fits in
/// the fork, else a bmbt (see `bmbt::store`, which also keeps the block
/// count of the bmbt blocks).
pub(crate) fn set_extents(
    tx: &mut Tx,
    ip: &mut Inode,
    ext: &[Extent],
    what: &str,
) -> Result<(), FsError> {
    crate::bmbt::store(tx, ip, ext, what)
}

pub(crate) fn set_nblocks(ip: &mut Inode, n: u64) {
    put64(&mut ip.raw, 64, n);
    ip.nblocks = n;
}

pub(crate) fn set_size(ip: &mut Inode, n: u64) {
    put64(&mut ip.raw, 56, n);
    ip.size = n;
}

/// The byte offset of directory block `db` (file block offset), which must
/// lie in one written extent.
pub(crate) fn dir_block_at(c: &Ctx, ext: &[Extent], db: u64) -> Option<u64> {
    let n = u64::from(c.geo.dir_fsbs);
    let e = ext
        .iter()
        .find(|e| e.off <= db && db + n <= e.off + e.len && !e.unwritten)?;
    c.geo.fsb_to_byte(e.fsb + (db - e.off), n)
}

pub(crate) struct Layout {
    pub hdr: usize,
    /// Offset of bestfree[0].
    pub bf: usize,
}

pub(crate) fn layout(c: &Ctx) -> Layout {
    if c.geo.v5 {
        Layout { hdr: 64, bf: 48 }
    } else {
        Layout { hdr: 16, bf: 4 }
    }
}

/// Parse the entries (with `.` and `..`) of data area `b[hdr..end]`.
fn parse_area(
    c: &Ctx,
    b: &[u8],
    hdr: usize,
    end: usize,
    place: &str,
) -> Result<Vec<DEnt>, FsError> {
    let bad = |d: String| c.corrupt(place, d);
    let ft = c.geo.ftype;
    let mut out = Vec::new();
    let mut pos = hdr;
    let mut last_free = false;
    while pos < end {
        if end - pos < 8 {
            return Err(bad(format!("entry at {pos} truncated")));
        }
        if be16(b, pos) == FREE_TAG {
            let len = usize::from(be16(b, pos + 2));
            if len < 8
                || len % 8 != 0
                || pos + len > end
                || usize::from(be16(b, pos + len - 2)) != pos
            {
                return Err(bad(format!("free region at {pos} of {len} bytes")));
            }
            if last_free {
                return Err(bad(format!("two free regions in a row at {pos}")));
            }
            last_free = true;
            pos += len;
            continue;
        }
        last_free = false;
        let ino = be64(b, pos);
        let nl = usize::from(b[pos + 8]);
        let size = data_entry_size(nl, ft);
        if nl == 0 || pos + size > end || usize::from(be16(b, pos + size - 2)) != pos {
            return Err(bad(format!("entry at {pos} is malformed")));
        }
        out.push(DEnt {
            off: pos,
            ino,
            name: b[pos + 9..pos + 9 + nl].to_vec(),
            ftype: if ft { b[pos + 9 + nl] } else { 0 },
        });
        pos += size;
    }
    Ok(out)
}

/// First gap of `size` bytes in `hdr..end` between the (sorted) entries.
pub(crate) fn find_gap(
    c: &Ctx,
    ents: &[DEnt],
    hdr: usize,
    end: usize,
    size: usize,
) -> Option<usize> {
    let ft = c.geo.ftype;
    let mut pos = hdr;
    for e in ents {
        if e.off >= pos + size {
            return Some(pos);
        }
        pos = pos.max(e.off + data_entry_size(e.name.len(), ft));
    }
    (end >= pos + size).then_some(pos)
}

/// Write entries and free regions into `b[hdr..end]`, and bestfree[].
/// Returns the longest free region.
pub(crate) fn build_area(c: &Ctx, b: &mut [u8], l: &Layout, end: usize, ents: &[DEnt]) -> u16 {
    let ft = c.geo.ftype;
    b[l.hdr..end].fill(0);
    let mut frees: Vec<(usize, usize)> = Vec::new();
    let mut pos = l.hdr;
    for e in ents {
        if e.off > pos {
            frees.push((pos, e.off - pos));
        }
        let size = data_entry_size(e.name.len(), ft);
        let o = e.off;
        put64(b, o, e.ino);
        b[o + 8] = e.name.len() as u8;
        b[o + 9..o + 9 + e.name.len()].copy_from_slice(&e.name);
        if ft {
            b[o + 9 + e.name.len()] = e.ftype;
        }
        b[o + size - 2..o + size].copy_from_slice(&(o as u16).to_be_bytes());
        pos = o + size;
    }
    if end > pos {
        frees.push((pos, end - pos));
    }
    for &(o, len) in &frees {
        b[o..o + 2].copy_from_slice(&FREE_TAG.to_be_bytes());
        b[o + 2..o + 4].copy_from_slice(&(len as u16).to_be_bytes());
        b[o + len - 2..o + len].copy_from_slice(&(o as u16).to_be_bytes());
    }
    // bestfree: the three longest, longest first (ties: lower offset).
    let mut best = frees.clone();
    best.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    best.truncate(3);
    b[l.bf..l.bf + 12].fill(0);
    for (i, &(o, len)) in best.iter().enumerate() {
        b[l.bf + i * 4..l.bf + i * 4 + 2].copy_from_slice(&(o as u16).to_be_bytes());
        b[l.bf + i * 4 + 2..l.bf + i * 4 + 4].copy_from_slice(&(len as u16).to_be_bytes());
    }
    best.first().map_or(0, |&(_, len)| len as u16)
}

pub(crate) fn seal_data(c: &Ctx, b: &mut [u8]) {
    if c.geo.v5 {
        crate::csum::update(b, 4);
    }
}

/// What the caller must do to the directory inode after an insertion:
/// the changes are made on `dir` itself (fork, size, blocks).
pub(crate) fn add_entry(
    tx: &mut Tx,
    dir: &mut Inode,
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    match dir.format {
        FMT_LOCAL => add_shortform(tx, dir, name, ino, ftype, what),
        FMT_EXTENTS | FMT_BTREE => {
            let ext = crate::bmbt::data_extents(tx, dir, what)?;
            let g = &c.geo;
            let end = ext.last().map_or(0, |e| e.off + e.len);
            if dir.size == u64::from(g.dir_size) && end == u64::from(g.dir_fsbs) {
                add_block(tx, dir, &ext, name, ino, ftype, what)
            } else if crate::dirnode::is_node(c, &ext) {
                crate::dirnode::add_node(tx, dir, &ext, name, ino, ftype, what)
            } else {
                add_leaf(tx, dir, &ext, name, ino, ftype, what)
            }
        }
        _ => Err(refuse(
            c,
            what,
            format!("the directory's data fork has format {}", dir.format),
        )),
    }
}

/// One shortform entry as stored: name, offset cookie, file type (0
/// without ftype), inode.
struct SfEnt {
    name: Vec<u8>,
    off: u16,
    ftype: u8,
    ino: u64,
}

/// A shortform directory's parent and entries with their offsets, after
/// the reader's checks ([`Ctx::shortform`]).
fn sf_entries(c: &Ctx, dir: &Inode, what: &str) -> Result<(u64, Vec<SfEnt>), FsError> {
    let (parent, ents) = c.shortform(dir, what)?;
    let d = dir.data_fork();
    let isz = if d[1] != 0 { 8 } else { 4 };
    let ft = usize::from(c.geo.ftype);
    let mut pos = 2 + isz;
    let mut out = Vec::with_capacity(ents.len());
    for e in ents {
        out.push(SfEnt {
            off: be16(d, pos + 1),
            ftype: e.ftype.unwrap_or(0),
            ino: e.ino,
            name: e.name,
        });
        pos += 3 + out.last().map_or(0, |e| e.name.len()) + ft + isz;
    }
    Ok((parent, out))
}

/// Encode a shortform directory as the kernel lays it out: 4-byte inode
/// numbers unless one of them (the parent's included) needs 8, then
/// 8-byte ones throughout with `i8count` counting those that need them
/// (xfs_dir2_block_sfsize; the kernel goes back to 4 bytes when the last
/// one leaves, xfs_dir2_sf_toino4).
fn sf_encode(c: &Ctx, parent: u64, ents: &[SfEnt], what: &str) -> Result<Vec<u8>, FsError> {
    let big = |i: u64| i > u64::from(u32::MAX);
    let i8count = usize::from(big(parent)) + ents.iter().filter(|e| big(e.ino)).count();
    let (Ok(count), Ok(i8c)) = (u8::try_from(ents.len()), u8::try_from(i8count)) else {
        return Err(c.corrupt(what, "shortform count overflows".into()));
    };
    let put = |v: &mut Vec<u8>, ino: u64| {
        if i8count > 0 {
            v.extend_from_slice(&ino.to_be_bytes());
        } else {
            v.extend_from_slice(&(ino as u32).to_be_bytes());
        }
    };
    let mut v = vec![count, i8c];
    put(&mut v, parent);
    for e in ents {
        let Ok(nl) = u8::try_from(e.name.len()) else {
            return Err(c.corrupt(what, "name longer than 255 bytes".into()));
        };
        v.push(nl);
        v.extend_from_slice(&e.off.to_be_bytes());
        v.extend_from_slice(&e.name);
        if c.geo.ftype {
            v.push(e.ftype);
        }
        put(&mut v, e.ino);
    }
    Ok(v)
}

/// Store an encoded shortform directory in the inode's data fork; false
/// when it does not fit.
fn sf_store(dir: &mut Inode, bytes: &[u8]) -> bool {
    let fork_len = dir.data_fork().len();
    if bytes.len() > fork_len {
        return false;
    }
    let core = dir.core;
    let f = &mut dir.raw[core..core + fork_len];
    f.fill(0);
    f[..bytes.len()].copy_from_slice(bytes);
    set_size(dir, bytes.len() as u64);
    true
}

/// Make `dir` an empty shortform directory whose parent is `parent`.
pub(crate) fn init_shortform(
    c: &Ctx,
    dir: &mut Inode,
    parent: u64,
    what: &str,
) -> Result<(), FsError> {
    let bytes = sf_encode(c, parent, &[], what)?;
    if !sf_store(dir, &bytes) {
        return Err(c.corrupt(what, "the inode has no room for a directory".into()));
    }
    Ok(())
}

fn add_shortform(
    tx: &mut Tx,
    dir: &mut Inode,
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let (parent, mut ents) = sf_entries(c, dir, what)?;
    let ft = c.geo.ftype;
    let l = layout(c);
    // The block offset the entry would get: after the last entry.
    let next_off = ents.last().map_or(
        l.hdr + data_entry_size(1, ft) + data_entry_size(2, ft),
        |e| usize::from(e.off) + data_entry_size(e.name.len(), ft),
    );
    let count = ents.len() + 1;
    // As a block, the entries and their leaf must fit (else the kernel
    // would place the entry elsewhere or convert).
    let block_need = next_off + data_entry_size(name.len(), ft) + (count + 2) * 8 + 8;
    let Ok(off) = u16::try_from(next_off) else {
        return sf_to_block(tx, dir, name, ino, ftype, what);
    };
    ents.push(SfEnt {
        name: name.to_vec(),
        off,
        ftype,
        ino,
    });
    let bytes = sf_encode(c, parent, &ents, what)?;
    if block_need > c.geo.dir_size as usize || !sf_store(dir, &bytes) {
        return sf_to_block(tx, dir, name, ino, ftype, what);
    }
    Ok(())
}

/// Convert a shortform directory that the new entry overflows into block
/// form, with the new entry in it.
fn sf_to_block(
    tx: &mut Tx,
    dir: &mut Inode,
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let g = &c.geo;
    let (parent, ents) = c.shortform(dir, what)?;
    let ft = g.ftype;
    let l = layout(c);
    let ds = g.dir_size as usize;
    let mut des = vec![
        DEnt {
            off: l.hdr,
            ino: dir.ino,
            name: b".".to_vec(),
            ftype: 2,
        },
        DEnt {
            off: l.hdr + data_entry_size(1, ft),
            ino: parent,
            name: b"..".to_vec(),
            ftype: 2,
        },
    ];
    let mut pos = l.hdr + data_entry_size(1, ft) + data_entry_size(2, ft);
    // Entries packed in order (offsets in a shortform directory are only
    // cookies; packed offsets are valid ones).
    for e in ents.iter() {
        des.push(DEnt {
            off: pos,
            ino: e.ino,
            name: e.name.clone(),
            ftype: e.ftype.unwrap_or(0),
        });
        pos += data_entry_size(e.name.len(), ft);
    }
    des.push(DEnt {
        off: pos,
        ino,
        name: name.to_vec(),
        ftype,
    });
    pos += data_entry_size(name.len(), ft);
    let nleaf = des.len();
    let leaf_start = ds - 8 - nleaf * 8;
    if pos > leaf_start {
        return Err(refuse(
            c,
            what,
            "the entries do not fit in one directory block".into(),
        ));
    }
    let _ = ents;
    let got = crate::alloc::alloc_for(
        tx,
        crate::alloc::Owner::data(dir.ino, 0),
        agno_of(c, dir.ino),
        u64::from(g.dir_fsbs),
        u64::from(g.dir_fsbs),
        None,
        1,
    )?;
    let fsb = got[0].fsb;
    let at = g
        .fsb_to_byte(fsb, u64::from(g.dir_fsbs))
        .ok_or_else(|| c.corrupt(what, "allocated block outside the filesystem".into()))?;
    let mut b = vec![0u8; ds];
    write_data_header(
        c,
        &mut b,
        if g.v5 { BLOCK_MAGIC_V3 } else { BLOCK_MAGIC_V2 },
        at,
        dir.ino,
    );
    build_area(c, &mut b, &l, leaf_start, &des);
    write_block_leaf(&mut b, &des, ds);
    seal_data(c, &mut b);
    tx.write(at, b)?;
    // The inode: extents format, one directory block.
    let ext = [Extent {
        off: 0,
        fsb,
        len: u64::from(g.dir_fsbs),
        unwritten: false,
    }];
    let core = dir.core;
    let flen = dir.data_fork().len();
    dir.raw[core..core + flen].fill(0);
    set_extents(tx, dir, &ext, what)?;
    set_size(dir, ds as u64);
    let nb = dir.nblocks + u64::from(g.dir_fsbs);
    set_nblocks(dir, nb);
    Ok(())
}

pub(crate) fn agno_of(c: &Ctx, ino: u64) -> u32 {
    (ino >> (c.geo.agblklog + c.geo.inopblog)) as u32
}

pub(crate) fn write_data_header(c: &Ctx, b: &mut [u8], magic: u32, at: u64, owner: u64) {
    put32(b, 0, magic);
    if c.geo.v5 {
        put64(b, 8, at >> 9);
        put64(b, 16, 0);
        b[24..40].copy_from_slice(&c.geo.meta_uuid);
        put64(b, 40, owner);
    }
}

/// The hash leaf and tail of a block-form directory block.
fn write_block_leaf(b: &mut [u8], ents: &[DEnt], ds: usize) {
    let mut leaf: Vec<(u32, u32)> = ents
        .iter()
        .map(|e| (hashname(&e.name), (e.off / 8) as u32))
        .collect();
    leaf.sort_by_key(|x| x.0);
    let start = ds - 8 - leaf.len() * 8;
    for (i, (h, a)) in leaf.iter().enumerate() {
        put32(b, start + i * 8, *h);
        put32(b, start + i * 8 + 4, *a);
    }
    put32(b, ds - 8, leaf.len() as u32);
    put32(b, ds - 4, 0);
}

#[allow(clippy::too_many_arguments)]
fn add_block(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let ds = c.geo.dir_size as usize;
    let l = layout(c);
    let (at, mut b, mut ents) = read_block_form(tx, dir, ext, what)?;
    let size = data_entry_size(name.len(), c.geo.ftype);
    let new_leaf_start = ds - 8 - (ents.len() + 1) * 8;
    let fits = ents
        .last()
        .is_none_or(|e| e.off + data_entry_size(e.name.len(), c.geo.ftype) <= new_leaf_start);
    let gap = if fits {
        find_gap(c, &ents, l.hdr, new_leaf_start, size)
    } else {
        None
    };
    let Some(off) = gap else {
        return block_to_leaf(tx, dir, ext, at, b, ents, name, ino, ftype, what);
    };
    let pos = ents.partition_point(|e| e.off < off);
    ents.insert(
        pos,
        DEnt {
            off,
            ino,
            name: name.to_vec(),
            ftype,
        },
    );
    build_area(c, &mut b, &l, new_leaf_start, &ents);
    write_block_leaf(&mut b, &ents, ds);
    seal_data(c, &mut b);
    tx.write(at, b)?;
    Ok(())
}

/// Convert a full block-form directory into leaf form: the block becomes
/// data block 0 (its leaf area turned into free space), the leaf entries
/// move to a new leaf1 block; then the entry is added in leaf form.
#[allow(clippy::too_many_arguments)]
fn block_to_leaf(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    at: u64,
    mut b: Vec<u8>,
    ents: Vec<DEnt>,
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let g = &c.geo;
    let ds = g.dir_size as usize;
    let l = layout(c);
    put32(&mut b, 0, if g.v5 { DATA_MAGIC_V3 } else { DATA_MAGIC_V2 });
    let best = build_area(c, &mut b, &l, ds, &ents);
    seal_data(c, &mut b);
    tx.write(at, b)?;
    let leaf_off = g.dir_leaf_fsb();
    let near = ext.last().map(|e| e.fsb + e.len);
    let got = crate::alloc::alloc_for(
        tx,
        crate::alloc::Owner::data(dir.ino, leaf_off),
        agno_of(c, dir.ino),
        u64::from(g.dir_fsbs),
        u64::from(g.dir_fsbs),
        near,
        1,
    )?;
    let lat = g
        .fsb_to_byte(got[0].fsb, u64::from(g.dir_fsbs))
        .ok_or_else(|| c.corrupt(what, "allocated block outside the filesystem".into()))?;
    let mut lb = vec![0u8; ds];
    let lh = if g.v5 { 64 } else { 16 };
    lb[8..10].copy_from_slice(&(if g.v5 { LEAF1_MAGIC_V3 } else { LEAF1_MAGIC_V2 }).to_be_bytes());
    if g.v5 {
        put64(&mut lb, 16, lat >> 9);
        lb[32..48].copy_from_slice(&g.meta_uuid);
        put64(&mut lb, 48, dir.ino);
    }
    let leaf: Vec<(u32, u32)> = ents
        .iter()
        .map(|e| (hashname(&e.name), (e.off / 8) as u32))
        .collect();
    write_leaf1(&mut lb, lh, g.v5, &leaf, &[best], ds);
    tx.write(lat, lb)?;
    let mut all = ext.to_vec();
    all.push(Extent {
        off: leaf_off,
        fsb: got[0].fsb,
        len: u64::from(g.dir_fsbs),
        unwritten: false,
    });
    set_extents(tx, dir, &all, what)?;
    let nb = dir.nblocks + u64::from(g.dir_fsbs);
    set_nblocks(dir, nb);
    let ext2 = crate::bmbt::data_extents(tx, dir, what)?;
    add_leaf(tx, dir, &ext2, name, ino, ftype, what)
}

/// Write leaf1 entries (sorted here), bests and tail; stale = 0.
fn write_leaf1(lb: &mut [u8], lh: usize, v5: bool, leaf: &[(u32, u32)], bests: &[u16], ds: usize) {
    let mut leaf = leaf.to_vec();
    leaf.sort_by_key(|x| x.0);
    let (count_off, stale_off) = if v5 { (56, 58) } else { (12, 14) };
    lb[count_off..count_off + 2].copy_from_slice(&(leaf.len() as u16).to_be_bytes());
    lb[stale_off..stale_off + 2].copy_from_slice(&0u16.to_be_bytes());
    lb[lh..ds].fill(0);
    for (i, (h, a)) in leaf.iter().enumerate() {
        put32(lb, lh + i * 8, *h);
        put32(lb, lh + i * 8 + 4, *a);
    }
    let bstart = ds - 4 - bests.len() * 2;
    for (i, v) in bests.iter().enumerate() {
        lb[bstart + i * 2..bstart + i * 2 + 2].copy_from_slice(&v.to_be_bytes());
    }
    put32(lb, ds - 4, bests.len() as u32);
    if v5 {
        crate::csum::update(lb, 12);
    }
}

#[allow(clippy::too_many_arguments)]
fn add_leaf(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    name: &[u8],
    ino: u64,
    ftype: u8,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let g = &c.geo;
    let ds = g.dir_size as usize;
    let fsbs = u64::from(g.dir_fsbs);
    let l = layout(c);
    let leaf_off = g.dir_leaf_fsb();
    let Leaf1 {
        lat,
        mut lb,
        lh,
        mut leaf,
        mut bests,
    } = read_leaf1(tx, dir, ext, what)?;
    let bestcount = bests.len();
    let size = data_entry_size(name.len(), g.ftype);
    // A data block with room, by the bests table.
    let mut chosen = None;
    for (db, &best) in bests.iter().enumerate() {
        if best != NULL_DATAOFF && usize::from(best) >= size {
            chosen = Some(db);
            break;
        }
    }
    // When the leaf1 block cannot take the entry (and a new best), the
    // directory converts to node form first.
    let need_bests = bestcount + usize::from(chosen.is_none());
    if !crate::dirnode::leaf1_fits(c, leaf.len() + 1, need_bests) {
        let l1 = Leaf1 {
            lat,
            lb,
            lh,
            leaf,
            bests,
        };
        crate::dirnode::leaf_to_node(tx, dir, ext, l1, what)?;
        let ext2 = crate::bmbt::data_extents(tx, dir, what)?;
        return crate::dirnode::add_node(tx, dir, &ext2, name, ino, ftype, what);
    }
    let (db, at, b, ents) = match chosen {
        Some(db) => {
            let (at, b, ents) = read_data_block(tx, dir, ext, db, what)?;
            (db, at, b, ents)
        }
        None => {
            // A new data block after the last one.
            let db = bestcount;
            if lh + (leaf.len() + 1) * 8 + 4 + (bestcount + 1) * 2 > ds {
                return Err(c.corrupt(
                    &format!("{what} (directory leaf block)"),
                    "no room for a new data block's best after the node-form check".into(),
                ));
            }
            let fo = db as u64 * fsbs;
            if fo + fsbs > leaf_off || ext.iter().any(|e| e.off < fo + fsbs && fo < e.off + e.len) {
                return Err(c.corrupt(
                    &format!("{what} (directory leaf block)"),
                    format!("data block {db} is mapped already"),
                ));
            }
            let mut all = ext.to_vec();
            let at = crate::dirnode::grow_dir(tx, dir, &mut all, fo, what)?;
            let mut b = vec![0u8; ds];
            write_data_header(
                c,
                &mut b,
                if g.v5 { DATA_MAGIC_V3 } else { DATA_MAGIC_V2 },
                at,
                dir.ino,
            );
            set_size(dir, (db as u64 + 1) * u64::from(g.dir_size));
            bests.push(0);
            (db, at, b, Vec::new())
        }
    };
    let new = DEnt {
        off: 0,
        ino,
        name: name.to_vec(),
        ftype,
    };
    let (off, best) = place_entry(tx, &l, (db, at, b, ents), new, "best-free table", what)?;
    bests[db] = best;
    let addr = ((db as u64 * u64::from(g.dir_size) + off as u64) >> 3) as u32;
    leaf.push((hashname(name), addr));
    if lh + leaf.len() * 8 + 4 + bests.len() * 2 > ds {
        return Err(c.corrupt(
            &format!("{what} (directory leaf block)"),
            "no room for the new hash after the node-form check".into(),
        ));
    }
    write_leaf1(&mut lb, lh, g.v5, &leaf, &bests, ds);
    tx.write(lat, lb)?;
    Ok(())
}

/// Put `new` into data block `db` (at byte `at`, bytes `b`, entries
/// `ents`) at the first gap that holds it, and stage the rebuilt block:
/// its byte offset in the block and the block's new best free length.
/// No gap is corruption of whatever promised one (`promised_by`).
pub(crate) fn place_entry(
    tx: &mut Tx,
    l: &Layout,
    (db, at, mut b, mut ents): (usize, u64, Vec<u8>, Vec<DEnt>),
    mut new: DEnt,
    promised_by: &str,
    what: &str,
) -> Result<(usize, u16), FsError> {
    let c = tx.c;
    let ds = b.len();
    let size = data_entry_size(new.name.len(), c.geo.ftype);
    let off = find_gap(c, &ents, l.hdr, ds, size).ok_or_else(|| {
        c.corrupt(
            &format!("{what} (directory block {db})"),
            format!("the {promised_by} promises room the block does not have"),
        )
    })?;
    new.off = off;
    let pos = ents.partition_point(|e| e.off < off);
    ents.insert(pos, new);
    let best = build_area(c, &mut b, l, ds, &ents);
    seal_data(c, &mut b);
    tx.write(at, b)?;
    Ok((off, best))
}

/// Read and verify block 0 of a block-form directory: its byte offset,
/// bytes and entries (with `.` and `..`).
fn read_block_form(
    tx: &Tx,
    dir: &Inode,
    ext: &[Extent],
    what: &str,
) -> Result<(u64, Vec<u8>, Vec<DEnt>), FsError> {
    let c = tx.c;
    let ds = c.geo.dir_size as usize;
    let l = layout(c);
    let at = dir_block_at(c, ext, 0).ok_or_else(|| {
        refuse(
            c,
            what,
            "the directory block is split across extents".into(),
        )
    })?;
    let b = tx.read(at, ds)?;
    let place = format!("{what} (directory block 0)");
    let bad = |d: String| c.corrupt(&place, d);
    let magic = if c.geo.v5 {
        BLOCK_MAGIC_V3
    } else {
        BLOCK_MAGIC_V2
    };
    if be32(&b, 0) != magic {
        return Err(bad("bad magic".into()));
    }
    if c.geo.v5 {
        c.check_v5_header(&b, 4, 8, 24, 40, dir.ino, Some(at >> 9))
            .map_err(bad)?;
    }
    let count = be32(&b, ds - 8) as usize;
    let stale = be32(&b, ds - 4) as usize;
    if count.saturating_mul(8) + 8 > ds - l.hdr || stale > count {
        return Err(bad(format!(
            "tail counts {count} leaf entries, {stale} stale"
        )));
    }
    let leaf_start = ds - 8 - count * 8;
    let ents = parse_area(c, &b, l.hdr, leaf_start, &place)?;
    if count - stale != ents.len() {
        return Err(bad(format!(
            "{} live leaf entries for {} entries",
            count - stale,
            ents.len()
        )));
    }
    Ok((at, b, ents))
}

/// A leaf1 block as read: its byte offset and bytes, the header length,
/// the live (hash, address) entries and the best-free table.
pub(crate) struct Leaf1 {
    pub lat: u64,
    pub lb: Vec<u8>,
    pub lh: usize,
    pub leaf: Vec<(u32, u32)>,
    pub bests: Vec<u16>,
}

fn read_leaf1(tx: &Tx, dir: &Inode, ext: &[Extent], what: &str) -> Result<Leaf1, FsError> {
    let c = tx.c;
    let g = &c.geo;
    let ds = g.dir_size as usize;
    let leaf_off = g.dir_leaf_fsb();
    let lat = dir_block_at(c, ext, leaf_off).ok_or_else(|| {
        c.corrupt(
            &format!("{what} (directory leaf block)"),
            "a leaf-form directory without a leaf block in one extent".into(),
        )
    })?;
    let lb = tx.read(lat, ds)?;
    let place = format!("{what} (directory leaf block)");
    let bad = |d: String| c.corrupt(&place, d);
    let magic = be16(&lb, 8);
    let want = if g.v5 { LEAF1_MAGIC_V3 } else { LEAF1_MAGIC_V2 };
    if magic != want {
        return Err(bad(format!(
            "magic {magic:#x} is not a leaf1 block's, and nothing past it is mapped"
        )));
    }
    let lh = if g.v5 { 64 } else { 16 };
    if g.v5 {
        c.check_v5_header(&lb, 12, 16, 32, 48, dir.ino, Some(lat >> 9))
            .map_err(bad)?;
    }
    if be32(&lb, 0) != 0 || be32(&lb, 4) != 0 {
        return Err(bad("a leaf1 block with siblings".into()));
    }
    let (count_off, stale_off) = if g.v5 { (56, 58) } else { (12, 14) };
    let count = usize::from(be16(&lb, count_off));
    let stale = usize::from(be16(&lb, stale_off));
    let bestcount = be32(&lb, ds - 4) as usize;
    if bestcount == 0
        || bestcount.saturating_mul(2) + 4 + lh + count * 8 > ds
        || stale > count
        || bestcount as u64 * u64::from(g.dir_fsbs) > leaf_off
    {
        return Err(bad(format!(
            "{count} entries ({stale} stale) and {bestcount} bests do not fit"
        )));
    }
    let bstart = ds - 4 - bestcount * 2;
    let bests: Vec<u16> = (0..bestcount).map(|i| be16(&lb, bstart + i * 2)).collect();
    let leaf: Vec<(u32, u32)> = (0..count)
        .map(|i| (be32(&lb, lh + i * 8), be32(&lb, lh + i * 8 + 4)))
        .filter(|&(_, a)| a != 0)
        .collect();
    if leaf.len() != count - stale {
        return Err(bad("stale count does not match the entries".into()));
    }
    Ok(Leaf1 {
        lat,
        lb,
        lh,
        leaf,
        bests,
    })
}

/// Read and verify data block `db` of a leaf-form directory.
pub(crate) fn read_data_block(
    tx: &Tx,
    dir: &Inode,
    ext: &[Extent],
    db: usize,
    what: &str,
) -> Result<(u64, Vec<u8>, Vec<DEnt>), FsError> {
    let c = tx.c;
    let g = &c.geo;
    let ds = g.dir_size as usize;
    let fo = db as u64 * u64::from(g.dir_fsbs);
    let at = dir_block_at(c, ext, fo).ok_or_else(|| {
        refuse(
            c,
            what,
            format!("directory data block {db} is split across extents"),
        )
    })?;
    let b = tx.read(at, ds)?;
    let dplace = format!("{what} (directory block {db})");
    let dmagic = if g.v5 { DATA_MAGIC_V3 } else { DATA_MAGIC_V2 };
    if be32(&b, 0) != dmagic {
        return Err(c.corrupt(&dplace, "bad magic".into()));
    }
    if g.v5 {
        c.check_v5_header(&b, 4, 8, 24, 40, dir.ino, Some(at >> 9))
            .map_err(|d| c.corrupt(&dplace, d))?;
    }
    let ents = parse_area(c, &b, layout(c).hdr, ds, &dplace)?;
    Ok((at, b, ents))
}

/// What to do to an existing entry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// Drop it.
    Remove,
    /// Point it at another inode (of file type `ftype`).
    Retarget { ino: u64, ftype: u8 },
}

pub(crate) fn refuse_change(c: &Ctx, what: &str, why: String) -> FsError {
    FsError::Unsupported {
        fs: c.location.clone(),
        op: format!("change an entry of {what}"),
        why,
    }
}

/// Remove or retarget entry `name` of directory `dir` (`..` may be
/// retargeted, never removed). Returns the inode number the entry held,
/// or `None` when the name is not there. The form is kept: a shortform
/// directory stays shortform, a block or leaf directory keeps its blocks
/// (an emptied leaf-form data block stays, holding one free region).
pub(crate) fn change_entry(
    tx: &mut Tx,
    dir: &mut Inode,
    name: &[u8],
    change: Change,
    what: &str,
) -> Result<Option<u64>, FsError> {
    let c = tx.c;
    if name == b"." || (name == b".." && matches!(change, Change::Remove)) {
        return Err(refuse_change(
            c,
            what,
            "`.` and `..` are never removed".into(),
        ));
    }
    match dir.format {
        FMT_LOCAL => change_shortform(tx, dir, name, change, what),
        FMT_EXTENTS | FMT_BTREE => {
            let ext = crate::bmbt::data_extents(tx, dir, what)?;
            let g = &c.geo;
            let end = ext.last().map_or(0, |e| e.off + e.len);
            if dir.size == u64::from(g.dir_size) && end == u64::from(g.dir_fsbs) {
                change_block(tx, dir, &ext, name, change, what)
            } else if crate::dirnode::is_node(c, &ext) {
                crate::dirnode::change_node(tx, dir, &ext, name, change, what)
            } else {
                change_leaf(tx, dir, &ext, name, change, what)
            }
        }
        _ => Err(refuse_change(
            c,
            what,
            format!("the directory's data fork has format {}", dir.format),
        )),
    }
}

fn change_shortform(
    tx: &mut Tx,
    dir: &mut Inode,
    name: &[u8],
    change: Change,
    what: &str,
) -> Result<Option<u64>, FsError> {
    let c = tx.c;
    let (mut parent, mut ents) = sf_entries(c, dir, what)?;
    // A retarget to an inode number needing 8 bytes may make every entry
    // grow past the inode: then, as the kernel does, the entry goes and
    // the directory is converted to block form with it re-added.
    let mut readd = None;
    let old = if name == b".." {
        let old = parent;
        if let Change::Retarget { ino, .. } = change {
            parent = ino;
        }
        old
    } else {
        let Some(i) = ents.iter().position(|e| e.name == name) else {
            return Ok(None);
        };
        let old = ents[i].ino;
        match change {
            Change::Remove => {
                ents.remove(i);
            }
            Change::Retarget { ino, ftype } => {
                ents[i].ino = ino;
                if c.geo.ftype {
                    ents[i].ftype = ftype;
                }
                readd = Some((i, ino, ftype));
            }
        }
        old
    };
    let bytes = sf_encode(c, parent, &ents, what)?;
    if sf_store(dir, &bytes) {
        return Ok(Some(old));
    }
    let Some((i, ino, ftype)) = readd else {
        // `..` pointing at a parent whose number needs 8 bytes, in a
        // directory that then no longer fits in the inode.
        return Err(refuse_change(
            c,
            what,
            "the new parent's inode number needs 8-byte shortform entries, which no longer fit in the inode (converting to block form here is not implemented)".into(),
        ));
    };
    ents.remove(i);
    let bytes = sf_encode(c, parent, &ents, what)?;
    if !sf_store(dir, &bytes) {
        return Err(c.corrupt(what, "a shortform directory grew by losing an entry".into()));
    }
    sf_to_block(tx, dir, name, ino, ftype, what)?;
    Ok(Some(old))
}

fn change_block(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    name: &[u8],
    change: Change,
    what: &str,
) -> Result<Option<u64>, FsError> {
    let c = tx.c;
    let ds = c.geo.dir_size as usize;
    let l = layout(c);
    let (at, mut b, mut ents) = read_block_form(tx, dir, ext, what)?;
    let Some(i) = ents.iter().position(|e| e.name == name) else {
        return Ok(None);
    };
    let old = ents[i].ino;
    match change {
        Change::Remove => {
            ents.remove(i);
        }
        Change::Retarget { ino, ftype } => {
            ents[i].ino = ino;
            ents[i].ftype = ftype;
        }
    }
    // The leaf shrinks with the entries (no stale entries are kept); the
    // space it frees joins the data area.
    let leaf_start = ds - 8 - ents.len() * 8;
    build_area(c, &mut b, &l, leaf_start, &ents);
    write_block_leaf(&mut b, &ents, ds);
    seal_data(c, &mut b);
    tx.write(at, b)?;
    Ok(Some(old))
}

fn change_leaf(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    name: &[u8],
    change: Change,
    what: &str,
) -> Result<Option<u64>, FsError> {
    let c = tx.c;
    let g = &c.geo;
    let ds = g.dir_size as usize;
    let l = layout(c);
    let Leaf1 {
        lat,
        mut lb,
        lh,
        mut leaf,
        mut bests,
    } = read_leaf1(tx, dir, ext, what)?;
    let h = hashname(name);
    // Each leaf entry with the name's hash points at a candidate.
    for k in 0..leaf.len() {
        let (lh_, addr) = leaf[k];
        if lh_ != h {
            continue;
        }
        let byte = u64::from(addr) * 8;
        let db = (byte / u64::from(g.dir_size)) as usize;
        let off = (byte % u64::from(g.dir_size)) as usize;
        if db >= bests.len() {
            return Err(c.corrupt(
                &format!("{what} (directory leaf block)"),
                format!(
                    "entry address {addr:#x} beyond the {} data blocks",
                    bests.len()
                ),
            ));
        }
        let (at, mut b, mut ents) = read_data_block(tx, dir, ext, db, what)?;
        let Some(i) = ents.iter().position(|e| e.off == off) else {
            return Err(c.corrupt(
                &format!("{what} (directory block {db})"),
                format!("the leaf points at offset {off}, where no entry starts"),
            ));
        };
        if ents[i].name != name {
            continue;
        }
        let old = ents[i].ino;
        match change {
            Change::Remove => {
                ents.remove(i);
            }
            Change::Retarget { ino, ftype } => {
                ents[i].ino = ino;
                ents[i].ftype = ftype;
            }
        }
        let best = build_area(c, &mut b, &l, ds, &ents);
        if !matches!(change, Change::Remove) {
            seal_data(c, &mut b);
            tx.write(at, b)?;
            return Ok(Some(old));
        }
        leaf.remove(k);
        if ents.is_empty() && db > 0 {
            // An empty data block is dropped (xfs_repair junks one that
            // stays): a hole in the middle, the table trimmed at the end.
            drop_data_block(tx, dir, ext, db, &mut bests, what)?;
        } else {
            seal_data(c, &mut b);
            tx.write(at, b)?;
            bests[db] = best;
        }
        write_leaf1(&mut lb, lh, g.v5, &leaf, &bests, ds);
        tx.write(lat, lb)?;
        return Ok(Some(old));
    }
    Ok(None)
}

/// Free the directory block at file block `fo` (`fsbs` blocks, inside one
/// extent): the extent list without it (split in two when the block is in
/// its middle) is written to the inode and returned, and `nblocks` drops.
pub(crate) fn unmap_dir_block(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    fo: u64,
    fsbs: u64,
    what: &str,
) -> Result<Vec<Extent>, FsError> {
    let c = tx.c;
    let mut rest: Vec<Extent> = Vec::with_capacity(ext.len() + 1);
    let mut freed = None;
    for e in ext {
        let end = e.off.saturating_add(e.len);
        if e.off <= fo && fo.saturating_add(fsbs) <= end {
            let fsb = e.fsb + (fo - e.off);
            freed = Some(fsb);
            if e.off < fo {
                rest.push(Extent {
                    len: fo - e.off,
                    ..*e
                });
            }
            let after = fo.saturating_add(fsbs);
            if after < end {
                rest.push(Extent {
                    off: after,
                    fsb: fsb.saturating_add(fsbs),
                    len: end - after,
                    unwritten: e.unwritten,
                });
            }
        } else {
            rest.push(*e);
        }
    }
    let Some(fsb) = freed else {
        return Err(refuse_change(
            c,
            what,
            format!("directory block at file block {fo} is split across extents"),
        ));
    };
    crate::alloc::free_for(tx, fsb, fsbs, crate::alloc::Owner::data(dir.ino, fo))?;
    set_extents(tx, dir, &rest, what)?;
    let nb = dir.nblocks.checked_sub(fsbs).ok_or_else(|| {
        c.corrupt(
            what,
            "the directory counts fewer blocks than it maps".into(),
        )
    })?;
    set_nblocks(dir, nb);
    Ok(rest)
}

/// Free empty data block `db` of a leaf-form directory: its blocks go
/// back to the free space, its mapping and best-free entry go (a hole in
/// the middle keeps a null entry; at the end, the table and the directory
/// size shrink past any holes).
fn drop_data_block(
    tx: &mut Tx,
    dir: &mut Inode,
    ext: &[Extent],
    db: usize,
    bests: &mut Vec<u16>,
    what: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    let g = &c.geo;
    let fsbs = u64::from(g.dir_fsbs);
    let fo = db as u64 * fsbs;
    unmap_dir_block(tx, dir, ext, fo, fsbs, what)?;
    if db + 1 == bests.len() {
        bests.pop();
        while bests.last() == Some(&NULL_DATAOFF) {
            bests.pop();
        }
        set_size(dir, bests.len() as u64 * u64::from(g.dir_size));
    } else {
        bests[db] = NULL_DATAOFF;
    }
    Ok(())
}
