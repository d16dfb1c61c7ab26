//! NTFS: boot sector checks and label as libblkid (label from `$Volume`'s
//! `$VOLUME_NAME`), plus the volume's dirty flag, whether `$LogFile` is
//! clean, and whether `hiberfil.sys` holds a hibernation image.

use crate::bytes::{ensure, some, Bytes, Miss, PResult};
use crate::util::utf16_label;
use crate::{Ctx, FsKind, Probe};

const MFT_RECORD_LOGFILE: u64 = 2;
const MFT_RECORD_VOLUME: u64 = 3;
const MFT_RECORD_ROOT: u64 = 5;
const MAX_CLUSTER: u64 = 2 * 1024 * 1024;
/// Largest MFT record / index block / log page we read.
const MAX_RECORD: u64 = 64 * 1024;

const ATTR_DATA: u32 = 0x80;
const ATTR_VOLUME_NAME: u32 = 0x60;
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_INDEX_ROOT: u32 = 0x90;
const ATTR_INDEX_ALLOCATION: u32 = 0xa0;
const ATTR_END: u32 = 0xffff_ffff;

const VOLUME_IS_DIRTY: u16 = 0x0001;
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
const LOGFILE_NO_CLIENT: u16 = 0xffff;

/// Bounds on walking structures.
const MAX_ATTRS: usize = 256;
const MAX_RUNS: usize = 4096;
const MAX_INDEX_BLOCKS: usize = 64;
const MAX_INDEX_ENTRIES: usize = 4096;

/// Geometry of the volume.
struct Vol {
    cluster: u64,
    record: u64,
    mft_off: u64,
}

