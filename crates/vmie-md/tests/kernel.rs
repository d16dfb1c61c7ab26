//! Arrays made by the real kernel (guestfish appliance, mdadm), read and
//! written through vmie-md, checked against `mdadm --examine` on the host
//! and read back by the kernel after our writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use vmie_disk::Device;
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{GuestFs, GuestPath};
use vmie_md::{assemble, Array, MdOptions, Metadata, Role};

fn gp(s: &str) -> GuestPath {
    GuestPath::lexical(s.as_bytes())
}

fn members(disks: &[PathBuf], rw: bool) -> Vec<(Arc<dyn Device>, String)> {
    disks
        .iter()
        .map(|d| (part1(d, rw), format!("{} partition 1", d.display())))
        .collect()
}

fn one_array(disks: &[PathBuf], rw: bool) -> Array {
    let asm = assemble(members(disks, rw), &MdOptions::default()).unwrap();
    assert!(asm.rejected.is_empty(), "{:?}", asm.rejected);
    assert_eq!(asm.arrays.len(), 1, "{:?}", asm.arrays);
    asm.arrays.into_iter().next().unwrap()
}

/// Array facts against mdadm --examine of each member.
fn check_examine(a: &Array, disks: &[PathBuf]) {
    for (i, d) in disks.iter().enumerate() {
        let kv = examine(d);
        let sb = &a.members[i].superblock;
        let v1 = !matches!(sb.metadata, Metadata::V090 { .. });
        // 0.90 prints "0.90.00".
        assert!(
            get(&kv, "Version").starts_with(sb.metadata.as_str()),
            "{kv:?}"
        );
        let uuid = get(&kv, if v1 { "Array UUID" } else { "UUID" });
        assert_eq!(uuid, a.uuid_mdadm(), "{kv:?}");
        assert_eq!(get(&kv, "Raid Level"), a.level_name());
        assert_eq!(get(&kv, "Raid Devices"), a.raid_disks.to_string());
        // 0.90 prints events as hi.lo.
        let ev = get(&kv, "Events");
        let ev = ev.rsplit('.').next().unwrap();
        assert_eq!(ev.parse::<u64>().unwrap(), sb.events, "{kv:?}");
        if v1 {
            // Not printed when 0 (1.0).
            let data_offset = kv
                .iter()
                .find(|(k, _)| k == "Data Offset")
                .map_or("0 sectors", |(_, v)| v.as_str());
            assert_eq!(data_offset, format!("{} sectors", sb.data_offset / 512));
            assert_eq!(
                get(&kv, "Super Offset").split(' ').next().unwrap(),
                (sb.sb_offset / 512).to_string()
            );
            let Role::Active(n) = sb.role else {
                panic!("{:?}", sb.role)
            };
            assert_eq!(get(&kv, "Device Role"), format!("Active device {n}"));
            let name = get(&kv, "Name");
            assert!(
                name.starts_with(a.name.as_deref().unwrap()),
                "{name} vs {:?}",
                a.name
            );
            assert_eq!(
                get(&kv, "Avail Dev Size").split(' ').next().unwrap(),
                (sb.data_size / 512).to_string()
            );
        }
        if a.level == 1 {
            // "Used Dev Size : 130816 sectors (63.88 MiB ...)" (v1) or
            // "Used Dev Size : 65344 (63.81 MiB ...)" (0.90, KiB).
            let used = get(&kv, "Used Dev Size").split(' ').next().unwrap();
            let unit = if v1 { 512 } else { 1024 };
            assert_eq!(used.parse::<u64>().unwrap() * unit, sb.dev_size);
        }
    }
}

fn read_fs(dev: Arc<dyn Device>) -> Ext4Fs {
    Ext4Fs::open(dev, "md test").unwrap()
}

