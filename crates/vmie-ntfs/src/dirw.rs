//! Directory indexes (`$I30`) on the write side, on staged records and
//! index blocks: finding the entry of a name with its position, changing
//! its key in place, inserting an entry into the node where collation puts
//! it when that node has room, and removing an entry from a leaf.
//!
//! A full leaf block is split in two around its middle entry, which moves up
//! into the parent node; the new block is a free one of the `$I30`
//! `$BITMAP`, or one added at the end of `$INDEX_ALLOCATION` (clusters
//! allocated when its last cluster has no room).
//!
//! A full `$INDEX_ROOT` (no room for a new entry, or for the middle entry
//! of a split child) is moved down, as Windows and ntfs-3g do: its entries
//! go into a new index block (internal when they have subnodes), taken
//! from the allocation or, for a directory that had none, the first block
//! of a new non-resident `$INDEX_ALLOCATION` with an 8-byte `$BITMAP`; the
//! root keeps one end entry pointing at it and its large-index flag.
//!
//! Not done here (refused): splitting an internal block that has no room
//! for the middle entry, a non-resident `$I30` `$BITMAP`, merging nodes,
//! removing an entry of an internal node or the last one of a block.

use std::cmp::Ordering;
use std::collections::HashSet;

use vmie_guestfs::FsError;

use crate::attr;
use crate::index::{self, Entry, INDX_NODE_AT, ROOT_NODE_AT};
use crate::le::{le16, le32, le64, put16, put32, put64};
use crate::record::{Body, AT_ATTRIBUTE_LIST};
use crate::runlist;
use crate::tx::Tx;

const AT_INDEX_ROOT: u32 = 0x90;
const AT_INDEX_ALLOCATION: u32 = 0xA0;
const AT_BITMAP: u32 = 0xB0;
/// Entry flags.
const ENTRY_SUBNODE: u16 = 0x01;
const ENTRY_LAST: u16 = 0x02;
/// Deepest index walked.
const MAX_DEPTH: usize = 64;

fn i30() -> Vec<u16> {
    "$I30".encode_utf16().collect()
}

/// A directory's index as the write side sees it.
#[derive(Debug, Clone)]
pub(crate) struct Dir {
    pub rn: u64,
    pub place: String,
    alloc_runs: Option<Vec<(u64, u64)>>,
    alloc_len: u64,
    rs: u32,
    vcn_bytes: u64,
}

/// Which node an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// `$INDEX_ROOT` of the directory's record.
    Root,
    /// The index block with this key in the transaction.
    Block(u64),
}

/// An entry found, with where it is.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub node: Node,
    /// Offset in the node's buffer (record or block) of the entries.
    pub base: usize,
    pub entry: Entry,
    /// Whether the node is a leaf (no entry has a subnode).
    pub leaf: bool,
    /// Entries in the node, the end entry included.
    pub count: usize,
    /// The entry of the parent node that points at this node (node, its
    /// offset in the parent's buffer, its length), and this node's VCN.
    pub parent: Option<(Node, usize, usize, i64)>,
}

impl Dir {
    pub fn open(tx: &mut Tx<'_>, rn: u64, place: &str) -> Result<Self, FsError> {
        Self::open_at(tx, rn, format!("{place} (MFT record {rn})"))
    }

    /// The directory again, after its attributes changed in `tx`.
    fn reopen(&self, tx: &mut Tx<'_>) -> Result<Self, FsError> {
        Self::open_at(tx, self.rn, self.place.clone())
    }

