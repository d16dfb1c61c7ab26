//! XFS (v4 and v5) and XFS external log devices, with a bounded check of
//! whether an internal log is clean.

use crate::bytes::{ensure, some, Bytes, Miss, PResult};
use crate::util::{crc32c, label_rtrim, uuid_dce};
use crate::{Ctx, FsKind, Probe};

const VERSION_MOREBITS: u16 = 0x8000;
const VERSION2_CRC: u32 = 0x0000_0100;

const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
/// ftype, spinodes, meta_uuid, bigtime, needsrepair, nrext64, exchrange,
/// parent, metadir.
const KNOWN_INCOMPAT: u32 = 0x1ff;
/// finobt, rmapbt, reflink, inobtcount.
const KNOWN_RO_COMPAT: u32 = 0xf;
/// xattrs.
const KNOWN_LOG_INCOMPAT: u32 = 0x1;

const LOG_MAGIC: u32 = 0xFEED_BABE;
const BB: u64 = 512;
/// XLOG_UNMOUNT_TRANS in an operation header's `oh_flags`.
const UNMOUNT_TRANS: u8 = 0x20;
/// XLOG_HEADER_CYCLE_SIZE: one extra header block per 32 KiB of record.
const HEADER_CYCLE_SIZE: u32 = 32 * 1024;

/// The superblock fields we use, converted from big-endian.
struct Sb {
    blocksize: u32,
    dblocks: u64,
    uuid: [u8; 16],
    logstart: u64,
    agblocks: u32,
    agcount: u32,
    logblocks: u32,
    versionnum: u16,
    sectsize: u16,
    agblklog: u8,
    inprogress: u8,
    features2: u32,
    ro_compat: u32,
    incompat: u32,
    log_incompat: u32,
}

fn verify(b: &Bytes<'_>) -> PResult<Sb> {
    ensure(b.has(0, b"XFSB"))?;
    let blocksize = b.be32(4)?;
    let dblocks = b.be64(8)?;
    let rextsize = b.be32(80)?;
    let agblocks = b.be32(84)?;
    let agcount = b.be32(88)?;
    let versionnum = b.be16(100)?;
    let sectsize = b.be16(102)?;
    let inodesize = b.be16(104)?;
    let blocklog = b.u8(120)?;
    let sectlog = b.u8(121)?;
    let inodelog = b.u8(122)?;
    let inopblog = b.u8(123)?;
    let imax_pct = b.u8(127)?;

    // libblkid's sanity checks.
    ensure(agcount > 0)?;
    ensure((512..=32768).contains(&sectsize) && (9..=15).contains(&sectlog))?;
    ensure(u32::from(sectsize) == 1u32 << sectlog)?;
    ensure((512..=65536).contains(&blocksize) && (9..=16).contains(&blocklog))?;
    ensure(blocksize == 1u32 << blocklog)?;
    ensure((256..=2048).contains(&inodesize) && (8..=11).contains(&inodelog))?;
    ensure(u32::from(inodesize) == 1u32 << inodelog)?;
    ensure(blocklog.checked_sub(inodelog) == Some(inopblog))?;
    let rtext = u64::from(rextsize) * u64::from(blocksize);
    ensure((4096..=1 << 30).contains(&rtext))?;
    ensure(imax_pct <= 100)?;
    let max_dblocks = u64::from(agcount) * u64::from(agblocks);
    let min_dblocks = u64::from(agcount - 1) * u64::from(agblocks) + 64;
    ensure(dblocks != 0 && dblocks <= max_dblocks && dblocks >= min_dblocks)?;

    let features2 = b.be32(200)?;
    if versionnum & 0x0f == 5 {
        ensure(versionnum & VERSION_MOREBITS != 0)?;
        ensure(features2 & VERSION2_CRC != 0)?;
        let sect = b.get(0, usize::from(sectsize))?;
        let mut copy = sect.to_vec();
        if let Some(c) = copy.get_mut(224..228) {
            c.fill(0);
        }
        ensure(crc32c(&copy) == b.le32(224)?)?;
    }

    Ok(Sb {
        blocksize,
        dblocks,
        uuid: b.arr(32)?,
        logstart: b.be64(48)?,
        agblocks,
        agcount,
        logblocks: b.be32(96)?,
        versionnum,
        sectsize,
        agblklog: b.u8(124)?,
        inprogress: b.u8(126)?,
        features2,
        ro_compat: b.be32(212)?,
        incompat: b.be32(216)?,
        log_incompat: b.be32(220)?,
    })
}

