//! Writing: replacing a regular file's contents (in place, growing into
//! newly allocated blocks), creating regular files, symlinks and
//! directories. Each operation is one in-memory transaction ([`Tx`]):
//! every check runs and every changed byte is computed before the first
//! write to the device, so a refusal (or no space) writes nothing. Blocks
//! and inodes are allocated from the AG btrees (a new inode chunk when all are full) (see `alloc`);
//! directory entries are added by `dirw`; block maps that outgrow the
//! inode are kept as a bmbt by `bmbt`. No LSN is stamped: every block
//! keeps its own (new blocks get 0), which is at or behind the clean
//! log's head, so the kernel mounts without recovery.

use std::time::{SystemTime, UNIX_EPOCH};

use vmie_guestfs::{FileType, FsError, GuestPath, NewAttrs};

use crate::alloc::{self, Got};
use crate::be::{be64, put32, put64};
use crate::dirw::{self, agno_of};
use crate::inode::{
    Extent, Inode, DIFLAG2_BIGTIME, DIFLAG2_NREXT64, DIFLAG2_REFLINK, FMT_EXTENTS, FMT_LOCAL,
};
use crate::sb::{RO_COMPAT_FINOBT, RO_COMPAT_INOBTCNT, RO_COMPAT_REFLINK, RO_COMPAT_RMAPBT};
use crate::tx::Tx;
use crate::{Ctx, XfsFs};

const RO_COMPAT_KNOWN: u32 =
    RO_COMPAT_FINOBT | RO_COMPAT_RMAPBT | RO_COMPAT_REFLINK | RO_COMPAT_INOBTCNT;
pub(crate) const DIFLAG_IMMUTABLE: u16 = 0x8;
pub(crate) const DIFLAG_APPEND: u16 = 0x10;

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
    // The log is never written by us, so one check per open suffices.
    if let Some(s) = c.log_state.get() {
        return Ok(*s);
    }
    let s = c.log_clean()?;
    let _ = c.log_state.set(s);
    Ok(s)
}

/// Encode `t` as an on-disk timestamp at `off` of inode `raw`.
pub(crate) fn put_time(raw: &mut [u8], off: usize, bigtime: bool, secs: i64, nanos: u32) {
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

pub(crate) fn seal(ip: &mut Inode) {
    if ip.version == 3 {
        crate::csum::update(&mut ip.raw, 100);
    }
}

pub(crate) fn now() -> (i64, u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        now.subsec_nanos(),
    )
}

pub(crate) fn unsupported(c: &Ctx, op: &str, path: &str, why: impl Into<String>) -> FsError {
    FsError::Unsupported {
        fs: c.location.clone(),
        op: format!("{op} {path}"),
        why: why.into(),
    }
}

/// An allocation refused for taking more pieces than the inode's block
/// map can hold, said as such (other errors unchanged).
fn too_fragmented(c: &Ctx, op: &str, path: &str, ip: &Inode, e: FsError) -> FsError {
    match e {
        FsError::Unsupported { why, .. } if why.contains("too fragmented") => unsupported(
            c,
            op,
            path,
            format!(
                "inode {}: {why} (its block map holds at most {} extents)",
                ip.ino,
                crate::bmbt::max_mapped(c, ip)
            ),
        ),
        e => e,
    }
}

/// The reverse-mapping owner of file blocks from file offset `off` of `e`.
fn owner_of(ino: u64, e: &Extent, off: u64) -> alloc::Owner {
    let who = alloc::Owner::data(ino, off);
    if e.unwritten {
        who.unwritten()
    } else {
        who
    }
}

