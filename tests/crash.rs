//! Crash safety of the real `vmie-fixup` binary on the demo fixture: the fixup
//! and `undo` are killed at every write-side system call of their commit and
//! undo (the test-only hook `VMIE_TEST_KILL_AT_WRITE=k` aborts right before
//! write k, which leaves the files as SIGKILL would; `VMIE_TEST_STOP_AT_WRITE`
//! parks the process there so a real SIGKILL can be sent). After every kill,
//! and after reruns that are killed again, the image is byte-identical to the
//! original once `undo` has run to the end, or a command refuses naming the
//! next step; no command ever fails with a bare "File exists", and a new
//! fixup never runs on a half-undone image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vmie_disk::journal::{self, PendingKind};

const KILL: &str = "VMIE_TEST_KILL_AT_WRITE";
const STOP: &str = "VMIE_TEST_STOP_AT_WRITE";

fn fixture(name: &str) -> PathBuf {
    xtask::fixtures::image(name).unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"))
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"));
    c.env_remove(KILL).env_remove(STOP);
    c
}

fn run(args: &[&Path], hook: Option<(&str, u64)>) -> Output {
    let mut c = bin();
    c.args(args);
    if let Some((var, k)) = hook {
        c.env(var, k.to_string());
    }
    c.output().unwrap()
}

fn fixup(img: &Path, kill_at: Option<u64>) -> Output {
    run(&[img], kill_at.map(|k| (KILL, k)))
}

fn undo(img: &Path, kill_at: Option<u64>) -> Output {
    run(&[Path::new("undo"), img], kill_at.map(|k| (KILL, k)))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether the run was killed by the hook at write `k` (and not earlier).
fn killed_at(o: &Output, k: u64) -> bool {
    if o.status.signal() == Some(6) {
        let e = stderr(o);
        assert!(
            e.contains(&format!("test hook: abort before write {k} (")),
            "killed elsewhere: {e}"
        );
        true
    } else {
        false
    }
}

/// A sparse copy (the demo image is 4 GiB, nearly all holes).
fn copy(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp (coreutils)");
    assert!(st.success());
}

/// The byte ranges of `f` that hold data (SEEK_DATA / SEEK_HOLE).
fn data_segments(f: &File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let Ok(start) = seek(f, SeekFrom::Data(at)) else {
            break; // ENXIO: no data after `at`
        };
        let end = seek(f, SeekFrom::Hole(start)).unwrap().min(len);
        out.push((start, end));
        at = end;
    }
    out
}

/// Byte-identical, reading only where either file holds data (both read as
/// zeros elsewhere).
fn identical(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    if fb.metadata().unwrap().len() != len {
        return false;
    }
    let mut segs = data_segments(&fa, len);
    segs.extend(data_segments(&fb, len));
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    for (start, end) in segs {
        let n = usize::try_from(end - start).unwrap();
        ba.resize(n, 0);
        bb.resize(n, 0);
        std::os::unix::fs::FileExt::read_exact_at(&fa, &mut ba, start).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&fb, &mut bb, start).unwrap();
        if ba != bb {
            return false;
        }
    }
    true
}

/// What a command may say when it does not succeed: never an I/O error
/// (exit 3) such as "File exists", always a refusal with the next step.
fn assert_refusal_names_undo(o: &Output, img: &Path, what: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{what}: {e}");
    assert!(
        e.contains(&format!("vmie-fixup undo {}", img.display())),
        "{what}: {e}"
    );
}

