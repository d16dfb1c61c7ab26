//! Whole-hive validation: the gate before the first edit, and the strict half
//! of the self-check after one.
//!
//! Reading is lazy and forgiving (a damaged key elsewhere does not stop a
//! lookup), but an edit must not start on a hive that is already broken: an
//! edit that succeeds there writes a hive that hivex (and so libguestfs and
//! virt-v2v) then refuses. [`Hive::validate`] checks every byte structure the
//! editor or hivex's reader relies on, from the base block down to every cell
//! reachable from the root key, and names the cell offset and key path of the
//! first thing wrong.
//!
//! What it requires is the union of
//! * what hivex 1.3.23's reader checks when it opens a hive and walks it
//!   (`hivexregedit --export`), and nt-hive's base block checks (the
//!   self-check's reader: version 1.3 or later, file format and clustering
//!   factor 1): header magic, major version and checksum (the
//!   plain XOR of the first 127 dwords); every hbin's signature, offset field
//!   and size (a multiple of 4 KiB within the file); every cell's size and
//!   that it stays in its hbin; root, subkey lists, their entries, value
//!   lists, values and data referring to the *start of an allocated cell*;
//!   the subkey count equal to the entries read; lf/lh/li/ri signatures and
//!   counts within their cells; names within their cells and decodable
//!   (UTF-16 names of even length without lone surrogates); inline data of at
//!   most 4 bytes; data longer than its cell only through a `db` record whose
//!   block list and segments are allocated cells; no key visited twice; at
//!   most 70000 subkeys and 110000 values per key and 8000000 bytes of data
//!   per value (hivex's own limits);
//! * what this crate's editor relies on when it frees and rewrites cells:
//!   every cell owned by exactly one record (a key, list, value, data or
//!   class cell referenced twice would be freed under its other owner), each
//!   key's parent field pointing at the key that lists it, security (sk)
//!   cells with a descriptor inside the cell, a reference count at least the
//!   number of keys using them and a consistent doubly linked sk list (what
//!   hivex's and our `delete_sk` unlink), an `ri` index pointing at leaves
//!   only, equal sequence numbers, the hbin chain ending exactly at the hive
//!   bins data size, cells of a multiple of 8 bytes tiling each hbin.
//!
//! Depth and key count are bounded by [`crate::HiveOptions`]; memory is two
//! bitmaps of one bit per 8 bytes of hive plus one entry per key.

use std::collections::BTreeMap;

use crate::error::{HiveError, Result};
use crate::hive::{rd_u16, rd_u32, Hive, HBIN_START, NONE};

/// hivex refuses a key with more subkeys than this (`HIVEX_MAX_SUBKEYS`).
pub const HIVEX_MAX_SUBKEYS: usize = 70_000;
/// hivex refuses a key with more values than this (`HIVEX_MAX_VALUES`).
pub const HIVEX_MAX_VALUES: usize = 110_000;
/// hivex refuses to read a value with more data than this (`HIVEX_MAX_VALUE_LEN`).
pub const HIVEX_MAX_VALUE_LEN: usize = 8_000_000;

/// Largest value data a regf < 1.4 hive or a single data cell holds before big data.
const BIG_DATA_SEGMENT: usize = crate::hive::BIG_DATA_SEGMENT;

/// What a successful validation counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// hbins in the chain.
    pub hbins: usize,
    /// Cells (allocated and free) in all hbins.
    pub cells: usize,
    /// Allocated cells.
    pub allocated: usize,
    /// Keys reachable from the root.
    pub keys: usize,
    /// Values of those keys.
    pub values: usize,
    /// Distinct security (sk) cells those keys use.
    pub security: usize,
}

/// One bit per possible cell start (cells are 8-byte aligned).
struct Bits(Vec<u64>);

