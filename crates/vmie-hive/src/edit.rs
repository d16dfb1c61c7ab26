//! In-place edits of the hive buffer: cell allocation (first fit, split,
//! coalesce, new hbins), values, keys, security refcounts and the base block.
//!
//! An edit validates what it reads before it writes, but a hive corrupt in a
//! place only discovered half-way can leave the in-memory copy partially
//! edited: after an `Err` from an edit, discard the `Hive` (nothing has reached
//! the guest — the caller writes `bytes()` back only after success).

use std::collections::HashSet;

use crate::error::{HiveError, Result};
use crate::hive::{
    rd_u16, rd_u32, upcase, Hive, KeyId, Nk, Vk, BIG_DATA_SEGMENT, HBIN_START, NONE,
};

/// FILETIME of now.
pub(crate) fn now_filetime() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs().saturating_add(11_644_473_600))
        .saturating_mul(10_000_000)
        .saturating_add(u64::from(d.subsec_nanos() / 100))
}

/// lh hash: upcased UTF-16 code units, h = h*37 + c.
pub fn lh_hash(name: &str) -> u32 {
    upcase(name)
        .iter()
        .fold(0u32, |h, &c| h.wrapping_mul(37).wrapping_add(u32::from(c)))
}

/// lf hint: the first four characters of the name (0 past its end or above U+00FF).
pub fn lf_hint(name: &str) -> u32 {
    let mut b = [0u8; 4];
    for (slot, c) in b.iter_mut().zip(name.chars()) {
        *slot = u8::try_from(u32::from(c)).unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// Stored form of a name: (compressed?, bytes).
fn encode_name(name: &str) -> (bool, Vec<u8>) {
    if name.chars().all(|c| u32::from(c) <= 0xFF) {
        (
            true,
            name.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        )
    } else {
        (
            false,
            name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        )
    }
}

impl Hive {
    fn invalid(&self, path: &str, reason: impl Into<String>) -> HiveError {
        HiveError::Invalid {
            hive: self.opts.name.clone(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Refuse edits of a hive opened dirty with `ignore_dirty`, and of a hive
    /// that fails [`Hive::validate`] (run once, before the first edit: an
    /// edit that succeeds on a broken hive writes a hive hivex refuses).
    pub(crate) fn writable(&mut self, path: &str) -> Result<()> {
        if self.read_only {
            return Err(self.invalid(
                path,
                "hive was opened dirty without its logs (ignore_dirty): read-only",
            ));
        }
        if !self.validated {
            self.validate()?;
            self.validated = true;
        }
        Ok(())
    }

    pub(crate) fn wr(&mut self, pos: usize, bytes: &[u8]) -> Result<()> {
        let end = pos.checked_add(bytes.len());
        match end.and_then(|e| self.buf.get_mut(pos..e)) {
            Some(s) => {
                s.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(self.corrupt(0, format!("internal: write at {pos:#x} beyond the buffer"))),
        }
    }

    /// Write into the data of an allocated cell at `at` bytes from its start.
    pub(crate) fn wr_cell(&mut self, off: u32, at: usize, bytes: &[u8]) -> Result<()> {
        let (pos, abs, used) = self.cell_span(off)?;
        if !used || at.saturating_add(bytes.len()) > abs as usize - 4 {
            return Err(self.corrupt(off, "internal: write beyond a cell"));
        }
        self.modified = true;
        self.wr(pos + 4 + at, bytes)
    }

    fn wr_cell_u32(&mut self, off: u32, at: usize, v: u32) -> Result<()> {
        self.wr_cell(off, at, &v.to_le_bytes())
    }

    /// Update the base block after an edit: sequence numbers (bumped once per
    /// session, kept equal), timestamp, hive bins data size, checksum.
    pub(crate) fn touch(&mut self) -> Result<()> {
        if !self.bumped {
            let seq = rd_u32(&self.buf, 4).unwrap_or(0).wrapping_add(1);
            self.wr(4, &seq.to_le_bytes())?;
            self.wr(8, &seq.to_le_bytes())?;
            self.bumped = true;
        }
        let de = self.data_end;
        self.wr(0x28, &de.to_le_bytes())?;
        // hivex compares the stored checksum with the plain XOR, so avoid the
        // two XORs Windows stores as special values: a timestamp 1 tick later
        // changes the XOR.
        let mut stamp = now_filetime();
        let c = loop {
            self.wr(0xC, &stamp.to_le_bytes())?;
            let c = crate::hive::checksum(self.buf.get(0..0x200).unwrap_or(&[]));
            if c != 1 && c != 0xFFFF_FFFE {
                break c;
            }
            stamp = stamp.wrapping_add(1);
        };
        self.wr(0x1FC, &c.to_le_bytes())?;
        self.modified = true;
        Ok(())
    }

    /// Allocate a cell with room for `len` data bytes (first fit, split; new hbin when full).
    pub(crate) fn alloc(&mut self, len: usize) -> Result<u32> {
        let need = len
            .checked_add(4 + 7)
            .map(|n| (n & !7).max(16))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.limit("", "cell too large"))?;
        let found = self
            .free
            .iter()
            .find(|(_, &s)| s >= need)
            .map(|(&o, &s)| (o, s));
        let (off, fsize) = match found {
            Some(f) => f,
            None => {
                self.append_hbin(need)?;
                self.free
                    .iter()
                    .find(|(_, &s)| s >= need)
                    .map(|(&o, &s)| (o, s))
                    .ok_or_else(|| self.corrupt(0, "internal: no free cell after growing"))?
            }
        };
        self.free.remove(&off);
        let size = if fsize - need >= 16 {
            let rest = off + need;
            let rest_size = fsize - need;
            self.wr(
                HBIN_START + rest as usize,
                &(rest_size as i32).to_le_bytes(),
            )?;
            self.free.insert(rest, rest_size);
            need
        } else {
            fsize
        };
        let pos = HBIN_START + off as usize;
        self.wr(pos, &(-(size as i32)).to_le_bytes())?;
        let zeros = vec![0u8; size as usize - 4];
        self.wr(pos + 4, &zeros)?;
        self.modified = true;
        Ok(off)
    }

    fn append_hbin(&mut self, need: u32) -> Result<()> {
        let size = need
            .checked_add(0x20 + 4095)
            .map(|n| n & !4095)
            .ok_or_else(|| self.limit("", "hbin too large"))?;
        let start = self.data_end;
        let new_end = start
            .checked_add(size)
            .filter(|e| (*e as usize).saturating_add(HBIN_START) <= self.opts.max_hive_size)
            .ok_or_else(|| self.limit("", "hive would grow beyond max_hive_size"))?;
        self.buf.truncate(HBIN_START + start as usize);
        self.buf.resize(HBIN_START + new_end as usize, 0);
        let pos = HBIN_START + start as usize;
        self.wr(pos, b"hbin")?;
        self.wr(pos + 4, &start.to_le_bytes())?;
        self.wr(pos + 8, &size.to_le_bytes())?;
        self.wr(pos + 0x14, &now_filetime().to_le_bytes())?;
        let cell = start + 0x20;
        self.wr(
            HBIN_START + cell as usize,
            &((size - 0x20) as i32).to_le_bytes(),
        )?;
        self.hbins.insert(start, size);
        self.free.insert(cell, size - 0x20);
        self.data_end = new_end;
        Ok(())
    }

    /// Free an allocated cell, coalescing with free neighbours in the same hbin.
    pub(crate) fn free_cell(&mut self, off: u32) -> Result<()> {
        let (pos, abs, used) = self.cell_span(off)?;
        if !used {
            return Err(self.corrupt(off, "cell freed twice (shared by two records)"));
        }
        let (hstart, hsize) = self
            .hbins
            .range(..=off)
            .next_back()
            .map(|(a, b)| (*a, *b))
            .ok_or_else(|| self.corrupt(off, "cell outside any hbin"))?;
        let hend = hstart + hsize;
        let zeros = vec![0u8; abs as usize - 4];
        self.wr(pos + 4, &zeros)?;
        let mut start = off;
        let mut size = abs;
        let next = off + abs;
        if next < hend {
            if let Some(ns) = self.free.remove(&next) {
                size += ns;
            }
        }
        if let Some((&p, &ps)) = self.free.range(..off).next_back() {
            if p >= hstart && p + ps == off {
                self.free.remove(&p);
                start = p;
                size += ps;
            }
        }
        self.wr(HBIN_START + start as usize, &(size as i32).to_le_bytes())?;
        self.free.insert(start, size);
        self.modified = true;
        Ok(())
    }

    /// Store value data: (length field, data offset field).
    fn store_data(&mut self, data: &[u8]) -> Result<(u32, u32)> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|&l| l < 0x8000_0000 && data.len() <= self.opts.max_value_size)
            .ok_or_else(|| self.limit("", format!("value data of {} bytes", data.len())))?;
        if data.len() <= 4 {
            let mut b = [0u8; 4];
            for (d, s) in b.iter_mut().zip(data) {
                *d = *s;
            }
            return Ok((len | 0x8000_0000, u32::from_le_bytes(b)));
        }
        if self.minor >= 4 && data.len() > BIG_DATA_SEGMENT {
            let chunks: Vec<&[u8]> = data.chunks(BIG_DATA_SEGMENT).collect();
            let n = u16::try_from(chunks.len())
                .map_err(|_| self.limit("", "value data too large for big data"))?;
            let mut segs = Vec::with_capacity(chunks.len());
            for c in &chunks {
                let s = self.alloc(c.len())?;
                self.wr_cell(s, 0, c)?;
                segs.push(s);
            }
            let list = self.alloc(segs.len() * 4)?;
            let lb: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
            self.wr_cell(list, 0, &lb)?;
            let db = self.alloc(8)?;
            let mut hdr = Vec::with_capacity(8);
            hdr.extend_from_slice(b"db");
            hdr.extend_from_slice(&n.to_le_bytes());
            hdr.extend_from_slice(&list.to_le_bytes());
            self.wr_cell(db, 0, &hdr)?;
            return Ok((len, db));
        }
        let c = self.alloc(data.len())?;
        self.wr_cell(c, 0, data)?;
        Ok((len, c))
    }

    /// Free the data of a value (plain cell or big data).
    fn free_data(&mut self, vk: &Vk) -> Result<()> {
        let len = (vk.raw_len & 0x7FFF_FFFF) as usize;
        if vk.raw_len & 0x8000_0000 != 0 || len == 0 || vk.data_off == NONE {
            return Ok(());
        }
        let d = self.cell(vk.data_off)?;
        if self.minor >= 4 && len > BIG_DATA_SEGMENT && d.get(0..2) == Some(b"db") {
            let nseg = rd_u16(d, 2).unwrap_or(0) as usize;
            let list = rd_u32(d, 4).unwrap_or(NONE);
            let ld = self.cell(list)?;
            let segs: Vec<u32> = (0..nseg).filter_map(|i| rd_u32(ld, i * 4)).collect();
            let uniq: HashSet<u32> = segs.iter().copied().collect();
            if uniq.len() != segs.len() {
                return Err(self.corrupt(list, "big data segment listed twice"));
            }
            for s in segs {
                self.free_cell(s)?;
            }
            self.free_cell(list)?;
        }
        self.free_cell(vk.data_off)
    }

    fn set_timestamp(&mut self, nk: u32) -> Result<()> {
        self.wr_cell(nk, 4, &now_filetime().to_le_bytes())
    }

    /// Create or replace a value of the key at `path` (`""` = default value).
    pub fn set_value(&mut self, path: &str, name: &str, vtype: u32, data: &[u8]) -> Result<()> {
        self.writable(path)?;
        let nk = self.nk_path(path)?;
        self.set_value_nk(&nk, path, name, vtype, data)?;
        self.touch()
    }

    pub(crate) fn set_value_nk(
        &mut self,
        nk: &Nk,
        path: &str,
        name: &str,
        vtype: u32,
        data: &[u8],
    ) -> Result<()> {
        if name.encode_utf16().count() > 16383 {
            return Err(self.invalid(path, "value name longer than 16383 characters"));
        }
        let want = upcase(name);
        let offs = self.value_offsets(nk).map_err(|e| e.at_path(path))?;
        let mut existing = None;
        for o in &offs {
            let vk = self.vk(*o).map_err(|e| e.at_path(path))?;
            if upcase(&vk.name) == want {
                existing = Some(vk);
                break;
            }
        }
        let (raw_len, data_off) = self.store_data(data).map_err(|e| e.at_path(path))?;
        if let Some(vk) = existing {
            self.free_data(&vk).map_err(|e| e.at_path(path))?;
            self.wr_cell_u32(vk.off, 4, raw_len)?;
            self.wr_cell_u32(vk.off, 8, data_off)?;
            self.wr_cell_u32(vk.off, 0xC, vtype)?;
        } else {
            let (compressed, nb) = encode_name(name);
            let vk = self.alloc(0x14 + nb.len())?;
            let mut rec = Vec::with_capacity(0x14 + nb.len());
            rec.extend_from_slice(b"vk");
            rec.extend_from_slice(&(nb.len() as u16).to_le_bytes());
            rec.extend_from_slice(&raw_len.to_le_bytes());
            rec.extend_from_slice(&data_off.to_le_bytes());
            rec.extend_from_slice(&vtype.to_le_bytes());
            rec.extend_from_slice(&u16::from(compressed).to_le_bytes());
            rec.extend_from_slice(&[0, 0]);
            rec.extend_from_slice(&nb);
            self.wr_cell(vk, 0, &rec)?;
            let list = self.alloc((offs.len() + 1) * 4)?;
            let lb: Vec<u8> = offs
                .iter()
                .chain(std::iter::once(&vk))
                .flat_map(|o| o.to_le_bytes())
                .collect();
            self.wr_cell(list, 0, &lb)?;
            if nk.value_list != NONE && nk.value_count != 0 {
                self.free_cell(nk.value_list).map_err(|e| e.at_path(path))?;
            }
            let count = u32::try_from(offs.len() + 1).unwrap_or(u32::MAX);
            self.wr_cell_u32(nk.off, 0x24, count)?;
            self.wr_cell_u32(nk.off, 0x28, list)?;
            let name_bytes = u32::try_from(name.encode_utf16().count() * 2).unwrap_or(u32::MAX);
            let d = self.cell(nk.off)?;
            let max_name = rd_u32(d, 0x3C).unwrap_or(0);
            self.wr_cell_u32(nk.off, 0x3C, max_name.max(name_bytes))?;
        }
        let d = self.cell(nk.off)?;
        let max_data = rd_u32(d, 0x40).unwrap_or(0);
        self.wr_cell_u32(nk.off, 0x40, max_data.max(raw_len & 0x7FFF_FFFF))?;
        self.set_timestamp(nk.off)
    }

    /// Delete a value; error if it does not exist.
    pub fn delete_value(&mut self, path: &str, name: &str) -> Result<()> {
        self.writable(path)?;
        let nk = self.nk_path(path)?;
        if !self.delete_value_nk(&nk, path, name)? {
            return Err(HiveError::ValueNotFound {
                hive: self.opts.name.clone(),
                path: path.to_string(),
                name: name.to_string(),
            });
        }
        self.touch()
    }

    /// Delete a value if present; returns whether it was.
    pub(crate) fn delete_value_nk(&mut self, nk: &Nk, path: &str, name: &str) -> Result<bool> {
        let want = upcase(name);
        let offs = self.value_offsets(nk).map_err(|e| e.at_path(path))?;
        let mut idx = None;
        for (i, o) in offs.iter().enumerate() {
            let vk = self.vk(*o).map_err(|e| e.at_path(path))?;
            if upcase(&vk.name) == want {
                idx = Some((i, vk));
                break;
            }
        }
        let Some((i, vk)) = idx else { return Ok(false) };
        self.free_data(&vk).map_err(|e| e.at_path(path))?;
        self.free_cell(vk.off).map_err(|e| e.at_path(path))?;
        let rest: Vec<u32> = offs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| *o)
            .collect();
        if rest.is_empty() {
            self.free_cell(nk.value_list).map_err(|e| e.at_path(path))?;
            self.wr_cell_u32(nk.off, 0x28, NONE)?;
        } else {
            let lb: Vec<u8> = rest.iter().flat_map(|o| o.to_le_bytes()).collect();
            self.wr_cell(nk.value_list, 0, &lb)?;
        }
        self.wr_cell_u32(nk.off, 0x24, u32::try_from(rest.len()).unwrap_or(0))?;
        self.set_timestamp(nk.off)?;
        Ok(true)
    }

    /// Create a subkey `name` under the key at `parent`; error if it exists.
    pub fn create_key(&mut self, parent: &str, name: &str) -> Result<KeyId> {
        self.writable(parent)?;
        let p = self.nk_path(parent)?;
        let k = self.create_key_nk(&p, parent, name)?;
        self.touch()?;
        Ok(k)
    }

    /// Open the key at `path`, creating every missing component.
    pub fn ensure_key(&mut self, path: &str) -> Result<KeyId> {
        self.writable(path)?;
        let mut cur = self.nk(self.root)?;
        let mut cur_path = String::new();
        for comp in crate::hive::split_path(path) {
            let next = match self.child(&cur, comp).map_err(|e| e.at_path(path))? {
                Some(n) => n,
                None => {
                    let k = self.create_key_nk(&cur, &cur_path, comp)?;
                    self.touch()?;
                    self.nk(k.0)?
                }
            };
            cur_path.push('\\');
            cur_path.push_str(&next.name);
            cur = next;
        }
        Ok(KeyId(cur.off))
    }

    pub(crate) fn create_key_nk(&mut self, parent: &Nk, ppath: &str, name: &str) -> Result<KeyId> {
        if name.is_empty() || name.contains('\\') || name.encode_utf16().count() > 255 {
            return Err(self.invalid(ppath, format!("invalid key name {name:?}")));
        }
        if self
            .child(parent, name)
            .map_err(|e| e.at_path(ppath))?
            .is_some()
        {
            return Err(self.invalid(ppath, format!("subkey {name:?} already exists")));
        }
        // Validate the parent's security cell before allocating anything.
        let sk_ok = self
            .cell(parent.sk)
            .map(|d| d.get(0..2) == Some(b"sk"))
            .unwrap_or(false);
        if !sk_ok {
            return Err(self
                .corrupt(parent.sk, "parent's security (sk) cell is invalid")
                .at_path(ppath));
        }
        let (compressed, nb) = encode_name(name);
        let nk = self.alloc(0x4C + nb.len())?;
        let mut rec = vec![0u8; 0x4C];
        rec.splice(0..2, *b"nk");
        let put = |rec: &mut Vec<u8>, at: usize, v: &[u8]| {
            if let Some(s) = rec.get_mut(at..at + v.len()) {
                s.copy_from_slice(v);
            }
        };
        put(
            &mut rec,
            2,
            &(if compressed { 0x20u16 } else { 0 }).to_le_bytes(),
        );
        put(&mut rec, 4, &now_filetime().to_le_bytes());
        put(&mut rec, 0x10, &parent.off.to_le_bytes());
        put(&mut rec, 0x1C, &NONE.to_le_bytes());
        put(&mut rec, 0x20, &NONE.to_le_bytes());
        put(&mut rec, 0x28, &NONE.to_le_bytes());
        put(&mut rec, 0x2C, &parent.sk.to_le_bytes());
        put(&mut rec, 0x30, &NONE.to_le_bytes());
        put(&mut rec, 0x48, &(nb.len() as u16).to_le_bytes());
        rec.extend_from_slice(&nb);
        self.wr_cell(nk, 0, &rec)?;
        let rc = rd_u32(self.cell(parent.sk)?, 0xC)
            .unwrap_or(0)
            .saturating_add(1);
        self.wr_cell_u32(parent.sk, 0xC, rc)?;
        self.insert_subkey(parent, nk, name)
            .map_err(|e| e.at_path(ppath))?;
        let d = self.cell(parent.off)?;
        let cnt = rd_u32(d, 0x14).unwrap_or(0).saturating_add(1);
        let maxn = rd_u32(d, 0x34).unwrap_or(0);
        let nlen = u32::try_from(name.encode_utf16().count() * 2).unwrap_or(0);
        let newmax = (maxn & 0xFFFF_0000) | (maxn & 0xFFFF).max(nlen);
        self.wr_cell_u32(parent.off, 0x14, cnt)?;
        self.wr_cell_u32(parent.off, 0x34, newmax)?;
        self.set_timestamp(parent.off)?;
        Ok(KeyId(nk))
    }

    /// Rebuild one leaf list with an extra entry at its sorted position; returns the new leaf.
    fn leaf_with(&mut self, leaf: Option<u32>, nk: u32, name: &str) -> Result<u32> {
        let (sig, mut entries): ([u8; 2], Vec<(u32, u32)>) = match leaf {
            None => (if self.minor >= 5 { *b"lh" } else { *b"lf" }, Vec::new()),
            Some(l) => {
                let d = self.cell(l)?;
                let sig = [
                    d.first().copied().unwrap_or(0),
                    d.get(1).copied().unwrap_or(0),
                ];
                let stride = if &sig == b"li" { 4 } else { 8 };
                let n = rd_u16(d, 2).unwrap_or(0) as usize;
                let mut e = Vec::with_capacity(n + 1);
                for i in 0..n {
                    let o = rd_u32(d, 4 + stride * i)
                        .ok_or_else(|| self.corrupt(l, "list count beyond its cell"))?;
                    let h = if stride == 8 {
                        rd_u32(d, 8 + stride * i).unwrap_or(0)
                    } else {
                        0
                    };
                    e.push((o, h));
                }
                (sig, e)
            }
        };
        let want = upcase(name);
        let mut pos = entries.len();
        for (i, (o, _)) in entries.iter().enumerate() {
            if upcase(&self.nk(*o)?.name) > want {
                pos = i;
                break;
            }
        }
        let hash = match &sig {
            b"lh" => lh_hash(name),
            b"lf" => lf_hint(name),
            _ => 0,
        };
        entries.insert(pos, (nk, hash));
        let n = u16::try_from(entries.len())
            .map_err(|_| self.limit("", "subkey list full (65535 entries)"))?;
        let stride = if &sig == b"li" { 4 } else { 8 };
        let mut rec = Vec::with_capacity(4 + stride * entries.len());
        rec.extend_from_slice(&sig);
        rec.extend_from_slice(&n.to_le_bytes());
        for (o, h) in &entries {
            rec.extend_from_slice(&o.to_le_bytes());
            if stride == 8 {
                rec.extend_from_slice(&h.to_le_bytes());
            }
        }
        let new = self.alloc(rec.len())?;
        self.wr_cell(new, 0, &rec)?;
        if let Some(l) = leaf {
            self.free_cell(l)?;
        }
        Ok(new)
    }

    fn insert_subkey(&mut self, parent: &Nk, nk: u32, name: &str) -> Result<()> {
        if parent.subkey_count == 0 || parent.subkey_list == NONE {
            // No list (or a stale one with a zero count, left alone): start a new leaf.
            let new = self.leaf_with(None, nk, name)?;
            return self.wr_cell_u32(parent.off, 0x1C, new);
        }
        let d = self.cell(parent.subkey_list)?;
        if d.get(0..2) == Some(b"ri") {
            let leaves = self.leaves(parent.subkey_list)?;
            let want = upcase(name);
            let mut pick = leaves.len().saturating_sub(1);
            for (i, l) in leaves.iter().enumerate() {
                let e = self.leaf_entries(*l)?;
                if let Some(last) = e.last() {
                    if upcase(&self.nk(*last)?.name) >= want {
                        pick = i;
                        break;
                    }
                }
            }
            let leaf = *leaves
                .get(pick)
                .ok_or_else(|| self.corrupt(parent.subkey_list, "empty ri list"))?;
            let new = self.leaf_with(Some(leaf), nk, name)?;
            self.wr_cell_u32(parent.subkey_list, 4 + 4 * pick, new)
        } else {
            let new = self.leaf_with(Some(parent.subkey_list), nk, name)?;
            self.wr_cell_u32(parent.off, 0x1C, new)
        }
    }

    /// Delete the key at `path` and everything below it.
    pub fn delete_key(&mut self, path: &str) -> Result<()> {
        self.writable(path)?;
        let nk = self.nk_path(path)?;
        if nk.off == self.root {
            return Err(self.invalid(path, "the root key cannot be deleted"));
        }
        let parent = self.nk(nk.parent).map_err(|e| e.at_path(path))?;
        if !self
            .subkey_offsets(&parent)
            .map_err(|e| e.at_path(path))?
            .contains(&nk.off)
        {
            return Err(self
                .corrupt(nk.parent, "key is not listed by its parent")
                .at_path(path));
        }
        let mut seen = HashSet::new();
        self.delete_subtree(nk.off, 0, &mut seen)
            .map_err(|e| e.at_path(path))?;
        self.remove_subkey(&parent, nk.off)
            .map_err(|e| e.at_path(path))?;
        self.touch()
    }

    fn delete_subtree(&mut self, off: u32, depth: usize, seen: &mut HashSet<u32>) -> Result<()> {
        if depth > self.opts.max_depth {
            return Err(self.limit("", "key nesting deeper than max_depth"));
        }
        if !seen.insert(off) || seen.len() > self.opts.max_subkeys_visited {
            return Err(self.corrupt(off, "key reached twice (cycle) or too many keys"));
        }
        let nk = self.nk(off)?;
        for c in self.subkey_offsets(&nk)? {
            self.delete_subtree(c, depth + 1, seen)?;
        }
        if nk.subkey_count != 0 && nk.subkey_list != NONE {
            let d = self.cell(nk.subkey_list)?;
            if d.get(0..2) == Some(b"ri") {
                for l in self.leaves(nk.subkey_list)? {
                    self.free_cell(l)?;
                }
            }
            self.free_cell(nk.subkey_list)?;
        }
        for v in self.value_offsets(&nk)? {
            let vk = self.vk(v)?;
            self.free_data(&vk)?;
            self.free_cell(v)?;
        }
        if nk.value_count != 0 && nk.value_list != NONE {
            self.free_cell(nk.value_list)?;
        }
        if nk.class_off != NONE && nk.class_len != 0 {
            self.free_cell(nk.class_off)?;
        }
        self.sk_release(nk.sk)?;
        self.free_cell(off)
    }

    /// Decrement a security cell's reference count; at zero unlink and free it.
    fn sk_release(&mut self, sk: u32) -> Result<()> {
        let d = self.cell(sk)?;
        if d.get(0..2) != Some(b"sk") {
            return Err(self.corrupt(sk, "expected a security (sk) record"));
        }
        let flink = rd_u32(d, 4).unwrap_or(NONE);
        let blink = rd_u32(d, 8).unwrap_or(NONE);
        let rc = rd_u32(d, 0xC).unwrap_or(0);
        if rc > 1 {
            return self.wr_cell_u32(sk, 0xC, rc - 1);
        }
        if flink != sk && blink != sk {
            for (o, at, v) in [(blink, 4usize, flink), (flink, 8usize, blink)] {
                if self
                    .cell(o)
                    .map(|d| d.get(0..2) == Some(b"sk"))
                    .unwrap_or(false)
                {
                    self.wr_cell_u32(o, at, v)?;
                } else {
                    return Err(self.corrupt(o, "security (sk) list link is not an sk record"));
                }
            }
        }
        self.free_cell(sk)
    }

    fn remove_subkey(&mut self, parent: &Nk, nk: u32) -> Result<()> {
        let list = parent.subkey_list;
        let is_ri = self.cell(list)?.get(0..2) == Some(b"ri");
        let leaves = self.leaves(list)?;
        for (li, leaf) in leaves.iter().enumerate() {
            let entries = self.leaf_entries(*leaf)?;
            let Some(i) = entries.iter().position(|&o| o == nk) else {
                continue;
            };
            let d = self.cell(*leaf)?;
            let stride = if d.get(0..2) == Some(b"li") { 4 } else { 8 };
            let n = entries.len();
            let mut body = d
                .get(4..4 + stride * n)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| self.corrupt(*leaf, "subkey list count beyond its cell"))?;
            if body.len() < stride * (i + 1) {
                return Err(self.corrupt(*leaf, "subkey list count beyond its cell"));
            }
            body.drain(stride * i..stride * (i + 1));
            if n == 1 {
                self.free_cell(*leaf)?;
                if is_ri {
                    let rest: Vec<u32> = leaves
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != li)
                        .map(|(_, l)| *l)
                        .collect();
                    if rest.is_empty() {
                        self.free_cell(list)?;
                        self.wr_cell_u32(parent.off, 0x1C, NONE)?;
                    } else {
                        let mut rec = Vec::new();
                        rec.extend_from_slice(b"ri");
                        rec.extend_from_slice(&(rest.len() as u16).to_le_bytes());
                        for l in rest {
                            rec.extend_from_slice(&l.to_le_bytes());
                        }
                        self.wr_cell(list, 0, &rec)?;
                    }
                } else {
                    self.wr_cell_u32(parent.off, 0x1C, NONE)?;
                }
            } else {
                self.wr_cell(*leaf, 2, &((n - 1) as u16).to_le_bytes())?;
                self.wr_cell(*leaf, 4, &body)?;
            }
            let cnt = rd_u32(self.cell(parent.off)?, 0x14)
                .unwrap_or(1)
                .saturating_sub(1);
            self.wr_cell_u32(parent.off, 0x14, cnt)?;
            return self.set_timestamp(parent.off);
        }
        Err(self.corrupt(list, "key not found in its parent's subkey list"))
    }
}
