//! Crash safety of commit and undo: a run or an undo killed at any write, and
//! any number of reruns (killed again or not), never leaves an image that no
//! command can bring back to its original bytes. Kills are simulated with a
//! persistent [`FaultPlan`]: from the fault on, no write-side system call
//! reaches a file, as after SIGKILL. The real binary is killed by
//! `tests/crash.rs` at the top of the workspace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vmie_disk::journal::{self, CommitOptions, PendingKind};
use vmie_disk::{Device, DiskSet, FaultPlan, FileDevice};

fn hash(path: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(path).unwrap()).to_vec()
}

/// Two images with recognisable contents, in `dir`.
fn make_images(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let mut out = Vec::new();
    for (i, size) in [(0u8, 64 * 1024usize), (1, 32 * 1024)] {
        let p = dir.join(format!("disk{i}.raw"));
        let data: Vec<u8> = (0..size)
            .map(|b| (b as u8).wrapping_mul(7).wrapping_add(i))
            .collect();
        fs::write(&p, data).unwrap();
        out.push(p);
    }
    out
}

/// Several ranges on both disks.
fn stage(set: &DiskSet) {
    let d0 = set.disks()[0].device();
    d0.write_at(0, &[0xAA; 512]).unwrap();
    d0.write_at(10_000, &[0xCC; 4096]).unwrap();
    d0.write_at(60_000, b"hello").unwrap();
    d0.write_at(63_000, &[0x11; 700]).unwrap();
    let d1 = set.disks()[1].device();
    d1.write_at(4096, &[0xDD; 8192]).unwrap();
    d1.write_at(30_000, &[0xEE; 10]).unwrap();
}

/// Fresh images in `dir` with one completed commit on them.
fn committed(dir: &Path) -> Vec<PathBuf> {
    let imgs = make_images(dir);
    let set = DiskSet::open(&imgs, true).unwrap();
    stage(&set);
    set.commit(&CommitOptions::default()).unwrap();
    imgs
}

fn hashes(imgs: &[PathBuf]) -> Vec<Vec<u8>> {
    imgs.iter().map(|p| hash(p)).collect()
}

fn crash(k: u64) -> FaultPlan {
    FaultPlan::new(k, true)
}

fn undo_with(img: &Path, plan: &FaultPlan) -> Result<journal::UndoReport, vmie_disk::DiskError> {
    journal::undo(img, &CommitOptions { fault: Some(plan) })
}

fn undo_all(img: &Path) {
    while !journal::journals(img).unwrap().is_empty() {
        journal::undo(img, &CommitOptions::default()).unwrap();
    }
}

/// What an image looks like after a killed undo: still the run's bytes with
/// the completed journal (killed before the journal was marked), restored
/// without a journal (killed after it was removed), or marked UNDOING, in
/// which case every open is refused with `vmie-fixup undo IMAGE` as the next
/// step.
fn check_after_killed_undo(img: &Path, original: &[u8], fixed: &[u8], what: &str) {
    let pending = journal::pending_journal(img).unwrap();
    let now = hash(img);
    match pending {
        None if journal::journals(img).unwrap().is_empty() => {
            assert_eq!(now, original, "{what}: journal gone but image not original");
        }
        None => {
            assert_eq!(
                now, fixed,
                "{what}: completed journal but image not as the run left it"
            );
            // A legitimate fixed image: it may be opened (and run on) again.
            drop(DiskSet::open(&[img.to_path_buf()], true).unwrap());
        }
        Some(p) => {
            assert_eq!(p.kind, PendingKind::Undoing, "{what}");
            for writable in [true, false] {
                let err = DiskSet::open(&[img.to_path_buf()], writable)
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(&format!("vmie-fixup undo {}", img.display()))
                        && err.contains("UNDOING"),
                    "{what}: {err}"
                );
            }
        }
    }
    assert!(
        !journal::temp_journal_path(img).exists(),
        "{what}: undo never creates a temporary journal"
    );
}

