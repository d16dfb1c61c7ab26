//! A write transaction: MFT records and index blocks are read into memory
//! (update sequence fixups removed), changed there, and written back only by
//! [`Tx::commit`] after the whole operation succeeded, re-protected (update
//! sequence number incremented, its array applied). `$Bitmap` bits are
//! changed in cached pages, file data is staged as byte ranges, and records
//! 0–3 are written to `$MFTMirr` as well when they change. An operation that
//! fails (a refusal, no space, a corrupt structure) therefore writes
//! nothing at all.
//!
//! Records are found through the runs of `$MFT`'s base record (record 0); a
//! record past what they map (an MFT continued through an attribute list) is
//! refused. Every staged record is re-validated by our record parser, and
//! every staged index block by our index parser, before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use vmie_disk::Device;
use vmie_guestfs::FsError;

use crate::boot::Geometry;
use crate::le::{le16, put16};
use crate::record::{self, Body, RawRecord, AT_DATA};
use crate::runlist;

/// MFT record of `$MFTMirr`.
const MFTMIRR_RECORD: u64 = 1;
/// MFT record of `$Bitmap`.
const BITMAP_RECORD: u64 = 6;
/// Bytes of `$Bitmap` per cached page.
const BM_PAGE: u64 = 4096;
/// Records mirrored in `$MFTMirr` as ntfs-3g counts them: 4, or a whole
/// cluster of records when a cluster holds more (capped at what the
/// mirror's clusters hold).
fn mirrored(geo: &Geometry) -> u64 {
    let (cs, rs) = (u64::from(geo.cluster_size), u64::from(geo.file_record_size));
    if cs <= 4 * rs {
        4
    } else {
        cs / rs
    }
}

/// A protected structure staged in memory: where its bytes lie on the
/// volume, and its bytes with the fixup removed.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pieces: Vec<(u64, usize)>,
    pub data: Vec<u8>,
}