/// Run `undo` until the image has no journal left; returns how many runs.
fn undo_to_the_end(img: &Path, what: &str) {
    while !journal::journals(img).unwrap().is_empty() {
        let o = undo(img, None);
        assert!(o.status.success(), "{what}: undo failed: {}", stderr(&o));
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    original: PathBuf,
    /// The fixed image and its journal, as a completed run leaves them.
    fixed: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let original = path.join("original.raw");
    copy(&fixture("demo"), &original);
    let fixed_dir = path.join("fixed");
    std::fs::create_dir_all(&fixed_dir).unwrap();
    let fixed = fixed_dir.join("vm.raw");
    copy(&original, &fixed);
    let o = fixup(&fixed, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(journal::journals(&fixed).unwrap().len(), 1);
    Setup {
        _dir: dir,
        dir: path,
        original,
        fixed,
    }
}

/// A fresh copy of the fixed image (with its journal) in a directory of its own.
fn fixed_copy(s: &Setup, name: &str) -> PathBuf {
    let d = s.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let img = d.join("vm.raw");
    copy(&s.fixed, &img);
    for (_, j) in journal::journals(&s.fixed).unwrap() {
        std::fs::copy(&j, d.join(j.file_name().unwrap())).unwrap();
    }
    img
}

fn original_copy(s: &Setup, name: &str) -> PathBuf {
    let d = s.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let img = d.join("vm.raw");
    copy(&s.original, &img);
    img
}

/// The fixup killed at every write k: the next fixup either runs (the image
/// was untouched or fully written) or refuses naming `vmie-fixup undo IMAGE`;
/// `undo` (itself killed once at write k2) then brings back the original.
#[test]
fn fixup_killed_at_every_write_is_undone_to_the_original() {
    let s = setup();
    let mut k = 1;
    let mut refused = 0;
    let mut temp_left = 0;
    loop {
        let img = original_copy(&s, &format!("fix-{k}"));
        let o = fixup(&img, Some(k));
        if !killed_at(&o, k) {
            assert!(o.status.success(), "k={k}: {}", stderr(&o));
            break;
        }
        if journal::temp_journal_path(&img).exists() {
            temp_left += 1;
        }
        // No image changes without a journal.
        if journal::journals(&img).unwrap().is_empty() {
            assert!(
                identical(&img, &s.original),
                "k={k}: changed without a journal"
            );
        }
        // The operator reruns the job.
        let again = fixup(&img, None);
        if again.status.success() {
            assert!(!journal::temp_journal_path(&img).exists(), "k={k}");
        } else {
            refused += 1;
            assert_refusal_names_undo(&again, &img, &format!("k={k} rerun"));
            // undo, killed once more somewhere, then to the end.
            let k2 = 1 + k % 7;
            let _ = undo(&img, Some(k2));
        }
        undo_to_the_end(&img, &format!("k={k}"));
        assert!(identical(&img, &s.original), "k={k}: not the original");
        k += 1;
    }
    eprintln!(
        "fixup: {} write positions, {refused} refused reruns, {temp_left} temporary journals left",
        k - 1
    );
    // journal (create, write, fsync, rename, dir fsync), 11 ranges, fsync,
    // mark + fsync.
    let positions = k - 1;
    assert!(positions >= 16, "only {positions} write positions");
    assert!(temp_left >= 3 && refused >= 10, "windows not hit");
}

/// `undo` killed at every write k, then rerun killed at every write k2, then
/// rerun to the end: byte-identical to the original every time. In between,
/// a fixup refuses a half-undone image (and changes nothing).
#[test]
fn undo_killed_at_every_write_is_finished_by_rerunning_it() {
    let s = setup();
    let total = {
        let mut k = 1;
        loop {
            let img = fixed_copy(&s, &format!("count-{k}"));
            if !killed_at(&undo(&img, Some(k)), k) {
                assert!(identical(&img, &s.original));
                break k - 1;
            }
            k += 1;
        }
    };
    // mark + fsync, 11 ranges, fsync, remove + directory fsync.
    assert!(total >= 15, "{total} write positions");

    let mut half_undone = 0u64;
    for k in 1..=total {
        for k2 in 0..=total {
            let what = format!("k={k} k2={k2}");
            let img = fixed_copy(&s, "u");
            assert!(killed_at(&undo(&img, Some(k)), k), "{what}");
            match journal::pending_journal(&img).unwrap() {
                Some(p) => {
                    assert_eq!(p.kind, PendingKind::Undoing, "{what}");
                    half_undone += 1;
                    if k2 == 0 {
                        // Every other command refuses, and writes nothing.
                        let before = std::fs::read(&p.journal).unwrap();
                        let o = fixup(&img, None);
                        assert_refusal_names_undo(&o, &img, &format!("{what} fixup"));
                        let o = run(&[Path::new("inspect"), &img], None);
                        assert_refusal_names_undo(&o, &img, &format!("{what} inspect"));
                        assert_eq!(std::fs::read(&p.journal).unwrap(), before);
                    }
                }
                None if journal::journals(&img).unwrap().is_empty() => {
                    assert!(identical(&img, &s.original), "{what}");
                }
                None => assert!(identical(&img, &s.fixed), "{what}"),
            }
            if k2 > 0 {
                let o = undo(&img, Some(k2));
                if !killed_at(&o, k2) && !o.status.success() {
                    assert!(
                        stderr(&o).contains("nothing to undo"),
                        "{what}: {}",
                        stderr(&o)
                    );
                }
            }
            undo_to_the_end(&img, &what);
            assert!(identical(&img, &s.original), "{what}: not the original");
        }
    }
    // Killed before the mark: still COMPLETE; after the removal: no journal;
    // everywhere in between: UNDOING.
    assert_eq!(half_undone, (total - 2) * (total + 1));
}

/// Spawn with `VMIE_TEST_STOP_AT_WRITE=k` and wait until it is parked there.
fn stopped_at(args: &[&Path], k: u64) -> std::process::Child {
    let mut child = bin()
        .args(args)
        .env(STOP, k.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "the process ended before write {k}");
        if line.contains(&format!("test hook: stopped before write {k} (")) {
            break;
        }
    }
    // Keep draining stderr in the background so the child never blocks.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink);
    });
    child
}