/// Kill the undo at every write k, then rerun it killed at every write k2,
/// then rerun it to the end: the image ends byte-identical to the original
/// every time, and in between every open refuses while the undo is half done.
#[test]
fn undo_killed_at_every_write_is_finished_by_rerunning_it() {
    let dir = tempfile::tempdir().unwrap();
    let original = hashes(&make_images(&dir.path().join("orig")));
    let fixed = hashes(&committed(&dir.path().join("fixed")));

    let total = {
        let imgs = committed(&dir.path().join("count"));
        let plan = FaultPlan::new(u64::MAX, false);
        let r = undo_with(&imgs[0], &plan).unwrap();
        assert_eq!((r.ranges, r.written, r.resumed), (4, 4, false));
        assert_eq!(hash(&imgs[0]), original[0]);
        plan.writes()
    };
    // mark + fsync, 4 ranges, fsync, remove + directory fsync
    assert_eq!(total, 9, "write positions of an undo");

    let mut trials = 0;
    for persistent in [true, false] {
        for k in 1..=total {
            for k2 in 0..=total {
                let what = format!("persistent={persistent} k={k} k2={k2}");
                let imgs = committed(&dir.path().join(format!("u-{persistent}-{k}-{k2}")));
                let plan = FaultPlan::new(k, persistent);
                assert!(undo_with(&imgs[0], &plan).is_err(), "{what}");
                check_after_killed_undo(&imgs[0], &original[0], &fixed[0], &what);
                if k2 > 0 {
                    // Killed again while finishing; may fail only by the kill.
                    match undo_with(&imgs[0], &crash(k2)) {
                        Ok(_) => {}
                        Err(vmie_disk::DiskError::Injected(_)) => {}
                        Err(e) if e.to_string().contains("nothing to undo") => {}
                        Err(e) => panic!("{what}: rerun refused: {e}"),
                    }
                    check_after_killed_undo(&imgs[0], &original[0], &fixed[0], &what);
                }
                undo_all(&imgs[0]);
                undo_all(&imgs[1]);
                assert_eq!(hashes(&imgs), original, "{what}");
                trials += 1;
            }
        }
    }
    assert_eq!(trials, 2 * 9 * 10);
}

/// Kill the commit at every write, then behave as an operator would: the next
/// open either works on an untouched image (a leftover temporary journal is
/// removed) or refuses naming `vmie-fixup undo IMAGE`; undo (killed once
/// more at every write, then rerun) brings the original bytes back; and a new
/// run then commits normally: nothing is wedged.
#[test]
fn commit_killed_at_every_write_never_wedges_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let original = hashes(&make_images(&dir.path().join("orig")));
    let fixed = hashes(&committed(&dir.path().join("fixed")));
    let total = {
        let imgs = make_images(&dir.path().join("count"));
        let set = DiskSet::open(&imgs, true).unwrap();
        stage(&set);
        let plan = FaultPlan::new(u64::MAX, false);
        set.commit(&CommitOptions { fault: Some(&plan) }).unwrap();
        plan.writes()
    };
    // Per image: create, write, fsync, rename, directory fsync; ranges and
    // fsync; mark + fsync.
    assert_eq!(total, 2 * 5 + (4 + 1) + (2 + 1) + 2 * 2);

    let mut saw_temp = 0;
    let mut saw_prepared = 0;
    for k in 1..=total {
        for k2 in [0, 1, 3, 5] {
            let what = format!("k={k} k2={k2}");
            let imgs = make_images(&dir.path().join(format!("c-{k}-{k2}")));
            {
                let set = DiskSet::open(&imgs, true).unwrap();
                stage(&set);
                assert!(set
                    .commit(&CommitOptions {
                        fault: Some(&crash(k))
                    })
                    .is_err());
            } // the process is gone: its lock with it
            if imgs.iter().any(|p| journal::temp_journal_path(p).exists()) {
                saw_temp += 1;
            }
            // Every image is either untouched, or has a journal that says how
            // to bring it back.
            for (i, p) in imgs.iter().enumerate() {
                let now = hash(p);
                if journal::journals(p).unwrap().is_empty() {
                    assert_eq!(now, original[i], "{what}: image changed without a journal");
                }
            }
            match DiskSet::open(&imgs, true) {
                Ok(set) => {
                    drop(set);
                    for p in &imgs {
                        assert!(!journal::temp_journal_path(p).exists(), "{what}");
                    }
                }
                Err(e) => {
                    saw_prepared += 1;
                    let e = e.to_string();
                    assert!(e.contains("run `vmie-fixup undo "), "{what}: {e}");
                }
            }
            for p in &imgs {
                if k2 > 0 && journal::pending_journal(p).unwrap().is_some() {
                    let _ = undo_with(p, &crash(k2));
                }
                // Finish the undo of an interrupted run; completed runs are
                // left as they are (they are whole).
                while journal::pending_journal(p).unwrap().is_some() {
                    journal::undo(p, &CommitOptions::default()).unwrap();
                }
            }
            let now = hashes(&imgs);
            for i in 0..imgs.len() {
                assert!(
                    now[i] == original[i] || now[i] == fixed[i],
                    "{what}: disk{i} half-written after undo"
                );
            }
            // Not wedged: a new run commits, and undo of everything restores.
            let set = DiskSet::open(&imgs, true).unwrap_or_else(|e| panic!("{what}: {e}"));
            stage(&set);
            set.disks()[0]
                .device()
                .write_at(20_000, b"next run")
                .unwrap();
            set.commit(&CommitOptions::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            drop(set);
            for p in &imgs {
                undo_all(p);
            }
            assert_eq!(hashes(&imgs), original, "{what}");
        }
    }
    assert!(
        saw_temp >= 4,
        "the temporary-journal window was hit {saw_temp} times"
    );
    assert!(saw_prepared >= 4, "{saw_prepared}");
}

