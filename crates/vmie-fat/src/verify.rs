//! The independent read-back of every write: before a transaction's staged
//! bytes reach the device, the volume as it would be after the commit (the
//! staged bytes laid over the device) is mounted with the `fatfs` crate, a
//! FAT reader that shares no code with ours, and every path the operation
//! touched is looked up through it: a written file's contents, a new
//! directory, a name that must be gone. A disagreement is a refusal
//! ([`FsError::Corrupt`] naming the volume and the path) and nothing is
//! written.
//!
//! - fatfs only reads: it is handed a [`View`] whose `write` fails, mounted
//!   with `update_accessed_date` off (its default), and only files, directory
//!   listings and the boot sector/FSInfo it reads on mount are asked of it.
//!   Its `Drop` writes FSInfo or the boot sector's dirty bit only when it
//!   changed them itself, which reading never does (and the view would
//!   refuse the write anyway).
//! - Every call into fatfs runs inside `vmie_disk::guard::catch`: a panic is
//!   a refusal naming the volume and path.
//! - Cost is capped by what the operation touched: the view charges every
//!   read (its bytes plus a fixed overhead per call) against a budget
//!   computed from the sizes of the files written and of the directories the
//!   transaction loaded, so fatfs cannot read the whole volume or loop on a
//!   cycle; directory listings stop after the entry limit.
//! - Geometries fatfs 0.3.6 refuses to mount but FAT allows and our reader
//!   accepts are its blind spots ([`blind_spot`]): there the read-back is
//!   skipped, and [`crate::FatFs::independent_check_gap`] says why.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use vmie_disk::Device;
use vmie_guestfs::{FsError, GuestPath};

use crate::bpb::{FatKind, Geo};
use crate::name;

/// What one touched path must look like after the commit.
#[derive(Debug)]
pub(crate) enum Want<'a> {
    /// A regular file holding exactly these bytes.
    Bytes(&'a [u8]),
    /// A regular file of `size` bytes starting with `head` (a renamed file:
    /// its clusters were not touched, so only its first cluster is read).
    Head { size: u64, head: Vec<u8> },
    /// A directory that can be listed.
    Dir,
    /// No entry of this name (ignoring case) in its parent.
    Gone,
}

/// One touched path and what it must be.
#[derive(Debug)]
pub(crate) struct Expect<'a> {
    pub path: &'a GuestPath,
    /// The name the entry must be listed under when it is not the path's
    /// last component (an existing file found ignoring case keeps its own
    /// name).
    pub listed: Option<String>,
    pub want: Want<'a>,
}

impl<'a> Expect<'a> {
    /// `path` must be `want`, listed under its last component.
    pub fn new(path: &'a GuestPath, want: Want<'a>) -> Self {
        Self {
            path,
            listed: None,
            want,
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The last read-back's (bytes charged, budget, time), for measuring.
    pub(crate) static LAST_COST: Cell<(u64, u64, std::time::Duration)> =
        const { Cell::new((0, 0, std::time::Duration::ZERO)) };
}

/// Bytes charged per read call on top of its length.
const CALL_COST: u64 = 16;

/// The staged writes, by offset, known not to overlap.
pub(crate) type Staged<'a> = BTreeMap<u64, &'a [u8]>;

/// Index `writes` by offset; overlapping writes are a writer bug (the
/// device's final state would depend on their order) and refused.
pub(crate) fn index<'a>(writes: &'a [(u64, Vec<u8>)], loc: &str) -> Result<Staged<'a>, FsError> {
    let mut m: Staged<'a> = BTreeMap::new();
    for (off, b) in writes {
        if b.is_empty() {
            continue;
        }
        let end = off.checked_add(b.len() as u64);
        let clash_before = m
            .range(..=*off)
            .next_back()
            .is_some_and(|(o, p)| o + p.len() as u64 > *off);
        let clash_after = end.is_none_or(|e| m.range(*off..e).next().is_some());
        if clash_before || clash_after {
            return Err(FsError::Corrupt {
                fs: loc.to_string(),
                place: format!("staged write at byte {off}"),
                detail: "internal: two staged writes overlap; nothing was written".into(),
            });
        }
        m.insert(*off, b.as_slice());
    }
    Ok(m)
}

