//! The write half of [`GuestFs`](vmie_guestfs::GuestFs) for ext2/3/4.
//!
//! What is written: block and inode bitmaps (initialising `BLOCK_UNINIT` /
//! `INODE_UNINIT` groups first, `itable_unused`, `used_dirs`), group
//! descriptors (32 or 64 bytes, flex_bg bitmaps anywhere), superblock free
//! counts, inodes (i_size, i_blocks with huge_file, nanosecond times in the
//! extra fields), extent trees of any depth (depth 0 in the inode, index and
//! leaf blocks as needed) or direct/indirect/double-indirect maps on
//! ext2/ext3 files, directory entries in linear blocks and in htree leaves
//! (leaf splits, index-node splits, a new level under a full root within
//! the allowed depth), xattrs of new files in the inode body or an xattr
//! block, and every checksum that applies: crc32c for `metadata_csum`
//! (superblock, descriptors, bitmaps, inodes, extent blocks, directory leaf
//! tails and dx tails, xattr blocks; seed from `metadata_csum_seed` or the
//! UUID) and crc16 for `uninit_bg` descriptors.
//!
//! What is refused (FsError::Unsupported, nothing written): a journal that
//! needs recovery, a filesystem not cleanly unmounted or with errors
//! recorded, unknown incompatible or read-only-compatible features, `quota`
//! (usage would go stale), `bigalloc`, `meta_bg`, `mmp`, `ea_inode`,
//! `journal_dev`, `orphan_present`; touching encrypted, casefolded, verity,
//! inline-data, immutable or append-only inodes; files needing
//! triple-indirect blocks. `inline_data` and `meta_bg` filesystems are
//! refused when opening (see `Ext4Fs::open`). `large_dir` is written (a third
//! htree index level) and read back by ext4-view through the adapter that
//! hides the flag from it (see `DevReader`).
//!
//! Also refused (FsError::Corrupt, nothing written): a block group whose
//! bitmaps disagree with its descriptor (checksum, free counts, padding,
//! `itable_unused`), with the metadata it holds, or with the superblock's
//! free counts, checked the first time an operation allocates in or frees
//! into it; a block the bitmap calls free that an inode read by the
//! operation maps; an inode the bitmap calls free that still has links.
//! A bitmap that lost a block of a file the operation does not read, with
//! every count re-sealed to match, is beyond these checks: only a full
//! scan sees it (`e2fsck -fn`, the CLI's `--check-fs`).
//!
//! Every operation runs as one [`Tx`]: it reads what it needs, plans and
//! makes every change in memory (allocation included), and only when all of
//! it succeeded writes the changed blocks to the device (the overlay in
//! production). A refused or failed operation (no space, no inode, a full
//! htree index, a corrupt structure) writes nothing.

use vmie_guestfs::{FsError, GuestPath, NewAttrs};

use crate::dir::{self, FT_DIR, FT_LNK, FT_REG};
use crate::geo::{Geo, RO_DIR_NLINK, RO_LARGE_FILE};
use crate::inode::{self, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::tx::Tx;

const ROOT_INO: u32 = 2;

fn shown(p: &GuestPath) -> String {
    p.to_string()
}

/// Walk `path` to its parent directory: (parent inode, last name).
fn parent_of<'p>(tx: &mut Tx<'_>, path: &'p GuestPath) -> Result<(u32, &'p [u8]), FsError> {
    let comps = path.components();
    let (last, dirs) = comps.split_last().ok_or_else(|| {
        tx.unsupported(
            format!("change {}", shown(path)),
            "the root directory itself",
        )
    })?;
    let mut cur = ROOT_INO;
    let mut walked = GuestPath::root();
    for c in dirs {
        walked = walked.join(c);
        let d = dir::open(tx, cur, &walked.parent().to_string())?;
        let (_, e) = dir::lookup(tx, &d, c, &shown(&walked))?.ok_or_else(|| FsError::NotFound {
            fs: tx.loc.to_string(),
            path: shown(&walked),
        })?;
        cur = e.ino;
    }
    if last.is_empty()
        || last.len() > 255
        || last.contains(&0)
        || last.contains(&b'/')
        || last == b"."
        || last == b".."
    {
        return Err(FsError::PathTooLong {
            fs: tx.loc.to_string(),
            path: shown(path),
        });
    }
    Ok((cur, last.as_slice()))
}

fn not_found(tx: &Tx<'_>, path: &GuestPath) -> FsError {
    FsError::NotFound {
        fs: tx.loc.to_string(),
        path: shown(path),
    }
}

