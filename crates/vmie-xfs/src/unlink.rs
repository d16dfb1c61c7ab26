//! Removing and renaming: `remove` (a regular file, symlink or other
//! non-directory, or an empty directory) and `rename` (in one directory or
//! across two, replacing a non-directory target). Each is one in-memory
//! transaction ([`Tx`]) like the other writers: the entry is removed or
//! retargeted in place in its directory (shortform with 4- or 8-byte
//! inode numbers, block, leaf or node form; the form is kept), the link
//! count dropped, and an inode left without links
//! is freed the way the kernel frees it: its extents (and the blocks of a
//! bmbt block map) go back to the
//! bnobt/cntbt (merged with their free neighbours), its inode is cleared
//! and marked free in the inobt/finobt, and the AGF, AGI and superblock
//! counters follow (on rmapbt filesystems each freed extent's reverse
//! mapping goes too, see `rmap`). Refused, writing nothing: freeing blocks
//! the refcountbt says are shared (reflink), realtime files, immutable or
//! append-only inodes and directories, and directory targets of a rename.

use vmie_guestfs::{FileType, FsError, GuestPath};

use crate::alloc;
use crate::be::{put32, put64};
use crate::dirw::{self, Change};
use crate::inode::{Extent, Fork, Inode, DIFLAG2_BIGTIME, DIFLAG2_NREXT64, FMT_EXTENTS, FMT_LOCAL};
use crate::sb::{INCOMPAT_NREXT64, RO_COMPAT_REFLINK};
use crate::tx::Tx;
use crate::write::{
    self, check, finish_sb, seal, touch, unsupported, DIFLAG_APPEND, DIFLAG_IMMUTABLE, FT_DIR,
    FT_REG, FT_SYMLINK,
};
use crate::{Ctx, XfsFs};

/// The on-disk file type of an entry for inode `ip`.
fn ftype_of(ip: &Inode) -> u8 {
    match ip.file_type() {
        FileType::Regular => FT_REG,
        FileType::Directory => FT_DIR,
        FileType::CharDevice => 3,
        FileType::BlockDevice => 4,
        FileType::Fifo => 5,
        FileType::Socket => 6,
        FileType::Symlink => FT_SYMLINK,
        _ => 0,
    }
}

/// Set the change time to now and bump the change counter.
fn touch_ctime(ip: &mut Inode) {
    let (secs, nanos) = write::now();
    let big = ip.flags2 & DIFLAG2_BIGTIME != 0;
    write::put_time(&mut ip.raw, 48, big, secs, nanos);
    if ip.version == 3 {
        let cc = crate::be::be64(&ip.raw, 104).wrapping_add(1);
        put64(&mut ip.raw, 104, cc);
    }
}

/// Refuse to change entries of, or links to, an immutable or append-only
/// inode (the kernel's EPERM).
fn check_mutable(c: &Ctx, op: &str, shown: &str, ip: &Inode) -> Result<(), FsError> {
    if ip.flags & (DIFLAG_IMMUTABLE | DIFLAG_APPEND) != 0 {
        return Err(unsupported(
            c,
            op,
            shown,
            format!("inode {} is immutable or append-only", ip.ino),
        ));
    }
    Ok(())
}

/// A directory that must be a directory.
fn dir_at(fs: &XfsFs, path: &GuestPath) -> Result<Inode, FsError> {
    let d = fs.inode_at(path)?;
    if d.file_type() != FileType::Directory {
        return Err(FsError::NotADirectory {
            fs: fs.ctx.location.clone(),
            path: path.to_string(),
        });
    }
    Ok(d)
}

fn link_count(c: &Ctx, ip: &mut Inode, delta: i32, shown: &str) -> Result<(), FsError> {
    let n = ip
        .nlink
        .checked_add_signed(delta)
        .filter(|&n| n < 0x7FFF_FFFF)
        .ok_or_else(|| {
            c.corrupt(
                shown,
                format!("inode {}: link count {} {delta:+}", ip.ino, ip.nlink),
            )
        })?;
    if ip.version == 1 {
        return Err(unsupported(
            c,
            "change links of",
            shown,
            "version 1 inodes (16-bit link counts) are not written",
        ));
    }
    put32(&mut ip.raw, 16, n);
    ip.nlink = n;
    Ok(())
}

