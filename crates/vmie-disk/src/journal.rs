//! Commit through an undo journal, and undo.
//!
//! A commit of the changes pending in the overlays of a VM's disks goes:
//!
//! 1. **Prepare.** For every image with changes, write `IMAGE.vmie-undo.N`
//!    (N = one more than the newest journal beside it): the image's identity
//!    (length), and for every changed range its offset, its original bytes and
//!    the SHA-256 of its new bytes; a SHA-256 over the whole file closes it. It
//!    is written to a temporary name, fsynced, renamed, and the directory
//!    fsynced. The state field says `PREPARED`.
//! 2. **Apply** the new bytes in place and fsync the image.
//! 3. **Complete**: set the state field to `COMPLETE` and fsync the journal.
//!
//! If step 2 fails, the commit writes the originals back at once; if that too
//! fails (power loss, a dead disk), the `PREPARED` journal stays, every later
//! open of the image is refused, and `vmie-fixup undo` restores the originals.
//!
//! Undo takes the newest journal, checks it (checksum, image length; for a
//! `COMPLETE` journal also that every range still holds exactly what the run
//! wrote, else "changed since"), writes the originals back, fsyncs, and
//! removes the journal.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::{Device, DiskError, FileDevice, Overlay};

const MAGIC: &[u8; 8] = b"VMIEUNDO";
const VERSION: u32 = 1;
const STATE_OFFSET: u64 = 12;
const STATE_PREPARED: u32 = 1;
const STATE_COMPLETE: u32 = 2;
/// magic, version, state, image length, record count.
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8;
/// The suffix of journal files: `IMAGE.vmie-undo.N`.
pub const SUFFIX: &str = "vmie-undo";

/// A test hook that makes the k-th write of a commit or undo fail (counting
/// journal writes, image writes, state marks and rollback writes from 1).
/// `persistent` makes every later write fail too, as after a power loss.
#[derive(Debug)]
pub struct FaultPlan {
    fail_at: u64,
    persistent: bool,
    count: AtomicU64,
}

impl FaultPlan {
    /// Fail write number `fail_at` (1-based); with `persistent`, all after it too.
    pub fn new(fail_at: u64, persistent: bool) -> Self {
        Self {
            fail_at,
            persistent,
            count: AtomicU64::new(0),
        }
    }

    /// How many writes were attempted.
    pub fn writes(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn tick(&self) -> Result<(), DiskError> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at || (self.persistent && n > self.fail_at) {
            return Err(DiskError::Injected(n));
        }
        Ok(())
    }
}

/// Options of a commit.
#[derive(Debug, Default)]
pub struct CommitOptions<'a> {
    /// Test hook: inject a failure (see [`FaultPlan`]).
    pub fault: Option<&'a FaultPlan>,
}

/// What a commit wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitReport {
    /// Per image that changed: the image, its journal, ranges and bytes written.
    pub images: Vec<ImageCommit>,
}

/// One image's part of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCommit {
    /// The image.
    pub image: PathBuf,
    /// Its undo journal.
    pub journal: PathBuf,
    /// How many ranges changed.
    pub ranges: usize,
    /// How many bytes changed.
    pub bytes: u64,
}

/// One image to commit.
#[derive(Debug)]
pub struct Target<'a> {
    /// Path of the image (the journal goes beside it).
    pub path: &'a Path,
    /// The image, opened for writing.
    pub file: &'a dyn Device,
    /// The pending writes.
    pub overlay: &'a Overlay,
}

struct Record {
    offset: u64,
    old: Vec<u8>,
    new: Vec<u8>,
}

struct Plan<'a> {
    target: &'a Target<'a>,
    records: Vec<Record>,
    journal: PathBuf,
}

fn tick(opts: &CommitOptions<'_>) -> Result<(), DiskError> {
    match opts.fault {
        Some(f) => f.tick(),
        None => Ok(()),
    }
}

fn journal_path(image: &Path, generation: u64) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(format!(".{SUFFIX}.{generation}"));
    PathBuf::from(name)
}

