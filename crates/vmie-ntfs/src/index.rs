//! Directory indexes (`$I30`), parsed by us.
//!
//! The `ntfs` crate's index code is not used: in 0.4.0 it indexes entries
//! without checking their length (an entry shorter than its header panics),
//! follows subnode pointers without a cycle check (a loop grows its stack
//! until memory runs out), and maps a subnode VCN to a byte offset as
//! `VCN × cluster size` even when index records are smaller than a cluster,
//! where the VCN counts 512-byte blocks (so directories with more than a few
//! entries fail on volumes with 64 KiB clusters). Here every entry is checked
//! against its node, every subnode VCN against the index allocation, and the
//! walk visits each node at most once.
//!
//! Names compare as Windows compares them: code unit by code unit through the
//! volume's `$UpCase` table.

use std::cmp::Ordering;

use crate::le::{byte, le16, le32, le64};
use crate::record::fixup;

/// `$FILE_NAME` namespace: the 8.3 short name.
pub(crate) const NS_DOS: u8 = 2;

/// The attribute type an `$I30` index indexes: `$FILE_NAME`.
const INDEXED_FILE_NAME: u32 = 0x30;
/// Collation of `$I30`: file names through `$UpCase`.
const COLLATION_FILE_NAME: u32 = 1;

/// Entry flag: a subnode VCN ends the entry.
const ENTRY_SUBNODE: u16 = 0x01;
/// Entry flag: the end entry of the node (no key).
const ENTRY_LAST: u16 = 0x02;

/// Size of the entry header (file reference, lengths, flags).
const ENTRY_HEADER: usize = 16;
/// Size of a `$FILE_NAME` value without the name.
const FILE_NAME_HEADER: usize = 66;
/// Size of the node header (entries offset, sizes, flags).
const NODE_HEADER: usize = 16;
/// Where the node header starts in an index record.
pub(crate) const INDX_NODE_AT: usize = 24;
/// Where the node header starts in an `$INDEX_ROOT` value.
pub(crate) const ROOT_NODE_AT: usize = 16;

/// The key of an `$I30` entry: a copy of the file's `$FILE_NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// The name, UTF-16 code units.
    pub name: Vec<u16>,
    /// Namespace: POSIX, Win32, DOS or Win32AndDos.
    pub namespace: u8,
    /// File attribute flags as of the last name change.
    pub file_attributes: u32,
    /// Reparse tag, when `file_attributes` has the reparse-point flag.
    pub reparse_tag: u32,
}

/// One index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The file reference: record number (low 48 bits) and sequence number.
    pub file_ref: u64,
    /// The node with the entries sorting before this one.
    pub subnode: Option<i64>,
    /// The key; `None` for the end entry.
    pub key: Option<Key>,
    /// Offset of the entry from the start of its node's entries.
    pub pos: usize,
    /// Length of the entry.
    pub len: usize,
}

/// The `$INDEX_ROOT` of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root {
    /// Bytes per index record in this index's allocation.
    pub record_size: u32,
    /// The root node's entries.
    pub entries: Vec<Entry>,
}

/// Parse the value of an `$INDEX_ROOT` attribute named `$I30`.
pub(crate) fn parse_root(v: &[u8]) -> Result<Root, String> {
    if v.len() < 16 + NODE_HEADER {
        return Err(format!("index root is {} bytes, too short", v.len()));
    }
    let indexed = le32(v, 0);
    if indexed != INDEXED_FILE_NAME {
        return Err(format!(
            "index root indexes attribute type {indexed:#x}, not $FILE_NAME"
        ));
    }
    let collation = le32(v, 4);
    if collation != COLLATION_FILE_NAME {
        return Err(format!(
            "index root has collation rule {collation}, not file names"
        ));
    }
    let record_size = le32(v, 8);
    if !(crate::boot::MIN_INDEX_RECORD..=crate::boot::MAX_INDEX_RECORD).contains(&record_size)
        || !record_size.is_power_of_two()
    {
        return Err(format!("index record size {record_size} is invalid"));
    }
    let entries = node_entries(v, 16)?;
    Ok(Root {
        record_size,
        entries,
    })
}

/// Parse the index record `buf` (as read from the index allocation), which
/// must be the node for `vcn`.
pub(crate) fn parse_node(buf: &mut [u8], vcn: i64) -> Result<Vec<Entry>, String> {
    fixup(buf, b"INDX")?;
    let own = le64(buf, 16) as i64;
    if own != vcn {
        return Err(format!("index record says it is VCN {own}"));
    }
    node_entries(buf, INDX_NODE_AT)
}

