//! Issue 15's end-to-end case: `vmie-fixup hive merge IMAGE GUESTPATH
//! FILE.reg` edits the SYSTEM hive of a Windows guest image in place, on
//! NTFS, with a .reg file that makes the hive grow by many hbins. The dry
//! run writes nothing; afterwards ntfsfix -n finds nothing wrong, ntfs-3g
//! (ntfscat) reads the new hive and the backup, hivexsh opens the new hive
//! and hivexregedit exports the merged values, `SYSTEM.vmie.bak` equals the
//! original hive, a plain `write` and `copy-in` work on NTFS too, and undo
//! restores the image byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/cli.rs"]
mod common;

use common::{ok, run, s, sha256};

#[path = "common/windows.rs"]
mod windows;

/// Partition 1 of `disk` as its own file, exactly (ntfsfix looks for the
/// backup boot sector at the end of what it is given).
fn volume(disk: &Path, dir: &Path) -> PathBuf {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &table["partitiontable"]["partitions"][0];
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let out = dir.join("vol.ntfs");
    let st = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}"))
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn ntfscat(vol: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("ntfscat")
        .arg(vol)
        .arg(path)
        .output()
        .expect("ntfscat (Debian package ntfs-3g)");
    assert!(out.status.success(), "ntfscat {path}: {out:?}");
    out.stdout
}

fn ntfsfix_clean(vol: &Path) {
    let out = Command::new("ntfsfix").arg("-n").arg(vol).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("processed successfully") && !text.contains("FAILED"),
        "ntfsfix -n: {out:?}"
    );
}

#[test]
fn hive_merge_grows_the_system_hive_of_a_windows_image_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let disk = windows::windows_disk(dir.path(), "win2k22-software.reg");
    let original = sha256(&disk);
    let sys = "/Windows/System32/config/SYSTEM";
    let hive0 = ntfscat(&volume(&disk, dir.path()), sys);

    // 600 values of about 700 bytes each: some 400 KiB, many new hbins.
    let mut reg = String::from("Windows Registry Editor Version 5.00\n\n");
    reg.push_str("[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\vmie-test]\n\"Start\"=dword:00000000\n");
    for i in 0..600 {
        reg.push_str(&format!(
            "\"Value{i:04}\"=\"{}\"\n",
            "x".repeat(340 + i % 7)
        ));
    }
    let regfile = dir.path().join("grow.reg");
    std::fs::write(&regfile, &reg).unwrap();

    // Dry run: the plan, nothing written.
    let out = ok(&["hive", "merge", "--dry-run", s(&disk), sys, s(&regfile)]);
    assert!(out.contains("601 value(s) set"), "{out}");
    assert_eq!(sha256(&disk), original, "a dry run wrote");

    // The real merge.
    ok(&["hive", "merge", s(&disk), sys, s(&regfile)]);
    let vol = volume(&disk, dir.path());
    ntfsfix_clean(&vol);
    let hive1 = ntfscat(&vol, sys);
    assert!(
        hive1.len() >= hive0.len() + (300 << 10),
        "{} -> {} bytes",
        hive0.len(),
        hive1.len()
    );
    assert_eq!(
        ntfscat(&vol, &format!("{sys}.vmie.bak")),
        hive0,
        "the backup is the original"
    );
    // Our reader agrees with ntfs-3g.
    let out = run(&["cat", s(&disk), sys]);
    assert!(out.status.success());
    assert_eq!(out.stdout, hive1);

    // hivex opens the new hive and exports what was merged.
    let local = dir.path().join("SYSTEM");
    std::fs::write(&local, &hive1).unwrap();
    let out = Command::new("hivexregedit")
        .args(["--export", "--prefix", "HKEY_LOCAL_MACHINE\\SYSTEM"])
        .arg(&local)
        .arg("ControlSet001\\Services\\vmie-test")
        .output()
        .expect("hivexregedit (Debian package libwin-hivex-perl)");
    assert!(out.status.success(), "{out:?}");
    let export = String::from_utf8_lossy(&out.stdout);
    assert!(export.contains("\"Start\"=dword:00000000"), "{export}");
    assert!(
        export.contains("\"Value0599\"="),
        "{}",
        &export[..export.len().min(600)]
    );
    let out = Command::new("hivexsh")
        .arg(&local)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("hivexsh (Debian package libhivex-bin)");
    assert!(out.status.success(), "hivexsh refused the hive: {out:?}");

    // A second merge changes values in place; the backup stays the original.
    ok(&["hive", "merge", s(&disk), sys, s(&regfile)]);
    let vol = volume(&disk, dir.path());
    ntfsfix_clean(&vol);
    assert_eq!(ntfscat(&vol, &format!("{sys}.vmie.bak")), hive0);

    // write and copy-in on NTFS: a new file with a long name, replaced.
    let local = dir.path().join("unattend.xml");
    std::fs::write(&local, b"<unattend/>\n".repeat(5000)).unwrap();
    ok(&["copy-in", s(&disk), s(&local), "/Windows/vmie unattend.xml"]);
    let vol = volume(&disk, dir.path());
    ntfsfix_clean(&vol);
    assert_eq!(
        ntfscat(&vol, "/Windows/vmie unattend.xml"),
        b"<unattend/>\n".repeat(5000)
    );

    // Every run undone, byte for byte.
    ok(&["undo", "--all", s(&disk)]);
    assert_eq!(sha256(&disk), original);
}