pub(crate) fn probe(ctx: &Ctx<'_>, deep: bool) -> PResult<Probe> {
    let b = ctx.head();
    ensure(b.has(3, b"NTFS    "))?;
    let sector_size = b.le16(11)?;
    ensure((256..=4096).contains(&sector_size) && sector_size.is_power_of_two())?;
    let spc_raw = b.u8(13)?;
    let spc: u64 = match spc_raw {
        1 | 2 | 4 | 8 | 16 | 32 | 64 | 128 => u64::from(spc_raw),
        240..=249 => 1u64 << (256 - u32::from(spc_raw)),
        _ => return Err(Miss::Not),
    };
    let cluster = u64::from(sector_size) * spc;
    ensure(cluster <= MAX_CLUSTER)?;
    // Fields of the FAT BPB that NTFS keeps zero.
    ensure(
        b.le16(14)? == 0
            && b.u8(16)? == 0
            && b.le16(17)? == 0
            && b.le16(19)? == 0
            && b.le16(22)? == 0
            && b.le32(32)? == 0,
    )?;
    let cpr = b.u8(64)?;
    if !(0xe1..=0xf7).contains(&cpr) {
        ensure(matches!(cpr, 1 | 2 | 4 | 8 | 16 | 32 | 64))?;
    }
    let record = if (cpr as i8) > 0 {
        u64::from(cpr) * cluster
    } else {
        let shift = -i32::from(cpr as i8);
        ensure((0..31).contains(&shift))?;
        1u64 << shift
    };
    ensure(record >= 4)?;
    let nr_sectors = b.le64(40)?;
    let nr_clusters = nr_sectors / spc;
    let mft_lcn = b.le64(48)?;
    let mirr_lcn = b.le64(56)?;
    ensure(mft_lcn <= nr_clusters && mirr_lcn <= nr_clusters)?;
    let mft_off = some(mft_lcn.checked_mul(cluster))?;
    ensure(record <= MAX_RECORD)?;
    let rec_len = usize::try_from(record).map_err(|_| Miss::Not)?;

    let rec0 = ctx.read(mft_off, rec_len)?;
    ensure(rec0.starts_with(b"FILE"))?;
    let vol_off = some(
        MFT_RECORD_VOLUME
            .checked_mul(record)
            .and_then(|x| x.checked_add(mft_off)),
    )?;
    let raw3 = ctx.read(vol_off, rec_len)?;
    ensure(raw3.starts_with(b"FILE"))?;

    let vol = Vol {
        cluster,
        record,
        mft_off,
    };
    let mut p = Probe::new(FsKind::Ntfs);
    let mut rec3 = raw3.clone();
    if !fixup(&mut rec3) {
        p.note("$Volume MFT record fails its update sequence check; read as stored");
        rec3 = raw3;
    }
    let r3 = Bytes(&rec3);

    // Label, walking the attributes as blkid does.
    for a in attrs(&r3) {
        if a.ty == ATTR_VOLUME_NAME {
            let val_off = usize::from(r3.le16(a.off + 20)?);
            let val_len = r3.le32(a.off + 16)? as usize;
            let room = rec_len.saturating_sub(a.off);
            if val_off <= room && val_len <= room - val_off {
                let v = r3.get(a.off + val_off, val_len)?;
                p.label = utf16_label(ctx.cap(v), false, false);
            }
            break;
        }
    }
    p.block_size = u32::try_from(cluster).ok();
    p.size = nr_sectors.checked_mul(u64::from(sector_size));
    p.set("FSBLOCKSIZE", cluster.to_string());
    p.set("BLOCK_SIZE", sector_size.to_string());
    if let Some(s) = p.size {
        p.set("FSSIZE", s.to_string());
    }
    let serial = b.le64(72)?;
    if serial != 0 {
        p.uuid = Some(format!("{serial:016X}"));
    }

    // $VOLUME_INFORMATION: version and the dirty flag.
    let mut have_info = false;
    for a in attrs(&r3) {
        if a.ty != ATTR_VOLUME_INFORMATION || r3.u8(a.off + 8)? != 0 {
            continue;
        }
        let val = a.off + usize::from(r3.le16(a.off + 20)?);
        if r3.le32(a.off + 16)? < 12 {
            continue;
        }
        let major = r3.u8(val + 8)?;
        let minor = r3.u8(val + 9)?;
        let flags = r3.le16(val + 10)?;
        p.set("NTFS_VERSION", format!("{major}.{minor}"));
        if flags & VOLUME_IS_DIRTY != 0 {
            p.state.dirty = true;
            p.note("$Volume is marked dirty: chkdsk will run at next Windows boot");
        }
        if flags & !VOLUME_IS_DIRTY != 0 {
            p.note(format!("$Volume flags 0x{flags:04x}"));
        }
        have_info = true;
        break;
    }
    if !have_info {
        p.note("no $VOLUME_INFORMATION in $Volume: dirty flag not checked");
    }

    if deep && ctx.opts().check_ntfs_state {
        match logfile_state(ctx, &vol) {
            Ok((unclean, why)) => {
                p.state.needs_recovery |= unclean;
                p.note(why);
            }
            Err(Miss::Io(e)) => return Err(Miss::Io(e)),
            Err(Miss::Not) => p.note("$LogFile state could not be determined"),
        }
        match hiberfile_state(ctx, &vol) {
            Ok(Hiber::Absent) => p.note("no hiberfil.sys in the root directory"),
            Ok(Hiber::Inactive(why)) => p.note(why),
            Ok(Hiber::Active(why)) => {
                p.state.hibernated = true;
                p.note(why);
            }
            Err(Miss::Io(e)) => return Err(Miss::Io(e)),
            Err(Miss::Not) => {
                p.note("hiberfil.sys could not be looked up: hibernation state unknown");
            }
        }
    } else {
        p.note("$LogFile and hiberfil.sys not checked");
    }
    Ok(p)
}

/// Apply an NTFS update sequence array ("fixup") in place: the last two
/// bytes of every 512-byte stride must equal the update sequence number and
/// are replaced by the saved bytes. False when the record is torn or the
/// array is malformed.
fn fixup(rec: &mut [u8]) -> bool {
    let b = Bytes(rec);
    let (Ok(usa_ofs), Ok(usa_count)) = (b.le16(4), b.le16(6)) else {
        return false;
    };
    let usa_ofs = usize::from(usa_ofs);
    let usa_count = usize::from(usa_count);
    if usa_count < 2 || (usa_count - 1) * 512 > rec.len() {
        return false;
    }
    let Ok(usn) = b.arr::<2>(usa_ofs) else {
        return false;
    };
    let mut saved = Vec::with_capacity(usa_count - 1);
    for i in 1..usa_count {
        match b.arr::<2>(usa_ofs + 2 * i) {
            Ok(v) => saved.push(v),
            Err(_) => return false,
        }
    }
    for (i, v) in saved.iter().enumerate() {
        let end = (i + 1) * 512;
        match rec.get_mut(end - 2..end) {
            Some(s) if s == usn => s.copy_from_slice(v),
            _ => return false,
        }
    }
    true
}

/// One attribute of an MFT record: type and offset of its header.
struct Attr {
    ty: u32,
    off: usize,
}

