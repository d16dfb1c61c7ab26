//! A RHEL 8 guest on XFS (`xtask` fixture `rhel8-xfs`: XFS /boot and root
//! made by mkfs.xfs with the RHEL 8 profile) fixed end to end: the dry
//! run plans exactly what the real run does, xfs_repair -n finds nothing
//! on either filesystem afterwards, the files read back the same through
//! our `cat` and through xfs_db's own block maps (directories listed with
//! good hashes), a second run changes nothing and undo restores every byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Partition `start`..`start+size` of `img` as its own (sparse) file.
fn extract(img: &Path, start: u64, size: u64, to: &Path) {
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}"))
        .arg("status=none")
        .status()
        .expect("dd (coreutils)");
    assert!(st.success());
}

/// The XFS crate's own test helpers: xfs_repair -n (`assert_clean`),
/// xfs_db listings (every hash good) and xfs_db block maps read back.
#[path = "../crates/vmie-xfs/tests/common/mod.rs"]
mod xfs_common;

use xfs_common::{assert_clean as repair_clean, xfs_db_read};

#[path = "common/cli.rs"]
mod common;

use common::{fixture, ok, run, s, sha256};

/// xfs_db's listing of a directory (every entry with a good hash), as text.
fn xfs_db_ls(part: &Path, dir: &str) -> Vec<String> {
    xfs_common::xfs_db_ls(part, dir)
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

#[test]
fn fix_run_end_to_end_on_a_rhel8_guest_on_xfs() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("rhel-xfs.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(fixture("rhel8-xfs"))
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let original = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let parts = doc["disks"][0]["partitions"].as_array().unwrap();
    let span = |i: usize| {
        (
            parts[i]["start"].as_u64().unwrap(),
            parts[i]["size"].as_u64().unwrap(),
        )
    };
    let (boot, root) = (span(0), span(1));
    let os = &doc["operating_systems"][0];
    assert_eq!(os["distro"], "rhel", "{doc}");
    assert!(os["mountpoints"]["/boot"]
        .as_str()
        .unwrap()
        .ends_with("partition 1"));

    // The plan: nothing written.
    let dry: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", s(&img)])).unwrap();
    assert_eq!(dry["applied"], false);
    assert_eq!(sha256(&img), original, "a dry run must not write");
    let ops: Vec<(&str, &str)> = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["op"].as_str().unwrap(), c["path"].as_str().unwrap()))
        .collect();
    for want in [
        ("renamed", "/etc/sysconfig/network-scripts/ifcfg-ens192"),
        ("removed", "/etc/udev/rules.d/70-persistent-net.rules"),
        ("modified", "/etc/fstab"),
        ("modified", "/boot/grub2/grubenv"),
    ] {
        assert!(ops.contains(&want), "{want:?} not planned: {ops:?}");
    }

    // The real run does exactly that.
    let real: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(real["applied"], true);
    assert_eq!(
        real["changes"], dry["changes"],
        "dry run and real run differ"
    );

    // Both filesystems are clean by xfs_repair's own reckoning.
    let bootp = dir.path().join("boot.xfs");
    let rootp = dir.path().join("root.xfs");
    extract(&img, boot.0, boot.1, &bootp);
    extract(&img, root.0, root.1, &rootp);
    repair_clean(&bootp, "/boot");
    repair_clean(&rootp, "/");

    // The network scripts: the original kept as its backup, the new
    // name holding DHCP, the old name gone; listed with good hashes.
    let ns = "/etc/sysconfig/network-scripts";
    let names = xfs_db_ls(&rootp, ns);
    for n in ["ifcfg-ens192.vmie.bak", "ifcfg-eth0"] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert!(!names.iter().any(|x| x == "ifcfg-ens192"), "{names:?}");
    let rules = xfs_db_ls(&rootp, "/etc/udev/rules.d");
    assert!(rules
        .iter()
        .any(|x| x == "70-persistent-net.rules.vmie.bak"));
    assert!(!rules.iter().any(|x| x == "70-persistent-net.rules"));
    let cat = |p: &str| ok(&["cat", s(&img), p]).into_bytes();
    let eth0 = cat(&format!("{ns}/ifcfg-eth0"));
    let eth0s = String::from_utf8_lossy(&eth0);
    assert!(
        eth0s.contains("BOOTPROTO=dhcp") && !eth0s.contains("IPADDR"),
        "{eth0s}"
    );
    let bak = cat(&format!("{ns}/ifcfg-ens192.vmie.bak"));
    assert!(String::from_utf8_lossy(&bak).contains("IPADDR="));
    assert!(!run(&["cat", s(&img), &format!("{ns}/ifcfg-ens192")])
        .status
        .success());
    // Every changed file and every backup: our reader and xfs_db agree.
    for c in real["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap();
        let mut paths = vec![c["backup"].as_str().unwrap().to_string()];
        match c["op"].as_str().unwrap() {
            "renamed" => paths.push(c["to"].as_str().unwrap().to_string()),
            "removed" => {}
            _ => paths.push(path.to_string()),
        }
        for p in paths {
            let (part, inside) = match p.strip_prefix("/boot") {
                Some(rest) => (&bootp, rest.to_string()),
                None => (&rootp, p.clone()),
            };
            assert!(
                xfs_db_read(part, &inside) == cat(&p),
                "{p}: xfs_db and vmie-fixup cat differ"
            );
        }
    }
    let env = cat("/boot/grub2/grubenv");
    assert_eq!(env.len(), 1024);

    // Nothing left to do; undo restores every byte.
    let again: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), original);
}

