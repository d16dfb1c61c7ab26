//! The write operations: replace a file's contents, create a file or an
//! empty directory, remove a file or an empty directory, rename within a
//! directory or move into another one (a directory never into its own
//! subtree). Each runs in one [`Tx`] after the [`preflight`] checks, so a
//! refusal writes nothing.
//!
//! - A touched file is refused when it is compressed, encrypted, sparse,
//!   has a reparse point or an `$ATTRIBUTE_LIST` (any of those in
//!   `$STANDARD_INFORMATION`'s attributes, in its `$DATA` flags, or as an
//!   attribute).
//! - `$DATA` is resident whenever it fits in the record (so a shrink can
//!   bring it back in), else one extent of runs in the record; when even
//!   that does not fit the operation is refused (attribute lists are not
//!   written).
//! - Clusters: a non-resident file keeps the prefix of its clusters it still
//!   needs and frees the rest; growing first extends its last run in place,
//!   else takes one contiguous run for the whole file (freeing the old
//!   ones), else adds the fewest pieces. New runs are searched next-fit from
//!   the file's last cluster, outside the MFT zone (the eighth of the volume
//!   after the MFT's start that Windows keeps for the MFT) first and inside
//!   it only when nothing else is free. Every bit set was clear and every
//!   bit cleared was set, or the operation stops as corrupt.
//! - Sizes and times: `$DATA`'s allocated, data and initialized sizes and
//!   highest VCN; `$STANDARD_INFORMATION`'s modification, MFT-change and
//!   access times; every `$FILE_NAME` of the file (times and sizes: the
//!   allocated size is the cluster allocation, or the resident value
//!   rounded to 8 bytes, as ntfs-3g does), and the same fields of their
//!   entries in the parent directory's index.

use vmie_guestfs::{FsError, GuestPath};

use crate::attr::{self, NrSizes};
use crate::dirw::{Dir, Hit};
use crate::index;
use crate::le::{le16, le32, le64, put16, put32, put64};
use crate::preflight;
use crate::record::{Body, RawRecord, AT_ATTRIBUTE_LIST, AT_DATA, REC_IN_USE};
use crate::runlist;
use crate::tx::Tx;

const AT_STANDARD_INFORMATION: u32 = 0x10;
const AT_FILE_NAME: u32 = 0x30;
const AT_BITMAP: u32 = 0xB0;
const AT_REPARSE_POINT: u32 = 0xC0;
const AT_INDEX_ROOT: u32 = 0x90;
/// MFT record flag of a directory (a record with an `$I30` index).
const REC_DIRECTORY: u16 = 0x0002;
/// `$DATA` attribute flags we do not write.
const ATTR_COMPRESSED: u16 = 0x00FF;
const ATTR_ENCRYPTED: u16 = 0x4000;
const ATTR_SPARSE: u16 = 0x8000;
/// File attribute flags.
const FA_ARCHIVE: u32 = 0x20;
const FA_SPARSE: u32 = 0x200;
const FA_REPARSE: u32 = 0x400;
const FA_COMPRESSED: u32 = 0x800;
const FA_ENCRYPTED: u32 = 0x4000;
const FA_DIRECTORY: u32 = 0x1000_0000;
/// Namespaces.
const NS_WIN32: u8 = 1;
const NS_WIN32_DOS: u8 = 3;
/// MFT records below this are never handed out (Windows keeps 16–23 for
/// `$MFT` extension records); records from [`FIRST_NEW_RECORD`] are tried
/// first, as ntfs-3g does.
const MIN_NEW_RECORD: u64 = 24;
const FIRST_NEW_RECORD: u64 = 64;
const REF_MASK: u64 = 0xFFFF_FFFF_FFFF;
/// The root directory's MFT record.
const ROOT_RECORD: u64 = 5;

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// What an operation needs from the volume.
pub(crate) struct Ctx<'a> {
    pub up: &'a [u16],
    pub path: &'a GuestPath,
}

fn unsupported(tx: &Tx<'_>, op: &str, path: &GuestPath, why: impl Into<String>) -> FsError {
    FsError::Unsupported {
        fs: tx.loc.to_string(),
        op: format!("{op} {path}"),
        why: why.into(),
    }
}

