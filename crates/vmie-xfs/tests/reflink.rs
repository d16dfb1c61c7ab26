//! Reflink: blocks that the refcountbt says are shared are never
//! overwritten or freed. The shared files are made by the Linux kernel
//! itself (`cp --reflink=always` on a loop mount of an image made by
//! mkfs.xfs), so the refcountbt records and the inodes' reflink flags are
//! the kernel's, not ours. Every write that would overwrite or free a shared
//! block is refused with nothing written, not even to the overlay; the same
//! writes on unshared files of the same volume (one with the reflink flag
//! whose partner the kernel deleted) go through, xfs_repair -n is clean,
//! and the kernel reads every file back.
//!
//! Needs root and a kernel with XFS (the suite runs as root; see README).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath};

fn gp(s: &str) -> GuestPath {
    GuestPath::lexical(s.as_bytes())
}

const K: usize = 1024;

/// Files of the test volume as the kernel leaves them:
/// - `a` (256 KiB) and `b`, its reflink copy: every block shared;
/// - `d`, a reflink copy of `a` whose last 64 KiB the kernel rewrote
///   (copy-on-write): its head shared, its tail its own;
/// - `e`, a reflink copy of a file the kernel then deleted: the reflink
///   flag is set, but no block is shared any more;
/// - `c` (256 KiB), written plainly.
fn volume(mkfs_args: &[&str]) -> (Img, Vec<(&'static str, Vec<u8>)>) {
    let img = mkfs(mkfs_args, 300, None);
    let a = bytes(1, 256 * K);
    let c = bytes(3, 256 * K);
    let mut d = a.clone();
    d[192 * K..].copy_from_slice(&bytes(4, 64 * K));
    let e = bytes(5, 128 * K);
    {
        let m = Mounted::new(&img.path, false);
        std::fs::write(m.path("a"), &a).unwrap();
        std::fs::write(m.path("c"), &c).unwrap();
        std::fs::write(m.path("gone"), &e).unwrap();
        sh(&mut Command::new("sync"));
        for (from, to) in [("a", "b"), ("a", "d"), ("gone", "e")] {
            sh(Command::new("cp")
                .arg("--reflink=always")
                .arg(m.path(from))
                .arg(m.path(to)));
        }
        // Rewrite d's tail in place: the kernel gives it new blocks.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(m.path("d"))
                .unwrap();
            f.seek(SeekFrom::Start(192 * K as u64)).unwrap();
            f.write_all(&d[192 * K..]).unwrap();
            f.sync_all().unwrap();
        }
        std::fs::remove_file(m.path("gone")).unwrap();
        sh(&mut Command::new("sync"));
    }
    let (ok, out) = repair_n(&img.path);
    assert!(ok, "the kernel's volume is not clean: {out}");
    let files = vec![("a", a.clone()), ("b", a), ("c", c), ("d", d), ("e", e)];
    (img, files)
}

/// The kernel's reading of every file equals `want`.
fn kernel_sees(img: &Path, want: &[(&str, Vec<u8>)], what: &str) {
    let m = Mounted::new(img, true);
    for (name, data) in want {
        let got = std::fs::read(m.path(name)).unwrap();
        assert!(got == *data, "{what}: the kernel reads /{name} differently");
    }
    let mut names: Vec<String> = std::fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want_names: Vec<String> = want.iter().map(|(n, _)| n.to_string()).collect();
    want_names.sort();
    assert_eq!(names, want_names, "{what}: the kernel lists other files");
}

fn profiles() -> [(&'static str, &'static [&'static str]); 2] {
    [
        (
            "RHEL 9",
            &["-m", "crc=1,finobt=1,reflink=1,bigtime=1,inobtcount=1"],
        ),
        (
            "rmapbt, 1 KiB blocks",
            &["-m", "crc=1,rmapbt=1,reflink=1", "-b", "size=1024"],
        ),
    ]
}

#[test]
fn shared_blocks_are_never_overwritten_or_freed() {
    for (profile, args) in profiles() {
        let (img, files) = volume(args);
        let before = std::fs::read(&img.path).unwrap();
        // Each of these would overwrite or free a block `a` and `b` share.
        type Op = Box<dyn Fn(&mut dyn GuestFs) -> Result<(), vmie_guestfs::FsError>>;
        let refused: Vec<(&str, Op)> = vec![
            (
                "overwrite a at its length",
                Box::new(|fs| fs.replace_file(&gp("/a"), &bytes(9, 256 * K))),
            ),
            (
                "grow a",
                Box::new(|fs| fs.replace_file(&gp("/a"), &bytes(9, 512 * K))),
            ),
            (
                "truncate b to nothing",
                Box::new(|fs| fs.replace_file(&gp("/b"), b"")),
            ),
            (
                "overwrite d's shared head",
                Box::new(|fs| fs.replace_file(&gp("/d"), &bytes(9, 100 * K))),
            ),
            (
                "truncate d to nothing",
                Box::new(|fs| fs.replace_file(&gp("/d"), b"")),
            ),
            ("remove b", Box::new(|fs| fs.remove(&gp("/b")))),
            ("remove d", Box::new(|fs| fs.remove(&gp("/d")))),
            (
                "rename c over b",
                Box::new(|fs| fs.rename(&gp("/c"), &gp("/b"))),
            ),
        ];
        for (what, op) in &refused {
            let (ov, mut fs) = over(&img.path);
            let err = match op(&mut fs) {
                Ok(()) => panic!("{profile}: {what}: done, where it must be refused"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("reflink"),
                "{profile}: {what}: refused for another reason: {err}"
            );
            assert!(!ov.is_dirty(), "{profile}: {what}: the overlay was written");
            // The reader still sees the kernel's files.
            for (name, data) in &files {
                assert_eq!(
                    fs.read(&format!("/{name}")).unwrap(),
                    *data,
                    "{profile}: {what}: /{name} after the refusal"
                );
            }
        }
        assert!(std::fs::read(&img.path).unwrap() == before);

        // The unshared files of the same volume are written as usual: `c`
        // (plain) and `e` (reflink flag, its partner deleted), grown,
        // shrunk, removed; the kernel reads the result.
        let mut want = files.clone();
        // (what, file, its new contents or None to remove it)
        let steps: [(&str, &str, Option<Vec<u8>>); 4] = [
            ("grow e", "e", Some(bytes(10, 300 * K))),
            ("shrink e", "e", Some(bytes(11, 10 * K))),
            ("shrink c", "c", Some(bytes(12, 3 * K))),
            ("remove c", "c", None),
        ];
        for (what, name, data) in steps {
            let (ov, mut fs) = over(&img.path);
            let path = gp(&format!("/{name}"));
            match &data {
                Some(d) => fs.replace_file(&path, d),
                None => fs.remove(&path),
            }
            .unwrap_or_else(|e| panic!("{profile}: {what}: {e}"));
            drop(fs);
            commit(&ov, &img.path);
            match data {
                Some(d) => want.iter_mut().find(|(n, _)| *n == name).unwrap().1 = d,
                None => want.retain(|(n, _)| *n != name),
            }
            assert_clean(&img.path, &format!("{profile}: {what}"));
            let (_, fs) = open(&img.path);
            for (name, data) in &want {
                assert_eq!(
                    fs.read(&format!("/{name}")).unwrap(),
                    *data,
                    "{profile}: {what}: /{name}"
                );
            }
        }
        kernel_sees(&img.path, &want, profile);
    }
}
