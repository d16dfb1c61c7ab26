//! One operation's view of the volume. Reading and writing go through a
//! [`Tx`]: FAT bytes are read in 4 KiB chunks on first use (a write
//! transaction compares each chunk with the same bytes of every other FAT
//! copy as it loads it), directories are read whole into memory, and every
//! change (FAT entries, directory slots, file clusters, FSInfo) is staged
//! here. [`Tx::commit`] writes them only after the whole operation
//! succeeded and the fatfs crate read the staged result back as expected
//! (`verify`), so a refusal, a NoSpace or a disagreement writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use vmie_disk::Device;
use vmie_guestfs::{FsError, GuestPath, Timestamp};

use crate::bpb::{FatKind, Geo};
use crate::dir::{self, Entry, DIR_MAX_BYTES};
use crate::verify::{self, Expect};

/// FAT bytes are cached in chunks of this size.
const CHUNK: u64 = 4096;

/// A directory held in memory.
#[derive(Debug)]
pub(crate) struct DirBuf {
    /// Its clusters; empty for the FAT12/16 fixed root.
    pub clusters: Vec<u32>,
    pub bytes: Vec<u8>,
    /// The bytes as read (new clusters are not in it).
    orig: Vec<u8>,
}

/// What a path leads to.
#[derive(Debug)]
pub(crate) struct Found {
    /// The parent directory's key.
    pub parent: u32,
    /// The keys of every directory walked, root first (parent last).
    pub keys: Vec<u32>,
    /// The entry, if the last component exists.
    pub entry: Option<Entry>,
}

#[derive(Debug)]
pub(crate) struct Tx<'a> {
    pub g: &'a Geo,
    dev: &'a dyn Device,
    pub loc: &'a str,
    write: bool,
    max_entries: usize,
    /// The FAT copy read.
    copy: u32,
    fat: BTreeMap<u64, Vec<u8>>,
    fat_dirty: BTreeSet<u64>,
    data: BTreeMap<u64, Vec<u8>>,
    dirs: BTreeMap<u32, DirBuf>,
    hint: u32,
    allocated: u64,
    freed: u64,
    last_alloc: Option<u32>,
    /// The FSInfo sector, when it is valid.
    fsinfo: Option<Vec<u8>>,
    /// Why the independent read-back cannot run on this volume, if it
    /// cannot (see `verify::blind_spot`).
    gap: Option<String>,
    pub now: Timestamp,
}

/// The FSInfo sector of a FAT32 volume when it carries its three
/// signatures.
pub(crate) fn read_fsinfo(g: &Geo, dev: &dyn Device) -> Result<Option<Vec<u8>>, FsError> {
    let Some(s) = g.fsinfo else {
        return Ok(None);
    };
    let mut b = vec![0u8; g.bps as usize];
    dev.read_at(s * u64::from(g.bps), &mut b)?;
    let le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if le(0) == 0x4161_5252 && le(484) == 0x6141_7272 && le(508) == 0xAA55_0000 {
        Ok(Some(b))
    } else {
        Ok(None)
    }
}

/// A test hook's change to the staged writes.
#[cfg(test)]
pub(crate) type Tamper = Box<dyn FnOnce(&mut Vec<(u64, Vec<u8>)>)>;

#[cfg(test)]
thread_local! {
    /// Test hook: changes the staged writes between the writer and the
    /// independent read-back, to prove the read-back refuses.
    pub(crate) static TAMPER: std::cell::RefCell<Option<Tamper>> =
        std::cell::RefCell::new(None);
}

impl<'a> Tx<'a> {
    pub fn corrupt(&self, place: impl Into<String>, detail: impl Into<String>) -> FsError {
        FsError::Corrupt {
            fs: self.loc.to_string(),
            place: place.into(),
            detail: detail.into(),
        }
    }

    pub fn nospace(&self, what: impl Into<String>) -> FsError {
        FsError::NoSpace {
            fs: self.loc.to_string(),
            what: what.into(),
        }
    }