/// Refuse a file this writer does not handle.
fn check_touchable(tx: &Tx<'_>, op: &str, path: &GuestPath, r: &RawRecord) -> Result<(), FsError> {
    if r.attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
        return Err(unsupported(
            tx,
            op,
            path,
            "the file has an $ATTRIBUTE_LIST (not implemented)",
        ));
    }
    if r.attrs.iter().any(|a| a.ty == AT_REPARSE_POINT) {
        return Err(unsupported(tx, op, path, "the file has a reparse point"));
    }
    let si = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_STANDARD_INFORMATION)
        .and_then(|a| r.resident(a))
        .filter(|v| v.len() >= 48)
        .ok_or_else(|| tx.corrupt(format!("{path}"), "no $STANDARD_INFORMATION"))?;
    let fa = le32(si, 32);
    for (bit, what) in [
        (FA_COMPRESSED, "compressed"),
        (FA_ENCRYPTED, "encrypted (EFS)"),
        (FA_SPARSE, "sparse"),
        (FA_REPARSE, "a reparse point"),
    ] {
        if fa & bit != 0 {
            return Err(unsupported(tx, op, path, format!("the file is {what}")));
        }
    }
    for a in r.attrs.iter().filter(|a| a.ty == AT_DATA) {
        if a.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED | ATTR_SPARSE) != 0 {
            return Err(unsupported(
                tx,
                op,
                path,
                format!(
                    "the file's $DATA is compressed, encrypted or sparse (flags {:#06x})",
                    a.flags
                ),
            ));
        }
        if let Body::NonResident {
            lowest_vcn, runs, ..
        } = &a.body
        {
            if *lowest_vcn != 0 || runs.iter().any(|r| r.lcn.is_none()) {
                return Err(unsupported(
                    tx,
                    op,
                    path,
                    "the file's $DATA has sparse runs or several extents",
                ));
            }
        }
    }
    Ok(())
}

/// The `$DATA` attribute to store `data` (resident when it fits), built
/// into a copy of record `rec`, with the data staged and the clusters it
/// frees. `old` are the file's current runs.
struct NewData {
    rec: Vec<u8>,
    freed: Vec<(u64, u64)>,
    alloc_size: u64,
}

fn build_data(
    tx: &mut Tx<'_>,
    op: &str,
    path: &GuestPath,
    rec: &[u8],
    existing: Option<(usize, usize, u16)>,
    old: &[(u64, u64)],
    data: &[u8],
) -> Result<NewData, FsError> {
    let mut rec = rec.to_vec();
    let (off, old_len, instance) = match existing {
        Some(e) => e,
        None => {
            let i = attr::next_instance(&mut rec);
            (attr::insert_at(&rec, AT_DATA, &[]), 0, i)
        }
    };
    // Resident, when it fits.
    let res = attr::resident(AT_DATA, &[], instance, data, false);
    let mut try_rec = rec.clone();
    if attr::splice(&mut try_rec, off, old_len, &res).is_ok() {
        return Ok(NewData {
            rec: try_rec,
            freed: old.to_vec(),
            alloc_size: align8(data.len() as u64),
        });
    }
    let cs = u64::from(tx.geo.cluster_size);
    let len = data.len() as u64;
    let n = len.div_ceil(cs);
    let have: u64 = old.iter().map(|r| r.1).sum();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut freed: Vec<(u64, u64)> = Vec::new();
    if n <= have {
        let mut left = n;
        for &(l, c) in old {
            if left >= c {
                runs.push((l, c));
                left -= c;
            } else if left > 0 {
                runs.push((l, left));
                freed.push((l + left, c - left));
                left = 0;
            } else {
                freed.push((l, c));
            }
        }
    } else {
        let extra = n - have;
        let last_end = old.last().map(|&(l, c)| l + c);
        let extended = match last_end {
            Some(e) if e + extra <= tx.geo.total_clusters => {
                let mut ok = true;
                for c in e..e + extra {
                    if tx.used(c)? {
                        ok = false;
                        break;
                    }
                }
                ok && {
                    tx.take(e, extra)?;
                    runs = old.to_vec();
                    runs.push((e, extra));
                    true
                }
            }
            _ => false,
        };
        if !extended {
            let hint = last_end.unwrap_or(0);
            if let Some(run) = tx.alloc_contiguous(n, hint)? {
                runs = vec![run];
                freed = old.to_vec();
            } else {
                runs = old.to_vec();
                runs.extend(tx.alloc(extra, hint)?);
            }
        }
    }
    let runs = runlist::merge(&runs);
    let pairs = runlist::encode(&runs).map_err(|d| tx.corrupt(format!("{path}"), d))?;
    let sizes = NrSizes {
        highest_vcn: n as i64 - 1,
        allocated: n * cs,
        data: len,
        initialized: len,
    };
    let nr = attr::non_resident(AT_DATA, &[], instance, 0, sizes, &pairs);
    attr::splice(&mut rec, off, old_len, &nr).map_err(|d| {
        unsupported(
            tx,
            op,
            path,
            format!(
                "the new $DATA ({} runs, {} bytes of mapping pairs) does not fit in the file's MFT record ({d}); attribute lists are not implemented",
                runs.len(),
                pairs.len()
            ),
        )
    })?;
    // Stage the contents, the last cluster padded with zeros.
    let mut at = 0usize;
    for &(l, c) in &runs {
        let bytes = (c * cs) as usize;
        let mut chunk = vec![0u8; bytes];
        let take = bytes.min(data.len() - at);
        chunk[..take].copy_from_slice(&data[at..at + take]);
        at += take;
        tx.write_data(l * cs, chunk);
    }
    Ok(NewData {
        rec,
        freed,
        alloc_size: n * cs,
    })
}

/// Set times and sizes in a `$FILE_NAME` value (or index key) `k`.
fn stamp_name(k: &mut [u8], now: u64, alloc: u64, size: u64) {
    put64(k, 16, now);
    put64(k, 24, now);
    put64(k, 32, now);
    put64(k, 40, alloc);
    put64(k, 48, size);
}