impl Bits {
    fn new(data_size: u32) -> Bits {
        Bits(vec![0; (data_size as usize / 8) / 64 + 1])
    }
    fn get(&self, off: u32) -> bool {
        let i = off as usize / 8;
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    /// Set; returns whether it was already set.
    fn set(&mut self, off: u32) -> bool {
        let i = off as usize / 8;
        match self.0.get_mut(i / 64) {
            Some(w) => {
                let was = *w & (1 << (i % 64)) != 0;
                *w |= 1 << (i % 64);
                was
            }
            None => true,
        }
    }
}

/// Where an error is: a validated key (index into `keys`), a key not yet
/// validated (its parent's index and its offset), or the hive as a whole.
#[derive(Clone, Copy)]
enum Loc {
    Hive,
    Key(usize),
    Child(usize, u32),
}

/// A key in the walk: its nk offset and the index of its parent (root: `usize::MAX`).
#[derive(Clone, Copy)]
struct KeyRef {
    off: u32,
    parent: usize,
}

struct Walker<'a> {
    h: &'a Hive,
    data_end: u32,
    /// Starts of allocated cells.
    used: Bits,
    /// Cells already owned by a record seen in the walk.
    owned: Bits,
    /// Keys validated so far (for key paths in messages).
    keys: Vec<KeyRef>,
    /// sk cell -> (number of keys using it, index of the first of them).
    sk_refs: BTreeMap<u32, (u32, usize)>,
    stats: Validation,
}

/// Plain XOR of the first 127 dwords: what hivex compares the stored checksum with.
fn raw_xor(base: &[u8]) -> u32 {
    (0..127).fold(0u32, |x, i| x ^ rd_u32(base, i * 4).unwrap_or(0))
}

/// A stored name hivex can decode: Latin-1 always; UTF-16LE of even length
/// without lone surrogates.
fn name_problem(bytes: &[u8], compressed: bool) -> Option<String> {
    if compressed {
        return None;
    }
    if bytes.len() % 2 != 0 {
        return Some(format!(
            "UTF-16 name has an odd length of {} bytes",
            bytes.len()
        ));
    }
    let units = crate::hive::utf16_units(bytes);
    if char::decode_utf16(units.iter().copied()).any(|c| c.is_err()) {
        return Some("UTF-16 name has a lone surrogate (hivex cannot decode it)".into());
    }
    None
}

impl Hive {
    /// Validate the whole hive (see the [module documentation](crate::validate)).
    /// Every edit runs this once before it changes anything, and the
    /// self-check runs it on the edited bytes.
    pub fn validate(&self) -> Result<Validation> {
        let mut w = Walker {
            h: self,
            data_end: 0,
            used: Bits::new(0),
            owned: Bits::new(0),
            keys: Vec::new(),
            sk_refs: BTreeMap::new(),
            stats: Validation::default(),
        };
        w.base_block()?;
        w.hbins()?;
        w.tree()?;
        w.security()?;
        Ok(w.stats)
    }
}