    /// A read-only view.
    pub fn read(g: &'a Geo, dev: &'a dyn Device, loc: &'a str, max_entries: usize) -> Self {
        Self {
            g,
            dev,
            loc,
            write: false,
            max_entries,
            copy: g.active_fat.unwrap_or(0),
            fat: BTreeMap::new(),
            fat_dirty: BTreeSet::new(),
            data: BTreeMap::new(),
            dirs: BTreeMap::new(),
            hint: 2,
            allocated: 0,
            freed: 0,
            last_alloc: None,
            fsinfo: None,
            gap: None,
            now: Timestamp::default(),
        }
    }

    /// A write transaction: refuses a volume marked dirty or with hard
    /// errors, and FAT32 with FAT mirroring disabled.
    pub fn begin(
        g: &'a Geo,
        dev: &'a dyn Device,
        loc: &'a str,
        max_entries: usize,
        now: Timestamp,
    ) -> Result<Self, FsError> {
        let mut tx = Self::read(g, dev, loc, max_entries);
        tx.write = true;
        tx.now = now;
        let refuse = |why: String| FsError::Unsupported {
            fs: loc.to_string(),
            op: "writing".into(),
            why,
        };
        if g.active_fat.is_some() {
            return Err(refuse(
                "FAT32 mirroring is disabled (one active FAT); we keep every copy equal".into(),
            ));
        }
        let mut bs = vec![0u8; 512];
        dev.read_at(0, &mut bs)?;
        if bs[g.state_byte] & 1 != 0 {
            return Err(refuse(format!(
                "the volume is marked dirty (boot sector byte {} bit 0): it was not cleanly unmounted; run fsck.fat first",
                g.state_byte
            )));
        }
        let f1 = tx.get(1)?;
        let (clean, hard) = match g.kind {
            FatKind::Fat12 => (true, true),
            FatKind::Fat16 => (f1 & 0x8000 != 0, f1 & 0x4000 != 0),
            FatKind::Fat32 => (f1 & 0x0800_0000 != 0, f1 & 0x0400_0000 != 0),
        };
        if !clean {
            return Err(refuse(format!(
                "the volume is marked dirty (FAT[1] = {f1:#x}, clean-shutdown bit clear): run fsck.fat first"
            )));
        }
        if !hard {
            return Err(refuse(format!(
                "the volume recorded a disk error (FAT[1] = {f1:#x}, hard-error bit clear): run fsck.fat first"
            )));
        }
        if let Some(b) = read_fsinfo(g, dev)? {
            let next = u32::from_le_bytes([b[492], b[493], b[494], b[495]]);
            if g.valid_cluster(next) {
                tx.hint = next;
            }
            tx.fsinfo = Some(b);
        }
        tx.gap = verify::blind_spot(g, &bs, tx.fsinfo.is_some());
        Ok(tx)
    }

    // ---- FAT ----

    fn chunk(&mut self, i: u64) -> Result<&mut Vec<u8>, FsError> {
        if !self.fat.contains_key(&i) {
            let start = i * CHUNK;
            let len = CHUNK.min(self.g.fat_bytes().saturating_sub(start)) as usize;
            let mut b = vec![0u8; len];
            self.dev
                .read_at(self.g.fat_offset(self.copy) + start, &mut b)?;
            if self.write {
                let mut o = vec![0u8; len];
                for k in (0..self.g.nfats).filter(|&k| k != self.copy) {
                    self.dev.read_at(self.g.fat_offset(k) + start, &mut o)?;
                    if o != b {
                        return Err(self.corrupt(
                            format!("FAT copy {} (bytes {start}..{} of the FAT)", k + 1, start + len as u64),
                            format!(
                                "differs from FAT copy {} where this operation reads or changes entries; run fsck.fat",
                                self.copy + 1
                            ),
                        ));
                    }
                }
            }
            self.fat.insert(i, b);
        }
        self.fat.get_mut(&i).ok_or_else(|| FsError::Corrupt {
            fs: self.loc.to_string(),
            place: "FAT".into(),
            detail: "internal: chunk not loaded".into(),
        })
    }

