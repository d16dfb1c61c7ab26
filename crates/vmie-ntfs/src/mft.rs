//! Growing `$MFT` when no free record is left: its `$DATA` is extended by
//! 16 records (at least one cluster), first into what it already has
//! allocated past its data, else by new clusters (the last run extended in
//! place when the clusters after it are free, else a run taken next-fit from
//! there, the MFT zone included), and its `$BITMAP` by the bits for them
//! (a resident value grown by 8 bytes at a time; a non-resident one within
//! its clusters, or by one more). The new records are written formatted and
//! free (`FILE`, sequence number 1, not in use), as ntfs-3g formats them.
//!
//! Record 0 must keep describing all of `$MFT` by itself: when the grown
//! runlist (or bitmap) does not fit in it, which would need an
//! `$ATTRIBUTE_LIST`, the operation is refused. A record 0 that already has
//! an attribute list is refused as well.

use vmie_guestfs::FsError;

use crate::attr;
use crate::le::{le16, le64, put16, put32};
use crate::record::{Body, AT_ATTRIBUTE_LIST, AT_DATA};
use crate::runlist;
use crate::tx::Tx;

const AT_BITMAP: u32 = 0xB0;
/// Records added at a time (as ntfs-3g extends `$MFT`).
const GROW_RECORDS: u64 = 16;
const PLACE: &str = "$MFT (MFT record 0)";
/// Most bytes of `$MFT`'s `$BITMAP` rewritten when it grows.
const MAX_BITMAP_REWRITE: u64 = 1 << 20;

fn refuse(tx: &Tx<'_>, op: &str, why: impl Into<String>) -> FsError {
    FsError::Unsupported {
        fs: tx.loc.to_string(),
        op: op.to_string(),
        why: format!("no free MFT record, and $MFT cannot grow: {}", why.into()),
    }
}

/// A formatted, free MFT record `rn` of `rs` bytes (fixup not applied).
fn formatted(rs: usize, rn: u64) -> Vec<u8> {
    let usa_count = rs / 512 + 1;
    let first = (0x30 + 2 * usa_count).div_ceil(8) * 8;
    let mut rec = vec![0u8; rs];
    rec[0..4].copy_from_slice(b"FILE");
    put16(&mut rec, 4, 0x30);
    put16(&mut rec, 6, usa_count as u16);
    put16(&mut rec, 0x10, 1);
    put16(&mut rec, attr::REC_ATTRS, first as u16);
    put32(&mut rec, 0x18, (first + 8) as u32);
    put32(&mut rec, 0x1C, rs as u32);
    put32(&mut rec, 0x2C, rn as u32);
    put32(&mut rec, first, 0xFFFF_FFFF);
    rec
}

/// Grow `$MFT`; returns the first new record, already marked in use in
/// `$MFT`'s `$BITMAP`.
pub(crate) fn grow(tx: &mut Tx<'_>, op: &str) -> Result<u64, FsError> {
    let r0 = tx.parsed(0)?;
    if r0.attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
        return Err(refuse(
            tx,
            op,
            "$MFT has an $ATTRIBUTE_LIST (not implemented)",
        ));
    }
    let data = r0
        .attrs
        .iter()
        .find(|a| a.ty == AT_DATA && a.name.is_empty())
        .ok_or_else(|| tx.corrupt(PLACE, "no $DATA"))?
        .clone();
    let Body::NonResident {
        lowest_vcn: 0,
        data_size,
        init_size,
        runs,
        ..
    } = &data.body
    else {
        return Err(tx.corrupt(PLACE, "$DATA is not one non-resident extent"));
    };
    let (data_size, init_size) = (*data_size, *init_size);
    let rs = u64::from(tx.geo.file_record_size);
    let cs = u64::from(tx.geo.cluster_size);
    if init_size != data_size || data_size % rs != 0 {
        return Err(refuse(
            tx,
            op,
            format!(
                "$MFT's data size {data_size} / initialized size {init_size} are not whole records"
            ),
        ));
    }
    let old_records = tx.mft_records();
    if old_records != data_size / rs || old_records < 24 {
        return Err(tx.corrupt(PLACE, "$DATA maps fewer records than its size says"));
    }
    let runs = runlist::allocated(runs).map_err(|d| tx.corrupt(PLACE, d))?;
    let allocated = le64(&r0.data, data.off + 40);
    let want = (GROW_RECORDS * rs).max(cs);
    let new_data = if allocated > data_size {
        // Preallocated clusters first.
        allocated.min(data_size + want) / rs * rs
    } else {
        data_size + want.div_ceil(rs) * rs
    };
    if new_data <= data_size || new_data / rs > u64::from(u32::MAX) {
        return Err(refuse(tx, op, "$MFT cannot grow by a whole record"));
    }
    let mut new_runs = runs.clone();
    let mut new_alloc = allocated;
    if new_data > allocated {
        let need = (new_data - allocated).div_ceil(cs);
        let hint = runs.last().map_or(tx.geo.mft_lcn, |&(l, n)| l + n);
        new_runs.extend(tx.alloc_mft(need, hint)?);
        new_runs = runlist::merge(&new_runs);
        new_alloc = allocated + need * cs;
    }
    if let Err(d) = resplice(tx, &r0, &data, &new_runs, new_alloc, new_data)? {
        return Err(refuse(
            tx,
            op,
            format!(
                "the grown $DATA ({} runs) does not fit in MFT record 0 ({d}); an $ATTRIBUTE_LIST would be needed",
                new_runs.len()
            ),
        ));
    }
    tx.dirty(0);
    tx.set_mft_map(new_runs, new_data);
    let new_records = new_data / rs;
    for rn in old_records..new_records {
        tx.stage_record(rn, formatted(rs as usize, rn))?;
    }
    grow_bitmap(tx, op, old_records, new_records)?;
    Ok(old_records)
}

