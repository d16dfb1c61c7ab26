//! Space and inode allocation in the AG structures: free extents are
//! taken from and returned to the bnobt and cntbt (which split, merge and
//! change height as needed, their blocks coming from and going to the
//! AGFL), free inodes from the inode chunks (inobt, finobt; their blocks
//! come from the free space). The AGFL is kept between the kernel's
//! minimum (xfs_alloc_min_freelist) and its capacity around every change
//! of the free space. The AGF and AGI are verified before use and every
//! change to them re-reads the staged copy, so changes made underneath
//! (a new root, AGFL counters) are never overwritten.

use vmie_guestfs::FsError;

use crate::be::{be16, be32, be64, put32, put64};
use crate::btree::{self, Bt, Source, BNO, CNT, FINO, INO, REFC};
pub(crate) use crate::rmap::Owner;
use crate::sb::{
    INCOMPAT_SPINODES, RO_COMPAT_FINOBT, RO_COMPAT_INOBTCNT, RO_COMPAT_REFLINK, RO_COMPAT_RMAPBT,
};
use crate::tx::Tx;
use crate::Ctx;

const AGF_MAGIC: u32 = 0x5841_4746;
const AGI_MAGIC: u32 = 0x5841_4749;
/// Longest extent one bmbt record maps (MAXEXTLEN).
pub(crate) const MAX_EXTLEN: u64 = (1 << 21) - 1;
const NULL_AGINO: u32 = 0xFFFF_FFFF;

/// A free extent taken: AG-encoded first block and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Got {
    pub fsb: u64,
    pub len: u64,
}

impl Ctx {
    fn ag_start(&self, agno: u32) -> u64 {
        u64::from(agno) * u64::from(self.geo.agblocks) * u64::from(self.geo.block_size)
    }

    /// Blocks in AG `agno` (the last one may be shorter).
    pub fn ag_len(&self, agno: u32) -> u32 {
        let g = &self.geo;
        let before = u64::from(agno) * u64::from(g.agblocks);
        g.dblocks.saturating_sub(before).min(u64::from(g.agblocks)) as u32
    }
}

pub(crate) fn refuse(c: &Ctx, why: String) -> FsError {
    FsError::Unsupported {
        fs: c.location.clone(),
        op: "write".into(),
        why,
    }
}

/// Where an AG header lives and how it is checked.
struct AgHeader {
    name: &'static str,
    /// Sector of the AG it occupies (AGF 1, AGI 2).
    sector: u64,
    magic: u32,
    crc_off: usize,
    uuid_off: usize,
}

const AGF: AgHeader = AgHeader {
    name: "AGF",
    sector: 1,
    magic: AGF_MAGIC,
    crc_off: 216,
    uuid_off: 64,
};

const AGI: AgHeader = AgHeader {
    name: "AGI",
    sector: 2,
    magic: AGI_MAGIC,
    crc_off: 312,
    uuid_off: 296,
};

/// The refusal of the AGF or AGI of `agno`, saying `why`.
fn ag_bad<'t>(tx: &'t Tx, agno: u32, h: &AgHeader) -> impl Fn(String) -> FsError + 't {
    let place = format!("{} of AG {agno}", h.name);
    move |why: String| tx.c.corrupt(&place, why)
}

/// Read the AGF or AGI of `agno` and check what both share: magic,
/// version, v5 CRC and UUID, AG number and length. Returns (byte offset,
/// sector bytes, AG length).
fn ag_header(tx: &Tx, agno: u32, h: &AgHeader) -> Result<(u64, Vec<u8>, u32), FsError> {
    let c = tx.c;
    let sect = c.geo.sect_size as usize;
    let at = c.ag_start(agno) + h.sector * sect as u64;
    let b = tx.read(at, sect)?;
    let bad = ag_bad(tx, agno, h);
    if be32(&b, 0) != h.magic || be32(&b, 4) != 1 {
        return Err(bad("bad magic or version".into()));
    }
    if c.geo.v5 {
        if !crate::csum::verify(&b, h.crc_off) {
            return Err(bad("CRC mismatch".into()));
        }
        if b.get(h.uuid_off..h.uuid_off + 16) != Some(&c.geo.meta_uuid[..]) {
            return Err(bad("UUID is not this filesystem's".into()));
        }
    }
    let len = c.ag_len(agno);
    if be32(&b, 8) != agno || be32(&b, 12) != len {
        return Err(bad(format!(
            "records AG {} of {} blocks (expected {agno} of {len})",
            be32(&b, 8),
            be32(&b, 12)
        )));
    }
    Ok((at, b, len))
}

/// Read and verify the AGF of `agno`: (byte offset, sector bytes).
pub(crate) fn agf(tx: &Tx, agno: u32) -> Result<(u64, Vec<u8>), FsError> {
    let (at, b, len) = ag_header(tx, agno, &AGF)?;
    let bad = ag_bad(tx, agno, &AGF);
    let free = be32(&b, 52);
    let longest = be32(&b, 56);
    if free > len || longest > free {
        return Err(bad(format!("{free} free blocks, longest {longest}")));
    }
    Ok((at, b))
}

fn seal_agf(tx: &Tx, b: &mut [u8]) {
    if tx.c.geo.v5 {
        crate::csum::update(b, AGF.crc_off);
    }
}

fn agi(tx: &Tx, agno: u32) -> Result<(u64, Vec<u8>), FsError> {
    let (at, b, _) = ag_header(tx, agno, &AGI)?;
    let bad = ag_bad(tx, agno, &AGI);
    if be32(&b, 28) > be32(&b, 16) {
        return Err(bad("more free inodes than inodes".into()));
    }
    Ok((at, b))
}

fn seal_agi(tx: &Tx, b: &mut [u8]) {
    if tx.c.geo.v5 {
        crate::csum::update(b, AGI.crc_off);
    }
}

/// The inode B+tree (`fino`: the free-inode one) of `agno`, from its AGI.
fn bt_from_agi(tx: &Tx, agno: u32, agi: &[u8], fino: bool) -> Bt {
    let (spec, root, levels) = if fino {
        (FINO, be32(agi, 328), be32(agi, 332))
    } else {
        (INO, be32(agi, 20), be32(agi, 24))
    };
    Bt {
        spec,
        agno,
        root,
        levels,
        aglen: tx.c.ag_len(agno),
    }
}

fn bt_from_agf(tx: &Tx, agno: u32, agf: &[u8], cnt: bool) -> Bt {
    let (spec, root, levels) = if cnt {
        (CNT, be32(agf, 20), be32(agf, 32))
    } else {
        (BNO, be32(agf, 16), be32(agf, 28))
    };
    Bt {
        spec,
        agno,
        root,
        levels,
        aglen: tx.c.ag_len(agno),
    }
}

/// Blocks each AG keeps free for the kernel's own reservations (btree
/// growth, the AGFL, per-AG metadata reservations): we never allocate
/// into them.
fn reserve(c: &Ctx, agno: u32) -> u32 {
    c.ag_len(agno) / 32 + 64
}

/// Allocate `want` blocks for `who` in AG `pref` (or the next AGs):
/// first at `near` if that block starts a free extent, then best fit by
/// size. Every piece is a multiple of `align` blocks long (a directory
/// block) and at most `max_pieces` pieces are taken. Each piece is
/// reverse-mapped (on rmapbt volumes), an inode's pieces at consecutive
/// file offsets from `who.off`.
pub(crate) fn alloc_for(
    tx: &mut Tx,
    who: Owner,
    pref: u32,
    want: u64,
    align: u64,
    near: Option<u64>,
    max_pieces: usize,
) -> Result<Vec<Got>, FsError> {
    let got = alloc_raw(tx, pref, want, align, near, max_pieces)?;
    let mut at = who;
    for g in &got {
        crate::rmap::map(tx, g.fsb, g.len, at)?;
        at = at.advance(g.len);
    }
    Ok(got)
}