/// Drop one link of `ip` (a directory loses both of its own): at zero the
/// inode is freed with its blocks, otherwise its change time is updated.
fn drop_link(tx: &mut Tx, mut ip: Inode, op: &str, shown: &str) -> Result<(), FsError> {
    let c = tx.c;
    let is_dir = ip.file_type() == FileType::Directory;
    if is_dir {
        if ip.nlink != 2 {
            return Err(c.corrupt(
                shown,
                format!(
                    "empty directory inode {} has {} links (2 expected)",
                    ip.ino, ip.nlink
                ),
            ));
        }
        link_count(c, &mut ip, -2, shown)?;
    } else {
        link_count(c, &mut ip, -1, shown)?;
    }
    if ip.nlink > 0 {
        touch_ctime(&mut ip);
        seal(&mut ip);
        return tx.write(ip.at, ip.raw.clone());
    }
    free_inode(tx, ip, op, shown)
}

/// Free an inode without links: its extents, then the inode itself.
fn free_inode(tx: &mut Tx, ip: Inode, op: &str, shown: &str) -> Result<(), FsError> {
    let c = tx.c;
    if ip.is_realtime() {
        return Err(unsupported(
            c,
            op,
            shown,
            "the file's data is on the realtime device",
        ));
    }
    let mut ext: Vec<(bool, Extent)> = Vec::new();
    // bmbt blocks (never shared), with whether they map the attr fork.
    let mut meta: Vec<(bool, u64)> = Vec::new();
    for (fork, fmt, present) in [
        (Fork::Data, ip.format, true),
        (Fork::Attr, ip.aformat, ip.forkoff != 0),
    ] {
        if !present || fmt == FMT_LOCAL || fmt == crate::inode::FMT_DEV {
            continue;
        }
        let attr = fork == Fork::Attr;
        if fmt == crate::inode::FMT_BTREE {
            let m = crate::bmbt::walk(tx, &ip, fork, shown)?;
            ext.extend(m.ext.into_iter().map(|e| (attr, e)));
            meta.extend(m.blocks.into_iter().map(|b| (attr, b)));
        } else {
            ext.extend(c.extents(&ip, fork, shown)?.into_iter().map(|e| (attr, e)));
        }
    }
    let total: u64 = ext.iter().map(|(_, e)| e.len).sum::<u64>() + meta.len() as u64;
    if total != ip.nblocks {
        return Err(c.corrupt(
            shown,
            format!(
                "inode {} counts {} blocks but maps {total}",
                ip.ino, ip.nblocks
            ),
        ));
    }
    if !ext.is_empty() || !meta.is_empty() {
        if c.geo.ro_compat & RO_COMPAT_REFLINK != 0 {
            for (_, e) in &ext {
                if alloc::shared(tx, e.fsb, e.len)? {
                    return Err(unsupported(
                        c,
                        op,
                        shown,
                        "the file shares blocks with another (reflink); dropping a reference count is not implemented",
                    ));
                }
            }
        }
        for (attr, e) in &ext {
            let mut who = alloc::Owner::data(ip.ino, e.off);
            if *attr {
                who = who.attr();
            }
            if e.unwritten {
                who = who.unwritten();
            }
            alloc::free_for(tx, e.fsb, e.len, who)?;
        }
        for &(attr, b) in &meta {
            let mut who = alloc::Owner::bmbt(ip.ino);
            if attr {
                who = who.attr();
            }
            alloc::free_for(tx, b, 1, who)?;
        }
    }
    let raw = cleared(c, &ip);
    tx.write(ip.at, raw)?;
    alloc::ifree(tx, ip.ino)
}

