//! Commit through an undo journal, and undo; both survive being killed at
//! any point.
//!
//! A commit of the changes pending in the overlays of a VM's disks goes:
//!
//! 1. **Prepare.** For every image with changes, write `IMAGE.vmie-undo.N`
//!    (N = one more than the newest journal beside it): the image's identity
//!    (length), and for every changed range its offset, its original bytes and
//!    the SHA-256 of its new bytes; a SHA-256 over the whole file closes it. It
//!    is written to a temporary name (`IMAGE.vmie-undo.tmp`), fsynced,
//!    renamed, and the directory fsynced. The state field says `PREPARED`.
//! 2. **Apply** the new bytes in place and fsync the image.
//! 3. **Complete**: set the state field to `COMPLETE` and fsync the journal.
//!
//! If step 2 fails, the commit writes the originals back at once; if that too
//! fails (power loss, a dead disk, a killed process), the `PREPARED` journal
//! stays, every later open of the image is refused, and `vmie-fixup undo`
//! restores the originals.
//!
//! Undo takes the newest journal and checks it (checksum, image length). Each
//! range then holds the original bytes (already restored), or, for a
//! `COMPLETE` journal, exactly what the run wrote (to restore); anything else
//! is refused ("changed since"). Before its first write undo sets the state
//! field to `UNDOING` and fsyncs the journal; from then on the journal's
//! ranges are restored unconditionally by every rerun of undo, and every
//! open of the image is refused as for a `PREPARED` journal. Undo writes the
//! originals, fsyncs the image and only then removes the journal (and fsyncs
//! the directory). So an undo killed anywhere is finished by running it again.
//!
//! Every writer (a [`crate::DiskSet`] opened for writing, and [`undo`]) holds
//! an exclusive advisory lock (`flock`) on the image for as long as it runs. A
//! second writer is refused ("in use by another vmie-fixup run"), and a
//! temporary journal found by the lock holder belongs to a dead run that
//! never renamed it, so never touched the image: it is removed.
//!
//! Test-only hooks, honoured only by builds with debug assertions (the ones
//! `cargo test` makes; a release build ignores them): with
//! `VMIE_TEST_KILL_AT_WRITE=k` the process aborts (like SIGKILL, as far as
//! the files are concerned) right before its k-th write-side system call of
//! a commit or an undo (counting from 1: creating, writing, fsyncing and
//! renaming the journal, each image range write, each fsync, each state
//! mark, each removal); with `VMIE_TEST_STOP_AT_WRITE=k` it prints
//! `vmie-fixup: test hook: stopped before write k (...)` on stderr and waits
//! to be killed. Both print what write k would have been.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rustix::fs::FlockOperation;
use sha2::{Digest, Sha256};

use crate::{Device, DiskError, FileDevice, Overlay};

const MAGIC: &[u8; 8] = b"VMIEUNDO";
const VERSION: u32 = 1;
const STATE_OFFSET: u64 = 12;
const STATE_PREPARED: u32 = 1;
const STATE_COMPLETE: u32 = 2;
/// Written by undo before its first write; older versions of vmie-fixup read
/// it as an unknown state and refuse the journal, which is safe.
const STATE_UNDOING: u32 = 3;
/// magic, version, state, image length, record count.
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8;
/// The suffix of journal files: `IMAGE.vmie-undo.N`.
pub const SUFFIX: &str = "vmie-undo";
/// Test hook: abort before the k-th write (debug builds only).
pub const KILL_AT_WRITE_ENV: &str = "VMIE_TEST_KILL_AT_WRITE";
/// Test hook: stop before the k-th write and wait to be killed (debug builds only).
pub const STOP_AT_WRITE_ENV: &str = "VMIE_TEST_STOP_AT_WRITE";

/// A test hook that makes the k-th write of a commit or undo fail (counting
/// every write-side system call from 1: journal creation, write, fsync and
/// rename, directory fsyncs, image writes and fsyncs, state marks, removals).
/// `persistent` makes every later write fail too, as after a power loss or a
/// kill: nothing after the fault reaches a file.
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

/// The environment hooks (see the module documentation).
#[derive(Debug)]
struct EnvHook {
    kill_at: Option<u64>,
    stop_at: Option<u64>,
    count: AtomicU64,
}