/// The attributes of an MFT record, walked as blkid does (bounded).
fn attrs(r: &Bytes<'_>) -> Vec<Attr> {
    let mut out = Vec::new();
    let Ok(first) = r.le16(20) else {
        return out;
    };
    let Ok(allocated) = r.le32(28) else {
        return out;
    };
    let mut off = usize::from(first);
    while out.len() < MAX_ATTRS
        && off.checked_add(22).is_some_and(|e| e <= r.len())
        && off <= allocated as usize
    {
        let (Ok(ty), Ok(len)) = (r.le32(off), r.le32(off + 4)) else {
            break;
        };
        if len == 0 || ty == ATTR_END {
            break;
        }
        out.push(Attr { ty, off });
        match off.checked_add(len as usize) {
            Some(n) => off = n,
            None => break,
        }
    }
    out
}

/// The name of an attribute (UTF-16LE at `name_offset`, `name_len` chars).
fn attr_name(r: &Bytes<'_>, a: &Attr) -> PResult<Vec<u8>> {
    let n = usize::from(r.u8(a.off + 9)?);
    let o = usize::from(r.le16(a.off + 10)?);
    Ok(r.get(a.off + o, n * 2)?.to_vec())
}

fn is_i30(r: &Bytes<'_>, a: &Attr) -> bool {
    let want: Vec<u8> = "$I30".encode_utf16().flat_map(u16::to_le_bytes).collect();
    attr_name(r, a).map(|n| n == want).unwrap_or(false)
}

/// A run of a non-resident attribute: `len` clusters from `vcn`, at `lcn`
/// (`None` for a sparse run).
#[derive(Debug, Clone, Copy)]
struct Run {
    vcn: u64,
    len: u64,
    lcn: Option<u64>,
}

/// Decode the mapping pairs of a non-resident attribute.
fn runs(r: &Bytes<'_>, a: &Attr) -> PResult<Vec<Run>> {
    ensure(r.u8(a.off + 8)? != 0)?;
    let attr_len = r.le32(a.off + 4)? as usize;
    let end = some(a.off.checked_add(attr_len))?.min(r.len());
    let mut pos = a.off + usize::from(r.le16(a.off + 32)?);
    let mut vcn = r.le64(a.off + 16)?;
    let mut lcn: i64 = 0;
    let mut out = Vec::new();
    while pos < end && out.len() < MAX_RUNS {
        let h = r.u8(pos)?;
        if h == 0 {
            break;
        }
        let ln = usize::from(h & 0x0f);
        let lo = usize::from(h >> 4);
        ensure((1..=8).contains(&ln) && lo <= 8)?;
        let len = le_unsigned(r.get(pos + 1, ln)?);
        let run_lcn = if lo == 0 {
            None
        } else {
            let delta = le_signed(r.get(pos + 1 + ln, lo)?);
            lcn = some(lcn.checked_add(delta))?;
            Some(u64::try_from(lcn).map_err(|_| Miss::Not)?)
        };
        ensure(len > 0)?;
        out.push(Run {
            vcn,
            len,
            lcn: run_lcn,
        });
        vcn = some(vcn.checked_add(len))?;
        pos += 1 + ln + lo;
    }
    Ok(out)
}