/// Write `data` as the whole contents of inode `ino` (whose old blocks the
/// caller has freed), goal block `goal`. Returns blocks used incl. map.
fn write_contents(
    tx: &mut Tx<'_>,
    ino: u32,
    raw: &mut [u8],
    data: &[u8],
    goal: u64,
) -> Result<u64, FsError> {
    let bs = tx.g.bs as usize;
    let n = data.len().div_ceil(bs) as u64;
    let runs = tx.alloc_blocks(n, goal)?;
    let mut chunks = data.chunks(bs);
    for &(s, len) in &runs {
        for b in s..s + len {
            let mut blk = chunks.next().map(<[u8]>::to_vec).unwrap_or_default();
            blk.resize(bs, 0);
            tx.write_blk(b, blk)?;
        }
    }
    let meta = inode::write_map(tx, ino, raw, &runs, goal)?;
    Ok(n + meta.len() as u64)
}

fn group_goal(tx: &Tx<'_>, ino: u32) -> u64 {
    tx.g.group_first((ino - 1) / tx.g.ipg)
}

fn check_size(tx: &Tx<'_>, len: usize) -> Result<(), FsError> {
    if len as u64 >= 1 << 31 && tx.g.ro & RO_LARGE_FILE == 0 {
        return Err(tx.unsupported(
            "write",
            "file of 2 GiB or more without the large_file feature",
        ));
    }
    Ok(())
}

pub(crate) fn replace_file(tx: &mut Tx<'_>, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
    check_size(tx, data.len())?;
    let (pino, name) = parent_of(tx, path)?;
    let pdir = dir::open(tx, pino, &shown(&path.parent()))?;
    let (_, e) = dir::lookup(tx, &pdir, name, &shown(path))?.ok_or_else(|| not_found(tx, path))?;
    let ino = e.ino;
    let mut raw = tx.get_inode(ino)?;
    match inode::mode(&raw) & S_IFMT {
        S_IFREG => {}
        S_IFDIR => {
            return Err(FsError::IsADirectory {
                fs: tx.loc.to_string(),
                path: shown(path),
            })
        }
        _ => {
            return Err(FsError::NotAFile {
                fs: tx.loc.to_string(),
                path: shown(path),
            })
        }
    }
    dir::check_inode_writable(tx, ino, &raw, &format!("replace_file {}", shown(path)))?;
    let old = inode::read_map(tx, ino, &raw)?;
    let goal = old
        .runs
        .first()
        .map_or_else(|| group_goal(tx, ino), |r| r.1);
    inode::free_map(tx, &old)?;
    let used = write_contents(tx, ino, &mut raw, data, goal)?;
    let acl = u64::from(inode::file_acl(&raw) != 0);
    inode::set_blocks(tx, &mut raw, used + acl)?;
    inode::set_size(&mut raw, data.len() as u64);
    inode::touch_mc(&mut raw, tx.now);
    tx.put_inode(ino, &raw)
}