/// Journals beside `image`, oldest first, with their generation numbers.
pub fn journals(image: &Path) -> Result<Vec<(u64, PathBuf)>, DiskError> {
    let dir = match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = image.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}.{SUFFIX}.");
    let mut out = Vec::new();
    let entries = fs::read_dir(&dir)
        .map_err(|e| DiskError::io(dir.display().to_string(), "list directory", e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| DiskError::io(dir.display().to_string(), "list directory", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(gen) = name
            .strip_prefix(&prefix)
            .and_then(|g| g.parse::<u64>().ok())
        {
            out.push((gen, journal_path(image, gen)));
        }
    }
    out.sort();
    Ok(out)
}

/// The journal of an interrupted commit beside `image`, if there is one.
pub fn interrupted_journal(image: &Path) -> Result<Option<PathBuf>, DiskError> {
    for (_, path) in journals(image)? {
        let mut head = [0u8; 16];
        let ok = File::open(&path)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0))
            .is_ok();
        if !ok
            || &head[..8] != MAGIC
            || u32::from_le_bytes([head[12], head[13], head[14], head[15]]) != STATE_COMPLETE
        {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn encode(image_len: u64, records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&STATE_PREPARED.to_le_bytes());
    buf.extend_from_slice(&image_len.to_le_bytes());
    buf.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        buf.extend_from_slice(&r.offset.to_le_bytes());
        buf.extend_from_slice(&(r.old.len() as u64).to_le_bytes());
        buf.extend_from_slice(&sha(&r.new));
        buf.extend_from_slice(&r.old);
    }
    let digest = checksum(&buf);
    buf.extend_from_slice(&digest);
    buf
}

/// SHA-256 of the journal with the state field taken as zero (it is the one
/// field rewritten in place).
fn checksum(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&body[..STATE_OFFSET as usize]);
    h.update([0u8; 4]);
    h.update(&body[STATE_OFFSET as usize + 4..]);
    h.finalize().into()
}

fn sync_dir(path: &Path) {
    // Best effort: some filesystems refuse fsync on directories.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn write_journal(path: &Path, bytes: &[u8], opts: &CommitOptions<'_>) -> Result<(), DiskError> {
    let tmp = path.with_extension("tmp");
    let io = |op: &str, e| DiskError::io(tmp.display().to_string(), op.to_string(), e);
    tick(opts)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io("create undo journal", e))?;
    let res = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("write undo journal", e))
        .and_then(|_| fs::rename(&tmp, path).map_err(|e| io("rename undo journal", e)));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    sync_dir(path);
    Ok(())
}

fn mark_complete(path: &Path, opts: &CommitOptions<'_>) -> Result<(), DiskError> {
    tick(opts)?;
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| DiskError::io(path.display().to_string(), "open undo journal", e))?;
    std::os::unix::fs::FileExt::write_all_at(&f, &STATE_COMPLETE.to_le_bytes(), STATE_OFFSET)
        .and_then(|_| f.sync_all())
        .map_err(|e| DiskError::io(path.display().to_string(), "mark undo journal complete", e))
}

fn write_ranges<'r>(
    dev: &dyn Device,
    ranges: impl Iterator<Item = (u64, &'r [u8])>,
    opts: &CommitOptions<'_>,
) -> Result<(), DiskError> {
    for (offset, bytes) in ranges {
        tick(opts)?;
        dev.write_at(offset, bytes)?;
    }
    dev.sync()
}

