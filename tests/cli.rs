//! End-to-end tests of the `vmie-fixup` binary on images built by the real
//! tools (sfdisk, mkfs.*) from the recipes in fixtures/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "common/cli.rs"]
mod common;

use common::{fails, fixture, ok, run, s, sha256};

fn expected(name: &str) -> Value {
    let img = fixture(name);
    let p = img.with_extension("expected.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// sfdisk's own view of a disk, as an independent check of our numbers.
fn sfdisk_json(img: &Path) -> Value {
    let out = Command::new("sfdisk")
        .arg("-J")
        .arg(img)
        .output()
        .expect("sfdisk (Debian package fdisk)");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// blkid's own view of the filesystem at a byte offset.
fn blkid_at(img: &Path, offset: u64, size: u64) -> std::collections::HashMap<String, String> {
    let out = Command::new("blkid")
        .args([
            "-p",
            "-o",
            "export",
            "-O",
            &offset.to_string(),
            "-S",
            &size.to_string(),
        ])
        .arg(img)
        .output()
        .expect("blkid (Debian package util-linux)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check_against_real_tools(img: &Path, doc: &Value) {
    let disk = &doc["disks"][0];
    let sf = sfdisk_json(img);
    let sector = sf["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    let theirs = sf["partitiontable"]["partitions"].as_array().unwrap();
    let ours = disk["partitions"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "partition count vs sfdisk");
    for (o, t) in ours.iter().zip(theirs) {
        let node = t["node"].as_str().unwrap();
        let num: u64 = node.trim_start_matches(s(img)).parse().unwrap();
        assert_eq!(o["number"].as_u64().unwrap(), num, "{node}");
        assert_eq!(
            o["start"].as_u64().unwrap(),
            t["start"].as_u64().unwrap() * sector,
            "{node} start"
        );
        let size = o["size"].as_u64().unwrap();
        let is_ext = matches!(o["type"].as_str(), Some("0x05" | "0x0f" | "0x85"));
        if !is_ext {
            assert_eq!(size, t["size"].as_u64().unwrap() * sector, "{node} size");
        }
        if let Some(b) = t.get("bootable") {
            assert_eq!(
                o["bootable"].as_bool().unwrap(),
                b.as_bool().unwrap(),
                "{node} bootable"
            );
        }
        if let Some(u) = t.get("uuid").and_then(Value::as_str) {
            assert_eq!(
                o["partuuid"].as_str().unwrap().to_lowercase(),
                u.to_lowercase(),
                "{node} partuuid"
            );
        }
        if is_ext {
            assert!(o["filesystem"].is_null());
            continue;
        }
        let b = blkid_at(img, o["start"].as_u64().unwrap(), size);
        let fs = &o["filesystem"];
        match b.get("TYPE") {
            Some(kind) => {
                assert_eq!(
                    fs["kind"].as_str(),
                    Some(kind.as_str()),
                    "{node} kind vs blkid"
                );
                assert_eq!(
                    fs["uuid"].as_str(),
                    b.get("UUID").map(String::as_str),
                    "{node} uuid vs blkid"
                );
                assert_eq!(
                    fs["label"].as_str(),
                    b.get("LABEL").map(String::as_str),
                    "{node} label vs blkid"
                );
            }
            None => assert!(fs.is_null(), "{node}: blkid finds nothing, we found {fs}"),
        }
    }
}

#[test]
fn inspect_mbr_with_extended_and_logical_swap() {
    let img = fixture("demo");
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    assert_eq!(doc["schema_version"], 1);
    let disk = &doc["disks"][0];
    assert_eq!(disk["partition_table"], "mbr");
    assert_eq!(disk["size"].as_u64(), Some(4 << 30));
    let parts = disk["partitions"].as_array().unwrap();
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 5, 6]);
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[0]["type"], "0x83");
    assert_eq!(parts[0]["filesystem"]["kind"], "ext4");
    assert_eq!(parts[0]["filesystem"]["label"], "rootfs");
    assert_eq!(parts[1]["type"], "0x05");
    assert_eq!(parts[2]["type"], "0x82");
    assert_eq!(parts[2]["filesystem"]["kind"], "swap");
    assert_eq!(parts[3]["filesystem"]["label"], "data");
    check_against_real_tools(&img, &doc);
    // And against the recipe.
    let exp = expected("demo");
    let text = exp.to_string();
    for p in parts {
        if let Some(u) = p["filesystem"]["uuid"].as_str() {
            assert!(
                text.to_lowercase().contains(&u.to_lowercase()),
                "uuid {u} not in the recipe's expectations"
            );
        }
    }
    // Human output names the same things.
    let human = ok(&["inspect", s(&img)]);
    assert!(human.contains("partition table: mbr"), "{human}");
    assert!(human.contains("LABEL=\"rootfs\""), "{human}");
    assert!(human.contains("swap"), "{human}");
}

#[test]
fn inspect_gpt_with_every_filesystem_kind() {
    let img = fixture("gpt-mixed");
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let disk = &doc["disks"][0];
    assert_eq!(disk["partition_table"], "gpt");
    let kinds: Vec<&str> = disk["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["filesystem"]["kind"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(kinds, ["vfat", "xfs", "btrfs", "swap", "ntfs"]);
    check_against_real_tools(&img, &doc);
}

#[test]
fn inspect_whole_disk_filesystem_and_several_disks() {
    let demo = fixture("demo");
    let whole = fixture("whole-ext2");
    let doc: Value =
        serde_json::from_str(&ok(&["inspect", "--format", "json", s(&demo), s(&whole)])).unwrap();
    assert_eq!(doc["disks"].as_array().unwrap().len(), 2);
    let d = &doc["disks"][1];
    assert_eq!(d["partition_table"], "none");
    assert_eq!(d["partitions"].as_array().unwrap().len(), 0);
    assert_eq!(d["filesystem"]["kind"], "ext2");
}

/// NTFS volumes are read (case-insensitively, as Windows does) and written
/// through the overlay and the undo journal (the NTFS writer's own tests and
/// tests/ntfs.rs check the result with ntfs-3g's tools).
#[test]
fn ntfs_is_read_and_written() {
    let img = fixture("ntfs-files");
    let want = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/tiny/hello.txt"),
    )
    .unwrap();
    let listing = ok(&["ls", s(&img), "/"]);
    assert!(listing.lines().any(|l| l == "hello.txt"), "{listing}");
    assert_eq!(run(&["cat", s(&img), "/hello.txt"]).stdout, want);
    assert_eq!(run(&["cat", s(&img), "/HELLO.TXT"]).stdout, want);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ntfs.raw");
    std::fs::copy(&img, &copy).unwrap();
    let before = sha256(&copy);
    let out = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(["write", s(&copy), "/new.txt"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(run(&["cat", s(&copy), "/NEW.TXT"]).stdout, b"");
    assert_ne!(sha256(&copy), before);
    ok(&["undo", s(&copy)]);
    assert_eq!(sha256(&copy), before);
}

#[test]
fn cat_and_ls_read_inside_the_guest() {
    let img = fixture("demo");
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    let want = std::fs::read(tree.join("usr/lib/os-release")).unwrap();
    // /etc/os-release is a relative symlink to ../usr/lib/os-release, as on Debian.
    let got = run(&["cat", &format!("{}:1", s(&img)), "/etc/os-release"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, want);
    // By filesystem UUID.
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let uuid = doc["disks"][0]["partitions"][0]["filesystem"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run(&["cat", &format!("{}:{uuid}", s(&img)), "/etc/os-release"]).stdout,
        want
    );
    // ls
    let listing = ok(&["ls", &format!("{}:1", s(&img)), "/etc"]);
    for name in ["fstab", "hostname", "os-release"] {
        assert!(
            listing.lines().any(|l| l == name),
            "{name} missing from {listing}"
        );
    }
    let long = ok(&["ls", "-l", &format!("{}:1", s(&img)), "/etc"]);
    assert!(
        long.contains("os-release -> ../usr/lib/os-release"),
        "{long}"
    );
    // No VOL: the guest's whole tree (issue 18; this used to refuse).
    assert_eq!(ok(&["cat", s(&img), "/etc/os-release"]).as_bytes(), want);
    // A volume that does not exist.
    let err = fails(&["cat", &format!("{}:9", s(&img)), "/etc/os-release"], 1);
    assert!(err.contains("no partition 9"), "{err}");
    let err = fails(&["cat", &format!("{}:1", s(&img)), "/etc/nope"], 1);
    assert!(
        err.contains("/etc/nope") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn symlink_loops_and_escapes_are_clear_errors() {
    let img = fixture("hostile");
    let vol = format!("{}:1", s(&img));
    let err = fails(&["cat", &vol, "/loop-a"], 1);
    assert!(err.contains("too many levels of symbolic links"), "{err}");
    assert!(err.contains("partition 1"), "names the partition: {err}");
    let err = fails(&["cat", &vol, "/loop-self"], 1);
    assert!(err.contains("too many levels of symbolic links"), "{err}");
    // /up -> ../../.. is the guest's root: a directory, and its listing is the guest's.
    let err = fails(&["cat", &vol, "/up"], 1);
    assert!(err.contains("is a directory"), "{err}");
    let listing = ok(&["ls", &vol, "/up"]);
    assert!(listing.lines().any(|l| l == "loop-a"), "{listing}");
    // /escape -> ../../../../etc/os-release climbs past the root and lands on
    // the guest's own file, never the host's.
    let host = std::fs::read("/etc/os-release").unwrap_or_default();
    let got = run(&["cat", &vol, "/escape"]);
    if got.status.success() {
        assert_ne!(got.stdout, host, "read the host's file");
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/hostile");
        assert_eq!(
            got.stdout,
            std::fs::read(tree.join("etc/os-release")).unwrap()
        );
    } else {
        assert_eq!(got.status.code(), Some(1));
    }
}

/// A fixed VHD is written in place: its guest bytes are the file's first
/// bytes, so the run commits to the file and the journal undoes it as on a
/// raw image. The footer is untouched (qemu-img still reads the image as a
/// VHD of the same size), the guest converted to raw by qemu-img holds the
/// changes and is clean by e2fsck, and undo restores every byte.
#[test]
fn a_fixed_vhd_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &raw).unwrap();
    let vhd = dir.path().join("vm.vhd");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "vpc", "-o", "subformat=fixed"])
        .args([s(&raw), s(&vhd)])
        .status()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(st.success());
    let original = sha256(&vhd);
    let footer = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        b[b.len() - 512..].to_vec()
    };
    let footer0 = footer(&vhd);
    let info = |p: &Path| -> Value {
        let out = Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json", s(p)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let info0 = info(&vhd);

    let dry: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", s(&vhd)])).unwrap();
    assert_eq!(sha256(&vhd), original, "a dry run wrote");
    let real: Value =
        serde_json::from_str(&ok(&["--check-fs", "--format", "json", s(&vhd)])).unwrap();
    assert_eq!(real["applied"], true, "{real}");
    assert_eq!(real["changes"], dry["changes"]);
    assert_eq!(footer(&vhd), footer0, "the footer was written");
    let info1 = info(&vhd);
    assert_eq!(info1["format"], "vpc");
    assert_eq!(info1["virtual-size"], info0["virtual-size"]);

    // qemu-img's view of the guest: the changes, clean.
    let back = dir.path().join("back.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw", s(&vhd), s(&back)])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        ok(&["cat", s(&back), "/etc/fstab"]),
        ok(&["cat", s(&vhd), "/etc/fstab"])
    );
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&back)])).unwrap();
    let p1 = doc["disks"][0]["partitions"][0]["start"].as_u64().unwrap();
    e2fsck_clean(&back, p1);
    let again: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", s(&back)])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");

    ok(&["undo", s(&vhd)]);
    assert_eq!(sha256(&vhd), original);
}

