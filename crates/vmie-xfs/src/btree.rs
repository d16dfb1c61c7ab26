//! The short-form per-AG B+trees (bnobt, cntbt, inobt, finobt,
//! refcountbt): verified block reads, descent to a key, and record insert,
//! delete and update with the tree kept valid: a full block splits in two
//! (a full root grows the tree by one level), a block under its minimum
//! takes records from a sibling under the same parent or merges with it
//! (a root left with one child is removed), the keys above a block follow
//! its first record, and sibling pointers are kept. New blocks come from,
//! and freed blocks go to, a [`Source`] (the AGFL for the free-space trees,
//! the free space for the inode trees), which also records a new root.

use std::cmp::Ordering;

use vmie_guestfs::FsError;

use crate::be::{be16, be32, put32, put64};
use crate::tx::Tx;

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// No sibling.
pub(crate) const NULL_AGBNO: u32 = 0xFFFF_FFFF;
/// Deepest tree walked (the kernel's AG btrees stay well below this).
const MAX_LEVELS: u32 = 9;

/// What distinguishes one AG btree from another.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub magic_v4: u32,
    pub magic_v5: u32,
    pub reclen: usize,
    pub keylen: usize,
    /// The sort key of a record (or of a key, which is a record prefix).
    pub key: fn(&[u8]) -> u64,
}

fn alloc_bno_key(r: &[u8]) -> u64 {
    u64::from(be32(r, 0))
}
fn alloc_cnt_key(r: &[u8]) -> u64 {
    (u64::from(be32(r, 4)) << 32) | u64::from(be32(r, 0))
}
fn ino_key(r: &[u8]) -> u64 {
    u64::from(be32(r, 0))
}
fn refc_key(r: &[u8]) -> u64 {
    u64::from(be32(r, 0))
}

pub(crate) const BNO: Spec = Spec {
    name: "bnobt",
    magic_v4: 0x4142_5442,
    magic_v5: 0x4142_3342,
    reclen: 8,
    keylen: 8,
    key: alloc_bno_key,
};
pub(crate) const CNT: Spec = Spec {
    name: "cntbt",
    magic_v4: 0x4142_5443,
    magic_v5: 0x4142_3343,
    reclen: 8,
    keylen: 8,
    key: alloc_cnt_key,
};
pub(crate) const INO: Spec = Spec {
    name: "inobt",
    magic_v4: 0x4941_4254,
    magic_v5: 0x4941_4233,
    reclen: 16,
    keylen: 4,
    key: ino_key,
};
pub(crate) const FINO: Spec = Spec {
    name: "finobt",
    magic_v4: 0x4649_4254,
    magic_v5: 0x4649_4233,
    reclen: 16,
    keylen: 4,
    key: ino_key,
};
pub(crate) const REFC: Spec = Spec {
    name: "refcountbt",
    magic_v4: 0,
    magic_v5: 0x5233_4643,
    reclen: 12,
    keylen: 4,
    key: refc_key,
};

/// One tree of one AG.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bt {
    pub spec: Spec,
    pub agno: u32,
    pub root: u32,
    pub levels: u32,
    /// Blocks in this AG (bounds every pointer).
    pub aglen: u32,
}

/// Where a descent ended: the blocks from root to leaf, and the index
/// taken in each (the record index in the leaf).
#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub blocks: Vec<u32>,
    pub idx: Vec<usize>,
    /// The leaf's bytes and its record count.
    pub leaf: Vec<u8>,
    pub numrecs: usize,
}

impl Bt {
    fn hdr(&self, tx: &Tx) -> usize {
        if tx.c.geo.v5 {
            56
        } else {
            16
        }
    }

    pub fn leaf_max(&self, tx: &Tx) -> usize {
        (tx.c.geo.block_size as usize - self.hdr(tx)) / self.spec.reclen
    }

    fn node_max(&self, tx: &Tx) -> usize {
        (tx.c.geo.block_size as usize - self.hdr(tx)) / (self.spec.keylen + 4)
    }

    fn place(&self, agbno: u32) -> String {
        format!("{} of AG {} block {agbno}", self.spec.name, self.agno)
    }

    fn corrupt(&self, tx: &Tx, agbno: u32, d: String) -> FsError {
        tx.c.corrupt(&self.place(agbno), d)
    }

