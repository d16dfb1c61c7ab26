//! The EFI system partition (FAT32, made by mkfs.fat in the `gpt-mixed`
//! fixture) through the CLI: mounted at /boot/efi in the guest's tree,
//! read with `ls`/`cat`, written with `write` and `copy-in` (a file with a
//! long name), checked by fsck.fat and read back by mtools, undone byte for
//! byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

#[path = "common/cli.rs"]
mod common;

use common::{fixture, ok, run, s, sha256};

/// `mtools` on the FAT volume at `offset` of `img` (mtools' `@@offset`).
fn mtools(tool: &str, img: &Path, offset: u64, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", img.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian package mtools): {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {out:?}");
    out.stdout
}

/// fsck.fat -n on a copy of the volume (it cannot read at an offset).
fn fsck_clean(img: &Path, offset: u64, size: u64, dir: &Path) {
    let part = dir.join("esp.fat");
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", part.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={offset}"))
        .arg(format!("count={size}"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&part)
        .output()
        .expect("fsck.fat (Debian package dosfstools)");
    assert!(out.status.success(), "fsck.fat -n: {out:?}");
}

#[test]
fn the_esp_is_read_and_written_through_the_guest_tree() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("uefi.raw");
    std::fs::copy(fixture("gpt-mixed"), &img).unwrap();
    let original = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let esp = &doc["disks"][0]["partitions"][0];
    assert_eq!(esp["filesystem"]["kind"], "vfat");
    let (start, size) = (
        esp["start"].as_u64().unwrap(),
        esp["size"].as_u64().unwrap(),
    );

    // Read: the ESP is mounted at /boot/efi of the Linux guest.
    let cfg = "/boot/efi/EFI/debian/grub.cfg";
    let ls = ok(&["ls", s(&img), "/boot/efi/EFI/debian"]);
    assert!(
        ls.contains("grub.cfg") && ls.contains("shimx64.efi"),
        "{ls}"
    );
    let ours = ok(&["cat", s(&img), cfg]);
    let theirs = mtools("mtype", &img, start, &["::/EFI/debian/grub.cfg"]);
    assert_eq!(ours.as_bytes(), theirs.as_slice());

    // Write: a dry run writes nothing; the real one replaces grub.cfg.
    let new_cfg = "search.fs_uuid 9e7af502-0000-4000-8000-000000000002 root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n";
    for dry in [true, false] {
        let mut args = vec!["write"];
        if dry {
            args.push("--dry-run");
        }
        args.extend([s(&img), cfg]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), new_cfg.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "{args:?}");
        if dry {
            assert_eq!(sha256(&img), original, "a dry run wrote");
        }
    }
    assert_eq!(
        mtools("mtype", &img, start, &["::/EFI/debian/grub.cfg"]),
        new_cfg.as_bytes()
    );

    // copy-in: a new file with a long name, several clusters long.
    let local = dir.path().join("payload");
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    ok(&[
        "copy-in",
        s(&img),
        s(&local),
        "/boot/efi/EFI/BOOT/vmie-fixup long name.efi",
    ]);
    assert_eq!(
        mtools(
            "mtype",
            &img,
            start,
            &["::/EFI/BOOT/vmie-fixup long name.efi"]
        ),
        payload
    );
    let listing = String::from_utf8(mtools("mdir", &img, start, &["::/EFI/BOOT"])).unwrap();
    assert!(listing.contains("vmie-fixup long name.efi"), "{listing}");
    // Looked up case-insensitively, as Windows and the kernel's vfat do.
    let out = run(&[
        "cat",
        s(&img),
        "/boot/efi/EFI/BOOT/VMIE-FIXUP LONG NAME.EFI",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, payload);
    fsck_clean(&img, start, size, dir.path());

    // Every write undone, byte for byte.
    ok(&["undo", "--all", s(&img)]);
    assert_eq!(sha256(&img), original);
}