/// Apply the superblock counter changes to the primary superblock. With
/// lazy counters the kernel would only fold them in at unmount; we keep
/// the primary superblock equal to the sum of the AG headers, as a clean
/// unmount leaves it (xfs_repair -n compares them).
pub(crate) fn finish_sb(tx: &mut Tx) -> Result<(), FsError> {
    if tx.d_ifree == 0 && tx.d_fdblocks == 0 && !tx.set_attrbit {
        return Ok(());
    }
    let c = tx.c;
    let sect = c.geo.sect_size as usize;
    let mut sb = tx.read(0, sect)?;
    if tx.set_attrbit {
        let v = crate::be::be16(&sb, 100) | 0x0010;
        sb[100..102].copy_from_slice(&v.to_be_bytes());
    }
    let ifree = be64(&sb, 136).checked_add_signed(tx.d_ifree);
    let fd = be64(&sb, 144).checked_add_signed(tx.d_fdblocks);
    let (Some(ifree), Some(fd)) = (ifree, fd) else {
        return Err(c.corrupt("superblock", "free counters underflow".into()));
    };
    put64(&mut sb, 136, ifree);
    put64(&mut sb, 144, fd);
    if c.geo.v5 {
        crate::csum::update(&mut sb, 224);
    }
    tx.write(0, sb)
}

/// Stage `data` into the blocks mapped by `pieces` starting at file block
/// `first` (zero-padded to whole blocks).
fn stage_data(
    tx: &mut Tx,
    pieces: &[Got],
    first: u64,
    data: &[u8],
) -> Result<Vec<Extent>, FsError> {
    let c = tx.c;
    let bs = u64::from(c.geo.block_size);
    let mut fb = first;
    let mut out = Vec::new();
    for g in pieces {
        let at = c
            .geo
            .fsb_to_byte(g.fsb, g.len)
            .ok_or_else(|| c.corrupt("allocation", "extent outside the filesystem".into()))?;
        let from = (fb * bs) as usize;
        let to = ((fb + g.len) * bs) as usize;
        let mut buf = vec![0u8; to - from];
        let have = data.len().min(to).saturating_sub(from);
        buf[..have].copy_from_slice(&data[from..from + have]);
        tx.write(at, buf)?;
        out.push(Extent {
            off: fb,
            fsb: g.fsb,
            len: g.len,
            unwritten: false,
        });
        fb += g.len;
    }
    Ok(out)
}

pub(crate) fn replace_file(fs: &mut XfsFs, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let c = &fs.ctx;
    let shown = path.to_string();
    let refuse = |why: String| unsupported(c, "replace_file", &shown, why);
    check(c)?;
    let mut ip = fs.inode_at(path)?;
    vmie_guestfs::require_regular(ip.file_type(), path, || c.location.clone())?;
    debug_assert_eq!(ip.file_type(), FileType::Regular);
    if ip.is_realtime() {
        return Err(refuse("the file's data is on the realtime device".into()));
    }
    if ip.flags & (DIFLAG_IMMUTABLE | DIFLAG_APPEND) != 0 {
        return Err(refuse("the file is immutable or append-only".into()));
    }
    let mut tx = Tx::new(c);
    let mut ext = crate::bmbt::data_extents(&tx, &ip, &shown)?;
    let bs = u64::from(c.geo.block_size);
    let need = (data.len() as u64).div_ceil(bs);
    let reflink = ip.flags2 & DIFLAG2_REFLINK != 0;
    // Never overwrite a block another file shares.
    if reflink {
        for e in &ext {
            if e.off < need && alloc::shared(&tx, e.fsb, e.len)? {
                return Err(refuse(
                    "the file shares blocks with another (reflink); copy-on-write is not implemented"
                        .into(),
                ));
            }
        }
    }
    // Blocks past the new end go back to the free space, as a truncate
    // does (a shared one is refused: its reference count is not kept).
    let mut kept: Vec<Extent> = Vec::with_capacity(ext.len());
    // (first block, length, reverse-mapping owner) of each piece cut off.
    let mut cut: Vec<(u64, u64, alloc::Owner)> = Vec::new();
    for e in &ext {
        let end = e.off.saturating_add(e.len);
        if end <= need {
            kept.push(*e);
        } else if e.off >= need {
            cut.push((e.fsb, e.len, owner_of(ip.ino, e, e.off)));
        } else {
            let n = need - e.off;
            kept.push(Extent { len: n, ..*e });
            cut.push((e.fsb + n, e.len - n, owner_of(ip.ino, e, e.off + n)));
        }
    }
    if !cut.is_empty() {
        let mut freed = 0u64;
        for &(fsb, len, who) in &cut {
            if reflink && alloc::shared(&tx, fsb, len)? {
                return Err(refuse(
                    "the file shares blocks past its new end with another (reflink); dropping a reference count is not implemented"
                        .into(),
                ));
            }
            alloc::free_for(&mut tx, fsb, len, who)?;
            freed += len;
        }
        ext = kept;
        let nb = ip
            .nblocks
            .checked_sub(freed)
            .ok_or_else(|| c.corrupt(&shown, "the file counts fewer blocks than it maps".into()))?;
        dirw::set_nblocks(&mut ip, nb);
    }
    // The written extents covering blocks 0..need from the start.
    let mut covered = 0u64;
    let mut used = 0usize;
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
        tx.write(disk, buf)?;
        covered += n;
        used += 1;
    }
    if covered < need {
        if ext.len() > used {
            return Err(refuse(format!(
                "the file has holes or unwritten extents after block {covered}; growing such a file is not implemented"
            )));
        }
        let near = ext.last().map(|e| e.fsb + e.len);
        let max_pieces = crate::bmbt::max_mapped(c, &ip)
            .saturating_sub(ext.len())
            .max(1);
        let got = alloc::alloc_for(
            &mut tx,
            alloc::Owner::data(ip.ino, covered),
            agno_of(c, ip.ino),
            need - covered,
            1,
            near,
            max_pieces,
        )
        .map_err(|e| too_fragmented(c, "replace_file", &shown, &ip, e))?;
        let added: u64 = got.iter().map(|g| g.len).sum();
        ext.extend(stage_data(&mut tx, &got, covered, data)?);
        let nb = ip.nblocks + added;
        dirw::set_nblocks(&mut ip, nb);
        dirw::set_extents(&mut tx, &mut ip, &ext, &shown)?;
    } else if !cut.is_empty() {
        dirw::set_extents(&mut tx, &mut ip, &ext, &shown)?;
    }
    put64(&mut ip.raw, 56, data.len() as u64);
    touch(&mut ip);
    seal(&mut ip);
    tx.write(ip.at, ip.raw.clone())?;
    finish_sb(&mut tx)?;
    tx.commit()
}