/// Set the modification, MFT-change and access times of the
/// `$STANDARD_INFORMATION` in `rec`.
fn stamp_si(tx: &Tx<'_>, rec: &mut [u8], r: &RawRecord) -> Result<(), FsError> {
    let a = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_STANDARD_INFORMATION)
        .ok_or_else(|| tx.corrupt("record", "no $STANDARD_INFORMATION"))?;
    let Body::Resident(range) = &a.body else {
        return Err(tx.corrupt("record", "$STANDARD_INFORMATION is not resident"));
    };
    if range.len() < 48 {
        return Err(tx.corrupt("record", "$STANDARD_INFORMATION is too short"));
    }
    for o in [8, 16, 24] {
        put64(rec, range.start + o, tx.now);
    }
    Ok(())
}

/// Update the `$FILE_NAME`s of record `rn` (already changed in the
/// transaction) and their entries in directory `dir`.
fn stamp_names(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    rn: u64,
    dir: &Dir,
    alloc: u64,
    size: u64,
) -> Result<(), FsError> {
    let r = tx.parsed(rn)?;
    let now = tx.now;
    let loc = tx.loc.to_string();
    let mut names = Vec::new();
    {
        let rec = tx.record(rn)?;
        for a in r.attrs.iter().filter(|a| a.ty == AT_FILE_NAME) {
            if let Body::Resident(range) = &a.body {
                let k = &mut rec[range.clone()];
                stamp_name(k, now, alloc, size);
                if le64(k, 0) & REF_MASK == dir.rn {
                    let key = index::parse_key(k).map_err(|d| FsError::Corrupt {
                        fs: loc.clone(),
                        place: format!("{} (MFT record {rn})", ctx.path),
                        detail: d,
                    })?;
                    names.push(key.name);
                }
            }
        }
    }
    for name in names {
        let hit = match dir.seek(tx, ctx.up, &name, true)? {
            Ok(h) if h.entry.file_ref & REF_MASK == rn => h,
            _ => {
                return Err(tx.corrupt(
                    &dir.place,
                    format!(
                        "{}: the directory has no entry for the file's name",
                        ctx.path
                    ),
                ))
            }
        };
        let at = hit.base + hit.entry.pos + 16;
        let buf = dir.buf(tx, hit.node)?;
        if let Some(k) = buf.get_mut(at..at + 66) {
            stamp_name(k, now, alloc, size);
        }
        dir.mark(tx, hit.node);
    }
    Ok(())
}

/// Replace the contents of the file at MFT record `rn` in directory
/// `dir_rn`. Returns the bytes written.
pub(crate) fn replace(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    rn: u64,
    dir_rn: u64,
    data: &[u8],
) -> Result<(), FsError> {
    preflight::check(tx, ctx.up)?;
    let path = ctx.path;
    let r = tx.parsed(rn)?;
    check_touchable(tx, "replace_file", path, &r)?;
    let dir = Dir::open(tx, dir_rn, &path.parent().to_string())?;
    let existing = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_DATA && a.name.is_empty());
    let old = match existing.map(|a| &a.body) {
        Some(Body::NonResident { runs, .. }) => {
            runlist::allocated(runs).map_err(|d| tx.corrupt(format!("{path}"), d))?
        }
        _ => Vec::new(),
    };
    let ex = existing.map(|a| (a.off, a.len, le16(&r.data, a.off + 14)));
    let nd = build_data(tx, "replace_file", path, &r.data, ex, &old, data)?;
    // Clusters handed out must not be ones the file keeps.
    tx.free(&nd.freed)?;
    let mut rec = nd.rec;
    let r2 = crate::record::parse_fixed(tx.geo, rec.clone())
        .map_err(|d| tx.corrupt(format!("{path}"), d))?;
    stamp_si(tx, &mut rec, &r2)?;
    *tx.record(rn)? = rec;
    tx.dirty(rn);
    stamp_names(tx, ctx, rn, &dir, nd.alloc_size, data.len() as u64)
}

/// Whether `name` is a valid upper-case 8.3 name (so one Win32&DOS name
/// serves both namespaces).
fn is_dos_name(name: &str) -> bool {
    let ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| {
                b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b)
            })
    };
    match name.split_once('.') {
        None => ok(name, 8),
        Some((b, e)) => ok(b, 8) && ok(e, 3),
    }
}

/// A name Win32 can hold.
fn valid_name(name: &[u16]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|&c| c >= 0x20 && !"\"*/:<>?\\|".encode_utf16().any(|b| b == c))
}