    fn byte_of(&self, tx: &Tx, agbno: u32) -> Result<u64, FsError> {
        let g = &tx.c.geo;
        if agbno == 0 || agbno >= self.aglen {
            return Err(self.corrupt(tx, agbno, "pointer outside the AG".into()));
        }
        let fsb = (u64::from(self.agno) << g.agblklog) | u64::from(agbno);
        g.fsb_to_byte(fsb, 1)
            .ok_or_else(|| self.corrupt(tx, agbno, "pointer outside the filesystem".into()))
    }

    /// Read and verify one block at `level`; returns it and its numrecs.
    pub fn block(&self, tx: &Tx, agbno: u32, level: u32) -> Result<(Vec<u8>, usize), FsError> {
        let at = self.byte_of(tx, agbno)?;
        let b = tx.read(at, tx.c.geo.block_size as usize)?;
        let bad = |d: String| self.corrupt(tx, agbno, d);
        let v5 = tx.c.geo.v5;
        let magic = if v5 {
            self.spec.magic_v5
        } else {
            self.spec.magic_v4
        };
        if be32(&b, 0) != magic {
            return Err(bad(format!("bad magic {:#x}", be32(&b, 0))));
        }
        if v5 {
            if !crate::csum::verify(&b, 52) {
                return Err(bad("CRC mismatch".into()));
            }
            if crate::be::be64(&b, 16) != at >> 9 {
                return Err(bad("header records another disk address".into()));
            }
            if b[32..48] != tx.c.geo.meta_uuid {
                return Err(bad("header UUID is not this filesystem's".into()));
            }
            if be32(&b, 48) != self.agno {
                return Err(bad(format!("header owner AG {}", be32(&b, 48))));
            }
        }
        let lvl = u32::from(be16(&b, 4));
        let n = usize::from(be16(&b, 6));
        let max = if level == 0 {
            self.leaf_max(tx)
        } else {
            self.node_max(tx)
        };
        if lvl != level || n > max {
            return Err(bad(format!(
                "level {lvl} (expected {level}) with {n} records (at most {max})"
            )));
        }
        if level > 0 && n == 0 {
            return Err(bad("an empty interior block".into()));
        }
        Ok((b, n))
    }

    fn check_levels(&self, tx: &Tx) -> Result<(), FsError> {
        if self.levels == 0 || self.levels > MAX_LEVELS {
            return Err(self.corrupt(tx, self.root, format!("{} levels", self.levels)));
        }
        Ok(())
    }

    /// Descend towards `key`: in each node the last key at or below it
    /// (the first when all are above); in the leaf, the index of the first
    /// record whose key is not below it (`numrecs` when none).
    pub fn descend(&self, tx: &Tx, key: u64) -> Result<Path, FsError> {
        self.check_levels(tx)?;
        let hdr = self.hdr(tx);
        let mut agbno = self.root;
        let mut blocks = Vec::new();
        let mut idx = Vec::new();
        for level in (0..self.levels).rev() {
            let (b, n) = self.block(tx, agbno, level)?;
            blocks.push(agbno);
            if level == 0 {
                let mut i = 0;
                while i < n
                    && (self.spec.key)(&b[hdr + i * self.spec.reclen..]).cmp(&key) == Ordering::Less
                {
                    i += 1;
                }
                idx.push(i);
                return Ok(Path {
                    blocks,
                    idx,
                    leaf: b,
                    numrecs: n,
                });
            }
            let kl = self.spec.keylen;
            let mut i = 0;
            while i + 1 < n && (self.spec.key)(&b[hdr + (i + 1) * kl..]) <= key {
                i += 1;
            }
            idx.push(i);
            let maxn = self.node_max(tx);
            agbno = be32(&b, hdr + maxn * kl + i * 4);
        }
        Err(self.corrupt(tx, self.root, "no leaf".into()))
    }

    /// Record `i` of a leaf.
    pub fn rec<'b>(&self, tx: &Tx, leaf: &'b [u8], i: usize) -> &'b [u8] {
        let o = self.hdr(tx) + i * self.spec.reclen;
        &leaf[o..o + self.spec.reclen]
    }

    /// The leaf to the right of `leaf` (bounded walk by the caller).
    pub fn right_sibling(&self, tx: &Tx, leaf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, FsError> {
        let r = be32(leaf, 12);
        if r == NULL_AGBNO {
            return Ok(None);
        }
        self.block(tx, r, 0).map(Some)
    }

    /// The last record of the tree (rightmost leaf), if any.
    pub fn last(&self, tx: &Tx) -> Result<Option<Vec<u8>>, FsError> {
        let p = self.descend(tx, u64::MAX)?;
        if p.numrecs == 0 {
            return Ok(None);
        }
        Ok(Some(self.rec(tx, &p.leaf, p.numrecs - 1).to_vec()))
    }
}