/// qcow2, VMDK, VHD and VHDX images are read natively: everything that only reads
/// (inspect, ls, cat, a dry run) gives what it gives on the raw image; a
/// real run and copy-in, which would write, exit 1 with the conversion
/// command and leave the image alone.
#[test]
fn containers_are_read_and_refused_for_writing_with_the_conversion_command() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &raw).unwrap();
    let convert = |name: &str, args: &[&str]| {
        let out = dir.path().join(name);
        let st = Command::new("qemu-img")
            .args(["convert", "-O"])
            .args(args)
            .args([s(&raw), s(&out)])
            .status()
            .expect("qemu-img (Debian package qemu-utils)");
        assert!(st.success());
        out
    };
    let vmdk = convert("vm.vmdk", &["vmdk", "-o", "subformat=streamOptimized"]);
    let qcow = convert("vm.qcow2", &["qcow2", "-c"]);
    let vhd = convert("vm.vhd", &["vpc"]);
    let vhdx = convert("vm.vhdx", &["vhdx"]);
    // The same JSON as on the raw image, once the image's name is the raw
    // one's (volumes are named after the device: `vm.vmdk (VMDK
    // streamOptimized) partition 1`).
    let same = |img: &Path, args: &[&str]| {
        let mut a = args.to_vec();
        a.push(s(img));
        let mut got = ok(&a);
        for f in [
            " (VMDK streamOptimized)",
            " (qcow2 v3)",
            " (VHD dynamic)",
            " (VHDX dynamic)",
        ] {
            got = got.replace(&format!("{}{f}", s(img)), s(&raw));
        }
        let got = got.replace(s(img), s(&raw));
        let mut b = args.to_vec();
        b.push(s(&raw));
        let want = ok(&b);
        let mut got: Value = serde_json::from_str(&got).unwrap();
        let want: Value = serde_json::from_str(&want).unwrap();
        if let Some(d) = got.get_mut("disks") {
            // The format is the one field that must differ.
            let qemu = match img.extension().and_then(|e| e.to_str()) {
                Some("vhd") => "vpc",
                Some(e) => e,
                None => "raw",
            };
            assert_eq!(d[0]["format"], qemu, "{}", img.display());
            assert_eq!(want["disks"][0]["format"], "raw");
            d[0]["format"] = Value::from("raw");
        }
        if img.extension().is_some_and(|e| e == "vhd") {
            // qemu-img rounds a VHD's size up to a whole CHS geometry.
            let size = got["disks"][0]["size"].as_u64().unwrap();
            let raw_size = want["disks"][0]["size"].as_u64().unwrap();
            assert!(size >= raw_size && size - raw_size < 1 << 20, "{size}");
            got["disks"][0]["size"] = want["disks"][0]["size"].clone();
        }
        assert_eq!(got, want, "{args:?} on {}", img.display());
    };
    same(&vmdk, &["inspect", "--format", "json"]);
    same(&qcow, &["--dry-run", "--format", "json"]);
    // --check-fs runs the checkers on raw bytes at an offset: refused, named.
    let err = fails(&["--dry-run", "--check-fs", s(&qcow)], 1);
    assert!(
        err.contains("not a raw image") && err.contains("qemu-img convert -O raw"),
        "{err}"
    );
    same(&vhd, &["inspect", "--format", "json"]);
    same(&vhdx, &["inspect", "--format", "json"]);
    same(&vhdx, &["--dry-run", "--format", "json"]);
    for img in [&vmdk, &qcow, &vhd, &vhdx] {
        let vol = format!("{}:1", s(img));
        assert_eq!(
            ok(&["ls", &vol, "/etc"]),
            ok(&["ls", &format!("{}:1", s(&raw)), "/etc"])
        );
        assert_eq!(
            run(&["cat", &vol, "/etc/os-release"]).stdout,
            run(&["cat", &format!("{}:1", s(&raw)), "/etc/os-release"]).stdout
        );
    }
    let before = std::fs::read(&qcow).unwrap();
    let err = fails(&[s(&qcow)], 1);
    let advice = format!("qemu-img convert -O raw '{}' '{}'", s(&qcow), s(&raw));
    assert!(err.contains(&advice), "{err}");
    let local = dir.path().join("os-release");
    std::fs::write(&local, "ID=cloud\n").unwrap();
    let err = fails(
        &[
            "copy-in",
            &format!("{}:1", s(&qcow)),
            s(&local),
            "/etc/os-release",
        ],
        1,
    );
    assert!(err.contains(&advice), "{err}");
    assert_eq!(
        std::fs::read(&qcow).unwrap(),
        before,
        "the image is untouched"
    );
    // A real run on a VHDX is refused the same way, naming the format.
    let before = std::fs::read(&vhdx).unwrap();
    let err = fails(&[s(&vhdx)], 1);
    assert!(
        err.contains("this is a VHDX image")
            && err.contains(&format!(
                "qemu-img convert -O raw '{}' '{}'",
                s(&vhdx),
                s(&raw)
            )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&vhdx).unwrap(),
        before,
        "the image is untouched"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 6, "no journal or lock left: {names:?}");
}