/// [`alloc_for`] without the reverse mapping: the caller maps what it keeps.
pub(crate) fn alloc_raw(
    tx: &mut Tx,
    pref: u32,
    want: u64,
    align: u64,
    near: Option<u64>,
    max_pieces: usize,
) -> Result<Vec<Got>, FsError> {
    let c = tx.c;
    let mut got: Vec<Got> = Vec::new();
    let mut left = want;
    let agcount = c.geo.agcount;
    if left == 0 {
        return Ok(got);
    }
    for k in 0..agcount {
        let agno = (pref + k) % agcount;
        let (_, a) = agf(tx, agno)?;
        if be32(&a, 52) <= reserve(c, agno) {
            continue;
        }
        fix_freelist(tx, agno)?;
        let (_, a) = agf(tx, agno)?;
        let mut free = be32(&a, 52);
        let res = reserve(c, agno);
        // Exact placement after the file's last block.
        if k == 0 {
            if let Some(n) = near {
                if n >> c.geo.agblklog == u64::from(agno) {
                    let agbno = (n & ((1 << c.geo.agblklog) - 1)) as u32;
                    let bno = bt_from_agf(tx, agno, &a, false);
                    let p = bno.descend(tx, u64::from(agbno))?;
                    if p.idx[p.idx.len() - 1] < p.numrecs {
                        let r = bno.rec(tx, &p.leaf, p.idx[p.idx.len() - 1]);
                        let (s, l) = (be32(r, 0), be32(r, 4));
                        let take = u64::from(l).min(left).min(MAX_EXTLEN);
                        let take = take - take % align;
                        if s == agbno
                            && take > 0
                            && free.checked_sub(take as u32).is_some_and(|f| f >= res)
                        {
                            take_extent(tx, agno, s, l, take as u32)?;
                            got.push(Got { fsb: n, len: take });
                            left -= take;
                            free = free.saturating_sub(take as u32);
                        }
                    }
                }
            }
        }
        while left > 0 {
            if got.len() >= max_pieces {
                return Err(refuse(
                    c,
                    format!(
                        "the free space is too fragmented: {want} blocks would take more than {max_pieces} extents"
                    ),
                ));
            }
            let (_, a) = agf(tx, agno)?;
            let longest = u64::from(be32(&a, 56));
            let room = u64::from(free.saturating_sub(res));
            let target = left.min(MAX_EXTLEN).min(longest).min(room);
            let target = target - target % align;
            if target == 0 {
                break;
            }
            let cnt = bt_from_agf(tx, agno, &a, true);
            let p = cnt.descend(tx, target << 32)?;
            let li = p.idx[p.idx.len() - 1];
            let rec = if li < p.numrecs {
                cnt.rec(tx, &p.leaf, li).to_vec()
            } else {
                match cnt.right_sibling(tx, &p.leaf)? {
                    Some((b, n)) if n > 0 => cnt.rec(tx, &b, 0).to_vec(),
                    _ => {
                        return Err(c.corrupt(
                            &format!("cntbt of AG {agno}"),
                            format!("no free extent of {target} blocks though the AGF's longest is {longest}"),
                        ))
                    }
                }
            };
            let (s, l) = (be32(&rec, 0), be32(&rec, 4));
            if u64::from(l) < target {
                return Err(c.corrupt(
                    &format!("cntbt of AG {agno}"),
                    "records out of order".into(),
                ));
            }
            let take = target as u32;
            take_extent(tx, agno, s, l, take)?;
            got.push(Got {
                fsb: (u64::from(agno) << c.geo.agblklog) | u64::from(s),
                len: u64::from(take),
            });
            left -= u64::from(take);
            free = free.saturating_sub(take);
        }
        if left == 0 {
            break;
        }
    }
    if left > 0 {
        return Err(FsError::NoSpace {
            fs: c.location.clone(),
            what: format!(
                "{want} blocks ({} bytes) beyond what each AG keeps in reserve",
                want * u64::from(c.geo.block_size)
            ),
        });
    }
    Ok(got)
}

/// Take the first `n` blocks of free extent (`s`, `l`) of AG `agno`,
/// then bring the AGFL back within bounds.
fn take_extent(tx: &mut Tx, agno: u32, s: u32, l: u32, n: u32) -> Result<(), FsError> {
    take_raw(tx, agno, s, l, n, true)?;
    fix_freelist(tx, agno)
}

/// Whether `s`+`l` of AG `agno` overlaps the AG headers, the log or the
/// AG end.
fn outside_free(c: &Ctx, agno: u32, s: u32, l: u64) -> bool {
    let hdr_blocks = (4 * u64::from(c.geo.sect_size)).div_ceil(u64::from(c.geo.block_size));
    let fsb = (u64::from(agno) << c.geo.agblklog) | u64::from(s);
    let (ls, ll) = (c.geo.logstart, u64::from(c.geo.logblocks));
    u64::from(s) < hdr_blocks
        || u64::from(s) + l > u64::from(c.ag_len(agno))
        || (fsb < ls + ll && ls < fsb + l)
}

/// Take the first `n` blocks of free extent (`s`, `l`).
fn take_raw(tx: &mut Tx, agno: u32, s: u32, l: u32, n: u32, count_fd: bool) -> Result<(), FsError> {
    take_range(tx, agno, (s, l), s, n, count_fd)
}

/// Take blocks `at`..`at+n` out of free extent (`s`, `l`): the bnobt
/// record shrunk, split or removed, the cntbt records replaced by the
/// pieces left, the AGF's free count and longest extent updated, and
/// (`count_fd`) the superblock's free blocks.
fn take_range(
    tx: &mut Tx,
    agno: u32,
    (s, l): (u32, u32),
    at: u32,
    n: u32,
    count_fd: bool,
) -> Result<(), FsError> {
    let c = tx.c;
    let (_, a) = agf(tx, agno)?;
    let mut bno = bt_from_agf(tx, agno, &a, false);
    let mut cnt = bt_from_agf(tx, agno, &a, true);
    // Never hand out the AG headers or the internal log, whatever the
    // trees say.
    let end = u64::from(s) + u64::from(l);
    if n == 0
        || at < s
        || u64::from(at) + u64::from(n) > end
        || outside_free(c, agno, s, u64::from(l))
    {
        return Err(c.corrupt(
            &format!("free space of AG {agno}"),
            format!("free extent {s}+{l} overlaps the AG headers, the log or the AG end"),
        ));
    }
    let old = btree::alloc_rec(s, l);
    let ckey = |st: u32, len: u32| (u64::from(len) << 32) | u64::from(st);
    for (t, key) in [(&bno, u64::from(s)), (&cnt, ckey(s, l))] {
        let p = t.descend(tx, key)?;
        let i = p.idx[p.idx.len() - 1];
        if i >= p.numrecs || t.rec(tx, &p.leaf, i) != old.as_slice() {
            return Err(c.corrupt(
                &format!("{} of AG {agno}", t.spec.name),
                format!("free extent {s}+{l} is not recorded"),
            ));
        }
    }
    let left = (at > s).then(|| (s, at - s));
    let rs = at + n;
    let right = (u64::from(rs) < end).then(|| (rs, (end - u64::from(rs)) as u32));
    let rec = btree::alloc_rec;
    match (left, right) {
        (Some((ls, ll)), _) => bno.update(tx, u64::from(s), &old, &rec(ls, ll))?,
        (None, Some((rs, rl))) => bno.update(tx, u64::from(s), &old, &rec(rs, rl))?,
        (None, None) => bno.delete(tx, &mut AgSrc::bno(agno), u64::from(s), &old)?,
    }
    if let (Some(_), Some((rs, rl))) = (left, right) {
        bno.insert(tx, &mut AgSrc::bno(agno), u64::from(rs), &rec(rs, rl))?;
    }
    cnt.delete(tx, &mut AgSrc::cnt(agno), ckey(s, l), &old)?;
    for (ps, pl) in [left, right].into_iter().flatten() {
        cnt.insert(tx, &mut AgSrc::cnt(agno), ckey(ps, pl), &rec(ps, pl))?;
    }
    let longest = cnt.last(tx)?.map_or(0, |r| be32(&r, 4));
    agf_change(tx, agno, |a| {
        let free = be32(a, 52)
            .checked_sub(n)
            .ok_or_else(|| format!("counts fewer free blocks than the free extent {s}+{l}"))?;
        put32(a, 52, free);
        put32(a, 56, longest);
        Ok(())
    })?;
    if count_fd {
        tx.d_fdblocks -= i64::from(n);
    }
    Ok(())
}

