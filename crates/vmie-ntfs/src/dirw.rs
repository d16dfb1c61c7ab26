//! Directory indexes (`$I30`) on the write side, on staged records and
//! index blocks: finding the entry of a name with the path to it, changing
//! its key in place, inserting an entry, and removing one, keeping the
//! B+tree (`$INDEX_ROOT` → internal blocks → leaf blocks) valid.
//!
//! Insert: into the leaf collation (`$UpCase`, then code unit) puts it at.
//! A full block (leaf or internal) is split in two around its middle entry,
//! which moves up into the parent node with the left half's VCN as its
//! subnode (splitting the parent in turn when it is full); the new block is
//! a free one of the `$I30` `$BITMAP`, or one added at the end of
//! `$INDEX_ALLOCATION` (clusters allocated when its last cluster has no
//! room). A full `$INDEX_ROOT` is moved down, as Windows and ntfs-3g do: its
//! entries go into a new index block (internal when they have subnodes),
//! taken from the allocation or, for a directory that had none, the first
//! block of a new non-resident `$INDEX_ALLOCATION` with an 8-byte `$BITMAP`;
//! the root keeps one end entry pointing at it and its large-index flag (a
//! new level).
//!
//! Remove: an entry of a leaf is cut out. An entry of an internal node is
//! replaced by its in-order predecessor (the last entry of the rightmost
//! leaf of its left subtree), which keeps the removed entry's subnode VCN;
//! the predecessor is cut from its leaf. A block left with only its end
//! entry is freed (its `$BITMAP` bit cleared) and the parent's pointer to it
//! goes: a real parent entry is taken out and its key inserted again as an
//! ordinary insert; a parent end entry takes over the subnode of the entry
//! before it, whose key is inserted again; a parent with no other entry is
//! freed in turn, up to the root, which then becomes an empty leaf again
//! (small index, as ntfs-3g's leafify). An internal node may be left with
//! only its end entry (one child), which is valid and looked up normally.
//! `$INDEX_ALLOCATION` keeps its size when blocks are freed (as ntfs-3g).
//!
//! Not done here (refused): a non-resident `$I30` `$BITMAP`, an
//! `$ATTRIBUTE_LIST` on the directory.

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
    rs: u32,
    vcn_bytes: u64,
    /// Subtrees cut loose for a moment by an edit in progress (an internal
    /// entry taken out before its replacement goes in): [`Self::in_use`]
    /// walks them too.
    detached: std::cell::RefCell<Vec<i64>>,
    /// The root is being rebuilt (its end entry's subnode is a placeholder):
    /// [`Self::in_use`] walks only the detached subtrees.
    root_pending: std::cell::Cell<bool>,
}

/// Which node an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// `$INDEX_ROOT` of the directory's record.
    Root,
    /// The index block with this key in the transaction.
    Block(u64),
}

/// An `$INDEX_ALLOCATION`: its runs `(lcn, clusters)` and data size.
type Alloc = (Vec<(u64, u64)>, u64);

/// A step of a walk: a node and the index of the entry taken in it.
type Step = (Node, usize);

/// An entry found, with where it is.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub node: Node,
    /// Offset in the node's buffer (record or block) of the entries.
    pub base: usize,
    pub entry: Entry,
    /// Index of the entry in its node.
    pub idx: usize,
    /// Whether the node is a leaf (no entry has a subnode).
    pub leaf: bool,
    /// Entries in the node, the end entry included.
    pub count: usize,
    /// The nodes above, root first, each with the index of the entry whose
    /// subnode leads down.
    pub path: Vec<Step>,
}

impl Hit {
    /// The path with this node and entry at its end.
    fn steps(&self) -> Vec<Step> {
        let mut p = self.path.clone();
        p.push((self.node, self.idx));
        p
    }
}

/// The entry `e` (bytes) with its subnode VCN set to `vcn` (`None`: none).
fn with_subnode(e: &[u8], vcn: Option<i64>) -> Option<Vec<u8>> {
    let len = usize::from(le16(e, 8));
    let flags = le16(e, 12);
    let mut out = e.get(..len)?.to_vec();
    if flags & ENTRY_SUBNODE != 0 {
        out.truncate(len.checked_sub(8)?);
    }
    let mut flags = flags & !ENTRY_SUBNODE;
    if let Some(v) = vcn {
        out.extend_from_slice(&v.to_le_bytes());
        flags |= ENTRY_SUBNODE;
    }
    let n = u16::try_from(out.len()).ok()?;
    put16(&mut out, 8, n);
    put16(&mut out, 12, flags);
    Some(out)
}

