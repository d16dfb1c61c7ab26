//! The commit is all or nothing, and undo restores the original bytes exactly,
//! whichever write fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vmie_disk::journal::{self, CommitOptions};
use vmie_disk::{Device, DiskSet, FaultPlan};

fn hash(path: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(path).unwrap()).to_vec()
}

/// Two images with recognisable contents.
fn make_images(dir: &Path) -> Vec<PathBuf> {
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

/// The same edits every time: several ranges on both disks, some adjacent.
fn stage(set: &DiskSet) {
    let d0 = set.disks()[0].device();
    d0.write_at(0, &[0xAA; 512]).unwrap();
    d0.write_at(512, &[0xBB; 100]).unwrap(); // merges with the first
    d0.write_at(10_000, &[0xCC; 4096]).unwrap();
    d0.write_at(60_000, b"hello").unwrap();
    let d1 = set.disks()[1].device();
    d1.write_at(4096, &[0xDD; 8192]).unwrap();
    d1.write_at(30_000, &[0xEE; 10]).unwrap();
}

fn expected_after(dir: &Path, images: &[PathBuf]) -> Vec<Vec<u8>> {
    let copy = dir.join("expected");
    fs::create_dir_all(&copy).unwrap();
    let copies: Vec<PathBuf> = images
        .iter()
        .map(|p| {
            let c = copy.join(p.file_name().unwrap());
            fs::copy(p, &c).unwrap();
            c
        })
        .collect();
    let set = DiskSet::open(&copies, true).unwrap();
    stage(&set);
    set.commit(&CommitOptions::default()).unwrap();
    copies.iter().map(|c| hash(c)).collect()
}

#[test]
fn dry_run_writes_nothing_and_reads_see_pending_writes() {
    let dir = tempfile::tempdir().unwrap();
    let images = make_images(dir.path());
    let before: Vec<_> = images.iter().map(|p| hash(p)).collect();
    let set = DiskSet::open(&images, true).unwrap();
    stage(&set);
    let mut buf = [0u8; 5];
    set.disks()[0].device().read_at(60_000, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    drop(set);
    let after: Vec<_> = images.iter().map(|p| hash(p)).collect();
    assert_eq!(before, after);
    assert!(journal::journals(&images[0]).unwrap().is_empty());
}

#[test]
fn commit_then_undo_restores_originals() {
    let dir = tempfile::tempdir().unwrap();
    let images = make_images(dir.path());
    let before: Vec<_> = images.iter().map(|p| hash(p)).collect();
    let set = DiskSet::open(&images, true).unwrap();
    stage(&set);
    let report = set.commit(&CommitOptions::default()).unwrap();
    assert_eq!(report.images.len(), 2);
    assert_eq!(report.images[0].ranges, 3);
    assert_ne!(hash(&images[0]), before[0]);
    drop(set); // undo takes the image's lock, which the set holds
    for (img, h) in images.iter().zip(&before) {
        journal::undo(img, &CommitOptions::default()).unwrap();
        assert_eq!(&hash(img), h);
    }
    // Nothing left to undo.
    assert!(journal::undo(&images[0], &CommitOptions::default()).is_err());
}

#[test]
fn two_runs_undo_in_reverse_order() {
    let dir = tempfile::tempdir().unwrap();
    let images = make_images(dir.path());
    let original = hash(&images[0]);
    let set = DiskSet::open(&images[..1], true).unwrap();
    set.disks()[0].device().write_at(100, b"first").unwrap();
    set.commit(&CommitOptions::default()).unwrap();
    let after_first = hash(&images[0]);
    set.disks()[0].device().write_at(102, b"second").unwrap();
    set.commit(&CommitOptions::default()).unwrap();
    drop(set);
    journal::undo(&images[0], &CommitOptions::default()).unwrap();
    assert_eq!(hash(&images[0]), after_first);
    journal::undo(&images[0], &CommitOptions::default()).unwrap();
    assert_eq!(hash(&images[0]), original);
}

#[test]
fn undo_refuses_when_image_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let images = make_images(dir.path());
    let set = DiskSet::open(&images[..1], true).unwrap();
    set.disks()[0].device().write_at(100, b"ours").unwrap();
    set.commit(&CommitOptions::default()).unwrap();
    drop(set);
    // Someone else writes over our bytes.
    let dev = vmie_disk::FileDevice::open_rw(&images[0]).unwrap();
    dev.write_at(101, b"X").unwrap();
    let err = journal::undo(&images[0], &CommitOptions::default()).unwrap_err();
    assert!(err.to_string().contains("changed since"), "{err}");
}

#[test]
fn undo_refuses_a_damaged_journal() {
    let dir = tempfile::tempdir().unwrap();
    let images = make_images(dir.path());
    let set = DiskSet::open(&images[..1], true).unwrap();
    set.disks()[0].device().write_at(100, b"ours").unwrap();
    let report = set.commit(&CommitOptions::default()).unwrap();
    drop(set);
    let j = &report.images[0].journal;
    let mut bytes = fs::read(j).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(j, bytes).unwrap();
    let err = journal::undo(&images[0], &CommitOptions::default()).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// Containers are read (see tests/image_formats.rs) but never opened for
/// writing: refused with the conversion command, whatever their headers say.
#[test]
fn containers_are_refused_for_writing_with_conversion_advice() {
    let dir = tempfile::tempdir().unwrap();
    for (name, head) in [
        ("a.qcow2", b"QFI\xfb\0\0\0\x03".to_vec()),
        ("b.vmdk", b"KDMV\x01\0\0\0".to_vec()),
        ("c.vhdx", b"vhdxfile".to_vec()),
        ("d.vhd", b"conectix".to_vec()),
    ] {
        let p = dir.path().join(name);
        let mut data = head;
        data.resize(4096, 0);
        fs::write(&p, data).unwrap();
        let err = DiskSet::open(std::slice::from_ref(&p), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("qemu-img convert -O raw"), "{err}");
        // Read only, these damaged headers are refused by the readers.
        assert!(DiskSet::open(&[p], false).is_err());
    }
}

/// Inject a failure at every write position k, as a one-off fault and as a
/// crash (every later write fails too). After a one-off fault the images are
/// untouched (rolled back) or completely written; in every case `undo`
/// (where a journal remains) brings back the original bytes.
#[test]
fn failure_at_every_write_is_all_or_nothing_and_undoable() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    fs::create_dir_all(&base).unwrap();
    let images = make_images(&base);
    let original: Vec<_> = images.iter().map(|p| hash(p)).collect();
    let complete = expected_after(dir.path(), &images);

    // Count the writes of a clean commit.
    let total = {
        let work = dir.path().join("count");
        fs::create_dir_all(&work).unwrap();
        let imgs: Vec<PathBuf> = images
            .iter()
            .map(|p| {
                let c = work.join(p.file_name().unwrap());
                fs::copy(p, &c).unwrap();
                c
            })
            .collect();
        let set = DiskSet::open(&imgs, true).unwrap();
        stage(&set);
        let plan = FaultPlan::new(u64::MAX, false);
        set.commit(&CommitOptions { fault: Some(&plan) }).unwrap();
        plan.writes()
    };
    assert!(total >= 9, "journals + ranges + marks: {total}");

    for persistent in [false, true] {
        for k in 1..=total {
            let work = dir.path().join(format!("run-{persistent}-{k}"));
            fs::create_dir_all(&work).unwrap();
            let imgs: Vec<PathBuf> = images
                .iter()
                .map(|p| {
                    let c = work.join(p.file_name().unwrap());
                    fs::copy(p, &c).unwrap();
                    c
                })
                .collect();
            let set = DiskSet::open(&imgs, true).unwrap();
            stage(&set);
            let plan = FaultPlan::new(k, persistent);
            let res = set.commit(&CommitOptions { fault: Some(&plan) });
            assert!(res.is_err(), "k={k}: the injected fault must surface");
            drop(set);
            let now: Vec<_> = imgs.iter().map(|p| hash(p)).collect();
            if !persistent {
                assert!(
                    now == original || now == complete,
                    "k={k}: one-off fault left a half-written image"
                );
            }
            // An interrupted run blocks further opens until undone.
            let pending = imgs
                .iter()
                .any(|p| journal::interrupted_journal(p).unwrap().is_some());
            if pending {
                assert!(DiskSet::open(&imgs, true).is_err(), "k={k}");
            }
            for p in &imgs {
                while !journal::journals(p).unwrap().is_empty() {
                    journal::undo(p, &CommitOptions::default()).unwrap();
                }
            }
            let restored: Vec<_> = imgs.iter().map(|p| hash(p)).collect();
            assert_eq!(restored, original, "k={k} persistent={persistent}");
        }
    }
}