/// A name that may be added to a directory.
pub(crate) fn check_name(c: &Ctx, op: &str, path: &GuestPath) -> Result<Vec<u8>, FsError> {
    let shown = path.to_string();
    let name = path.file_name().unwrap_or_default().to_vec();
    if name.is_empty()
        || name.len() > 255
        || name == b"."
        || name == b".."
        || name.contains(&0)
        || name.contains(&b'/')
    {
        return Err(unsupported(c, op, &shown, "not a valid XFS file name"));
    }
    Ok(name)
}

/// The shortform attribute fork for `xattrs`, if any.
fn attr_fork(
    c: &Ctx,
    op: &str,
    shown: &str,
    xattrs: &[vmie_guestfs::Xattr],
) -> Result<Option<Vec<u8>>, FsError> {
    if xattrs.is_empty() {
        return Ok(None);
    }
    if !c.geo.attr2 {
        return Err(unsupported(
            c,
            op,
            shown,
            "extended attributes on a v4 filesystem without attr2",
        ));
    }
    let mut out = vec![0u8; 4];
    for x in xattrs {
        let (flags, name) = if let Some(n) = x.name.strip_prefix(b"security.") {
            (4u8, n)
        } else if let Some(n) = x.name.strip_prefix(b"trusted.") {
            (2, n)
        } else if let Some(n) = x.name.strip_prefix(b"user.") {
            (0, n)
        } else {
            return Err(unsupported(
                c,
                op,
                shown,
                format!(
                    "extended attribute {} (only security., trusted. and user. are written)",
                    String::from_utf8_lossy(&x.name)
                ),
            ));
        };
        if name.is_empty() || name.len() >= 255 || x.value.len() >= 255 {
            return Err(unsupported(
                c,
                op,
                shown,
                format!(
                    "extended attribute {} is too long to keep in the inode (attribute blocks are not written)",
                    String::from_utf8_lossy(&x.name)
                ),
            ));
        }
        out.push(name.len() as u8);
        out.push(x.value.len() as u8);
        out.push(flags);
        out.extend_from_slice(name);
        out.extend_from_slice(&x.value);
    }
    if xattrs.len() > 255 || out.len() > 0xFFFF {
        return Err(unsupported(c, op, shown, "too many extended attributes"));
    }
    let total = out.len() as u16;
    out[0..2].copy_from_slice(&total.to_be_bytes());
    out[2] = xattrs.len() as u8;
    Ok(Some(out))
}