/// An undo by an older vmie-fixup (which did not mark its journal) that was
/// killed left a COMPLETE journal over an image whose ranges are partly (or
/// all) restored. Ranges that hold their original bytes are recognised as
/// done; the rest are restored; a range that holds neither is refused and
/// nothing is written.
#[test]
fn ranges_already_restored_are_recognised_and_foreign_bytes_refused() {
    let dir = tempfile::tempdir().unwrap();
    let orig_dir = dir.path().join("orig");
    let orig = make_images(&orig_dir);
    let original = hash(&orig[0]);
    let orig_bytes = fs::read(&orig[0]).unwrap();
    let restore = |img: &Path, offset: usize, len: usize| {
        let dev = FileDevice::open_rw(img).unwrap();
        dev.write_at(offset as u64, &orig_bytes[offset..offset + len])
            .unwrap();
    };

    // Half restored.
    let imgs = committed(&dir.path().join("half"));
    restore(&imgs[0], 0, 512);
    restore(&imgs[0], 60_000, 5);
    let r = journal::undo(&imgs[0], &CommitOptions::default()).unwrap();
    assert_eq!((r.ranges, r.written), (4, 2));
    assert_eq!(hash(&imgs[0]), original);

    // All restored, journal never removed.
    let imgs = committed(&dir.path().join("all"));
    for (o, l) in [(0, 512), (10_000, 4096), (60_000, 5), (63_000, 700)] {
        restore(&imgs[0], o, l);
    }
    let r = journal::undo(&imgs[0], &CommitOptions::default()).unwrap();
    assert_eq!((r.ranges, r.written), (4, 0));
    assert_eq!(hash(&imgs[0]), original);
    assert!(journal::journals(&imgs[0]).unwrap().is_empty());

    // One range restored, another overwritten by someone else: refused, and
    // the refusal writes nothing (the journal stays COMPLETE).
    let imgs = committed(&dir.path().join("foreign"));
    restore(&imgs[0], 0, 512);
    FileDevice::open_rw(&imgs[0])
        .unwrap()
        .write_at(10_001, b"X")
        .unwrap();
    let before = hash(&imgs[0]);
    let err = journal::undo(&imgs[0], &CommitOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("changed since") && err.contains("offset 10000"),
        "{err}"
    );
    assert_eq!(hash(&imgs[0]), before);
    assert!(journal::pending_journal(&imgs[0]).unwrap().is_none());
}