fn env_hook() -> Option<&'static EnvHook> {
    static HOOK: OnceLock<Option<EnvHook>> = OnceLock::new();
    HOOK.get_or_init(|| {
        if !cfg!(debug_assertions) {
            return None;
        }
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (kill_at, stop_at) = (var(KILL_AT_WRITE_ENV), var(STOP_AT_WRITE_ENV));
        (kill_at.is_some() || stop_at.is_some()).then(|| EnvHook {
            kill_at,
            stop_at,
            count: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// Called right before every write-side system call of a commit or an undo.
fn step(fault: Option<&FaultPlan>, what: &str) -> Result<(), DiskError> {
    if let Some(hook) = env_hook() {
        let n = hook.count.fetch_add(1, Ordering::SeqCst) + 1;
        if hook.kill_at == Some(n) {
            eprintln!("vmie-fixup: test hook: abort before write {n} ({what})");
            std::process::abort();
        }
        if hook.stop_at == Some(n) {
            eprintln!("vmie-fixup: test hook: stopped before write {n} ({what})");
            // Wait for the test to kill us; give up after ten minutes.
            for _ in 0..600 {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            std::process::abort();
        }
    }
    match fault {
        Some(f) => f.tick(),
        None => Ok(()),
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
    /// The image, opened for writing (and locked: see [`lock_image`]).
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

fn journal_path(image: &Path, generation: u64) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(format!(".{SUFFIX}.{generation}"));
    PathBuf::from(name)
}

/// The temporary name a journal is written under before it is renamed:
/// `IMAGE.vmie-undo.tmp`.
pub fn temp_journal_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(format!(".{SUFFIX}.tmp"));
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

/// Why a journal blocks every use of its image until `vmie-fixup undo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    /// A run was interrupted while writing the image (`PREPARED`).
    Prepared,
    /// An undo was interrupted while restoring the image (`UNDOING`).
    Undoing,
    /// The journal's header cannot be read or holds no known state.
    Unreadable,
}

/// A journal that blocks every use of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The journal.
    pub journal: PathBuf,
    /// Its state.
    pub kind: PendingKind,
}

/// The first journal beside `image` that is not `COMPLETE` (an interrupted
/// run or undo, or an unreadable journal), if any.
pub fn pending_journal(image: &Path) -> Result<Option<Pending>, DiskError> {
    for (_, path) in journals(image)? {
        let mut head = [0u8; 16];
        let read = File::open(&path)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0));
        let kind = if read.is_err() || &head[..8] != MAGIC {
            PendingKind::Unreadable
        } else {
            match u32::from_le_bytes([head[12], head[13], head[14], head[15]]) {
                STATE_COMPLETE => continue,
                STATE_PREPARED => PendingKind::Prepared,
                STATE_UNDOING => PendingKind::Undoing,
                _ => PendingKind::Unreadable,
            }
        };
        return Ok(Some(Pending {
            journal: path,
            kind,
        }));
    }
    Ok(None)
}

/// The journal of an interrupted commit or undo beside `image`, if there is one.
pub fn interrupted_journal(image: &Path) -> Result<Option<PathBuf>, DiskError> {
    Ok(pending_journal(image)?.map(|p| p.journal))
}

/// Take the exclusive advisory lock (`flock`) every writer of `image` holds
/// while it runs, on `file` (an open descriptor of the image; the lock lasts
/// as long as it stays open). Refused when another run holds it.
pub fn lock_image(file: &File, image: &Path) -> Result<(), DiskError> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(in_use(image)),
        Err(e) => Err(DiskError::io(
            image.display().to_string(),
            "lock image (flock)",
            e.into(),
        )),
    }
}

/// Whether another process (or another open of the image in this one)
/// holds the writers' lock on `image` right now.
pub fn locked_by_other(image: &Path) -> bool {
    let Ok(f) = File::open(image) else {
        return false;
    };
    // A shared lock conflicts only with a writer's exclusive one; it is
    // released when `f` closes.
    matches!(
        rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK
    )
}

fn in_use(image: &Path) -> DiskError {
    DiskError::journal(
        image.display().to_string(),
        "image is in use by another vmie-fixup run (it holds the image's lock); \
         try again when that run has finished",
    )
}