/// What a new inode holds.
struct NewInode<'a> {
    mode: u16,
    attrs: &'a NewAttrs,
    nlink: u32,
    format: u8,
}

/// Build new inode `ino` (taken free from its chunk) in memory: the core
/// as the kernel initialises it, an empty data fork of `format`, and the
/// shortform attribute fork.
fn new_inode(tx: &mut Tx, ino: u64, n: &NewInode, op: &str, shown: &str) -> Result<Inode, FsError> {
    let c = tx.c;
    let g = &c.geo;
    let at = g.ino_to_byte(ino).ok_or_else(|| {
        c.corrupt(
            shown,
            format!("allocated inode {ino} is outside the filesystem"),
        )
    })?;
    let old = tx.read(at, g.inode_size as usize)?;
    let bad = |d: String| c.corrupt(&format!("inode {ino}"), d);
    if crate::be::be16(&old, 0) != crate::inode::INODE_MAGIC {
        return Err(bad(
            "the inobt calls it free but it has no inode magic".into()
        ));
    }
    if crate::be::be16(&old, 2) != 0 {
        return Err(bad("the inobt calls it free but it is in use".into()));
    }
    if !g.nlink_bit {
        return Err(unsupported(
            c,
            op,
            shown,
            "v4 filesystems with version 1 inodes",
        ));
    }
    let version = if g.v5 { 3u8 } else { 2 };
    let core = if g.v5 { 176 } else { 100 };
    let mut r = vec![0u8; g.inode_size as usize];
    r[0..2].copy_from_slice(&crate::inode::INODE_MAGIC.to_be_bytes());
    r[2..4].copy_from_slice(&n.mode.to_be_bytes());
    r[4] = version;
    r[5] = n.format;
    put32(&mut r, 8, n.attrs.uid);
    put32(&mut r, 12, n.attrs.gid);
    put32(&mut r, 16, n.nlink);
    let mut flags2 = 0u64;
    if g.v5 && g.bigtime() {
        flags2 |= DIFLAG2_BIGTIME;
    }
    if g.v5 && g.has(crate::sb::INCOMPAT_NREXT64) {
        flags2 |= DIFLAG2_NREXT64;
    }
    let (secs, nanos) = now();
    let big = flags2 & DIFLAG2_BIGTIME != 0;
    for off in [32, 40, 48] {
        put_time(&mut r, off, big, secs, nanos);
    }
    r[83] = FMT_EXTENTS; // attribute fork format when there is none
    r[92..96].copy_from_slice(&old[92..96]); // generation
    put32(&mut r, 96, 0xFFFF_FFFF); // next unlinked
    if g.v5 {
        put64(&mut r, 104, 1);
        r[112..120].copy_from_slice(&old[112..120]); // keep the LSN
        put64(&mut r, 120, flags2);
        put_time(&mut r, 144, big, secs, nanos);
        put64(&mut r, 152, ino);
        r[160..176].copy_from_slice(&g.meta_uuid);
    }
    let mut forkoff = 0usize;
    let mut attrbit = false;
    if let Some(af) = attr_fork(c, op, shown, &n.attrs.xattrs)? {
        attrbit = !g.attrbit;
        let lit = r.len() - core;
        let asize = af.len().div_ceil(8) * 8;
        // Leave the data fork at least one extent (or a short name).
        if asize + 16 > lit {
            return Err(unsupported(
                c,
                op,
                shown,
                "the extended attributes do not fit in the inode",
            ));
        }
        forkoff = (lit - asize) / 8 * 8;
        r[82] = (forkoff / 8) as u8;
        r[83] = FMT_LOCAL;
        r[core + forkoff..core + forkoff + af.len()].copy_from_slice(&af);
    }
    tx.set_attrbit |= attrbit;
    Ok(Inode {
        ino,
        at,
        raw: r,
        mode: n.mode,
        version,
        format: n.format,
        aformat: if forkoff == 0 { FMT_EXTENTS } else { FMT_LOCAL },
        uid: n.attrs.uid,
        gid: n.attrs.gid,
        nlink: n.nlink,
        size: 0,
        nblocks: 0,
        nextents: 0,
        anextents: 0,
        flags: 0,
        flags2,
        core,
        forkoff,
    })
}

