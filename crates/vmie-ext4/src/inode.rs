//! Inode fields, block maps (extent trees and indirect blocks) and xattrs
//! in the inode body.

use vmie_guestfs::{FsError, Xattr};

use crate::geo::{le16, le32, put16, put32};
use crate::tx::Tx;

pub(crate) const S_IFMT: u16 = 0o170000;
pub(crate) const S_IFREG: u16 = 0o100000;
pub(crate) const S_IFDIR: u16 = 0o040000;
pub(crate) const S_IFLNK: u16 = 0o120000;

pub(crate) const FL_IMMUTABLE: u32 = 0x10;
pub(crate) const FL_APPEND: u32 = 0x20;
pub(crate) const FL_ENCRYPT: u32 = 0x800;
pub(crate) const FL_INDEX: u32 = 0x1000;
pub(crate) const FL_HUGE_FILE: u32 = 0x40000;
pub(crate) const FL_EXTENTS: u32 = 0x80000;
pub(crate) const FL_VERITY: u32 = 0x100000;
pub(crate) const FL_EA_INODE: u32 = 0x200000;
pub(crate) const FL_INLINE_DATA: u32 = 0x1000_0000;
pub(crate) const FL_CASEFOLD: u32 = 0x4000_0000;

const EXT_MAGIC: u16 = 0xF30A;
const MAX_DEPTH: u16 = 5;

pub(crate) fn mode(raw: &[u8]) -> u16 {
    le16(raw, 0)
}
pub(crate) fn flags(raw: &[u8]) -> u32 {
    le32(raw, 0x20)
}
pub(crate) fn size(raw: &[u8]) -> u64 {
    u64::from(le32(raw, 4)) | (u64::from(le32(raw, 0x6C)) << 32)
}
pub(crate) fn set_size(raw: &mut [u8], s: u64) {
    put32(raw, 4, s as u32);
    put32(raw, 0x6C, (s >> 32) as u32);
}
pub(crate) fn links(raw: &[u8]) -> u16 {
    le16(raw, 0x1A)
}
pub(crate) fn set_links(raw: &mut [u8], n: u16) {
    put16(raw, 0x1A, n);
}
pub(crate) fn generation(raw: &[u8]) -> u32 {
    le32(raw, 0x64)
}
pub(crate) fn file_acl(raw: &[u8]) -> u64 {
    u64::from(le32(raw, 0x68)) | (u64::from(le16(raw, 0x76)) << 32)
}
pub(crate) fn is_dir(raw: &[u8]) -> bool {
    mode(raw) & S_IFMT == S_IFDIR
}

fn extra_isize(raw: &[u8]) -> usize {
    if raw.len() > 128 {
        usize::from(le16(raw, 0x80))
    } else {
        0
    }
}

fn set_time(raw: &mut [u8], base: usize, extra: usize, now: (i64, u32)) {
    put32(raw, base, now.0 as u32);
    if extra + 4 <= 128 + extra_isize(raw) && extra + 4 <= raw.len() {
        let epoch = ((now.0 >> 32) & 3) as u32;
        put32(raw, extra, (now.1 << 2) | epoch);
    }
}

/// Set mtime and ctime.
pub(crate) fn touch_mc(raw: &mut [u8], now: (i64, u32)) {
    set_time(raw, 0x10, 0x88, now);
    set_time(raw, 0x0C, 0x84, now);
}

/// Set ctime only.
pub(crate) fn touch_c(raw: &mut [u8], now: (i64, u32)) {
    set_time(raw, 0x0C, 0x84, now);
}

/// A fresh inode.
pub(crate) fn new_inode(
    tx: &Tx<'_>,
    mode_bits: u16,
    uid: u32,
    gid: u32,
    nlink: u16,
    gen: u32,
) -> Vec<u8> {
    let isz = tx.g.inode_size;
    let mut raw = vec![0u8; isz];
    put16(&mut raw, 0, mode_bits);
    put16(&mut raw, 2, uid as u16);
    put16(&mut raw, 0x78, (uid >> 16) as u16);
    put16(&mut raw, 0x18, gid as u16);
    put16(&mut raw, 0x7A, (gid >> 16) as u16);
    set_links(&mut raw, nlink);
    put32(&mut raw, 0x64, gen);
    if isz >= 160 {
        let want = usize::from(tx.g.want_extra_isize).max(32).min(isz - 128);
        put16(&mut raw, 0x80, (want & !3) as u16);
    }
    let now = tx.now;
    set_time(&mut raw, 0x08, 0x8C, now);
    set_time(&mut raw, 0x90, 0x94, now);
    touch_mc(&mut raw, now);
    raw
}