/// `--output`: a streamOptimized VMDK (which cannot be written in place) is
/// fixed into a new raw image. The dry run creates nothing; the run leaves
/// the VMDK byte for byte as it was and makes the same changes as a run on
/// a raw copy; e2fsck is clean; undo of the copy gives exactly the VMDK's
/// guest bytes (qemu-img compare); an existing output or a wrong count of
/// outputs is refused, creating nothing.
#[test]
fn a_stream_optimized_vmdk_is_fixed_into_a_raw_copy_with_output() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &raw).unwrap();
    let vmdk = dir.path().join("vm.vmdk");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"])
        .args([s(&raw), s(&vmdk)])
        .status()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(st.success());
    let before = sha256(&vmdk);
    let out = dir.path().join("fixed.raw");

    let dry: Value = serde_json::from_str(&ok(&[
        "--dry-run",
        "--format",
        "json",
        "--output",
        s(&out),
        s(&vmdk),
    ]))
    .unwrap();
    assert!(!out.exists(), "a dry run created the output");
    assert!(!dry["changes"].as_array().unwrap().is_empty(), "{dry}");

    let doc: Value =
        serde_json::from_str(&ok(&["--format", "json", "--output", s(&out), s(&vmdk)])).unwrap();
    assert_eq!(doc["applied"], true, "{doc}");
    assert_eq!(sha256(&vmdk), before, "the VMDK was written");
    // The same changes as a run on the raw image itself.
    let direct: Value = serde_json::from_str(&ok(&["--format", "json", s(&raw)])).unwrap();
    let paths = |d: &Value| -> Vec<String> {
        d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(&doc), paths(&direct));
    assert_eq!(
        ok(&["cat", &format!("{}:1", s(&out)), "/etc/fstab"]),
        ok(&["cat", &format!("{}:1", s(&raw)), "/etc/fstab"])
    );
    let inspect: Value =
        serde_json::from_str(&ok(&["inspect", "--format", "json", s(&out)])).unwrap();
    let p1 = inspect["disks"][0]["partitions"][0]["start"]
        .as_u64()
        .unwrap();
    e2fsck_clean(&out, p1);
    // The copy is sparse: holes where the guest has zeros.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&out).unwrap();
    assert!(m.blocks() * 512 < m.len(), "the copy is not sparse");
    // Undo of the copy: exactly the VMDK's guest bytes.
    ok(&["undo", s(&out)]);
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw", s(&vmdk), s(&out)])
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "qemu-img compare: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );

    // Refusals, creating nothing.
    let err = fails(&["--output", s(&out), s(&vmdk)], 2);
    assert!(err.contains("already exists"), "{err}");
    let a = dir.path().join("a.raw");
    let b = dir.path().join("b.raw");
    let err = fails(&["--output", s(&a), "--output", s(&b), s(&vmdk)], 2);
    assert!(err.contains("the VM has 1 disk(s)"), "{err}");
    assert!(!a.exists() && !b.exists());
    // Without --output the refusal says how to use it.
    let err = fails(&[s(&vmdk)], 1);
    assert!(err.contains("vmie-fixup --output"), "{err}");
    assert_eq!(sha256(&vmdk), before);
}

