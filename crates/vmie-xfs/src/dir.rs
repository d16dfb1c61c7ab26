//! Directories: shortform (in the inode), and block, leaf, node and btree
//! forms, which all keep their entries in data blocks below the 32 GiB
//! leaf segment; listing and lookup read those data blocks only.

use vmie_guestfs::{FileType, FsError};

use crate::be::{be16, be32, be64};
use crate::inode::{Extent, Fork, Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use crate::Ctx;

pub(crate) const DATA_MAGIC_V2: u32 = 0x5844_3244; // XD2D
pub(crate) const BLOCK_MAGIC_V2: u32 = 0x5844_3242; // XD2B
pub(crate) const DATA_MAGIC_V3: u32 = 0x5844_4433; // XDD3
pub(crate) const BLOCK_MAGIC_V3: u32 = 0x5844_4233; // XDB3

/// One directory entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// The ftype byte, on filesystems that store one.
    pub ftype: Option<u8>,
}

pub(crate) fn ftype_to_type(t: u8) -> FileType {
    match t {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::CharDevice,
        4 => FileType::BlockDevice,
        5 => FileType::Fifo,
        6 => FileType::Socket,
        7 => FileType::Symlink,
        _ => FileType::Unknown,
    }
}

/// Bytes one data entry takes: inumber, namelen, name, ftype, tag, padded to 8.
pub(crate) fn data_entry_size(namelen: usize, ftype: bool) -> usize {
    (8 + 1 + namelen + usize::from(ftype) + 2).div_ceil(8) * 8
}

impl Ctx {
    /// Every entry of directory `ip` but `.` and `..`, in on-disk order,
    /// at most `max_dir_entries`.
    pub fn dir_entries(&self, ip: &Inode, place: &str) -> Result<Vec<Entry>, FsError> {
        let mut out = Vec::new();
        self.dir_walk(ip, place, &mut |e| {
            out.push(e);
            false
        })?;
        Ok(out)
    }

    /// Find `name` in directory `ip`.
    pub fn dir_lookup(
        &self,
        ip: &Inode,
        name: &[u8],
        place: &str,
    ) -> Result<Option<Entry>, FsError> {
        // A node-form directory is searched through its hash tree (its
        // data blocks may number many thousands).
        if matches!(ip.format, FMT_EXTENTS | FMT_BTREE) {
            let ext = self.extents(ip, Fork::Data, place)?;
            if !self.dir_is_block(ip, &ext) && crate::dirnode::is_node(self, &ext) {
                return crate::dirnode::lookup_node(self, ip, &ext, name, place);
            }
        }
        let mut found = None;
        self.dir_walk(ip, place, &mut |e| {
            if e.name == name {
                found = Some(e);
                true
            } else {
                false
            }
        })?;
        Ok(found)
    }