pub(crate) fn probe(ctx: &Ctx<'_>, deep: bool) -> PResult<Probe> {
    let head = ctx.head();
    // The v5 checksum covers a whole sector (up to 32 KiB), which the
    // cached head holds when the device is large enough.
    let sb = verify(&head)?;
    let b = head;

    let mut p = Probe::new(FsKind::Xfs);
    if b.u8(108)? != 0 {
        p.label = label_rtrim(ctx.cap(b.get(108, 12)?));
    }
    p.uuid = uuid_dce(&sb.uuid);
    p.block_size = Some(sb.blocksize);
    p.size = sb.dblocks.checked_mul(u64::from(sb.blocksize));
    let internal_log = if sb.logstart != 0 {
        u64::from(sb.logblocks)
    } else {
        0
    };
    if let Some(fssize) = sb
        .dblocks
        .checked_sub(internal_log)
        .and_then(|n| n.checked_mul(u64::from(sb.blocksize)))
    {
        p.set("FSSIZE", fssize.to_string());
    }
    p.set("FSLASTBLOCK", sb.dblocks.to_string());
    p.set("FSBLOCKSIZE", sb.blocksize.to_string());
    p.set("BLOCK_SIZE", sb.sectsize.to_string());
    let v = sb.versionnum & 0x0f;
    p.set("XFS_VERSION", v.to_string());

    if sb.inprogress != 0 {
        p.state.errors = true;
        p.note("sb_inprogress is set: mkfs.xfs did not complete");
    }
    if v == 5 {
        if sb.incompat & INCOMPAT_NEEDSREPAIR != 0 {
            p.state.errors = true;
            p.note("incompat needsrepair is set: xfs_repair must run before mounting");
        }
        for bit in 0..32 {
            let m = 1u32 << bit;
            if sb.incompat & !KNOWN_INCOMPAT & m != 0 {
                p.state
                    .unknown_features
                    .push(format!("xfs incompat 0x{m:08x}"));
            }
            if sb.ro_compat & !KNOWN_RO_COMPAT & m != 0 {
                p.state
                    .unknown_features
                    .push(format!("xfs ro_compat 0x{m:08x}"));
            }
            if sb.log_incompat & !KNOWN_LOG_INCOMPAT & m != 0 {
                p.state
                    .unknown_features
                    .push(format!("xfs log_incompat 0x{m:08x}"));
            }
        }
        if sb.log_incompat != 0 {
            p.note(format!(
                "log_incompat features 0x{:x} are set: the log holds items that need a \
                 recent kernel to replay",
                sb.log_incompat
            ));
        }
    } else if sb.features2 & VERSION2_CRC != 0 {
        p.note("v4 superblock with the CRC feature bit set");
    }

    if sb.logstart == 0 {
        p.note("external log device: log state not checked");
    } else if !deep || !ctx.opts().check_xfs_log {
        p.note("log state not checked");
    } else {
        match log_state(ctx, &sb) {
            Ok(LogState::Clean) => p.note("internal log is clean (unmount record at head)"),
            Ok(LogState::Zeroed) => p.note("internal log is zeroed (no records)"),
            Ok(LogState::Dirty(why)) => {
                p.state.needs_recovery = true;
                p.note(format!("internal log is dirty: {why}; log recovery needed"));
            }
            Ok(LogState::Unknown(why)) => p.note(format!("log state unknown: {why}")),
            Err(Miss::Io(e)) => return Err(Miss::Io(e)),
            Err(Miss::Not) => {
                p.note("log state not checked: the log could not be read or parsed");
            }
        }
    }
    Ok(p)
}

enum LogState {
    Clean,
    Zeroed,
    Dirty(String),
    Unknown(String),
}

/// A view of the internal log as a ring of 512-byte basic blocks.
struct Log<'c, 'a> {
    ctx: &'c Ctx<'a>,
    start: u64,
    blocks: u64,
}

impl Log<'_, '_> {
    fn block(&self, n: u64) -> PResult<Vec<u8>> {
        let n = n % self.blocks;
        let off = some(n.checked_mul(BB).and_then(|o| o.checked_add(self.start)))?;
        self.ctx.read(off, BB as usize)
    }

    /// Cycle number of block `n`: the first word, or for a record header
    /// the `h_cycle` field after the magic.
    fn cycle(&self, n: u64) -> PResult<u32> {
        let b = self.block(n)?;
        let b = Bytes(&b);
        let w = b.be32(0)?;
        if w == LOG_MAGIC {
            b.be32(4)
        } else {
            Ok(w)
        }
    }

    /// First block in `lo+1..=hi` whose cycle is `target`, given that `lo`
    /// does not have it and `hi` does (binary search, as xlog_find_cycle_start).
    fn first_with_cycle(&self, mut lo: u64, mut hi: u64, target: u32) -> PResult<u64> {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.cycle(mid)? == target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }
}

