//! LVM2 end to end, on images made by the real LVM tools (`xtask::lvm`):
//! every logical volume reads exactly what LVM's own `lvs`/`pvs` say it
//! maps to, the refusals name what they refuse, and a RHEL 8 guest whose
//! root is on LVM is found, fixed through the overlay, checked by e2fsck
//! and undone byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use vmie_disk::Device;
use vmie_inspect::{OpenOptions, Vm, VolumeSelector};

#[path = "common/cli.rs"]
mod common;

use common::{ok, run, s};

fn fixture(name: &str) -> xtask::lvm::Fixture {
    xtask::lvm::fixture(name).unwrap_or_else(|e| panic!("building LVM fixture {name}: {e:#}"))
}

/// Sparse copies of a fixture's disks in a temporary directory.
fn copies(f: &xtask::lvm::Fixture) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let out: Vec<PathBuf> = f
        .disks
        .iter()
        .map(|d| {
            let to = dir.path().join(d.file_name().unwrap());
            let st = Command::new("cp")
                .arg("--sparse=always")
                .arg(d)
                .arg(&to)
                .status()
                .unwrap();
            assert!(st.success());
            to
        })
        .collect();
    (dir, out)
}

fn read_file_at(path: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

fn sha256_dev(dev: &dyn Device) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < dev.len() {
        let n = (dev.len() - at).min(buf.len() as u64) as usize;
        dev.read_at(at, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        at += n as u64;
    }
    format!("{:x}", h.finalize())
}

/// A small deterministic generator (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
}