/// Re-read the AGF of `agno` as staged, change it, seal and stage it.
pub(crate) fn agf_change(
    tx: &mut Tx,
    agno: u32,
    f: impl FnOnce(&mut [u8]) -> Result<(), String>,
) -> Result<(), FsError> {
    let (at, mut a) = agf(tx, agno)?;
    f(&mut a).map_err(|why| tx.c.corrupt(&format!("AGF of AG {agno}"), why))?;
    seal_agf(tx, &mut a);
    tx.write(at, a)
}

/// Re-read the AGI of `agno` as staged, change it, seal and stage it.
fn agi_change(
    tx: &mut Tx,
    agno: u32,
    f: impl FnOnce(&mut [u8]) -> Result<(), String>,
) -> Result<(), FsError> {
    let (at, mut a) = agi(tx, agno)?;
    f(&mut a).map_err(|why| tx.c.corrupt(&format!("AGI of AG {agno}"), why))?;
    seal_agi(tx, &mut a);
    tx.write(at, a)
}

fn add32(b: &mut [u8], off: usize, d: i64, what: &str) -> Result<(), String> {
    let v = i64::from(be32(b, off)) + d;
    let v = u32::try_from(v).map_err(|_| format!("{what} would become {v}"))?;
    put32(b, off, v);
    Ok(())
}

/// Entries the AGFL of this filesystem holds.
fn agfl_size(c: &Ctx) -> u32 {
    if c.geo.v5 {
        (c.geo.sect_size - 36) / 4
    } else {
        c.geo.sect_size / 4
    }
}

/// The most levels a free-space btree of this AG size can have
/// (xfs_btree_compute_maxlevels over the minimum records per block).
fn alloc_maxlevels(c: &Ctx) -> u32 {
    let hdr = if c.geo.v5 { 56 } else { 16 };
    let room = c.geo.block_size.saturating_sub(hdr);
    let min_leaf = (room / 8 / 2).max(1);
    let min_node = (room / 12 / 2).max(2);
    let mut blocks = (c.geo.agblocks.div_ceil(2)).div_ceil(min_leaf);
    let mut level = 1;
    while blocks > 1 && level < 32 {
        blocks = blocks.div_ceil(min_node);
        level += 1;
    }
    level
}

/// The fewest AGFL entries the kernel wants before it changes the free
/// space (xfs_alloc_min_freelist: room for a full split of the bnobt,
/// the cntbt and, with reverse mappings, the rmapbt).
fn min_freelist(c: &Ctx, agf: &[u8]) -> u32 {
    let max = alloc_maxlevels(c);
    let one = |levels: u32, max: u32| (levels.saturating_add(1)).min(max) * 2 - 2;
    let mut n = one(be32(agf, 28), max) + one(be32(agf, 32), max);
    if c.geo.ro_compat & RO_COMPAT_RMAPBT != 0 {
        n += one(be32(agf, 36), crate::rmap::maxlevels(c));
    }
    n
}

/// The AGFL sector of `agno`: byte offset, bytes, and where its entries
/// start.
fn agfl(tx: &Tx, agno: u32) -> Result<(u64, Vec<u8>, usize), FsError> {
    let c = tx.c;
    let sect = c.geo.sect_size as usize;
    let at = c.ag_start(agno) + 3 * sect as u64;
    let b = tx.read(at, sect)?;
    if !c.geo.v5 {
        return Ok((at, b, 0));
    }
    let bad = |why: &str| c.corrupt(&format!("AGFL of AG {agno}"), why.into());
    if be32(&b, 0) != 0x5841_464C || be32(&b, 4) != agno {
        return Err(bad("bad magic or AG number"));
    }
    if b[8..24] != c.geo.meta_uuid {
        return Err(bad("UUID is not this filesystem's"));
    }
    if !crate::csum::verify(&b, 32) {
        return Err(bad("CRC mismatch"));
    }
    Ok((at, b, 36))
}

/// Take the first block of the AGFL (`btreeblk`: for a free-space btree,
/// counted in agf_btreeblks).
pub(crate) fn agfl_get(tx: &mut Tx, agno: u32, btreeblk: bool) -> Result<u32, FsError> {
    let c = tx.c;
    let (_, a) = agf(tx, agno)?;
    let size = agfl_size(c);
    let (first, count) = (be32(&a, 40), be32(&a, 48));
    if count == 0 {
        return Err(FsError::NoSpace {
            fs: c.location.clone(),
            what: format!("a btree block: the AGFL of AG {agno} is empty"),
        });
    }
    if first >= size || count > size {
        return Err(c.corrupt(
            &format!("AGF of AG {agno}"),
            format!("AGFL first {first}, count {count} of {size}"),
        ));
    }
    let (_, fl, base) = agfl(tx, agno)?;
    let bno = be32(&fl, base + 4 * first as usize);
    if outside_free(c, agno, bno, 1) {
        return Err(c.corrupt(
            &format!("AGFL of AG {agno}"),
            format!("entry {first} is block {bno}, outside the free space"),
        ));
    }
    agf_change(tx, agno, |a| {
        put32(a, 40, (first + 1) % size);
        put32(a, 48, count - 1);
        if btreeblk {
            add32(a, 60, 1, "agf_btreeblks")?;
        }
        Ok(())
    })?;
    Ok(bno)
}

/// Append block `bno` to the AGFL (`btreeblk`: it leaves a free-space
/// btree, counted in agf_btreeblks).
pub(crate) fn agfl_put(tx: &mut Tx, agno: u32, bno: u32, btreeblk: bool) -> Result<(), FsError> {
    let c = tx.c;
    let (_, a) = agf(tx, agno)?;
    let size = agfl_size(c);
    let (last, count) = (be32(&a, 44), be32(&a, 48));
    if count >= size {
        return Err(refuse(
            c,
            format!("the AGFL of AG {agno} is full ({size} blocks) and cannot take block {bno}"),
        ));
    }
    if last >= size || outside_free(c, agno, bno, 1) {
        return Err(c.corrupt(
            &format!("AGF of AG {agno}"),
            format!("AGFL last {last} of {size}, or block {bno} outside the free space"),
        ));
    }
    let (at, mut fl, base) = agfl(tx, agno)?;
    let nl = (last + 1) % size;
    put32(&mut fl, base + 4 * nl as usize, bno);
    if c.geo.v5 {
        crate::csum::update(&mut fl, 32);
    }
    tx.write(at, fl)?;
    agf_change(tx, agno, |a| {
        put32(a, 44, nl);
        put32(a, 48, count + 1);
        if btreeblk {
            add32(a, 60, -1, "agf_btreeblks")?;
        }
        Ok(())
    })
}

