//! The writer: replace_file in place (shrink, grow inside the owned
//! blocks, to zero, growth into new blocks) on v4 and v5 profiles, proven
//! by xfs_repair -n and by xfs_db's own block map read back with plain
//! file reads (rmapbt volumes too); refusals (dirty or external logs,
//! needsrepair, unknown features) write nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice, Overlay};
use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath};
use vmie_xfs::XfsFs;

#[test]
fn replace_in_place_passes_xfs_repair() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let mut checks = 0;
    for args in [
        &["-m", "crc=0"][..],
        &["-m", "reflink=1,bigtime=1,inobtcount=1"][..],
        &[
            "-m",
            "rmapbt=1,bigtime=0",
            "-b",
            "size=1024",
            "-i",
            "nrext64=1",
        ][..],
    ] {
        let img = mkfs(args, 300, Some(&proto));
        let odd = GuestPath::lexical(b"/etc/odd"); // 10,001 bytes
        for (step, len) in [5usize, 10_240, 0, 10_001, 1].into_iter().enumerate() {
            let (ov, mut fs) = over(&img.path);
            let data = bytes(500 + step as u64, len);
            let before = fs.lstat("/etc/odd").unwrap().1;
            fs.replace_file(&odd, &data).unwrap();
            assert_eq!(fs.read("/etc/odd").unwrap(), data);
            let after = fs.lstat("/etc/odd").unwrap().1;
            assert_eq!(
                (after.mode, after.uid, after.gid, after.inode, &after.xattrs),
                (
                    before.mode,
                    before.uid,
                    before.gid,
                    before.inode,
                    &before.xattrs
                )
            );
            assert!(after.mtime >= before.mtime && after.ctime >= before.ctime);
            fs.verify_paths(&[(odd.clone(), Some(data.clone()))])
                .unwrap();
            commit(&ov, &img.path);
            let (ok, out) = repair_n(&img.path);
            assert!(
                ok,
                "{args:?} step {step} ({len} bytes): xfs_repair -n: {out}"
            );
            assert!(
                xfs_db_read(&img.path, "/etc/odd") == data,
                "{args:?} step {step}: xfs_db reads other bytes"
            );
            // Everything else is untouched.
            let (_, fs) = open(&img.path);
            let mut now = t.clone();
            now.insert(
                "etc/odd".into(),
                Node::File {
                    data: data.clone(),
                    mode: 0o755,
                    uid: 65534,
                    gid: 65535,
                },
            );
            compare(&fs, &now);
            checks += 1;
        }
        // Growth past the owned blocks allocates (with its reverse
        // mapping on rmapbt).
        let (ov, mut fs) = over(&img.path);
        let grown = bytes(9, 20_000);
        fs.replace_file(&odd, &grown).unwrap();
        assert_eq!(fs.read("/etc/odd").unwrap(), grown);
        commit(&ov, &img.path);
        let (ok, out) = repair_n(&img.path);
        assert!(ok, "{args:?} grown: xfs_repair -n: {out}");
        assert!(xfs_db_read(&img.path, "/etc/odd") == grown);
        // Rename needs no block; removing a file frees its blocks.
        let (ov, mut fs) = over(&img.path);
        let p = GuestPath::lexical(b"/etc/new");
        fs.rename(&odd, &p).unwrap();
        fs.remove(&p).unwrap();
        commit(&ov, &img.path);
        let (ok, out) = repair_n(&img.path);
        assert!(ok, "{args:?} rename and remove: xfs_repair -n: {out}");
        let (ov, mut fs) = over(&img.path);
        // Not a regular file.
        assert!(fs.replace_file(&GuestPath::lexical(b"/etc"), b"x").is_err());
        assert!(fs
            .replace_file(&GuestPath::lexical(b"/etc/short-link"), b"x")
            .is_err());
        assert!(!ov.is_dirty());
    }
    eprintln!("{checks} replace steps checked by xfs_repair -n and xfs_db");
}

fn set_sb_field(img: &Path, off: usize, value: u32) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut sb = vec![0u8; 512];
    f.read_exact(&mut sb).unwrap();
    sb[off..off + 4].copy_from_slice(&value.to_be_bytes());
    if u16::from_be_bytes([sb[100], sb[101]]) & 0xF == 5 {
        sb[224..228].fill(0);
        let c = !vmie_disk::checksum::crc32c_update(!0, &sb);
        sb[224..228].copy_from_slice(&c.to_le_bytes());
    }
    f.seek(SeekFrom::Start(0)).unwrap();
    std::io::Write::write_all(&mut f, &sb).unwrap();
}

fn sb_u32(img: &Path, off: usize) -> u32 {
    let mut sb = [0u8; 512];
    std::fs::File::open(img)
        .unwrap()
        .read_exact(&mut sb)
        .unwrap();
    u32::from_be_bytes([sb[off], sb[off + 1], sb[off + 2], sb[off + 3]])
}