impl Walker<'_> {
    fn buf(&self) -> &[u8] {
        &self.h.buf
    }

    fn not_a_hive(&self, reason: String) -> HiveError {
        HiveError::NotAHive {
            hive: self.h.opts.name.clone(),
            reason,
        }
    }

    fn corrupt(&self, offset: u32, loc: Loc, reason: impl Into<String>) -> HiveError {
        HiveError::Corrupt {
            hive: self.h.opts.name.clone(),
            offset,
            path: self.loc_path(loc),
            reason: reason.into(),
        }
    }

    fn limit(&self, loc: Loc, what: String) -> HiveError {
        HiveError::Limit {
            hive: self.h.opts.name.clone(),
            path: self.loc_path(loc),
            what,
        }
    }

    fn loc_path(&self, loc: Loc) -> String {
        match loc {
            Loc::Hive => "\\".into(),
            Loc::Key(i) => self.path(i),
            Loc::Child(p, off) => self.child_path(p, off),
        }
    }

    /// Path of a validated key (index into `keys`).
    fn path(&self, idx: usize) -> String {
        let mut names = Vec::new();
        let mut cur = idx;
        while let Some(k) = self.keys.get(cur) {
            if k.parent == usize::MAX || names.len() > self.h.opts.max_depth {
                break;
            }
            names.push(
                self.h
                    .nk(k.off)
                    .map(|n| n.name)
                    .unwrap_or_else(|_| format!("<key at {:#x}>", k.off)),
            );
            cur = k.parent;
        }
        names.reverse();
        format!("\\{}", names.join("\\"))
    }

    /// Path of a key not validated yet: its parent's path and its offset.
    fn child_path(&self, parent: usize, off: u32) -> String {
        if parent == usize::MAX {
            return "\\".into();
        }
        let p = self.path(parent);
        let sep = if p == "\\" { "" } else { "\\" };
        format!("{p}{sep}<subkey at {off:#x}>")
    }

    fn base_block(&mut self) -> Result<()> {
        let b = self.buf();
        if b.len() < 0x2000 {
            return Err(self.not_a_hive(format!(
                "file is {} bytes, shorter than a base block and one hbin",
                b.len()
            )));
        }
        if b.get(0..4) != Some(b"regf") {
            return Err(self.not_a_hive("no \"regf\" signature".into()));
        }
        let seq1 = rd_u32(b, 4).unwrap_or(0);
        let seq2 = rd_u32(b, 8).unwrap_or(0);
        if seq1 != seq2 {
            return Err(self.not_a_hive(format!(
                "sequence numbers differ ({seq1} != {seq2}): the hive is dirty"
            )));
        }
        let major = rd_u32(b, 0x14).unwrap_or(0);
        let minor = rd_u32(b, 0x18).unwrap_or(0);
        if major != 1 || !(2..=6).contains(&minor) {
            return Err(self.not_a_hive(format!("unsupported regf version {major}.{minor}")));
        }
        if minor < 3 {
            return Err(self.not_a_hive(format!(
                "regf version 1.{minor} (Windows NT 3.x) is read but not edited: the self-check reader does not read it"
            )));
        }
        if rd_u32(b, 0x1C) != Some(0) {
            return Err(self.not_a_hive("file type is not a primary hive file".into()));
        }
        // Windows and nt-hive require both to be 1 (direct memory load, 512-byte sectors).
        for (at, what) in [(0x20usize, "file format"), (0x2C, "clustering factor")] {
            let v = rd_u32(b, at).unwrap_or(0);
            if v != 1 {
                return Err(self.not_a_hive(format!("base block {what} is {v}, not 1")));
            }
        }
        let stored = rd_u32(b, 0x1FC).unwrap_or(0);
        let xor = raw_xor(b);
        if stored != xor {
            let special = if xor == 0 || xor == 0xFFFF_FFFF {
                " (the XOR is one Windows replaces by a special value, which hivex does not accept)"
            } else {
                ""
            };
            return Err(self.not_a_hive(format!(
                "base block checksum {stored:#010x} is not the XOR {xor:#010x} of its first 508 bytes{special}"
            )));
        }
        let data_size = rd_u32(b, 0x28).unwrap_or(0);
        if data_size == 0 || data_size % 4096 != 0 {
            return Err(self.corrupt(
                0,
                Loc::Hive,
                format!("hive bins data size {data_size:#x} is not a positive multiple of 4096"),
            ));
        }
        if (data_size as usize)
            .checked_add(HBIN_START)
            .is_none_or(|e| e > b.len())
        {
            return Err(self.corrupt(
                0,
                Loc::Hive,
                format!(
                    "hive bins data size {data_size:#x} reaches beyond the end of the {}-byte file",
                    b.len()
                ),
            ));
        }
        self.data_end = data_size;
        self.used = Bits::new(data_size);
        self.owned = Bits::new(data_size);
        Ok(())
    }

    fn hbins(&mut self) -> Result<()> {
        let end_all = self.data_end;
        let mut cur: u32 = 0;
        while cur < end_all {
            let pos = HBIN_START + cur as usize;
            let b = self.buf();
            if b.get(pos..pos + 4) != Some(b"hbin") {
                return Err(self.corrupt(cur, Loc::Hive, "hbin without its \"hbin\" signature"));
            }
            let self_off = rd_u32(b, pos + 4).unwrap_or(NONE);
            if self_off != cur {
                return Err(self.corrupt(
                    cur,
                    Loc::Hive,
                    format!("hbin offset field {self_off:#x} is not its position {cur:#x}"),
                ));
            }
            let size = rd_u32(b, pos + 8).unwrap_or(0);
            let end = cur.checked_add(size).filter(|e| *e <= end_all);
            let Some(end) = end.filter(|_| size >= 4096 && size % 4096 == 0) else {
                return Err(self.corrupt(
                    cur,
                    Loc::Hive,
                    format!(
                        "hbin size {size:#x} is not a multiple of 4096 ending within the hive bins data size {end_all:#x}"
                    ),
                ));
            };
            let mut c = cur + 0x20;
            while c < end {
                let raw = rd_u32(self.buf(), HBIN_START + c as usize).unwrap_or(0) as i32;
                let abs = raw.unsigned_abs();
                if abs == 0 || abs % 8 != 0 || c.checked_add(abs).is_none_or(|e| e > end) {
                    return Err(self.corrupt(
                        c,
                        Loc::Hive,
                        format!(
                            "cell size {raw} is zero, not a multiple of 8 or reaches beyond its hbin at {cur:#x} (size {size:#x})"
                        ),
                    ));
                }
                self.stats.cells += 1;
                if raw < 0 {
                    self.used.set(c);
                    self.stats.allocated += 1;
                }
                c += abs;
            }
            self.stats.hbins += 1;
            cur = end;
        }
        Ok(())
    }

    /// The data of the allocated cell starting at `off` (without its size field).
    fn cell(&self, off: u32, loc: Loc, what: &str) -> Result<&[u8]> {
        if off % 8 != 0 || off >= self.data_end || !self.used.get(off) {
            return Err(self.corrupt(
                off,
                loc,
                format!("{what} offset {off:#x} is not the start of an allocated cell"),
            ));
        }
        let pos = HBIN_START + off as usize;
        let abs = (rd_u32(self.buf(), pos).unwrap_or(0) as i32).unsigned_abs() as usize;
        self.buf()
            .get(pos + 4..pos + abs)
            .ok_or_else(|| self.corrupt(off, loc, format!("{what} cell beyond the file")))
    }

    /// Record that `off` belongs to one record; a second owner is refused.
    fn own(&mut self, off: u32, loc: Loc, what: &str) -> Result<()> {
        if self.owned.set(off) {
            return Err(self.corrupt(
                off,
                loc,
                format!("{what} cell {off:#x} is also used by another record (shared or cyclic reference)"),
            ));
        }
        Ok(())
    }

    fn tree(&mut self) -> Result<()> {
        let root = self.h.root;
        // (nk offset, expected parent nk offset, parent index, depth)
        let mut stack: Vec<(u32, u32, usize, usize)> = vec![(root, NONE, usize::MAX, 0)];
        while let Some((off, parent_off, parent, depth)) = stack.pop() {
            if depth > self.h.opts.max_depth {
                return Err(self.limit(
                    Loc::Child(parent, off),
                    format!("key nesting deeper than {}", self.h.opts.max_depth),
                ));
            }
            if self.keys.len() >= self.h.opts.max_subkeys_visited {
                return Err(self.limit(
                    Loc::Child(parent, off),
                    format!("more than {} keys", self.h.opts.max_subkeys_visited),
                ));
            }
            let idx = self.key(off, parent_off, parent)?;
            let children = self.subkeys(idx)?;
            self.values(idx)?;
            for c in children.into_iter().rev() {
                stack.push((c, off, idx, depth + 1));
            }
        }
        self.stats.keys = self.keys.len();
        Ok(())
    }

    /// Validate one nk record and add it to `keys`; returns its index.
    fn key(&mut self, off: u32, parent_off: u32, parent: usize) -> Result<usize> {
        let pre = Loc::Child(parent, off);
        let d = self.cell(off, pre, "key (nk)")?;
        if d.get(0..2) != Some(b"nk") {
            return Err(self.corrupt(off, pre, "expected a key (nk) record"));
        }
        if d.len() < 0x4C {
            return Err(self.corrupt(
                off,
                pre,
                format!(
                    "nk record of {} bytes, shorter than its 76-byte header",
                    d.len()
                ),
            ));
        }
        let flags = rd_u16(d, 2).unwrap_or(0);
        let name_len = rd_u16(d, 0x48).unwrap_or(0) as usize;
        let Some(name) = d.get(0x4C..0x4C + name_len) else {
            return Err(self.corrupt(
                off,
                pre,
                format!(
                    "key name length {name_len} reaches beyond its {}-byte cell",
                    d.len() + 4
                ),
            ));
        };
        if let Some(p) = name_problem(name, flags & 0x20 != 0) {
            return Err(self.corrupt(off, pre, p));
        }
        let stored_parent = rd_u32(d, 0x10).unwrap_or(NONE);
        if parent != usize::MAX && stored_parent != parent_off {
            return Err(self.corrupt(
                off,
                pre,
                format!(
                    "parent field {stored_parent:#x} does not point back at the key {parent_off:#x} that lists it"
                ),
            ));
        }
        let sk = rd_u32(d, 0x2C).unwrap_or(NONE);
        let class_off = rd_u32(d, 0x30).unwrap_or(NONE);
        let class_len = rd_u16(d, 0x4A).unwrap_or(0) as usize;
        if self.owned.get(off) {
            return Err(self.corrupt(
                off,
                pre,
                "key reached twice (a cycle in the key tree, or a key listed by two lists)",
            ));
        }
        self.own(off, pre, "key (nk)")?;
        self.keys.push(KeyRef { off, parent });
        let idx = self.keys.len() - 1;
        let at = Loc::Key(idx);
        // Security.
        let sd = self.cell(sk, at, "security (sk)")?;
        if sd.get(0..2) != Some(b"sk") || sd.len() < 0x14 {
            return Err(self.corrupt(sk, at, "expected a security (sk) record"));
        }
        let sec_len = rd_u32(sd, 0x10).unwrap_or(0) as usize;
        if sec_len.checked_add(0x14).is_none_or(|e| e > sd.len()) {
            return Err(self.corrupt(
                sk,
                at,
                format!(
                    "security descriptor length {sec_len} reaches beyond its {}-byte sk cell",
                    sd.len() + 4
                ),
            ));
        }
        let n = self.sk_refs.entry(sk).or_insert((0, idx));
        n.0 = n.0.saturating_add(1);
        // Class name.
        if class_len != 0 && class_off != NONE {
            let cd = self.cell(class_off, at, "class name")?;
            if class_len > cd.len() {
                return Err(self.corrupt(
                    class_off,
                    at,
                    format!(
                        "class name length {class_len} reaches beyond its {}-byte cell",
                        cd.len() + 4
                    ),
                ));
            }
            self.own(class_off, at, "class name")?;
        }
        Ok(idx)
    }

    /// Validate the subkey list of key `idx`; returns the child nk offsets.
    fn subkeys(&mut self, idx: usize) -> Result<Vec<u32>> {
        let off = self.keys.get(idx).map(|k| k.off).unwrap_or(NONE);
        let at = Loc::Key(idx);
        let d = self.cell(off, at, "key (nk)")?;
        let count = rd_u32(d, 0x14).unwrap_or(0) as usize;
        let list = rd_u32(d, 0x1C).unwrap_or(NONE);
        if count == 0 {
            // Windows, hivex, the editor and the self-check ignore the list
            // offset of a key without subkeys (real hives keep stale ones).
            return Ok(Vec::new());
        }
        if count > HIVEX_MAX_SUBKEYS {
            return Err(self.corrupt(
                off,
                at,
                format!("subkey count {count} is above hivex's limit of {HIVEX_MAX_SUBKEYS}"),
            ));
        }
        if count > self.h.opts.max_subkeys_visited {
            return Err(HiveError::Limit {
                hive: self.h.opts.name.clone(),
                path: self.loc_path(at),
                what: format!("{count} subkeys in one key"),
            });
        }
        let ld = self.cell(list, at, "subkey list")?;
        let is_ri = ld.get(0..2) == Some(b"ri");
        let leaves = match ld.get(0..2) {
            Some(b"lf") | Some(b"lh") | Some(b"li") => vec![list],
            Some(b"ri") => {
                let n = rd_u16(ld, 2).unwrap_or(0) as usize;
                if 4 + 4 * n > ld.len() {
                    return Err(self.corrupt(
                        list,
                        at,
                        format!(
                            "ri index of {n} entries does not fit its {}-byte cell",
                            ld.len() + 4
                        ),
                    ));
                }
                (0..n)
                    .map(|i| rd_u32(ld, 4 + 4 * i).unwrap_or(NONE))
                    .collect()
            }
            _ => {
                return Err(self.corrupt(list, at, "subkey list is not an lf, lh, li or ri record"))
            }
        };
        self.own(list, at, "subkey list")?;
        let mut out = Vec::with_capacity(count);
        for leaf in leaves {
            if is_ri {
                // An entry naming the ri itself fails here too: its signature is "ri".
                let d = self.cell(leaf, at, "ri index entry")?;
                if !matches!(d.get(0..2), Some(b"lf") | Some(b"lh") | Some(b"li")) {
                    return Err(self.corrupt(
                        leaf,
                        at,
                        format!("entry of the ri index {list:#x} is not an lf, lh or li list"),
                    ));
                }
                self.own(leaf, at, "subkey list")?;
            }
            let d = self.cell(leaf, at, "subkey list")?;
            let stride = if d.get(0..2) == Some(b"li") { 4 } else { 8 };
            let n = rd_u16(d, 2).unwrap_or(0) as usize;
            if 4 + stride * n > d.len() {
                return Err(self.corrupt(
                    leaf,
                    at,
                    format!(
                        "subkey list of {n} entries does not fit its {}-byte cell",
                        d.len() + 4
                    ),
                ));
            }
            if out.len() + n > count {
                return Err(self.corrupt(
                    off,
                    at,
                    format!("subkey count {count} is less than the entries of its subkey lists"),
                ));
            }
            for i in 0..n {
                let c = rd_u32(d, 4 + stride * i).unwrap_or(NONE);
                let cd = self.cell(c, at, "subkey list entry")?;
                if cd.get(0..2) != Some(b"nk") {
                    return Err(self.corrupt(
                        c,
                        at,
                        format!("entry {i} of subkey list {leaf:#x} is not a key (nk) record"),
                    ));
                }
                out.push(c);
            }
        }
        if out.len() != count {
            return Err(self.corrupt(
                off,
                at,
                format!(
                    "subkey count {count} but its subkey lists hold {} entries",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    /// Validate the value list, values and data of key `idx`.
    fn values(&mut self, idx: usize) -> Result<()> {
        let off = self.keys.get(idx).map(|k| k.off).unwrap_or(NONE);
        let at = Loc::Key(idx);
        let d = self.cell(off, at, "key (nk)")?;
        let count = rd_u32(d, 0x24).unwrap_or(0) as usize;
        let list = rd_u32(d, 0x28).unwrap_or(NONE);
        if count == 0 {
            // Ignored by every reader, like a stale subkey list; real NT 4
            // hives keep stale value lists, some shared with live ones.
            return Ok(());
        }
        if count > HIVEX_MAX_VALUES {
            return Err(self.corrupt(
                off,
                at,
                format!("value count {count} is above hivex's limit of {HIVEX_MAX_VALUES}"),
            ));
        }
        if count > self.h.opts.max_values_per_key {
            return Err(HiveError::Limit {
                hive: self.h.opts.name.clone(),
                path: self.loc_path(at),
                what: format!("{count} values in one key"),
            });
        }
        let ld = self.cell(list, at, "value list")?;
        if count.saturating_mul(4) > ld.len() {
            return Err(self.corrupt(
                list,
                at,
                format!(
                    "value list of {count} entries does not fit its {}-byte cell",
                    ld.len() + 4
                ),
            ));
        }
        let vks: Vec<u32> = (0..count)
            .map(|i| rd_u32(ld, 4 * i).unwrap_or(NONE))
            .collect();
        self.own(list, at, "value list")?;
        for vk in vks {
            self.value(vk, at)?;
            self.stats.values += 1;
        }
        Ok(())
    }

    fn value(&mut self, vk: u32, at: Loc) -> Result<()> {
        let d = self.cell(vk, at, "value (vk)")?;
        if d.get(0..2) != Some(b"vk") || d.len() < 0x14 {
            return Err(self.corrupt(vk, at, "expected a value (vk) record"));
        }
        let name_len = rd_u16(d, 2).unwrap_or(0) as usize;
        let flags = rd_u16(d, 0x10).unwrap_or(0);
        let Some(name) = d.get(0x14..0x14 + name_len) else {
            return Err(self.corrupt(
                vk,
                at,
                format!(
                    "value name length {name_len} reaches beyond its {}-byte cell",
                    d.len() + 4
                ),
            ));
        };
        if let Some(p) = name_problem(name, flags & 1 != 0) {
            return Err(self.corrupt(vk, at, format!("value name: {p}")));
        }
        let shown = crate::hive::decode_name(name, flags & 1 != 0);
        let raw_len = rd_u32(d, 4).unwrap_or(0);
        let data_off = rd_u32(d, 8).unwrap_or(NONE);
        self.own(vk, at, "value (vk)")?;
        let len = (raw_len & 0x7FFF_FFFF) as usize;
        if raw_len & 0x8000_0000 != 0 {
            if len > 4 {
                return Err(self.corrupt(
                    vk,
                    at,
                    format!("value {shown:?}: inline data length {len} is more than 4"),
                ));
            }
            return Ok(());
        }
        if len > HIVEX_MAX_VALUE_LEN {
            return Err(self.corrupt(
                vk,
                at,
                format!(
                    "value {shown:?}: data length {len} is above hivex's limit of {HIVEX_MAX_VALUE_LEN}"
                ),
            ));
        }
        if len > self.h.opts.max_value_size {
            return Err(HiveError::Limit {
                hive: self.h.opts.name.clone(),
                path: self.loc_path(at),
                what: format!("value {shown:?} has {len} bytes of data"),
            });
        }
        // Even empty data must point at an allocated cell for hivex.
        let what = format!("data of value {shown:?}");
        let dd = self.cell(data_off, at, &what)?;
        let dlen = dd.len();
        let is_db = dd.get(0..2) == Some(b"db");
        let nseg = rd_u16(dd, 2).unwrap_or(0) as usize;
        let seg_list = rd_u32(dd, 4).unwrap_or(NONE);
        self.own(data_off, at, &what)?;
        if self.h.minor >= 4 && len > BIG_DATA_SEGMENT && is_db {
            if nseg == 0 {
                return Err(self.corrupt(
                    data_off,
                    at,
                    format!("{what}: db record without segments"),
                ));
            }
            let ld = self.cell(seg_list, at, "big data segment list")?;
            if 4 * nseg > ld.len() {
                return Err(self.corrupt(
                    seg_list,
                    at,
                    format!(
                        "{what}: big data segment list of {nseg} entries does not fit its {}-byte cell",
                        ld.len() + 4
                    ),
                ));
            }
            let segs: Vec<u32> = (0..nseg)
                .map(|i| rd_u32(ld, 4 * i).unwrap_or(NONE))
                .collect();
            self.own(seg_list, at, "big data segment list")?;
            let mut total = 0usize;
            for s in segs {
                let sd = self.cell(s, at, "big data segment")?;
                total = total.saturating_add(sd.len().min(BIG_DATA_SEGMENT));
                self.own(s, at, "big data segment")?;
            }
            if total < len {
                return Err(self.corrupt(
                    data_off,
                    at,
                    format!("{what}: big data segments hold {total} of its {len} bytes"),
                ));
            }
        } else if len > dlen {
            return Err(self.corrupt(
                data_off,
                at,
                format!(
                    "{what}: length {len} reaches beyond its {}-byte cell",
                    dlen + 4
                ),
            ));
        }
        Ok(())
    }

    fn security(&mut self) -> Result<()> {
        let sks: Vec<(u32, (u32, usize))> = self.sk_refs.iter().map(|(a, b)| (*a, *b)).collect();
        self.stats.security = sks.len();
        for (sk, (refs, first)) in sks {
            let at = Loc::Key(first);
            if self.owned.get(sk) {
                return Err(self.corrupt(
                    sk,
                    at,
                    "security (sk) cell is also used as another record",
                ));
            }
            let d = self.cell(sk, at, "security (sk)")?;
            let flink = rd_u32(d, 4).unwrap_or(NONE);
            let blink = rd_u32(d, 8).unwrap_or(NONE);
            let rc = rd_u32(d, 0xC).unwrap_or(0);
            if rc < refs {
                return Err(self.corrupt(
                    sk,
                    at,
                    format!("security (sk) reference count {rc} but {refs} keys use it"),
                ));
            }
            for (link, back_at, name) in [(flink, 8usize, "next"), (blink, 4usize, "previous")] {
                let ld = self.cell(link, at, "security (sk) list link")?;
                if ld.get(0..2) != Some(b"sk") {
                    return Err(self.corrupt(
                        link,
                        at,
                        format!("{name} link of security cell {sk:#x} is not an sk record"),
                    ));
                }
                let back = rd_u32(ld, back_at).unwrap_or(NONE);
                if back != sk {
                    return Err(self.corrupt(
                        link,
                        at,
                        format!(
                            "security list broken: the {name} cell of {sk:#x} links back to {back:#x}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