/// One writer at a time: the second gets a clear refusal, and neither undo
/// nor a reader touches what the first is doing.
#[test]
fn a_second_writer_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = committed(&dir.path().join("a"));
    let first = DiskSet::open(&imgs[..1], true).unwrap();
    let err = DiskSet::open(&imgs[..1], true).unwrap_err().to_string();
    assert!(err.contains("in use by another vmie-fixup run"), "{err}");
    let err = journal::undo(&imgs[0], &CommitOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another vmie-fixup run"), "{err}");
    // Readers are not writers.
    drop(DiskSet::open(&imgs[..1], false).unwrap());

    // The first run is killed in the middle of its commit while a reader
    // looks: the reader is told the image is busy, not that it is broken.
    first.disks()[0]
        .device()
        .write_at(100, b"second run")
        .unwrap();
    assert!(first
        .commit(&CommitOptions {
            fault: Some(&crash(8))
        })
        .is_err());
    assert_eq!(
        journal::pending_journal(&imgs[0]).unwrap().unwrap().kind,
        PendingKind::Prepared
    );
    let err = DiskSet::open(&imgs[..1], false).unwrap_err().to_string();
    assert!(err.contains("in use by another vmie-fixup run"), "{err}");
    drop(first);
    // Once it is gone: an interrupted run, and how to resolve it.
    let err = DiskSet::open(&imgs[..1], false).unwrap_err().to_string();
    assert!(
        err.contains("interrupted") && err.contains("vmie-fixup undo"),
        "{err}"
    );
    undo_all(&imgs[0]);
    let original = hash(&make_images(&dir.path().join("orig"))[0]);
    assert_eq!(hash(&imgs[0]), original);
}

/// A temporary journal whose run is gone never touched the image: the next
/// writer (or undo) removes it instead of failing with "File exists"; while
/// its owner still holds the lock, it is left alone.
#[test]
fn a_leftover_temporary_journal_is_removed_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = make_images(&dir.path().join("a"));
    let tmp = journal::temp_journal_path(&imgs[0]);
    assert_eq!(
        tmp.file_name().unwrap().to_str().unwrap(),
        "disk0.raw.vmie-undo.tmp"
    );
    fs::write(&tmp, b"half a journal").unwrap();

    // A reader leaves it alone.
    drop(DiskSet::open(&imgs, false).unwrap());
    assert!(tmp.exists());
    // Its owner is alive (holds the lock): left alone too.
    {
        let owner = FileDevice::open(&imgs[0]).unwrap();
        journal::lock_image(owner.file(), &imgs[0]).unwrap();
        let err = DiskSet::open(&imgs, true).unwrap_err().to_string();
        assert!(err.contains("in use by another vmie-fixup run"), "{err}");
        assert!(tmp.exists());
    }
    // The owner is gone: the next writer removes it and commits normally.
    let set = DiskSet::open(&imgs, true).unwrap();
    assert!(!tmp.exists());
    stage(&set);
    set.commit(&CommitOptions::default()).unwrap();
    drop(set);

    // Undo removes one too, and says so when there is nothing else to do.
    undo_all(&imgs[0]);
    fs::write(&tmp, b"").unwrap();
    let err = journal::undo(&imgs[0], &CommitOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing to undo") && err.contains("removed"),
        "{err}"
    );
    assert!(!tmp.exists());
}

/// A commit through the public API without the lock finds a temporary
/// journal of a live writer: a refusal that says what it is, never a bare
/// "File exists".
#[test]
fn an_unexpected_temporary_journal_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = make_images(&dir.path().join("a"));
    let set = DiskSet::open(&imgs[..1], true).unwrap();
    stage_one(&set);
    fs::write(journal::temp_journal_path(&imgs[0]), b"").unwrap();
    let err = set.commit(&CommitOptions::default()).unwrap_err();
    assert!(err.is_refusal());
    let err = err.to_string();
    assert!(
        err.contains("temporary undo journal") && err.contains("vmie-fixup undo"),
        "{err}"
    );
    assert!(journal::journals(&imgs[0]).unwrap().is_empty());
}

fn stage_one(set: &DiskSet) {
    set.disks()[0].device().write_at(0, &[0xAA; 16]).unwrap();
}