/// The entries of the node whose header is at `at` of `buf`.
pub(crate) fn node_entries(buf: &[u8], at: usize) -> Result<Vec<Entry>, String> {
    let entries_offset = le32(buf, at) as usize;
    let index_size = le32(buf, at + 4) as usize;
    let allocated = le32(buf, at + 8) as usize;
    let start = at + entries_offset;
    let end = at + index_size;
    if entries_offset < NODE_HEADER
        || entries_offset > index_size
        || index_size > allocated
        || end > buf.len()
    {
        return Err(format!(
            "index node header (entries at {entries_offset}, size {index_size}, allocated {allocated}) does not fit the {} bytes",
            buf.len() - at
        ));
    }
    parse_entries(&buf[start..end])
}

/// Parse the entries of a node, up to and including its end entry.
fn parse_entries(region: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut p = 0usize;
    loop {
        let rest = &region[p.min(region.len())..];
        if rest.len() < ENTRY_HEADER {
            return Err(format!(
                "index entries end at byte {p} without an end entry"
            ));
        }
        let elen = usize::from(le16(rest, 8));
        let klen = usize::from(le16(rest, 10));
        let flags = le16(rest, 12);
        if elen < ENTRY_HEADER || elen > rest.len() {
            return Err(format!(
                "index entry at byte {p} has length {elen}, outside {ENTRY_HEADER}..={}",
                rest.len()
            ));
        }
        let e = &rest[..elen];
        let mut body_end = elen;
        let subnode = if flags & ENTRY_SUBNODE != 0 {
            if elen < ENTRY_HEADER + 8 {
                return Err(format!(
                    "index entry at byte {p} is too short for its subnode VCN"
                ));
            }
            body_end = elen - 8;
            Some(le64(e, elen - 8) as i64)
        } else {
            None
        };
        let last = flags & ENTRY_LAST != 0;
        let key = if last {
            None
        } else {
            let kend = ENTRY_HEADER + klen;
            if klen < FILE_NAME_HEADER || kend > body_end {
                return Err(format!(
                    "index entry at byte {p} has a key of {klen} bytes in {elen}"
                ));
            }
            Some(
                parse_key(&e[ENTRY_HEADER..kend])
                    .map_err(|m| format!("index entry at byte {p}: {m}"))?,
            )
        };
        out.push(Entry {
            file_ref: le64(e, 0),
            subnode,
            key,
            pos: p,
            len: elen,
        });
        if last {
            return Ok(out);
        }
        p += elen;
    }
}

/// Parse a `$FILE_NAME` value (an index key, or the attribute itself).
pub(crate) fn parse_key(k: &[u8]) -> Result<Key, String> {
    if k.len() < FILE_NAME_HEADER {
        return Err(format!("file name of {} bytes is too short", k.len()));
    }
    let name_len = usize::from(byte(k, 64));
    let namespace = byte(k, 65);
    if namespace > 3 {
        return Err(format!("file name namespace {namespace} is unknown"));
    }
    let name_bytes = k
        .get(FILE_NAME_HEADER..FILE_NAME_HEADER + 2 * name_len)
        .ok_or_else(|| {
            format!(
                "file name of {name_len} characters runs past its {} bytes",
                k.len()
            )
        })?;
    Ok(Key {
        name: name_bytes.chunks_exact(2).map(|c| le16(c, 0)).collect(),
        namespace,
        file_attributes: le32(k, 56),
        reparse_tag: le32(k, 60),
    })
}

/// One code unit through `$UpCase`.
fn up(table: &[u16], c: u16) -> u16 {
    table.get(usize::from(c)).copied().unwrap_or(c)
}