/// The parent directory of a path to create, and the name, checked.
fn prepare(fs: &XfsFs, op: &str, path: &GuestPath) -> Result<(Inode, Vec<u8>), FsError> {
    let c = &fs.ctx;
    check(c)?;
    let name = check_name(c, op, path)?;
    let parent = path.parent();
    let dir = fs.inode_at(&parent)?;
    if dir.file_type() != FileType::Directory {
        return Err(FsError::NotADirectory {
            fs: c.location.clone(),
            path: parent.to_string(),
        });
    }
    if c.dir_lookup(&dir, &name, &parent.to_string())?.is_some() {
        return Err(FsError::Exists {
            fs: c.location.clone(),
            path: path.to_string(),
        });
    }
    if dir.is_realtime() || dir.flags & DIFLAG_RTINHERIT != 0 {
        return Err(unsupported(
            c,
            op,
            &path.to_string(),
            "the directory places new files on the realtime device",
        ));
    }
    Ok((dir, name))
}

const DIFLAG_RTINHERIT: u16 = 0x80;
pub(crate) const FT_REG: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_SYMLINK: u8 = 7;

/// Add the entry, update the parent, the superblock, and commit.
fn link_and_commit(
    mut tx: Tx,
    mut dir: Inode,
    mut ip: Inode,
    name: &[u8],
    ftype: u8,
    shown: &str,
) -> Result<(), FsError> {
    let c = tx.c;
    dirw::add_entry(&mut tx, &mut dir, name, ip.ino, ftype, shown)?;
    if ftype == FT_DIR {
        let n = dir
            .nlink
            .checked_add(1)
            .ok_or_else(|| c.corrupt(shown, "link count overflows".into()))?;
        put32(&mut dir.raw, 16, n);
        dir.nlink = n;
    }
    touch(&mut dir);
    seal(&mut dir);
    tx.write(dir.at, dir.raw.clone())?;
    seal(&mut ip);
    tx.write(ip.at, ip.raw.clone())?;
    finish_sb(&mut tx)?;
    tx.commit()
}

pub(crate) fn create_file(
    fs: &mut XfsFs,
    path: &GuestPath,
    data: &[u8],
    attrs: &NewAttrs,
) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let (dir, name) = prepare(fs, "create_file", path)?;
    let c = &fs.ctx;
    let shown = path.to_string();
    let mut tx = Tx::new(c);
    let ino = alloc::ialloc(&mut tx, agno_of(c, dir.ino))?;
    let spec = NewInode {
        mode: 0o100000 | (attrs.mode & 0o7777) as u16,
        attrs,
        nlink: 1,
        format: FMT_EXTENTS,
    };
    let mut ip = new_inode(&mut tx, ino, &spec, "create_file", &shown)?;
    let bs = u64::from(c.geo.block_size);
    let need = (data.len() as u64).div_ceil(bs);
    if need > 0 {
        let room = crate::bmbt::max_mapped(c, &ip);
        let got = alloc::alloc_for(
            &mut tx,
            alloc::Owner::data(ino, 0),
            agno_of(c, ino),
            need,
            1,
            None,
            room,
        )
        .map_err(|e| too_fragmented(c, "create_file", &shown, &ip, e))?;
        let ext = stage_data(&mut tx, &got, 0, data)?;
        dirw::set_nblocks(&mut ip, need);
        dirw::set_extents(&mut tx, &mut ip, &ext, &shown)?;
    }
    dirw::set_size(&mut ip, data.len() as u64);
    link_and_commit(tx, dir, ip, &name, FT_REG, &shown)
}

