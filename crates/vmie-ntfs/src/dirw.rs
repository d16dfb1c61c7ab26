//! Directory indexes (`$I30`) on the write side, on staged records and
//! index blocks: finding the entry of a name with its position, changing
//! its key in place, inserting an entry into the node where collation puts
//! it when that node has room, and removing an entry from a leaf.
//!
//! Not done here (refused): moving `$INDEX_ROOT` into an allocation,
//! splitting or merging nodes, removing an entry of an internal node.

use std::cmp::Ordering;
use std::collections::HashSet;

use vmie_guestfs::FsError;

use crate::attr;
use crate::index::{self, Entry, INDX_NODE_AT, ROOT_NODE_AT};
use crate::le::{le16, le32, le64, put32};
use crate::record::{Body, AT_ATTRIBUTE_LIST};
use crate::runlist;
use crate::tx::Tx;

const AT_INDEX_ROOT: u32 = 0x90;
const AT_INDEX_ALLOCATION: u32 = 0xA0;
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
}

impl Dir {
    pub fn open(tx: &mut Tx<'_>, rn: u64, place: &str) -> Result<Self, FsError> {
        let r = tx.parsed(rn)?;
        let place = format!("{place} (MFT record {rn})");
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
                        }));
                    }
                    Ordering::Greater => {
                        match e.subnode {
                            Some(v) => next = Some(v),
                            None => {
                                return Ok(Err(Hit {
                                    node,
                                    base,
                                    entry: e.clone(),
                                    leaf,
                                    count,
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