/// RHEL 8's default layout: the root on XFS in an LVM logical volume
/// (`xtask` LVM fixture `lvm-rhel8-xfs`). The dry run plans what the run
/// does, the LV (read where LVM maps it) is clean by xfs_repair, the
/// `/dev/mapper` names stay, a second run changes nothing, undo restores
/// every byte.
#[test]
fn xfs_root_on_lvm_is_fixed_end_to_end() {
    let f = xtask::lvm::fixture("lvm-rhel8-xfs")
        .unwrap_or_else(|e| panic!("building LVM fixture lvm-rhel8-xfs: {e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk0.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&f.disks[0])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let original = sha256(&img);
    let root_lv = f.manifest.lv("rhel", "root").unwrap();
    assert_eq!(root_lv.mapping.len(), 1, "a linear LV in one run");
    let root_off = root_lv.mapping[0].disk_offset;

    let inspect = ok(&["inspect", s(&img)]);
    assert!(
        inspect.contains("Linux on logical volume rhel/root"),
        "{inspect}"
    );
    let dry: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", s(&img)])).unwrap();
    assert_eq!(sha256(&img), original, "a dry run must not write");
    let real: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(real["applied"], true);
    assert_eq!(
        real["changes"], dry["changes"],
        "dry run and real run differ"
    );
    assert!(
        real["changes"].as_array().unwrap().len() >= 5,
        "{}",
        real["changes"]
    );

    let rootp = dir.path().join("root.xfs");
    extract(&img, root_off, root_lv.size, &rootp);
    repair_clean(&rootp, "the root LV");
    let lv = format!("{}:rhel/root", s(&img));
    let fstab = ok(&["cat", &lv, "/etc/fstab"]);
    assert!(fstab.contains("/dev/mapper/rhel-root   /"), "{fstab}");
    assert!(
        fstab.contains("UUID=4ae80101-0000-4000-8000-000000000001"),
        "/boot by UUID: {fstab}"
    );
    assert_eq!(
        xfs_db_read(&rootp, "/etc/fstab"),
        fstab.as_bytes(),
        "xfs_db and vmie-fixup cat differ"
    );
    let names = xfs_db_ls(&rootp, "/etc/lvm/devices");
    assert!(
        names.iter().any(|n| n == "system.devices.vmie.bak")
            && !names.iter().any(|n| n == "system.devices"),
        "the devices file is set aside: {names:?}"
    );

    let again: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), original, "undo restores every byte");
}

/// `--check-fs` on XFS: xfs_repair -n reads a sparse copy of each written
/// volume before and after the commit. A clean guest is fixed; a root where
/// /etc/hosts (a file the fixup neither reads nor writes, so our writer
/// cannot see it) has a wrong link count is refused before anything is
/// written.
#[test]
fn check_fs_runs_xfs_repair_on_xfs_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("rhel-xfs.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(fixture("rhel8-xfs"))
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let original = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let root = &doc["disks"][0]["partitions"][1];
    let (start, size) = (
        root["start"].as_u64().unwrap(),
        root["size"].as_u64().unwrap(),
    );

    // Damage /etc/hosts's link count (xfs_db recomputes the inode's CRC).
    let damaged = dir.path().join("damaged.raw");
    assert!(Command::new("cp")
        .args(["--sparse=always", s(&img), s(&damaged)])
        .status()
        .unwrap()
        .success());
    let part = dir.path().join("root.xfs");
    extract(&damaged, start, size, &part);
    let out = Command::new("xfs_db")
        .args([
            "-x",
            "-c",
            "path /etc/hosts",
            "-c",
            "write -d core.nlinkv2 5",
            s(&part),
        ])
        .output()
        .expect("xfs_db (xfsprogs)");
    assert!(out.status.success(), "{out:?}");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &std::fs::read(&part).unwrap(), start).unwrap();
    drop(f);
    let before = sha256(&damaged);
    for args in [
        vec!["--check-fs", s(&damaged)],
        vec!["--check-fs", "--dry-run", s(&damaged)],
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("xfs_repair"), "{args:?}: {err}");
        assert_eq!(sha256(&damaged), before, "{args:?} wrote to the image");
    }

    // The clean guest: checked before and after, committed, undone.
    let real: Value =
        serde_json::from_str(&ok(&["--check-fs", "--format", "json", s(&img)])).unwrap();
    assert_eq!(real["applied"], true, "{real}");
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), original);
}