/// Set i_blocks for `n` filesystem blocks (data, map and xattr block).
pub(crate) fn set_blocks(tx: &Tx<'_>, raw: &mut [u8], n: u64) -> Result<(), FsError> {
    let fl = flags(raw);
    let v = if fl & FL_HUGE_FILE != 0 {
        n
    } else {
        n * (tx.g.bs / 512)
    };
    let huge = tx.g.ro & crate::geo::RO_HUGE_FILE != 0;
    if v > u64::from(u32::MAX) && (!huge || v >= 1 << 48) {
        return Err(tx.unsupported("write", "file too large for i_blocks"));
    }
    put32(raw, 0x1C, v as u32);
    put16(raw, 0x74, if huge { (v >> 32) as u16 } else { 0 });
    Ok(())
}

/// The block map of an inode: data runs (logical, physical, len) and the
/// blocks holding the map itself.
#[derive(Debug, Default)]
pub(crate) struct BlockMap {
    pub runs: Vec<(u64, u64, u64)>,
    pub meta: Vec<u64>,
}

impl BlockMap {
    fn push(&mut self, l: u64, p: u64, n: u64) {
        if let Some((ll, pp, nn)) = self.runs.last_mut() {
            if *ll + *nn == l && *pp + *nn == p {
                *nn += n;
                return;
            }
        }
        self.runs.push((l, p, n));
    }
}

/// Whether the inode maps its blocks at all (not a fast symlink, not inline).
pub(crate) fn has_block_map(raw: &[u8]) -> bool {
    let fl = flags(raw);
    if fl & FL_INLINE_DATA != 0 {
        return false;
    }
    // Fast symlink (target in i_block): the e2fsprogs and kernel rule.
    let sz = size(raw);
    !(mode(raw) & S_IFMT == S_IFLNK && sz > 0 && sz < 60)
}

fn check_header(tx: &Tx<'_>, b: &[u8], cap: usize, what: &str) -> Result<(u16, u16), FsError> {
    let n = le16(b, 2);
    let max = le16(b, 4);
    let depth = le16(b, 6);
    if le16(b, 0) != EXT_MAGIC || n > max || 12 + usize::from(max) * 12 > cap || depth > MAX_DEPTH {
        return Err(tx.corrupt(what.to_string(), "bad extent header"));
    }
    Ok((n, depth))
}

fn walk_extents(
    tx: &mut Tx<'_>,
    node: &[u8],
    cap: usize,
    want_depth: Option<u16>,
    map: &mut BlockMap,
    what: &str,
) -> Result<(), FsError> {
    let (n, depth) = check_header(tx, node, cap, what)?;
    if want_depth.is_some_and(|d| d != depth) {
        return Err(tx.corrupt(what.to_string(), "extent tree depth mismatch"));
    }
    for i in 0..usize::from(n) {
        let o = 12 + i * 12;
        let lblk = u64::from(le32(node, o));
        if depth == 0 {
            let mut len = u64::from(le16(node, o + 4));
            if len > 32768 {
                len -= 32768;
            }
            let p = u64::from(le32(node, o + 8)) | (u64::from(le16(node, o + 6)) << 32);
            if p + len > tx.g.blocks_count || p < tx.g.first_data_block {
                return Err(tx.corrupt(
                    what.to_string(),
                    format!("extent at block {p} outside the filesystem"),
                ));
            }
            map.push(lblk, p, len);
        } else {
            let child = u64::from(le32(node, o + 4)) | (u64::from(le16(node, o + 8)) << 32);
            if map.meta.len() as u64 >= tx.g.blocks_count {
                return Err(tx.corrupt(what.to_string(), "extent tree too large"));
            }
            map.meta.push(child);
            let blk = tx.read_blk(child)?;
            let cap = blk.len();
            walk_extents(tx, &blk, cap, Some(depth - 1), map, what)?;
        }
    }
    Ok(())
}