    fn byte(&mut self, off: u64) -> Result<u8, FsError> {
        if off >= self.g.fat_bytes() {
            return Err(self.corrupt("FAT", format!("entry byte {off} past the FAT")));
        }
        let c = self.chunk(off / CHUNK)?;
        Ok(c[(off % CHUNK) as usize])
    }

    fn set_byte(&mut self, off: u64, v: u8) -> Result<(), FsError> {
        if off >= self.g.fat_bytes() {
            return Err(self.corrupt("FAT", format!("entry byte {off} past the FAT")));
        }
        let i = off / CHUNK;
        let c = self.chunk(i)?;
        c[(off % CHUNK) as usize] = v;
        self.fat_dirty.insert(i);
        Ok(())
    }

    /// FAT entry `c` (masked to 28 bits on FAT32).
    pub fn get(&mut self, c: u32) -> Result<u32, FsError> {
        let c64 = u64::from(c);
        Ok(match self.g.kind {
            FatKind::Fat12 => {
                let off = c64 + c64 / 2;
                let v = u32::from(self.byte(off)?) | u32::from(self.byte(off + 1)?) << 8;
                if c & 1 == 1 {
                    v >> 4
                } else {
                    v & 0xFFF
                }
            }
            FatKind::Fat16 => {
                let off = c64 * 2;
                u32::from(self.byte(off)?) | u32::from(self.byte(off + 1)?) << 8
            }
            FatKind::Fat32 => {
                let off = c64 * 4;
                let mut v = 0u32;
                for k in 0..4 {
                    v |= u32::from(self.byte(off + k)?) << (8 * k);
                }
                v & 0x0FFF_FFFF
            }
        })
    }

    /// Set FAT entry `c` (the top 4 bits of a FAT32 entry are kept).
    pub fn set(&mut self, c: u32, v: u32) -> Result<(), FsError> {
        let c64 = u64::from(c);
        match self.g.kind {
            FatKind::Fat12 => {
                let off = c64 + c64 / 2;
                let (b0, b1) = (self.byte(off)?, self.byte(off + 1)?);
                let (n0, n1) = if c & 1 == 1 {
                    ((b0 & 0x0F) | ((v << 4) as u8 & 0xF0), (v >> 4) as u8)
                } else {
                    (v as u8, (b1 & 0xF0) | ((v >> 8) as u8 & 0x0F))
                };
                self.set_byte(off, n0)?;
                self.set_byte(off + 1, n1)?;
            }
            FatKind::Fat16 => {
                let off = c64 * 2;
                self.set_byte(off, v as u8)?;
                self.set_byte(off + 1, (v >> 8) as u8)?;
            }
            FatKind::Fat32 => {
                let off = c64 * 4;
                let top = self.byte(off + 3)? & 0xF0;
                let v = v & 0x0FFF_FFFF;
                self.set_byte(off, v as u8)?;
                self.set_byte(off + 1, (v >> 8) as u8)?;
                self.set_byte(off + 2, (v >> 16) as u8)?;
                self.set_byte(off + 3, top | (v >> 24) as u8)?;
            }
        }
        Ok(())
    }

