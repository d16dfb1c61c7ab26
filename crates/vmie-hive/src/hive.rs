//! The regf reader: base block, hbins, cells, nk/vk/lists/db, all bounds-checked.

use std::collections::{BTreeMap, HashSet};

use crate::error::{HiveError, Result};

/// Cell offsets are relative to the first hbin, which starts here in the file.
pub(crate) const HBIN_START: usize = 0x1000;
/// "No cell" marker.
pub(crate) const NONE: u32 = 0xFFFF_FFFF;
/// Largest data chunk of a big-data ("db") segment.
pub(crate) const BIG_DATA_SEGMENT: usize = 16344;

/// Value types.
pub mod reg_type {
    pub const NONE: u32 = 0;
    pub const SZ: u32 = 1;
    pub const EXPAND_SZ: u32 = 2;
    pub const BINARY: u32 = 3;
    pub const DWORD: u32 = 4;
    pub const DWORD_BIG_ENDIAN: u32 = 5;
    pub const LINK: u32 = 6;
    pub const MULTI_SZ: u32 = 7;
    pub const RESOURCE_LIST: u32 = 8;
    pub const FULL_RESOURCE_DESCRIPTOR: u32 = 9;
    pub const RESOURCE_REQUIREMENTS_LIST: u32 = 10;
    pub const QWORD: u32 = 11;
}

/// Limits applied to a hostile hive.
#[derive(Debug, Clone)]
pub struct HiveOptions {
    /// Name used in every error message (e.g. the guest path of the hive file).
    pub name: String,
    /// Largest hive file accepted.
    pub max_hive_size: usize,
    /// Deepest key nesting walked (export, recursive delete).
    pub max_depth: usize,
    /// Most subkeys visited in one walk, and most entries in one subkey list.
    pub max_subkeys_visited: usize,
    /// Most values in one key.
    pub max_values_per_key: usize,
    /// Largest value data read or written.
    pub max_value_size: usize,
    /// Open a dirty hive (sequence numbers differ) without its logs, read-only,
    /// as hivex does: every edit is then refused.
    pub ignore_dirty: bool,
}

impl Default for HiveOptions {
    fn default() -> Self {
        HiveOptions {
            name: "hive".to_string(),
            max_hive_size: 1 << 30,
            max_depth: 512,
            max_subkeys_visited: 4_000_000,
            max_values_per_key: 1 << 20,
            max_value_size: 64 << 20,
            ignore_dirty: false,
        }
    }
}

/// A key, identified by its nk cell offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

/// A value, identified by its vk cell offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// A hive held in memory, read and edited in place.
#[derive(Debug, Clone)]
pub struct Hive {
    pub(crate) buf: Vec<u8>,
    pub(crate) opts: HiveOptions,
    pub(crate) minor: u32,
    pub(crate) root: u32,
    /// hbin start (relative) -> size.
    pub(crate) hbins: BTreeMap<u32, u32>,
    /// free cell offset (relative) -> size.
    pub(crate) free: BTreeMap<u32, u32>,
    /// End of the hbins data (relative): the "hive bins data size".
    pub(crate) data_end: u32,
    /// The base block sequence numbers were already bumped for this session.
    pub(crate) bumped: bool,
    /// Cells written since open.
    pub(crate) modified: bool,
    /// Opened dirty without logs (`ignore_dirty`): edits are refused.
    pub(crate) read_only: bool,
    /// [`Hive::validate`] passed before the first edit of this session.
    pub(crate) validated: bool,
}

/// A parsed nk record.
#[derive(Debug, Clone)]
pub(crate) struct Nk {
    pub off: u32,
    pub parent: u32,
    pub subkey_count: u32,
    pub subkey_list: u32,
    pub value_count: u32,
    pub value_list: u32,
    pub sk: u32,
    pub class_off: u32,
    pub class_len: u16,
    pub name: String,
}

/// A parsed vk record.
#[derive(Debug, Clone)]
pub(crate) struct Vk {
    pub off: u32,
    pub name: String,
    pub raw_len: u32,
    pub data_off: u32,
    pub vtype: u32,
}