/// Give `$MFT`'s `$BITMAP` the bits of records up to `new_records`, those
/// from `old_records` clear except `old_records`'s own.
fn grow_bitmap(
    tx: &mut Tx<'_>,
    op: &str,
    old_records: u64,
    new_records: u64,
) -> Result<(), FsError> {
    let r0 = tx.parsed(0)?;
    let bm = r0
        .attrs
        .iter()
        .find(|a| a.ty == AT_BITMAP && a.name.is_empty())
        .ok_or_else(|| tx.corrupt(PLACE, "no $BITMAP"))?
        .clone();
    let need = new_records.div_ceil(8);
    let fix = |bytes: &mut [u8], first_byte: u64| {
        for (i, b) in bytes.iter_mut().enumerate() {
            for bit in 0..8 {
                let rn = (first_byte + i as u64) * 8 + bit;
                if rn >= old_records {
                    *b &= !(1 << bit);
                }
                if rn == old_records {
                    *b |= 1 << bit;
                }
            }
        }
    };
    match &bm.body {
        Body::Resident(range) => {
            let mut value = r0.data[range.clone()].to_vec();
            if (value.len() as u64) < need {
                value.resize((need.div_ceil(8) * 8) as usize, 0);
            }
            fix(&mut value, 0);
            let a = attr::resident(AT_BITMAP, &[], le16(&r0.data, bm.off + 14), &value, false);
            let rec = tx.record(0)?;
            if let Err(d) = attr::splice(rec, bm.off, bm.len, &a) {
                return Err(refuse(
                    tx,
                    op,
                    format!("the grown $BITMAP does not fit in MFT record 0 ({d})"),
                ));
            }
            tx.dirty(0);
        }
        Body::NonResident {
            lowest_vcn: 0,
            data_size,
            init_size,
            runs,
            ..
        } => {
            let cs = u64::from(tx.geo.cluster_size);
            let mut runs = runlist::allocated(runs).map_err(|d| tx.corrupt(PLACE, d))?;
            let allocated = le64(&r0.data, bm.off + 40);
            if *init_size > *data_size || *data_size > allocated {
                return Err(tx.corrupt(
                    "$MFT's $BITMAP",
                    format!("sizes {init_size} / {data_size} / {allocated} are inconsistent"),
                ));
            }
            let new_size = (*data_size).max(need.div_ceil(8) * 8);
            // Bytes rewritten below: past the initialized size, plus the
            // new records' bits (a few bytes on any sane volume).
            if new_size - (old_records / 8).min(*init_size) > MAX_BITMAP_REWRITE {
                return Err(refuse(
                    tx,
                    op,
                    format!("$MFT's $BITMAP has {data_size} bytes of data but only {init_size} initialized"),
                ));
            }
            let mut new_alloc = allocated;
            if new_size > allocated {
                let n = (new_size - allocated).div_ceil(cs);
                let hint = runs.last().map_or(0, |&(l, c)| l + c);
                runs.extend(tx.alloc(n, hint)?);
                runs = runlist::merge(&runs);
                new_alloc = allocated + n * cs;
            }
            // Rewrite from the first byte with new bits (or past the
            // initialized size) to the end.
            let start = (old_records / 8).min(*init_size);
            let mut bytes = vec![0u8; (new_size - start) as usize];
            let keep = (*init_size).min(new_size).saturating_sub(start);
            if keep > 0 {
                let p = runlist::map_range(&runs, cs, start, keep)
                    .map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
                let mut at = 0usize;
                for (off, n) in p {
                    tx.device().read_at(off, &mut bytes[at..at + n])?;
                    at += n;
                }
            }
            fix(&mut bytes, start);
            let p = runlist::map_range(&runs, cs, start, bytes.len() as u64)
                .map_err(|d| tx.corrupt("$MFT's $BITMAP", d))?;
            let mut at = 0usize;
            for (off, n) in p {
                tx.write_data(off, bytes[at..at + n].to_vec());
                at += n;
            }
            if let Err(d) = resplice(tx, &r0, &bm, &runs, new_alloc, new_size)? {
                return Err(refuse(
                    tx,
                    op,
                    format!("the grown $BITMAP does not fit in MFT record 0 ({d})"),
                ));
            }
            tx.dirty(0);
        }
        Body::NonResident { .. } => {
            return Err(tx.corrupt(PLACE, "$BITMAP is not one non-resident extent"))
        }
    }
    Ok(())
}

/// `at`, a non-resident attribute of record 0 (as `r0` was parsed), rebuilt
/// with `runs`, `allocated` bytes and `size` bytes of data (all of them
/// initialized) and spliced into the staged record 0 in its place, header
/// instance and flags kept. `Ok(Err(why))` when it no longer fits there.
fn resplice(
    tx: &mut Tx<'_>,
    r0: &crate::record::RawRecord,
    at: &crate::record::RawAttr,
    runs: &[(u64, u64)],
    allocated: u64,
    size: u64,
) -> Result<Result<(), String>, FsError> {
    let cs = u64::from(tx.geo.cluster_size);
    let pairs = runlist::encode(runs).map_err(|d| tx.corrupt(PLACE, d))?;
    let sizes = attr::NrSizes {
        highest_vcn: (allocated / cs) as i64 - 1,
        allocated,
        data: size,
        initialized: size,
    };
    let a = attr::non_resident(
        at.ty,
        &[],
        le16(&r0.data, at.off + 14),
        le16(&r0.data, at.off + 12),
        sizes,
        &pairs,
    );
    let rec = tx.record(0)?;
    Ok(attr::splice(rec, at.off, at.len, &a))
}