    /// The chain from `start`: at most `max` clusters, every one a data
    /// cluster, no loop, ending in an end-of-chain mark. `place` names it.
    pub fn chain(&mut self, start: u32, max: u64, place: &str) -> Result<Vec<u32>, FsError> {
        let g = self.g;
        if !g.valid_cluster(start) {
            return Err(self.corrupt(
                place,
                format!(
                    "first cluster {start} outside the data area (clusters 2..={})",
                    g.max_cluster()
                ),
            ));
        }
        let mut out = vec![start];
        let mut seen = BTreeSet::from([start]);
        let mut c = start;
        loop {
            let n = self.get(c)?;
            if n >= g.kind.eoc_min() {
                return Ok(out);
            }
            if n == g.kind.bad() {
                return Err(self.corrupt(place, format!("cluster {c} links to a bad-cluster mark")));
            }
            if n < 2 {
                return Err(self.corrupt(
                    place,
                    format!("cluster {c} links to {n}: a free cluster inside a chain"),
                ));
            }
            if n > g.max_cluster() {
                return Err(self.corrupt(
                    place,
                    format!(
                        "cluster {c} links to {n}, past the last cluster {}",
                        g.max_cluster()
                    ),
                ));
            }
            if !seen.insert(n) {
                return Err(self.corrupt(
                    place,
                    format!("cluster chain loops: cluster {c} links back to {n}"),
                ));
            }
            if out.len() as u64 >= max {
                return Err(
                    self.corrupt(place, format!("cluster chain longer than {max} clusters"))
                );
            }
            out.push(n);
            c = n;
        }
    }

    /// The chain of a file entry: exactly as many clusters as its size
    /// needs (none for an empty file).
    pub fn file_chain(&mut self, e: &Entry, path: &GuestPath) -> Result<Vec<u32>, FsError> {
        let size = u64::from(e.size());
        let start = e.cluster(self.g.kind);
        let need = size.div_ceil(u64::from(self.g.cs));
        if need == 0 {
            if start != 0 {
                return Err(self.corrupt(
                    path.to_string(),
                    format!("an empty file with first cluster {start}"),
                ));
            }
            return Ok(Vec::new());
        }
        let ch = self.chain(start, need, &path.to_string())?;
        if (ch.len() as u64) < need {
            return Err(self.corrupt(
                path.to_string(),
                format!(
                    "{} clusters in the chain, {size} bytes need {need}",
                    ch.len()
                ),
            ));
        }
        Ok(ch)
    }

    /// The most clusters a directory may have.
    pub fn dir_max_clusters(&self) -> u64 {
        (DIR_MAX_BYTES as u64 / u64::from(self.g.cs)).max(1)
    }

    /// Allocate one free cluster, marked end of chain.
    pub fn alloc(&mut self) -> Result<u32, FsError> {
        let max = self.g.max_cluster();
        let start = if self.g.valid_cluster(self.hint) {
            self.hint
        } else {
            2
        };
        let mut c = start;
        for _ in 0..self.g.clusters {
            if self.get(c)? == 0 {
                let eoc = self.g.kind.eoc();
                self.set(c, eoc)?;
                self.allocated += 1;
                self.last_alloc = Some(c);
                self.hint = if c >= max { 2 } else { c + 1 };
                return Ok(c);
            }
            c = if c >= max { 2 } else { c + 1 };
        }
        Err(self.nospace(format!("no free cluster among {}", self.g.clusters)))
    }

    /// Mark `clusters` free.
    pub fn free(&mut self, clusters: &[u32]) -> Result<(), FsError> {
        for &c in clusters {
            self.set(c, 0)?;
            self.freed += 1;
        }
        Ok(())
    }

    /// Make `old` a chain of `n` clusters: keep its first ones, free the
    /// rest or allocate more.
    pub fn resize(&mut self, old: &[u32], n: usize) -> Result<Vec<u32>, FsError> {
        let mut ch: Vec<u32> = old[..n.min(old.len())].to_vec();
        if n < old.len() {
            self.free(&old[n..])?;
            if let Some(&last) = ch.last() {
                let eoc = self.g.kind.eoc();
                self.set(last, eoc)?;
            }
        }
        while ch.len() < n {
            let c = self.alloc()?;
            if let Some(&last) = ch.last() {
                self.set(last, c)?;
            }
            ch.push(c);
        }
        Ok(ch)
    }