/// Take a free MFT record: the first clear bit of `$MFT`'s `$BITMAP` from
/// record 64, then from record 24, inside the records `$MFT` holds now;
/// when none is free, `$MFT` grows (see `mft`) and its first new record is
/// taken.
fn take_record(tx: &mut Tx<'_>, op: &str, path: &GuestPath) -> Result<u64, FsError> {
    let r0 = tx.parsed(0)?;
    let a = r0
        .attrs
        .iter()
        .find(|a| a.ty == AT_BITMAP && a.name.is_empty())
        .ok_or_else(|| tx.corrupt("$MFT (MFT record 0)", "no $BITMAP"))?
        .clone();
    let records = tx.mft_records();
    let mut found = None;
    match &a.body {
        Body::Resident(range) => {
            let bm = r0.data[range.clone()].to_vec();
            for rn in
                (FIRST_NEW_RECORD..records).chain(MIN_NEW_RECORD..FIRST_NEW_RECORD.min(records))
            {
                let Some(&b) = bm.get((rn / 8) as usize) else {
                    break;
                };
                if b & (1 << (rn % 8)) == 0 {
                    let at = range.start + (rn / 8) as usize;
                    let rec = tx.record(0)?;
                    rec[at] |= 1 << (rn % 8);
                    tx.dirty(0);
                    found = Some(rn);
                    break;
                }
            }
        }
        Body::NonResident {
            runs: raw_runs,
            init_size,
            ..
        } => {
            let runs = runlist::allocated(raw_runs).map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
            let bytes = (*init_size).min(records.div_ceil(8));
            let bm = crate::record::read_runs(tx.device(), tx.geo, raw_runs, bytes)
                .map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
            for rn in
                (FIRST_NEW_RECORD..records).chain(MIN_NEW_RECORD..FIRST_NEW_RECORD.min(records))
            {
                let Some(&b) = bm.get((rn / 8) as usize) else {
                    continue;
                };
                if b & (1 << (rn % 8)) == 0 {
                    let cs = u64::from(tx.geo.cluster_size);
                    let p = runlist::map_range(&runs, cs, rn / 8, 1)
                        .map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
                    let Some(&(dev_off, _)) = p.first() else {
                        break;
                    };
                    tx.write_data(dev_off, vec![b | (1 << (rn % 8))]);
                    found = Some(rn);
                    break;
                }
            }
        }
    }
    match found {
        Some(rn) => Ok(rn),
        None => crate::mft::grow(tx, &format!("{op} {path}")),
    }
}

/// The security id of `$STANDARD_INFORMATION` in record `rn` (0 if it has
/// the short NTFS 1.x form).
fn security_id(tx: &mut Tx<'_>, rn: u64) -> Result<u32, FsError> {
    let r = tx.parsed(rn)?;
    Ok(r.attrs
        .iter()
        .find(|a| a.ty == AT_STANDARD_INFORMATION)
        .and_then(|a| r.resident(a))
        .filter(|v| v.len() >= 56)
        .map_or(0, |v| le32(v, 52)))
}

/// What [`create`] makes.
pub(crate) enum NewKind<'d> {
    /// A regular file with these contents.
    File(&'d [u8]),
    /// An empty directory.
    Dir,
}

