//! Transaction log replay for dirty hives: the new format (Windows 8.1+,
//! "HvLE" log entries with Marvin32 hashes) and the old format (a "DIRT"
//! bitmap of dirty 512-byte sectors).

use crate::error::{HiveError, Result};
use crate::hive::{checksum, rd_u32, Hive, HiveOptions, HBIN_START};

const MARVIN_SEED: u64 = 0x82EF_4D88_7A4E_55C5;

/// Marvin32 as used by hive log entries: the 64-bit result (hi << 32 | lo).
pub(crate) fn marvin32(data: &[u8], seed: u64) -> u64 {
    let mut lo = seed as u32;
    let mut hi = (seed >> 32) as u32;
    let block = |lo: &mut u32, hi: &mut u32| {
        *hi ^= *lo;
        *lo = lo.rotate_left(20);
        *lo = lo.wrapping_add(*hi);
        *hi = hi.rotate_left(9);
        *hi ^= *lo;
        *lo = lo.rotate_left(27);
        *lo = lo.wrapping_add(*hi);
        *hi = hi.rotate_left(19);
    };
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        lo = lo.wrapping_add(u32::from_le_bytes(<[u8; 4]>::try_from(c).unwrap_or([0; 4])));
        block(&mut lo, &mut hi);
    }
    let r = chunks.remainder();
    let b = |i: usize| u32::from(r.get(i).copied().unwrap_or(0));
    let fin = match r.len() {
        0 => 0x80,
        1 => 0x8000 | b(0),
        2 => 0x80_0000 | b(0) | (b(1) << 8),
        _ => 0x8000_0000 | b(0) | (b(1) << 8) | (b(2) << 16),
    };
    lo = lo.wrapping_add(fin);
    block(&mut lo, &mut hi);
    block(&mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}

fn hash_ok(stored: u64, data: &[u8]) -> bool {
    stored == marvin32(data, MARVIN_SEED)
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The hive needed recovery.
    pub was_dirty: bool,
    /// New-format log entries applied (sequence numbers).
    pub entries_applied: Vec<u32>,
    /// Old-format logs applied (index into the `logs` argument).
    pub old_logs_applied: Vec<usize>,
    /// The primary's base block was damaged and a log's copy was used.
    pub base_block_from_log: bool,
}

struct Entry {
    seq: u32,
    hbins_size: u32,
    /// (offset relative to the first hbin, bytes)
    pages: Vec<(u32, Vec<u8>)>,
}

fn base_ok(b: &[u8]) -> bool {
    b.get(0..4) == Some(b"regf")
        && b.len() >= 512
        && rd_u32(b, 0x1FC) == Some(checksum(b.get(0..0x200).unwrap_or(&[])))
}