fn walk_indirect(
    tx: &mut Tx<'_>,
    blk: u64,
    level: u32,
    lstart: u64,
    map: &mut BlockMap,
    what: &str,
) -> Result<(), FsError> {
    if blk >= tx.g.blocks_count || blk < tx.g.first_data_block {
        return Err(tx.corrupt(
            what.to_string(),
            format!("indirect block {blk} outside the filesystem"),
        ));
    }
    if map.meta.len() as u64 >= tx.g.blocks_count {
        return Err(tx.corrupt(what.to_string(), "too many indirect blocks"));
    }
    map.meta.push(blk);
    let data = tx.read_blk(blk)?;
    let per = tx.g.bs / 4;
    let span = per.pow(level - 1);
    for i in 0..per {
        let p = u64::from(le32(&data, (i * 4) as usize));
        if p == 0 {
            continue;
        }
        let l = lstart + i * span;
        if level == 1 {
            if p >= tx.g.blocks_count || p < tx.g.first_data_block {
                return Err(tx.corrupt(
                    what.to_string(),
                    format!("block {p} outside the filesystem"),
                ));
            }
            map.push(l, p, 1);
        } else {
            walk_indirect(tx, p, level - 1, l, map, what)?;
        }
    }
    Ok(())
}

/// Read the block map of inode `ino`.
pub(crate) fn read_map(tx: &mut Tx<'_>, ino: u32, raw: &[u8]) -> Result<BlockMap, FsError> {
    let mut map = BlockMap::default();
    if !has_block_map(raw) {
        return Ok(map);
    }
    let what = format!("inode {ino}");
    let iblock = raw[0x28..0x28 + 60].to_vec();
    if flags(raw) & FL_EXTENTS != 0 {
        walk_extents(tx, &iblock, 60, None, &mut map, &what)?;
    } else {
        let per = tx.g.bs / 4;
        for i in 0..12u64 {
            let p = u64::from(le32(&iblock, (i * 4) as usize));
            if p != 0 {
                if p >= tx.g.blocks_count || p < tx.g.first_data_block {
                    return Err(tx.corrupt(what, format!("block {p} outside the filesystem")));
                }
                map.push(i, p, 1);
            }
        }
        let mut lstart = 12u64;
        for level in 1..=3u32 {
            let p = u64::from(le32(&iblock, 48 + 4 * (level as usize - 1)));
            if p != 0 {
                walk_indirect(tx, p, level, lstart, &mut map, &what)?;
            }
            lstart += per.pow(level);
        }
    }
    let mut used: Vec<(u64, u64)> = map.runs.iter().map(|r| (r.1, r.2)).collect();
    used.extend(map.meta.iter().map(|&b| (b, 1)));
    tx.note_mapped(ino, &used)?;
    Ok(map)
}

/// Free every block the map holds.
pub(crate) fn free_map(tx: &mut Tx<'_>, map: &BlockMap) -> Result<(), FsError> {
    let mut runs: Vec<(u64, u64)> = map.runs.iter().map(|r| (r.1, r.2)).collect();
    runs.extend(map.meta.iter().map(|&b| (b, 1)));
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, l) in runs {
        match merged.last_mut() {
            Some((ms, ml)) if *ms + *ml == s => *ml += l,
            Some((ms, ml)) if *ms + *ml > s => {
                return Err(tx.corrupt(
                    format!("block {s}"),
                    format!("block mapped twice (run at {ms}+{ml})"),
                ))
            }
            _ => merged.push((s, l)),
        }
    }
    for (s, l) in merged {
        tx.free_blocks(s, l)?;
    }
    Ok(())
}

