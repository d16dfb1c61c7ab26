//! The short-form per-AG B+trees (bnobt, cntbt, inobt, finobt,
//! refcountbt): verified block reads, descent to a key, and in-place leaf
//! changes with the keys above kept right. A change that would need a
//! block split or merge (a leaf over its maximum, a non-root leaf under its
//! minimum) is refused by [`Bt::check_touched`].

use std::cmp::Ordering;

use vmie_guestfs::FsError;

use crate::be::{be16, be32, put32};
use crate::tx::Tx;

/// No sibling.
const NULL_AGBNO: u32 = 0xFFFF_FFFF;
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

/// A leaf touched by a change, to check for split/merge at the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Touched {
    pub agbno: u32,
    pub root: bool,
    pub before: usize,
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

    /// Replace the leaf at `path` by `recs`, keeping the keys above right;
    /// records the leaf in `touched`.
    pub fn set_leaf(
        &self,
        tx: &mut Tx,
        path: &Path,
        recs: &[Vec<u8>],
        touched: &mut Vec<Touched>,
    ) -> Result<(), FsError> {
        let hdr = self.hdr(tx);
        let leaf_bno = *path.blocks.last().unwrap_or(&self.root);
        if recs.len() > self.leaf_max(tx) {
            return Err(self.refuse_split(tx, leaf_bno));
        }
        let mut b = path.leaf.clone();
        let old_first = (path.numrecs > 0).then(|| (self.spec.key)(self.rec(tx, &b, 0)));
        b[6..8].copy_from_slice(&(recs.len() as u16).to_be_bytes());
        let rl = self.spec.reclen;
        let area_end = hdr + self.leaf_max(tx) * rl;
        b[hdr..area_end].fill(0);
        for (i, r) in recs.iter().enumerate() {
            b[hdr + i * rl..hdr + (i + 1) * rl].copy_from_slice(r);
        }
        let at = self.byte_of(tx, leaf_bno)?;
        if tx.c.geo.v5 {
            crate::csum::update(&mut b, 52);
        }
        tx.write(at, b)?;
        if !touched.iter().any(|t| t.agbno == leaf_bno) {
            touched.push(Touched {
                agbno: leaf_bno,
                root: path.blocks.len() == 1,
                before: path.numrecs,
            });
        }
        // The first key changed: fix the key in each parent while this
        // child is its parent's first.
        let new_first = recs.first().map(|r| (self.spec.key)(r));
        if let (Some(old), Some(new), Some(first)) = (old_first, new_first, recs.first()) {
            if old != new {
                self.fix_keys(tx, path, &first[..self.spec.keylen])?;
            }
        }
        Ok(())
    }

    fn fix_keys(&self, tx: &mut Tx, path: &Path, key: &[u8]) -> Result<(), FsError> {
        let hdr = self.hdr(tx);
        let kl = self.spec.keylen;
        // Walk up from the leaf's parent.
        let depth = path.blocks.len();
        for d in (0..depth.saturating_sub(1)).rev() {
            let agbno = path.blocks[d];
            let level = (depth - 1 - d) as u32;
            let (mut b, _) = self.block(tx, agbno, level)?;
            let i = path.idx[d];
            b[hdr + i * kl..hdr + (i + 1) * kl].copy_from_slice(key);
            if tx.c.geo.v5 {
                crate::csum::update(&mut b, 52);
            }
            let at = self.byte_of(tx, agbno)?;
            tx.write(at, b)?;
            if i != 0 {
                break;
            }
        }
        Ok(())
    }

    fn refuse_split(&self, tx: &Tx, agbno: u32) -> FsError {
        FsError::Unsupported {
            fs: tx.c.location.clone(),
            op: "write".into(),
            why: format!(
                "the change would split or merge {} (a btree block split or merge is not implemented)",
                self.place(agbno)
            ),
        }
    }

    /// Refuse when a touched non-root leaf fell under its minimum.
    pub fn check_touched(&self, tx: &Tx, touched: &[Touched]) -> Result<(), FsError> {
        let min = self.leaf_max(tx) / 2;
        for t in touched {
            if t.root {
                continue;
            }
            let at = self.byte_of(tx, t.agbno)?;
            let b = tx.read(at, 8)?;
            let n = usize::from(be16(&b, 6));
            if n < min && n < t.before {
                return Err(self.refuse_split(tx, t.agbno));
            }
        }
        Ok(())
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

/// The records of a leaf as owned vectors.
pub(crate) fn records(bt: &Bt, tx: &Tx, p: &Path) -> Vec<Vec<u8>> {
    (0..p.numrecs)
        .map(|i| bt.rec(tx, &p.leaf, i).to_vec())
        .collect()
}

/// An 8-byte alloc record.
pub(crate) fn alloc_rec(start: u32, len: u32) -> Vec<u8> {
    let mut r = vec![0u8; 8];
    put32(&mut r, 0, start);
    put32(&mut r, 4, len);
    r
}