/// Remove the temporary journal a killed run left beside `image`, if any.
/// Only for a holder of the image's lock ([`lock_image`]): the run that
/// wrote it is gone, and since it never renamed the journal it never wrote a
/// byte of the image. Returns the path removed.
pub fn remove_stale_temp_journal(
    image: &Path,
    fault: Option<&FaultPlan>,
) -> Result<Option<PathBuf>, DiskError> {
    let tmp = temp_journal_path(image);
    if fs::symlink_metadata(&tmp).is_err() {
        return Ok(None);
    }
    step(fault, "remove a stale temporary journal")?;
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DiskError::io(
                tmp.display().to_string(),
                "remove the temporary undo journal of a killed run (it never changed the image)",
                e,
            ))
        }
    }
    step(fault, "fsync the directory")?;
    sync_dir(&tmp);
    Ok(Some(tmp))
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

/// Remove a journal (ticked: it is a write like any other).
fn remove_journal(path: &Path, fault: Option<&FaultPlan>) -> Result<(), DiskError> {
    step(fault, "remove the undo journal")?;
    fs::remove_file(path)
        .map_err(|e| DiskError::io(path.display().to_string(), "remove undo journal", e))?;
    step(fault, "fsync the directory")?;
    sync_dir(path);
    Ok(())
}

fn write_journal(
    image: &Path,
    path: &Path,
    bytes: &[u8],
    fault: Option<&FaultPlan>,
) -> Result<(), DiskError> {
    let tmp = temp_journal_path(image);
    let io = |op: &str, e| DiskError::io(tmp.display().to_string(), op.to_string(), e);
    step(fault, "create the temporary journal")?;
    let mut f = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(DiskError::journal(
                tmp.display().to_string(),
                format!(
                    "a temporary undo journal is already there: another vmie-fixup run is \
                     writing {img}, or one was killed before it changed the image (then the \
                     next `vmie-fixup` command that opens {img} for writing, or \
                     `vmie-fixup undo {img}`, removes it)",
                    img = image.display()
                ),
            ))
        }
        Err(e) => return Err(io("create undo journal", e)),
    };
    let mut renamed = false;
    let mut res = step(fault, "write the temporary journal")
        .and_then(|_| f.write_all(bytes).map_err(|e| io("write undo journal", e)))
        .and_then(|_| step(fault, "fsync the temporary journal"))
        .and_then(|_| f.sync_all().map_err(|e| io("fsync undo journal", e)))
        .and_then(|_| step(fault, "rename the journal into place"))
        .and_then(|_| fs::rename(&tmp, path).map_err(|e| io("rename undo journal", e)));
    if res.is_ok() {
        renamed = true;
        res = step(fault, "fsync the directory");
        if res.is_ok() {
            sync_dir(path);
        }
    }
    if let Err(e) = res {
        // The image is untouched: take back what was written, if we can.
        if step(fault, "remove the journal").is_ok() {
            let _ = fs::remove_file(if renamed { path } else { &tmp });
        }
        return Err(e);
    }
    Ok(())
}

fn set_state(path: &Path, state: u32, fault: Option<&FaultPlan>) -> Result<(), DiskError> {
    let what = match state {
        STATE_COMPLETE => "mark the journal COMPLETE",
        STATE_UNDOING => "mark the journal UNDOING",
        _ => "mark the journal",
    };
    step(fault, what)?;
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| DiskError::io(path.display().to_string(), "open undo journal", e))?;
    std::os::unix::fs::FileExt::write_all_at(&f, &state.to_le_bytes(), STATE_OFFSET)
        .map_err(|e| DiskError::io(path.display().to_string(), what, e))?;
    step(fault, "fsync the journal")?;
    f.sync_all()
        .map_err(|e| DiskError::io(path.display().to_string(), "fsync undo journal", e))
}

fn write_ranges<'r>(
    dev: &dyn Device,
    ranges: impl Iterator<Item = (u64, &'r [u8])>,
    fault: Option<&FaultPlan>,
) -> Result<(), DiskError> {
    for (offset, bytes) in ranges {
        step(fault, "write an image range")?;
        dev.write_at(offset, bytes)?;
    }
    step(fault, "fsync the image")?;
    dev.sync()
}