fn check_raid1(meta: &str, expect: Metadata) {
    let f = raid1(meta);
    let a = one_array(&f.disks, false);
    assert_eq!(a.metadata, expect);
    assert_eq!(a.level, 1);
    assert!(a.not_opened.is_none(), "{:?}", a.not_opened);
    assert!(a.members.iter().all(|m| m.used));
    let dev = a.device().unwrap();
    assert_eq!(dev.len().to_string(), f.fact("SIZE"));
    assert!(a.writable());
    check_examine(&a, &f.disks);
    // md-create names the array md0; mdadm --create /dev/md0 names a v1
    // array "HOST:0" and a 0.90 array by its minor.
    let path = match meta {
        "1.2" => "/dev/md/md0",
        "0.90" => "/dev/md0",
        _ => "/dev/md/0",
    };
    assert_eq!(a.dev_path().as_deref(), Some(path), "{:?}", a.name);
    // The inspector finds members by vmie-probe's linux_raid_member UUID
    // (blkid's): it must be the array's dashed UUID.
    for d in &f.disks {
        let p = vmie_probe::probe(part1(d, false).as_ref(), &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(p.kind, vmie_probe::FsKind::LinuxRaid);
        assert_eq!(p.uuid.as_deref(), Some(a.uuid_dashed().as_str()));
    }
    let fs = read_fs(dev);
    let hello = fs.read_file(&gp("/hello"), 1 << 20).unwrap();
    assert_eq!(String::from_utf8(hello).unwrap(), f.fact("HELLO"));
    assert_eq!(
        fs.read_file(&gp("/dir/blob"), 1 << 30).unwrap(),
        blob(BLOB, 7)
    );
    // A raw write through the array lands on both members at their data
    // offsets, and mdadm still accepts both superblocks.
    let (_t, copies) = f.copy();
    let a = one_array(&copies, true);
    let dev = a.device().unwrap();
    let off = dev.len() - 8192 - 777;
    let data = blob(8192, 3);
    let outside = |i: usize| {
        // Everything of the member outside its data area: superblock,
        // bitmap, bad-block log.
        let p = part1(&copies[i], false);
        let sb = &a.members[i].superblock;
        let mut head = vec![0u8; sb.data_offset as usize];
        p.read_at(0, &mut head).unwrap();
        let end = sb.data_offset + sb.dev_size;
        let mut tail = vec![0u8; (p.len() - end) as usize];
        p.read_at(end, &mut tail).unwrap();
        (head, tail)
    };
    let before: Vec<_> = (0..2).map(outside).collect();
    dev.write_at(off, &data).unwrap();
    let after: Vec<_> = (0..2).map(outside).collect();
    assert!(before == after, "bytes outside the data areas changed");
    for (i, d) in copies.iter().enumerate() {
        let p = part1(d, false);
        let mut got = vec![0u8; data.len()];
        p.read_at(a.members[i].superblock.data_offset + off, &mut got)
            .unwrap();
        assert_eq!(got, data, "member {i}");
    }
    check_examine(&one_array(&copies, false), &copies);
}

#[test]
fn raid1_v090() {
    check_raid1("0.90", Metadata::V090 { big_endian: false });
}

#[test]
fn raid1_v10() {
    check_raid1("1.0", Metadata::V10);
}

#[test]
fn raid1_v11() {
    check_raid1("1.1", Metadata::V11);
}

#[test]
fn raid1_v12() {
    check_raid1("1.2", Metadata::V12);
}

/// Both members' data areas are byte-identical over the array.
fn members_identical(a: &Array, disks: &[PathBuf]) {
    let len = a.device().unwrap().len();
    let parts: Vec<_> = disks.iter().map(|d| part1(d, false)).collect();
    let mut off = 0;
    let mut b0 = vec![0u8; 1 << 20];
    let mut b1 = vec![0u8; 1 << 20];
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        parts[0]
            .read_at(a.members[0].superblock.data_offset + off, &mut b0[..n])
            .unwrap();
        parts[1]
            .read_at(a.members[1].superblock.data_offset + off, &mut b1[..n])
            .unwrap();
        assert!(b0[..n] == b1[..n], "members differ at array offset {off}");
        off += n as u64;
    }
}

#[test]
fn raid1_write_read_back_by_kernel() {
    let f = raid1("1.0");
    let (_t, copies) = f.copy();
    let a = one_array(&copies, true);
    members_identical(&a, &copies);
    let mut fs = read_fs(a.device().unwrap());
    let new = b"written by vmie-md through the RAID1 array\n".repeat(200);
    fs.replace_file(&gp("/hello"), &new).unwrap();
    fs.create_file(&gp("/dir/new"), &blob(100_000, 9), &Default::default())
        .unwrap();
    drop(fs);
    members_identical(&a, &copies);
    // Our reader, fresh.
    let a = one_array(&copies, false);
    let fs = read_fs(a.device().unwrap());
    assert_eq!(fs.read_file(&gp("/hello"), 1 << 20).unwrap(), new);
    check_examine(&a, &copies);
    // The kernel assembling the array.
    let (mds, got) = kernel_cat(&copies, "/hello");
    assert_eq!(got, new, "kernel read of /hello from {mds:?}");
    // Each member alone (degraded) gives the same file: both were written.
    for d in &copies {
        let (_, got) = kernel_cat(std::slice::from_ref(d), "/hello");
        assert_eq!(got, new, "{} alone", d.display());
    }
}