    /// Stage `data` into `chain` (the last cluster padded with zeros).
    pub fn write_data(&mut self, chain: &[u32], data: &[u8]) {
        let cs = self.g.cs as usize;
        let mut i = 0;
        while i < chain.len() {
            let mut j = i + 1;
            while j < chain.len() && chain[j] == chain[j - 1] + 1 {
                j += 1;
            }
            let from = (i * cs).min(data.len());
            let to = (j * cs).min(data.len());
            let mut buf = vec![0u8; (j - i) * cs];
            buf[..to - from].copy_from_slice(&data[from..to]);
            self.data.insert(self.g.cluster_offset(chain[i]), buf);
            i = j;
        }
    }

    /// Read the clusters of `chain` into the first `size` bytes.
    pub fn read_data(&mut self, chain: &[u32], size: usize) -> Result<Vec<u8>, FsError> {
        let cs = self.g.cs as usize;
        let mut out = vec![0u8; size];
        let mut i = 0;
        while i < chain.len() && i * cs < size {
            let mut j = i + 1;
            while j < chain.len() && chain[j] == chain[j - 1] + 1 {
                j += 1;
            }
            let from = i * cs;
            let to = (j * cs).min(size);
            self.dev
                .read_at(self.g.cluster_offset(chain[i]), &mut out[from..to])?;
            i = j;
        }
        Ok(out)
    }

    // ---- directories ----

    /// The directory with key `key` (its first cluster; 0 for the
    /// FAT12/16 fixed root), read on first use.
    pub fn dir(&mut self, key: u32, place: &str) -> Result<&mut DirBuf, FsError> {
        if !self.dirs.contains_key(&key) {
            let d = if key == 0 && self.g.kind != FatKind::Fat32 {
                let mut b = vec![0u8; self.g.root_entries as usize * 32];
                self.dev.read_at(self.g.root_offset(), &mut b)?;
                DirBuf {
                    clusters: Vec::new(),
                    orig: b.clone(),
                    bytes: b,
                }
            } else {
                let max = self.dir_max_clusters();
                let ch = self.chain(key, max, place).map_err(|e| match e {
                    FsError::Corrupt { fs, place, detail }
                        if detail.starts_with("cluster chain longer") =>
                    {
                        FsError::Corrupt {
                            fs,
                            place,
                            detail: format!(
                                "directory longer than {} entries ({detail})",
                                DIR_MAX_BYTES / 32
                            ),
                        }
                    }
                    e => e,
                })?;
                let b = self.read_data(&ch, ch.len() * self.g.cs as usize)?;
                DirBuf {
                    clusters: ch,
                    orig: b.clone(),
                    bytes: b,
                }
            };
            self.dirs.insert(key, d);
        }
        self.dirs.get_mut(&key).ok_or_else(|| FsError::Corrupt {
            fs: self.loc.to_string(),
            place: place.to_string(),
            detail: "internal: directory not loaded".into(),
        })
    }

    /// A new, empty directory of one fresh cluster.
    pub fn new_dir(&mut self, c: u32) {
        let cs = self.g.cs as usize;
        self.dirs.insert(
            c,
            DirBuf {
                clusters: vec![c],
                bytes: vec![0u8; cs],
                orig: Vec::new(),
            },
        );
    }

    /// The live entries of directory `key`.
    pub fn entries(&mut self, key: u32, place: &str) -> Result<Vec<Entry>, FsError> {
        let max = self.max_entries;
        let d = self.dir(key, place)?;
        let r = dir::parse(&d.bytes, max);
        r.map_err(|detail| self.corrupt(place, detail))
    }

    /// The directory key of a directory entry.
    pub fn key_of(&self, e: &Entry, place: &str) -> Result<u32, FsError> {
        let c = e.cluster(self.g.kind);
        if c == 0 && self.g.kind == FatKind::Fat32 {
            // Not valid for a subdirectory.
            return Err(self.corrupt(place, "a directory entry with first cluster 0"));
        }
        if !self.g.valid_cluster(c) {
            return Err(self.corrupt(
                place,
                format!("a directory whose first cluster {c} is outside the data area"),
            ));
        }
        Ok(c)
    }