    fn open_at(tx: &mut Tx<'_>, rn: u64, place: String) -> Result<Self, FsError> {
        let r = tx.parsed(rn)?;
        if r.attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
            return Err(FsError::Unsupported {
                fs: tx.loc.to_string(),
                op: format!("change the index of {place}"),
                why: "the directory has an $ATTRIBUTE_LIST (not implemented)".into(),
            });
        }
        let name = i30();
        let root = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_INDEX_ROOT && a.name == name)
            .ok_or_else(|| tx.corrupt(&place, "no $I30 $INDEX_ROOT"))?;
        let value = r
            .resident(root)
            .ok_or_else(|| tx.corrupt(&place, "$INDEX_ROOT is not resident"))?;
        let parsed = index::parse_root(value).map_err(|d| tx.corrupt(&place, d))?;
        let mut alloc_runs = None;
        let mut alloc_len = 0;
        if let Some(a) = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_INDEX_ALLOCATION && a.name == name)
        {
            match &a.body {
                Body::NonResident {
                    lowest_vcn: 0,
                    data_size,
                    runs,
                    ..
                } => {
                    alloc_runs = Some(runlist::allocated(runs).map_err(|d| tx.corrupt(&place, d))?);
                    alloc_len = *data_size;
                }
                _ => {
                    return Err(tx.corrupt(
                        &place,
                        "$INDEX_ALLOCATION is not a first non-resident extent",
                    ))
                }
            }
        }
        let cs = tx.geo.cluster_size;
        Ok(Self {
            rn,
            place,
            alloc_runs,
            alloc_len,
            rs: parsed.record_size,
            vcn_bytes: if parsed.record_size >= cs {
                u64::from(cs)
            } else {
                512
            },
        })
    }

    /// The root node: offset of its header in the record, and its entries.
    fn root(&self, tx: &mut Tx<'_>) -> Result<(usize, usize, Vec<Entry>), FsError> {
        let r = tx.parsed(self.rn)?;
        let name = i30();
        let a = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_INDEX_ROOT && a.name == name)
            .ok_or_else(|| tx.corrupt(&self.place, "no $I30 $INDEX_ROOT"))?;
        let Body::Resident(range) = &a.body else {
            return Err(tx.corrupt(&self.place, "$INDEX_ROOT is not resident"));
        };
        let value = &r.data[range.clone()];
        let entries =
            index::node_entries(value, ROOT_NODE_AT).map_err(|d| tx.corrupt(&self.place, d))?;
        let hdr = range.start + ROOT_NODE_AT;
        Ok((a.off, hdr, entries))
    }

    fn block(&self, tx: &mut Tx<'_>, vcn: i64) -> Result<(u64, Vec<Entry>), FsError> {
        let runs = self
            .alloc_runs
            .as_ref()
            .ok_or_else(|| tx.corrupt(&self.place, "a subnode, but no $INDEX_ALLOCATION"))?;
        let rs = u64::from(self.rs);
        let off = u64::try_from(vcn)
            .ok()
            .and_then(|v| v.checked_mul(self.vcn_bytes))
            .filter(|&o| o % rs == 0 && o + rs <= self.alloc_len)
            .ok_or_else(|| {
                tx.corrupt(
                    &self.place,
                    format!("index subnode VCN {vcn} is outside the allocation"),
                )
            })?;
        let (key, buf) = tx.indx(runs, off, self.rs as usize, &self.place)?;
        if le64(buf, 16) as i64 != vcn {
            return Err(tx.corrupt(
                &self.place,
                format!("index block at VCN {vcn} names another VCN"),
            ));
        }
        let entries = index::node_entries(buf, INDX_NODE_AT)
            .map_err(|d| tx.corrupt(&self.place, format!("index block VCN {vcn}: {d}")))?;
        Ok((key, entries))
    }

    /// Walk to `name`: the entry when found (`Ok(Ok(hit))`), else the node
    /// and entry before which it would go (`Ok(Err(hit))`).
    pub fn seek(
        &self,
        tx: &mut Tx<'_>,
        up: &[u16],
        name: &[u16],
        cmp_exact: bool,
    ) -> Result<Result<Hit, Hit>, FsError> {
        let (_, hdr, mut entries) = self.root(tx)?;
        let mut node = Node::Root;
        let mut base = hdr + le32(&tx.record(self.rn)?.clone(), hdr) as usize;
        let mut seen = HashSet::new();
        let mut parent: Option<(Node, usize, usize, i64)> = None;
        for _ in 0..MAX_DEPTH {
            let leaf = entries.iter().all(|e| e.subnode.is_none());
            let count = entries.len();
            let mut next = None;
            for e in &entries {
                let ord = match &e.key {
                    None => Ordering::Greater,
                    Some(k) if cmp_exact => index::exact_cmp(up, &k.name, name),
                    Some(k) => index::upcase_cmp(up, &k.name, name),
                };
                match ord {
                    Ordering::Less => continue,
                    Ordering::Equal => {
                        return Ok(Ok(Hit {
                            node,
                            base,
                            entry: e.clone(),
                            leaf,
                            count,
                            parent,
                        }));
                    }
                    Ordering::Greater => {
                        match e.subnode {
                            Some(v) => {
                                next = Some(v);
                                parent = Some((node, base + e.pos, e.len, v));
                            }
                            None => {
                                return Ok(Err(Hit {
                                    node,
                                    base,
                                    entry: e.clone(),
                                    leaf,
                                    count,
                                    parent,
                                }))
                            }
                        }
                        break;
                    }
                }
            }
            let Some(vcn) = next else {
                return Err(tx.corrupt(&self.place, "an index node without an end entry"));
            };
            if !seen.insert(vcn) {
                return Err(tx.corrupt(
                    &self.place,
                    format!("index node VCN {vcn} is reached twice"),
                ));
            }
            let (key, es) = self.block(tx, vcn)?;
            let buf = tx.indx_buf(key)?;
            base = INDX_NODE_AT + le32(buf, INDX_NODE_AT) as usize;
            node = Node::Block(key);
            entries = es;
        }
        Err(tx.corrupt(
            &self.place,
            format!("directory index deeper than {MAX_DEPTH} levels"),
        ))
    }

    /// The bytes of the node `hit` is in, for editing.
    pub fn buf<'t>(&self, tx: &'t mut Tx<'_>, node: Node) -> Result<&'t mut Vec<u8>, FsError> {
        match node {
            Node::Root => tx.record(self.rn),
            Node::Block(k) => tx.indx_buf(k),
        }
    }

    pub fn mark(&self, tx: &mut Tx<'_>, node: Node) {
        match node {
            Node::Root => tx.dirty(self.rn),
            Node::Block(k) => tx.indx_dirty(k),
        }
    }

    fn full(&self, tx: &Tx<'_>) -> FsError {
        FsError::Unsupported {
            fs: tx.loc.to_string(),
            op: format!("change the index of {}", self.place),
            why: "directory index full: splitting not implemented for this node".into(),
        }
    }

    /// Bytes a node can still take.
    fn room(&self, tx: &mut Tx<'_>, node: Node) -> Result<usize, FsError> {
        Ok(match node {
            Node::Root => {
                let rec = tx.record(self.rn)?;
                (le32(rec, 0x1C) as usize).saturating_sub(le32(rec, 0x18) as usize)
            }
            Node::Block(k) => {
                let b = tx.indx_buf(k)?;
                let size = le32(b, INDX_NODE_AT + 4) as usize;
                let alloc = (le32(b, INDX_NODE_AT + 8) as usize).min(b.len() - INDX_NODE_AT);
                alloc.saturating_sub(size)
            }
        })
    }

    /// Insert entry `e` (for `name`) where collation puts it: into the leaf
    /// when it has room, else splitting a full leaf block; a full root is
    /// first moved down into a new index block (see [`Self::push_root_down`]).
    pub fn insert(
        &self,
        tx: &mut Tx<'_>,
        up: &[u16],
        name: &[u16],
        e: &[u8],
    ) -> Result<(), FsError> {
        let mut dir = self.clone();
        // At most one push-down per insert is ever needed; the bound is a
        // guard against a corrupt index.
        for _ in 0..3 {
            let hit = match dir.seek(tx, up, name, false)? {
                Ok(_) => return Err(tx.corrupt(&dir.place, "the name to insert is already there")),
                Err(h) => h,
            };
            if !hit.leaf {
                return Err(tx.corrupt(&dir.place, "the insert position is not in a leaf"));
            }
            if e.len() <= dir.room(tx, hit.node)? {
                return dir.edit(tx, hit.node, hit.base + hit.entry.pos, 0, e);
            }
            match (hit.node, hit.parent) {
                (Node::Block(key), Some(parent)) => {
                    if dir.split(tx, key, &hit, parent, e)? {
                        return Ok(());
                    }
                }
                (Node::Block(_), None) => return Err(dir.full(tx)),
                (Node::Root, _) => {}
            }
            // The root has no room (for the entry, or for the middle entry of
            // a split leaf): move it down and try again.
            dir.push_root_down(tx)?;
            dir = dir.reopen(tx)?;
        }
        Err(dir.full(tx))
    }

    /// Move every entry of `$INDEX_ROOT` into a new index block (a free one
    /// of the allocation, or the first one of a new `$INDEX_ALLOCATION` with
    /// its `$BITMAP`), leaving the root with one end entry pointing at it and
    /// its large-index flag set, as Windows and ntfs-3g do when the root
    /// outgrows the MFT record.
    fn push_root_down(&self, tx: &mut Tx<'_>) -> Result<(), FsError> {
        let name = i30();
        let (attr_off, hdr, entries) = self.root(tx)?;
        let rec = tx.record(self.rn)?.clone();
        let eo = le32(&rec, hdr) as usize;
        let size = le32(&rec, hdr + 4) as usize;
        let moved = rec
            .get(hdr + eo..hdr + size)
            .ok_or_else(|| tx.corrupt(&self.place, "index root entries past the record"))?
            .to_vec();
        let internal = entries.iter().any(|e| e.subnode.is_some());
        let voff = usize::from(le16(&rec, attr_off + 20));
        let vstart = attr_off + voff;
        let head = rec
            .get(vstart..vstart + ROOT_NODE_AT)
            .ok_or_else(|| tx.corrupt(&self.place, "index root past the record"))?
            .to_vec();
        // The new root: its header, then the end entry leading to VCN 0 (the
        // VCN is set once the block is known).
        let mut value = head;
        let mut nh = vec![0u8; 16];
        put32(&mut nh, 0, 16);
        put32(&mut nh, 4, 16 + 24);
        put32(&mut nh, 8, 16 + 24);
        nh[12] = 1; // LARGE_INDEX
        value.extend_from_slice(&nh);
        let mut end = vec![0u8; 24];
        put16(&mut end, 8, 24);
        put16(&mut end, 12, ENTRY_LAST | ENTRY_SUBNODE);
        value.extend_from_slice(&end);
        let alen = le32(&rec, attr_off + 4) as usize;
        let a = attr::resident(
            AT_INDEX_ROOT,
            &name,
            le16(&rec, attr_off + 14),
            &value,
            false,
        );
        attr::splice(tx.record(self.rn)?, attr_off, alen, &a)
            .map_err(|d| tx.corrupt(&self.place, d))?;
        tx.dirty(self.rn);
        let r = tx.parsed(self.rn)?;
        let has_alloc = r
            .attrs
            .iter()
            .any(|a| a.ty == AT_INDEX_ALLOCATION && a.name == name);
        let (nb, runs) = if has_alloc {
            self.new_block(tx)?
        } else {
            self.first_block(tx)?
        };
        let rs = self.rs as usize;
        let vcn = i64::try_from(nb * u64::from(self.rs) / self.vcn_bytes)
            .map_err(|_| tx.corrupt(&self.place, "index block number overflows"))?;
        let mut fresh = new_block(rs, vcn, &moved).ok_or_else(|| self.full(tx))?;
        if internal {
            fresh[INDX_NODE_AT + 12] = 1; // has children
        }
        tx.indx_put(&runs, nb * u64::from(self.rs), fresh, &self.place)?;
        // Point the root's end entry at the block.
        let (_, hdr, entries) = self.root(tx)?;
        let rec = tx.record(self.rn)?;
        let at = hdr + le32(rec, hdr) as usize;
        match entries.as_slice() {
            [e] if e.subnode.is_some() => put64(rec, at + e.pos + 16, vcn as u64),
            _ => return Err(tx.corrupt(&self.place, "the new index root is not one end entry")),
        }
        Ok(())
    }

    /// A new `$INDEX_ALLOCATION` of one index block (clusters allocated) and
    /// its `$BITMAP` (8 bytes, the block's bit set), added to the
    /// directory's record; block 0 and the allocation's runs.
    fn first_block(&self, tx: &mut Tx<'_>) -> Result<(u64, Vec<(u64, u64)>), FsError> {
        let name = i30();
        let cs = u64::from(tx.geo.cluster_size);
        let rs = u64::from(self.rs);
        let need = rs.div_ceil(cs);
        let runs = tx.alloc(need, 0)?;
        let pairs = runlist::encode(&runs).map_err(|d| tx.corrupt(&self.place, d))?;
        let sizes = attr::NrSizes {
            highest_vcn: need as i64 - 1,
            allocated: need * cs,
            data: rs,
            initialized: rs,
        };
        let no_room = |tx: &Tx<'_>| FsError::Unsupported {
            fs: tx.loc.to_string(),
            op: format!("change the index of {}", self.place),
            why: "the new $INDEX_ALLOCATION does not fit in the directory's record".into(),
        };
        let rec = tx.record(self.rn)?;
        let i = attr::next_instance(rec);
        let a = attr::non_resident(AT_INDEX_ALLOCATION, &name, i, 0, sizes, &pairs);
        let at = attr::insert_at(rec, AT_INDEX_ALLOCATION, &name);
        if attr::splice(rec, at, 0, &a).is_err() {
            return Err(no_room(tx));
        }
        let mut bm = vec![0u8; 8];
        bm[0] = 1;
        let i = attr::next_instance(rec);
        let b = attr::resident(AT_BITMAP, &name, i, &bm, false);
        let at = attr::insert_at(rec, AT_BITMAP, &name);
        if attr::splice(rec, at, 0, &b).is_err() {
            return Err(no_room(tx));
        }
        tx.dirty(self.rn);
        Ok((0, runs))
    }

    fn split(
        &self,
        tx: &mut Tx<'_>,
        key: u64,
        hit: &Hit,
        (pnode, ppos, plen, leaf_vcn): (Node, usize, usize, i64),
        e: &[u8],
    ) -> Result<bool, FsError> {
        let buf = tx.indx_buf(key)?.clone();
        let entries =
            index::node_entries(&buf, INDX_NODE_AT).map_err(|d| tx.corrupt(&self.place, d))?;
        let mut items: Vec<Vec<u8>> = Vec::new();
        for en in &entries {
            if en.pos == hit.entry.pos {
                items.push(e.to_vec());
            }
            if en.key.is_none() {
                break;
            }
            items.push(buf[hit.base + en.pos..hit.base + en.pos + en.len].to_vec());
        }
        if items.len() < 3 {
            return Err(self.full(tx));
        }
        let total: usize = items.iter().map(Vec::len).sum();
        let mut acc = 0;
        let mut m = 1;
        for (i, it) in items.iter().enumerate() {
            if acc + it.len() > total / 2 {
                m = i;
                break;
            }
            acc += it.len();
        }
        let m = m.clamp(1, items.len() - 2);
        let end = end_entry();
        let left: Vec<u8> = [items[..m].concat(), end.clone()].concat();
        let right: Vec<u8> = [items[m + 1..].concat(), end].concat();
        let mut median = items[m].clone();
        let mlen = median.len();
        median.extend_from_slice(&leaf_vcn.to_le_bytes());
        put16(&mut median, 8, (mlen + 8) as u16);
        let flags = le16(&median, 12);
        put16(&mut median, 12, flags | ENTRY_SUBNODE);
        // The parent must take the middle entry; a full root is moved down
        // first (the caller does it and tries again).
        if median.len() > self.room(tx, pnode)? {
            return match pnode {
                Node::Root => Ok(false),
                Node::Block(_) => Err(self.full(tx)),
            };
        }
        let (nb, runs) = self.new_block(tx)?;
        let rs = self.rs as usize;
        let vcn_r = i64::try_from(nb * u64::from(self.rs) / self.vcn_bytes)
            .map_err(|_| tx.corrupt(&self.place, "index block number overflows"))?;
        let fresh = new_block(rs, vcn_r, &right).ok_or_else(|| self.full(tx))?;
        // The left half stays in the old block.
        {
            let b = tx.indx_buf(key)?;
            let eo = le32(b, INDX_NODE_AT) as usize;
            let start = INDX_NODE_AT + eo;
            let alloc_end = (INDX_NODE_AT + le32(b, INDX_NODE_AT + 8) as usize).min(b.len());
            if start + left.len() > alloc_end {
                return Err(self.full(tx));
            }
            b[start..start + left.len()].copy_from_slice(&left);
            b[start + left.len()..alloc_end].fill(0);
            put32(b, INDX_NODE_AT + 4, (eo + left.len()) as u32);
        }
        tx.indx_dirty(key);
        tx.indx_put(&runs, nb * u64::from(self.rs), fresh, &self.place)?;
        // The parent's entry now leads to the right half; the middle entry,
        // leading to the left half, goes before it.
        {
            let pb = self.buf(tx, pnode)?;
            put64(pb, ppos + plen - 8, vcn_r as u64);
        }
        self.mark(tx, pnode);
        self.edit(tx, pnode, ppos, 0, &median)?;
        Ok(true)
    }

    /// A free block of the index allocation (its number) and the
    /// allocation's runs, marking it in use in the `$I30` bitmap; a block
    /// added at the end when none is free.
    fn new_block(&self, tx: &mut Tx<'_>) -> Result<(u64, Vec<(u64, u64)>), FsError> {
        let name = i30();
        let r = tx.parsed(self.rn)?;
        let bm = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_BITMAP && a.name == name)
            .ok_or_else(|| tx.corrupt(&self.place, "an index allocation without a $BITMAP"))?;
        let Some(value) = r.resident(bm).map(<[u8]>::to_vec) else {
            return Err(FsError::Unsupported {
                fs: tx.loc.to_string(),
                op: format!("change the index of {}", self.place),
                why: "the index's $BITMAP is non-resident (not implemented)".into(),
            });
        };
        let alloc = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_INDEX_ALLOCATION && a.name == name)
            .ok_or_else(|| tx.corrupt(&self.place, "no $INDEX_ALLOCATION"))?
            .clone();
        let Body::NonResident {
            data_size, runs, ..
        } = &alloc.body
        else {
            return Err(tx.corrupt(&self.place, "$INDEX_ALLOCATION is resident"));
        };
        let mut runs = runlist::allocated(runs).map_err(|d| tx.corrupt(&self.place, d))?;
        let rs = u64::from(self.rs);
        let blocks = data_size / rs;
        let free = (0..blocks).find(|&b| {
            value
                .get((b / 8) as usize)
                .is_some_and(|&x| x & (1 << (b % 8)) == 0)
        });
        let nb = match free {
            Some(b) => b,
            None => {
                // Grow the allocation by one block.
                let cs = u64::from(tx.geo.cluster_size);
                let allocated = le64(&r.data, alloc.off + 40);
                let new_data = (blocks + 1) * rs;
                let mut new_alloc = allocated;
                if new_data > allocated {
                    let need = (new_data - allocated).div_ceil(cs);
                    let hint = runs.last().map_or(0, |&(l, n)| l + n);
                    let got = tx.alloc(need, hint)?;
                    runs.extend(got);
                    runs = runlist::merge(&runs);
                    new_alloc = allocated + need * cs;
                }
                let pairs = runlist::encode(&runs).map_err(|d| tx.corrupt(&self.place, d))?;
                let sizes = attr::NrSizes {
                    highest_vcn: (new_alloc / cs) as i64 - 1,
                    allocated: new_alloc,
                    data: new_data,
                    initialized: new_data,
                };
                let a = attr::non_resident(
                    AT_INDEX_ALLOCATION,
                    &name,
                    le16(&r.data, alloc.off + 14),
                    le16(&r.data, alloc.off + 12),
                    sizes,
                    &pairs,
                );
                let rec = tx.record(self.rn)?;
                attr::splice(rec, alloc.off, alloc.len, &a).map_err(|_| FsError::Unsupported {
                    fs: tx.loc.to_string(),
                    op: format!("change the index of {}", self.place),
                    why: "the grown $INDEX_ALLOCATION does not fit in the directory's record"
                        .into(),
                })?;
                blocks
            }
        };
        // Set its bit, growing the bitmap value by 8 bytes when needed.
        let r = tx.parsed(self.rn)?;
        let bm = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_BITMAP && a.name == name)
            .ok_or_else(|| tx.corrupt(&self.place, "$BITMAP vanished"))?;
        let mut value = r.resident(bm).unwrap_or_default().to_vec();
        let byte = (nb / 8) as usize;
        if byte >= value.len() {
            value.resize(byte.div_ceil(8) * 8 + 8, 0);
        }
        value[byte] |= 1 << (nb % 8);
        let a = attr::resident(AT_BITMAP, &name, le16(&r.data, bm.off + 14), &value, false);
        let rec = tx.record(self.rn)?;
        attr::splice(rec, bm.off, bm.len, &a).map_err(|_| FsError::Unsupported {
            fs: tx.loc.to_string(),
            op: format!("change the index of {}", self.place),
            why: "the grown index $BITMAP does not fit in the directory's record".into(),
        })?;
        tx.dirty(self.rn);
        Ok((nb, runs))
    }

    /// Replace `old_len` bytes at entry offset `pos` of the node with `new`
    /// (insert: `old_len` 0; remove: `new` empty), fixing the node's sizes;
    /// refuses when the node has no room.
    pub fn edit(
        &self,
        tx: &mut Tx<'_>,
        node: Node,
        pos: usize,
        old_len: usize,
        new: &[u8],
    ) -> Result<(), FsError> {
        let full = || FsError::Unsupported {
            fs: tx.loc.to_string(),
            op: format!("change the index of {}", self.place),
            why: "directory index full: splitting not implemented".into(),
        };
        match node {
            Node::Block(k) => {
                let buf = tx.indx_buf(k)?;
                let hdr = INDX_NODE_AT;
                let size = le32(buf, hdr + 4) as usize;
                let alloc = le32(buf, hdr + 8) as usize;
                let end = hdr + size;
                let new_size = size + new.len() - old_len;
                if new_size > alloc || hdr + alloc > buf.len() {
                    return Err(full());
                }
                let tail = buf[pos + old_len..end].to_vec();
                buf[pos..pos + new.len()].copy_from_slice(new);
                buf[pos + new.len()..pos + new.len() + tail.len()].copy_from_slice(&tail);
                let new_end = hdr + new_size;
                if new_end < end {
                    buf[new_end..end].fill(0);
                }
                put32(buf, hdr + 4, new_size as u32);
                tx.indx_dirty(k);
            }
            Node::Root => {
                let (attr_off, hdr, _) = self.root(tx)?;
                let rec = tx.record(self.rn)?;
                let voff = usize::from(le16(rec, attr_off + 20));
                let vlen = le32(rec, attr_off + 16) as usize;
                let size = le32(rec, hdr + 4) as usize;
                let end = hdr + size;
                let mut value = rec[attr_off + voff..attr_off + voff + vlen].to_vec();
                let vs = hdr - (attr_off + voff);
                if pos + old_len > end {
                    return Err(tx.corrupt(&self.place, "index entry past the root node"));
                }
                let p = pos - (attr_off + voff);
                let mut tail = value.split_off(p);
                let after = tail.split_off(old_len);
                value.extend_from_slice(new);
                value.extend_from_slice(&after);
                let new_size = size + new.len() - old_len;
                put32(&mut value, vs + 4, new_size as u32);
                put32(&mut value, vs + 8, new_size as u32);
                let a = attr::resident(
                    AT_INDEX_ROOT,
                    &i30(),
                    le16(rec, attr_off + 14),
                    &value,
                    false,
                );
                let alen = le32(rec, attr_off + 4) as usize;
                attr::splice(rec, attr_off, alen, &a).map_err(|_| full())?;
                tx.dirty(self.rn);
            }
        }
        Ok(())
    }
}