fn sigkill(mut child: std::process::Child) {
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9));
}

/// A real SIGKILL of the process while it is parked before a chosen write:
/// in the temporary-journal window of the fixup, in the middle of its image
/// writes, and in the middle of an undo. While it is parked, a second writer
/// is refused as "in use"; after the kill, the next command either removes
/// the leftover temporary journal itself or names `vmie-fixup undo IMAGE`,
/// and undo brings back the original bytes.
#[test]
fn real_sigkill_and_a_second_writer() {
    let s = setup();

    // 1. Killed after creating the temporary journal, before renaming it.
    let img = original_copy(&s, "tmp-window");
    let child = stopped_at(&[&img], 3);
    assert!(journal::temp_journal_path(&img).exists());
    for args in [vec![img.as_path()], vec![Path::new("undo"), &img]] {
        let o = run(&args, None);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains("in use by another vmie-fixup run"),
            "{args:?}: {e}"
        );
    }
    sigkill(child);
    assert!(journal::temp_journal_path(&img).exists());
    assert!(identical(&img, &s.original));
    // Not wedged: the next run removes the leftover and fixes the image.
    let o = fixup(&img, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!journal::temp_journal_path(&img).exists());
    assert_eq!(journal::journals(&img).unwrap().len(), 1);
    assert!(journal::pending_journal(&img).unwrap().is_none());
    undo_to_the_end(&img, "tmp-window");
    assert!(identical(&img, &s.original));

    // 2. Killed in the middle of the image writes.
    let img = original_copy(&s, "mid-commit");
    let child = stopped_at(&[&img], 10);
    // A reader is told the image is busy, not that it is broken.
    let o = run(&[Path::new("inspect"), &img], None);
    assert!(
        stderr(&o).contains("in use by another vmie-fixup run"),
        "{}",
        stderr(&o)
    );
    sigkill(child);
    let o = fixup(&img, None);
    assert_refusal_names_undo(&o, &img, "after a killed commit");
    undo_to_the_end(&img, "mid-commit");
    assert!(identical(&img, &s.original));

    // 3. Killed in the middle of an undo, then killed again in the rerun.
    let img = fixed_copy(&s, "mid-undo");
    let child = stopped_at(&[Path::new("undo"), &img], 8);
    let o = fixup(&img, None);
    assert!(
        stderr(&o).contains("in use by another vmie-fixup run"),
        "{}",
        stderr(&o)
    );
    sigkill(child);
    let o = fixup(&img, None);
    assert_refusal_names_undo(&o, &img, "after a killed undo");
    let child = stopped_at(&[Path::new("undo"), &img], 5);
    sigkill(child);
    let o = undo(&img, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("finishing an interrupted undo"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(journal::journals(&img).unwrap().is_empty());
    assert!(identical(&img, &s.original));
}