/// Create `name` in directory `dir_rn` (seq `dir_seq`): a file with its
/// data, or an empty directory (an `$I30` `$INDEX_ROOT` with only the end
/// entry, the record's directory flag, and `FILE_ATTR_I30_INDEX_PRESENT` in
/// its `$FILE_NAME` and index entry, as Windows and ntfs-3g make them).
pub(crate) fn create(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    dir_rn: u64,
    dir_seq: u16,
    name: &str,
    kind: NewKind<'_>,
) -> Result<(), FsError> {
    let op = match kind {
        NewKind::File(_) => "create_file",
        NewKind::Dir => "mkdir",
    };
    let op: &str = op;
    preflight::check(tx, ctx.up)?;
    let path = ctx.path;
    let uname: Vec<u16> = name.encode_utf16().collect();
    if !valid_name(&uname) {
        return Err(unsupported(
            tx,
            op,
            path,
            "the name is not a valid Windows file name",
        ));
    }
    let dir = Dir::open(tx, dir_rn, &path.parent().to_string())?;
    let hit: Hit = match dir.seek(tx, ctx.up, &uname, false)? {
        Ok(_) => {
            return Err(FsError::Exists {
                fs: tx.loc.to_string(),
                path: path.to_string(),
            })
        }
        Err(h) => h,
    };
    // The security id of the next file in the same index node (a sibling
    // made by Windows carries the descriptor Windows gives files there), else
    // the directory's own (files made by ntfscp have none: the short
    // $STANDARD_INFORMATION of NTFS 1.2 with their own descriptor).
    let sibling = {
        let buf = dir.buf(tx, hit.node)?.clone();
        let mut s = None;
        let mut p = hit.base;
        for _ in 0..4096 {
            let elen = usize::from(le16(&buf, p + 8));
            let flags = le16(&buf, p + 12);
            if flags & 2 != 0 || elen < 16 {
                break;
            }
            let fref = le64(&buf, p) & REF_MASK;
            let fa = le32(&buf, p + 16 + 56);
            if fref >= 16 && fa & FA_DIRECTORY == 0 {
                s = Some(fref);
                break;
            }
            p += elen;
        }
        s
    };
    let sec = match (sibling, &kind) {
        (Some(s), NewKind::File(_)) => security_id(tx, s)?,
        _ => 0,
    };
    let sec = if sec == 0 {
        security_id(tx, dir_rn)?
    } else {
        sec
    };
    let rn = take_record(tx, op, path)?;
    let rs = tx.geo.file_record_size as usize;
    let old = tx.record_unchecked(rn)?.clone();
    let valid_old = old.get(0..4) == Some(b"FILE".as_slice());
    if valid_old && le16(&old, 0x16) & REC_IN_USE != 0 {
        return Err(tx.corrupt(
            format!("MFT record {rn}"),
            "$MFT's $BITMAP says free, the record says in use",
        ));
    }
    let mut seq = if valid_old {
        le16(&old, 0x10).wrapping_add(1)
    } else {
        1
    };
    if seq == 0 {
        seq = 1;
    }
    let usa_count = rs / 512 + 1;
    let first = align8((0x30 + 2 * usa_count) as u64) as usize;
    let mut rec = vec![0u8; rs];
    rec[0..4].copy_from_slice(b"FILE");
    put16(&mut rec, 4, 0x30);
    put16(&mut rec, 6, usa_count as u16);
    put16(&mut rec, 0x30, if valid_old { le16(&old, 0x30) } else { 0 });
    put16(&mut rec, 0x10, seq);
    put16(&mut rec, 0x12, 1);
    put16(&mut rec, attr::REC_ATTRS, first as u16);
    put16(
        &mut rec,
        0x16,
        match kind {
            NewKind::File(_) => REC_IN_USE,
            NewKind::Dir => REC_IN_USE | REC_DIRECTORY,
        },
    );
    put32(&mut rec, 0x18, (first + 8) as u32);
    put32(&mut rec, 0x1C, rs as u32);
    put32(&mut rec, 0x2C, rn as u32);
    put32(&mut rec, first, 0xFFFF_FFFF);
    let now = tx.now;
    let mut si = vec![0u8; 72];
    for o in [0, 8, 16, 24] {
        put64(&mut si, o, now);
    }
    put32(&mut si, 32, FA_ARCHIVE);
    put32(&mut si, 52, sec);
    let i = attr::next_instance(&mut rec);
    let a = attr::resident(AT_STANDARD_INFORMATION, &[], i, &si, false);
    let at = attr::insert_at(&rec, AT_STANDARD_INFORMATION, &[]);
    attr::splice(&mut rec, at, 0, &a).map_err(|d| tx.corrupt("new record", d))?;
    // $FILE_NAME with sizes filled in below, once $DATA is known.
    let ns = if is_dos_name(name) {
        NS_WIN32_DOS
    } else {
        NS_WIN32
    };
    let mut fname = vec![0u8; 66 + 2 * uname.len()];
    put64(&mut fname, 0, dir_rn | (u64::from(dir_seq) << 48));
    for o in [8, 16, 24, 32] {
        put64(&mut fname, o, now);
    }
    put32(
        &mut fname,
        56,
        match kind {
            NewKind::File(_) => FA_ARCHIVE,
            NewKind::Dir => FA_ARCHIVE | FA_DIRECTORY,
        },
    );
    fname[64] = uname.len() as u8;
    fname[65] = ns;
    for (i, c) in uname.iter().enumerate() {
        put16(&mut fname, 66 + 2 * i, *c);
    }
    let fi = attr::next_instance(&mut rec);
    let fa = attr::resident(AT_FILE_NAME, &[], fi, &fname, true);
    let at = attr::insert_at(&rec, AT_FILE_NAME, &[]);
    attr::splice(&mut rec, at, 0, &fa).map_err(|d| tx.corrupt("new record", d))?;
    let mut rec = match kind {
        NewKind::File(data) => {
            let nd = build_data(tx, op, path, &rec, None, &[], data)?;
            put64(&mut fname, 40, nd.alloc_size);
            put64(&mut fname, 48, data.len() as u64);
            nd.rec
        }
        NewKind::Dir => {
            let v = empty_index_root(tx.geo.index_record_size, tx.geo.cluster_size);
            let i30: Vec<u16> = "$I30".encode_utf16().collect();
            let ii = attr::next_instance(&mut rec);
            let a = attr::resident(AT_INDEX_ROOT, &i30, ii, &v, false);
            let at = attr::insert_at(&rec, AT_INDEX_ROOT, &i30);
            attr::splice(&mut rec, at, 0, &a).map_err(|d| tx.corrupt("new record", d))?;
            rec
        }
    };
    let r =
        crate::record::parse_fixed(tx.geo, rec.clone()).map_err(|d| tx.corrupt("new record", d))?;
    if let Some(range) = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_FILE_NAME)
        .and_then(|a| match &a.body {
            Body::Resident(rg) => Some(rg.clone()),
            Body::NonResident { .. } => None,
        })
    {
        rec[range].copy_from_slice(&fname);
    }
    *tx.record_unchecked(rn)? = rec;
    tx.dirty(rn);
    // The index entry.
    let klen = fname.len();
    let elen = align8(16 + klen as u64) as usize;
    let mut e = vec![0u8; elen];
    put64(&mut e, 0, rn | (u64::from(seq) << 48));
    put16(&mut e, 8, elen as u16);
    put16(&mut e, 10, klen as u16);
    e[16..16 + klen].copy_from_slice(&fname);
    dir.insert(tx, ctx.up, &uname, &e)?;
    touch_dir(tx, dir_rn)
}