/// Commit the overlays of `targets` to their images, all or nothing. The
/// caller holds each image's lock ([`lock_image`]; a [`crate::DiskSet`]
/// opened for writing does).
pub fn commit(targets: &[Target<'_>], opts: &CommitOptions<'_>) -> Result<CommitReport, DiskError> {
    let fault = opts.fault;
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
        if let Err(e) = write_journal(plan.target.path, &plan.journal, &bytes, fault) {
            for done in &plans[..i] {
                let _ = remove_journal(&done.journal, fault);
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
            fault,
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
                fault,
            );
            rollback_ok &= res.is_ok();
        }
        if rollback_ok {
            for plan in &plans {
                let _ = remove_journal(&plan.journal, fault);
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
        set_state(&plan.journal, STATE_COMPLETE, fault)?;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Prepared,
    Complete,
    Undoing,
}

/// A parsed journal.
#[derive(Debug)]
struct Journal {
    state: State,
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
    let state = match u32_at(12) {
        STATE_PREPARED => State::Prepared,
        STATE_COMPLETE => State::Complete,
        STATE_UNDOING => State::Undoing,
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
        state,
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
    /// Whether the journal was of an interrupted run (or of an interrupted
    /// undo, see `resumed`) rather than of a completed one.
    pub interrupted: bool,
    /// Whether this finished an undo that was interrupted earlier.
    pub resumed: bool,
    /// Ranges in the journal (all of them now hold their original bytes).
    pub ranges: usize,
    /// Of those, how many this undo wrote (the others held their original
    /// bytes already).
    pub written: usize,
    /// A temporary journal of a killed run that was removed on the way.
    pub removed_temp: Option<PathBuf>,
}

fn nothing_to_undo(image: &Path, also: &str) -> DiskError {
    DiskError::journal(
        image.display().to_string(),
        format!("nothing to undo: no vmie-fixup undo journal beside this image{also}"),
    )
}

/// Undo the newest commit to `image`: restore its original bytes exactly and
/// remove its journal, holding the image's lock. Refused when another run
/// holds the lock, when there is nothing to undo, when the journal is damaged
/// or belongs to an image of another size, and (for a completed run) when a
/// range holds neither its original bytes nor what the run wrote ("changed
/// since"). Crash-safe: the journal is marked `UNDOING` before the first
/// write and removed only after the image is fsynced, and rerunning undo
/// after a kill anywhere finishes the job.
pub fn undo(image: &Path, opts: &CommitOptions<'_>) -> Result<UndoReport, DiskError> {
    let fault = opts.fault;
    if journals(image)?.is_empty() && fs::symlink_metadata(temp_journal_path(image)).is_err() {
        return Err(nothing_to_undo(image, ""));
    }
    let dev = FileDevice::open_rw(image)?;
    lock_image(dev.file(), image)?;
    let removed_temp = remove_stale_temp_journal(image, fault)?;
    let Some((_, jpath)) = journals(image)?.pop() else {
        let also = match &removed_temp {
            Some(t) => format!(
                " (removed {}, the temporary journal of a run killed before it changed the image)",
                t.display()
            ),
            None => String::new(),
        };
        return Err(nothing_to_undo(image, &also));
    };
    let bytes = fs::read(&jpath)
        .map_err(|e| DiskError::io(jpath.display().to_string(), "read undo journal", e))?;
    let journal = parse(&jpath, &bytes)?;
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
    // Which ranges still need their original bytes. A range that holds them
    // is done (restored by an earlier, killed undo, or never written by a
    // killed run). Of a completed run, every other range must hold exactly
    // what the run wrote; once undo has begun (UNDOING) or when the run never
    // completed (PREPARED), a range may be torn and is restored regardless.
    let mut todo = Vec::new();
    for (offset, old, new_hash) in &journal.records {
        let mut now = vec![0u8; old.len()];
        dev.read_at(*offset, &mut now)?;
        if now == *old {
            continue;
        }
        if journal.state == State::Complete && sha(&now) != *new_hash {
            return Err(DiskError::journal(
                image.display().to_string(),
                format!(
                    "image changed since vmie-fixup wrote it ({} bytes at offset {offset} differ); refusing to undo with {}",
                    old.len(),
                    jpath.display()
                ),
            ));
        }
        todo.push((*offset, old.as_slice()));
    }
    if journal.state != State::Undoing {
        set_state(&jpath, STATE_UNDOING, fault)?;
    }
    let written = todo.len();
    write_ranges(&dev, todo.into_iter(), fault)?;
    remove_journal(&jpath, fault)?;
    Ok(UndoReport {
        image: image.to_path_buf(),
        journal: jpath,
        interrupted: journal.state != State::Complete,
        resumed: journal.state == State::Undoing,
        ranges: journal.records.len(),
        written,
        removed_temp,
    })
}