pub(crate) fn symlink(
    fs: &mut XfsFs,
    path: &GuestPath,
    target: &[u8],
    attrs: &NewAttrs,
) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let (dir, name) = prepare(fs, "symlink", path)?;
    let c = &fs.ctx;
    let shown = path.to_string();
    if target.is_empty() || target.len() > 1024 {
        return Err(unsupported(
            c,
            "symlink",
            &shown,
            "a symlink target must be 1 to 1024 bytes",
        ));
    }
    let mut tx = Tx::new(c);
    let ino = alloc::ialloc(&mut tx, agno_of(c, dir.ino))?;
    let spec = NewInode {
        mode: 0o120777,
        attrs,
        nlink: 1,
        format: FMT_LOCAL,
    };
    let mut ip = new_inode(&mut tx, ino, &spec, "symlink", &shown)?;
    if target.len() <= ip.data_fork().len() {
        let core = ip.core;
        ip.raw[core..core + target.len()].copy_from_slice(target);
    } else {
        let bs = c.geo.block_size as usize;
        let per = if c.geo.v5 { bs - 56 } else { bs };
        let need = target.len().div_ceil(per) as u64;
        let room = ip.data_fork().len() / 16;
        let got = alloc::alloc_for(
            &mut tx,
            alloc::Owner::data(ino, 0),
            agno_of(c, ino),
            need,
            1,
            None,
            room,
        )?;
        let mut ext = Vec::new();
        let mut fb = 0u64;
        let mut done = 0usize;
        for g in &got {
            for k in 0..g.len {
                let fsb = g.fsb + k;
                let at = c
                    .geo
                    .fsb_to_byte(fsb, 1)
                    .ok_or_else(|| c.corrupt(&shown, "extent outside the filesystem".into()))?;
                let mut b = vec![0u8; bs];
                let n = (target.len() - done).min(per);
                if c.geo.v5 {
                    put32(&mut b, 0, 0x5853_4c4d);
                    put32(&mut b, 4, done as u32);
                    put32(&mut b, 8, n as u32);
                    b[16..32].copy_from_slice(&c.geo.meta_uuid);
                    put64(&mut b, 32, ino);
                    put64(&mut b, 40, at >> 9);
                    b[56..56 + n].copy_from_slice(&target[done..done + n]);
                    crate::csum::update(&mut b, 12);
                } else {
                    b[..n].copy_from_slice(&target[done..done + n]);
                }
                done += n;
                tx.write(at, b)?;
            }
            ext.push(Extent {
                off: fb,
                fsb: g.fsb,
                len: g.len,
                unwritten: false,
            });
            fb += g.len;
        }
        dirw::set_nblocks(&mut ip, need);
        dirw::set_extents(&mut tx, &mut ip, &ext, &shown)?;
    }
    dirw::set_size(&mut ip, target.len() as u64);
    link_and_commit(tx, dir, ip, &name, FT_SYMLINK, &shown)
}

pub(crate) fn mkdir(fs: &mut XfsFs, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let (dir, name) = prepare(fs, "mkdir", path)?;
    let c = &fs.ctx;
    let shown = path.to_string();
    if dir.nlink >= 0x7FFF_FFFF {
        return Err(unsupported(
            c,
            "mkdir",
            &shown,
            "the parent has too many links",
        ));
    }
    let mut tx = Tx::new(c);
    let ino = alloc::ialloc(&mut tx, agno_of(c, dir.ino))?;
    let spec = NewInode {
        mode: 0o040000 | (attrs.mode & 0o7777) as u16,
        attrs,
        nlink: 2,
        format: FMT_LOCAL,
    };
    let mut ip = new_inode(&mut tx, ino, &spec, "mkdir", &shown)?;
    // Shortform header: no entries, the parent (8 bytes with i8count 1
    // when its inode number needs them, as the kernel writes it).
    dirw::init_shortform(c, &mut ip, dir.ino, &shown)?;
    link_and_commit(tx, dir, ip, &name, FT_DIR, &shown)
}