/// The value of an empty `$I30` `$INDEX_ROOT`: indexing `$FILE_NAME`,
/// collation FILE_NAME, the volume's index block size and its size in
/// clusters (in 512-byte units when a block is smaller than a cluster, as
/// mkntfs, ntfs-3g and Windows write it), a small index of one end entry.
fn empty_index_root(block: u32, cluster: u32) -> Vec<u8> {
    let mut v = vec![0u8; 48];
    put32(&mut v, 0, AT_FILE_NAME);
    put32(&mut v, 4, 1); // COLLATION_FILE_NAME
    put32(&mut v, 8, block);
    v[12] = if block >= cluster {
        (block / cluster) as u8
    } else {
        (block / 512) as u8
    };
    put32(&mut v, 16, 16);
    put32(&mut v, 20, 32);
    put32(&mut v, 24, 32);
    put16(&mut v, 32 + 8, 16);
    put16(&mut v, 32 + 12, 2); // last entry
    v
}

/// Set the directory's modification and MFT-change times.
fn touch_dir(tx: &mut Tx<'_>, dir_rn: u64) -> Result<(), FsError> {
    let r = tx.parsed(dir_rn)?;
    let mut rec = tx.record(dir_rn)?.clone();
    stamp_si(tx, &mut rec, &r)?;
    *tx.record(dir_rn)? = rec;
    tx.dirty(dir_rn);
    Ok(())
}

/// Refuse to remove a directory whose index holds an entry: its
/// `$INDEX_ROOT` must be one end entry without a subnode.
fn check_empty(tx: &Tx<'_>, path: &GuestPath, r: &RawRecord) -> Result<(), FsError> {
    let i30: Vec<u16> = "$I30".encode_utf16().collect();
    let v = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_INDEX_ROOT && a.name == i30)
        .and_then(|a| r.resident(a))
        .ok_or_else(|| {
            tx.corrupt(
                format!("{path}"),
                "a directory without a resident $I30 $INDEX_ROOT",
            )
        })?;
    let root = index::parse_root(v).map_err(|d| tx.corrupt(format!("{path}"), d))?;
    match root.entries.as_slice() {
        [e] if e.key.is_none() && e.subnode.is_none() => Ok(()),
        _ => Err(FsError::NotEmpty {
            fs: tx.loc.to_string(),
            path: path.to_string(),
        }),
    }
}

/// Remove the regular file or empty directory at record `rn` from
/// directory `dir_rn`.
pub(crate) fn remove(tx: &mut Tx<'_>, ctx: &Ctx<'_>, rn: u64, dir_rn: u64) -> Result<(), FsError> {
    const OP: &str = "remove";
    preflight::check(tx, ctx.up)?;
    let path = ctx.path;
    let r = tx.parsed(rn)?;
    check_touchable(tx, OP, path, &r)?;
    if le16(&r.data, 0x16) & REC_DIRECTORY != 0 {
        check_empty(tx, path, &r)?;
    }
    let dir = Dir::open(tx, dir_rn, &path.parent().to_string())?;
    let mut names = Vec::new();
    for a in r.attrs.iter().filter(|a| a.ty == AT_FILE_NAME) {
        let k = r
            .resident(a)
            .ok_or_else(|| tx.corrupt(format!("{path}"), "$FILE_NAME is not resident"))?;
        if le64(k, 0) & REF_MASK != dir_rn {
            return Err(unsupported(
                tx,
                OP,
                path,
                "the file has hard links in other directories",
            ));
        }
        let key = index::parse_key(k).map_err(|d| tx.corrupt(format!("{path}"), d))?;
        names.push(key);
    }
    if names
        .iter()
        .filter(|k| k.namespace != index::NS_DOS)
        .count()
        > 1
    {
        return Err(unsupported(tx, OP, path, "the file has several hard links"));
    }
    // Find every entry first, so a refusal comes before any change.
    let mut hits = Vec::new();
    for k in &names {
        match dir.seek(tx, ctx.up, &k.name, true)? {
            Ok(h) if h.entry.file_ref & REF_MASK == rn => hits.push(h),
            _ => {
                return Err(tx.corrupt(&dir.place, format!("{path}: no entry for the file's name")))
            }
        }
    }
    // Free the clusters of every non-resident attribute.
    for a in &r.attrs {
        if let Body::NonResident { runs, .. } = &a.body {
            let runs = runlist::allocated(runs).map_err(|d| tx.corrupt(format!("{path}"), d))?;
            tx.free(&runs)?;
        }
    }
    // Remove the entries, each looked up again (an earlier removal moves
    // the ones after it).
    for k in &names {
        let h = match dir.seek(tx, ctx.up, &k.name, true)? {
            Ok(h) => h,
            Err(_) => return Err(tx.corrupt(&dir.place, "entry vanished")),
        };
        dir.remove(tx, ctx.up, &h)?;
    }
    free_record(tx, rn)?;
    let mut rec = tx.record(rn)?.clone();
    let flags = le16(&rec, 0x16);
    put16(&mut rec, 0x16, flags & !REC_IN_USE);
    let mut seq = le16(&rec, 0x10).wrapping_add(1);
    if seq == 0 {
        seq = 1;
    }
    put16(&mut rec, 0x10, seq);
    *tx.record(rn)? = rec;
    tx.dirty(rn);
    touch_dir(tx, dir_rn)
}