/// The end entry of a leaf node.
fn end_entry() -> Vec<u8> {
    let mut e = vec![0u8; 16];
    put16(&mut e, 8, 16);
    put16(&mut e, 12, ENTRY_LAST);
    e
}

/// A fresh leaf index block of `rs` bytes for `vcn` holding `entries` (the
/// end entry included), fixup not applied; `None` when they do not fit.
fn new_block(rs: usize, vcn: i64, entries: &[u8]) -> Option<Vec<u8>> {
    let usa_count = rs / 512 + 1;
    let eo = (16 + 2 * usa_count).div_ceil(8) * 8;
    let mut b = vec![0u8; rs];
    b[0..4].copy_from_slice(b"INDX");
    put16(&mut b, 4, 0x28);
    put16(&mut b, 6, usa_count as u16);
    put64(&mut b, 16, vcn as u64);
    let start = INDX_NODE_AT + eo;
    if start + entries.len() > rs {
        return None;
    }
    put32(&mut b, INDX_NODE_AT, eo as u32);
    put32(&mut b, INDX_NODE_AT + 4, (eo + entries.len()) as u32);
    put32(&mut b, INDX_NODE_AT + 8, (rs - INDX_NODE_AT) as u32);
    b[start..start + entries.len()].copy_from_slice(entries);
    Some(b)
}