/// Write a new block map for `runs` (physical, len), contiguous from logical
/// block 0, into `raw`'s i_block (allocating map blocks near `goal`).
/// Returns the map blocks.
pub(crate) fn write_map(
    tx: &mut Tx<'_>,
    ino: u32,
    raw: &mut [u8],
    runs: &[(u64, u64)],
    goal: u64,
) -> Result<Vec<u64>, FsError> {
    let bs = tx.g.bs as usize;
    let mut meta = Vec::new();
    let mut iblock = [0u8; 60];
    if flags(raw) & FL_EXTENTS != 0 {
        // Leaf items: (lblk, phys, len).
        let mut items: Vec<(u64, u64, u64)> = Vec::new();
        let mut l = 0u64;
        for &(p, n) in runs {
            let mut done = 0;
            while done < n {
                let k = (n - done).min(32768);
                items.push((l + done, p + done, k));
                done += k;
            }
            l += n;
        }
        if l > u64::from(u32::MAX) {
            return Err(tx.unsupported("write", "file too large for an extent tree"));
        }
        let seed = tx.inode_seed(ino, generation(raw));
        let cap = (bs - 12) / 12;
        let mut depth = 0u16;
        let mut leaf = true;
        // Index items at upper levels are (lblk, child, 0).
        while items.len() > 4 {
            if depth >= MAX_DEPTH {
                return Err(tx.unsupported("write", "extent tree too deep"));
            }
            let chunks: Vec<Vec<(u64, u64, u64)>> = items.chunks(cap).map(<[_]>::to_vec).collect();
            let blocks = tx.alloc_blocks(chunks.len() as u64, goal)?;
            let blist: Vec<u64> = blocks.iter().flat_map(|&(s, n)| s..s + n).collect();
            let mut up = Vec::new();
            for (chunk, &b) in chunks.iter().zip(&blist) {
                let mut blk = vec![0u8; bs];
                put16(&mut blk, 0, EXT_MAGIC);
                put16(&mut blk, 2, chunk.len() as u16);
                put16(&mut blk, 4, cap as u16);
                put16(&mut blk, 6, depth);
                for (i, it) in chunk.iter().enumerate() {
                    encode_item(&mut blk[12 + i * 12..24 + i * 12], *it, leaf);
                }
                if tx.g.metadata_csum() {
                    let t = 12 + cap * 12;
                    let c = crate::csum::crc32c(seed, &blk[..t]);
                    put32(&mut blk, t, c);
                }
                tx.write_blk(b, blk)?;
                up.push((chunk[0].0, b, 0));
                meta.push(b);
            }
            items = up;
            leaf = false;
            depth += 1;
        }
        put16(&mut iblock, 0, EXT_MAGIC);
        put16(&mut iblock, 2, items.len() as u16);
        put16(&mut iblock, 4, 4);
        put16(&mut iblock, 6, depth);
        for (i, it) in items.iter().enumerate() {
            encode_item(&mut iblock[12 + i * 12..24 + i * 12], *it, leaf);
        }
    } else {
        let list: Vec<u64> = runs.iter().flat_map(|&(s, n)| s..s + n).collect();
        let per = bs / 4;
        let n = list.len();
        if n > 12 + per + per * per {
            return Err(tx.unsupported(
                "write",
                "file needs triple-indirect blocks (not implemented)",
            ));
        }
        for (i, &p) in list.iter().take(12).enumerate() {
            put32(&mut iblock, i * 4, p as u32);
        }
        let single = n.saturating_sub(12).min(per);
        let dbl = n.saturating_sub(12 + per);
        let nind = usize::from(single > 0) + if dbl > 0 { 1 + dbl.div_ceil(per) } else { 0 };
        let blocks = tx.alloc_blocks(nind as u64, goal)?;
        let mut blist = blocks.iter().flat_map(|&(s, n)| s..s + n);
        let mut next = |tx: &Tx<'_>| {
            blist
                .next()
                .ok_or_else(|| tx.corrupt("allocator", "short allocation"))
        };
        if single > 0 {
            let b = next(tx)?;
            let mut blk = vec![0u8; bs];
            for (i, &p) in list[12..12 + single].iter().enumerate() {
                put32(&mut blk, i * 4, p as u32);
            }
            tx.write_blk(b, blk)?;
            put32(&mut iblock, 48, b as u32);
            meta.push(b);
        }
        if dbl > 0 {
            let d = next(tx)?;
            meta.push(d);
            let mut dblk = vec![0u8; bs];
            for (j, chunk) in list[12 + per..].chunks(per).enumerate() {
                let b = next(tx)?;
                let mut blk = vec![0u8; bs];
                for (i, &p) in chunk.iter().enumerate() {
                    put32(&mut blk, i * 4, p as u32);
                }
                tx.write_blk(b, blk)?;
                put32(&mut dblk, j * 4, b as u32);
                meta.push(b);
            }
            tx.write_blk(d, dblk)?;
            put32(&mut iblock, 52, d as u32);
        }
    }
    raw[0x28..0x28 + 60].copy_from_slice(&iblock);
    Ok(meta)
}

fn encode_item(dst: &mut [u8], (l, p, n): (u64, u64, u64), leaf: bool) {
    put32(dst, 0, l as u32);
    if leaf {
        put16(dst, 4, n as u16);
        put16(dst, 6, (p >> 32) as u16);
        put32(dst, 8, p as u32);
    } else {
        put32(dst, 4, p as u32);
        put16(dst, 8, (p >> 32) as u16);
        put16(dst, 10, 0);
    }
}

fn xattr_prefix(name: &[u8]) -> Option<(u8, &[u8])> {
    const TABLE: [(&[u8], u8); 6] = [
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
        (b"user.", 1),
        (b"trusted.", 4),
        (b"security.", 6),
        (b"system.", 7),
    ];
    for (p, idx) in TABLE {
        if let Some(rest) = name.strip_prefix(p) {
            if idx == 2 || idx == 3 {
                if rest.is_empty() {
                    return Some((idx, rest));
                }
                continue;
            }
            return Some((idx, rest));
        }
    }
    None
}