/// Rename the file at record `rn` in directory `dir_rn` to `name` in the
/// same directory (see [`move_to`]).
pub(crate) fn rename(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    rn: u64,
    dir_rn: u64,
    name: &str,
) -> Result<(), FsError> {
    let place = ctx.path.parent().to_string();
    move_to(tx, ctx, rn, dir_rn, (dir_rn, &place), name)
}

/// How many directories up from a move's target directory are walked at
/// most looking for the moved directory (a deeper tree is refused).
const MAX_MOVE_DEPTH: usize = 4096;

/// Refuse moving directory `rn` into `to_dir` when `to_dir` is `rn` or
/// below it: walk up from `to_dir` through the parent references of the
/// `$FILE_NAME`s to the root.
fn check_not_below(tx: &mut Tx<'_>, path: &GuestPath, rn: u64, to_dir: u64) -> Result<(), FsError> {
    let mut cur = to_dir;
    for _ in 0..MAX_MOVE_DEPTH {
        if cur == rn {
            return Err(unsupported(
                tx,
                "rename",
                path,
                "a directory cannot move into itself or its own subtree (invalid input)",
            ));
        }
        if cur == ROOT_RECORD {
            return Ok(());
        }
        let r = tx.parsed(cur)?;
        let parent = r
            .attrs
            .iter()
            .filter(|a| a.ty == AT_FILE_NAME)
            .filter_map(|a| r.resident(a))
            .find(|k| k.len() >= 66)
            .map(|k| le64(k, 0) & REF_MASK)
            .ok_or_else(|| {
                tx.corrupt(
                    format!("directory at MFT record {cur}"),
                    "no resident $FILE_NAME",
                )
            })?;
        cur = parent;
    }
    Err(tx.corrupt(
        format!("directory at MFT record {to_dir}"),
        format!("more than {MAX_MOVE_DEPTH} directories above it"),
    ))
}

/// Move the file or directory at record `rn` from directory `dir_rn` to
/// `name` in directory `to` (record, path shown), which may be the same
/// directory; a file of that name other than itself must be gone already.
/// Every name of the file (a separate DOS name included) is replaced by one
/// `$FILE_NAME`, namespace as for a new file, its parent reference the new
/// directory's. A directory is refused when `to` is it or below it. Both
/// directories' times are set.
pub(crate) fn move_to(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    rn: u64,
    dir_rn: u64,
    (to_rn, to_place): (u64, &str),
    name: &str,
) -> Result<(), FsError> {
    const OP: &str = "rename";
    preflight::check(tx, ctx.up)?;
    let path = ctx.path;
    let uname: Vec<u16> = name.encode_utf16().collect();
    if !valid_name(&uname) {
        return Err(unsupported(
            tx,
            OP,
            path,
            "the new name is not a valid Windows file name",
        ));
    }
    let r = tx.parsed(rn)?;
    if r.attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
        return Err(unsupported(
            tx,
            OP,
            path,
            "the file has an $ATTRIBUTE_LIST (not implemented)",
        ));
    }
    if to_rn != dir_rn && le16(&r.data, 0x16) & REC_DIRECTORY != 0 {
        check_not_below(tx, path, rn, to_rn)?;
    }
    let dir = Dir::open(tx, dir_rn, &path.parent().to_string())?;
    let mut keys = Vec::new();
    let mut template: Option<Vec<u8>> = None;
    for a in r.attrs.iter().filter(|a| a.ty == AT_FILE_NAME) {
        let k = r
            .resident(a)
            .ok_or_else(|| tx.corrupt(format!("{path}"), "$FILE_NAME is not resident"))?;
        if le64(k, 0) & REF_MASK != dir_rn {
            return Err(unsupported(
                tx,
                OP,
                path,
                "the file has hard links in other directories",
            ));
        }
        let key = index::parse_key(k).map_err(|d| tx.corrupt(format!("{path}"), d))?;
        if key.namespace != index::NS_DOS {
            if template.is_some() {
                return Err(unsupported(tx, OP, path, "the file has several hard links"));
            }
            template = Some(k.to_vec());
        }
        keys.push((a.off, a.len, key));
    }
    let template =
        template.ok_or_else(|| tx.corrupt(format!("{path}"), "no Win32 or POSIX name"))?;
    for (_, _, k) in &keys {
        match dir.seek(tx, ctx.up, &k.name, true)? {
            Ok(h) if h.entry.file_ref & REF_MASK == rn => {}
            _ => {
                return Err(tx.corrupt(&dir.place, format!("{path}: no entry for the file's name")))
            }
        }
    }
    for (_, _, k) in &keys {
        let h = match dir.seek(tx, ctx.up, &k.name, true)? {
            Ok(h) => h,
            Err(_) => return Err(tx.corrupt(&dir.place, "entry vanished")),
        };
        dir.remove(tx, ctx.up, &h)?;
    }
    // The new $FILE_NAME: the old one's parent, times and sizes, the MFT
    // change time now.
    let mut fname = template[..66].to_vec();
    put64(&mut fname, 24, tx.now);
    let to_dir = if to_rn == dir_rn {
        dir.clone()
    } else {
        let seq = le16(&tx.parsed(to_rn)?.data, 0x10);
        put64(&mut fname, 0, to_rn | (u64::from(seq) << 48));
        Dir::open(tx, to_rn, to_place)?
    };
    fname[64] = uname.len() as u8;
    fname[65] = if is_dos_name(name) {
        NS_WIN32_DOS
    } else {
        NS_WIN32
    };
    for c in &uname {
        fname.extend_from_slice(&c.to_le_bytes());
    }
    let mut rec = tx.record(rn)?.clone();
    // Delete the old names, last first so the offsets stay good.
    for (off, len, _) in keys.iter().rev() {
        attr::splice(&mut rec, *off, *len, &[]).map_err(|d| tx.corrupt(format!("{path}"), d))?;
    }
    let i = attr::next_instance(&mut rec);
    let a = attr::resident(AT_FILE_NAME, &[], i, &fname, true);
    let at = attr::insert_at(&rec, AT_FILE_NAME, &[]);
    attr::splice(&mut rec, at, 0, &a).map_err(|d| {
        unsupported(
            tx,
            OP,
            path,
            format!("the new name does not fit in the file's MFT record ({d})"),
        )
    })?;
    put16(&mut rec, 0x12, 1);
    let r2 = crate::record::parse_fixed(tx.geo, rec.clone())
        .map_err(|d| tx.corrupt(format!("{path}"), d))?;
    if let Some(si) = r2.attrs.iter().find(|a| a.ty == AT_STANDARD_INFORMATION) {
        if let Body::Resident(range) = &si.body {
            put64(&mut rec, range.start + 16, tx.now);
        }
    }
    *tx.record(rn)? = rec;
    tx.dirty(rn);
    let seq = le16(&r.data, 0x10);
    if to_dir.seek(tx, ctx.up, &uname, false)?.is_ok() {
        return Err(FsError::Exists {
            fs: tx.loc.to_string(),
            path: format!("{to_place}/{name}").replace("//", "/"),
        });
    }
    let klen = fname.len();
    let elen = align8(16 + klen as u64) as usize;
    let mut e = vec![0u8; elen];
    put64(&mut e, 0, rn | (u64::from(seq) << 48));
    put16(&mut e, 8, elen as u16);
    put16(&mut e, 10, klen as u16);
    e[16..16 + klen].copy_from_slice(&fname);
    to_dir.insert(tx, ctx.up, &uname, &e)?;
    touch_dir(tx, dir_rn)?;
    if to_rn != dir_rn {
        touch_dir(tx, to_rn)?;
    }
    Ok(())
}