#[test]
fn every_logical_volume_reads_what_lvm_maps() {
    let mut checked = 0;
    for (name, _) in xtask::lvm::NAMES {
        let f = fixture(name);
        let vm = Vm::open(&f.disks, &OpenOptions::default()).unwrap();
        assert!(
            vm.lvm().scan.problems.is_empty(),
            "{name}: {:?}",
            vm.lvm().scan.problems
        );
        for vg in &f.manifest.vgs {
            let ours = vm
                .lvm()
                .scan
                .vgs
                .iter()
                .find(|g| g.meta.uuid == vg.uuid)
                .unwrap_or_else(|| panic!("{name}: VG {} ({}) not found", vg.name, vg.uuid));
            assert_eq!(ours.meta.name, vg.name);
            assert_eq!(ours.meta.extent_size, vg.extent_size, "{name}");
            assert_eq!(ours.meta.seqno, vg.seqno, "{name}");
            for pv in &vg.pvs {
                let m = ours.meta.pvs.iter().find(|p| p.uuid == pv.uuid).unwrap();
                assert_eq!(m.pe_start, pv.pe_start, "{name} {}", pv.uuid);
                assert_eq!(m.pe_count, pv.pe_count, "{name} {}", pv.uuid);
            }
            for lv in vg.lvs.iter().filter(|l| !l.hidden && !l.mapping.is_empty()) {
                let vol = vm
                    .lvm()
                    .volumes
                    .iter()
                    .find(|v| v.lv.as_ref().is_some_and(|l| l.lv_uuid == lv.uuid))
                    .unwrap_or_else(|| panic!("{name}: LV {}/{} not opened", vg.name, lv.name));
                assert_eq!(vol.size, lv.size, "{name} {}", lv.name);
                // Random ranges inside every run LVM reports, read through
                // our mapping and straight from the disk file.
                let mut rng = Lcg(lv.size ^ 0x5eed);
                for e in &lv.mapping {
                    for _ in 0..4 {
                        let len = (rng.next() % 9000 + 1).min(e.len) as usize;
                        let off = rng.next() % (e.len - len as u64 + 1);
                        let mut a = vec![0u8; len];
                        vol.device.read_at(e.lv_offset + off, &mut a).unwrap();
                        let b = read_file_at(&f.disks[e.disk], e.disk_offset + off, len);
                        assert!(
                            a == b,
                            "{name} {}: {len} bytes at LV offset {}",
                            lv.name,
                            e.lv_offset + off
                        );
                    }
                }
                // Reads that cross run boundaries (stripe chunks, segments).
                for _ in 0..64 {
                    let len = (rng.next() % (300 << 10) + 1).min(lv.size) as usize;
                    let off = rng.next() % (lv.size - len as u64 + 1);
                    let mut a = vec![0u8; len];
                    vol.device.read_at(off, &mut a).unwrap();
                    let mut b = Vec::with_capacity(len);
                    let mut at = off;
                    while at < off + len as u64 {
                        let e = lv
                            .mapping
                            .iter()
                            .find(|e| e.lv_offset <= at && at < e.lv_offset + e.len)
                            .unwrap();
                        let n = (e.lv_offset + e.len - at).min(off + len as u64 - at);
                        b.extend(read_file_at(
                            &f.disks[e.disk],
                            e.disk_offset + (at - e.lv_offset),
                            n as usize,
                        ));
                        at += n;
                    }
                    assert!(a == b, "{name} {}: {len} bytes at {off}", lv.name);
                }
                if let Some(fs) = &lv.filesystem {
                    let p = vol.probe.as_ref().unwrap();
                    assert_eq!(
                        p.uuid.as_deref(),
                        Some(fs.uuid.as_str()),
                        "{name} {}",
                        lv.name
                    );
                    if fs.size <= 256 << 20 {
                        assert_eq!(
                            sha256_dev(vol.device.as_ref()),
                            fs.sha256,
                            "{name} {}",
                            lv.name
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} LVs checked");
}

#[test]
fn the_wrapped_metadata_ring_is_read() {
    let f = fixture("lvm-wrapped");
    let mda = f.manifest.vgs[0].pvs[0].mda.as_ref().unwrap();
    assert!(
        mda.wraps,
        "the fixture's committed metadata must wrap: {mda:?}"
    );
    let vm = Vm::open(&f.disks, &OpenOptions::default()).unwrap();
    let v = vm
        .select(0, &VolumeSelector::parse("vgwrap/survivor"))
        .unwrap();
    assert_eq!(v.probe.as_ref().unwrap().label.as_deref(), Some("survivor"));
}

#[test]
fn refusals_name_the_segment_type_and_the_missing_pv() {
    for (name, vg, lv, word) in [
        ("lvm-thin", "vgthin", "thinvol", "segment type thin"),
        ("lvm-thin", "vgthin", "pool", "segment type thin-pool"),
        ("lvm-raid1", "vgraid", "mirror", "segment type raid1"),
    ] {
        let f = fixture(name);
        let mut args = vec!["ls".to_string(), format!("{}:{vg}/{lv}", s(&f.disks[0]))];
        for d in &f.disks[1..] {
            args.extend(["--disk".to_string(), s(d).to_string()]);
        }
        args.push("/".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("logical volume {vg}/{lv} is not opened")) && err.contains(word),
            "{name}: {err}"
        );
    }
    // A VG over two disks with one given: its LV is not opened, and the
    // message names the missing PV and where LVM last saw it.
    let f = fixture("lvm-span");
    let out = run(&["ls", &format!("{}:vgspan/data", s(&f.disks[0])), "/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let missing = &f.manifest.vgs[0].pvs[1].uuid;
    assert!(
        err.contains(missing.as_str()) && err.contains("last seen as /dev/loop"),
        "{err}"
    );
    // With both disks it reads.
    let both = format!("{}:vgspan/data", s(&f.disks[0]));
    let text = ok(&["cat", &both, "--disk", s(&f.disks[1]), "/hello"]);
    assert_eq!(text, "lvm-span\n");
}

#[test]
fn two_volume_groups_of_one_name_are_told_apart() {
    let f = fixture("lvm-samename");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "inspect",
        "--format",
        "json",
        s(&f.disks[0]),
        s(&f.disks[1]),
    ]))
    .unwrap();
    let vgs = json["volume_groups"].as_array().unwrap();
    assert_eq!(vgs.len(), 2);
    assert_eq!(vgs[0]["name"], "vgdup");
    assert_eq!(vgs[1]["name"], "vgdup");
    assert_ne!(vgs[0]["uuid"], vgs[1]["uuid"]);
    let out = run(&[
        "ls",
        &format!("{}:vgdup/data", s(&f.disks[0])),
        "--disk",
        s(&f.disks[1]),
        "/",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for vg in vgs {
        assert!(err.contains(vg["uuid"].as_str().unwrap()), "{err}");
    }
    // By filesystem UUID each one is reachable.
    let uuid = vgs[1]["logical_volumes"][0]["filesystem"]["uuid"]
        .as_str()
        .unwrap();
    let vm = Vm::open(&f.disks, &OpenOptions::default()).unwrap();
    let v = vm
        .volumes()
        .find(|v| v.probe.as_ref().and_then(|p| p.uuid.as_deref()) == Some(uuid))
        .unwrap();
    assert_eq!(v.probe.as_ref().unwrap().label.as_deref(), Some("duptwo"));
}

fn digest(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            let mut h = Sha256::new();
            h.update(std::fs::read(p).unwrap());
            format!("{:x}", h.finalize())
        })
        .collect()
}

#[test]
fn rhel8_on_lvm_is_fixed_end_to_end() {
    let f = fixture("lvm-rhel8");
    let (_dir, disks) = copies(&f);
    let img = s(&disks[0]);
    let before = digest(&disks);
    let root_lv = f.manifest.lv("rhel", "root").unwrap();
    let root_off = root_lv.mapping[0].disk_offset;
    assert_eq!(root_lv.mapping.len(), 1, "a linear LV in one run");

    let inspect = ok(&["inspect", img]);
    assert!(
        inspect.contains("Linux on logical volume rhel/root"),
        "{inspect}"
    );
    assert!(inspect.contains("/boot = "), "{inspect}");

    let dry = ok(&["--dry-run", "--format", "json", img]);
    assert_eq!(digest(&disks), before, "a dry run writes nothing");
    // --check-fs runs e2fsck on the root LV where LVM maps it, before and
    // after the commit.
    let real = ok(&["--format", "json", "--check-fs", img]);
    let strip = |t: &str| {
        let mut v: serde_json::Value = serde_json::from_str(t).unwrap();
        v.as_object_mut().unwrap().remove("dry_run");
        v.as_object_mut().unwrap().remove("undo");
        v.as_object_mut().unwrap().remove("timing");
        v["changes"].clone()
    };
    assert_eq!(
        strip(&dry),
        strip(&real),
        "the dry run plans what the real run does"
    );

    let fstab = ok(&["cat", &format!("{img}:rhel/root"), "/etc/fstab"]);
    assert!(
        fstab.contains("/dev/mapper/rhel-root   /"),
        "LVM names are kept: {fstab}"
    );
    assert!(fstab.contains("/dev/mapper/rhel-swap   none"), "{fstab}");
    assert!(
        fstab.contains("UUID=4ae80101-0000-4000-8000-000000000001               /boot"),
        "{fstab}"
    );
    let grubenv = ok(&["cat", &format!("{img}:1"), "/grub2/grubenv"]);
    assert!(
        grubenv.contains("root=/dev/mapper/rhel-root") && grubenv.contains("rd.lvm.lv=rhel/root"),
        "{grubenv}"
    );
    assert!(!grubenv.contains("/dev/sda"), "{grubenv}");
    // LVM's devices file, which names the source VM's disk, is set aside.
    let out = run(&[
        "cat",
        &format!("{img}:rhel/root"),
        "/etc/lvm/devices/system.devices",
    ]);
    assert_eq!(out.status.code(), Some(1), "the devices file is gone");
    let kept = ok(&[
        "cat",
        &format!("{img}:rhel/root"),
        "/etc/lvm/devices/system.devices.vmie.bak",
    ]);
    assert!(kept.contains("DEVNAME=/dev/sda2"), "{kept}");
    // The backup of the original, on the LV.
    let bak = ok(&["cat", &format!("{img}:rhel/root"), "/etc/fstab.vmie.bak"]);
    assert!(bak.contains("/dev/sda1               /boot"));

    // e2fsck, on the root LV where LVM maps it and on /boot.
    for off in [root_off, f.manifest.disks[0].partitions[0].start] {
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(format!("{img}?offset={off}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "e2fsck at {off}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // LVM's own view of the PV is unchanged (metadata never written).
    let vm = Vm::open(&disks, &OpenOptions::default()).unwrap();
    assert_eq!(vm.lvm().scan.vgs[0].meta.seqno, f.manifest.vgs[0].seqno);

    // A second run changes nothing.
    let again: serde_json::Value = serde_json::from_str(&ok(&["--format", "json", img])).unwrap();
    assert_eq!(
        again["changes"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );

    // Undo, newest first, restores every byte.
    let mut rounds = 0;
    while run(&["undo", img]).status.success() {
        rounds += 1;
        assert!(rounds < 5);
    }
    assert_eq!(
        digest(&disks),
        before,
        "undo restores the image byte for byte"
    );
}

#[test]
fn write_and_ls_on_a_logical_volume() {
    let f = fixture("lvm-single");
    let (_dir, disks) = copies(&f);
    let vol = format!("{}:vgtest/root", s(&disks[0]));
    let ls = ok(&["ls", &vol, "/etc"]);
    assert!(ls.contains("fstab"), "{ls}");
    let src = disks[0].with_file_name("motd");
    std::fs::write(&src, "hello from the LV\n").unwrap();
    ok(&["copy-in", &vol, s(&src), "/etc/motd"]);
    assert_eq!(ok(&["cat", &vol, "/etc/motd"]), "hello from the LV\n");
    let off = f.manifest.lv("vgtest", "root").unwrap().mapping[0].disk_offset;
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={off}", s(&disks[0])))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // debugfs, an independent reader, sees the file where LVM maps the LV.
    let out = Command::new("debugfs")
        .arg("-R")
        .arg("cat /etc/motd")
        .arg(format!("{}?offset={off}", s(&disks[0])))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the LV\n");
}