#[test]
fn raid1_degraded() {
    let script = format!(
        "run\npart-disk /dev/sda mbr\n\
         debug sh \"mdadm --create /dev/md0 --run --metadata=1.2 --level=1 \
         --raid-devices=2 /dev/sda1 missing 2>&1\"\n{}",
        fill("/dev/md0", "hello degraded")
    );
    let f = fixture("raid1-degraded", &[64], BLOB, &script);
    let a = one_array(&f.disks, false);
    assert!(a.not_opened.is_none(), "{:?}", a.not_opened);
    assert!(
        a.warnings.iter().any(|w| w.contains("degraded")),
        "{:?}",
        a.warnings
    );
    check_examine(&a, &f.disks);
    assert!(get(&examine(&f.disks[0]), "Array State").starts_with("A. "));
    let dev = a.device().unwrap();
    assert_eq!(dev.len().to_string(), f.fact("SIZE"));
    let fs = read_fs(dev);
    assert_eq!(fs.read_file(&gp("/hello"), 100).unwrap(), b"hello degraded");
    assert_eq!(
        fs.read_file(&gp("/dir/blob"), 1 << 30).unwrap(),
        blob(BLOB, 7)
    );
    // No bitmap on a 64 MiB array: writable.
    assert!(a.writable());
}

#[test]
fn linear_read_write() {
    let f = linear();
    let a = one_array(&f.disks, false);
    assert_eq!(a.level_name(), "linear");
    assert!(a.not_opened.is_none(), "{:?}", a.not_opened);
    check_examine(&a, &f.disks);
    let dev = a.device().unwrap();
    // The kernel's size: the members' data areas end to end.
    assert_eq!(dev.len().to_string(), f.fact("SIZE"));
    let first = a.members[0].superblock.data_size;
    assert_eq!(dev.len(), first + a.members[1].superblock.data_size);
    let fs = read_fs(dev.clone());
    assert_eq!(fs.read_file(&gp("/hello"), 100).unwrap(), b"hello linear");
    // 70 MiB: more than the first member holds.
    assert_eq!(
        fs.read_file(&gp("/dir/blob"), 1 << 30).unwrap(),
        blob(LINEAR_BLOB, 7)
    );
    drop(fs);

    let (_t, copies) = f.copy();
    let a = one_array(&copies, true);
    let dev = a.device().unwrap();
    // A write across the boundary: its head on member 0, its tail on
    // member 1 at its data offset.
    let data = blob(10_000, 5);
    let off = first - 4000;
    let before1 = {
        let mut b = vec![0u8; 6000];
        part1(&copies[1], false)
            .read_at(a.members[1].superblock.data_offset, &mut b)
            .unwrap();
        b
    };
    assert_ne!(before1, data[4000..]);
    let md = a.device.clone().unwrap();
    let map = md.map(off, 10_000);
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(
        (map[0].1, map[0].2, map[1].1, map[1].2),
        (
            a.members[0].superblock.data_offset + off,
            4000,
            a.members[1].superblock.data_offset,
            6000
        )
    );
    dev.write_at(off, &data).unwrap();
    let mut got = vec![0u8; 4000];
    part1(&copies[0], false)
        .read_at(a.members[0].superblock.data_offset + off, &mut got)
        .unwrap();
    assert_eq!(got, data[..4000]);
    let mut got = vec![0u8; 6000];
    part1(&copies[1], false)
        .read_at(a.members[1].superblock.data_offset, &mut got)
        .unwrap();
    assert_eq!(got, data[4000..]);
    // Put the bytes back (they may be filesystem data) and write a file.
    let mut orig = vec![0u8; 10_000];
    one_array(&f.disks, false)
        .device()
        .unwrap()
        .read_at(off, &mut orig)
        .unwrap();
    dev.write_at(off, &orig).unwrap();
    let mut fs = read_fs(dev);
    let new = b"written by vmie-md through the linear array\n".to_vec();
    fs.replace_file(&gp("/hello"), &new).unwrap();
    drop(fs);
    check_examine(&one_array(&copies, false), &copies);
    let (mds, got) = kernel_cat(&copies, "/hello");
    assert_eq!(got, new, "kernel read from {mds:?}");
    let (_, got) = kernel_cat(&copies, "/dir/blob");
    assert_eq!(got, blob(LINEAR_BLOB, 7));
}