/// Clear record `rn`'s bit in `$MFT`'s `$BITMAP`.
fn free_record(tx: &mut Tx<'_>, rn: u64) -> Result<(), FsError> {
    let r0 = tx.parsed(0)?;
    let a = r0
        .attrs
        .iter()
        .find(|a| a.ty == AT_BITMAP && a.name.is_empty())
        .ok_or_else(|| tx.corrupt("$MFT (MFT record 0)", "no $BITMAP"))?
        .clone();
    let bit = 1u8 << (rn % 8);
    match &a.body {
        Body::Resident(range) => {
            let at = range.start + (rn / 8) as usize;
            if at >= range.end {
                return Err(tx.corrupt("$MFT's $BITMAP", format!("record {rn} is past it")));
            }
            let rec = tx.record(0)?;
            if rec[at] & bit == 0 {
                return Err(tx.corrupt("$MFT's $BITMAP", format!("record {rn} is already free")));
            }
            rec[at] &= !bit;
            tx.dirty(0);
        }
        Body::NonResident { runs, .. } => {
            let runs = runlist::allocated(runs).map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
            let cs = u64::from(tx.geo.cluster_size);
            let p = runlist::map_range(&runs, cs, rn / 8, 1)
                .map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
            let Some(&(dev_off, _)) = p.first() else {
                return Err(tx.corrupt("$MFT's $BITMAP", "unmapped"));
            };
            let mut b = [0u8; 1];
            tx.device().read_at(dev_off, &mut b)?;
            if b[0] & bit == 0 {
                return Err(tx.corrupt("$MFT's $BITMAP", format!("record {rn} is already free")));
            }
            tx.write_data(dev_off, vec![b[0] & !bit]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_names() {
        for ok in ["SYSTEM", "A.TXT", "CONFIG.SYS", "X~1", "12345678.ABC"] {
            assert!(is_dos_name(ok), "{ok}");
        }
        for bad in [
            "system",
            "A.txt",
            "123456789",
            "A.B.C",
            "A.ABCD",
            "",
            ".X",
            "A B",
        ] {
            assert!(!is_dos_name(bad), "{bad}");
        }
        let n = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
        assert!(valid_name(&n("ok name.txt")));
        assert!(!valid_name(&n("a:b")));
        assert!(!valid_name(&n("")));
        assert!(!valid_name(&n("a\u{1}")));
    }
}