#[test]
fn refusals_write_nothing() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let fstab = GuestPath::lexical(b"/etc/fstab");

    // A log reformatted at a later cycle is still clean.
    let img = mkfs(&[], 300, Some(&proto));
    xfs_db(&img.path, true, &["logformat -c 7"]);
    let (_, fs) = over(&img.path);
    fs.check_writable().unwrap();

    // The unmount record's flags cleared: the log is not known clean.
    let img = mkfs(&[], 300, Some(&proto));
    let logstart: u64 = {
        let out = xfs_db(
            &img.path,
            false,
            &["sb 0", "print logstart agblocks agblklog blocksize"],
        );
        let f = |k: &str| -> u64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (ls, agb, log, bs) = (f("logstart"), f("agblocks"), f("agblklog"), f("blocksize"));
        ((ls >> log) * agb + (ls & ((1 << log) - 1))) * bs
    };
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img.path)
            .unwrap();
        let mut log = vec![0u8; 8192];
        f.seek(SeekFrom::Start(logstart)).unwrap();
        f.read_exact(&mut log).unwrap();
        // The unmount record: header in basic block 0, its op header in 1.
        assert_eq!(&log[0..4], &[0xFE, 0xED, 0xBA, 0xBE]);
        assert_eq!(
            log[512 + 9] & 0x20,
            0x20,
            "mkfs writes an unmount record first"
        );
        log[512 + 9] &= !0x20;
        f.seek(SeekFrom::Start(logstart)).unwrap();
        std::io::Write::write_all(&mut f, &log).unwrap();
    }
    let (ov, mut fs) = over(&img.path);
    let err = fs.replace_file(&fstab, b"x").unwrap_err();
    assert!(err.to_string().contains("log is not clean"), "{err}");
    assert!(!ov.is_dirty());
    assert_eq!(
        fs.read("/etc/fstab").unwrap(),
        b"UUID=1234 / xfs defaults 0 0\n/dev/sda2 swap swap defaults 0 0\n"
    );

    // External log device not given.
    let img = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        let logp = dir.path().join("log.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(300 << 20)
            .unwrap();
        std::fs::File::create(&logp)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let ok = Command::new("mkfs.xfs")
            .args(["-q", "-f", "-l"])
            .arg(format!("logdev={}", logp.display()))
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
        Img { dir, path }
    };
    let (ov, mut fs) = over(&img.path);
    assert!(fs.list("/").unwrap().1.is_empty());
    let err = fs.replace_file(&fstab, b"x").unwrap_err();
    assert!(err.to_string().contains("external log"), "{err}");
    assert!(!ov.is_dirty());

    // needsrepair and an unknown incompat bit: refused at open.
    let img = mkfs(&[], 300, Some(&proto));
    let incompat = sb_u32(&img.path, 216);
    set_sb_field(&img.path, 216, incompat | 0x10);
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&img.path).unwrap());
    let err = XfsFs::open(Arc::clone(&dev), "x").unwrap_err();
    assert!(err.to_string().contains("needsrepair"), "{err}");
    set_sb_field(&img.path, 216, incompat | 0x0100_0000);
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&img.path).unwrap());
    let err = XfsFs::open(dev, "x").unwrap_err();
    assert!(err.to_string().contains("unknown bit 24"), "{err}");
    // An unknown ro_compat bit: readable, not writable.
    set_sb_field(&img.path, 216, incompat);
    let ro = sb_u32(&img.path, 212);
    set_sb_field(&img.path, 212, ro | 0x8000);
    let (ov, mut fs) = over(&img.path);
    assert_eq!(fs.read("/etc/fstab").unwrap().len(), 62);
    let err = fs.replace_file(&fstab, b"x").unwrap_err();
    assert!(err.to_string().contains("read-only-compatible"), "{err}");
    assert!(!ov.is_dirty());
}

/// Bytes read to open a filesystem and replace /etc/fstab, on a 1 GiB and
/// a 10 GiB volume: the same, since the work depends only on what is
/// touched (superblock, log head search, the path, the file).
#[test]
fn replace_cost_does_not_grow_with_the_volume() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let mut costs = Vec::new();
    for gib in [1u64, 10] {
        let img = mkfs(&[], gib << 10, Some(&proto));
        let file = Arc::new(FileDevice::open(&img.path).unwrap());
        let base: Arc<dyn Device> = file.clone();
        let ov = Arc::new(Overlay::new(base));
        let mut fs = XfsFs::open(ov.clone(), "t").unwrap();
        // The fixup's pattern: keep the original beside it, then replace
        // it with longer contents (allocating blocks).
        let old = fs.read("/etc/fstab").unwrap();
        fs.create_file(
            &GuestPath::lexical(b"/etc/fstab.vmie.bak"),
            &old,
            &vmie_guestfs::NewAttrs::default(),
        )
        .unwrap();
        fs.replace_file(
            &GuestPath::lexical(b"/etc/fstab"),
            format!("UUID=5678 / xfs defaults 0 0\n#{}\n", "x".repeat(9000)).as_bytes(),
        )
        .unwrap();
        let (bytes_read, calls) = file.read_stats();
        eprintln!("{gib} GiB: {bytes_read} bytes in {calls} reads to back up and grow /etc/fstab");
        costs.push(bytes_read);
        commit(&ov, &img.path);
        assert!(repair_n(&img.path).0);
    }
    // The log may differ in size; the head search is logarithmic and the
    // window checked past the head is capped at 2 MiB.
    assert!(costs[1] <= costs[0] * 2, "{costs:?}");
}