fn log_state(ctx: &Ctx<'_>, sb: &Sb) -> PResult<LogState> {
    // sb_logstart is an XFS_FSB: AG number above agblklog bits.
    let agblklog = u32::from(sb.agblklog);
    ensure(agblklog < 64)?;
    let agno = sb.logstart >> agblklog;
    let agbno = sb.logstart & ((1u64 << agblklog) - 1);
    ensure(agno < u64::from(sb.agcount))?;
    let fsb = some(
        agno.checked_mul(u64::from(sb.agblocks))
            .and_then(|x| x.checked_add(agbno)),
    )?;
    let start = some(fsb.checked_mul(u64::from(sb.blocksize)))?;
    let bytes = u64::from(sb.logblocks)
        .checked_mul(u64::from(sb.blocksize))
        .ok_or(Miss::Not)?;
    let blocks = bytes / BB;
    ensure(blocks >= 2 && ctx.inside(start, bytes))?;
    let log = Log { ctx, start, blocks };
    let scan = (ctx.opts().xfs_log_scan_bytes / BB).clamp(1, blocks);

    // Find the head: where the next record would be written.
    let first = log.cycle(0)?;
    if first == 0 {
        return Ok(LogState::Zeroed);
    }
    let last_blk = blocks - 1;
    let last = log.cycle(last_blk)?;
    let mut head = if last == 0 {
        // The log has not wrapped yet: the head is the first zeroed block.
        log.first_with_cycle(0, last_blk, 0)?
    } else if first == last {
        // Stamped all over with one cycle: the head is at the physical end
        // unless a hole of the previous cycle is found below.
        let stop = last.wrapping_sub(1);
        let mut h = blocks;
        for n in blocks - scan..blocks {
            if log.cycle(n)? == stop {
                h = n;
                break;
            }
        }
        h
    } else {
        let h = log.first_with_cycle(0, last_blk, last)?;
        // The binary search may overshoot; look back for an earlier block
        // of the same cycle.
        let from = h.saturating_sub(scan);
        let mut found = h;
        for n in from..h {
            if log.cycle(n)? == last {
                found = n;
                break;
            }
        }
        found
    };
    head %= blocks;

    // The last record header before the head.
    let mut rec = None;
    for back in 1..=scan {
        let n = (head + blocks - (back % blocks)) % blocks;
        let b = log.block(n)?;
        if Bytes(&b).be32(0)? == LOG_MAGIC {
            rec = Some((n, b));
            break;
        }
    }
    let Some((rec_blk, hdr)) = rec else {
        return Ok(LogState::Unknown(format!(
            "no log record header within {scan} blocks before the head"
        )));
    };
    let h = Bytes(&hdr);
    let version = h.be32(8)?;
    let h_len = h.be32(12)?;
    let num_logops = h.be32(40)?;
    let h_size = h.be32(320)?;
    if version == 0 || version & !3 != 0 {
        return Ok(LogState::Unknown(format!(
            "record header at log block {rec_blk} has bad version {version}"
        )));
    }
    if h.get(304, 16)? != sb.uuid {
        // v5 logs stamp sb_uuid; a mismatch means another filesystem's log.
        return Ok(LogState::Unknown(
            "the last record header carries a different filesystem UUID".into(),
        ));
    }
    let hblks = if version & 2 != 0 && h_size > HEADER_CYCLE_SIZE {
        u64::from(h_size.div_ceil(HEADER_CYCLE_SIZE))
    } else {
        1
    };
    let after = (rec_blk + hblks + u64::from(h_len).div_ceil(BB)) % blocks;
    if num_logops == 1 && after == head {
        let data = log.block(rec_blk + hblks)?;
        if Bytes(&data).u8(9)? & UNMOUNT_TRANS != 0 {
            return Ok(LogState::Clean);
        }
    }
    Ok(LogState::Dirty(format!(
        "the record before the head (log block {rec_blk}, {num_logops} ops) is not an \
         unmount record"
    )))
}

/// An XFS external log device: a log record header in the first 256 KiB
/// and no XFS superblock there.
pub(crate) fn probe_log(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    // blkid: XFS_MIN_LOG_BYTES.
    ensure(ctx.len() >= 10 * 1024 * 1024)?;
    let buf = ctx.read(0, 256 * 1024)?;
    let b = Bytes(&buf);
    for i in 0..512usize {
        let off = i * 512;
        if b.has(off, b"XFSB") {
            return Err(Miss::Not);
        }
        if b.be32(off)? != LOG_MAGIC {
            continue;
        }
        let version = b.be32(off + 8)?;
        if version == 0 || version & !3 != 0 {
            continue;
        }
        let h_len = b.be32(off + 12)?;
        if h_len == 0 || h_len > i32::MAX as u32 {
            continue;
        }
        let fmt = b.be32(off + 300)?;
        if !(1..=3).contains(&fmt) {
            continue;
        }
        let mut p = Probe::new(FsKind::XfsExternalLog);
        if let Some(u) = uuid_dce(b.get(off + 304, 16)?) {
            p.set("LOGUUID", u);
        }
        p.note("external log device: log state not checked");
        return Ok(p);
    }
    Err(Miss::Not)
}
