//! A file written into fragmented free space needs more than the four
//! extents the inode holds: the tree grows index/leaf blocks (checksummed),
//! and e2fsck and debugfs agree. The same on ext2 with indirect blocks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use vmie_guestfs::{GuestFs, NewAttrs};

fn fragmented(kind: &str, args: &[&str]) -> String {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/fstab"), b"old\n").unwrap();
    let img = mkfs(kind, args, 16, Some(t.path()));
    let mut s = open(&img.path);
    let bs = 1024;
    // Fill with one-block files, then free every other one.
    let mut n = 0;
    while s
        .fs
        .create_file(
            &gp(&format!("/etc/s{n}")),
            &[1u8; 1024][..bs],
            &NewAttrs::default(),
        )
        .is_ok()
        && n < 3000
    {
        n += 1;
    }
    for i in (0..n).step_by(2) {
        s.fs.remove(&gp(&format!("/etc/s{i}"))).unwrap();
    }
    let data: Vec<u8> = (0..600 * bs).map(|i| (i % 241) as u8).collect();
    s.fs.replace_file(&gp("/etc/fstab"), &data).unwrap();
    s.commit();
    fsck(&img.path);
    assert_eq!(cat(&img.path, "/etc/fstab"), data);
    let out = Command::new("debugfs")
        .args(["-R", "stat /etc/fstab"])
        .arg(&img.path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn extent_tree_grows() {
    let st = fragmented("ext4", &["-b", "1024", "-O", "^has_journal"]);
    assert!(
        st.contains("(ETB0)") || st.contains("ETB"),
        "no extent tree block:\n{st}"
    );
}

#[test]
fn extent_tree_grows_gdt_csum() {
    // Same with the older checksums (600 one-block extents: depth 2).
    let st = fragmented(
        "ext4",
        &["-b", "1024", "-O", "^metadata_csum,uninit_bg,^has_journal"],
    );
    assert!(st.contains("ETB"), "{st}");
}

#[test]
fn indirect_blocks_ext2() {
    let st = fragmented("ext2", &["-b", "1024"]);
    assert!(st.contains("(IND)") && st.contains("(DIND)"), "{st}");
}
