//! Growing hashed (htree) directories: leaf splits, index-node splits and a
//! new index level under a full root, checked by e2fsck (which verifies the
//! hash order of every leaf) and debugfs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use vmie_guestfs::{GuestFs, NewAttrs};

fn levels(img: &std::path::Path, dir: &str) -> u32 {
    let out = Command::new("debugfs")
        .args(["-R", &format!("htree {dir}")])
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Indirect levels:"))
        .unwrap_or_else(|| panic!("{dir} is not htree:\n{text}"));
    line.rsplit(' ').next().unwrap().trim().parse().unwrap()
}

fn grow(args: &[&str], start: usize, add: usize) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let name = |i: usize, tag: &str| format!("{tag}-{i:06}-{}", "x".repeat(50));
    for i in 0..start {
        std::fs::write(d.join(name(i, "old")), b"o").unwrap();
    }
    let img = mkfs("ext4", args, 64, Some(t.path()));
    let before = levels(&img.path, "/d");
    let mut s = open(&img.path);
    for i in 0..add {
        s.fs.create_file(
            &gp(&format!("/d/{}", name(i, "new"))),
            b"n",
            &NewAttrs::default(),
        )
        .unwrap();
    }
    for i in (0..start).step_by(3) {
        s.fs.remove(&gp(&format!("/d/{}", name(i, "old")))).unwrap();
    }
    s.fs.rename(&gp(&format!("/d/{}", name(1, "old"))), &gp("/d/renamed"))
        .unwrap();
    // Lookups through the index see every name.
    assert!(matches!(
        s.fs.create_file(
            &gp(&format!("/d/{}", name(7, "new"))),
            b"",
            &NewAttrs::default()
        ),
        Err(vmie_guestfs::FsError::Exists { .. })
    ));
    s.commit();
    fsck(&img.path);
    let after = levels(&img.path, "/d");
    eprintln!("{args:?}: levels {before} -> {after}");
    assert_eq!(
        cat(&img.path, &format!("/d/{}", name(add - 1, "new"))),
        b"n"
    );
    assert_eq!(cat(&img.path, "/d/renamed"), b"o");
    assert!(!exists(&img.path, &format!("/d/{}", name(0, "old"))));
    let out = Command::new("debugfs")
        .args(["-R", "ls /d"])
        .arg(&img.path)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).matches("new-").count();
    assert_eq!(listed, add);
}

#[test]
fn htree_grows_1k() {
    grow(&["-b", "1024"], 600, 3000);
}

#[test]
fn htree_grows_4k_no_csum() {
    grow(&["-O", "^metadata_csum"], 3000, 4000);
}

/// large_dir allows a third index level: a 1 KiB-block directory of long
/// names whose two-level index is nearly full grows one, which e2fsck
/// accepts (and checks the hash order of every leaf under it).
#[test]
fn htree_third_level_with_large_dir() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let name = |i: usize, tag: &str| format!("{tag}-{i:06}-{}", "y".repeat(240));
    // mke2fs -d links names one by one into a linear directory (quadratic),
    // so it starts small; e2fsck -D indexes it and our writer does the rest.
    let start = 2_000;
    for i in 0..start {
        std::fs::write(d.join(name(i, "old")), b"").unwrap();
    }
    let img = mkfs(
        "ext4",
        &["-b", "1024", "-O", "large_dir", "-N", "65536"],
        160,
        Some(t.path()),
    );
    let before = levels(&img.path, "/d");
    let mut s = open(&img.path);
    let mut added = 0;
    while added < 60_000 {
        for _ in 0..2000 {
            s.fs.create_file(
                &gp(&format!("/d/{}", name(added, "new"))),
                b"",
                &NewAttrs::default(),
            )
            .unwrap();
            added += 1;
        }
        s.commit();
        if levels(&img.path, "/d") == 2 {
            break;
        }
    }
    fsck(&img.path);
    assert_eq!(
        (before, levels(&img.path, "/d")),
        (1, 2),
        "after {added} files"
    );
    assert_eq!(
        cat(&img.path, &format!("/d/{}", name(added - 1, "new"))),
        b""
    );
}
