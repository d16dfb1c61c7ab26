//! Is the internal log clean? Find the log head (where the cycle number
//! written in every 512-byte basic block changes) and check that the last
//! record before it is an unmount record ending exactly at the head. The
//! log is never replayed nor written.

use vmie_guestfs::FsError;

use crate::be::{be32, be64};
use crate::Ctx;

const HEADER_MAGIC: u32 = 0xFEED_BABE;
const UNMOUNT_TRANS: u8 = 0x20;
/// How far before the head the last record header may start: the largest
/// record (256 KiB) plus its extended headers, in basic blocks.
const MAX_BACK: u64 = 1024;
/// How far past the head we check that nothing of the current cycle was
/// written (in-flight log writes complete out of order): 8 in-core logs
/// of 256 KiB, in basic blocks.
const MAX_AHEAD: u64 = 4096;

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
            Ok(if be32(&bb, 0) == HEADER_MAGIC {
                be32(&bb, 4)
            } else {
                be32(&bb, 0)
            })
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
        // Nothing of the current cycle past the head.
        let (next_cycle, head_pos) = if head == n {
            (head_cycle + 1, 0)
        } else {
            (head_cycle, head)
        };
        let ahead = MAX_AHEAD.min(n / 2).min(n - head_pos);
        let mut k = 0u64;
        let mut chunk = vec![0u8; 128 * 512];
        while k < ahead {
            let m = (ahead - k).min(128);
            let buf = &mut chunk[..(m * 512) as usize];
            self.dev.read_at(start + (head_pos + k) * 512, buf)?;
            for b in buf.chunks(512) {
                let c = if be32(b, 0) == HEADER_MAGIC {
                    be32(b, 4)
                } else {
                    be32(b, 0)
                };
                if c >= next_cycle {
                    return Err(dirty("blocks of the current cycle past the head"));
                }
            }
            k += m;
        }
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
        Ok(LogState {
            cycle: next_cycle,
            head: head_pos,
        })
    }
}