/// 0.90 linear: each member gives everything before its superblock,
/// rounded down to the chunk size (md-linear.c `linear_conf`).
#[test]
fn linear_v090_read() {
    let f = linear_meta("0.90");
    let a = one_array(&f.disks, false);
    assert_eq!(a.level_name(), "linear");
    assert_eq!(a.metadata, Metadata::V090 { big_endian: false });
    check_examine(&a, &f.disks);
    let dev = a.device().unwrap();
    assert_eq!(dev.len().to_string(), f.fact("SIZE"));
    let fs = read_fs(dev);
    assert_eq!(fs.read_file(&gp("/hello"), 100).unwrap(), b"hello linear");
    assert_eq!(
        fs.read_file(&gp("/dir/blob"), 1 << 30).unwrap(),
        blob(LINEAR_BLOB, 7)
    );
}

#[test]
fn raid5_listed_not_opened() {
    let script = format!(
        "run\npart-disk /dev/sda mbr\npart-disk /dev/sdb mbr\npart-disk /dev/sdc mbr\n\
         debug sh \"mdadm --create /dev/md0 --run --metadata=1.2 --level=5 \
         --raid-devices=3 /dev/sda1 /dev/sdb1 /dev/sdc1 2>&1\"\n{}",
        fill("/dev/md0", "hello raid5")
    );
    let f = fixture("raid5", &[32, 32, 32], 1 << 20, &script);
    let a = one_array(&f.disks, false);
    assert_eq!(a.level_name(), "raid5");
    assert!(a.device.is_none());
    let why = a.not_opened.clone().unwrap();
    assert!(why.contains("raid5 is not supported"), "{why}");
    assert!(a.members.iter().all(|m| !m.used));
    assert_eq!(a.members.len(), 3);
    // Each disk holds one of the three roles. Which disk gets which is the
    // appliance's: its kernel may name the disks in another order than
    // they were added when it scans them in parallel (seen once in CI).
    let mut roles = Vec::new();
    for d in &f.disks {
        let kv = examine(d);
        assert_eq!(get(&kv, "Array UUID"), a.uuid_mdadm());
        assert_eq!(get(&kv, "Raid Level"), "raid5");
        roles.push(get(&kv, "Device Role").to_string());
    }
    roles.sort();
    assert_eq!(
        roles,
        ["Active device 0", "Active device 1", "Active device 2"],
        "one role per disk"
    );
}

/// Read throughput through the RAID1 array vs the raw member (printed;
/// no timing assertion): best of 5 alternating passes, 1 MiB and 4 KiB
/// reads, page cache warm.
#[test]
fn raid1_throughput() {
    let f = raid1("1.2");
    let a = one_array(&f.disks, false);
    let dev = a.device().unwrap();
    let raw = part1(&f.disks[0], false);
    let off0 = a.members[0].superblock.data_offset;
    let len = dev.len();
    let pass = |d: &dyn Device, base: u64, bs: usize| {
        let mut buf = vec![0u8; bs];
        let t = Instant::now();
        let mut off = 0;
        while off + bs as u64 <= len {
            d.read_at(base + off, &mut buf).unwrap();
            off += bs as u64;
        }
        off as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
    };
    for bs in [1 << 20, 4096] {
        pass(raw.as_ref(), off0, bs);
        let (mut best_raw, mut best_md) = (0f64, 0f64);
        for _ in 0..5 {
            best_raw = best_raw.max(pass(raw.as_ref(), off0, bs));
            best_md = best_md.max(pass(dev.as_ref(), 0, bs));
        }
        println!(
            "read throughput, {bs}-byte reads over {} MiB: raw member {best_raw:.0} MiB/s, \
             RAID1 array {best_md:.0} MiB/s",
            len >> 20
        );
    }
}
