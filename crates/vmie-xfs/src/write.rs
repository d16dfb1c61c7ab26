//! Writing: replacing a regular file's contents inside the blocks it
//! already owns. Each operation is one in-memory transaction: every check
//! runs and every changed byte is computed before the first write to the
//! device, so a refusal writes nothing. The free-space and inode B+trees,
//! the AG headers and the superblock counters are never touched by this
//! operation (no block changes owner), and no LSN is stamped: the inode
//! keeps its own, which is at or behind the clean log's head.

use std::time::{SystemTime, UNIX_EPOCH};

use vmie_guestfs::{FileType, FsError, GuestPath};

use crate::be::{put32, put64};
use crate::inode::{Fork, Inode, DIFLAG2_BIGTIME, DIFLAG2_REFLINK};
use crate::sb::{RO_COMPAT_FINOBT, RO_COMPAT_INOBTCNT, RO_COMPAT_REFLINK, RO_COMPAT_RMAPBT};
use crate::{Ctx, XfsFs};

const RO_COMPAT_KNOWN: u32 =
    RO_COMPAT_FINOBT | RO_COMPAT_RMAPBT | RO_COMPAT_REFLINK | RO_COMPAT_INOBTCNT;
const DIFLAG_IMMUTABLE: u16 = 0x8;
const DIFLAG_APPEND: u16 = 0x10;

/// The feature and log gate of every write: `Ok` when this filesystem may
/// be written.
pub(crate) fn check(c: &Ctx) -> Result<crate::log::LogState, FsError> {
    let g = &c.geo;
    let refuse = |why: String| FsError::Unsupported {
        fs: c.location.clone(),
        op: "write".into(),
        why,
    };
    if g.ro_compat & !RO_COMPAT_KNOWN != 0 {
        return Err(refuse(format!(
            "unknown read-only-compatible feature bits 0x{:x}",
            g.ro_compat & !RO_COMPAT_KNOWN
        )));
    }
    if g.log_incompat != 0 {
        return Err(refuse(format!(
            "log-incompatible features 0x{:x} are set (the log holds items we do not replay)",
            g.log_incompat
        )));
    }
    if g.ascii_ci {
        return Err(refuse("ASCII case-insensitive directories".into()));
    }
    let mut sb = [0u8; 512];
    c.dev.read_at(0, &mut sb)?;
    if sb[126] != 0 {
        return Err(refuse(
            "the superblock says mkfs is still in progress".into(),
        ));
    }
    c.log_clean()
}

/// Encode `t` as an on-disk timestamp at `off` of inode `raw`.
fn put_time(raw: &mut [u8], off: usize, bigtime: bool, secs: i64, nanos: u32) {
    if bigtime {
        let v = (secs.saturating_add(1 << 31)).max(0) as u64 * 1_000_000_000 + u64::from(nanos);
        put64(raw, off, v);
    } else {
        let s = secs.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        put32(raw, off, s as u32);
        put32(raw, off + 4, nanos);
    }
}

/// Set mtime and ctime to now, bump the change counter, and recompute the
/// inode CRC (v5).
pub(crate) fn touch(ip: &mut Inode) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let nanos = now.subsec_nanos();
    let bigtime = ip.flags2 & DIFLAG2_BIGTIME != 0;
    put_time(&mut ip.raw, 40, bigtime, secs, nanos);
    put_time(&mut ip.raw, 48, bigtime, secs, nanos);
    if ip.version == 3 {
        let cc = crate::be::be64(&ip.raw, 104).wrapping_add(1);
        put64(&mut ip.raw, 104, cc);
    }
}

fn seal(ip: &mut Inode) {
    if ip.version == 3 {
        crate::csum::update(&mut ip.raw, 100);
    }
}

pub(crate) fn replace_file(fs: &mut XfsFs, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let c = &fs.ctx;
    let shown = path.to_string();
    let refuse = |why: String| FsError::Unsupported {
        fs: c.location.clone(),
        op: format!("replace_file {shown}"),
        why,
    };
    check(c)?;
    let mut ip = fs.inode_at(path)?;
    vmie_guestfs::require_regular(ip.file_type(), path, || c.location.clone())?;
    debug_assert_eq!(ip.file_type(), FileType::Regular);
    if ip.is_realtime() {
        return Err(refuse("the file's data is on the realtime device".into()));
    }
    if ip.flags2 & DIFLAG2_REFLINK != 0 {
        return Err(refuse(
            "the file may share blocks with others (reflink); copy-on-write is not implemented"
                .into(),
        ));
    }
    if ip.flags & (DIFLAG_IMMUTABLE | DIFLAG_APPEND) != 0 {
        return Err(refuse("the file is immutable or append-only".into()));
    }
    let ext = c.extents(&ip, Fork::Data, &shown)?;
    let bs = u64::from(c.geo.block_size);
    let need = (data.len() as u64).div_ceil(bs);
    // The written extents must cover blocks 0..need without a gap.
    let mut covered = 0u64;
    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    for e in &ext {
        if covered >= need {
            break;
        }
        if e.off != covered || e.unwritten {
            break;
        }
        let n = e.len.min(need - covered);
        let disk = c
            .geo
            .fsb_to_byte(e.fsb, e.len)
            .ok_or_else(|| c.corrupt(&shown, "extent outside the filesystem".into()))?;
        let from = (covered * bs) as usize;
        let to = ((covered + n) * bs) as usize;
        let mut buf = vec![0u8; to - from];
        let have = data.len().min(to) - from;
        buf[..have].copy_from_slice(&data[from..from + have]);
        writes.push((disk, buf));
        covered += n;
    }
    if covered < need {
        return Err(refuse(format!(
            "the new contents need {need} blocks and the file owns {covered} written blocks from its start; allocating blocks on XFS is not implemented"
        )));
    }
    put64(&mut ip.raw, 56, data.len() as u64);
    touch(&mut ip);
    seal(&mut ip);
    writes.push((ip.at, ip.raw.clone()));
    for (off, buf) in &writes {
        c.dev.write_at(*off, buf)?;
    }
    Ok(())
}