/// An 8-byte alloc record.
pub(crate) fn alloc_rec(start: u32, len: u32) -> Vec<u8> {
    let mut r = vec![0u8; 8];
    put32(&mut r, 0, start);
    put32(&mut r, 4, len);
    r
}

/// Where a tree's new blocks come from and its freed blocks go, and where
/// its root and height are recorded.
pub(crate) trait Source {
    /// A block (AG block number) for a new tree block.
    fn get(&mut self, tx: &mut Tx<'_>, bt: &Bt) -> Result<u32, FsError>;
    /// Give back a block the tree no longer uses.
    fn put(&mut self, tx: &mut Tx<'_>, bt: &Bt, agbno: u32) -> Result<(), FsError>;
    /// Record `bt.root` and `bt.levels` in the AG header.
    fn set_root(&mut self, tx: &mut Tx<'_>, bt: &Bt) -> Result<(), FsError>;
}

/// One block decoded for a change: records (leaf) or keys and pointers
/// (node).
#[derive(Debug, Clone)]
struct Blk {
    agbno: u32,
    level: u32,
    left: u32,
    right: u32,
    items: Vec<Vec<u8>>,
    ptrs: Vec<u32>,
    raw: Vec<u8>,
}

/// What a change below tells the block above: the block's new first key
/// (when it changed), and the block split off to its right (its first key
/// and block number).
#[derive(Debug, Default)]
struct Up {
    first: Option<Vec<u8>>,
    split: Option<(Vec<u8>, u32)>,
}

/// What a delete below tells the block above: the new first key, and
/// whether the block fell under its minimum.
#[derive(Debug, Default)]
struct Down {
    first: Option<Vec<u8>>,
    under: bool,
}

impl Bt {
    fn max_at(&self, tx: &Tx, level: u32) -> usize {
        if level == 0 {
            self.leaf_max(tx)
        } else {
            self.node_max(tx)
        }
    }

    fn min_at(&self, tx: &Tx, level: u32) -> usize {
        self.max_at(tx, level) / 2
    }

    fn keyb(&self, item: &[u8]) -> Vec<u8> {
        item[..self.spec.keylen].to_vec()
    }

    fn load(&self, tx: &Tx, agbno: u32, level: u32) -> Result<Blk, FsError> {
        let (raw, n) = self.block(tx, agbno, level)?;
        let hdr = self.hdr(tx);
        let (items, ptrs) = if level == 0 {
            let rl = self.spec.reclen;
            let items = (0..n)
                .map(|i| raw[hdr + i * rl..hdr + (i + 1) * rl].to_vec())
                .collect();
            (items, Vec::new())
        } else {
            let kl = self.spec.keylen;
            let po = hdr + self.node_max(tx) * kl;
            let items = (0..n)
                .map(|i| raw[hdr + i * kl..hdr + (i + 1) * kl].to_vec())
                .collect();
            let ptrs = (0..n).map(|i| be32(&raw, po + i * 4)).collect();
            (items, ptrs)
        };
        Ok(Blk {
            agbno,
            level,
            left: be32(&raw, 8),
            right: be32(&raw, 12),
            items,
            ptrs,
            raw,
        })
    }

    /// A new, empty block at `agbno`, its header stamped as the kernel
    /// does (LSN 0: at or behind the clean log's head).
    fn fresh(&self, tx: &Tx, agbno: u32, level: u32) -> Result<Blk, FsError> {
        let at = self.byte_of(tx, agbno)?;
        let v5 = tx.c.geo.v5;
        let mut raw = vec![0u8; tx.c.geo.block_size as usize];
        put32(
            &mut raw,
            0,
            if v5 {
                self.spec.magic_v5
            } else {
                self.spec.magic_v4
            },
        );
        put16(&mut raw, 4, level as u16);
        if v5 {
            put64(&mut raw, 16, at >> 9);
            raw[32..48].copy_from_slice(&tx.c.geo.meta_uuid);
            put32(&mut raw, 48, self.agno);
        }
        Ok(Blk {
            agbno,
            level,
            left: NULL_AGBNO,
            right: NULL_AGBNO,
            items: Vec::new(),
            ptrs: Vec::new(),
            raw,
        })
    }

    fn store(&self, tx: &mut Tx, b: &Blk) -> Result<(), FsError> {
        let hdr = self.hdr(tx);
        let max = self.max_at(tx, b.level);
        if b.items.len() > max || (b.level > 0 && b.ptrs.len() != b.items.len()) {
            return Err(self.corrupt(
                tx,
                b.agbno,
                format!("{} entries staged for at most {max}", b.items.len()),
            ));
        }
        let mut raw = b.raw.clone();
        put16(&mut raw, 6, b.items.len() as u16);
        put32(&mut raw, 8, b.left);
        put32(&mut raw, 12, b.right);
        raw[hdr..].fill(0);
        let w = if b.level == 0 {
            self.spec.reclen
        } else {
            self.spec.keylen
        };
        for (i, it) in b.items.iter().enumerate() {
            raw[hdr + i * w..hdr + (i + 1) * w].copy_from_slice(&it[..w]);
        }
        if b.level > 0 {
            let po = hdr + max * w;
            for (i, p) in b.ptrs.iter().enumerate() {
                put32(&mut raw, po + i * 4, *p);
            }
        }
        if tx.c.geo.v5 {
            crate::csum::update(&mut raw, 52);
        }
        let at = self.byte_of(tx, b.agbno)?;
        tx.write(at, raw)
    }

    /// Point the left (`left`) or right sibling pointer of block `agbno`
    /// at `to`.
    fn set_sib(
        &self,
        tx: &mut Tx,
        agbno: u32,
        level: u32,
        left: bool,
        to: u32,
    ) -> Result<(), FsError> {
        if agbno == NULL_AGBNO {
            return Ok(());
        }
        let mut b = self.load(tx, agbno, level)?;
        if left {
            b.left = to;
        } else {
            b.right = to;
        }
        self.store(tx, &b)
    }

    /// The child of node `b` that covers `key`.
    fn child(&self, b: &Blk, key: u64) -> usize {
        let mut i = 0;
        while i + 1 < b.items.len() && (self.spec.key)(&b.items[i + 1]) <= key {
            i += 1;
        }
        i
    }

    fn first_key(&self, b: &Blk) -> Option<Vec<u8>> {
        b.items.first().map(|i| self.keyb(i))
    }

    /// Split the over-full block `b` in two; the right half goes to a new
    /// block. Both are stored and the siblings relinked.
    fn split(
        &self,
        tx: &mut Tx,
        src: &mut dyn Source,
        b: &mut Blk,
    ) -> Result<(Vec<u8>, u32), FsError> {
        let nb = src.get(tx, self)?;
        if nb == b.agbno || nb == b.right || nb == b.left {
            return Err(self.corrupt(tx, nb, "handed out a block in use".into()));
        }
        let mut r = self.fresh(tx, nb, b.level)?;
        let mid = b.items.len() / 2;
        r.items = b.items.split_off(mid);
        if b.level > 0 {
            r.ptrs = b.ptrs.split_off(mid);
        }
        r.left = b.agbno;
        r.right = b.right;
        let old_right = b.right;
        b.right = nb;
        self.store(tx, b)?;
        self.store(tx, &r)?;
        self.set_sib(tx, old_right, b.level, true, nb)?;
        let k = self
            .first_key(&r)
            .ok_or_else(|| self.corrupt(tx, nb, "split into an empty block".into()))?;
        Ok((k, nb))
    }

    fn ins(
        &self,
        tx: &mut Tx,
        src: &mut dyn Source,
        agbno: u32,
        level: u32,
        key: u64,
        rec: &[u8],
    ) -> Result<Up, FsError> {
        let mut b = self.load(tx, agbno, level)?;
        let old_first = self.first_key(&b);
        if level == 0 {
            let i = b
                .items
                .iter()
                .position(|r| (self.spec.key)(r) >= key)
                .unwrap_or(b.items.len());
            if b.items.get(i).is_some_and(|r| (self.spec.key)(r) == key) {
                return Err(self.corrupt(tx, agbno, format!("record {key:#x} is there already")));
            }
            b.items.insert(i, rec.to_vec());
        } else {
            let c = self.child(&b, key);
            let up = self.ins(tx, src, b.ptrs[c], level - 1, key, rec)?;
            if up.first.is_none() && up.split.is_none() {
                return Ok(Up::default());
            }
            if let Some(f) = up.first {
                b.items[c] = f;
            }
            if let Some((k, p)) = up.split {
                b.items.insert(c + 1, k);
                b.ptrs.insert(c + 1, p);
            }
        }
        let mut up = Up::default();
        if b.items.len() > self.max_at(tx, level) {
            up.split = Some(self.split(tx, src, &mut b)?);
        } else {
            self.store(tx, &b)?;
        }
        let new_first = self.first_key(&b);
        if new_first != old_first {
            up.first = new_first;
        }
        Ok(up)
    }

    /// Insert record `rec` (sort key `key`).
    pub fn insert(
        &mut self,
        tx: &mut Tx,
        src: &mut dyn Source,
        key: u64,
        rec: &[u8],
    ) -> Result<(), FsError> {
        self.check_levels(tx)?;
        let up = self.ins(tx, src, self.root, self.levels - 1, key, rec)?;
        if let Some((k, p)) = up.split {
            if self.levels >= MAX_LEVELS {
                return Err(FsError::Unsupported {
                    fs: tx.c.location.clone(),
                    op: "write".into(),
                    why: format!(
                        "the {} of AG {} would grow past {MAX_LEVELS} levels",
                        self.spec.name, self.agno
                    ),
                });
            }
            let old = self.load(tx, self.root, self.levels - 1)?;
            let lk = self
                .first_key(&old)
                .ok_or_else(|| self.corrupt(tx, self.root, "an empty root after a split".into()))?;
            let nr = src.get(tx, self)?;
            let mut r = self.fresh(tx, nr, self.levels)?;
            r.items = vec![lk, k];
            r.ptrs = vec![self.root, p];
            self.store(tx, &r)?;
            self.root = nr;
            self.levels += 1;
            src.set_root(tx, self)?;
        }
        Ok(())
    }

    /// Children `c` of node `p` fell under its minimum: merge it with a
    /// sibling under the same parent, or share their entries evenly.
    fn rebalance(
        &self,
        tx: &mut Tx,
        src: &mut dyn Source,
        p: &mut Blk,
        c: usize,
    ) -> Result<(), FsError> {
        if p.ptrs.len() < 2 {
            return Ok(());
        }
        let (li, ri) = if c + 1 < p.ptrs.len() {
            (c, c + 1)
        } else {
            (c - 1, c)
        };
        let lvl = p.level - 1;
        let mut l = self.load(tx, p.ptrs[li], lvl)?;
        let mut r = self.load(tx, p.ptrs[ri], lvl)?;
        if l.right != r.agbno || r.left != l.agbno {
            return Err(self.corrupt(
                tx,
                l.agbno,
                format!(
                    "sibling pointers disagree with the parent (block {})",
                    r.agbno
                ),
            ));
        }
        let total = l.items.len() + r.items.len();
        if total <= self.max_at(tx, lvl) {
            l.items.append(&mut r.items);
            l.ptrs.append(&mut r.ptrs);
            l.right = r.right;
            self.store(tx, &l)?;
            self.set_sib(tx, r.right, lvl, true, l.agbno)?;
            src.put(tx, self, r.agbno)?;
            p.items.remove(ri);
            p.ptrs.remove(ri);
        } else {
            let half = total / 2;
            let mut items = std::mem::take(&mut l.items);
            items.append(&mut r.items);
            let mut ptrs = std::mem::take(&mut l.ptrs);
            ptrs.append(&mut r.ptrs);
            r.items = items.split_off(half);
            l.items = items;
            if lvl > 0 {
                r.ptrs = ptrs.split_off(half);
                l.ptrs = ptrs;
            }
            self.store(tx, &l)?;
            self.store(tx, &r)?;
            if let Some(k) = self.first_key(&r) {
                p.items[ri] = k;
            }
        }
        Ok(())
    }

    fn del(
        &self,
        tx: &mut Tx,
        src: &mut dyn Source,
        agbno: u32,
        level: u32,
        key: u64,
        rec: &[u8],
    ) -> Result<Down, FsError> {
        let mut b = self.load(tx, agbno, level)?;
        let old_first = self.first_key(&b);
        if level == 0 {
            let Some(i) = b
                .items
                .iter()
                .position(|r| (self.spec.key)(r) == key && r.as_slice() == rec)
            else {
                return Err(self.corrupt(
                    tx,
                    agbno,
                    format!("record {key:#x} is not where the other tree says"),
                ));
            };
            b.items.remove(i);
        } else {
            let c = self.child(&b, key);
            let d = self.del(tx, src, b.ptrs[c], level - 1, key, rec)?;
            if d.first.is_none() && !d.under {
                return Ok(Down::default());
            }
            if let Some(f) = d.first {
                b.items[c] = f;
            }
            if d.under {
                self.rebalance(tx, src, &mut b, c)?;
            }
        }
        self.store(tx, &b)?;
        let new_first = self.first_key(&b);
        Ok(Down {
            first: (new_first != old_first).then_some(new_first).flatten(),
            under: b.items.len() < self.min_at(tx, level),
        })
    }

    /// Delete record `rec` (sort key `key`); it must be there.
    pub fn delete(
        &mut self,
        tx: &mut Tx,
        src: &mut dyn Source,
        key: u64,
        rec: &[u8],
    ) -> Result<(), FsError> {
        self.check_levels(tx)?;
        self.del(tx, src, self.root, self.levels - 1, key, rec)?;
        // A root node left with one child gives way to it.
        while self.levels > 1 {
            let r = self.load(tx, self.root, self.levels - 1)?;
            if r.ptrs.len() != 1 {
                break;
            }
            let old = self.root;
            self.root = r.ptrs[0];
            self.levels -= 1;
            let mut child = self.load(tx, self.root, self.levels - 1)?;
            if child.left != NULL_AGBNO || child.right != NULL_AGBNO {
                child.left = NULL_AGBNO;
                child.right = NULL_AGBNO;
                self.store(tx, &child)?;
            }
            src.set_root(tx, self)?;
            src.put(tx, self, old)?;
        }
        Ok(())
    }

    /// Replace record `old` (sort key `key`) by `new`, which sorts in the
    /// same place (between the records around `old`).
    pub fn update(&self, tx: &mut Tx, key: u64, old: &[u8], new: &[u8]) -> Result<(), FsError> {
        self.check_levels(tx)?;
        let p = self.descend(tx, key)?;
        let depth = p.blocks.len();
        let leaf_bno = p.blocks[depth - 1];
        let mut b = self.load(tx, leaf_bno, 0)?;
        let i = p.idx[depth - 1];
        if b.items.get(i).map(Vec::as_slice) != Some(old) {
            return Err(self.corrupt(
                tx,
                leaf_bno,
                format!("record {key:#x} is not where the other tree says"),
            ));
        }
        let nk = (self.spec.key)(new);
        let below = i.checked_sub(1).map(|j| (self.spec.key)(&b.items[j]));
        let above = b.items.get(i + 1).map(|r| (self.spec.key)(r));
        if below.is_some_and(|k| k >= nk) || above.is_some_and(|k| k <= nk) {
            return Err(self.corrupt(
                tx,
                leaf_bno,
                format!("record {nk:#x} would fall out of order"),
            ));
        }
        b.items[i] = new.to_vec();
        self.store(tx, &b)?;
        if i == 0 && nk != key {
            // Walk up while this block is its parent's first child.
            let kb = self.keyb(new);
            for d in (0..depth - 1).rev() {
                let lvl = (depth - 1 - d) as u32;
                let mut n = self.load(tx, p.blocks[d], lvl)?;
                let j = p.idx[d];
                if j >= n.items.len() {
                    return Err(self.corrupt(tx, n.agbno, "descent index out of range".into()));
                }
                n.items[j] = kb.clone();
                self.store(tx, &n)?;
                if j != 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The record before the first whose key is at or above `key`
    /// (looking into the left sibling leaf when needed).
    pub fn prev_rec(&self, tx: &Tx, key: u64) -> Result<Option<Vec<u8>>, FsError> {
        let p = self.descend(tx, key)?;
        let i = p.idx[p.idx.len() - 1];
        if i > 0 {
            return Ok(Some(self.rec(tx, &p.leaf, i - 1).to_vec()));
        }
        let l = be32(&p.leaf, 8);
        if l == NULL_AGBNO {
            return Ok(None);
        }
        let (b, n) = self.block(tx, l, 0)?;
        Ok((n > 0).then(|| self.rec(tx, &b, n - 1).to_vec()))
    }

    /// The first record whose key is at or above `key` (looking into the
    /// right sibling leaf when needed).
    pub fn next_rec(&self, tx: &Tx, key: u64) -> Result<Option<Vec<u8>>, FsError> {
        let p = self.descend(tx, key)?;
        let i = p.idx[p.idx.len() - 1];
        if i < p.numrecs {
            return Ok(Some(self.rec(tx, &p.leaf, i).to_vec()));
        }
        Ok(self
            .right_sibling(tx, &p.leaf)?
            .filter(|(_, n)| *n > 0)
            .map(|(b, _)| self.rec(tx, &b, 0).to_vec()))
    }
}