    /// Walk `path` (already resolved: no `.`/`..`) from the root.
    pub fn walk(&mut self, path: &GuestPath) -> Result<Found, FsError> {
        let comps = path.components();
        let mut key = self.g.root_key();
        let mut keys = vec![key];
        let mut cur = GuestPath::root();
        for (i, comp) in comps.iter().enumerate() {
            let name = String::from_utf8_lossy(comp);
            let place = cur.to_string();
            let ents = self.entries(key, &place)?;
            let found = ents.into_iter().find(|e| e.matches(&name));
            cur = cur.join(comp);
            if i + 1 == comps.len() {
                return Ok(Found {
                    parent: key,
                    keys,
                    entry: found,
                });
            }
            let Some(e) = found else {
                return Err(FsError::NotFound {
                    fs: self.loc.to_string(),
                    path: cur.to_string(),
                });
            };
            if !e.is_dir() {
                return Err(FsError::NotADirectory {
                    fs: self.loc.to_string(),
                    path: cur.to_string(),
                });
            }
            key = self.key_of(&e, &cur.to_string())?;
            if keys.contains(&key) {
                return Err(self.corrupt(
                    cur.to_string(),
                    format!(
                        "directory cluster {key} is also one of its ancestors: a directory loop"
                    ),
                ));
            }
            keys.push(key);
        }
        Ok(Found {
            parent: key,
            keys,
            entry: None,
        })
    }

    /// Mark an entry's slots deleted.
    pub fn delete_slots(&mut self, key: u32, e: &Entry, place: &str) -> Result<(), FsError> {
        let d = self.dir(key, place)?;
        for s in e.first..=e.slot {
            d.bytes[s * 32] = 0xE5;
        }
        Ok(())
    }

    /// Write slot `slot` of directory `key`.
    pub fn put_slot(
        &mut self,
        key: u32,
        slot: usize,
        raw: &[u8; 32],
        place: &str,
    ) -> Result<(), FsError> {
        let d = self.dir(key, place)?;
        match d.bytes.get_mut(slot * 32..slot * 32 + 32) {
            Some(s) => {
                s.copy_from_slice(raw);
                Ok(())
            }
            None => Err(self.corrupt(
                place,
                format!("internal: slot {slot} outside the directory"),
            )),
        }
    }

    /// Put `ents` (long-name entries then the short one) in consecutive
    /// free slots of directory `key`, growing it by a cluster when no run
    /// is long enough. Returns the short entry's slot.
    pub fn insert(&mut self, key: u32, ents: &[[u8; 32]], place: &str) -> Result<usize, FsError> {
        let need = ents.len();
        let g = self.g;
        loop {
            let d = self.dir(key, place)?;
            let n = d.bytes.len() / 32;
            let mut run = 0;
            let mut at_end = false;
            let mut found = None;
            for s in 0..n {
                let b0 = d.bytes[s * 32];
                if b0 == 0 {
                    at_end = true;
                }
                if at_end || b0 == 0xE5 {
                    run += 1;
                    if run == need {
                        found = Some(s + 1 - need);
                        break;
                    }
                } else {
                    run = 0;
                }
            }
            if let Some(start) = found {
                for (k, e) in ents.iter().enumerate() {
                    d.bytes[(start + k) * 32..(start + k + 1) * 32].copy_from_slice(e);
                }
                // Entries written past the end mark: the slot after them
                // becomes the end mark.
                let after = start + need;
                if at_end && after < n {
                    d.bytes[after * 32..after * 32 + 32].fill(0);
                }
                return Ok(start + need - 1);
            }
            if d.clusters.is_empty() {
                return Err(self.nospace(format!(
                    "the root directory of this {} volume is full ({} entries, {need} needed) and cannot grow",
                    g.kind.name(),
                    g.root_entries
                )));
            }
            if d.bytes.len() + g.cs as usize > DIR_MAX_BYTES {
                return Err(self.nospace(format!(
                    "{place}: a FAT directory holds at most {} entries",
                    DIR_MAX_BYTES / 32
                )));
            }
            let last = d.clusters.last().copied().unwrap_or(key);
            let c = self.alloc()?;
            self.set(last, c)?;
            let cs = self.g.cs as usize;
            let d = self.dir(key, place)?;
            d.clusters.push(c);
            d.bytes.resize(d.bytes.len() + cs, 0);
        }
    }