/// An OSTree physical root (Fedora CoreOS style, made by mke2fs -d): two
/// deployments, the default boot entry's link naming the newer. `inspect`
/// finds the guest in that deployment (its release, host name and fstab),
/// and the fixup run edits the deployment's /etc/fstab in place on the
/// volume, e2fsck clean, the older deployment untouched, undo exact.
#[test]
fn an_ostree_deployment_is_inspected_and_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let os = "fedora-coreos";
    let deploy = |csum: &str, version: &str| {
        let d = tree.join(format!("ostree/deploy/{os}/deploy/{csum}"));
        for sub in ["etc", "usr/bin", "usr/lib", "var"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", d.join("bin")).unwrap();
        std::fs::write(
            d.join("usr/lib/os-release"),
            format!("NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID={version}\nVARIANT_ID=coreos\nPRETTY_NAME=\"Fedora CoreOS {version}\"\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", d.join("etc/os-release")).unwrap();
        std::fs::write(d.join("etc/hostname"), "fcos\n").unwrap();
        std::fs::write(d.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(
            d.join("etc/fstab"),
            "LABEL=root / xfs defaults 0 0\n/dev/sdb1 /var/data ext4 defaults 0 2\n",
        )
        .unwrap();
        d
    };
    deploy("1111aaaa.0", "38");
    deploy("2222bbbb.0", "39");
    std::fs::create_dir_all(tree.join(format!("ostree/deploy/{os}/var"))).unwrap();
    let boot = tree.join(format!("ostree/boot.1/{os}/bootcsum"));
    std::fs::create_dir_all(&boot).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../deploy/{os}/deploy/2222bbbb.0"),
        boot.join("0"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!("../../../deploy/{os}/deploy/1111aaaa.0"),
        boot.join("1"),
    )
    .unwrap();
    let img = dir.path().join("fcos.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let o = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-d"])
        .arg(&tree)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let g = &doc["operating_systems"][0];
    assert_eq!(g["distro"], "fedora", "{doc:#}");
    assert_eq!(
        g["major_version"], 39,
        "the default deployment, not the older one"
    );
    assert_eq!(g["hostname"], "fcos");
    let warned = g["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("/ostree/deploy/fedora-coreos/deploy/2222bbbb.0")
    });
    assert!(warned, "{g:#}");

    let before = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    let paths: Vec<&str> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/etc/fstab"), "{doc:#}");
    e2fsck_clean(&img, 0);
    let cat = |p: &str| {
        let o = Command::new("debugfs")
            .args(["-R", &format!("cat {p}")])
            .arg(&img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let new = cat(&format!("/ostree/deploy/{os}/deploy/2222bbbb.0/etc/fstab"));
    assert!(new.contains("nofail"), "{new}");
    assert!(cat(&format!(
        "/ostree/deploy/{os}/deploy/2222bbbb.0/etc/fstab.vmie.bak"
    ))
    .contains("/dev/sdb1 /var/data ext4 defaults 0 2"));
    let old = cat(&format!("/ostree/deploy/{os}/deploy/1111aaaa.0/etc/fstab"));
    assert_eq!(
        old,
        "LABEL=root / xfs defaults 0 0\n/dev/sdb1 /var/data ext4 defaults 0 2\n"
    );
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), before);
}

/// An OVA (a streamOptimized boot disk and a data disk, listed data first in
/// the OVF and the archive, the boot disk at SCSI address 0) and a
/// twoGbMaxExtentSparse VMDK are read without conversion: `inspect` and a
/// dry run give what they give on the raw images, boot disk first; a real
/// run on the OVA exits 1 saying how to extract and convert it.
#[test]
fn ova_and_split_vmdk_are_read_like_the_raw_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("vm.raw");
    std::fs::copy(fixture("demo"), &raw).unwrap();
    let data = d.join("data.raw");
    std::fs::copy(fixture("whole-ext2"), &data).unwrap();
    let qemu = |args: &[&str]| {
        let st = Command::new("qemu-img")
            .args(args)
            .status()
            .expect("qemu-img (Debian package qemu-utils)");
        assert!(st.success(), "qemu-img {args:?}");
    };
    let so = ["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"];
    qemu(&[&so[..], &[s(&raw), s(&d.join("zz-boot.vmdk"))]].concat());
    qemu(&[&so[..], &[s(&data), s(&d.join("aa-data.vmdk"))]].concat());
    let disk = |file: &str, id: &str, addr: u32| {
        format!(
            "<Item><rasd:AddressOnParent>{addr}</rasd:AddressOnParent>\
             <rasd:HostResource>ovf:/disk/{id}</rasd:HostResource>\
             <rasd:InstanceID>1{addr}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>\
             <rasd:ResourceType>17</rasd:ResourceType></Item><!-- {file} -->"
        )
    };
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
<References><File ovf:href="aa-data.vmdk" ovf:id="f1"/><File ovf:href="zz-boot.vmdk" ovf:id="f2"/></References>
<DiskSection><Info>disks</Info><Disk ovf:diskId="data" ovf:fileRef="f1" ovf:capacity="1"/><Disk ovf:diskId="boot" ovf:fileRef="f2" ovf:capacity="4"/></DiskSection>
<VirtualSystem ovf:id="vm"><Info>vm</Info><VirtualHardwareSection><Info>hw</Info>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
{}{}
</VirtualHardwareSection></VirtualSystem></Envelope>
"#,
        disk("aa-data.vmdk", "data", 1),
        disk("zz-boot.vmdk", "boot", 0)
    );
    std::fs::write(d.join("vm.ovf"), ovf).unwrap();
    let ova = d.join("vm.ova");
    let st = Command::new("tar")
        .args([
            "-cf",
            s(&ova),
            "-C",
            s(d),
            "vm.ovf",
            "aa-data.vmdk",
            "zz-boot.vmdk",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    for args in [
        &["inspect", "--format", "json"][..],
        &["--dry-run", "--format", "json"],
    ] {
        let got = ok(&[args, &[s(&ova)]].concat())
            .replace(
                &format!("{} member zz-boot.vmdk (VMDK streamOptimized)", s(&ova)),
                s(&raw),
            )
            .replace(
                &format!("{} member aa-data.vmdk (VMDK streamOptimized)", s(&ova)),
                s(&data),
            );
        let mut got: Value = serde_json::from_str(&got).unwrap();
        if got.get("disks").is_some() {
            // Both disks are the .ova; the member tells them apart.
            assert_eq!(got["disks"][0]["path"], s(&ova));
            assert_eq!(got["disks"][1]["path"], s(&ova));
            assert_eq!(got["disks"][0]["member"], "zz-boot.vmdk");
            assert_eq!(got["disks"][1]["member"], "aa-data.vmdk");
            for d in 0..2 {
                assert_eq!(got["disks"][d]["format"], "vmdk");
                got["disks"][d]["format"] = Value::from("raw");
                got["disks"][d].as_object_mut().unwrap().remove("member");
            }
            got["disks"][0]["path"] = Value::from(s(&raw));
            got["disks"][1]["path"] = Value::from(s(&data));
        }
        let want: Value =
            serde_json::from_str(&ok(&[args, &[s(&raw), s(&data)]].concat())).unwrap();
        assert_eq!(got, want, "{args:?} on the OVA");
    }
    let before = std::fs::read(&ova).unwrap();
    let err = fails(&[s(&ova)], 1);
    assert!(
        err.contains("OVA") && err.contains(&format!("tar -xf '{}'", s(&ova))),
        "{err}"
    );
    assert_eq!(std::fs::read(&ova).unwrap(), before, "the OVA is untouched");
    // A split sparse VMDK: a descriptor and two 2 GiB extents.
    let split = d.join("split.vmdk");
    qemu(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        s(&raw),
        s(&split),
    ]);
    let got = ok(&["inspect", "--format", "json", s(&split)])
        .replace(
            &format!("{} (VMDK twoGbMaxExtentSparse)", s(&split)),
            s(&raw),
        )
        .replace(s(&split), s(&raw));
    let mut got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["disks"][0]["format"], "vmdk");
    got["disks"][0]["format"] = Value::from("raw");
    let want: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&raw)])).unwrap();
    assert_eq!(got, want, "inspect on the twoGbMaxExtentSparse VMDK");
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    fails(&["inspect"], 2);
    fails(&["frobnicate"], 2);
    let help = ok(&["--help"]);
    assert!(
        help.contains("EXIT CODES") && help.contains("3  I/O"),
        "{help}"
    );
}