impl Dir {
    pub fn open(tx: &mut Tx<'_>, rn: u64, place: &str) -> Result<Self, FsError> {
        Self::open_at(tx, rn, format!("{place} (MFT record {rn})"))
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
        let dir = Self {
            detached: std::cell::RefCell::new(Vec::new()),
            root_pending: std::cell::Cell::new(false),
            rn,
            place,
            rs: parsed.record_size,
            vcn_bytes: if parsed.record_size >= tx.geo.cluster_size {
                u64::from(tx.geo.cluster_size)
            } else {
                512
            },
        };
        dir.alloc(tx)?;
        Ok(dir)
    }

    /// The `$INDEX_ALLOCATION`'s runs and data size, as the record has them
    /// now (`None` when the directory has none).
    fn alloc(&self, tx: &mut Tx<'_>) -> Result<Option<Alloc>, FsError> {
        let r = tx.parsed(self.rn)?;
        let name = i30();
        let Some(a) = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_INDEX_ALLOCATION && a.name == name)
        else {
            return Ok(None);
        };
        match &a.body {
            Body::NonResident {
                lowest_vcn: 0,
                data_size,
                runs,
                ..
            } => {
                let runs = runlist::allocated(runs).map_err(|d| tx.corrupt(&self.place, d))?;
                Ok(Some((runs, *data_size)))
            }
            _ => Err(tx.corrupt(
                &self.place,
                "$INDEX_ALLOCATION is not a first non-resident extent",
            )),
        }
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