/// The update sequence protection of a staged block: the next sequence
/// number (skipping 0 and 0xFFFF as ntfs-3g does) stored in the array and at
/// the end of every 512-byte stride, the bytes it replaces kept in the array.
pub(crate) fn protect(buf: &mut [u8]) -> Result<(), String> {
    let usa_ofs = usize::from(le16(buf, 4));
    let usa_count = usize::from(le16(buf, 6));
    let strides = usa_count
        .checked_sub(1)
        .ok_or("update sequence count is 0")?;
    if usa_ofs + 2 * usa_count > buf.len() || strides * 512 > buf.len() {
        return Err("update sequence array does not fit the block".into());
    }
    let mut usn = le16(buf, usa_ofs).wrapping_add(1);
    if usn == 0 || usn == 0xFFFF {
        usn = 1;
    }
    put16(buf, usa_ofs, usn);
    for i in 0..strides {
        let at = i * 512 + 510;
        let saved = le16(buf, at);
        put16(buf, usa_ofs + 2 + 2 * i, saved);
        put16(buf, at, usn);
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct Tx<'a> {
    pub geo: &'a Geometry,
    dev: &'a dyn Device,
    pub loc: &'a str,
    mft_runs: Vec<(u64, u64)>,
    /// Bytes of `$MFT` the base record's runs map (and its data holds).
    mft_bytes: u64,
    recs: BTreeMap<u64, Block>,
    rec_dirty: BTreeSet<u64>,
    indx: BTreeMap<u64, Block>,
    indx_dirty: BTreeSet<u64>,
    bm: Option<(Vec<(u64, u64)>, u64)>,
    bm_pages: BTreeMap<u64, Vec<u8>>,
    bm_dirty: BTreeSet<u64>,
    data: Vec<(u64, Vec<u8>)>,
    /// The time stamped on what the operation changes (NT time).
    pub now: u64,
}

impl<'a> Tx<'a> {
    pub fn new(
        geo: &'a Geometry,
        dev: &'a dyn Device,
        loc: &'a str,
        now: u64,
    ) -> Result<Self, FsError> {
        let rs = geo.file_record_size as usize;
        let raw = vmie_disk::read_vec(dev, geo.mft_offset, rs)?;
        let mut tx = Self {
            geo,
            dev,
            loc,
            mft_runs: Vec::new(),
            mft_bytes: 0,
            recs: BTreeMap::new(),
            rec_dirty: BTreeSet::new(),
            indx: BTreeMap::new(),
            indx_dirty: BTreeSet::new(),
            bm: None,
            bm_pages: BTreeMap::new(),
            bm_dirty: BTreeSet::new(),
            data: Vec::new(),
            now,
        };
        let mft = record::parse(geo, raw).map_err(|d| tx.corrupt("$MFT (MFT record 0)", d))?;
        let (runs, size) = data_runs(&mft)
            .ok_or_else(|| tx.corrupt("$MFT (MFT record 0)", "no non-resident unnamed $DATA"))?;
        let runs = runlist::allocated(&runs).map_err(|d| tx.corrupt("$MFT (MFT record 0)", d))?;
        let cs = u64::from(geo.cluster_size);
        let mapped: u64 = runs.iter().map(|r| r.1 * cs).sum();
        tx.mft_bytes = mapped.min(size);
        tx.mft_runs = runs;
        Ok(tx)
    }

    pub fn corrupt(&self, place: impl Into<String>, detail: impl Into<String>) -> FsError {
        FsError::Corrupt {
            fs: self.loc.to_string(),
            place: place.into(),
            detail: detail.into(),
        }
    }

    /// Records `$MFT` holds (as far as its base record maps it).
    pub fn mft_records(&self) -> u64 {
        self.mft_bytes / u64::from(self.geo.file_record_size)
    }

    fn read_block(&self, pieces: &[(u64, usize)], len: usize) -> Result<Vec<u8>, FsError> {
        let mut data = vec![0u8; len];
        let mut at = 0usize;
        for &(off, n) in pieces {
            self.dev.read_at(off, &mut data[at..at + n])?;
            at += n;
        }
        Ok(data)
    }

    fn rec_place(rn: u64) -> String {
        format!("MFT record {rn}")
    }

    /// MFT record `rn`, staged (fixup removed), loaded on first use and
    /// validated by our record parser.
    pub fn record(&mut self, rn: u64) -> Result<&mut Vec<u8>, FsError> {
        if !self.recs.contains_key(&rn) {
            let rs = u64::from(self.geo.file_record_size);
            let off = rn
                .checked_mul(rs)
                .filter(|o| o + rs <= self.mft_bytes)
                .ok_or_else(|| FsError::Unsupported {
                    fs: self.loc.to_string(),
                    op: format!("write MFT record {rn}"),
                    why: format!(
                        "the record is past the {} records $MFT's base record maps",
                        self.mft_records()
                    ),
                })?;
            let cs = u64::from(self.geo.cluster_size);
            let pieces = runlist::map_range(&self.mft_runs, cs, off, rs)
                .map_err(|d| self.corrupt(Self::rec_place(rn), d))?;
            let mut data = self.read_block(&pieces, rs as usize)?;
            record::fixup(&mut data, b"FILE").map_err(|d| self.corrupt(Self::rec_place(rn), d))?;
            record::parse_fixed(self.geo, data.clone())
                .map_err(|d| self.corrupt(Self::rec_place(rn), d))?;
            self.recs.insert(rn, Block { pieces, data });
        }
        let loc = self.loc;
        match self.recs.get_mut(&rn) {
            Some(b) => Ok(&mut b.data),
            None => Err(corrupt_in(
                loc,
                Self::rec_place(rn),
                "record vanished from the transaction",
            )),
        }
    }

    /// `$MFT` grew: its runs and the bytes they now map.
    pub fn set_mft_map(&mut self, runs: Vec<(u64, u64)>, bytes: u64) {
        let cs = u64::from(self.geo.cluster_size);
        let mapped: u64 = runs.iter().map(|r| r.1 * cs).sum();
        self.mft_runs = runs;
        self.mft_bytes = mapped.min(bytes);
    }

    /// Stage a whole new MFT record `rn` (fixup not applied), without
    /// reading what is there.
    pub fn stage_record(&mut self, rn: u64, data: Vec<u8>) -> Result<(), FsError> {
        let rs = u64::from(self.geo.file_record_size);
        let off = rn
            .checked_mul(rs)
            .filter(|o| o + rs <= self.mft_bytes)
            .ok_or_else(|| self.corrupt(Self::rec_place(rn), "past the end of $MFT"))?;
        let cs = u64::from(self.geo.cluster_size);
        let pieces = runlist::map_range(&self.mft_runs, cs, off, rs)
            .map_err(|d| self.corrupt(Self::rec_place(rn), d))?;
        self.recs.insert(rn, Block { pieces, data });
        self.rec_dirty.insert(rn);
        Ok(())
    }

    /// Allocate `n` clusters for `$MFT`: one run at or after `hint` (the
    /// MFT zone, kept for this, included), else the fewest pieces.
    pub fn alloc_mft(&mut self, n: u64, hint: u64) -> Result<Vec<(u64, u64)>, FsError> {
        if let Some((lcn, len)) = self.find_free(n, hint, true, false)? {
            self.set_bits(lcn, len, true)?;
            return Ok(vec![(lcn, len)]);
        }
        let mut got = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some((lcn, len)) = self.find_free(left, hint, true, true)? else {
                return Err(FsError::NoSpace {
                    fs: self.loc.to_string(),
                    what: format!("{n} clusters wanted for $MFT, {} free", n - left),
                });
            };
            self.set_bits(lcn, len, true)?;
            got.push((lcn, len));
            left -= len;
        }
        Ok(got)
    }

    /// Record `rn` without its fixup, read without validation (a free
    /// record to be reinitialised: only its sequence number is used).
    pub fn record_unchecked(&mut self, rn: u64) -> Result<&mut Vec<u8>, FsError> {
        if !self.recs.contains_key(&rn) {
            let rs = u64::from(self.geo.file_record_size);
            let off = rn
                .checked_mul(rs)
                .filter(|o| o + rs <= self.mft_bytes)
                .ok_or_else(|| self.corrupt(Self::rec_place(rn), "past the end of $MFT"))?;
            let cs = u64::from(self.geo.cluster_size);
            let pieces = runlist::map_range(&self.mft_runs, cs, off, rs)
                .map_err(|d| self.corrupt(Self::rec_place(rn), d))?;
            let data = self.read_block(&pieces, rs as usize)?;
            self.recs.insert(rn, Block { pieces, data });
        }
        let loc = self.loc;
        match self.recs.get_mut(&rn) {
            Some(b) => Ok(&mut b.data),
            None => Err(corrupt_in(
                loc,
                Self::rec_place(rn),
                "record vanished from the transaction",
            )),
        }
    }

    /// Record `rn` (staged) parsed.
    pub fn parsed(&mut self, rn: u64) -> Result<RawRecord, FsError> {
        let data = self.record(rn)?.clone();
        record::parse_fixed(self.geo, data).map_err(|d| self.corrupt(Self::rec_place(rn), d))
    }

    /// Mark record `rn` changed.
    pub fn dirty(&mut self, rn: u64) {
        self.rec_dirty.insert(rn);
    }

    /// The index block of `rs` bytes at byte `off` of an index allocation
    /// stored in `runs`, staged (fixup removed). Its key is its first byte
    /// on the volume.
    pub fn indx(
        &mut self,
        runs: &[(u64, u64)],
        off: u64,
        rs: usize,
        place: &str,
    ) -> Result<(u64, &mut Vec<u8>), FsError> {
        let cs = u64::from(self.geo.cluster_size);
        let pieces = runlist::map_range(runs, cs, off, rs as u64)
            .map_err(|d| self.corrupt(place, format!("index block at {off}: {d}")))?;
        let key = pieces.first().map_or(0, |p| p.0);
        if !self.indx.contains_key(&key) {
            let mut data = self.read_block(&pieces, rs)?;
            record::fixup(&mut data, b"INDX")
                .map_err(|d| self.corrupt(place, format!("index block at {off}: {d}")))?;
            self.indx.insert(key, Block { pieces, data });
        }
        let loc = self.loc;
        match self.indx.get_mut(&key) {
            Some(b) => Ok((key, &mut b.data)),
            None => Err(corrupt_in(
                loc,
                place,
                "index block vanished from the transaction",
            )),
        }
    }

    /// Stage a new index block (fixup not applied) at byte `off` of an index
    /// allocation stored in `runs`, without reading what is there.
    pub fn indx_put(
        &mut self,
        runs: &[(u64, u64)],
        off: u64,
        data: Vec<u8>,
        place: &str,
    ) -> Result<(), FsError> {
        let cs = u64::from(self.geo.cluster_size);
        let pieces = runlist::map_range(runs, cs, off, data.len() as u64)
            .map_err(|d| self.corrupt(place, format!("index block at {off}: {d}")))?;
        let key = pieces.first().map_or(0, |p| p.0);
        self.indx.insert(key, Block { pieces, data });
        self.indx_dirty.insert(key);
        Ok(())
    }

    /// A staged index block by its key.
    pub fn indx_buf(&mut self, key: u64) -> Result<&mut Vec<u8>, FsError> {
        let loc = self.loc.to_string();
        self.indx
            .get_mut(&key)
            .map(|b| &mut b.data)
            .ok_or_else(|| FsError::Corrupt {
                fs: loc,
                place: format!("index block at byte {key}"),
                detail: "not in the transaction".into(),
            })
    }

    pub fn indx_dirty(&mut self, key: u64) {
        self.indx_dirty.insert(key);
    }

    /// Stage `bytes` to be written at volume byte `off`.
    pub fn write_data(&mut self, off: u64, bytes: Vec<u8>) {
        self.data.push((off, bytes));
    }

    fn bitmap_runs(&mut self) -> Result<(Vec<(u64, u64)>, u64), FsError> {
        if let Some(b) = &self.bm {
            return Ok(b.clone());
        }
        let r = self.parsed(BITMAP_RECORD)?;
        let place = "$Bitmap (MFT record 6)";
        let (runs, size) =
            data_runs(&r).ok_or_else(|| self.corrupt(place, "no non-resident $DATA"))?;
        let runs = runlist::allocated(&runs).map_err(|d| self.corrupt(place, d))?;
        let need = self.geo.total_clusters.div_ceil(8);
        if size < need {
            return Err(self.corrupt(
                place,
                format!(
                    "{size} bytes of bitmap for {} clusters",
                    self.geo.total_clusters
                ),
            ));
        }
        self.bm = Some((runs.clone(), size));
        Ok((runs, size))
    }

    fn bm_page(&mut self, page: u64) -> Result<&mut Vec<u8>, FsError> {
        if !self.bm_pages.contains_key(&page) {
            let (runs, size) = self.bitmap_runs()?;
            let off = page * BM_PAGE;
            let len = BM_PAGE.min(size.saturating_sub(off));
            let cs = u64::from(self.geo.cluster_size);
            let pieces = runlist::map_range(&runs, cs, off, len)
                .map_err(|d| self.corrupt("$Bitmap (MFT record 6)", d))?;
            let data = self.read_block(&pieces, len as usize)?;
            self.bm_pages.insert(page, data);
        }
        let loc = self.loc;
        match self.bm_pages.get_mut(&page) {
            Some(p) => Ok(p),
            None => Err(corrupt_in(
                loc,
                "$Bitmap",
                "page vanished from the transaction",
            )),
        }
    }

    /// Whether cluster `c` is in use.
    pub fn used(&mut self, c: u64) -> Result<bool, FsError> {
        let byte = c / 8;
        let page = self.bm_page(byte / BM_PAGE)?;
        let b = page.get((byte % BM_PAGE) as usize).copied().unwrap_or(0xFF);
        Ok(b & (1 << (c % 8)) != 0)
    }

    fn set_bits(&mut self, lcn: u64, n: u64, on: bool) -> Result<(), FsError> {
        for c in lcn..lcn + n {
            if self.used(c)? == on {
                return Err(self.corrupt(
                    "$Bitmap (MFT record 6)",
                    format!(
                        "cluster {c} is already marked {}",
                        if on { "in use" } else { "free" }
                    ),
                ));
            }
            let byte = c / 8;
            let page_no = byte / BM_PAGE;
            let page = self.bm_page(page_no)?;
            if let Some(b) = page.get_mut((byte % BM_PAGE) as usize) {
                *b ^= 1 << (c % 8);
            }
            self.bm_dirty.insert(page_no);
        }
        Ok(())
    }

    /// The device the transaction reads.
    pub fn device(&self) -> &'a dyn Device {
        self.dev
    }

    /// Take the `n` clusters at `lcn` (each must be free).
    pub fn take(&mut self, lcn: u64, n: u64) -> Result<(), FsError> {
        if lcn
            .checked_add(n)
            .is_none_or(|e| e > self.geo.total_clusters)
        {
            return Err(self.corrupt("$Bitmap", format!("run {lcn}+{n} is outside the volume")));
        }
        self.set_bits(lcn, n, true)
    }

    /// One free run of `n` clusters at or after `hint` (outside the MFT
    /// zone first), taken; `None` when there is none.
    pub fn alloc_contiguous(&mut self, n: u64, hint: u64) -> Result<Option<(u64, u64)>, FsError> {
        for zone_ok in [false, true] {
            if let Some((lcn, len)) = self.find_free(n, hint, zone_ok, false)? {
                self.set_bits(lcn, len, true)?;
                return Ok(Some((lcn, len)));
            }
        }
        Ok(None)
    }

    /// Free the clusters of `runs` (each must be marked in use).
    pub fn free(&mut self, runs: &[(u64, u64)]) -> Result<(), FsError> {
        for &(lcn, n) in runs {
            if lcn
                .checked_add(n)
                .is_none_or(|e| e > self.geo.total_clusters)
            {
                return Err(self.corrupt("$Bitmap", format!("run {lcn}+{n} is outside the volume")));
            }
            self.set_bits(lcn, n, false)?;
        }
        Ok(())
    }

    /// The MFT zone: the clusters after the MFT that Windows keeps for its
    /// growth (an eighth of the volume, as ntfs-3g and Windows default to).
    fn mft_zone(&self) -> (u64, u64) {
        let start = self.geo.mft_lcn;
        (
            start,
            (start + self.geo.total_clusters / 8).min(self.geo.total_clusters),
        )
    }

    /// The first free run of at least `want` clusters at or after `from`
    /// (wrapping once), outside the MFT zone unless `zone_ok`; or, with
    /// `any`, the first free run of any length. Returns `(lcn, length)`,
    /// the length capped at `want`.
    fn find_free(
        &mut self,
        want: u64,
        from: u64,
        zone_ok: bool,
        any: bool,
    ) -> Result<Option<(u64, u64)>, FsError> {
        let total = self.geo.total_clusters;
        let (zs, ze) = self.mft_zone();
        let from = if from >= total { 0 } else { from };
        for (lo, hi) in [(from, total), (0, from)] {
            let mut c = lo;
            let mut start: Option<u64> = None;
            while c < hi {
                let in_zone = !zone_ok && (zs..ze).contains(&c);
                // Skip whole bytes in use.
                if start.is_none() && c % 8 == 0 && c + 8 <= hi && !in_zone {
                    let byte = c / 8;
                    let page = self.bm_page(byte / BM_PAGE)?;
                    if page.get((byte % BM_PAGE) as usize) == Some(&0xFF) {
                        c += 8;
                        continue;
                    }
                }
                let free = !in_zone && !self.used(c)?;
                match (free, start) {
                    (true, None) => start = Some(c),
                    (false, Some(s)) => {
                        if any || c - s >= want {
                            return Ok(Some((s, (c - s).min(want))));
                        }
                        start = None;
                    }
                    _ => {}
                }
                if let Some(s) = start {
                    if c + 1 - s >= want {
                        return Ok(Some((s, want)));
                    }
                }
                c += 1;
            }
            if let Some(s) = start {
                if any || hi - s >= want {
                    return Ok(Some((s, (hi - s).min(want))));
                }
            }
        }
        Ok(None)
    }

    /// Allocate `n` clusters: one contiguous run at or after `hint` when
    /// there is one (outside the MFT zone first, then inside), else the
    /// fewest pieces first-fit. The bits are set; the runs are returned.
    pub fn alloc(&mut self, n: u64, hint: u64) -> Result<Vec<(u64, u64)>, FsError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Some(run) = self.alloc_contiguous(n, hint)? {
            return Ok(vec![run]);
        }
        let mut got = Vec::new();
        let mut left = n;
        for zone_ok in [false, true] {
            while left > 0 {
                let Some((lcn, len)) = self.find_free(left, hint, zone_ok, true)? else {
                    break;
                };
                self.set_bits(lcn, len, true)?;
                got.push((lcn, len));
                left -= len;
            }
        }
        if left > 0 {
            return Err(FsError::NoSpace {
                fs: self.loc.to_string(),
                what: format!("{n} clusters wanted, {} free", n - left),
            });
        }
        got.sort_unstable();
        Ok(runlist::merge(&got))
    }

    /// Write everything staged: data, `$Bitmap` pages, index blocks, MFT
    /// records (and `$MFTMirr`). Every block is protected and re-validated
    /// first; the device is touched only when all of them pass. Returns the
    /// bytes written.
    pub fn commit(mut self) -> Result<u64, FsError> {
        let mut out: Vec<(u64, Vec<u8>)> = std::mem::take(&mut self.data);
        if !self.bm_dirty.is_empty() {
            let (runs, size) = self.bitmap_runs()?;
            let cs = u64::from(self.geo.cluster_size);
            for &p in &self.bm_dirty {
                let Some(page) = self.bm_pages.get(&p) else {
                    continue;
                };
                let off = p * BM_PAGE;
                let len = BM_PAGE.min(size.saturating_sub(off));
                let pieces = runlist::map_range(&runs, cs, off, len)
                    .map_err(|d| self.corrupt("$Bitmap", d))?;
                push_pieces(&mut out, &pieces, page);
            }
        }
        for key in &self.indx_dirty {
            let Some(b) = self.indx.get(key) else {
                continue;
            };
            let mut buf = b.data.clone();
            protect(&mut buf).map_err(|d| self.corrupt(format!("index block at byte {key}"), d))?;
            let mut check = buf.clone();
            let vcn = crate::le::le64(&buf, 16) as i64;
            crate::index::parse_node(&mut check, vcn).map_err(|d| {
                self.corrupt(
                    format!("index block at byte {key}"),
                    format!("after the change: {d}"),
                )
            })?;
            push_pieces(&mut out, &b.pieces, &buf);
        }
        let mut mirror: Vec<(u64, Vec<u8>)> = Vec::new();
        for &rn in &self.rec_dirty {
            let Some(b) = self.recs.get(&rn) else {
                continue;
            };
            let mut buf = b.data.clone();
            protect(&mut buf).map_err(|d| self.corrupt(Self::rec_place(rn), d))?;
            record::parse(self.geo, buf.clone())
                .map_err(|d| self.corrupt(Self::rec_place(rn), format!("after the change: {d}")))?;
            push_pieces(&mut out, &b.pieces, &buf);
            if rn < mirrored(self.geo) {
                mirror.push((rn, buf));
            }
        }
        if !mirror.is_empty() {
            let r = self.parsed(MFTMIRR_RECORD)?;
            let place = "$MFTMirr (MFT record 1)";
            let (runs, _) =
                data_runs(&r).ok_or_else(|| self.corrupt(place, "no non-resident $DATA"))?;
            let runs = runlist::allocated(&runs).map_err(|d| self.corrupt(place, d))?;
            let size: u64 = runs
                .iter()
                .map(|r| r.1 * u64::from(self.geo.cluster_size))
                .sum();
            if runs.first().map(|r| r.0) != Some(self.geo.mirr_lcn) {
                return Err(
                    self.corrupt(place, "its data does not start where the boot sector says")
                );
            }
            let rs = u64::from(self.geo.file_record_size);
            let cs = u64::from(self.geo.cluster_size);
            for (rn, buf) in mirror {
                if (rn + 1) * rs > size {
                    continue;
                }
                let pieces = runlist::map_range(&runs, cs, rn * rs, rs)
                    .map_err(|d| self.corrupt(place, d))?;
                push_pieces(&mut out, &pieces, &buf);
            }
        }
        let mut written = 0u64;
        for (off, bytes) in &out {
            self.dev.write_at(*off, bytes)?;
            written += bytes.len() as u64;
        }
        Ok(written)
    }
}