fn le_unsigned(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn le_signed(b: &[u8]) -> i64 {
    let u = le_unsigned(b);
    let bits = (b.len() * 8) as u32;
    if bits == 0 || bits >= 64 {
        return u as i64;
    }
    let shift = 64 - bits;
    ((u << shift) as i64) >> shift
}

/// Read `len` bytes at byte position `pos` of a non-resident attribute.
fn read_nonres(ctx: &Ctx<'_>, vol: &Vol, runs: &[Run], pos: u64, len: usize) -> PResult<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut cur = pos;
    let end = some(pos.checked_add(len as u64))?;
    while cur < end {
        let vcn = cur / vol.cluster;
        let within = cur % vol.cluster;
        let run = some(runs.iter().find(|r| vcn >= r.vcn && vcn - r.vcn < r.len))?;
        let run_end = some(
            run.vcn
                .checked_add(run.len)
                .and_then(|x| x.checked_mul(vol.cluster)),
        )?;
        let chunk = (end.min(run_end) - cur).min(MAX_RECORD);
        let chunk_usize = usize::try_from(chunk).map_err(|_| Miss::Not)?;
        match run.lcn {
            None => out.resize(out.len() + chunk_usize, 0),
            Some(lcn) => {
                let off = some(
                    lcn.checked_add(vcn - run.vcn)
                        .and_then(|x| x.checked_mul(vol.cluster))
                        .and_then(|x| x.checked_add(within)),
                )?;
                out.extend_from_slice(&ctx.read(off, chunk_usize)?);
            }
        }
        cur += chunk;
    }
    Ok(out)
}

/// The unnamed `$DATA` attribute of a record.
fn data_attr(r: &Bytes<'_>) -> Option<Attr> {
    attrs(r)
        .into_iter()
        .find(|a| a.ty == ATTR_DATA && r.u8(a.off + 9).ok() == Some(0))
}

/// MFT record `n`, fixed up. Records 0..16 are read from the start of the
/// MFT; others through `$MFT`'s own run list.
fn mft_record(ctx: &Ctx<'_>, vol: &Vol, mft_runs: Option<&[Run]>, n: u64) -> PResult<Vec<u8>> {
    let rec_len = usize::try_from(vol.record).map_err(|_| Miss::Not)?;
    let pos = some(n.checked_mul(vol.record))?;
    let mut rec = match mft_runs {
        Some(runs) if n >= 16 => read_nonres(ctx, vol, runs, pos, rec_len)?,
        _ => ctx.read(some(vol.mft_off.checked_add(pos))?, rec_len)?,
    };
    ensure(rec.starts_with(b"FILE"))?;
    ensure(fixup(&mut rec))?;
    Ok(rec)
}

/// Whether `$LogFile` says the volume was not shut down cleanly (as ntfs-3g
/// checks it), with a note.
fn logfile_state(ctx: &Ctx<'_>, vol: &Vol) -> PResult<(bool, String)> {
    let rec = mft_record(ctx, vol, None, MFT_RECORD_LOGFILE)?;
    let r = Bytes(&rec);
    let a = some(data_attr(&r))?;
    let runs = runs(&r, &a)?;
    let first = read_nonres(ctx, vol, &runs, 0, 512)?;
    if first.iter().all(|&x| x == 0xff) {
        return Ok((
            false,
            "$LogFile is empty (reset by mkntfs or ntfsfix)".into(),
        ));
    }
    let f = Bytes(&first);
    ensure(f.has(0, b"RSTR") || f.has(0, b"CHKD"))?;
    let page = f.le32(16)?;
    ensure(page.is_power_of_two() && (512..=65536).contains(&page))?;
    let page = u64::from(page);
    let mut best: Option<(u64, u16, u16)> = None;
    for i in 0..2u64 {
        let mut pg = read_nonres(ctx, vol, &runs, i * page, page as usize)?;
        if !pg.starts_with(b"RSTR") || !fixup(&mut pg) {
            continue;
        }
        let b = Bytes(&pg);
        let ra = usize::from(b.le16(24)?);
        let lsn = b.le64(ra)?;
        let in_use = b.le16(ra + 12)?;
        let flags = b.le16(ra + 14)?;
        if best.is_none_or(|(l, _, _)| lsn > l) {
            best = Some((lsn, in_use, flags));
        }
    }
    let (_, in_use, flags) = some(best)?;
    if in_use != LOGFILE_NO_CLIENT && flags & RESTART_VOLUME_IS_CLEAN == 0 {
        Ok((
            true,
            "$LogFile is not clean: Windows did not shut down cleanly (or used Fast \
             Startup); the log must be replayed by Windows"
                .into(),
        ))
    } else {
        Ok((false, "$LogFile is clean".into()))
    }
}

enum Hiber {
    Absent,
    Inactive(String),
    Active(String),
}

/// Look up `hiberfil.sys` in the root directory and read its signature.
fn hiberfile_state(ctx: &Ctx<'_>, vol: &Vol) -> PResult<Hiber> {
    let rec0 = mft_record(ctx, vol, None, 0)?;
    let r0 = Bytes(&rec0);
    let mft_runs = runs(&r0, &some(data_attr(&r0))?)?;

    let root = mft_record(ctx, vol, None, MFT_RECORD_ROOT)?;
    let r = Bytes(&root);
    let all = attrs(&r);
    let ir = some(
        all.iter()
            .find(|a| a.ty == ATTR_INDEX_ROOT && is_i30(&r, a)),
    )?;
    ensure(r.u8(ir.off + 8)? == 0)?;
    let val = ir.off + usize::from(r.le16(ir.off + 20)?);
    let index_block = u64::from(r.le32(val + 8)?);
    let mut pending: Vec<u64> = Vec::new();
    let mut found = scan_entries(&r, val + 16, &mut pending)?;

    if found.is_none() && !pending.is_empty() {
        let ia = some(
            all.iter()
                .find(|a| a.ty == ATTR_INDEX_ALLOCATION && is_i30(&r, a)),
        )?;
        let ia_runs = runs(&r, ia)?;
        ensure(index_block.is_power_of_two() && (512..=MAX_RECORD).contains(&index_block))?;
        let vcn_size = if vol.cluster <= index_block {
            vol.cluster
        } else {
            512
        };
        let mut visited = 0usize;
        while let Some(vcn) = pending.pop() {
            visited += 1;
            if visited > MAX_INDEX_BLOCKS {
                return Err(Miss::Not);
            }
            let pos = some(vcn.checked_mul(vcn_size))?;
            let mut blk = read_nonres(ctx, vol, &ia_runs, pos, index_block as usize)?;
            if !blk.starts_with(b"INDX") || !fixup(&mut blk) {
                continue;
            }
            if let Some(m) = scan_entries(&Bytes(&blk), 24, &mut pending)? {
                found = Some(m);
                break;
            }
        }
    }
    let Some(mref) = found else {
        return Ok(Hiber::Absent);
    };
    let rec = mft_record(ctx, vol, Some(&mft_runs), mref & 0x0000_ffff_ffff_ffff)?;
    let hr = Bytes(&rec);
    ensure(hr.le16(22)? & 1 != 0)?; // in use
    let a = some(data_attr(&hr))?;
    let (size, head) = if hr.u8(a.off + 8)? == 0 {
        let len = hr.le32(a.off + 16)?;
        let v = a.off + usize::from(hr.le16(a.off + 20)?);
        (
            u64::from(len),
            hr.get(v, 4).map(<[u8]>::to_vec).unwrap_or_default(),
        )
    } else {
        let size = hr.le64(a.off + 48)?;
        let runs = runs(&hr, &a)?;
        let head = if size >= 4 {
            read_nonres(ctx, vol, &runs, 0, 4)?
        } else {
            Vec::new()
        };
        (size, head)
    };
    let sig = String::from_utf8_lossy(&head).into_owned();
    if size < 4096 {
        return Ok(Hiber::Inactive(format!(
            "hiberfil.sys is only {size} bytes: no hibernation image"
        )));
    }
    match head.as_slice() {
        b"hibr" | b"HIBR" => Ok(Hiber::Active(format!(
            "hiberfil.sys starts with \"{sig}\": Windows is hibernated or shut down with \
             Fast Startup; changes made now would be lost or corrupt the volume"
        ))),
        b"rstr" | b"RSTR" => Ok(Hiber::Active(format!(
            "hiberfil.sys starts with \"{sig}\": a resume from hibernation was in progress"
        ))),
        b"wake" | b"WAKE" => Ok(Hiber::Inactive(format!(
            "hiberfil.sys starts with \"{sig}\": a stale image Windows already resumed from"
        ))),
        _ => Ok(Hiber::Inactive(
            "hiberfil.sys present without a hibernation signature".into(),
        )),
    }
}

/// Scan the index entries of the index header at `ih` for `hiberfil.sys`;
/// subnode VCNs are pushed to `pending`.
fn scan_entries(r: &Bytes<'_>, ih: usize, pending: &mut Vec<u64>) -> PResult<Option<u64>> {
    let first = r.le32(ih)? as usize;
    let total = r.le32(ih + 4)? as usize;
    let end = some(ih.checked_add(total))?.min(r.len());
    let mut pos = some(ih.checked_add(first))?;
    let want: Vec<u8> = "hiberfil.sys"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    for _ in 0..MAX_INDEX_ENTRIES {
        if pos.checked_add(16).is_none_or(|e| e > end) {
            break;
        }
        let mref = r.le64(pos)?;
        let len = usize::from(r.le16(pos + 8)?);
        let key_len = usize::from(r.le16(pos + 10)?);
        let flags = r.le16(pos + 12)?;
        if len < 16 {
            break;
        }
        if flags & 1 != 0 && len >= 24 {
            pending.push(r.le64(pos + len - 8)?);
        }
        if flags & 2 != 0 {
            break;
        }
        if key_len >= 66 {
            let n = usize::from(r.u8(pos + 16 + 64)?);
            if let Ok(name) = r.get(pos + 16 + 66, n * 2) {
                if name.len() == want.len()
                    && name
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
                {
                    return Ok(Some(mref));
                }
            }
        }
        pos += len;
    }
    Ok(None)
}