/// Commit the overlays of `targets` to their images, all or nothing.
pub fn commit(targets: &[Target<'_>], opts: &CommitOptions<'_>) -> Result<CommitReport, DiskError> {
    // Plan: what changes, and what was there before.
    let mut plans = Vec::new();
    for target in targets {
        let changes = target.overlay.changes()?;
        if changes.is_empty() {
            continue;
        }
        let mut records = Vec::with_capacity(changes.len());
        for (offset, new) in changes {
            let mut old = vec![0u8; new.len()];
            target.file.read_at(offset, &mut old)?;
            records.push(Record { offset, old, new });
        }
        let next = journals(target.path)?
            .last()
            .map(|(g, _)| g + 1)
            .unwrap_or(1);
        plans.push(Plan {
            target,
            records,
            journal: journal_path(target.path, next),
        });
    }

    // 1. Prepare every journal before touching any image.
    for (i, plan) in plans.iter().enumerate() {
        let bytes = encode(plan.target.file.len(), &plan.records);
        if let Err(e) = write_journal(&plan.journal, &bytes, opts) {
            for done in &plans[..i] {
                let _ = fs::remove_file(&done.journal);
            }
            return Err(e);
        }
    }

    // 2. Apply; on failure put the originals back.
    let mut applied_err = None;
    for plan in &plans {
        let res = write_ranges(
            plan.target.file,
            plan.records.iter().map(|r| (r.offset, r.new.as_slice())),
            opts,
        );
        if let Err(e) = res {
            applied_err = Some(e);
            break;
        }
    }
    if let Some(err) = applied_err {
        let mut rollback_ok = true;
        for plan in &plans {
            let res = write_ranges(
                plan.target.file,
                plan.records.iter().map(|r| (r.offset, r.old.as_slice())),
                opts,
            );
            rollback_ok &= res.is_ok();
        }
        if rollback_ok {
            for plan in &plans {
                let _ = fs::remove_file(&plan.journal);
            }
            return Err(err);
        }
        let images: Vec<String> = plans
            .iter()
            .map(|p| p.target.path.display().to_string())
            .collect();
        return Err(DiskError::journal(
            images.join(", "),
            format!("writing failed ({err}) and so did putting the originals back; run `vmie-fixup undo` on these images"),
        ));
    }

    // 3. Mark complete.
    for plan in &plans {
        mark_complete(&plan.journal, opts)?;
    }
    for target in targets {
        target.overlay.discard()?;
    }
    Ok(CommitReport {
        images: plans
            .iter()
            .map(|p| ImageCommit {
                image: p.target.path.to_path_buf(),
                journal: p.journal.clone(),
                ranges: p.records.len(),
                bytes: p.records.iter().map(|r| r.new.len() as u64).sum(),
            })
            .collect(),
    })
}

/// A parsed journal.
#[derive(Debug)]
struct Journal {
    complete: bool,
    image_len: u64,
    /// (offset, original bytes, sha256 of the bytes the run wrote)
    records: Vec<(u64, Vec<u8>, [u8; 32])>,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Journal, DiskError> {
    let bad = |why: &str| {
        DiskError::journal(
            path.display().to_string(),
            format!("undo journal is damaged: {why}"),
        )
    };
    if bytes.len() < HEADER_LEN + 32 || &bytes[..8] != MAGIC {
        return Err(bad("not a vmie-fixup undo journal"));
    }
    let body_len = bytes.len() - 32;
    if checksum(&bytes[..body_len])[..] != bytes[body_len..] {
        return Err(bad("checksum mismatch"));
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    if u32_at(8) != VERSION {
        return Err(bad("unknown version"));
    }
    let complete = match u32_at(12) {
        STATE_PREPARED => false,
        STATE_COMPLETE => true,
        _ => return Err(bad("unknown state")),
    };
    let image_len = u64_at(16);
    let count = u64_at(24);
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    for _ in 0..count {
        if at + 48 > body_len {
            return Err(bad("truncated record"));
        }
        let offset = u64_at(at);
        let len = usize::try_from(u64_at(at + 8)).map_err(|_| bad("record length"))?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[at + 16..at + 48]);
        at += 48;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= body_len)
            .ok_or_else(|| bad("truncated record"))?;
        records.push((offset, bytes[at..end].to_vec(), hash));
        at = end;
    }
    if at != body_len {
        return Err(bad("trailing bytes"));
    }
    Ok(Journal {
        complete,
        image_len,
        records,
    })
}

/// What an undo restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoReport {
    /// The image.
    pub image: PathBuf,
    /// The journal that was applied and removed.
    pub journal: PathBuf,
    /// Whether the journal was of an interrupted run.
    pub interrupted: bool,
    /// Ranges restored.
    pub ranges: usize,
}

/// Undo the newest commit to `image`: restore its original bytes exactly and
/// remove its journal. Refused when there is nothing to undo, when the journal
/// is damaged or belongs to an image of another size, and (for a completed
/// run) when the image has changed since the run wrote it.
pub fn undo(image: &Path, opts: &CommitOptions<'_>) -> Result<UndoReport, DiskError> {
    let Some((_, jpath)) = journals(image)?.pop() else {
        return Err(DiskError::journal(
            image.display().to_string(),
            "nothing to undo: no vmie-fixup undo journal beside this image",
        ));
    };
    let bytes = fs::read(&jpath)
        .map_err(|e| DiskError::io(jpath.display().to_string(), "read undo journal", e))?;
    let journal = parse(&jpath, &bytes)?;
    let dev = FileDevice::open_rw(image)?;
    if dev.len() != journal.image_len {
        return Err(DiskError::journal(
            image.display().to_string(),
            format!(
                "image is {} bytes but journal {} was made for one of {} bytes: not the same image",
                dev.len(),
                jpath.display(),
                journal.image_len
            ),
        ));
    }
    if journal.complete {
        for (offset, old, new_hash) in &journal.records {
            let mut now = vec![0u8; old.len()];
            dev.read_at(*offset, &mut now)?;
            if sha(&now) != *new_hash {
                return Err(DiskError::journal(
                    image.display().to_string(),
                    format!(
                        "image changed since vmie-fixup wrote it ({} bytes at offset {offset} differ); refusing to undo with {}",
                        old.len(),
                        jpath.display()
                    ),
                ));
            }
        }
    }
    write_ranges(
        &dev,
        journal
            .records
            .iter()
            .map(|(o, old, _)| (*o, old.as_slice())),
        opts,
    )?;
    fs::remove_file(&jpath)
        .map_err(|e| DiskError::io(jpath.display().to_string(), "remove undo journal", e))?;
    sync_dir(&jpath);
    Ok(UndoReport {
        image: image.to_path_buf(),
        journal: jpath,
        interrupted: !journal.complete,
        ranges: journal.records.len(),
    })
}