/// The device as it would be after the commit, read-only, with a read
/// budget.
struct View<'a> {
    dev: &'a dyn Device,
    staged: &'a Staged<'a>,
    len: u64,
    pos: u64,
    budget: u64,
    /// Bytes charged so far (outlives the fatfs mount that owns the view).
    spent: &'a Cell<u64>,
}

impl View<'_> {
    /// Fill `buf` from `at`: staged bytes where there are some, the device
    /// elsewhere.
    fn fill(&self, at: u64, buf: &mut [u8]) -> Result<(), vmie_disk::DiskError> {
        let end = at + buf.len() as u64;
        let mut cur = at;
        let first = self
            .staged
            .range(..=at)
            .next_back()
            .filter(|(o, b)| **o + b.len() as u64 > at);
        let rest = self.staged.range(at.saturating_add(1)..end);
        for (&off, b) in first.into_iter().chain(rest) {
            if off > cur {
                self.dev
                    .read_at(cur, &mut buf[(cur - at) as usize..(off - at) as usize])?;
                cur = off;
            }
            let stop = (off + b.len() as u64).min(end);
            if stop > cur {
                buf[(cur - at) as usize..(stop - at) as usize]
                    .copy_from_slice(&b[(cur - off) as usize..(stop - off) as usize]);
                cur = stop;
            }
        }
        if cur < end {
            self.dev.read_at(cur, &mut buf[(cur - at) as usize..])?;
        }
        Ok(())
    }
}

impl Read for View<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos);
        let cost = n + CALL_COST;
        let spent = self.spent.get();
        if spent + cost > self.budget {
            return Err(io::Error::other(format!(
                "read budget of {} bytes spent (the paths touched cannot need more)",
                self.budget
            )));
        }
        self.spent.set(spent + cost);
        self.fill(self.pos, &mut buf[..n as usize])
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.pos += n;
        Ok(n as usize)
    }
}

impl Write for View<'_> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the independent read-back is read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for View<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the volume",
            )),
        }
    }
}