/// Compare names as Windows does: through the `$UpCase` table.
pub(crate) fn upcase_cmp(table: &[u16], a: &[u16], b: &[u16]) -> Ordering {
    for (&x, &y) in a.iter().zip(b) {
        match up(table, x).cmp(&up(table, y)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Compare names through `$UpCase`, then (for names that differ only in
/// case, possible in the POSIX namespace) by code unit.
pub(crate) fn exact_cmp(table: &[u16], a: &[u16], b: &[u16]) -> Ordering {
    upcase_cmp(table, a, b).then_with(|| a.cmp(b))
}

/// What to do after scanning one node for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Found: this file reference.
    Found(u64),
    /// Continue in the node at this VCN.
    Descend(i64),
    /// The name is not in the index.
    Missing,
}

/// Scan one node's entries (sorted) for `target`, with `cmp` ordering names.
pub(crate) fn search_node(
    entries: &[Entry],
    target: &[u16],
    cmp: impl Fn(&[u16], &[u16]) -> Ordering,
) -> Step {
    for e in entries {
        let after = match &e.key {
            None => true,
            Some(k) => match cmp(&k.name, target) {
                Ordering::Less => false,
                Ordering::Equal => return Step::Found(e.file_ref),
                Ordering::Greater => true,
            },
        };
        if after {
            return match e.subnode {
                Some(v) => Step::Descend(v),
                None => Step::Missing,
            };
        }
    }
    Step::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, ns: u8) -> Vec<u8> {
        let u: Vec<u16> = name.encode_utf16().collect();
        let mut k = vec![0u8; FILE_NAME_HEADER];
        k[64] = u.len() as u8;
        k[65] = ns;
        for c in u {
            k.extend(c.to_le_bytes());
        }
        k
    }

    fn entry(rn: u64, k: Option<Vec<u8>>, sub: Option<i64>) -> Vec<u8> {
        let klen = k.as_ref().map_or(0, Vec::len);
        let mut len = ENTRY_HEADER + klen;
        len = len.div_ceil(8) * 8;
        if sub.is_some() {
            len += 8;
        }
        let mut e = vec![0u8; len];
        e[0..8].copy_from_slice(&rn.to_le_bytes());
        e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        e[10..12].copy_from_slice(&(klen as u16).to_le_bytes());
        let mut flags = 0u16;
        if k.is_none() {
            flags |= ENTRY_LAST;
        }
        if let Some(v) = sub {
            flags |= ENTRY_SUBNODE;
            e[len - 8..].copy_from_slice(&v.to_le_bytes());
        }
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        if let Some(k) = k {
            e[16..16 + k.len()].copy_from_slice(&k);
        }
        e
    }

    fn root(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut v = vec![0u8; 32];
        v[0..4].copy_from_slice(&0x30u32.to_le_bytes());
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        v[8..12].copy_from_slice(&4096u32.to_le_bytes());
        let size = (NODE_HEADER + body.len()) as u32;
        v[16..20].copy_from_slice(&16u32.to_le_bytes());
        v[20..24].copy_from_slice(&size.to_le_bytes());
        v[24..28].copy_from_slice(&size.to_le_bytes());
        v.extend(body);
        v
    }

    fn table() -> Vec<u16> {
        (0..=u16::MAX)
            .map(|c| {
                if (u16::from(b'a')..=u16::from(b'z')).contains(&c) {
                    c - 32
                } else {
                    c
                }
            })
            .collect()
    }

    #[test]
    fn parses_and_searches_a_root() {
        let v = root(&[
            entry(40, Some(key("alpha", 1)), None),
            entry(41, Some(key("Beta", 0)), Some(8)),
            entry(0, None, Some(16)),
        ]);
        let r = parse_root(&v).unwrap();
        assert_eq!(r.entries.len(), 3);
        let t = table();
        let find = |s: &str| {
            let u: Vec<u16> = s.encode_utf16().collect();
            search_node(&r.entries, &u, |a, b| upcase_cmp(&t, a, b))
        };
        assert_eq!(find("ALPHA"), Step::Found(40));
        assert_eq!(find("beta"), Step::Found(41));
        assert_eq!(find("b"), Step::Descend(8));
        assert_eq!(find("zzz"), Step::Descend(16));
        assert_eq!(find("a"), Step::Missing);
    }

    #[test]
    fn refuses_malformed_entries() {
        // An entry shorter than its header.
        let mut short = entry(40, Some(key("x", 1)), None);
        short[8] = 8;
        short[9] = 0;
        assert!(parse_root(&root(&[short, entry(0, None, None)])).is_err());
        // A key longer than the entry.
        let mut long_key = entry(40, Some(key("x", 1)), None);
        long_key[10] = 0xFF;
        assert!(parse_root(&root(&[long_key, entry(0, None, None)])).is_err());
        // A name longer than the key.
        let mut k = key("abc", 1);
        k[64] = 100;
        assert!(parse_root(&root(&[entry(40, Some(k), None), entry(0, None, None)])).is_err());
        // No end entry.
        assert!(parse_root(&root(&[entry(40, Some(key("x", 1)), None)])).is_err());
        // A subnode flag on an entry with no room for the VCN.
        let mut e = entry(0, None, None);
        e[12] |= ENTRY_SUBNODE as u8;
        e.truncate(16);
        e[8] = 16;
        assert!(parse_root(&root(&[e])).is_err());
        // Header offsets out of order.
        let mut v = root(&[entry(0, None, None)]);
        v[16] = 0xF0;
        assert!(parse_root(&v).is_err());
        // Wrong indexed type, wrong collation, bad record size.
        for (at, val) in [(0usize, 0x80u32), (4, 0), (8, 4000)] {
            let mut v = root(&[entry(0, None, None)]);
            v[at..at + 4].copy_from_slice(&val.to_le_bytes());
            assert!(parse_root(&v).is_err());
        }
    }

    #[test]
    fn exact_compare_breaks_case_ties() {
        let t = table();
        let a: Vec<u16> = "abc".encode_utf16().collect();
        let b: Vec<u16> = "ABC".encode_utf16().collect();
        assert_eq!(upcase_cmp(&t, &a, &b), Ordering::Equal);
        assert_eq!(exact_cmp(&t, &a, &b), Ordering::Greater);
        assert_eq!(upcase_cmp(&t, &a[..2], &b), Ordering::Less);
    }
}