struct XEntry {
    idx: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

fn xentries(tx: &Tx<'_>, xattrs: &[Xattr]) -> Result<Vec<XEntry>, FsError> {
    let mut out = Vec::new();
    for x in xattrs {
        let (idx, suffix) = xattr_prefix(&x.name).ok_or_else(|| {
            tx.unsupported(
                "set xattr",
                format!("unknown namespace in {}", String::from_utf8_lossy(&x.name)),
            )
        })?;
        if suffix.len() > 255 || x.value.len() > tx.g.bs as usize {
            return Err(tx.unsupported("set xattr", "name or value too long"));
        }
        out.push(XEntry {
            idx,
            name: suffix.to_vec(),
            value: x.value.clone(),
        });
    }
    // The block format keeps entries sorted (index, name length, name).
    out.sort_by(|a, b| (a.idx, a.name.len(), &a.name).cmp(&(b.idx, b.name.len(), &b.name)));
    Ok(out)
}

/// Hash of one xattr entry, as the kernel computes it for xattr blocks.
fn xattr_entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    let mut v = value.to_vec();
    v.resize(value.len().div_ceil(4) * 4, 0);
    for w in v.chunks(4) {
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    h
}

/// Lay `entries` out from `first` (entry table) with values packed down from
/// `end`, offsets relative to `vbase`. `None` if they do not fit.
fn lay_out(
    area: &mut [u8],
    first: usize,
    vbase: usize,
    end: usize,
    entries: &[XEntry],
    hashes: bool,
) -> Option<()> {
    let mut epos = first;
    let mut vend = end;
    for e in entries {
        let esize = (16 + e.name.len() + 3) & !3;
        let vsize = (e.value.len() + 3) & !3;
        if vend < vsize || vend - vsize < epos + esize + 4 {
            return None;
        }
        vend -= vsize;
        let ent = area.get_mut(epos..epos + esize)?;
        ent[0] = e.name.len() as u8;
        ent[1] = e.idx;
        put16(ent, 2, (vend - vbase) as u16);
        put32(ent, 8, e.value.len() as u32);
        if hashes {
            put32(ent, 12, xattr_entry_hash(&e.name, &e.value));
        }
        ent[16..16 + e.name.len()].copy_from_slice(&e.name);
        area.get_mut(vend..vend + e.value.len())?
            .copy_from_slice(&e.value);
        epos += esize;
    }
    Some(())
}

/// Put `xattrs` on a fresh inode: in the inode body when they fit, else
/// the contents of a new xattr block, returned for the caller to place
/// (see [`finish_xattr_block`]).
pub(crate) fn set_new_xattrs(
    tx: &Tx<'_>,
    raw: &mut [u8],
    xattrs: &[Xattr],
) -> Result<Option<Vec<u8>>, FsError> {
    if xattrs.is_empty() {
        return Ok(None);
    }
    let entries = xentries(tx, xattrs)?;
    let start = 128 + extra_isize(raw);
    if raw.len() > 128 && start + 8 <= raw.len() {
        let mut body = raw.to_vec();
        let end = body.len();
        if lay_out(&mut body, start + 4, start + 4, end, &entries, false).is_some() {
            put32(&mut body, start, 0xEA02_0000);
            raw.copy_from_slice(&body);
            return Ok(None);
        }
    }
    let bs = tx.g.bs as usize;
    let mut blk = vec![0u8; bs];
    if lay_out(&mut blk, 32, 0, bs, &entries, true).is_none() {
        return Err(tx.unsupported(
            "set xattrs",
            "the extended attributes do not fit in one xattr block",
        ));
    }
    put32(&mut blk, 0, 0xEA02_0000);
    put32(&mut blk, 4, 1);
    put32(&mut blk, 8, 1);
    let mut h: u32 = 0;
    let mut pos = 32;
    for e in &entries {
        let eh = le32(&blk, pos + 12);
        h = (h << 16) ^ (h >> 16) ^ eh;
        pos += (16 + e.name.len() + 3) & !3;
    }
    put32(&mut blk, 0x0C, h);
    Ok(Some(blk))
}

/// Checksum an xattr block about to be written at block `b`.
pub(crate) fn finish_xattr_block(tx: &Tx<'_>, blk: &mut [u8], b: u64) {
    if tx.g.metadata_csum() {
        put32(blk, 0x10, 0);
        let c = crate::csum::crc32c(tx.g.csum_seed, &b.to_le_bytes());
        let c = crate::csum::crc32c(c, blk);
        put32(blk, 0x10, c);
    }
}