#[test]
fn undo_without_a_journal_is_refused() {
    let img = fixture("whole-ext2");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("x.raw");
    std::fs::copy(&img, &copy).unwrap();
    let err = fails(&["undo", s(&copy)], 1);
    assert!(err.contains("nothing to undo"), "{err}");
}

#[test]
fn truncated_image_gives_a_clear_error_not_a_panic() {
    let img = fixture("demo");
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.raw");
    std::fs::copy(&img, &cut).unwrap();
    // Cut inside partition 1's filesystem.
    let f = std::fs::OpenOptions::new().write(true).open(&cut).unwrap();
    f.set_len(64 << 20).unwrap();
    let out = run(&["inspect", s(&cut)]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{:?}", out.status);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cut.raw"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let out = run(&["cat", &format!("{}:1", s(&cut)), "/etc/os-release"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{:?}", out.status);
}

#[test]
fn rules_list_and_check() {
    let list = ok(&["rules", "list"]);
    for id in [
        "linux-fstab",
        "linux-network-dhcp",
        "linux-grub-default-timeout",
        "linux-initramfs-drivers",
    ] {
        assert!(list.contains(id), "{id} missing from:\n{list}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "[[rule]]\nid = \"site-timeout\"\ndescription = \"d\"\nwhen = { os = \"linux\" }\nactions = [{ type = \"grub\", timeout = 3 }]\n",
    )
    .unwrap();
    let d = s(dir.path());
    assert!(ok(&["rules", "check", d]).contains("1 rule(s)"));
    let mine = ok(&["rules", "list", "--no-default-rules", "--rules", d]);
    assert!(
        mine.contains("site-timeout") && !mine.contains("linux-fstab"),
        "{mine}"
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nid = \"x\"\ndescription = \"d\"\nactions = [{ type = \"reboot\" }]\n",
    )
    .unwrap();
    let err = fails(&["rules", "check", d], 1);
    assert!(
        err.contains("bad.toml:4:") && err.contains("reboot"),
        "{err}"
    );
}

/// `e2fsck -fn` of the ext filesystem at `offset` of `img`: must be clean.
fn e2fsck_clean(img: &Path, offset: u64) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={offset}", img.display()))
        .output()
        .expect("e2fsck (Debian package e2fsprogs)");
    assert!(
        out.status.success(),
        "e2fsck -fn found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn debugfs_cat(img: &Path, offset: u64, path: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(format!("{}?offset={offset}", img.display()))
        .output()
        .expect("debugfs (Debian package e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn fix_run_end_to_end_on_the_debian_demo() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &img).unwrap();
    let original = sha256(&img);
    let p1 = 1 << 20; // partition 1 starts at 1 MiB

    // Dry run: the plan, nothing written, no journal.
    let dry: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", s(&img)])).unwrap();
    assert_eq!(dry["schema_version"], 1);
    assert_eq!(dry["applied"], false);
    assert_eq!(sha256(&img), original, "a dry run must not write");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "no journal after a dry run"
    );
    let planned: Vec<(String, String)> = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["diff"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for p in [
        "/etc/fstab",
        "/etc/network/interfaces",
        "/etc/default/grub",
        "/boot/grub/grub.cfg",
    ] {
        assert!(
            planned.iter().any(|(x, _)| x == p),
            "{p} not planned: {planned:?}"
        );
    }
    assert_eq!(dry["operating_systems"][0]["distro"], "debian");
    // One entry per file (issue 18): grub.cfg lists every rule that changed
    // it, and root= is the root-uuid rule's step.
    let mut paths: Vec<&String> = planned.iter().map(|(p, _)| p).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        paths.len(),
        planned.len(),
        "a file reported twice: {planned:?}"
    );
    let cfg = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/boot/grub/grub.cfg")
        .unwrap();
    let rules: Vec<&str> = cfg["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(rules.contains(&"linux-kernel-root-uuid"), "{rules:?}");
    let root_step = cfg["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["rule"] == "linux-kernel-root-uuid")
        .unwrap();
    assert!(
        root_step["diff"].as_str().unwrap().contains("root=UUID="),
        "{root_step}"
    );

    // The real run: same changes, committed with an undo journal.
    let real: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(real["applied"], true);
    let done: Vec<(String, String)> = real["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["diff"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(done, planned, "a dry run's changes equal the real run's");
    assert_eq!(real["undo_journal"].as_array().unwrap().len(), 1);

    // The filesystem's own checker and reader agree.
    e2fsck_clean(&img, p1);
    let fstab = debugfs_cat(&img, p1, "/etc/fstab");
    assert!(
        fstab.contains("UUID=de0a0001-0000-4000-8000-000000000001"),
        "{fstab}"
    );
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    assert_eq!(
        debugfs_cat(&img, p1, "/etc/fstab.vmie.bak"),
        std::fs::read_to_string(tree.join("etc/fstab")).unwrap()
    );
    assert!(debugfs_cat(&img, p1, "/etc/network/interfaces").contains("iface eth0 inet dhcp"));

    // A second run changes nothing.
    let again: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["applied"], false);

    // Undo restores the image byte for byte.
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), original);
}

#[test]
fn fix_run_refuses_a_disk_without_a_linux_root() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("data.raw");
    std::fs::copy(fixture("whole-ext2"), &img).unwrap();
    let before = sha256(&img);
    let out = run(&["--format", "json", s(&img)]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["preflight"]
            .to_string()
            .contains("No bootable partition found"),
        "{doc}"
    );
    assert_eq!(sha256(&img), before);
}

#[test]
fn fix_run_end_to_end_on_a_rhel8_guest_with_separate_boot() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("rhel.raw");
    std::fs::copy(fixture("rhel8"), &img).unwrap();
    let original = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let parts = doc["disks"][0]["partitions"].as_array().unwrap();
    let boot = parts[0]["start"].as_u64().unwrap();
    let root = parts[1]["start"].as_u64().unwrap();
    let os = &doc["operating_systems"][0];
    assert_eq!(os["distro"], "rhel");
    assert_eq!(
        (os["major_version"].as_u64(), os["minor_version"].as_u64()),
        (Some(8), Some(6))
    );
    assert!(os["mountpoints"]["/boot"]
        .as_str()
        .unwrap()
        .ends_with("partition 1"));

    let real: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(real["applied"], true);
    e2fsck_clean(&img, boot);
    e2fsck_clean(&img, root);
    let eth0 = debugfs_cat(&img, root, "/etc/sysconfig/network-scripts/ifcfg-eth0");
    assert!(
        eth0.contains("BOOTPROTO=dhcp") && !eth0.contains("IPADDR") && !eth0.contains("HWADDR"),
        "{eth0}"
    );
    assert!(debugfs_cat(
        &img,
        root,
        "/etc/sysconfig/network-scripts/ifcfg-ens192.vmie.bak"
    )
    .contains("IPADDR=10.20.30.40"));
    assert_eq!(
        debugfs_cat(&img, root, "/etc/sysconfig/network-scripts/ifcfg-ens192"),
        ""
    );
    let env = debugfs_cat(&img, boot, "/grub2/grubenv");
    assert_eq!(env.len(), 1024);
    assert!(
        env.contains("saved_entry=4ae8a1b2c3d4-4.18.0-372.el8.x86_64\n"),
        "{env}"
    );
    assert!(
        env.contains("root=UUID=4ae80002-0000-4000-8000-000000000002"),
        "{env}"
    );
    assert!(debugfs_cat(&img, root, "/etc/fstab").contains("#vmie-fixup: //fileserver/backup"));
    let again: Value = serde_json::from_str(&ok(&["--format", "json", s(&img)])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), original);
}

fn preflight_ids(doc: &Value, severity: &str) -> Vec<String> {
    doc["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["severity"] == severity)
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn preflight_passes_clean_guests_and_names_what_would_fail() {
    for name in ["demo", "rhel8"] {
        let doc: Value =
            serde_json::from_str(&ok(&["inspect", "--format", "json", s(&fixture(name))])).unwrap();
        assert!(
            preflight_ids(&doc, "error").is_empty(),
            "{name}: {}",
            doc["preflight"]
        );
        assert_eq!(doc["operating_systems"][0]["arch"], "x86_64", "{name}");
        assert!(preflight_ids(&doc, "info").contains(&"license".to_string()));
    }
    // Two Linux roots on one VM: the service's "Multiple directories found".
    let doc: Value = serde_json::from_str(&ok(&[
        "inspect",
        "--format",
        "json",
        s(&fixture("demo")),
        s(&fixture("rhel8")),
    ]))
    .unwrap();
    assert!(
        preflight_ids(&doc, "error").contains(&"multiple-directories".to_string()),
        "{}",
        doc["preflight"]
    );
    // A Linux root on a GPT disk.
    let doc: Value = serde_json::from_str(&ok(&[
        "inspect",
        "--format",
        "json",
        s(&fixture("gpt-debian")),
    ]))
    .unwrap();
    assert!(
        preflight_ids(&doc, "error").contains(&"gpt-root".to_string()),
        "{}",
        doc["preflight"]
    );
    // A Linux root on XFS (read since vmie-xfs) on a GPT, UEFI disk: found,
    // inspected, and refused for its partitioning and firmware; the Btrfs
    // volume beside it is not read.
    let doc: Value = serde_json::from_str(&ok(&[
        "inspect",
        "--format",
        "json",
        s(&fixture("gpt-mixed")),
    ]))
    .unwrap();
    assert_eq!(doc["operating_systems"][0]["distro"], "ubuntu", "{doc}");
    let errors = preflight_ids(&doc, "error");
    assert!(errors.contains(&"gpt-root".to_string()), "{errors:?}");
    assert!(errors.contains(&"uefi-linux".to_string()), "{errors:?}");
    assert!(preflight_ids(&doc, "info").contains(&"volume-not-read".to_string()));
    // And a fixup run refuses such VMs, writing nothing.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    std::fs::copy(fixture("demo"), &a).unwrap();
    std::fs::copy(fixture("rhel8"), &b).unwrap();
    let before = (sha256(&a), sha256(&b));
    let out = run(&[s(&a), s(&b)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!((sha256(&a), sha256(&b)), before);
}

fn realdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata")
        .join(rel)
}

fn hivexregedit_export(file: &Path) -> String {
    let out = Command::new("hivexregedit")
        .args(["--export", s(file), "\\"])
        .output()
        .expect("hivexregedit (Debian packages libhivex-bin libwin-hivex-perl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn hive_merge_get_export_and_bcd_show() {
    let dir = tempfile::tempdir().unwrap();
    let hive = dir.path().join("SYSTEM");
    std::fs::copy(realdata("hivex/images/minimal"), &hive).unwrap();
    let reg = realdata("virt-v2v/test-data/phony-guests/windows-system.reg");
    let before = std::fs::read(&hive).unwrap();

    // Dry run: the counts, nothing written.
    let dry = ok(&["hive", "merge", "--dry-run", s(&hive), s(&reg)]);
    assert!(
        dry.contains("value(s) set") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(std::fs::read(&hive).unwrap(), before);

    // The same merge as hivexregedit --merge, checked by hivex's own export.
    ok(&["hive", "merge", s(&hive), s(&reg)]);
    let backup = dir.path().join("SYSTEM.vmie.bak");
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        before,
        "the original is kept"
    );
    let theirs = dir.path().join("SYSTEM.hivex");
    std::fs::copy(realdata("hivex/images/minimal"), &theirs).unwrap();
    let st = Command::new("hivexregedit")
        .args([
            "--merge",
            "--prefix",
            "HKEY_LOCAL_MACHINE\\SYSTEM",
            s(&theirs),
            s(&reg),
        ])
        .status()
        .expect("hivexregedit");
    assert!(st.success());
    assert_eq!(hivexregedit_export(&hive), hivexregedit_export(&theirs));
    // Our export of the result equals hivex's export of it (ASCII names).
    assert_eq!(
        ok(&["hive", "export", s(&hive)]),
        hivexregedit_export(&hive)
    );

    let sel = ok(&["hive", "get", s(&hive), "Select", "Current"]);
    assert!(sel.starts_with("Current [REG_DWORD] = "), "{sel}");
    let err = fails(&["hive", "get", s(&hive), "No\\Such\\Key"], 1);
    assert!(err.contains("SYSTEM"), "names the hive: {err}");

    let bcd = ok(&["bcd", "show", s(&realdata("windeploy-linux/BCD"))]);
    assert!(bcd.contains("Windows Resume Application"), "{bcd}");
    // Not a hive: refused with the file's name.
    let err = fails(&["bcd", "show", s(&reg)], 1);
    assert!(err.contains("windows-system.reg"), "{err}");
}

#[test]
fn write_and_copy_in_go_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.raw");
    std::fs::copy(fixture("hostile"), &img).unwrap();
    let original = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let p1 = doc["disks"][0]["partitions"][0]["start"].as_u64().unwrap();
    let vol = format!("{}:1", s(&img));

    // write: contents from standard input; --dry-run writes nothing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(["write", "--dry-run", &vol, "/etc/hostname"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"cloud-vm\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("would create /etc/hostname"));
    assert_eq!(sha256(&img), original);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(["write", &vol, "/etc/hostname"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"cloud-vm\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(debugfs_cat(&img, p1, "/etc/hostname"), "cloud-vm\n");

    // copy-in replaces through a symlink-free path and keeps the inode's owner/mode.
    let local = dir.path().join("os-release");
    std::fs::write(&local, "ID=cloud\n").unwrap();
    ok(&["copy-in", &vol, s(&local), "/etc/os-release"]);
    assert_eq!(debugfs_cat(&img, p1, "/etc/os-release"), "ID=cloud\n");
    e2fsck_clean(&img, p1);

    // Writing where a directory stands is refused; a symlink loop too.
    fails(&["copy-in", &vol, s(&local), "/etc"], 1);
    fails(&["copy-in", &vol, s(&local), "/loop-a"], 1);

    ok(&["undo", "--all", s(&img)]);
    assert_eq!(sha256(&img), original);
}

/// Issue 18: a wrong choice names the valid ones, and what a volume is.
#[test]
fn refusals_name_the_cause_and_the_choices() {
    let img = fixture("demo");
    let i = s(&img);
    let err = fails(&["ls", &format!("{i}:7"), "/"], 1);
    assert!(
        err.contains("no partition 7")
            && err.contains(
                "1 (ext4 \"rootfs\"), 2 (extended), 5 (swap \"swap\"), 6 (ext4 \"data\")"
            ),
        "{err}"
    );
    let err = fails(&["ls", &format!("{i}:2"), "/"], 1);
    assert!(
        err.contains("extended partition") && err.contains("(5, 6)"),
        "{err}"
    );
    let err = fails(&["ls", &format!("{i}:5"), "/"], 1);
    assert!(err.contains("swap area: it holds no files"), "{err}");
    let err = fails(&["inspect", i, i], 1);
    assert!(err.contains("are the same image file"), "{err}");
    let err = fails(&["--dry-run", i, i], 1);
    assert!(err.contains("are the same image file"), "{err}");
}

/// stdin, stdout and stderr of one run with `input` on standard input.
fn run_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input).unwrap();
    child.wait_with_output().unwrap()
}

/// Issue 18: a missing image is a usage error (2) for every command, named
/// once, with no OS error repeated.
#[test]
fn a_missing_image_exits_2_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    std::fs::write(&local, "x").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["inspect", "nosuch.raw"],
        vec!["ls", "nosuch.raw", "/"],
        vec!["ls", "nosuch.raw:1", "/"],
        vec!["cat", "nosuch.raw", "/etc/fstab"],
        vec!["copy-in", "nosuch.raw", s(&local), "/x"],
        vec!["undo", "nosuch.raw"],
        vec!["hive", "get", "nosuch.raw:1", "/SYSTEM", "Select"],
        vec!["bcd", "show", "nosuch.raw", "/Boot/BCD"],
        vec!["--dry-run", "nosuch.raw"],
    ];
    for args in cases {
        let err = fails(&args, 2);
        assert!(err.contains("nosuch.raw: no such"), "{args:?}: {err}");
        assert!(!err.contains("os error"), "{args:?}: {err}");
    }
    let out = run_with_input(&["write", "nosuch.raw", "/x"], b"x");
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 18: `rules check` (and `--rules`) take one .toml file as well as
/// a directory; a path that is neither is named.
#[test]
fn rules_check_takes_a_file() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/linux.toml");
    let out = ok(&["rules", "check", s(&shipped)]);
    assert!(out.contains("rule(s) in 1 file: all valid"), "{out}");
    let list = ok(&[
        "rules",
        "list",
        "--no-default-rules",
        "--rules",
        s(&shipped),
    ]);
    assert!(list.contains("linux-fstab"), "{list}");
    let err = fails(&["rules", "check", "/nonexistent/rules"], 2);
    assert!(
        err.contains("/nonexistent/rules: no such rule pack"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

/// Issue 18: without :VOL, ls/cat see the guest's whole tree (root plus
/// its fstab mounts), as virt-ls/virt-cat do; with :VOL, that one volume.
#[test]
fn guest_tree_ls_and_cat() {
    let img = fixture("demo");
    let i = s(&img);
    let trees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees");
    // /srv/data is partition 6, mounted by the guest's fstab.
    let listing = ok(&["ls", i, "/srv/data"]);
    assert_eq!(listing, "dir\nhello.txt\nlost+found\n", "{listing}");
    // On partition 1 alone it is the empty mountpoint.
    assert_eq!(ok(&["ls", &format!("{i}:1"), "/srv/data"]), "");
    // cat takes several paths, across filesystems, in order.
    let both = run(&["cat", i, "/etc/hostname", "/srv/data/hello.txt"]);
    assert!(both.status.success());
    let mut want = std::fs::read(trees.join("demo/etc/hostname")).unwrap();
    want.extend(std::fs::read(trees.join("tiny/hello.txt")).unwrap());
    assert_eq!(both.stdout, want);
    // -l has times, -h human sizes (and -h is not help for ls).
    let long = ok(&["ls", "-lh", i, "/srv/data"]);
    let line = long.lines().find(|l| l.ends_with(" lost+found")).unwrap();
    assert!(line.starts_with("drwx------"), "{long}");
    assert!(line.contains(" 16K "), "{long}");
    let year = line.split_whitespace().nth(4).unwrap();
    assert!(year.len() == 10 && year.starts_with("20"), "{long}");
    assert!(ok(&["ls", "--help"]).contains("--human-readable"));
    // -R: each directory under a heading, symlinks not followed.
    let rec = ok(&["ls", "-R", i, "/srv/data"]);
    assert!(rec.starts_with("/srv/data:\n"), "{rec}");
    assert!(rec.contains("\n/srv/data/dir:\n"), "{rec}");
    assert!(rec.contains("nested.txt"), "{rec}");
    // JSON: every field, full paths, symlink targets.
    let doc: Value =
        serde_json::from_str(&ok(&["ls", "-R", "--format", "json", i, "/srv/data"])).unwrap();
    assert_eq!(doc["schema_version"], 1);
    let entries = doc["entries"].as_array().unwrap();
    let hello = entries
        .iter()
        .find(|e| e["path"] == "/srv/data/hello.txt")
        .unwrap();
    assert_eq!(
        hello["size"].as_u64().unwrap(),
        std::fs::metadata(trees.join("tiny/hello.txt"))
            .unwrap()
            .len()
    );
    assert_eq!(hello["type"], "regular");
    let link = entries
        .iter()
        .find(|e| e["path"] == "/srv/data/dir/link-to-hello")
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert!(link["target"].as_str().is_some(), "{link}");
    // -v says what was read and decided, on stderr, with timings.
    let out = run(&["-v", "ls", i, "/srv/data"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Linux roots:") && err.contains("mounted"),
        "{err}"
    );
    assert!(err.contains("s] "), "timings: {err}");
}

/// Issue 18: copy-in and write on the whole tree go to the filesystem the
/// path lands on, through the self-check and the undo journal.
#[test]
fn guest_tree_writes_land_on_the_mounted_volume() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &img).unwrap();
    let original = sha256(&img);
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let parts = doc["disks"][0]["partitions"].as_array().unwrap();
    let start = |n: u64| {
        parts.iter().find(|p| p["number"] == n).unwrap()["start"]
            .as_u64()
            .unwrap()
    };
    let (p1, p6) = (start(1), start(6));
    let local = dir.path().join("note");
    std::fs::write(&local, "on the data volume\n").unwrap();
    let dry = ok(&["copy-in", "-n", s(&img), s(&local), "/srv/data/note.txt"]);
    assert!(
        dry.contains("partition 6: would create /srv/data/note.txt"),
        "{dry}"
    );
    assert_eq!(sha256(&img), original);
    let out = ok(&["copy-in", s(&img), s(&local), "/srv/data/note.txt"]);
    assert!(out.contains("undo journal"), "{out}");
    // On partition 6 at its root, not on the root filesystem's mountpoint.
    assert_eq!(debugfs_cat(&img, p6, "/note.txt"), "on the data volume\n");
    e2fsck_clean(&img, p6);
    e2fsck_clean(&img, p1);
    // write, quiet: nothing on stdout.
    let out = run_with_input(&["-q", "write", s(&img), "/etc/hostname"], b"cloud\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(debugfs_cat(&img, p1, "/etc/hostname"), "cloud\n");
    // Refused: a directory is not replaced, and it says so in words.
    let err = fails(&["copy-in", s(&img), s(&local), "/srv/data/dir"], 1);
    assert!(err.contains("is a directory, not a regular file"), "{err}");
    ok(&["undo", "--all", s(&img)]);
    assert_eq!(sha256(&img), original);
}

/// Issue 18: `bcd show` prints bcdedit's names, and refuses a hive that is
/// not a BCD store.
#[test]
fn bcd_show_uses_bcdedit_names() {
    let bcd = ok(&["bcd", "show", s(&realdata("windeploy-linux/BCD"))]);
    for want in [
        "Windows Boot Manager",
        "identifier              {bootmgr} ({9dea862c-5cdd-4e70-acc1-f32b344d4795})",
        "default                 {default}",
        "displayorder            {default}",
        "toolsdisplayorder       {memdiag}",
        "timeout                 30",
        "Windows Boot Loader",
        "systemroot              \\windows",
        "path                    \\windows\\system32\\winload.exe",
        "inherit                 {bootloadersettings}",
        "bootems                 No",
    ] {
        assert!(bcd.contains(want), "{want:?} missing from:\n{bcd}");
    }
    // No raw element ids where a name is known.
    assert!(!bcd.contains("16000020"), "{bcd}");
    let hive = realdata("hivex/images/minimal");
    let err = fails(&["bcd", "show", s(&hive)], 1);
    assert!(
        err.contains("minimal: not a BCD store") && err.contains("\\Objects"),
        "{err}"
    );
}

/// Issue 18: hive commands read (and merge writes) a hive inside a disk
/// image, through the overlay, with a backup and the undo journal.
#[test]
fn hive_commands_work_inside_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.raw");
    std::fs::copy(fixture("hostile"), &img).unwrap();
    let vol = format!("{}:1", s(&img));
    let hive = realdata("hivex/images/minimal");
    ok(&["copy-in", &vol, s(&hive), "/SYSTEM"]);
    let with_hive = sha256(&img);
    let here = ok(&["hive", "export", s(&hive)]);
    assert_eq!(ok(&["hive", "export", &vol, "/SYSTEM"]), here);
    let reg = realdata("virt-v2v/test-data/phony-guests/windows-system.reg");
    let dry = ok(&["hive", "merge", "-n", &vol, "/SYSTEM", s(&reg)]);
    assert!(dry.contains("would replace /SYSTEM"), "{dry}");
    assert_eq!(sha256(&img), with_hive);
    let out = ok(&["hive", "merge", &vol, "/SYSTEM", s(&reg)]);
    assert!(
        out.contains("/SYSTEM.vmie.bak") && out.contains("undo journal"),
        "{out}"
    );
    // The original is kept in the guest; the merged hive is what hivex says.
    let bak = run(&["cat", &vol, "/SYSTEM.vmie.bak"]);
    assert_eq!(bak.stdout, std::fs::read(&hive).unwrap());
    let merged = dir.path().join("merged");
    std::fs::write(&merged, run(&["cat", &vol, "/SYSTEM"]).stdout).unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::copy(&hive, &theirs).unwrap();
    let st = Command::new("hivexregedit")
        .args([
            "--merge",
            "--prefix",
            "HKEY_LOCAL_MACHINE\\SYSTEM",
            s(&theirs),
            s(&reg),
        ])
        .status()
        .expect("hivexregedit");
    assert!(st.success());
    assert_eq!(hivexregedit_export(&merged), hivexregedit_export(&theirs));
    let sel = ok(&["hive", "get", &vol, "/SYSTEM", "Select", "Current"]);
    assert!(sel.starts_with("Current [REG_DWORD] = "), "{sel}");
    // Not a hive, no guest path: refused, naming the file and the usage.
    let err = fails(&["hive", "get", s(&reg), "Select"], 1);
    assert!(
        err.contains("windows-system.reg: not a registry hive"),
        "{err}"
    );
    ok(&["undo", s(&img)]);
    assert_eq!(sha256(&img), with_hive);
}

/// Issue 18: human output uses words, not Rust debug names.
#[test]
fn human_output_uses_words() {
    let out = ok(&["inspect", s(&fixture("demo"))]);
    for want in ["(BIOS)", "ens192 static via", "preflight warning ["] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    for bad in [
        "(Bios)",
        " Static ",
        "Warning [",
        "Info [",
        "Some(",
        "Directory",
    ] {
        assert!(!out.contains(bad), "{bad:?} in:\n{out}");
    }
}

/// Issue 18: vague refusals name what and why.
#[test]
fn refusals_say_what_the_input_is() {
    let dir = tempfile::tempdir().unwrap();
    // A file that is not a disk: refused before anything else.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some text\n".repeat(1000)).unwrap();
    for args in [vec!["inspect", s(&text)], vec!["ls", s(&text), "/"]] {
        let err = fails(&args, 1);
        assert!(
            err.contains(
                "notes.txt: not a disk image: no partition table and no filesystem recognised"
            ),
            "{err}"
        );
    }
    // A blank data disk after a real boot disk is fine.
    let blank = dir.path().join("blank.raw");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    ok(&["inspect", s(&fixture("demo")), s(&blank)]);
    // A bad .reg file is named.
    let hive = dir.path().join("SYSTEM");
    std::fs::copy(realdata("hivex/images/minimal"), &hive).unwrap();
    let bad = dir.path().join("bad.reg");
    std::fs::write(&bad, "garbage\n").unwrap();
    let err = fails(&["hive", "merge", s(&hive), s(&bad)], 1);
    assert!(err.contains("bad.reg: ") && err.contains("line 1"), "{err}");
    // VHD is called VHD (in the refusal to write it: reading works).
    let vhd = dir.path().join("vm.vhd");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "vpc", s(&fixture("whole-ext2")), s(&vhd)])
        .status()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(st.success());
    let err = fails(&[s(&vhd)], 1);
    assert!(
        err.contains("this is a VHD image") && !err.contains("vpc"),
        "{err}"
    );
}

/// Issue 18: a root whose superblock checksum is bad is named as the
/// reason no guest was found, first, and human inspect shows the note.
#[test]
fn an_unreadable_root_is_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &img).unwrap();
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", s(&img)])).unwrap();
    let p1 = doc["disks"][0]["partitions"][0]["start"].as_u64().unwrap();
    // s_checksum is the superblock's last 4 bytes.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(p1 + 1024 + 0x3FC)).unwrap();
        f.write_all(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
    }
    let human = ok(&["inspect", s(&img)]);
    assert!(human.contains("note: superblock checksum"), "{human}");
    let first = human.lines().find(|l| l.starts_with("preflight ")).unwrap();
    assert!(
        first.starts_with("preflight error [root-unreadable]")
            && first.contains("partition 1 (ext4) could not be read")
            && first.contains("checksum"),
        "{human}"
    );
    assert!(human.contains("[volume-unreadable]"), "{human}");
}

/// Issue 18: -q prints only errors, -v says what was read and decided.
#[test]
fn quiet_and_verbose_fixup_run() {
    let img = fixture("demo");
    let i = s(&img);
    let out = run(&["-q", "--dry-run", i]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["-v", "--dry-run", i]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("planned:") && err.contains("changed file(s)"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would change"));
}