/// Parse the valid leading entries of a new-format log.
fn new_entries(log: &[u8], max_size: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pos = 512usize;
    while let Some(h) = log.get(pos..pos + 40) {
        if h.get(0..4) != Some(b"HvLE") {
            break;
        }
        let size = rd_u32(h, 4).unwrap_or(0) as usize;
        let seq = rd_u32(h, 12).unwrap_or(0);
        let hbins_size = rd_u32(h, 16).unwrap_or(0);
        let count = rd_u32(h, 20).unwrap_or(0) as usize;
        let h1 = crate::hive::rd_u64(h, 24).unwrap_or(0);
        let h2 = crate::hive::rd_u64(h, 32).unwrap_or(0);
        if size < 40 || size % 512 != 0 || hbins_size % 4096 != 0 || hbins_size as usize > max_size
        {
            break;
        }
        let Some(e) = log.get(pos..pos + size) else {
            break;
        };
        if !hash_ok(h1, e.get(40..).unwrap_or(&[])) || !hash_ok(h2, e.get(0..32).unwrap_or(&[])) {
            break;
        }
        let refs_end = count.checked_mul(8).and_then(|n| n.checked_add(40));
        let Some(refs_end) = refs_end.filter(|&r| r <= size) else {
            break;
        };
        let mut data_pos = refs_end;
        let mut pages = Vec::with_capacity(count);
        let mut ok = true;
        for i in 0..count {
            let off = rd_u32(e, 40 + 8 * i).unwrap_or(u32::MAX);
            let len = rd_u32(e, 44 + 8 * i).unwrap_or(0) as usize;
            let end = data_pos.checked_add(len);
            let in_hive = (off as usize)
                .checked_add(len)
                .is_some_and(|x| x <= hbins_size as usize);
            match end.and_then(|end| e.get(data_pos..end)) {
                Some(d) if in_hive && len % 4096 == 0 && off % 4096 == 0 => {
                    pages.push((off, d.to_vec()));
                    data_pos += len;
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            break;
        }
        out.push(Entry {
            seq,
            hbins_size,
            pages,
        });
        pos += size;
    }
    out
}

impl Hive {
    /// Open a hive, replaying its transaction logs (`.LOG1`, `.LOG2`, any
    /// order, empty ones allowed) in memory if it is dirty or its base block
    /// is damaged. The result is a clean hive: `bytes()` is what Windows
    /// would have written after recovery (write it back, then the logs are
    /// stale). Refuses when the logs cannot make the hive consistent.
    pub fn from_bytes_with_logs(
        primary: Vec<u8>,
        logs: &[&[u8]],
        opts: &HiveOptions,
    ) -> Result<(Hive, RecoveryReport)> {
        let name = opts.name.clone();
        let mut rep = RecoveryReport::default();
        let prim_base_ok = base_ok(&primary) && primary.len() >= HBIN_START;
        let s1 = rd_u32(&primary, 4).unwrap_or(0);
        let s2 = rd_u32(&primary, 8).unwrap_or(1);
        if prim_base_ok && s1 == s2 {
            return Ok((Hive::from_bytes(primary, opts)?, rep));
        }
        rep.was_dirty = true;
        let dirty_err = |reason: String| HiveError::Dirty {
            hive: name.clone(),
            primary: s1,
            secondary: s2,
            reason,
        };
        let mut buf = primary;
        if buf.len() < HBIN_START {
            buf.resize(HBIN_START, 0);
        }
        // Base block: the primary's if valid, else the newest valid log copy.
        let mut base_seq2 = s2;
        if !prim_base_ok {
            let best = logs
                .iter()
                .filter(|l| base_ok(l))
                .max_by_key(|l| rd_u32(l, 4).unwrap_or(0))
                .ok_or_else(|| {
                    dirty_err("the base block is damaged and no log holds a valid copy".into())
                })?;
            if let (Some(dst), Some(src)) = (buf.get_mut(0..512), best.get(0..512)) {
                dst.copy_from_slice(src);
            }
            rep.base_block_from_log = true;
            base_seq2 = rd_u32(&buf, 8).unwrap_or(0);
        }
        let max = opts.max_hive_size;
        let mut last_seq = None;
        let mut hbins_size = rd_u32(&buf, 0x28).unwrap_or(0);
        // New format: entries continuing the secondary sequence number.
        let mut all: Vec<Entry> = Vec::new();
        for l in logs {
            if l.len() >= 1024 && l.get(512..516) == Some(b"HvLE") {
                all.extend(new_entries(l, max));
            }
        }
        let mut expect = base_seq2;
        while let Some(i) = all.iter().rposition(|e| e.seq == expect) {
            let e = all.swap_remove(i);
            let need = HBIN_START + e.hbins_size as usize;
            if buf.len() < need {
                buf.resize(need, 0);
            }
            for (off, d) in &e.pages {
                let p = HBIN_START + *off as usize;
                if let Some(dst) = buf.get_mut(p..p + d.len()) {
                    dst.copy_from_slice(d);
                }
            }
            hbins_size = e.hbins_size;
            rep.entries_applied.push(e.seq);
            last_seq = Some(e.seq);
            expect = expect.wrapping_add(1);
        }
        // Old format: a complete log (its own sequence numbers equal) whose
        // base block is newer than the primary's secondary sequence.
        if last_seq.is_none() {
            for (li, l) in logs.iter().enumerate() {
                if !base_ok(l) || l.get(512..516) != Some(b"DIRT") {
                    continue;
                }
                let ls1 = rd_u32(l, 4).unwrap_or(0);
                let ls2 = rd_u32(l, 8).unwrap_or(1);
                let lsize = rd_u32(l, 0x28).unwrap_or(0);
                if ls1 != ls2 || lsize % 4096 != 0 || lsize as usize > max {
                    continue;
                }
                let sectors = lsize as usize / 512;
                let bitmap_len = sectors.div_ceil(8);
                let Some(bitmap) = l.get(516..516 + bitmap_len) else {
                    continue;
                };
                let mut data = (516 + bitmap_len).div_ceil(512) * 512;
                let mut writes = Vec::new();
                let mut ok = true;
                for s in 0..sectors {
                    let bit = bitmap.get(s / 8).is_some_and(|b| b & (1 << (s % 8)) != 0);
                    if !bit {
                        continue;
                    }
                    match l.get(data..data + 512) {
                        Some(d) => writes.push((s * 512, d)),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                    data += 512;
                }
                if !ok {
                    continue;
                }
                if let (Some(dst), Some(src)) = (buf.get_mut(0..512), l.get(0..512)) {
                    dst.copy_from_slice(src);
                }
                let need = HBIN_START + lsize as usize;
                if buf.len() < need {
                    buf.resize(need, 0);
                }
                for (off, d) in writes {
                    if let Some(dst) = buf.get_mut(HBIN_START + off..HBIN_START + off + 512) {
                        dst.copy_from_slice(d);
                    }
                }
                hbins_size = lsize;
                last_seq = Some(ls1);
                rep.old_logs_applied.push(li);
                break;
            }
        }
        let Some(seq) = last_seq else {
            return Err(dirty_err(
                "no usable transaction log entry continues its sequence (logs missing or damaged)"
                    .into(),
            ));
        };
        // Clean base block: equal sequence numbers, primary file type, sizes, checksum.
        let seq = seq.max(rd_u32(&buf, 4).unwrap_or(0));
        let fix = |buf: &mut Vec<u8>, at: usize, v: u32| {
            if let Some(d) = buf.get_mut(at..at + 4) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        };
        fix(&mut buf, 4, seq);
        fix(&mut buf, 8, seq);
        fix(&mut buf, 0x1C, 0);
        fix(&mut buf, 0x28, hbins_size);
        let c = checksum(buf.get(0..0x200).unwrap_or(&[]));
        fix(&mut buf, 0x1FC, c);
        buf.truncate(HBIN_START + hbins_size as usize);
        let hive = Hive::from_bytes(buf, opts).map_err(|e| match e {
            HiveError::Corrupt { reason, offset, .. } => dirty_err(format!("the hive is still inconsistent after replaying its logs (cell {offset:#x}: {reason})")),
            e => e,
        })?;
        Ok((hive, rep))
    }
}