/// Most rounds of refilling or trimming the AGFL in one call.
const FIX_ROUNDS: u32 = 64;

/// Bring the AGFL of `agno` to the kernel's minimum for the current tree
/// heights: refilled from the longest free extent, or surplus blocks
/// returned to the free space (each of which may itself split or merge
/// the free-space btrees, hence the rounds). Once refilled, a surplus is
/// kept: when the free space is single blocks, each block taken removes a
/// record and each returned adds one, and at a height boundary trimming
/// and refilling would undo each other forever (the kernel defers its
/// AGFL frees, so it never loops; a longer AGFL is valid and trimmed by
/// the next change).
fn fix_freelist(tx: &mut Tx, agno: u32) -> Result<(), FsError> {
    let c = tx.c;
    let size = agfl_size(c);
    let mut refilled = false;
    for _ in 0..FIX_ROUNDS {
        let (_, a) = agf(tx, agno)?;
        let need = min_freelist(c, &a);
        let have = be32(&a, 48);
        if need > size {
            return Err(refuse(
                c,
                format!("AG {agno} would need {need} AGFL blocks, more than the {size} it holds"),
            ));
        }
        if have < need {
            let cnt = bt_from_agf(tx, agno, &a, true);
            let Some(r) = cnt.last(tx)? else {
                return Err(FsError::NoSpace {
                    fs: c.location.clone(),
                    what: format!("{} blocks to refill the AGFL of AG {agno}", need - have),
                });
            };
            let (s, l) = (be32(&r, 0), be32(&r, 4));
            let n = (need - have).min(l);
            take_raw(tx, agno, s, l, n, false)?;
            for b in s..s + n {
                agfl_put(tx, agno, b, false)?;
            }
            // AGFL blocks belong to the AG (xfs_alloc_fix_freelist maps
            // them to XFS_RMAP_OWN_AG).
            crate::rmap::map_ag(tx, agno, s, u64::from(n), Owner::AG)?;
            refilled = true;
        } else if have > need && !refilled {
            let b = agfl_get(tx, agno, false)?;
            free_raw(tx, agno, b, 1, false)?;
            crate::rmap::unmap_ag(tx, agno, b, 1, Owner::AG)?;
        } else {
            return Ok(());
        }
    }
    Err(refuse(
        c,
        format!("the AGFL of AG {agno} did not settle within {FIX_ROUNDS} rounds"),
    ))
}

/// Which tree an [`AgSrc`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bno,
    Cnt,
    Ino,
    Fino,
}

/// The block source of an AG btree: the AGFL for the free-space trees,
/// one block of the AG's free space for the inode trees.
struct AgSrc {
    agno: u32,
    kind: Kind,
}

impl AgSrc {
    fn bno(agno: u32) -> Self {
        Self {
            agno,
            kind: Kind::Bno,
        }
    }
    fn cnt(agno: u32) -> Self {
        Self {
            agno,
            kind: Kind::Cnt,
        }
    }
    fn ino(agno: u32, fino: bool) -> Self {
        Self {
            agno,
            kind: if fino { Kind::Fino } else { Kind::Ino },
        }
    }

    /// Count a block in or out of agi_iblocks / agi_fblocks.
    fn count_inobt(&self, tx: &mut Tx, d: i64) -> Result<(), FsError> {
        if tx.c.geo.ro_compat & RO_COMPAT_INOBTCNT == 0 {
            return Ok(());
        }
        let (off, what) = if self.kind == Kind::Fino {
            (340, "agi_fblocks")
        } else {
            (336, "agi_iblocks")
        };
        agi_change(tx, self.agno, |a| add32(a, off, d, what))
    }
}

impl Source for AgSrc {
    fn get(&mut self, tx: &mut Tx<'_>, _bt: &Bt) -> Result<u32, FsError> {
        match self.kind {
            Kind::Bno | Kind::Cnt => agfl_get(tx, self.agno, true),
            Kind::Ino | Kind::Fino => {
                let agno = self.agno;
                fix_freelist(tx, agno)?;
                let (_, a) = agf(tx, agno)?;
                let cnt = bt_from_agf(tx, agno, &a, true);
                let Some(r) = cnt.next_rec(tx, 1 << 32)? else {
                    return Err(FsError::NoSpace {
                        fs: tx.c.location.clone(),
                        what: format!("a block for the inode btrees of AG {agno}"),
                    });
                };
                let s = be32(&r, 0);
                take_extent(tx, agno, s, be32(&r, 4), 1)?;
                crate::rmap::map_ag(tx, agno, s, 1, Owner::INOBT)?;
                self.count_inobt(tx, 1)?;
                Ok(s)
            }
        }
    }

    fn put(&mut self, tx: &mut Tx<'_>, _bt: &Bt, agbno: u32) -> Result<(), FsError> {
        match self.kind {
            Kind::Bno | Kind::Cnt => agfl_put(tx, self.agno, agbno, true),
            Kind::Ino | Kind::Fino => {
                let fsb = (u64::from(self.agno) << tx.c.geo.agblklog) | u64::from(agbno);
                free_for(tx, fsb, 1, Owner::INOBT)?;
                self.count_inobt(tx, -1)
            }
        }
    }

    fn set_root(&mut self, tx: &mut Tx<'_>, bt: &Bt) -> Result<(), FsError> {
        let (root, level) = match self.kind {
            Kind::Bno => (16, 28),
            Kind::Cnt => (20, 32),
            Kind::Ino => (20, 24),
            Kind::Fino => (328, 332),
        };
        let f = |a: &mut [u8]| {
            put32(a, root, bt.root);
            put32(a, level, bt.levels);
            Ok(())
        };
        match self.kind {
            Kind::Bno | Kind::Cnt => agf_change(tx, self.agno, f),
            Kind::Ino | Kind::Fino => agi_change(tx, self.agno, f),
        }
    }
}

/// Whether any block of `fsb..fsb+len` is shared (has a refcountbt
/// record) on a reflink filesystem.
pub(crate) fn shared(tx: &Tx, fsb: u64, len: u64) -> Result<bool, FsError> {
    let c = tx.c;
    if c.geo.ro_compat & RO_COMPAT_REFLINK == 0 {
        return Ok(false);
    }
    let agno = (fsb >> c.geo.agblklog) as u32;
    let s = (fsb & ((1 << c.geo.agblklog) - 1)) as u32;
    let end = u64::from(s) + len;
    let (_, a) = agf(tx, agno)?;
    let bt = Bt {
        spec: REFC,
        agno,
        root: be32(&a, 88),
        levels: be32(&a, 92),
        aglen: c.ag_len(agno),
    };
    // The record at or before `s`, then onwards while they start below
    // the end. CoW staging records (high bit) sort after all others.
    let p = bt.descend(tx, u64::from(s))?;
    let mut leaf = p.leaf;
    let mut n = p.numrecs;
    let mut i = p.idx[p.idx.len() - 1].saturating_sub(1);
    let mut leaves = 0u32;
    loop {
        while i < n {
            let r = bt.rec(tx, &leaf, i);
            let (rs, rl) = (u64::from(be32(r, 0)), u64::from(be32(r, 4)));
            if rs >= end {
                return Ok(false);
            }
            if rs + rl > u64::from(s) {
                return Ok(true);
            }
            i += 1;
        }
        leaves += 1;
        if leaves > c.ag_len(agno) {
            return Err(c.corrupt("refcountbt", "sibling loop".into()));
        }
        match bt.right_sibling(tx, &leaf)? {
            Some((b, m)) => {
                leaf = b;
                n = m;
                i = 0;
            }
            None => return Ok(false),
        }
    }
}