    /// Call `f` on each entry until it returns true.
    fn dir_walk(
        &self,
        ip: &Inode,
        place: &str,
        f: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), FsError> {
        let bad = |d: String| self.corrupt(place, format!("directory inode {}: {d}", ip.ino));
        let mut count = 0usize;
        let max = self.limits.max_dir_entries;
        let mut emit = |e: Entry| -> Result<bool, FsError> {
            count += 1;
            if count > max {
                return Err(bad(format!("more than {max} directory entries")));
            }
            Ok(f(e))
        };
        match ip.format {
            FMT_LOCAL => {
                for e in self.shortform(ip, place)?.1 {
                    if emit(e)? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            FMT_EXTENTS | FMT_BTREE => {
                let ext = self.extents(ip, Fork::Data, place)?;
                let g = &self.geo;
                let leaf = g.dir_leaf_fsb();
                // The dir blocks holding data: every dir-block-aligned
                // offset below the leaf segment that an extent maps.
                let fsbs = u64::from(g.dir_fsbs);
                let block_form = self.dir_is_block(ip, &ext);
                let mut seen_blocks = 0u64;
                let cap_blocks = (max as u64)
                    .saturating_mul(2)
                    .saturating_add(16)
                    .min(g.dblocks);
                for db in data_dir_blocks(&ext, fsbs, leaf) {
                    seen_blocks += 1;
                    if seen_blocks > cap_blocks {
                        return Err(bad(format!("more than {cap_blocks} data blocks")));
                    }
                    let buf = self.read_dir_block(ip, &ext, db, place)?;
                    let daddr = self.daddr_of(&ext, db);
                    let stop =
                        self.parse_data_block(ip, &buf, db, daddr, block_form, place, &mut emit)?;
                    if stop {
                        return Ok(());
                    }
                }
                Ok(())
            }
            f => Err(bad(format!("data fork format {f}"))),
        }
    }

    /// Whether a non-shortform directory is in block form (one directory
    /// block, holding its own leaf).
    fn dir_is_block(&self, ip: &Inode, ext: &[Extent]) -> bool {
        let end = ext.last().map_or(0, |e| e.off + e.len);
        ip.size == u64::from(self.geo.dir_size) && end == u64::from(self.geo.dir_fsbs)
    }

    /// Parse a shortform directory: (parent inode, entries).
    pub fn shortform(&self, ip: &Inode, place: &str) -> Result<(u64, Vec<Entry>), FsError> {
        let bad = |d: String| self.corrupt(place, format!("shortform directory {}: {d}", ip.ino));
        let fork = ip.data_fork();
        let size = ip.size as usize;
        let d = fork
            .get(..size)
            .ok_or_else(|| bad("size beyond the fork".into()))?;
        if d.len() < 6 {
            return Err(bad(format!("{} bytes", d.len())));
        }
        let count = usize::from(d[0]);
        let i8 = d[1];
        let isz = if i8 > 0 { 8 } else { 4 };
        let rd = |o: usize| -> u64 {
            if isz == 8 {
                be64(d, o)
            } else {
                u64::from(be32(d, o))
            }
        };
        if d.len() < 2 + isz {
            return Err(bad("header truncated".into()));
        }
        let parent = rd(2);
        let mut pos = 2 + isz;
        let mut out = Vec::with_capacity(count);
        let ft = usize::from(self.geo.ftype);
        for i in 0..count {
            let namelen = usize::from(
                *d.get(pos)
                    .ok_or_else(|| bad(format!("entry {i} truncated")))?,
            );
            let need = 1 + 2 + namelen + ft + isz;
            if namelen == 0 || pos + need > d.len() {
                return Err(bad(format!(
                    "entry {i} (name length {namelen}) overruns the directory"
                )));
            }
            let name = d[pos + 3..pos + 3 + namelen].to_vec();
            let ftype = self.geo.ftype.then(|| d[pos + 3 + namelen]);
            let ino = rd(pos + 3 + namelen + ft);
            check_name(&name).map_err(|m| bad(format!("entry {i}: {m}")))?;
            out.push(Entry { name, ino, ftype });
            pos += need;
        }
        Ok((parent, out))
    }

    /// Read directory block `db` (file block offset) whole.
    pub fn read_dir_block(
        &self,
        ip: &Inode,
        ext: &[Extent],
        db: u64,
        place: &str,
    ) -> Result<Vec<u8>, FsError> {
        let g = &self.geo;
        let fsbs = u64::from(g.dir_fsbs);
        // Every block of the directory block must be mapped and written.
        let mut mapped = 0u64;
        for e in ext {
            let lo = e.off.max(db);
            let hi = (e.off + e.len).min(db + fsbs);
            if lo < hi {
                if e.unwritten {
                    return Err(self.corrupt(
                        place,
                        format!("directory inode {} block {db} is unwritten", ip.ino),
                    ));
                }
                mapped += hi - lo;
            }
        }
        if mapped != fsbs {
            return Err(self.corrupt(
                place,
                format!(
                    "directory inode {} block {db} is only partly mapped",
                    ip.ino
                ),
            ));
        }
        self.read_mapped(ext, db * u64::from(g.block_size), g.dir_size as usize)
    }

    /// The disk address recorded in a v5 header of the block at file
    /// block `db`.
    pub fn daddr_of(&self, ext: &[Extent], db: u64) -> Option<u64> {
        let e = ext.iter().find(|e| e.off <= db && db < e.off + e.len)?;
        self.geo.fsb_to_daddr(e.fsb + (db - e.off))
    }

    /// Verify a v5 header (CRC at `crc_off`, blkno, owner, UUID at the
    /// given offsets).
    #[allow(clippy::too_many_arguments)]
    pub fn check_v5_header(
        &self,
        buf: &[u8],
        crc_off: usize,
        blkno_off: usize,
        uuid_off: usize,
        owner_off: usize,
        owner: u64,
        daddr: Option<u64>,
    ) -> Result<(), String> {
        if !crate::csum::verify(buf, crc_off) {
            return Err("CRC mismatch".into());
        }
        if Some(be64(buf, blkno_off)) != daddr {
            return Err("header records another disk address".into());
        }
        if buf[uuid_off..uuid_off + 16] != self.geo.meta_uuid {
            return Err("header UUID is not this filesystem's".into());
        }
        if be64(buf, owner_off) != owner {
            return Err(format!(
                "header owner {} is not inode {owner}",
                be64(buf, owner_off)
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_data_block(
        &self,
        ip: &Inode,
        b: &[u8],
        db: u64,
        daddr: Option<u64>,
        block_form: bool,
        place: &str,
        emit: &mut dyn FnMut(Entry) -> Result<bool, FsError>,
    ) -> Result<bool, FsError> {
        let bad =
            |d: String| self.corrupt(place, format!("directory inode {} block {db}: {d}", ip.ino));
        let magic = be32(b, 0);
        let (hdr, is_block) = match (self.geo.v5, magic) {
            (true, DATA_MAGIC_V3) => (64, false),
            (true, BLOCK_MAGIC_V3) => (64, true),
            (false, DATA_MAGIC_V2) => (16, false),
            (false, BLOCK_MAGIC_V2) => (16, true),
            _ => return Err(bad(format!("bad magic {magic:#x}"))),
        };
        if is_block != block_form || (is_block && db != 0) {
            return Err(bad(
                "block-form magic in a directory that is not one block".into()
            ));
        }
        if self.geo.v5 {
            // xfs_dir3_blk_hdr: magic, crc, blkno, lsn, uuid, owner.
            self.check_v5_header(b, 4, 8, 24, 40, ip.ino, daddr)
                .map_err(bad)?;
        }
        let mut end = b.len();
        if is_block {
            // Tail: count, stale; leaf entries of 8 bytes before it.
            let count = be32(b, b.len() - 8) as usize;
            let leaf_bytes = count
                .checked_mul(8)
                .and_then(|n| n.checked_add(8))
                .filter(|&n| n <= b.len() - hdr)
                .ok_or_else(|| bad(format!("block tail counts {count} leaf entries")))?;
            end = b.len() - leaf_bytes;
        }
        let mut pos = hdr;
        let ft = self.geo.ftype;
        while pos < end {
            if end - pos < 8 {
                return Err(bad(format!("entry at {pos} truncated")));
            }
            if be16(b, pos) == 0xFFFF {
                let len = usize::from(be16(b, pos + 2));
                if len < 8 || len % 8 != 0 || pos + len > end {
                    return Err(bad(format!("free region at {pos} of {len} bytes")));
                }
                pos += len;
                continue;
            }
            let ino = be64(b, pos);
            let namelen = usize::from(b[pos + 8]);
            let size = data_entry_size(namelen, ft);
            if namelen == 0 || pos + size > end {
                return Err(bad(format!(
                    "entry at {pos} (name length {namelen}) overruns the block"
                )));
            }
            if usize::from(be16(b, pos + size - 2)) != pos {
                return Err(bad(format!("entry at {pos} has a wrong tag")));
            }
            let name = b[pos + 9..pos + 9 + namelen].to_vec();
            let ftype = ft.then(|| b[pos + 9 + namelen]);
            pos += size;
            if name == b"." || name == b".." {
                continue;
            }
            check_name(&name).map_err(|m| bad(format!("entry: {m}")))?;
            if emit(Entry { name, ino, ftype })? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Offsets of the directory blocks that hold data (below `leaf`), in
/// order, each once; lazy, so a huge hostile extent costs no memory.
fn data_dir_blocks(ext: &[Extent], fsbs: u64, leaf: u64) -> DirBlocks<'_> {
    DirBlocks {
        ext,
        i: 0,
        next: 0,
        fsbs,
        leaf,
    }
}

struct DirBlocks<'a> {
    ext: &'a [Extent],
    i: usize,
    /// Lowest offset not yet returned.
    next: u64,
    fsbs: u64,
    leaf: u64,
}

impl Iterator for DirBlocks<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        while let Some(e) = self.ext.get(self.i) {
            let end = (e.off + e.len).min(self.leaf);
            let first = e.off - e.off % self.fsbs;
            let db = first.max(self.next);
            if db < end {
                self.next = db + self.fsbs;
                return Some(db);
            }
            self.i += 1;
        }
        None
    }
}

/// A name as stored must not contain `/` or NUL.
fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.contains(&b'/') || name.contains(&0) {
        return Err("name contains '/' or NUL");
    }
    Ok(())
}
