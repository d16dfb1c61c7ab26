//! Is the internal log clean? Find the log head (where the cycle number
//! written in every 512-byte basic block changes) and check that the last
//! record before it is an unmount record ending exactly at the head, with
//! its LSN at its own position and (when it carries one) a valid CRC. The
//! log is never replayed nor written.
//!
//! Out-of-order completion of in-flight log writes is what the kernel's
//! `xlog_find_head` guards against by scanning back from the head for
//! basic blocks of the older cycle (holes left by log buffers that never
//! reached the disk). An honest kernel writes the unmount record only
//! after every earlier log buffer is on disk, so no hole precedes it; a
//! hole after it (a later mount that crashed before its first buffer was
//! written) leaves the kernel's head at the unmount record too, and the
//! kernel then calls the log clean as we do. The scan back is therefore a
//! check against damage, and we bound it by what the mount that wrote the
//! unmount record could have had in flight: 8 log buffers (the kernel's
//! most) of the size its record header declares (`h_size`, at least
//! 32 KiB), at most the kernel's fixed 2 MiB. With the default 32 KiB log
//! buffers that is 256 KiB instead of 2 MiB, which keeps replacing one
//! small file within a few hundred KiB of reads. Every block in that
//! window must carry the cycle its position implies (the current cycle
//! before the head, the previous one where the window wraps past the
//! log's start); anything else is refused.

use vmie_guestfs::FsError;

use crate::be::{be32, be64};
use crate::Ctx;

const HEADER_MAGIC: u32 = 0xFEED_BABE;
const UNMOUNT_TRANS: u8 = 0x20;
/// How far before the head the last record header may start: the largest
/// record (256 KiB) plus its extended headers, in basic blocks.
const MAX_BACK: u64 = 1024;
/// The kernel's most in-core log buffers (XLOG_MAX_ICLOGS).
const MAX_ICLOGS: u64 = 8;
/// Smallest log buffer size the window assumes (the kernel's default).
const MIN_ICLOG_BYTES: u64 = 32 * 1024;
/// Largest log buffer (XLOG_MAX_RECORD_BSIZE).
const MAX_ICLOG_BYTES: u64 = 256 * 1024;
/// Byte offset of `h_crc` in a record header.
const CRC_OFF: usize = 32;

/// The cycle number a basic block carries: a record header's own field,
/// else the first word (the kernel stamps it over every data block).
fn block_cycle(b: &[u8]) -> u32 {
    if be32(b, 0) == HEADER_MAGIC {
        be32(b, 4)
    } else {
        be32(b, 0)
    }
}

/// What the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogState {
    /// Cycle the next write would use.
    pub cycle: u32,
    /// Basic block the next write would start at.
    pub head: u64,
}