/// One inobt record as decoded.
struct IRec {
    startino: u32,
    holemask: u16,
    freecount: u32,
    free: u64,
}

fn irec(c: &Ctx, r: &[u8]) -> IRec {
    let sparse = c.geo.has(crate::sb::INCOMPAT_SPINODES);
    let (holemask, freecount) = if sparse {
        (u16::from_be_bytes([r[4], r[5]]), u32::from(r[7]))
    } else {
        (0, be32(r, 4))
    };
    IRec {
        startino: be32(r, 0),
        holemask,
        freecount,
        free: be64(r, 8),
    }
}

fn put_irec(c: &Ctx, r: &mut [u8], freecount: u32, free: u64) {
    if c.geo.has(crate::sb::INCOMPAT_SPINODES) {
        r[7] = freecount as u8;
    } else {
        put32(r, 4, freecount);
    }
    put64(r, 8, free);
}

/// Allocate a free inode, preferring AG `pref`: from an existing chunk,
/// or else from a new chunk. Returns the inode number; the inode itself
/// is not written.
pub(crate) fn ialloc(tx: &mut Tx, pref: u32) -> Result<u64, FsError> {
    if let Some(ino) = ialloc_existing(tx, pref)? {
        return Ok(ino);
    }
    new_chunk(tx, pref)?;
    ialloc_existing(tx, pref)?.ok_or_else(|| {
        tx.c.corrupt(
            "inode allocation",
            "the new inode chunk has no free inode".into(),
        )
    })
}

/// Allocate a free inode from an existing chunk, preferring AG `pref`.
fn ialloc_existing(tx: &mut Tx, pref: u32) -> Result<Option<u64>, FsError> {
    let c = tx.c;
    let finobt = c.geo.ro_compat & RO_COMPAT_FINOBT != 0;
    for k in 0..c.geo.agcount {
        let agno = (pref + k) % c.geo.agcount;
        let (_, a) = agi(tx, agno)?;
        if be32(&a, 28) == 0 {
            continue;
        }
        let ino_bt = bt_from_agi(tx, agno, &a, false);
        let fino_bt = bt_from_agi(tx, agno, &a, true);
        // A record with a free inode.
        let found: Option<Vec<u8>> = if finobt {
            let p = fino_bt.descend(tx, 0)?;
            (p.numrecs > 0).then(|| fino_bt.rec(tx, &p.leaf, 0).to_vec())
        } else {
            let p = ino_bt.descend(tx, 0)?;
            let (mut leaf, mut n) = (p.leaf, p.numrecs);
            let mut hit = None;
            let mut leaves = 0u32;
            'walk: loop {
                for i in 0..n {
                    let r = ino_bt.rec(tx, &leaf, i);
                    if irec(c, r).freecount > 0 {
                        hit = Some(r.to_vec());
                        break 'walk;
                    }
                }
                leaves += 1;
                if leaves > ino_bt.aglen {
                    return Err(c.corrupt("inobt", "sibling loop".into()));
                }
                match ino_bt.right_sibling(tx, &leaf)? {
                    Some((b, m)) => {
                        leaf = b;
                        n = m;
                    }
                    None => break,
                }
            }
            hit
        };
        let Some(r) = found else {
            if finobt {
                return Err(c.corrupt(
                    &format!("finobt of AG {agno}"),
                    "empty though the AGI counts free inodes".into(),
                ));
            }
            continue;
        };
        let rec = irec(c, &r);
        let place = format!("inobt record {} of AG {agno}", rec.startino);
        let slot = (0..64u32)
            .find(|i| rec.free & (1u64 << i) != 0 && rec.holemask & (1u16 << (i / 4)) == 0);
        let Some(slot) = slot else {
            return Err(c.corrupt(&place, "counts free inodes but has none".into()));
        };
        let agino = rec.startino.checked_add(slot).filter(|&a| a != NULL_AGINO);
        let Some(agino) = agino else {
            return Err(c.corrupt(&place, "inode number overflows".into()));
        };
        let ino = (u64::from(agno) << (c.geo.agblklog + c.geo.inopblog)) | u64::from(agino);
        let new_free = rec.free & !(1u64 << slot);
        let Some(new_count) = rec.freecount.checked_sub(1) else {
            return Err(c.corrupt(&place, "has a free inode but a free count of 0".into()));
        };
        // inobt: the record in place.
        let p = ino_bt.descend(tx, u64::from(rec.startino))?;
        let i = p.idx[p.idx.len() - 1];
        if i >= p.numrecs || be32(ino_bt.rec(tx, &p.leaf, i), 0) != rec.startino {
            return Err(c.corrupt(&place, "not in the inobt".into()));
        }
        let old_raw = ino_bt.rec(tx, &p.leaf, i).to_vec();
        let old = irec(c, &old_raw);
        if old.free != rec.free || old.freecount != rec.freecount {
            return Err(c.corrupt(&place, "the inobt and finobt disagree".into()));
        }
        let mut new_raw = old_raw.clone();
        put_irec(c, &mut new_raw, new_count, new_free);
        let key = u64::from(rec.startino);
        ino_bt.update(tx, key, &old_raw, &new_raw)?;
        if finobt {
            let mut fino_bt = fino_bt;
            if new_count == 0 {
                fino_bt.delete(tx, &mut AgSrc::ino(agno, true), key, &r)?;
            } else {
                fino_bt.update(tx, key, &r, &new_raw)?;
            }
        }
        agi_change(tx, agno, |a| add32(a, 28, -1, "agi_freecount"))?;
        tx.d_ifree -= 1;
        return Ok(Some(ino));
    }
    Ok(None)
}

/// Inodes in one chunk (XFS_INODES_PER_CHUNK).
const CHUNK_INODES: u32 = 64;

/// Inodes per bit of a sparse record's hole mask
/// (XFS_INODES_PER_HOLEMASK_BIT).
const HOLE_INODES: u32 = 4;

/// The inodes a hole mask leaves allocated, one bit per inode of the
/// chunk (xfs_inobt_irec_to_allocmask).
fn hole_alloc_mask(holemask: u16) -> u64 {
    (0..16u32)
        .filter(|b| holemask & (1 << b) == 0)
        .fold(0u64, |m, b| m | (0xF << (HOLE_INODES * b)))
}