/// The inode as the kernel leaves a freed one: mode 0, no links, size or
/// blocks, empty extents-format forks, flags reset, the generation
/// bumped; owner, times and (v5) identity kept, the CRC recomputed.
fn cleared(c: &Ctx, ip: &Inode) -> Vec<u8> {
    let mut r = ip.raw.clone();
    let core = ip.core;
    r[2..4].fill(0); // mode
    r[5] = FMT_EXTENTS;
    put32(&mut r, 16, 0); // nlink
    r[6..8].fill(0); // v1 link count / onlink
    r[24..32].fill(0); // big nextents or padding
    put64(&mut r, 56, 0); // size
    put64(&mut r, 64, 0); // nblocks
    put32(&mut r, 72, 0); // extsize
    put32(&mut r, 76, 0); // nextents
    r[80..82].fill(0); // anextents
    r[82] = 0; // forkoff
    r[83] = FMT_EXTENTS; // aformat
    r[90..92].fill(0); // flags
    let generation = crate::be::be32(&r, 92).wrapping_add(1);
    put32(&mut r, 92, generation);
    put32(&mut r, 96, 0xFFFF_FFFF); // next unlinked
    if ip.version == 3 {
        let mut flags2 = 0u64;
        if c.geo.bigtime() {
            flags2 |= DIFLAG2_BIGTIME;
        }
        if c.geo.has(INCOMPAT_NREXT64) {
            flags2 |= DIFLAG2_NREXT64;
        }
        // Timestamps were encoded by the old flags2; keep them valid.
        if (ip.flags2 ^ flags2) & DIFLAG2_BIGTIME != 0 {
            for off in [32, 40, 48, 144] {
                r[off..off + 8].fill(0);
            }
        }
        put64(&mut r, 120, flags2);
        put32(&mut r, 128, 0); // cowextsize
        let cc = crate::be::be64(&r, 104).wrapping_add(1);
        put64(&mut r, 104, cc);
    }
    r[core..].fill(0);
    if ip.version == 3 {
        crate::csum::update(&mut r, 100);
    }
    r
}

/// The entry `name` of `dir`, which must exist.
fn entry(
    fs: &XfsFs,
    dir: &Inode,
    name: &[u8],
    path: &GuestPath,
) -> Result<crate::dir::Entry, FsError> {
    let c = &fs.ctx;
    c.dir_lookup(dir, name, &path.parent().to_string())?
        .ok_or_else(|| FsError::NotFound {
            fs: c.location.clone(),
            path: path.to_string(),
        })
}

/// The name of a path that is not the root.
fn name_of<'p>(c: &Ctx, op: &str, path: &'p GuestPath) -> Result<&'p [u8], FsError> {
    match path.file_name() {
        Some(n) if !path.is_root() => Ok(n),
        _ => Err(unsupported(c, op, &path.to_string(), "the root directory")),
    }
}

/// A directory that may lose entry `path`: empty if it is a directory.
fn check_removable(fs: &XfsFs, ip: &Inode, path: &GuestPath, op: &str) -> Result<(), FsError> {
    let c = &fs.ctx;
    let shown = path.to_string();
    check_mutable(c, op, &shown, ip)?;
    if ip.file_type() == FileType::Directory && !c.dir_entries(ip, &shown)?.is_empty() {
        return Err(FsError::NotEmpty {
            fs: c.location.clone(),
            path: shown,
        });
    }
    Ok(())
}

fn not_found(c: &Ctx, path: &GuestPath) -> FsError {
    FsError::NotFound {
        fs: c.location.clone(),
        path: path.to_string(),
    }
}

pub(crate) fn remove(fs: &mut XfsFs, path: &GuestPath) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let c = &fs.ctx;
    let shown = path.to_string();
    check(c)?;
    let name = name_of(c, "remove", path)?;
    let parent = path.parent();
    let mut dir = dir_at(fs, &parent)?;
    check_mutable(c, "remove", &shown, &dir)?;
    let e = entry(fs, &dir, name, path)?;
    let ip = c.inode(e.ino, &shown)?;
    check_removable(fs, &ip, path, "remove")?;
    let mut tx = Tx::new(c);
    let pshown = parent.to_string();
    dirw::change_entry(&mut tx, &mut dir, name, Change::Remove, &pshown)?
        .ok_or_else(|| not_found(c, path))?;
    if ip.file_type() == FileType::Directory {
        link_count(c, &mut dir, -1, &pshown)?;
    }
    touch(&mut dir);
    seal(&mut dir);
    tx.write(dir.at, dir.raw.clone())?;
    drop_link(&mut tx, ip, "remove", &shown)?;
    finish_sb(&mut tx)?;
    tx.commit()
}