/// Why fatfs 0.3.6 cannot mount this volume although FAT allows it and our
/// reader accepts it, if it cannot. Its `BiosParameterBlock::validate` and
/// `FsInfoSector::deserialize` refuse: both 16- and 32-bit total sector
/// counts set; on FAT32, a backup boot sector or FSInfo sector number
/// outside the reserved sectors (0xFFFF means "none"), and an FSInfo sector
/// without its three signatures (which FAT allows: the counts are hints).
/// FAT12 and FAT16 (fixed root), all cluster sizes we accept (at most 128
/// sectors, as fatfs), 1 to 4 FATs and sector sizes 512 to 4096 mount.
pub(crate) fn blind_spot(g: &Geo, bs: &[u8], fsinfo_valid: bool) -> Option<String> {
    let le16 = |o: usize| {
        bs.get(o..o + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let le32 = |o: usize| {
        bs.get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if le16(19) != 0 && le32(32) != 0 {
        return Some(
            "the boot sector sets both the 16- and the 32-bit total sector counts, which the fatfs crate refuses to mount".into(),
        );
    }
    if g.kind == FatKind::Fat32 {
        let backup = u64::from(le16(50));
        if backup >= g.reserved {
            return Some(format!(
                "the FAT32 backup boot sector number {backup} is not inside the {} reserved sectors, which the fatfs crate refuses to mount",
                g.reserved
            ));
        }
        if !fsinfo_valid {
            return Some(
                "the FAT32 FSInfo sector is missing or lacks its signatures, which the fatfs crate refuses to mount".into(),
            );
        }
    }
    None
}

/// The read budget for `expects` when the transaction loaded `dir_bytes`
/// bytes of directories: each check may list every loaded directory
/// (charged 8 to 10 times its size, measured: fatfs reads an entry field
/// by field, 12 to 17 calls of [`CALL_COST`] each) and read its file once,
/// plus a fixed allowance for the boot sector, FSInfo and FAT entries.
pub(crate) fn budget(expects: &[Expect<'_>], dir_bytes: u64, cs: u32) -> u64 {
    let per_dir = dir_bytes.saturating_mul(32);
    expects.iter().fold(1 << 20, |acc: u64, e| {
        let file = match &e.want {
            Want::Bytes(d) => d.len() as u64,
            Want::Head { head, .. } => head.len() as u64,
            Want::Dir | Want::Gone => 0,
        };
        // Per cluster of the file: its FAT entry and the call overhead.
        let clusters = file.div_ceil(u64::from(cs.max(1)));
        acc.saturating_add(per_dir)
            .saturating_add(file)
            .saturating_add(clusters.saturating_mul(4 * CALL_COST))
            .saturating_add(64 * 1024)
    })
}

type Fs<'a> = fatfs::FileSystem<View<'a>>;
type FDir<'a, 'b> = fatfs::Dir<'b, View<'a>>;
type FEntry<'a, 'b> = fatfs::DirEntry<'b, View<'a>>;

/// Everything the read-back needs.
pub(crate) struct Check<'a> {
    pub dev: &'a dyn Device,
    pub loc: &'a str,
    pub staged: &'a Staged<'a>,
    pub budget: u64,
    pub max_entries: usize,
}

impl Check<'_> {
    fn bad(&self, place: &str, detail: impl Into<String>) -> FsError {
        FsError::Corrupt {
            fs: self.loc.to_string(),
            place: place.to_string(),
            detail: format!(
                "self-check through the fatfs crate: {}; nothing was written",
                detail.into()
            ),
        }
    }

    /// Mount the staged volume with fatfs and check every expectation.
    pub fn run(&self, expects: &[Expect<'_>]) -> Result<(), FsError> {
        // The path being checked when fatfs panics (the boot sector while
        // mounting).
        let at = RefCell::new("boot sector (offset 0)".to_string());
        let caught = vmie_disk::guard::catch(
            || {
                format!(
                    "{}: self-check of {} through the fatfs crate",
                    self.loc,
                    at.borrow()
                )
            },
            || self.run_inner(expects, &at),
        );
        match caught {
            Ok(r) => r,
            Err(p) => Err(self.bad(&at.borrow(), format!("fatfs panicked: {}", p.message))),
        }
    }

    fn run_inner(&self, expects: &[Expect<'_>], at: &RefCell<String>) -> Result<(), FsError> {
        #[cfg(test)]
        let t0 = std::time::Instant::now();
        let spent = Cell::new(0);
        let r = (|| {
            let view = View {
                dev: self.dev,
                staged: self.staged,
                len: self.dev.len(),
                pos: 0,
                budget: self.budget,
                spent: &spent,
            };
            let fs: Fs<'_> = fatfs::FileSystem::new(view, fatfs::FsOptions::new())
                .map_err(|e| self.bad("boot sector (offset 0)", format!("cannot mount: {e}")))?;
            for e in expects {
                *at.borrow_mut() = e.path.to_string();
                self.one(&fs, e)?;
            }
            Ok(())
        })();
        #[cfg(test)]
        LAST_COST.with(|c| c.set((spent.get(), self.budget, t0.elapsed())));
        r
    }

    /// The entries of `d` (without `.`/`..` unless `dots`), at most the
    /// entry limit.
    fn list<'a, 'b>(
        &self,
        d: &FDir<'a, 'b>,
        place: &str,
        dots: bool,
    ) -> Result<Vec<FEntry<'a, 'b>>, FsError> {
        let mut out = Vec::new();
        for r in d.iter() {
            let e = r.map_err(|e| self.bad(place, format!("cannot list the directory: {e}")))?;
            if !dots && matches!(e.short_file_name_as_bytes(), b"." | b"..") {
                continue;
            }
            if out.len() >= self.max_entries {
                return Err(self.bad(
                    place,
                    format!("the directory lists more than {} entries", self.max_entries),
                ));
            }
            out.push(e);
        }
        Ok(out)
    }

    fn one(&self, fs: &Fs<'_>, e: &Expect<'_>) -> Result<(), FsError> {
        let shown = e.path.to_string();
        let comps = e.path.components();
        let Some((last, ancestors)) = comps.split_last() else {
            return Err(self.bad(&shown, "internal: the root is not a touched path"));
        };
        // Walk the ancestors as a lookup would: by name, ignoring case.
        let mut dir = fs.root_dir();
        let mut cur = GuestPath::root();
        for comp in ancestors {
            let name = String::from_utf8_lossy(comp);
            let ents = self.list(&dir, &cur.to_string(), false)?;
            cur = cur.join(comp);
            let found = ents.into_iter().find(|x| {
                name::eq_ci(&x.file_name(), &name) || name::eq_ci(&x.short_file_name(), &name)
            });
            match found {
                Some(x) if x.is_dir() => dir = x.to_dir(),
                Some(_) => {
                    return Err(self.bad(&cur.to_string(), "listed as a file, not a directory"))
                }
                None => return Err(self.bad(&cur.to_string(), "directory not found")),
            }
        }
        let name = String::from_utf8_lossy(last);
        let parent = e.path.parent().to_string();
        let ents = self.list(&dir, &parent, false)?;
        if let Want::Gone = e.want {
            return match ents.iter().find(|x| {
                name::eq_ci(&x.file_name(), &name) || name::eq_ci(&x.short_file_name(), &name)
            }) {
                Some(x) => {
                    Err(self.bad(&shown, format!("{parent} still lists {:?}", x.file_name())))
                }
                None => Ok(()),
            };
        }
        let name = e.listed.clone().unwrap_or_else(|| name.into_owned());
        let Some(x) = ents.iter().find(|x| x.file_name() == name) else {
            let like = ents
                .iter()
                .find(|x| {
                    name::eq_ci(&x.file_name(), &name) || name::eq_ci(&x.short_file_name(), &name)
                })
                .map(|x| format!(" (an entry {:?} differs from it)", x.file_name()))
                .unwrap_or_default();
            return Err(self.bad(
                &shown,
                format!("the listing of {parent} lacks the long name {name:?}{like}"),
            ));
        };
        match &e.want {
            Want::Dir => {
                if !x.is_dir() {
                    return Err(self.bad(&shown, "listed as a file, not a directory"));
                }
                let sub = self.list(&x.to_dir(), &shown, true)?;
                if !sub.iter().any(|s| s.short_file_name_as_bytes() == b".") {
                    return Err(self.bad(&shown, "the directory has no `.` entry"));
                }
                Ok(())
            }
            Want::Bytes(data) => self.file(x, &shown, data.len() as u64, data),
            Want::Head { size, head } => self.file(x, &shown, *size, head),
            Want::Gone => Ok(()),
        }
    }

    /// `x` is a file of `size` bytes whose first bytes are `head`.
    fn file(&self, x: &FEntry<'_, '_>, shown: &str, size: u64, head: &[u8]) -> Result<(), FsError> {
        if x.is_dir() {
            return Err(self.bad(shown, "listed as a directory, not a file"));
        }
        if x.len() != size {
            return Err(self.bad(
                shown,
                format!("listed with {} bytes, {size} were written", x.len()),
            ));
        }
        // Compared a piece at a time: no second copy of a large file.
        let mut f = x.to_file();
        let mut buf = vec![0u8; 64 * 1024];
        let mut done = 0;
        while done < head.len() {
            let want = (head.len() - done).min(buf.len());
            let n = f
                .read(&mut buf[..want])
                .map_err(|e| self.bad(shown, format!("cannot read the file: {e}")))?;
            if n == 0 {
                return Err(self.bad(
                    shown,
                    format!(
                        "read {done} bytes, {} expected: the cluster chain ends early",
                        head.len()
                    ),
                ));
            }
            if let Some(i) = buf[..n]
                .iter()
                .zip(&head[done..done + n])
                .position(|(a, b)| a != b)
            {
                return Err(self.bad(
                    shown,
                    format!(
                        "the contents differ from what was written, first at byte {}",
                        done + i
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