    /// Short names in use in directory `key` (live entries, including
    /// `.`/`..` and labels, so none is duplicated).
    pub fn shorts(&mut self, key: u32, place: &str) -> Result<BTreeSet<[u8; 11]>, FsError> {
        let d = self.dir(key, place)?;
        let mut s = BTreeSet::new();
        for e in d.bytes.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] != 0xE5 && e[11] & 0x3F != dir::ATTR_LFN {
                s.insert(dir::short_of(e));
            }
        }
        Ok(s)
    }

    // ---- commit ----

    /// Everything staged, as (offset, bytes) in the order it is written:
    /// file clusters, changed directory sectors, every FAT copy's changed
    /// chunks, FSInfo.
    fn plan(&mut self) -> Vec<(u64, Vec<u8>)> {
        let g = self.g;
        let mut out: Vec<(u64, Vec<u8>)> = std::mem::take(&mut self.data).into_iter().collect();
        let bps = g.bps as usize;
        let cs = g.cs as usize;
        for d in self.dirs.values() {
            for (i, piece) in d.bytes.chunks(bps).enumerate() {
                let at = i * bps;
                if d.orig.get(at..at + piece.len()) == Some(piece) {
                    continue;
                }
                let off = if d.clusters.is_empty() {
                    g.root_offset() + at as u64
                } else {
                    let c = d.clusters[at / cs];
                    g.cluster_offset(c) + (at % cs) as u64
                };
                out.push((off, piece.to_vec()));
            }
        }
        for &i in &self.fat_dirty {
            if let Some(b) = self.fat.get(&i) {
                for k in 0..g.nfats {
                    out.push((g.fat_offset(k) + i * CHUNK, b.clone()));
                }
            }
        }
        if let (Some(b), Some(s)) = (&self.fsinfo, g.fsinfo) {
            if self.allocated != 0 || self.freed != 0 {
                let mut b = b.clone();
                let orig = b.clone();
                let le =
                    |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
                let free = le(&b, 488);
                if free != 0xFFFF_FFFF {
                    let new = (u64::from(free) + self.freed)
                        .checked_sub(self.allocated)
                        .filter(|&n| n <= u64::from(g.clusters))
                        .map_or(0xFFFF_FFFF, |n| n as u32);
                    b[488..492].copy_from_slice(&new.to_le_bytes());
                }
                if le(&b, 492) != 0xFFFF_FFFF {
                    if let Some(c) = self.last_alloc {
                        b[492..496].copy_from_slice(&c.to_le_bytes());
                    }
                }
                if b != orig {
                    out.push((s * u64::from(g.bps), b));
                }
            }
        }
        out
    }

    /// Read the staged result back through the fatfs crate (every path in
    /// `expect`), then write everything staged. A disagreement writes
    /// nothing.
    pub fn commit(mut self, expect: &[Expect<'_>]) -> Result<(), FsError> {
        #[allow(unused_mut)]
        let mut writes = self.plan();
        #[cfg(test)]
        if let Some(f) = TAMPER.with(|t| t.borrow_mut().take()) {
            f(&mut writes);
        }
        let staged = verify::index(&writes, self.loc)?;
        if self.gap.is_none() {
            let dir_bytes: u64 = self.dirs.values().map(|d| d.bytes.len() as u64).sum();
            let check = verify::Check {
                dev: self.dev,
                loc: self.loc,
                staged: &staged,
                budget: verify::budget(expect, dir_bytes, self.g.cs),
                max_entries: self.max_entries,
            };
            check.run(expect)?;
        }
        for (off, b) in &writes {
            self.dev.write_at(*off, b)?;
        }
        Ok(())
    }
}