/// A free extent of AG `agno` that holds `blks` blocks starting on a
/// multiple of `align`, at or after block `lo` and ending at or before
/// block `hi`: (start, length, placed start). The cntbt is walked upwards
/// from the smallest extent long enough; in each extent only the first
/// aligned start at or after `lo` is tried (any later one ends later).
fn find_aligned(
    tx: &Tx,
    agno: u32,
    blks: u32,
    align: u32,
    (lo, hi): (u32, u64),
) -> Result<Option<(u32, u32, u32)>, FsError> {
    let c = tx.c;
    let (_, a) = agf(tx, agno)?;
    let cnt = bt_from_agf(tx, agno, &a, true);
    let p = cnt.descend(tx, u64::from(blks) << 32)?;
    let (mut leaf, mut n, mut i) = (p.leaf, p.numrecs, p.idx[p.idx.len() - 1]);
    let mut leaves = 0u32;
    loop {
        while i < n {
            let r = cnt.rec(tx, &leaf, i);
            let (s, l) = (be32(r, 0), be32(r, 4));
            let from = u64::from(s.max(lo));
            let at = from.div_ceil(u64::from(align)) * u64::from(align);
            let end = at + u64::from(blks);
            if end <= u64::from(s) + u64::from(l)
                && end <= hi
                && !outside_free(c, agno, s, u64::from(l))
            {
                return Ok(Some((s, l, at as u32)));
            }
            i += 1;
        }
        leaves += 1;
        if leaves > cnt.aglen {
            return Err(c.corrupt(&format!("cntbt of AG {agno}"), "sibling loop".into()));
        }
        match cnt.right_sibling(tx, &leaf)? {
            Some((b, m)) => {
                leaf = b;
                n = m;
                i = 0;
            }
            None => return Ok(None),
        }
    }
}

/// The blocks of the smallest piece of a sparse inode chunk
/// (sb_spino_align, the kernel's ialloc_min_blks) when this volume may
/// allocate pieces smaller than its whole chunk of `blks` blocks aligned
/// to `align`. The superblock must hold what xfs_validate_sb_common
/// demands of a sparse-inode volume: chunk-sized inode alignment and a
/// sparse alignment dividing it.
fn sparse_piece(c: &Ctx, sb: &[u8], blks: u32, align: u32) -> Result<Option<u32>, FsError> {
    if !c.geo.has(INCOMPAT_SPINODES) {
        return Ok(None);
    }
    let spino = be32(sb, 228);
    if align != blks || spino == 0 || spino > blks || blks % spino != 0 {
        return Err(c.corrupt(
            "superblock",
            format!(
                "sparse inode alignment {spino} and inode alignment {align} do not fit a chunk of {blks} blocks"
            ),
        ));
    }
    if (spino << c.geo.inopblog) % HOLE_INODES != 0 {
        return Err(c.corrupt(
            "superblock",
            format!("sparse inode alignment {spino} is finer than the hole mask"),
        ));
    }
    Ok((spino < blks).then_some(spino))
}

/// Where a new chunk (or a piece of one) goes: the free extent it is
/// taken from, its first block and length, and the first block of the
/// whole aligned chunk it belongs to.
struct Place {
    agno: u32,
    free: (u32, u32),
    at: u32,
    len: u32,
    chunk: u32,
}

/// The inobt record already covering inode chunk `startino` of AG
/// `agno`, if any: only a record of that same chunk may exist there (a
/// sparse one the new piece merges into); a record of another chunk
/// reaching into it is corruption.
fn chunk_record(tx: &Tx, agno: u32, startino: u32) -> Result<Option<Vec<u8>>, FsError> {
    let c = tx.c;
    let (_, ai) = agi(tx, agno)?;
    let ino_bt = bt_from_agi(tx, agno, &ai, false);
    let end = u64::from(startino) + u64::from(CHUNK_INODES);
    let bad = |other: u32| {
        c.corrupt(
            &format!("inobt of AG {agno}"),
            format!("record {other} overlaps the free inode chunk {startino}"),
        )
    };
    if let Some(r) = ino_bt.prev_rec(tx, u64::from(startino))? {
        let s = be32(&r, 0);
        if u64::from(s) + u64::from(CHUNK_INODES) > u64::from(startino) {
            return Err(bad(s));
        }
    }
    let mut same = None;
    if let Some(r) = ino_bt.next_rec(tx, u64::from(startino))? {
        let s = be32(&r, 0);
        if s == startino {
            same = Some(r);
        } else if u64::from(s) < end {
            return Err(bad(s));
        }
    }
    if same.is_some() {
        if let Some(r) = ino_bt.next_rec(tx, u64::from(startino) + 1)? {
            let s = be32(&r, 0);
            if u64::from(s) < end {
                return Err(bad(s));
            }
        }
    }
    Ok(same)
}