    /// The index block at `vcn`: its key in the transaction and entries.
    fn block(&self, tx: &mut Tx<'_>, vcn: i64) -> Result<(u64, Vec<Entry>), FsError> {
        let (runs, alloc_len) = self
            .alloc(tx)?
            .ok_or_else(|| tx.corrupt(&self.place, "a subnode, but no $INDEX_ALLOCATION"))?;
        let rs = u64::from(self.rs);
        let off = u64::try_from(vcn)
            .ok()
            .and_then(|v| v.checked_mul(self.vcn_bytes))
            .filter(|&o| o % rs == 0 && o.checked_add(rs).is_some_and(|e| e <= alloc_len))
            .ok_or_else(|| {
                tx.corrupt(
                    &self.place,
                    format!("index subnode VCN {vcn} is outside the allocation"),
                )
            })?;
        let (key, buf) = tx.indx(&runs, off, self.rs as usize, &self.place)?;
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

    /// A node's entries and the offset of the first in its buffer.
    fn entries(&self, tx: &mut Tx<'_>, node: Node) -> Result<(usize, Vec<Entry>), FsError> {
        match node {
            Node::Root => {
                let (_, hdr, entries) = self.root(tx)?;
                let rec = tx.record(self.rn)?;
                Ok((hdr + le32(rec, hdr) as usize, entries))
            }
            Node::Block(k) => {
                let buf = tx.indx_buf(k)?;
                let base = INDX_NODE_AT + le32(buf, INDX_NODE_AT) as usize;
                let entries = index::node_entries(buf, INDX_NODE_AT)
                    .map_err(|d| tx.corrupt(&self.place, format!("index block: {d}")))?;
                Ok((base, entries))
            }
        }
    }

    /// The bytes of entry `idx` of `node`, its offset and its entry.
    fn entry_bytes(
        &self,
        tx: &mut Tx<'_>,
        node: Node,
        idx: usize,
    ) -> Result<(usize, Entry, Vec<u8>), FsError> {
        let (base, entries) = self.entries(tx, node)?;
        let e = entries
            .get(idx)
            .cloned()
            .ok_or_else(|| tx.corrupt(&self.place, "an index entry vanished"))?;
        let at = base + e.pos;
        let bytes = self.buf(tx, node)?[at..at + e.len].to_vec();
        Ok((at, e, bytes))
    }

    /// The VCN of block `node` (as its header says).
    fn vcn_of(&self, tx: &mut Tx<'_>, node: Node) -> Result<i64, FsError> {
        match node {
            Node::Root => Err(tx.corrupt(&self.place, "the index root has no VCN")),
            Node::Block(k) => Ok(le64(tx.indx_buf(k)?, 16) as i64),
        }
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
        let mut node = Node::Root;
        let (mut base, mut entries) = self.entries(tx, node)?;
        let mut seen = HashSet::new();
        let mut path: Vec<Step> = Vec::new();
        for _ in 0..MAX_DEPTH {
            let leaf = entries.iter().all(|e| e.subnode.is_none());
            let count = entries.len();
            let mut next = None;
            for (idx, e) in entries.iter().enumerate() {
                let ord = match &e.key {
                    None => Ordering::Greater,
                    Some(k) if cmp_exact => index::exact_cmp(up, &k.name, name),
                    Some(k) => index::upcase_cmp(up, &k.name, name),
                };
                let hit = |path: Vec<Step>| Hit {
                    node,
                    base,
                    entry: e.clone(),
                    idx,
                    leaf,
                    count,
                    path,
                };
                match ord {
                    Ordering::Less => continue,
                    Ordering::Equal => return Ok(Ok(hit(path))),
                    Ordering::Greater => {
                        match e.subnode {
                            Some(v) => {
                                next = Some(v);
                                path.push((node, idx));
                            }
                            None => return Ok(Err(hit(path))),
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
            node = Node::Block(key);
            (base, entries) = self.entries(tx, node)?;
            if es.len() != entries.len() {
                return Err(tx.corrupt(&self.place, "index block changed while read"));
            }
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
            why: "directory index node full (an entry larger than a block)".into(),
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

    /// Insert entry `e` (for `name`) where collation puts it, in a leaf;
    /// full nodes are split and a full root moved down (see [`Self::put`]).
    pub fn insert(
        &self,
        tx: &mut Tx<'_>,
        up: &[u16],
        name: &[u16],
        e: &[u8],
    ) -> Result<(), FsError> {
        if self.seek(tx, up, name, false)?.is_ok() {
            return Err(tx.corrupt(&self.place, "the name to insert is already there"));
        }
        self.reinsert(tx, up, e)
    }

    /// Insert the leaf entry `e` where exact collation puts it.
    fn reinsert(&self, tx: &mut Tx<'_>, up: &[u16], e: &[u8]) -> Result<(), FsError> {
        let klen = usize::from(le16(e, 10));
        let key = e
            .get(16..16 + klen)
            .ok_or_else(|| tx.corrupt(&self.place, "an index entry shorter than its key"))
            .and_then(|k| index::parse_key(k).map_err(|d| tx.corrupt(&self.place, d)))?;
        let hit = match self.seek(tx, up, &key.name, true)? {
            Ok(_) => return Err(tx.corrupt(&self.place, "the name to insert is already there")),
            Err(h) => h,
        };
        if !hit.leaf {
            return Err(tx.corrupt(&self.place, "the insert position is not in a leaf"));
        }
        self.put(tx, hit.steps(), e.to_vec())
    }

    /// Put entry `e` into the last node of `steps` before its entry there;
    /// a full block is split (its middle entry put into the parent the same
    /// way), a full root moved down into a new block first.
    fn put(&self, tx: &mut Tx<'_>, mut steps: Vec<Step>, mut e: Vec<u8>) -> Result<(), FsError> {
        for _ in 0..2 * MAX_DEPTH + 2 {
            let Some(&(node, idx)) = steps.last() else {
                return Err(tx.corrupt(&self.place, "an empty index path"));
            };
            let (base, entries) = self.entries(tx, node)?;
            let pos = entries
                .get(idx)
                .map(|x| base + x.pos)
                .ok_or_else(|| tx.corrupt(&self.place, "an index entry vanished"))?;
            if e.len() <= self.room(tx, node)? {
                return self.edit(tx, node, pos, 0, &e);
            }
            match node {
                Node::Root => {
                    let vcn = self.push_root_down(tx)?;
                    let (key, _) = self.block(tx, vcn)?;
                    steps = vec![(Node::Root, 0), (Node::Block(key), idx)];
                }
                Node::Block(_) => {
                    e = self.split(tx, &steps, &e)?;
                    steps.pop();
                }
            }
        }
        Err(self.full(tx))
    }

    /// Remove the entry `hit` (found by an exact [`Self::seek`]).
    pub fn remove(&self, tx: &mut Tx<'_>, up: &[u16], hit: &Hit) -> Result<(), FsError> {
        let at = hit.base + hit.entry.pos;
        if hit.leaf {
            self.edit(tx, hit.node, at, hit.entry.len, &[])?;
            if matches!(hit.node, Node::Block(_)) && hit.count <= 2 {
                self.drop_empty(tx, up, hit.steps())?;
            }
            return Ok(());
        }
        let sub = hit
            .entry
            .subnode
            .ok_or_else(|| tx.corrupt(&self.place, "an internal entry without a subnode"))?;
        // The rightmost leaf of the entry's left subtree.
        let mut vcn = sub;
        let mut seen = HashSet::new();
        let mut found = None;
        for _ in 0..MAX_DEPTH {
            if !seen.insert(vcn) {
                return Err(tx.corrupt(
                    &self.place,
                    format!("index node VCN {vcn} is reached twice"),
                ));
            }
            let (key, es) = self.block(tx, vcn)?;
            match es.last().and_then(|x| x.subnode) {
                Some(v) => vcn = v,
                None => {
                    found = Some((Node::Block(key), es));
                    break;
                }
            }
        }
        let Some((leaf, les)) = found else {
            return Err(tx.corrupt(
                &self.place,
                format!("directory index deeper than {MAX_DEPTH} levels"),
            ));
        };
        if les.len() < 2 {
            return Err(tx.corrupt(&self.place, "an empty index block below an internal entry"));
        }
        // A leaf has no subnode in any entry; and it is not the node the
        // entry itself is in (a tree leading back up).
        if les.iter().any(|e| e.subnode.is_some()) || leaf == hit.node {
            return Err(tx.corrupt(
                &self.place,
                "an index node mixing leaf and internal entries below an internal entry",
            ));
        }
        let (pat, pe, pbytes) = self.entry_bytes(tx, leaf, les.len() - 2)?;
        let pred = pe
            .key
            .map(|k| k.name)
            .ok_or_else(|| tx.corrupt(&self.place, "an index entry without a key"))?;
        self.edit(tx, leaf, pat, pe.len, &[])?;
        // The predecessor takes the entry's place and subnode.
        let r = with_subnode(&pbytes, Some(sub))
            .ok_or_else(|| tx.corrupt(&self.place, "a malformed index entry"))?;
        let (eat, ee, _) = self.entry_bytes(tx, hit.node, hit.idx)?;
        // While the entry is out, its subtree hangs from nothing: a split
        // inside `put` must still see its blocks as in use.
        self.detached.borrow_mut().push(sub);
        let put = self
            .edit(tx, hit.node, eat, ee.len, &[])
            .and_then(|()| self.put(tx, hit.steps(), r));
        self.detached.borrow_mut().pop();
        put?;
        if les.len() > 2 {
            return Ok(());
        }
        // The leaf is empty: the path to it again, through the moved entry.
        let h = match self.seek(tx, up, &pred, true)? {
            Ok(h) => h,
            Err(_) => return Err(tx.corrupt(&self.place, "the moved index entry is not found")),
        };
        let mut steps = h.steps();
        let mut vcn = h
            .entry
            .subnode
            .ok_or_else(|| tx.corrupt(&self.place, "the moved index entry has no subnode"))?;
        for _ in 0..MAX_DEPTH {
            let (key, es) = self.block(tx, vcn)?;
            if Node::Block(key) == leaf {
                steps.push((leaf, 0));
                return self.drop_empty(tx, up, steps);
            }
            let last = es.len().saturating_sub(1);
            vcn = es.get(last).and_then(|x| x.subnode).ok_or_else(|| {
                tx.corrupt(
                    &self.place,
                    "the emptied index block is not below the moved entry",
                )
            })?;
            steps.push((Node::Block(key), last));
        }
        Err(tx.corrupt(
            &self.place,
            format!("directory index deeper than {MAX_DEPTH} levels"),
        ))
    }

    /// The block at the end of `steps` holds only its end entry: free it and
    /// take the pointer to it out of its parent (see the module comment).
    fn drop_empty(&self, tx: &mut Tx<'_>, up: &[u16], mut steps: Vec<Step>) -> Result<(), FsError> {
        for _ in 0..MAX_DEPTH {
            let Some((node, _)) = steps.pop() else {
                return Err(tx.corrupt(&self.place, "an empty index path"));
            };
            let vcn = self.vcn_of(tx, node)?;
            self.free_block(tx, vcn)?;
            let Some(&(pnode, pidx)) = steps.last() else {
                return Err(tx.corrupt(&self.place, "an index block without a parent"));
            };
            let (pat, pe, pbytes) = self.entry_bytes(tx, pnode, pidx)?;
            if pe.subnode != Some(vcn) {
                return Err(tx.corrupt(
                    &self.place,
                    format!("the parent entry does not lead to index block VCN {vcn}"),
                ));
            }
            let malformed = |tx: &Tx<'_>| tx.corrupt(&self.place, "a malformed index entry");
            if pe.key.is_some() {
                self.edit(tx, pnode, pat, pe.len, &[])?;
                let e = with_subnode(&pbytes, None).ok_or_else(|| malformed(tx))?;
                return self.reinsert(tx, up, &e);
            }
            if pidx > 0 {
                // The end entry takes the subnode of the entry before it.
                let (yat, ye, ybytes) = self.entry_bytes(tx, pnode, pidx - 1)?;
                let ysub = ye.subnode.ok_or_else(|| malformed(tx))?;
                self.edit(tx, pnode, yat, ye.len, &[])?;
                let (eat, ee, _) = self.entry_bytes(tx, pnode, pidx - 1)?;
                if ee.key.is_some() || ee.subnode.is_none() {
                    return Err(malformed(tx));
                }
                put64(self.buf(tx, pnode)?, eat + ee.len - 8, ysub as u64);
                self.mark(tx, pnode);
                let e = with_subnode(&ybytes, None).ok_or_else(|| malformed(tx))?;
                return self.reinsert(tx, up, &e);
            }
            // The parent's only entry led to the freed block.
            if pnode == Node::Root {
                return self.leafify(tx);
            }
        }
        Err(tx.corrupt(
            &self.place,
            format!("directory index deeper than {MAX_DEPTH} levels"),
        ))
    }

    /// Make the root an empty leaf: one end entry without a subnode, the
    /// large-index flag cleared.
    fn leafify(&self, tx: &mut Tx<'_>) -> Result<(), FsError> {
        let (base, entries) = self.entries(tx, Node::Root)?;
        let [e] = entries.as_slice() else {
            return Err(tx.corrupt(&self.place, "the index root is not one end entry"));
        };
        self.edit(tx, Node::Root, base + e.pos, e.len, &end_entry())?;
        let (_, hdr, _) = self.root(tx)?;
        let rec = tx.record(self.rn)?;
        rec[hdr + 12] = 0;
        tx.dirty(self.rn);
        Ok(())
    }

    /// The VCNs of every block the tree leads to (each visited once).
    fn in_use(&self, tx: &mut Tx<'_>) -> Result<HashSet<i64>, FsError> {
        let mut todo: Vec<i64> = if self.root_pending.get() {
            Vec::new()
        } else {
            let (_, root) = self.entries(tx, Node::Root)?;
            root.iter().filter_map(|e| e.subnode).collect()
        };
        todo.extend(self.detached.borrow().iter().copied());
        let mut seen = HashSet::new();
        while let Some(vcn) = todo.pop() {
            if !seen.insert(vcn) {
                return Err(tx.corrupt(
                    &self.place,
                    format!("index node VCN {vcn} is reached twice"),
                ));
            }
            let (_, es) = self.block(tx, vcn)?;
            todo.extend(es.iter().filter_map(|e| e.subnode));
        }
        Ok(seen)
    }

    /// Clear block `vcn`'s bit in the `$I30` `$BITMAP`.
    fn free_block(&self, tx: &mut Tx<'_>, vcn: i64) -> Result<(), FsError> {
        let nb = u64::try_from(vcn)
            .ok()
            .and_then(|v| v.checked_mul(self.vcn_bytes))
            .map(|b| b / u64::from(self.rs))
            .ok_or_else(|| tx.corrupt(&self.place, format!("index block VCN {vcn}")))?;
        let r = tx.parsed(self.rn)?;
        let name = i30();
        let bm = r
            .attrs
            .iter()
            .find(|a| a.ty == AT_BITMAP && a.name == name)
            .ok_or_else(|| tx.corrupt(&self.place, "an index allocation without a $BITMAP"))?;
        let Body::Resident(range) = &bm.body else {
            return Err(FsError::Unsupported {
                fs: tx.loc.to_string(),
                op: format!("change the index of {}", self.place),
                why: "the index's $BITMAP is non-resident (not implemented)".into(),
            });
        };
        let at = usize::try_from(nb / 8)
            .ok()
            .and_then(|b| range.start.checked_add(b))
            .filter(|&a| a < range.end)
            .ok_or_else(|| {
                tx.corrupt(&self.place, format!("index block {nb} is past the $BITMAP"))
            })?;
        let bit = 1u8 << (nb % 8);
        let rec = tx.record(self.rn)?;
        if rec[at] & bit == 0 {
            return Err(tx.corrupt(&self.place, format!("index block {nb} is already free")));
        }
        rec[at] &= !bit;
        tx.dirty(self.rn);
        Ok(())
    }

    /// Move every entry of `$INDEX_ROOT` into a new index block (a free one
    /// of the allocation, or the first one of a new `$INDEX_ALLOCATION` with
    /// its `$BITMAP`), leaving the root with one end entry pointing at it and
    /// its large-index flag set, as Windows and ntfs-3g do when the root
    /// outgrows the MFT record.
    fn push_root_down(&self, tx: &mut Tx<'_>) -> Result<i64, FsError> {
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
        // The root now leads to nothing: the moved entries' subtrees must
        // still count as in use when a free slot is checked for reuse.
        let subs: Vec<i64> = entries.iter().filter_map(|e| e.subnode).collect();
        let n = subs.len();
        self.detached.borrow_mut().extend(subs);
        self.root_pending.set(true);
        let got = if has_alloc {
            self.new_block(tx)
        } else {
            self.first_block(tx)
        };
        self.root_pending.set(false);
        {
            let mut d = self.detached.borrow_mut();
            let keep = d.len().saturating_sub(n);
            d.truncate(keep);
        }
        let (nb, runs) = got?;
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
        tx.dirty(self.rn);
        Ok(vcn)
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

    /// Split the full block at the end of `steps`, with `e` going before its
    /// entry there: the left half stays, the right half goes into a new
    /// block the parent's entry now leads to. Returns the middle entry, with
    /// the left half's VCN as its subnode, for the parent (before that entry).
    fn split(&self, tx: &mut Tx<'_>, steps: &[Step], e: &[u8]) -> Result<Vec<u8>, FsError> {
        let (node, idx, pnode, pidx) = match steps {
            [.., (pn, pi), (n, i)] => (*n, *i, *pn, *pi),
            _ => return Err(tx.corrupt(&self.place, "an index block without a parent")),
        };
        let Node::Block(key) = node else {
            return Err(tx.corrupt(&self.place, "splitting the index root"));
        };
        let my_vcn = self.vcn_of(tx, node)?;
        let (base, entries) = self.entries(tx, node)?;
        let buf = tx.indx_buf(key)?.clone();
        let internal = entries.iter().any(|x| x.subnode.is_some());
        let mut items: Vec<Vec<u8>> = Vec::new();
        let mut endb = None;
        for (i, en) in entries.iter().enumerate() {
            if i == idx {
                items.push(e.to_vec());
            }
            let b = buf[base + en.pos..base + en.pos + en.len].to_vec();
            if en.key.is_none() {
                endb = Some(b);
                break;
            }
            items.push(b);
        }
        let Some(endb) = endb else {
            return Err(tx.corrupt(&self.place, "an index node without an end entry"));
        };
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
        let malformed = |tx: &Tx<'_>| tx.corrupt(&self.place, "a malformed index entry");
        // The left half's end entry leads where the middle entry led.
        let left_end = if internal {
            let mi = &items[m];
            if le16(mi, 12) & ENTRY_SUBNODE == 0 || mi.len() < 24 {
                return Err(malformed(tx));
            }
            let v = le64(mi, mi.len() - 8) as i64;
            with_subnode(&end_entry(), Some(v)).ok_or_else(|| malformed(tx))?
        } else {
            end_entry()
        };
        let left: Vec<u8> = [items[..m].concat(), left_end].concat();
        let right: Vec<u8> = [items[m + 1..].concat(), endb].concat();
        let median = with_subnode(&items[m], Some(my_vcn)).ok_or_else(|| malformed(tx))?;
        let (nb, runs) = self.new_block(tx)?;
        let rs = self.rs as usize;
        let vcn_r = i64::try_from(nb * u64::from(self.rs) / self.vcn_bytes)
            .map_err(|_| tx.corrupt(&self.place, "index block number overflows"))?;
        let mut fresh = new_block(rs, vcn_r, &right).ok_or_else(|| self.full(tx))?;
        if internal {
            fresh[INDX_NODE_AT + 12] = 1; // has children
        }
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
        // The parent's entry now leads to the right half.
        let (pat, pe, _) = self.entry_bytes(tx, pnode, pidx)?;
        if pe.subnode != Some(my_vcn) {
            return Err(tx.corrupt(
                &self.place,
                format!("the parent entry does not lead to index block VCN {my_vcn}"),
            ));
        }
        put64(self.buf(tx, pnode)?, pat + pe.len - 8, vcn_r as u64);
        self.mark(tx, pnode);
        Ok(median)
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
        let allocated_size = le64(&r.data, alloc.off + 40);
        let cs0 = u64::from(tx.geo.cluster_size);
        let mapped = runs
            .iter()
            .try_fold(0u64, |acc, &(_, n)| acc.checked_add(n))
            .and_then(|c| c.checked_mul(cs0));
        if *data_size > allocated_size || mapped.is_none_or(|m| *data_size > m) {
            return Err(tx.corrupt(
                &self.place,
                format!(
                    "$INDEX_ALLOCATION data size {data_size} is past its allocated size {allocated_size} or its runs"
                ),
            ));
        }
        let blocks = data_size / rs;
        // Bits past the bitmap's bytes are not free: the search ends there.
        let searched = blocks.min(value.len() as u64 * 8);
        let free = (0..searched).find(|&b| {
            value
                .get((b / 8) as usize)
                .is_some_and(|&x| x & (1 << (b % 8)) == 0)
        });
        let nb = match free {
            Some(b) => {
                // A block the tree still uses but the bitmap calls free
                // (a corrupt bitmap) must not be overwritten.
                let vcn = i64::try_from(b * rs / self.vcn_bytes)
                    .map_err(|_| tx.corrupt(&self.place, "index block number overflows"))?;
                if self.in_use(tx)?.contains(&vcn) {
                    return Err(tx.corrupt(
                        &self.place,
                        format!("index block VCN {vcn} is in use but free in the $I30 $BITMAP"),
                    ));
                }
                b
            }
            None => {
                // Grow the data by one block; when the clusters run out,
                // allocate a quarter more blocks (1 to 64) at once, so two
                // directories growing in turn do not each get a run per
                // block (the mapping pairs must fit in the record).
                let cs = cs0;
                let allocated = allocated_size;
                const OVERFLOW: &str = "the index allocation's size overflows";
                let new_data = blocks
                    .checked_add(1)
                    .and_then(|b| b.checked_mul(rs))
                    .ok_or_else(|| tx.corrupt(&self.place, OVERFLOW))?;
                let mut new_alloc = allocated;
                if new_data > allocated {
                    let ahead = (blocks / 4).clamp(1, 64) * rs;
                    let need = (new_data - allocated).max(ahead).div_ceil(cs);
                    let hint = runs.last().map_or(0, |&(l, n)| l.saturating_add(n));
                    let got = tx.alloc(need, hint)?;
                    runs.extend(got);
                    runs = runlist::merge(&runs);
                    new_alloc = need
                        .checked_mul(cs)
                        .and_then(|b| allocated.checked_add(b))
                        .ok_or_else(|| tx.corrupt(&self.place, OVERFLOW))?;
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
            why: "directory index node full".into(),
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