pub(crate) fn rename(fs: &mut XfsFs, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
    fs.dir_cache.replace(None);
    let c = &fs.ctx;
    check(c)?;
    if from.components() == to.components() {
        return Ok(());
    }
    let (fshown, tshown) = (from.to_string(), to.to_string());
    let sname = name_of(c, "rename", from)?;
    let dname = write::check_name(c, "rename", to)?;
    let (sparent, dparent) = (from.parent(), to.parent());
    let mut sdir = dir_at(fs, &sparent)?;
    let mut ddir = dir_at(fs, &dparent)?;
    check_mutable(c, "rename", &fshown, &sdir)?;
    check_mutable(c, "rename", &tshown, &ddir)?;
    let se = entry(fs, &sdir, sname, from)?;
    let mut sip = c.inode(se.ino, &fshown)?;
    let s_is_dir = sip.file_type() == FileType::Directory;
    if s_is_dir && to.components().starts_with(from.components()) {
        return Err(unsupported(
            c,
            "rename",
            &fshown,
            "a directory cannot move into itself",
        ));
    }
    let same_dir = sdir.ino == ddir.ino;
    let moves_dir = s_is_dir && !same_dir;
    if moves_dir {
        // '..' changes, and with it the link counts of both parents.
        check_mutable(c, "rename", &fshown, &sip)?;
    }
    let ftype = ftype_of(&sip);
    let (spshown, dpshown) = (sparent.to_string(), dparent.to_string());
    let mut tx = Tx::new(c);
    let target = c.dir_lookup(&ddir, &dname, &dpshown)?;
    let mut replaced = None;
    match target {
        Some(de) if de.ino == se.ino => {
            // Two names of one inode: the source name goes (as ext4 here).
            let dir = if same_dir { &mut ddir } else { &mut sdir };
            dirw::change_entry(&mut tx, dir, sname, Change::Remove, &spshown)?
                .ok_or_else(|| not_found(c, from))?;
            touch(dir);
            seal(dir);
            tx.write(dir.at, dir.raw.clone())?;
            drop_link(&mut tx, sip, "rename", &fshown)?;
            finish_sb(&mut tx)?;
            return tx.commit();
        }
        Some(de) => {
            let dip = c.inode(de.ino, &tshown)?;
            if dip.file_type() == FileType::Directory {
                return Err(FsError::IsADirectory {
                    fs: c.location.clone(),
                    path: tshown,
                });
            }
            if s_is_dir {
                return Err(FsError::NotADirectory {
                    fs: c.location.clone(),
                    path: tshown,
                });
            }
            check_mutable(c, "rename", &tshown, &dip)?;
            dirw::change_entry(
                &mut tx,
                &mut ddir,
                &dname,
                Change::Retarget { ino: se.ino, ftype },
                &dpshown,
            )?
            .ok_or_else(|| not_found(c, to))?;
            replaced = Some(dip);
        }
        None => {
            if moves_dir && ddir.nlink >= 0x7FFF_FFFE {
                return Err(unsupported(
                    c,
                    "rename",
                    &tshown,
                    "the new parent has too many links",
                ));
            }
            dirw::add_entry(&mut tx, &mut ddir, &dname, se.ino, ftype, &dpshown)?;
        }
    }
    // The source name goes (from the same in-memory inode when the
    // directory is one).
    {
        let dir = if same_dir { &mut ddir } else { &mut sdir };
        dirw::change_entry(&mut tx, dir, sname, Change::Remove, &spshown)?
            .ok_or_else(|| not_found(c, from))?;
    }
    if moves_dir {
        dirw::change_entry(
            &mut tx,
            &mut sip,
            b"..",
            Change::Retarget {
                ino: ddir.ino,
                ftype: FT_DIR,
            },
            &fshown,
        )?;
        link_count(c, &mut sdir, -1, &spshown)?;
        link_count(c, &mut ddir, 1, &dpshown)?;
    }
    if !same_dir {
        touch(&mut sdir);
        seal(&mut sdir);
        tx.write(sdir.at, sdir.raw.clone())?;
    }
    touch(&mut ddir);
    seal(&mut ddir);
    tx.write(ddir.at, ddir.raw.clone())?;
    touch_ctime(&mut sip);
    seal(&mut sip);
    tx.write(sip.at, sip.raw.clone())?;
    if let Some(dip) = replaced {
        drop_link(&mut tx, dip, "rename", &tshown)?;
    }
    finish_sb(&mut tx)?;
    tx.commit()
}
