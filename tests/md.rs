//! A Linux guest whose root is on an md RAID1 array (made by the real
//! kernel md driver inside libguestfs's appliance, the demo guest's tree
//! put on it with tar-in), inspected and fixed end to end: the array is
//! assembled from its two members on two disks, the dry run plans what the
//! run does, both mirrors end up holding the same clean filesystem with the
//! changes (e2fsck and debugfs on each member's data area), mdadm still
//! accepts both members, a second run changes nothing and undo restores
//! every byte of both disks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[path = "common/cli.rs"]
mod common;

use common::{ok, s, sha256};

/// vmie-md's fixtures: arrays made by guestfish, cached by script.
#[path = "../crates/vmie-md/tests/common/mod.rs"]
mod md_common;

/// The filesystem on a member: its data area as a sparse file.
fn member_fs(img: &Path, dir: &Path, name: &str) -> std::path::PathBuf {
    let (start, size) = md_common::part1_range(img);
    let kv = md_common::examine(img);
    let sectors: u64 = md_common::get(&kv, "Data Offset")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = dir.join(name);
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", out.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={}", start + sectors * 512))
        .arg(format!("count={}", size - sectors * 512))
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn debugfs_cat(fs: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(fs)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_guest_on_md_raid1_is_fixed_end_to_end() {
    // The demo guest's tree as a tar for guestfish's tar-in.
    let tar = Path::new(env!("CARGO_TARGET_TMPDIR")).join("md-demo-root.tar");
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    let st = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=2024-01-01",
            "--owner=0",
            "--group=0",
            "-cf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let script = format!(
        "run\npart-disk /dev/sda mbr\npart-disk /dev/sdb mbr\n\
         md-create md0 \"/dev/sda1 /dev/sdb1\" level:raid1\n\
         mkfs ext4 /dev/md/md0\nmount /dev/md/md0 /\ntar-in {} /\n\
         umount-all\n\
         debug sh \"mdadm --wait /dev/md/md0 2>&1; true\"\n\
         md-stop /dev/md/md0\n",
        tar.display()
    );
    let f = md_common::fixture("demo-raid1-root", &[96, 96], 0, &script);
    let (dir, disks) = f.copy();
    let (a, b) = (&disks[0], &disks[1]);
    let originals = (sha256(a), sha256(b));

    // Inspect: the array from both disks, the guest on it.
    let doc: Value =
        serde_json::from_str(&ok(&["inspect", "--format", "json", s(a), s(b)])).unwrap();
    let md = &doc["md_arrays"][0];
    assert_eq!(md["opened"], true, "{doc}");
    assert_eq!(md["level"], "raid1");
    assert_eq!(md["device"], "/dev/md/md0");
    assert_eq!(md["members"].as_array().unwrap().len(), 2);
    assert_eq!(md["filesystem"]["kind"], "ext4");
    let os = &doc["operating_systems"][0];
    assert_eq!(os["distro"], "debian", "{doc}");
    assert!(os["root"].as_str().unwrap().contains("/dev/md/md0"), "{os}");

    // Plan and run: the same changes.
    let dry: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", s(a), s(b)])).unwrap();
    assert_eq!((sha256(a), sha256(b)), originals, "a dry run wrote");
    assert!(!dry["changes"].as_array().unwrap().is_empty(), "{dry}");
    let real: Value =
        serde_json::from_str(&ok(&["--check-fs", "--format", "json", s(a), s(b)])).unwrap();
    assert_eq!(real["applied"], true, "{real}");
    assert_eq!(real["changes"], dry["changes"]);

    // Both mirrors: clean, identical, holding the new fstab.
    let fa = member_fs(a, dir.path(), "a.ext4");
    let fb = member_fs(b, dir.path(), "b.ext4");
    for fs in [&fa, &fb] {
        let out = Command::new("e2fsck").arg("-fn").arg(fs).output().unwrap();
        assert!(out.status.success(), "e2fsck -fn {}: {out:?}", fs.display());
    }
    assert_eq!(sha256(&fa), sha256(&fb), "the mirrors differ");
    let fstab = debugfs_cat(&fa, "/etc/fstab");
    assert_eq!(fstab, ok(&["cat", s(a), "/etc/fstab", "--disk", s(b)]));
    assert!(debugfs_cat(&fa, "/etc/fstab.vmie.bak").contains("/dev/sda1"));
    for d in [a, b] {
        md_common::examine(d);
    }

    // Nothing left; undo restores both disks.
    let again: Value = serde_json::from_str(&ok(&["--format", "json", s(a), s(b)])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    ok(&["undo", "--all", s(a), s(b)]);
    assert_eq!((sha256(a), sha256(b)), originals);
}