enum NewKind<'d> {
    File(&'d [u8]),
    Dir,
    Symlink(&'d [u8]),
}

fn nlink_inc(tx: &Tx<'_>, raw: &mut [u8], place: &str) -> Result<(), FsError> {
    let n = inode::links(raw);
    if n == 1 && tx.g.ro & RO_DIR_NLINK != 0 {
        return Ok(());
    }
    if n >= 64999 {
        if tx.g.ro & RO_DIR_NLINK != 0 {
            inode::set_links(raw, 1);
            return Ok(());
        }
        return Err(tx.unsupported(
            format!("mkdir in {place}"),
            "too many links (dir_nlink is off)",
        ));
    }
    inode::set_links(raw, n + 1);
    Ok(())
}

fn nlink_dec_dir(raw: &mut [u8]) {
    let n = inode::links(raw);
    if n > 2 {
        inode::set_links(raw, n - 1);
    }
}

pub(crate) fn create(
    tx: &mut Tx<'_>,
    path: &GuestPath,
    kind: NewKindArg<'_>,
    attrs: &NewAttrs,
) -> Result<(), FsError> {
    let kind = match kind {
        NewKindArg::File(d) => NewKind::File(d),
        NewKindArg::Dir => NewKind::Dir,
        NewKindArg::Symlink(t) => NewKind::Symlink(t),
    };
    let (pino, name) = parent_of(tx, path)?;
    let place = shown(&path.parent());
    let mut pdir = dir::open(tx, pino, &place)?;
    dir::check_inode_writable(tx, pino, &pdir.raw, &format!("create {}", shown(path)))?;
    if dir::lookup(tx, &pdir, name, &shown(path))?.is_some() {
        return Err(FsError::Exists {
            fs: tx.loc.to_string(),
            path: shown(path),
        });
    }
    let is_dir = matches!(kind, NewKind::Dir);
    let pgroup = (pino - 1) / tx.g.ipg;
    let ino = tx.alloc_inode(pgroup, is_dir)?;
    let (ifmt, ft) = match kind {
        NewKind::File(_) => (S_IFREG, FT_REG),
        NewKind::Dir => (S_IFDIR, FT_DIR),
        NewKind::Symlink(_) => (S_IFLNK, FT_LNK),
    };
    let gen = tx.now.1 ^ ino.rotate_left(16) ^ (tx.now.0 as u32);
    let mode = ifmt | (attrs.mode & 0o7777) as u16;
    let mut raw = inode::new_inode(
        tx,
        mode,
        attrs.uid,
        attrs.gid,
        if is_dir { 2 } else { 1 },
        gen,
    );
    let goal = group_goal(tx, ino);
    let mut xblocks = 0u64;
    if let Some(mut xblk) = inode::set_new_xattrs(tx, &mut raw, &attrs.xattrs)? {
        let b = tx
            .alloc_blocks(1, goal)?
            .first()
            .map(|r| r.0)
            .ok_or_else(|| tx.corrupt("allocator", "short allocation"))?;
        inode::finish_xattr_block(tx, &mut xblk, b);
        tx.write_blk(b, xblk)?;
        crate::geo::put32(&mut raw, 0x68, b as u32);
        crate::geo::put16(&mut raw, 0x76, (b >> 32) as u16);
        xblocks = 1;
    }
    let use_extents = tx.g.extents();
    match kind {
        NewKind::File(data) => {
            check_size(tx, data.len())?;
            if use_extents {
                let f = inode::flags(&raw) | inode::FL_EXTENTS;
                crate::geo::put32(&mut raw, 0x20, f);
            }
            let used = write_contents(tx, ino, &mut raw, data, goal)?;
            inode::set_blocks(tx, &mut raw, used + xblocks)?;
            inode::set_size(&mut raw, data.len() as u64);
        }
        NewKind::Symlink(target) => {
            if target.is_empty() || target.len() >= tx.g.bs as usize || target.len() > 4095 {
                return Err(FsError::PathTooLong {
                    fs: tx.loc.to_string(),
                    path: shown(path),
                });
            }
            if target.len() < 60 {
                raw[0x28..0x28 + target.len()].copy_from_slice(target);
                inode::set_blocks(tx, &mut raw, xblocks)?;
            } else {
                if use_extents {
                    let f = inode::flags(&raw) | inode::FL_EXTENTS;
                    crate::geo::put32(&mut raw, 0x20, f);
                }
                let used = write_contents(tx, ino, &mut raw, target, goal)?;
                inode::set_blocks(tx, &mut raw, used + xblocks)?;
            }
            inode::set_size(&mut raw, target.len() as u64);
        }
        NewKind::Dir => {
            if use_extents {
                let f = inode::flags(&raw) | inode::FL_EXTENTS;
                crate::geo::put32(&mut raw, 0x20, f);
            }
            let blk = dir::new_dir_block(tx, ino, pino);
            let used = write_contents(tx, ino, &mut raw, &blk, goal)?;
            inode::set_blocks(tx, &mut raw, used + xblocks)?;
            inode::set_size(&mut raw, tx.g.bs);
            // Checksum the new block as a directory leaf.
            let m = inode::read_map(tx, ino, &raw)?;
            if let Some(&(_, p, _)) = m.runs.first() {
                tx.dir_block_csum(p, ino, gen, crate::tx::DirKind::Leaf);
            }
        }
    }
    tx.put_inode(ino, &raw)?;
    dir::insert(tx, &mut pdir, name, ino, ft, &place)?;
    if is_dir {
        nlink_inc(tx, &mut pdir.raw, &place)?;
    }
    inode::touch_mc(&mut pdir.raw, tx.now);
    tx.put_inode(pino, &pdir.raw)
}

/// What to create.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewKindArg<'d> {
    File(&'d [u8]),
    Dir,
    Symlink(&'d [u8]),
}

/// Drop one link of inode `ino`; free it when none is left.
fn unlink_inode(tx: &mut Tx<'_>, ino: u32, as_dir: bool) -> Result<(), FsError> {
    let mut raw = tx.get_inode(ino)?;
    let n = inode::links(&raw);
    if !as_dir && n > 1 {
        inode::set_links(&mut raw, n - 1);
        inode::touch_c(&mut raw, tx.now);
        return tx.put_inode(ino, &raw);
    }
    let map = inode::read_map(tx, ino, &raw)?;
    inode::free_map(tx, &map)?;
    let acl = inode::file_acl(&raw);
    if acl != 0 {
        release_xattr_block(tx, acl)?;
    }
    inode::set_links(&mut raw, 0);
    inode::set_size(&mut raw, 0);
    raw[0x28..0x28 + 60].fill(0);
    crate::geo::put32(&mut raw, 0x68, 0);
    crate::geo::put16(&mut raw, 0x76, 0);
    let fl = inode::flags(&raw) & !(inode::FL_EXTENTS | inode::FL_INDEX);
    crate::geo::put32(&mut raw, 0x20, fl);
    inode::set_blocks(tx, &mut raw, 0)?;
    crate::geo::put32(&mut raw, 0x14, tx.now.0 as u32);
    inode::touch_mc(&mut raw, tx.now);
    tx.put_inode(ino, &raw)?;
    tx.free_inode(ino, as_dir)
}

fn release_xattr_block(tx: &mut Tx<'_>, b: u64) -> Result<(), FsError> {
    let mut blk = tx.read_blk(b)?;
    if crate::geo::le32(&blk, 0) != 0xEA02_0000 {
        return Err(tx.corrupt(format!("block {b}"), "xattr block without magic"));
    }
    let refs = crate::geo::le32(&blk, 4);
    if refs > 1 {
        crate::geo::put32(&mut blk, 4, refs - 1);
        if tx.g.metadata_csum() {
            crate::geo::put32(&mut blk, 0x10, 0);
            let c = crate::csum::crc32c(tx.g.csum_seed, &b.to_le_bytes());
            let c = crate::csum::crc32c(c, &blk);
            crate::geo::put32(&mut blk, 0x10, c);
        }
        tx.write_blk(b, blk)
    } else {
        tx.free_blocks(b, 1)
    }
}

pub(crate) fn remove(tx: &mut Tx<'_>, path: &GuestPath) -> Result<(), FsError> {
    let (pino, name) = parent_of(tx, path)?;
    let place = shown(&path.parent());
    let mut pdir = dir::open(tx, pino, &place)?;
    dir::check_inode_writable(tx, pino, &pdir.raw, &format!("remove {}", shown(path)))?;
    let (lb, e) = dir::lookup(tx, &pdir, name, &shown(path))?.ok_or_else(|| not_found(tx, path))?;
    let raw = tx.get_inode(e.ino)?;
    let as_dir = inode::is_dir(&raw);
    dir::check_inode_writable(tx, e.ino, &raw, &format!("remove {}", shown(path)))?;
    if as_dir {
        let d = dir::open(tx, e.ino, &shown(path))?;
        if !dir::is_empty(tx, &d, &shown(path))? {
            return Err(FsError::NotEmpty {
                fs: tx.loc.to_string(),
                path: shown(path),
            });
        }
    }
    dir::remove_at(tx, &pdir, lb, e.off, &place)?;
    unlink_inode(tx, e.ino, as_dir)?;
    if as_dir {
        nlink_dec_dir(&mut pdir.raw);
    }
    inode::touch_mc(&mut pdir.raw, tx.now);
    tx.put_inode(pino, &pdir.raw)
}

fn ftype_of(raw: &[u8]) -> u8 {
    match inode::mode(raw) & S_IFMT {
        S_IFREG => FT_REG,
        S_IFDIR => FT_DIR,
        S_IFLNK => FT_LNK,
        0o020000 => 3,
        0o060000 => 4,
        0o010000 => 5,
        0o140000 => 6,
        _ => 0,
    }
}

pub(crate) fn rename(tx: &mut Tx<'_>, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
    if from.components() == to.components() {
        return Ok(());
    }
    let (spino, sname) = parent_of(tx, from)?;
    let (dpino, dname) = parent_of(tx, to)?;
    let splace = shown(&from.parent());
    let dplace = shown(&to.parent());
    let sdir = dir::open(tx, spino, &splace)?;
    dir::check_inode_writable(tx, spino, &sdir.raw, &format!("rename {}", shown(from)))?;
    let (_, se) =
        dir::lookup(tx, &sdir, sname, &shown(from))?.ok_or_else(|| not_found(tx, from))?;
    let mut sraw = tx.get_inode(se.ino)?;
    let s_is_dir = inode::is_dir(&sraw);
    if s_is_dir && to.components().starts_with(from.components()) {
        return Err(tx.unsupported(
            format!("rename {}", shown(from)),
            "a directory cannot move into itself",
        ));
    }
    let ddir = dir::open(tx, dpino, &dplace)?;
    dir::check_inode_writable(tx, dpino, &ddir.raw, &format!("rename {}", shown(to)))?;
    let ft = ftype_of(&sraw);
    match dir::lookup(tx, &ddir, dname, &shown(to))? {
        Some((dlb, de)) => {
            if de.ino == se.ino {
                // Hard links to the same inode: just drop the source name.
                let sdir = dir::open(tx, spino, &splace)?;
                let (slb, se2) = dir::lookup(tx, &sdir, sname, &shown(from))?
                    .ok_or_else(|| not_found(tx, from))?;
                dir::remove_at(tx, &sdir, slb, se2.off, &splace)?;
                return unlink_inode(tx, se.ino, false);
            }
            let draw = tx.get_inode(de.ino)?;
            if inode::is_dir(&draw) {
                return Err(FsError::IsADirectory {
                    fs: tx.loc.to_string(),
                    path: shown(to),
                });
            }
            if s_is_dir {
                return Err(FsError::NotADirectory {
                    fs: tx.loc.to_string(),
                    path: shown(to),
                });
            }
            dir::check_inode_writable(tx, de.ino, &draw, &format!("rename over {}", shown(to)))?;
            dir::retarget(tx, &ddir, dlb, de.off, se.ino, ft)?;
            unlink_inode(tx, de.ino, false)?;
        }
        None => {
            let mut ddir = ddir;
            dir::insert(tx, &mut ddir, dname, se.ino, ft, &dplace)?;
            tx.put_inode(dpino, &ddir.raw)?;
        }
    }
    // Drop the source entry (re-read: the same directory may have changed).
    let sdir = dir::open(tx, spino, &splace)?;
    let (slb, se2) =
        dir::lookup(tx, &sdir, sname, &shown(from))?.ok_or_else(|| not_found(tx, from))?;
    dir::remove_at(tx, &sdir, slb, se2.off, &splace)?;
    if s_is_dir && spino != dpino {
        let moved = dir::open(tx, se.ino, &shown(from))?;
        let (plb, pe) = dir::lookup(tx, &moved, b"..", &shown(from))?
            .ok_or_else(|| tx.corrupt(shown(from), "directory without '..'"))?;
        dir::retarget(tx, &moved, plb, pe.off, dpino, FT_DIR)?;
        let mut sp = tx.get_inode(spino)?;
        nlink_dec_dir(&mut sp);
        tx.put_inode(spino, &sp)?;
        let mut dp = tx.get_inode(dpino)?;
        nlink_inc(tx, &mut dp, &dplace)?;
        tx.put_inode(dpino, &dp)?;
        sraw = tx.get_inode(se.ino)?;
    }
    inode::touch_c(&mut sraw, tx.now);
    tx.put_inode(se.ino, &sraw)?;
    for p in [spino, dpino] {
        let mut r = tx.get_inode(p)?;
        inode::touch_mc(&mut r, tx.now);
        tx.put_inode(p, &r)?;
    }
    Ok(())
}

/// The feature and state gate alone: begin a transaction and drop it.
pub(crate) fn check(dev: &dyn vmie_disk::Device, loc: &str) -> Result<(), FsError> {
    let mut sb = vec![0u8; 1024];
    dev.read_at(1024, &mut sb)?;
    let g: Geo = Geo::parse(&sb, dev.len(), loc)?;
    Tx::begin(&g, dev, loc).map(drop)
}

/// Run one operation as a transaction over `dev`.
pub(crate) fn run<T>(
    dev: &dyn vmie_disk::Device,
    loc: &str,
    op: impl FnOnce(&mut Tx<'_>) -> Result<T, FsError>,
) -> Result<T, FsError> {
    let mut sb = vec![0u8; 1024];
    dev.read_at(1024, &mut sb)?;
    let g: Geo = Geo::parse(&sb, dev.len(), loc)?;
    let mut tx = Tx::begin(&g, dev, loc)?;
    let out = op(&mut tx)?;
    tx.commit()?;
    Ok(out)
}