pub(crate) fn rd_u16(b: &[u8], pos: usize) -> Option<u16> {
    let s = b.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_le_bytes([
        s.first().copied()?,
        s.get(1).copied()?,
    ]))
}

pub(crate) fn rd_u32(b: &[u8], pos: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

pub(crate) fn rd_u64(b: &[u8], pos: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(pos..pos.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// Decode a stored name: compressed names are Latin-1, others UTF-16LE.
pub(crate) fn decode_name(bytes: &[u8], compressed: bool) -> String {
    if compressed {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        String::from_utf16_lossy(&units)
    }
}

/// Upcase a name the way key lookups compare names. Approximation of the
/// Windows upcase table: `char::to_uppercase` where it maps to a single
/// character (Windows never expands one code unit into several), else the
/// character itself; then UTF-16 code units.
pub fn upcase(name: &str) -> Vec<u16> {
    let mut out = Vec::with_capacity(name.len());
    let mut buf = [0u16; 2];
    for c in name.chars() {
        let mut up = c.to_uppercase();
        let u = match (up.next(), up.next()) {
            (Some(u), None) => u,
            _ => c,
        };
        out.extend_from_slice(u.encode_utf16(&mut buf));
    }
    out
}

/// Case-insensitive name equality (see [`upcase`]).
pub fn names_equal(a: &str, b: &str) -> bool {
    upcase(a) == upcase(b)
}

pub(crate) fn checksum(base: &[u8]) -> u32 {
    let mut x = 0u32;
    for i in 0..127 {
        x ^= rd_u32(base, i * 4).unwrap_or(0);
    }
    match x {
        0xFFFF_FFFF => 0xFFFF_FFFE,
        0 => 1,
        v => v,
    }
}

/// Split a key path on backslashes, dropping empty components (so `\`, `` and `\A\\B` work).
pub fn split_path(path: &str) -> Vec<&str> {
    path.split('\\').filter(|c| !c.is_empty()).collect()
}

impl Hive {
    /// Parse a hive file held in memory. Refuses dirty hives (see [`Hive::from_bytes_with_logs`]).
    pub fn from_bytes(buf: Vec<u8>, opts: &HiveOptions) -> Result<Hive> {
        let name = opts.name.clone();
        let not = |reason: String| HiveError::NotAHive {
            hive: name.clone(),
            reason,
        };
        if buf.len() > opts.max_hive_size {
            return Err(not(format!(
                "file is {} bytes, larger than the limit of {}",
                buf.len(),
                opts.max_hive_size
            )));
        }
        if buf.len() < HBIN_START {
            return Err(not(format!(
                "file is only {} bytes, shorter than a base block",
                buf.len()
            )));
        }
        if buf.get(0..4) != Some(b"regf") {
            return Err(not("no \"regf\" signature".into()));
        }
        let major = rd_u32(&buf, 0x14).unwrap_or(0);
        let minor = rd_u32(&buf, 0x18).unwrap_or(0);
        if major != 1 || !(2..=6).contains(&minor) {
            return Err(not(format!("unsupported regf version {major}.{minor}")));
        }
        let file_type = rd_u32(&buf, 0x1C).unwrap_or(0);
        if file_type != 0 {
            return Err(not(format!(
                "file type {file_type} is not a primary hive file (is this a log?)"
            )));
        }
        let stored = rd_u32(&buf, 0x1FC).unwrap_or(0);
        let computed = checksum(buf.get(0..0x200).unwrap_or(&[]));
        if stored != computed {
            return Err(not(format!(
                "base block checksum {stored:#010x} does not match computed {computed:#010x} (base block damaged; a log may hold a good copy)"
            )));
        }
        let seq1 = rd_u32(&buf, 4).unwrap_or(0);
        let seq2 = rd_u32(&buf, 8).unwrap_or(0);
        if seq1 != seq2 && opts.ignore_dirty {
            let mut h = Self::from_clean_bytes(buf, opts)?;
            h.read_only = true;
            return Ok(h);
        }
        if seq1 != seq2 {
            return Err(HiveError::Dirty {
                hive: name,
                primary: seq1,
                secondary: seq2,
                reason: "replay its .LOG1/.LOG2 files (Hive::from_bytes_with_logs) or let Windows recover it".into(),
            });
        }
        Self::from_clean_bytes(buf, opts)
    }

    /// Parse after the base-block header checks (also used after log replay).
    pub(crate) fn from_clean_bytes(buf: Vec<u8>, opts: &HiveOptions) -> Result<Hive> {
        let name = opts.name.clone();
        let minor = rd_u32(&buf, 0x18).unwrap_or(0);
        let root = rd_u32(&buf, 0x24).unwrap_or(NONE);
        let data_size = rd_u32(&buf, 0x28).unwrap_or(0);
        let corrupt = |offset: u32, reason: String| HiveError::Corrupt {
            hive: name.clone(),
            offset,
            path: String::new(),
            reason,
        };
        if data_size == 0 || data_size % 4096 != 0 {
            return Err(corrupt(
                0,
                format!("hive bins data size {data_size:#x} is not a positive multiple of 4096"),
            ));
        }
        let file_end = (data_size as usize).checked_add(HBIN_START);
        if file_end.is_none_or(|e| e > buf.len()) {
            return Err(corrupt(
                0,
                format!(
                    "truncated: hive bins data size {data_size:#x} reaches beyond the end of the {}-byte file",
                    buf.len()
                ),
            ));
        }
        let mut hbins = BTreeMap::new();
        let mut free = BTreeMap::new();
        let mut cur: u32 = 0;
        while cur < data_size {
            let pos = HBIN_START + cur as usize;
            if buf.get(pos..pos + 4) != Some(b"hbin") {
                return Err(corrupt(
                    cur,
                    "truncated or damaged hbin: no \"hbin\" signature".into(),
                ));
            }
            let self_off = rd_u32(&buf, pos + 4).unwrap_or(NONE);
            let size = rd_u32(&buf, pos + 8).unwrap_or(0);
            if self_off != cur {
                return Err(corrupt(cur, format!("hbin claims offset {self_off:#x}")));
            }
            let end = cur.checked_add(size);
            if size < 4096 || size % 4096 != 0 || end.is_none_or(|e| e > data_size) {
                return Err(corrupt(
                    cur,
                    format!("hbin size {size:#x} invalid or beyond the hive bins data size"),
                ));
            }
            let end = end.unwrap_or(data_size);
            let mut c = cur + 0x20;
            while c < end {
                let raw = rd_u32(&buf, HBIN_START + c as usize).unwrap_or(0) as i32;
                let abs = raw.unsigned_abs();
                if abs < 8 || abs % 8 != 0 || c.checked_add(abs).is_none_or(|e| e > end) {
                    return Err(corrupt(
                        c,
                        format!("cell size {raw} invalid in hbin at {cur:#x}"),
                    ));
                }
                if raw > 0 {
                    free.insert(c, abs);
                }
                c += abs;
            }
            hbins.insert(cur, size);
            cur = end;
        }
        let hive = Hive {
            buf,
            opts: opts.clone(),
            minor,
            root,
            hbins,
            free,
            data_end: data_size,
            bumped: false,
            modified: false,
            read_only: false,
            validated: false,
        };
        let nk = hive.nk(root).map_err(|e| e.at_path("\\"))?;
        let _ = nk;
        Ok(hive)
    }

    /// The hive file as it is now (with every edit and an up-to-date base block).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consume the hive and return the file bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// Minor version of the regf format (3..=6).
    pub fn minor_version(&self) -> u32 {
        self.minor
    }

    /// The root key.
    pub fn root(&self) -> KeyId {
        KeyId(self.root)
    }

    pub(crate) fn corrupt(&self, offset: u32, reason: impl Into<String>) -> HiveError {
        HiveError::Corrupt {
            hive: self.opts.name.clone(),
            offset,
            path: String::new(),
            reason: reason.into(),
        }
    }

    pub(crate) fn limit(&self, path: &str, what: impl Into<String>) -> HiveError {
        HiveError::Limit {
            hive: self.opts.name.clone(),
            path: path.to_string(),
            what: what.into(),
        }
    }

    /// Position in the file and size (including the 4-byte header) of a cell, allocated or free.
    pub(crate) fn cell_span(&self, off: u32) -> Result<(usize, u32, bool)> {
        if off == NONE || off % 8 != 0 || off < 0x20 || off >= self.data_end {
            return Err(self.corrupt(off, "cell offset out of range or misaligned"));
        }
        let (hstart, hsize) = self
            .hbins
            .range(..=off)
            .next_back()
            .map(|(a, b)| (*a, *b))
            .ok_or_else(|| self.corrupt(off, "cell offset before the first hbin"))?;
        let hend = hstart.saturating_add(hsize);
        if off < hstart + 0x20 || off >= hend {
            return Err(self.corrupt(off, "cell offset inside an hbin header"));
        }
        let pos = HBIN_START + off as usize;
        let raw =
            rd_u32(&self.buf, pos).ok_or_else(|| self.corrupt(off, "cell beyond the file"))? as i32;
        let abs = raw.unsigned_abs();
        if abs < 8 || off.checked_add(abs).is_none_or(|e| e > hend) {
            return Err(self.corrupt(off, format!("cell size {raw} reaches beyond its hbin")));
        }
        Ok((pos, abs, raw < 0))
    }

    /// The data of an allocated cell (without its size header).
    pub(crate) fn cell(&self, off: u32) -> Result<&[u8]> {
        let (pos, abs, used) = self.cell_span(off)?;
        if !used {
            return Err(self.corrupt(off, "reference to a free (unallocated) cell"));
        }
        self.buf
            .get(pos + 4..pos + abs as usize)
            .ok_or_else(|| self.corrupt(off, "cell beyond the file"))
    }

    pub(crate) fn nk(&self, off: u32) -> Result<Nk> {
        let d = self.cell(off)?;
        if d.get(0..2) != Some(b"nk") {
            return Err(self.corrupt(off, "expected a key (nk) record"));
        }
        let f = |p: usize| rd_u32(d, p).unwrap_or(0);
        if d.len() < 0x4C {
            return Err(self.corrupt(off, "nk record too short"));
        }
        let flags = rd_u16(d, 2).unwrap_or(0);
        let name_len = rd_u16(d, 0x48).unwrap_or(0) as usize;
        let name_bytes = d.get(0x4C..0x4C + name_len).ok_or_else(|| {
            self.corrupt(off, format!("key name length {name_len} beyond its cell"))
        })?;
        Ok(Nk {
            off,
            parent: f(0x10),
            subkey_count: f(0x14),
            subkey_list: f(0x1C),
            value_count: f(0x24),
            value_list: f(0x28),
            sk: f(0x2C),
            class_off: f(0x30),
            class_len: rd_u16(d, 0x4A).unwrap_or(0),
            name: decode_name(name_bytes, flags & 0x20 != 0),
        })
    }

    pub(crate) fn vk(&self, off: u32) -> Result<Vk> {
        let d = self.cell(off)?;
        if d.get(0..2) != Some(b"vk") || d.len() < 0x14 {
            return Err(self.corrupt(off, "expected a value (vk) record"));
        }
        let name_len = rd_u16(d, 2).unwrap_or(0) as usize;
        let flags = rd_u16(d, 0x10).unwrap_or(0);
        let name_bytes = d.get(0x14..0x14 + name_len).ok_or_else(|| {
            self.corrupt(off, format!("value name length {name_len} beyond its cell"))
        })?;
        Ok(Vk {
            off,
            name: decode_name(name_bytes, flags & 1 != 0),
            raw_len: rd_u32(d, 4).unwrap_or(0),
            data_off: rd_u32(d, 8).unwrap_or(NONE),
            vtype: rd_u32(d, 0xC).unwrap_or(0),
        })
    }

    /// The leaf lists of a subkey list (the list itself, or the leaves of an ri).
    pub(crate) fn leaves(&self, list: u32) -> Result<Vec<u32>> {
        let d = self.cell(list)?;
        match d.get(0..2) {
            Some(b"lf") | Some(b"lh") | Some(b"li") => Ok(vec![list]),
            Some(b"ri") => {
                let n = rd_u16(d, 2).unwrap_or(0) as usize;
                let mut out = Vec::with_capacity(n);
                let mut seen = HashSet::new();
                for i in 0..n {
                    let l = rd_u32(d, 4 + 4 * i)
                        .ok_or_else(|| self.corrupt(list, "ri list count beyond its cell"))?;
                    if !seen.insert(l) || l == list {
                        return Err(self.corrupt(list, "cyclic or repeated subkey list in ri"));
                    }
                    let ld = self.cell(l)?;
                    match ld.get(0..2) {
                        Some(b"lf") | Some(b"lh") | Some(b"li") => out.push(l),
                        _ => return Err(self.corrupt(l, "ri entry is not an lf/lh/li list")),
                    }
                }
                Ok(out)
            }
            _ => Err(self.corrupt(list, "expected a subkey list (lf/lh/li/ri)")),
        }
    }

    /// Entries (nk offsets) of one leaf list.
    pub(crate) fn leaf_entries(&self, leaf: u32) -> Result<Vec<u32>> {
        let d = self.cell(leaf)?;
        let stride = match d.get(0..2) {
            Some(b"li") => 4,
            Some(b"lf") | Some(b"lh") => 8,
            _ => return Err(self.corrupt(leaf, "expected an lf/lh/li list")),
        };
        let n = rd_u16(d, 2).unwrap_or(0) as usize;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(
                rd_u32(d, 4 + stride * i)
                    .ok_or_else(|| self.corrupt(leaf, "subkey list count beyond its cell"))?,
            );
        }
        Ok(out)
    }

    pub(crate) fn subkey_offsets(&self, nk: &Nk) -> Result<Vec<u32>> {
        if nk.subkey_count == 0 || nk.subkey_list == NONE {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for leaf in self.leaves(nk.subkey_list)? {
            let e = self.leaf_entries(leaf)?;
            if out.len() + e.len() > self.opts.max_subkeys_visited {
                return Err(self.limit("", "too many subkeys in one key"));
            }
            out.extend(e);
        }
        let mut seen = HashSet::with_capacity(out.len());
        for &o in &out {
            if o == nk.off || !seen.insert(o) {
                return Err(self.corrupt(nk.subkey_list, "cyclic or duplicate subkey reference"));
            }
        }
        Ok(out)
    }

    pub(crate) fn value_offsets(&self, nk: &Nk) -> Result<Vec<u32>> {
        if nk.value_count == 0 || nk.value_list == NONE {
            return Ok(Vec::new());
        }
        let n = nk.value_count as usize;
        if n > self.opts.max_values_per_key {
            return Err(self.limit("", format!("{n} values in one key")));
        }
        let d = self.cell(nk.value_list)?;
        if d.len() < n.saturating_mul(4) {
            return Err(self.corrupt(
                nk.value_list,
                format!("value list too short for {n} values"),
            ));
        }
        Ok((0..n).filter_map(|i| rd_u32(d, i * 4)).collect())
    }

    pub(crate) fn vk_data(&self, vk: &Vk) -> Result<Vec<u8>> {
        let len = (vk.raw_len & 0x7FFF_FFFF) as usize;
        if vk.raw_len & 0x8000_0000 != 0 {
            if len > 4 {
                return Err(self.corrupt(vk.off, format!("inline value data length {len} > 4")));
            }
            return Ok(vk.data_off.to_le_bytes().get(..len).unwrap_or(&[]).to_vec());
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        if len > self.opts.max_value_size {
            return Err(self.limit("", format!("value {:?} has {len} bytes of data", vk.name)));
        }
        let d = self.cell(vk.data_off)?;
        if self.minor >= 4 && len > BIG_DATA_SEGMENT && d.get(0..2) == Some(b"db") {
            let nseg = rd_u16(d, 2).unwrap_or(0) as usize;
            let list = rd_u32(d, 4).unwrap_or(NONE);
            let ld = self.cell(list)?;
            if ld.len() < nseg * 4 {
                return Err(self.corrupt(list, "big data segment list too short"));
            }
            let mut out = Vec::with_capacity(len);
            for i in 0..nseg {
                let seg = rd_u32(ld, i * 4).unwrap_or(NONE);
                let sd = self.cell(seg)?;
                let take = (len - out.len()).min(BIG_DATA_SEGMENT).min(sd.len());
                out.extend_from_slice(sd.get(..take).unwrap_or(&[]));
                if out.len() >= len {
                    break;
                }
            }
            if out.len() < len {
                return Err(self.corrupt(
                    vk.data_off,
                    format!("big data has {} of {len} bytes", out.len()),
                ));
            }
            return Ok(out);
        }
        match d.get(..len) {
            Some(s) => Ok(s.to_vec()),
            None => Err(self.corrupt(
                vk.data_off,
                format!(
                    "value {:?} data length {len} beyond its {}-byte cell",
                    vk.name,
                    d.len()
                ),
            )),
        }
    }

    /// Find a direct child by name (case-insensitive).
    pub(crate) fn child(&self, nk: &Nk, name: &str) -> Result<Option<Nk>> {
        let want = upcase(name);
        for o in self.subkey_offsets(nk)? {
            let c = self.nk(o)?;
            if upcase(&c.name) == want {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    pub(crate) fn nk_path(&self, path: &str) -> Result<Nk> {
        let comps = split_path(path);
        if comps.len() > self.opts.max_depth {
            return Err(self.limit(path, "path deeper than max_depth"));
        }
        let mut cur = self.nk(self.root).map_err(|e| e.at_path("\\"))?;
        for c in comps {
            cur = match self.child(&cur, c).map_err(|e| e.at_path(path))? {
                Some(n) => n,
                None => {
                    return Err(HiveError::KeyNotFound {
                        hive: self.opts.name.clone(),
                        path: path.to_string(),
                    })
                }
            };
        }
        Ok(cur)
    }

    /// Open a key by path (`\`-separated, case-insensitive; `""` or `\` is the root).
    pub fn open_key(&self, path: &str) -> Result<KeyId> {
        Ok(KeyId(self.nk_path(path)?.off))
    }

    /// Name of a key.
    pub fn key_name(&self, key: KeyId) -> Result<String> {
        Ok(self.nk(key.0)?.name)
    }

    /// Last-write time of a key (FILETIME).
    pub fn key_timestamp(&self, key: KeyId) -> Result<u64> {
        Ok(rd_u64(self.cell(key.0)?, 4).unwrap_or(0))
    }

    /// Subkeys of a key, in stored order.
    pub fn subkeys(&self, key: KeyId) -> Result<Vec<KeyId>> {
        let nk = self.nk(key.0)?;
        Ok(self.subkey_offsets(&nk)?.into_iter().map(KeyId).collect())
    }

    /// Values of a key, in stored order.
    pub fn values(&self, key: KeyId) -> Result<Vec<ValueId>> {
        let nk = self.nk(key.0)?;
        Ok(self.value_offsets(&nk)?.into_iter().map(ValueId).collect())
    }

    /// Read one value: name, type, data.
    pub fn value(&self, v: ValueId) -> Result<Value> {
        let vk = self.vk(v.0)?;
        let data = self.vk_data(&vk)?;
        Ok(Value {
            name: vk.name,
            vtype: vk.vtype,
            data,
        })
    }

    /// Read a value of a key by name (case-insensitive; `""` is the default value).
    pub fn get_value(&self, key: KeyId, name: &str) -> Result<Option<Value>> {
        let nk = self.nk(key.0)?;
        let want = upcase(name);
        for o in self.value_offsets(&nk)? {
            let vk = self.vk(o)?;
            if upcase(&vk.name) == want {
                let data = self.vk_data(&vk)?;
                return Ok(Some(Value {
                    name: vk.name,
                    vtype: vk.vtype,
                    data,
                }));
            }
        }
        Ok(None)
    }

    /// Full path of a key (`\` for the root), by following parent links (bounded).
    pub fn key_path(&self, key: KeyId) -> Result<String> {
        let mut names = Vec::new();
        let mut cur = self.nk(key.0)?;
        let mut seen = HashSet::new();
        while cur.off != self.root {
            if !seen.insert(cur.off) || names.len() > self.opts.max_depth {
                return Err(self.corrupt(cur.off, "parent chain is cyclic or too deep"));
            }
            names.push(cur.name.clone());
            cur = self.nk(cur.parent)?;
        }
        names.reverse();
        Ok(format!("\\{}", names.join("\\")))
    }

    /// Walk the whole tree below `key` (depth-first, stored order), checking
    /// every key, value and data, with cycle detection and limits. Returns the
    /// number of keys and values seen.
    pub fn walk(&self, key: KeyId) -> Result<(usize, usize)> {
        let mut seen = HashSet::new();
        let mut stack = vec![(key.0, 0usize)];
        let (mut keys, mut vals) = (0usize, 0usize);
        while let Some((off, depth)) = stack.pop() {
            if depth > self.opts.max_depth {
                return Err(self.limit("", "key nesting deeper than max_depth"));
            }
            if !seen.insert(off) {
                return Err(self.corrupt(off, "key reached twice (cycle in the key tree)"));
            }
            keys += 1;
            if keys > self.opts.max_subkeys_visited {
                return Err(self.limit("", "more keys than max_subkeys_visited"));
            }
            let nk = self.nk(off)?;
            for v in self.value_offsets(&nk)? {
                let vk = self.vk(v)?;
                self.vk_data(&vk)?;
                vals += 1;
            }
            for c in self.subkey_offsets(&nk)? {
                stack.push((c, depth + 1));
            }
        }
        Ok((keys, vals))
    }
}

/// A value as stored: name, type and raw data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub name: String,
    pub vtype: u32,
    pub data: Vec<u8>,
}

/// A value's data decoded by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// REG_SZ, REG_EXPAND_SZ, REG_LINK (UTF-16LE, up to the first NUL).
    String(String),
    MultiString(Vec<String>),
    Dword(u32),
    Qword(u64),
    /// Anything else (NONE, BINARY, resource lists, and strings/numbers of the wrong size).
    Raw(Vec<u8>),
}

pub(crate) fn utf16_units(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect()
}

impl Value {
    /// Decode by type.
    pub fn decoded(&self) -> Decoded {
        use reg_type::*;
        match self.vtype {
            SZ | EXPAND_SZ | LINK => {
                let u = utf16_units(&self.data);
                let end = u.iter().position(|&c| c == 0).unwrap_or(u.len());
                Decoded::String(String::from_utf16_lossy(u.get(..end).unwrap_or(&[])))
            }
            MULTI_SZ => {
                let u = utf16_units(&self.data);
                let mut out = Vec::new();
                for s in u.split(|&c| c == 0) {
                    if s.is_empty() {
                        break;
                    }
                    out.push(String::from_utf16_lossy(s));
                }
                Decoded::MultiString(out)
            }
            DWORD if self.data.len() == 4 => Decoded::Dword(rd_u32(&self.data, 0).unwrap_or(0)),
            DWORD_BIG_ENDIAN if self.data.len() == 4 => Decoded::Dword(u32::from_be_bytes([
                self.data.first().copied().unwrap_or(0),
                self.data.get(1).copied().unwrap_or(0),
                self.data.get(2).copied().unwrap_or(0),
                self.data.get(3).copied().unwrap_or(0),
            ])),
            QWORD if self.data.len() == 8 => Decoded::Qword(rd_u64(&self.data, 0).unwrap_or(0)),
            _ => Decoded::Raw(self.data.clone()),
        }
    }
}