/// Allocate a new chunk of 64 inodes in AG `pref` (or the next AGs), as
/// xfs_ialloc_ag_alloc does: its blocks aligned to sb_inoalignmt, or, on
/// a sparse-inode volume where no AG has such a free extent, a piece of
/// sb_spino_align blocks so aligned (placed between the kernel's
/// min_agbno and max_agbno: its whole aligned chunk inside the AG). Every
/// new inode is initialised free (xfs_ialloc_inode_init: magic, version,
/// generation, no next-unlinked; v5: inode number, UUID, CRC); the record
/// (all free; a piece's record with the rest of its chunk as holes, also
/// marked free) goes into the inobt, merged into the chunk's existing
/// sparse record if there is one (xfs_inobt_insert_sprec), and the same
/// into the finobt; then the AGI's count, free count and newino, and the
/// superblock's icount and ifree.
fn new_chunk(tx: &mut Tx, pref: u32) -> Result<(), FsError> {
    let c = tx.c;
    let g = &c.geo;
    let sparse = g.has(INCOMPAT_SPINODES);
    if !g.nlink_bit {
        return Err(refuse(
            c,
            "a new inode chunk on a v4 filesystem with version 1 inodes is not implemented".into(),
        ));
    }
    let inopb = 1u32 << g.inopblog;
    if inopb > CHUNK_INODES {
        return Err(refuse(
            c,
            format!("{inopb} inodes per block: a new inode chunk smaller than a block is not implemented"),
        ));
    }
    let blks = CHUNK_INODES / inopb;
    let sect = g.sect_size as usize;
    let mut sb = tx.read(0, sect)?;
    let aligned = g.v5 || be16(&sb, 100) & 0x0080 != 0;
    let align = if aligned { be32(&sb, 180).max(1) } else { 1 };
    if align > g.agblocks {
        return Err(c.corrupt("superblock", format!("inode alignment {align} blocks")));
    }
    let piece = sparse_piece(c, &sb, blks, align)?;
    let icount = be64(&sb, 128);
    let pct = u64::from(sb[127]);
    if pct > 0 {
        let max = g
            .dblocks
            .checked_mul(pct)
            .map(|b| b / 100)
            .and_then(|b| b.checked_shl(g.inopblog))
            .unwrap_or(u64::MAX);
        if icount.saturating_add(u64::from(CHUNK_INODES)) > max {
            return Err(FsError::NoSpace {
                fs: c.location.clone(),
                what: format!("a new inode chunk: inodes may take only {pct}% of the space"),
            });
        }
    }
    let mut found = None;
    for k in 0..g.agcount {
        let agno = (pref + k) % g.agcount;
        let (_, a) = agf(tx, agno)?;
        let room = be32(&a, 52).saturating_sub(reserve(c, agno));
        if room < piece.unwrap_or(blks) {
            continue;
        }
        fix_freelist(tx, agno)?;
        if room >= blks {
            if let Some((s, l, at)) = find_aligned(tx, agno, blks, align, (0, u64::MAX))? {
                found = Some(Place {
                    agno,
                    free: (s, l),
                    at,
                    len: blks,
                    chunk: at,
                });
                break;
            }
        }
        // A sparse piece: at or after the first aligned block past 0
        // (min_agbno), its last block at or before the last aligned
        // chunk start that leaves a whole chunk inside the AG
        // (max_agbno, from this AG's own length).
        let Some(p) = piece else { continue };
        let top = c.ag_len(agno) / align * align;
        let Some(max_agbno) = top.checked_sub(blks) else {
            continue;
        };
        let bounds = (align, u64::from(max_agbno) + 1);
        if let Some((s, l, at)) = find_aligned(tx, agno, p, p, bounds)? {
            found = Some(Place {
                agno,
                free: (s, l),
                at,
                len: p,
                chunk: at - at % align,
            });
            break;
        }
    }
    let Some(place) = found else {
        let what = match piece {
            Some(p) => format!(
                "{blks} blocks aligned to {align} for a new inode chunk, or {p} aligned to {p} for part of one"
            ),
            None => format!("{blks} blocks aligned to {align} for a new inode chunk"),
        };
        return Err(FsError::NoSpace {
            fs: c.location.clone(),
            what,
        });
    };
    let Place {
        agno,
        free: (s, l),
        at,
        len,
        chunk,
    } = place;
    let no_inos = || {
        c.corrupt(
            &format!("AG {agno}"),
            format!("block {chunk} has no inode numbers"),
        )
    };
    let startino = u32::try_from(u64::from(chunk) << g.inopblog)
        .ok()
        .filter(|&s| s.checked_add(CHUNK_INODES).is_some())
        .ok_or_else(no_inos)?;
    // The new inodes: `count` from `first`, within the chunk (`at` lies
    // in the chunk and `len` blocks fit in it by construction).
    let first = startino + ((at - chunk) << g.inopblog);
    let count = len << g.inopblog;
    let lead = first - startino;
    let allocmask =
        (lead / HOLE_INODES..(lead + count) / HOLE_INODES).fold(0u16, |m, b| m | (1 << b));
    let holemask = !allocmask;
    let existing = chunk_record(tx, agno, startino)?;
    // The record: the new inodes free, holes marked free too.
    let mut rec = vec![0u8; 16];
    put32(&mut rec, 0, startino);
    if sparse {
        rec[4..6].copy_from_slice(&holemask.to_be_bytes());
        rec[6] = count as u8;
        rec[7] = count as u8;
    } else {
        put32(&mut rec, 4, count);
    }
    put64(&mut rec, 8, u64::MAX);
    let merged = match &existing {
        None => rec,
        Some(old) => {
            let old_hole = u16::from_be_bytes([old[4], old[5]]);
            let (old_count, old_free_n, old_free) =
                (u32::from(old[6]), u32::from(old[7]), be64(old, 8));
            let old_alloc = hole_alloc_mask(old_hole);
            let new_alloc = hole_alloc_mask(holemask);
            if len == blks
                || old_hole == 0
                || old_count != old_alloc.count_ones()
                || old_free_n > old_count
                || old_free & !old_alloc != !old_alloc
                || old_alloc & new_alloc != 0
            {
                return Err(c.corrupt(
                    &format!("inobt of AG {agno}"),
                    format!(
                        "record {startino} (holes {old_hole:#06x}, {old_count} inodes, {old_free_n} free) cannot take inodes {first}+{count} of free blocks"
                    ),
                ));
            }
            let mut m = old.clone();
            m[4..6].copy_from_slice(&(old_hole & holemask).to_be_bytes());
            m[6] = (old_count + count) as u8;
            m[7] = (old_free_n + count) as u8;
            put64(&mut m, 8, old_free);
            m
        }
    };
    take_range(tx, agno, (s, l), at, len, true)?;
    crate::rmap::map_ag(tx, agno, at, u64::from(len), Owner::INODES)?;
    fix_freelist(tx, agno)?;
    // The inodes, all free.
    let fsb = (u64::from(agno) << g.agblklog) | u64::from(at);
    let off = g.fsb_to_byte(fsb, u64::from(len)).ok_or_else(|| {
        c.corrupt(
            &format!("AG {agno}"),
            format!("inodes at {at} outside the filesystem"),
        )
    })?;
    let isz = g.inode_size as usize;
    let mut buf = vec![0u8; len as usize * g.block_size as usize];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let agshift = g.agblklog + g.inopblog;
    for (i, r) in buf.chunks_exact_mut(isz).enumerate().take(count as usize) {
        r[0..2].copy_from_slice(&crate::inode::INODE_MAGIC.to_be_bytes());
        r[4] = if g.v5 { 3 } else { 2 };
        let ino = (u64::from(agno) << agshift) | (u64::from(first) + i as u64);
        let mut x = (seed ^ ino.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        put32(r, 92, (x >> 32) as u32);
        put32(r, 96, NULL_AGINO);
        if g.v5 {
            put64(r, 152, ino);
            r[160..176].copy_from_slice(&g.meta_uuid);
            crate::csum::update(r, 100);
        }
    }
    tx.write(off, buf)?;
    // The inobt: the record inserted, or merged into the chunk's sparse
    // record; the finobt: the merged record inserted or replacing its own.
    let key = u64::from(startino);
    let (_, ai) = agi(tx, agno)?;
    let mut ino_bt = bt_from_agi(tx, agno, &ai, false);
    match &existing {
        Some(old) => ino_bt.update(tx, key, old, &merged)?,
        None => ino_bt.insert(tx, &mut AgSrc::ino(agno, false), key, &merged)?,
    }
    if g.ro_compat & RO_COMPAT_FINOBT != 0 {
        let (_, ai) = agi(tx, agno)?;
        let mut fino_bt = bt_from_agi(tx, agno, &ai, true);
        let own = fino_bt
            .next_rec(tx, key)?
            .filter(|r| be32(r, 0) == startino);
        match own {
            Some(old) if existing.is_some() => fino_bt.update(tx, key, &old, &merged)?,
            Some(_) => {
                return Err(c.corrupt(
                    &format!("finobt of AG {agno}"),
                    format!("holds chunk {startino}, which the inobt lacks"),
                ))
            }
            None => fino_bt.insert(tx, &mut AgSrc::ino(agno, true), key, &merged)?,
        }
    }
    agi_change(tx, agno, |a| {
        add32(a, 16, i64::from(count), "agi_count")?;
        add32(a, 28, i64::from(count), "agi_freecount")?;
        put32(a, 32, startino);
        Ok(())
    })?;
    // icount here; ifree follows with the other counters in finish_sb.
    let sb_now = tx.read(0, sect)?;
    sb.copy_from_slice(&sb_now);
    let icount = be64(&sb, 128)
        .checked_add(u64::from(count))
        .ok_or_else(|| c.corrupt("superblock", "icount overflows".into()))?;
    put64(&mut sb, 128, icount);
    if g.v5 {
        crate::csum::update(&mut sb, 224);
    }
    tx.write(0, sb)?;
    tx.d_ifree += i64::from(count);
    Ok(())
}

/// Free `fsb`+`len`, which `who` owned: its reverse mapping removed (on
/// rmapbt volumes), then the blocks returned to the free space.
pub(crate) fn free_for(tx: &mut Tx, fsb: u64, len: u64, who: Owner) -> Result<(), FsError> {
    crate::rmap::unmap(tx, fsb, len, who)?;
    free_raw_extent(tx, fsb, len)
}

/// Return extent `fsb`+`len` (one AG) to the free space, then bring the
/// AGFL back within bounds, leaving the rmapbt alone ([`free_for`] does
/// both).
pub(crate) fn free_raw_extent(tx: &mut Tx, fsb: u64, len: u64) -> Result<(), FsError> {
    let c = tx.c;
    let agno = (fsb >> c.geo.agblklog) as u32;
    let s64 = fsb & ((1 << c.geo.agblklog) - 1);
    if agno >= c.geo.agcount || len == 0 || s64 + len > u64::from(c.ag_len(agno)) {
        return Err(c.corrupt(
            &format!("free space of AG {agno}"),
            format!("extent {s64}+{len} to free lies outside the AG"),
        ));
    }
    fix_freelist(tx, agno)?;
    free_raw(tx, agno, s64 as u32, len as u32, true)?;
    fix_freelist(tx, agno)
}

/// Return `s`+`n` of AG `agno` to the free space: merged with the free
/// extents it touches in the bnobt, the cntbt records replaced, the AGF's
/// free count and longest extent and (`count_fd`) the superblock's free
/// blocks updated.
fn free_raw(tx: &mut Tx, agno: u32, s: u32, n: u32, count_fd: bool) -> Result<(), FsError> {
    let c = tx.c;
    let place = format!("free space of AG {agno}");
    let len = u64::from(n);
    if n == 0 || outside_free(c, agno, s, len) {
        return Err(c.corrupt(
            &place,
            format!("extent {s}+{len} to free overlaps the AG headers, the log or the AG end"),
        ));
    }
    let (_, a) = agf(tx, agno)?;
    let mut bno = bt_from_agf(tx, agno, &a, false);
    let mut cnt = bt_from_agf(tx, agno, &a, true);
    let pair = |r: Vec<u8>| (be32(&r, 0), be32(&r, 4));
    // The neighbours: the last free extent before, the first after.
    let left = bno.prev_rec(tx, u64::from(s))?.map(pair);
    let right = bno.next_rec(tx, u64::from(s))?.map(pair);
    let end = u64::from(s) + len;
    if let Some((ls_, ll_)) = left {
        if u64::from(ls_) + u64::from(ll_) > u64::from(s) {
            return Err(c.corrupt(
                &format!("bnobt of AG {agno}"),
                format!("extent {s}+{len} to free is free already ({ls_}+{ll_})"),
            ));
        }
    }
    if let Some((rs, _)) = right {
        if u64::from(rs) < end {
            return Err(c.corrupt(
                &format!("bnobt of AG {agno}"),
                format!("extent {s}+{len} to free is free already (from {rs})"),
            ));
        }
    }
    let merge_l = left.filter(|&(ls_, ll_)| u64::from(ls_) + u64::from(ll_) == u64::from(s));
    let merge_r = right.filter(|&(rs, _)| u64::from(rs) == end);
    let ms = merge_l.map_or(s, |(ls_, _)| ls_);
    let ml = u64::from(n)
        + merge_l.map_or(0, |(_, l)| u64::from(l))
        + merge_r.map_or(0, |(_, l)| u64::from(l));
    let ml = u32::try_from(ml).map_err(|_| c.corrupt(&place, "free extent overflows".into()))?;
    let ckey = |st: u32, l: u32| (u64::from(l) << 32) | u64::from(st);
    let rec = btree::alloc_rec;
    // bnobt.
    match (merge_l, merge_r) {
        (Some((ls_, ll_)), r) => {
            if let Some((rs, rl)) = r {
                bno.delete(tx, &mut AgSrc::bno(agno), u64::from(rs), &rec(rs, rl))?;
            }
            bno.update(tx, u64::from(ls_), &rec(ls_, ll_), &rec(ms, ml))?;
        }
        (None, Some((rs, rl))) => bno.update(tx, u64::from(rs), &rec(rs, rl), &rec(ms, ml))?,
        (None, None) => bno.insert(tx, &mut AgSrc::bno(agno), u64::from(s), &rec(s, n))?,
    }
    // cntbt: the merged neighbours out, the new extent in.
    for (st, l) in [merge_l, merge_r].into_iter().flatten() {
        cnt.delete(tx, &mut AgSrc::cnt(agno), ckey(st, l), &rec(st, l))?;
    }
    cnt.insert(tx, &mut AgSrc::cnt(agno), ckey(ms, ml), &rec(ms, ml))?;
    let longest = cnt.last(tx)?.map_or(0, |r| be32(&r, 4));
    let aglen = c.ag_len(agno);
    agf_change(tx, agno, |a| {
        let free = be32(a, 52)
            .checked_add(n)
            .filter(|&f| f <= aglen)
            .ok_or_else(|| {
                format!("freeing {s}+{len} would count more free blocks than the AG has")
            })?;
        put32(a, 52, free);
        put32(a, 56, longest);
        Ok(())
    })?;
    if count_fd {
        tx.d_fdblocks += i64::from(n);
    }
    Ok(())
}

/// Mark inode `ino` free in its chunk: the inobt record (free mask and
/// count), the finobt (the record updated, or inserted when the chunk had
/// no free inode), the AGI's free count and the superblock's ifree. The
/// chunk stays allocated even when all its inodes are free (as with the
/// `ikeep` mount option). The inode itself is not written.
pub(crate) fn ifree(tx: &mut Tx, ino: u64) -> Result<(), FsError> {
    let c = tx.c;
    let finobt = c.geo.ro_compat & RO_COMPAT_FINOBT != 0;
    let agshift = c.geo.agblklog + c.geo.inopblog;
    let agno = u32::try_from(ino >> agshift)
        .ok()
        .filter(|&a| a < c.geo.agcount)
        .ok_or_else(|| c.corrupt(&format!("inode {ino}"), "AG number out of range".into()))?;
    let agino = (ino & ((1u64 << agshift) - 1)) as u32;
    let (_, a) = agi(tx, agno)?;
    let ino_bt = bt_from_agi(tx, agno, &a, false);
    let fino_bt = bt_from_agi(tx, agno, &a, true);
    let place = format!("inobt of AG {agno}");
    let p = ino_bt.descend(tx, u64::from(agino))?;
    let li = p.idx[p.idx.len() - 1];
    let i = if li < p.numrecs && be32(ino_bt.rec(tx, &p.leaf, li), 0) == agino {
        li
    } else {
        li.checked_sub(1)
            .ok_or_else(|| c.corrupt(&place, format!("no chunk holds inode {ino}")))?
    };
    let old = ino_bt.rec(tx, &p.leaf, i).to_vec();
    let rec = irec(c, &old);
    let slot = agino.wrapping_sub(rec.startino);
    if agino < rec.startino || slot >= 64 {
        return Err(c.corrupt(&place, format!("no chunk holds inode {ino}")));
    }
    if rec.holemask & (1u16 << (slot / 4)) != 0 {
        return Err(c.corrupt(&place, format!("inode {ino} lies in a sparse chunk's hole")));
    }
    let bit = 1u64 << slot;
    if rec.free & bit != 0 {
        return Err(c.corrupt(&place, format!("inode {ino} is free already")));
    }
    if rec.freecount >= 64 {
        return Err(c.corrupt(
            &place,
            format!("chunk {} counts {} free", rec.startino, rec.freecount),
        ));
    }
    let mut new = old.clone();
    put_irec(c, &mut new, rec.freecount + 1, rec.free | bit);
    let key = u64::from(rec.startino);
    ino_bt.update(tx, key, &old, &new)?;
    if finobt {
        let mut fino_bt = fino_bt;
        if rec.freecount == 0 {
            fino_bt.insert(tx, &mut AgSrc::ino(agno, true), key, &new)?;
        } else {
            fino_bt.update(tx, key, &old, &new)?;
        }
    }
    agi_change(tx, agno, |a| {
        let fc = be32(a, 28)
            .checked_add(1)
            .filter(|&f| f <= be32(a, 16))
            .ok_or_else(|| "free inode count overflows".to_string())?;
        put32(a, 28, fc);
        Ok(())
    })?;
    tx.d_ifree += 1;
    Ok(())
}