impl Ctx {
    /// The state of a clean internal log, or why the log is not known clean.
    pub fn log_clean(&self) -> Result<LogState, FsError> {
        let g = &self.geo;
        let refuse = |why: String| FsError::Unsupported {
            fs: self.location.clone(),
            op: "write".into(),
            why,
        };
        if g.logstart == 0 {
            return Err(refuse(
                "the filesystem has an external log device, which was not given".into(),
            ));
        }
        let start = g
            .fsb_to_byte(g.logstart, u64::from(g.logblocks))
            .ok_or_else(|| {
                self.corrupt("superblock", "the log lies outside the filesystem".into())
            })?;
        let n = u64::from(g.logblocks) << (g.block_log - 9);
        if n < 64 {
            return Err(self.corrupt("log", format!("{n} basic blocks")));
        }
        let mut bb = [0u8; 512];
        let mut cycle_at = |i: u64| -> Result<u32, FsError> {
            self.dev.read_at(start + i * 512, &mut bb)?;
            Ok(block_cycle(&bb))
        };
        let first = cycle_at(0)?;
        let last = cycle_at(n - 1)?;
        let dirty = |d: &str| {
            refuse(format!("the log is not clean ({d}); mount the filesystem once in Linux or run xfs_repair, then retry"))
        };
        if first == 0 {
            return Err(dirty("no record at its start"));
        }
        // Head: first block of the older cycle, or the end (wrapped).
        let (head, head_cycle) = if first == last {
            (n, first)
        } else if last.wrapping_add(1) == first || last == 0 {
            // Binary search for the first block whose cycle is `last`.
            let (mut lo, mut hi) = (0u64, n - 1);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if cycle_at(mid)? == last {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            (hi, first)
        } else {
            return Err(dirty("cycle numbers out of order"));
        };
        let (next_cycle, head_pos) = if head == n {
            (head_cycle + 1, 0)
        } else {
            (head_cycle, head)
        };
        // The last record header before the head.
        let mut rec = None;
        for k in 1..=MAX_BACK.min(n) {
            let i = (head + n - k) % n;
            self.dev.read_at(start + i * 512, &mut bb)?;
            if be32(&bb, 0) == HEADER_MAGIC {
                rec = Some(i);
                break;
            }
        }
        let Some(rh) = rec else {
            return Err(dirty("no record header before the head"));
        };
        // bb holds the header.
        if be32(&bb, 4) != head_cycle || bb[304..320] != g.uuid {
            return Err(dirty("the last record is of another cycle or filesystem"));
        }
        let version = be32(&bb, 8);
        let len = u64::from(be32(&bb, 12));
        let num_logops = be32(&bb, 40);
        let size = u64::from(be32(&bb, 320));
        let hblks = if version & 2 != 0 && size > 32768 {
            size.div_ceil(32768)
        } else {
            1
        };
        let after = (rh + hblks + len.div_ceil(512)) % n;
        if after != head % n {
            return Err(dirty("the last record does not end at the head"));
        }
        let lsn = be64(&bb, 16);
        if lsn >> 32 != u64::from(head_cycle) || lsn & 0xFFFF_FFFF != rh {
            return Err(dirty("the last record's LSN is not its position"));
        }
        if num_logops != 1 {
            return Err(dirty("the last record is not an unmount record"));
        }
        let mut op = [0u8; 512];
        self.dev
            .read_at(start + ((rh + hblks) % n) * 512, &mut op)?;
        if op[9] & UNMOUNT_TRANS == 0 {
            return Err(dirty("the last record is not an unmount record"));
        }
        if len > MAX_ICLOG_BYTES {
            return Err(dirty("the unmount record is longer than any log buffer"));
        }
        let stored_crc = u32::from_le_bytes([
            bb[CRC_OFF],
            bb[CRC_OFF + 1],
            bb[CRC_OFF + 2],
            bb[CRC_OFF + 3],
        ]);
        if stored_crc != 0 {
            // A kernel-written record carries a CRC (mkfs and xfs_repair
            // leave it zero, and the kernel does not check an unmount
            // record's): CRC-32C over the header (the kernel's 328-byte
            // struct; i386 kernels before 6.17 wrote 324), each extended
            // header's 260 bytes (v2 records over 32 KiB), then the data
            // as written.
            let read_bb = |i: u64, buf: &mut [u8]| self.dev.read_at(start + (i % n) * 512, buf);
            let mut ext = Vec::new();
            let xheads = if version & 2 != 0 {
                len.div_ceil(32768).max(1)
            } else {
                1
            };
            if xheads > hblks {
                return Err(dirty(
                    "the unmount record has fewer headers than its length needs",
                ));
            }
            for x in 1..xheads {
                let mut h = [0u8; 512];
                read_bb(rh + x, &mut h)?;
                ext.extend_from_slice(&h[..260]);
            }
            let mut data = vec![0u8; len as usize];
            for (j, piece) in data.chunks_mut(512).enumerate() {
                read_bb(rh + hblks + j as u64, piece)?;
            }
            let ok = [328usize, 324].iter().any(|&hl| {
                let mut rec = bb[..hl].to_vec();
                rec.extend_from_slice(&ext);
                rec.extend_from_slice(&data);
                crate::csum::verify(&rec, CRC_OFF)
            });
            if !ok {
                return Err(dirty("the unmount record's CRC does not match"));
            }
        }
        // The window the unmounting kernel could have had in flight:
        // every block in it carries the cycle its position implies.
        let iclog = if version & 2 != 0 {
            if size == 0 || size % 512 != 0 || size > MAX_ICLOG_BYTES {
                return Err(dirty(
                    "the unmount record declares an impossible log buffer size",
                ));
            }
            size.max(MIN_ICLOG_BYTES)
        } else {
            MIN_ICLOG_BYTES
        };
        let window = (MAX_ICLOGS * iclog / 512).min(n);
        let prev_cycle = if head == n { head_cycle } else { last };
        let mut chunk = vec![0u8; 128 * 512];
        let mut k = 0u64;
        while k < window {
            // Blocks head-window+k .. in runs that do not cross the start.
            let from = (head + n - window + k) % n;
            let m = (window - k).min(128).min(n - from);
            let buf = &mut chunk[..(m * 512) as usize];
            self.dev.read_at(start + from * 512, buf)?;
            for (j, b) in buf.chunks(512).enumerate() {
                let pos = from + j as u64;
                let want = if pos < head { head_cycle } else { prev_cycle };
                let c = block_cycle(b);
                if c != want {
                    return Err(dirty(&format!(
                        "basic block {pos} before the head has cycle {c}, not {want}"
                    )));
                }
            }
            k += m;
        }
        Ok(LogState {
            cycle: next_cycle,
            head: head_pos,
        })
    }
}