fn corrupt_in(loc: &str, place: impl Into<String>, detail: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: loc.to_string(),
        place: place.into(),
        detail: detail.into(),
    }
}

fn push_pieces(out: &mut Vec<(u64, Vec<u8>)>, pieces: &[(u64, usize)], buf: &[u8]) {
    let mut at = 0usize;
    for &(off, n) in pieces {
        out.push((off, buf[at..at + n].to_vec()));
        at += n;
    }
}

/// The runs and data size of the unnamed non-resident `$DATA` of `r`
/// (its first extent).
pub(crate) fn data_runs(r: &RawRecord) -> Option<(Vec<record::Run>, u64)> {
    r.attrs.iter().find_map(|a| match &a.body {
        Body::NonResident {
            lowest_vcn: 0,
            data_size,
            runs,
            ..
        } if a.ty == AT_DATA && a.name.is_empty() => Some((runs.clone(), *data_size)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protect_then_fixup_round_trips() {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[4] = 0x30;
        r[6] = 3;
        r[510] = 7;
        r[1023] = 9;
        let orig = r.clone();
        protect(&mut r).unwrap();
        assert_eq!(le16(&r, 0x30), 1);
        assert_eq!(le16(&r, 510), 1);
        let mut back = r.clone();
        record::fixup(&mut back, b"FILE").unwrap();
        assert_eq!(&back[..0x30], &orig[..0x30]);
        assert_eq!(&back[0x36..], &orig[0x36..]);
        assert_eq!(&back[0x32..0x36], &[7, 0, 0, 9]);
        // 0xFFFF wraps to 1.
        put16(&mut r, 0x30, 0xFFFE);
        protect(&mut r).unwrap();
        assert_eq!(le16(&r, 0x30), 1);
    }
}
