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
    // window checked before the head is 8 log buffers of the size the
    // unmount record declares (32 KiB from mkfs): 256 KiB. The issue's
    // budget for this replace is 1 MiB.
    assert!(costs[1] <= costs[0] * 2, "{costs:?}");
    assert!(costs.iter().all(|&c| c < 1 << 20), "{costs:?}");
}

/// The internal log of `img`: its byte offset, and the cycle number of
/// each 512-byte basic block (a record header's own cycle field for
/// headers).
fn log_cycles(img: &Path) -> (u64, Vec<u32>) {
    let f = |field: &str| -> u64 {
        let out = xfs_db(img, false, &["sb 0", &format!("p {field}")]);
        out.trim().rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (ls, agb, agl, bs, lb) = (
        f("logstart"),
        f("agblocks"),
        f("agblklog"),
        f("blocksize"),
        f("logblocks"),
    );
    let off = ((ls >> agl) * agb + (ls & ((1 << agl) - 1))) * bs;
    let mut log = vec![0u8; (lb * bs) as usize];
    let mut file = std::fs::File::open(img).unwrap();
    file.seek(SeekFrom::Start(off)).unwrap();
    file.read_exact(&mut log).unwrap();
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let cycles = log
        .chunks(512)
        .map(|b| {
            if be(b) == 0xFEED_BABE {
                be(&b[4..])
            } else {
                be(b)
            }
        })
        .collect();
    (off, cycles)
}

fn patch(img: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

/// A log the kernel wrote, wrapped past its end (cycle 2) and left by a
/// clean unmount with a CRC on its unmount record, is clean to us: the
/// replace commits, xfs_repair is clean and the kernel reads the new file.
/// The same image with the unmount record's bytes changed (its CRC no
/// longer matches) or with a block of the previous cycle a few blocks
/// before the head (a log write that never reached the disk, which moves
/// the kernel's head back there) is refused with nothing written.
#[test]
fn kernel_written_logs_are_clean_and_damage_before_the_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("k.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    // A small log, so that the kernel wraps it: mkfs allows one under
    // 64 MiB (and a volume under 300 MiB) only under fstests' variables.
    sh(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-l", "size=1368b"])
        .env("TEST_DIR", dir.path())
        .env("TEST_DEV", "/dev/null")
        .env("QA_CHECK_FS", "xfs")
        .arg(&img));
    {
        let m = Mounted::new(&img, false);
        std::fs::create_dir(m.path("etc")).unwrap();
        std::fs::write(m.path("etc/fstab"), b"/dev/sda1 / xfs defaults 0 0\n").unwrap();
        for i in 0..30_000 {
            std::fs::File::create(m.path(&format!("f{i}"))).unwrap();
        }
    }
    let (off, cyc) = log_cycles(&img);
    let n = cyc.len();
    let cycle = cyc[0];
    assert!(
        cycle >= 2,
        "the kernel did not wrap the log (cycle {cycle})"
    );
    let head = cyc.iter().position(|&c| c != cycle).unwrap_or(n);
    let mut hdr = [0u8; 512];
    let rec = (0..head)
        .rev()
        .find(|&i| {
            let mut f = std::fs::File::open(&img).unwrap();
            f.seek(SeekFrom::Start(off + i as u64 * 512)).unwrap();
            f.read_exact(&mut hdr).unwrap();
            hdr[..4] == [0xFE, 0xED, 0xBA, 0xBE]
        })
        .unwrap();
    assert_ne!(
        &hdr[32..36],
        &[0; 4],
        "the kernel's unmount record has a CRC"
    );
    eprintln!("log of {n} blocks, cycle {cycle}, head {head}, unmount record at {rec}");
    let fstab = GuestPath::lexical(b"/etc/fstab");
    let new = b"UUID=1234 / xfs defaults 0 0\n";

    let refused = |damage: &dyn Fn(&Path), why: &str| {
        let copy = dir.path().join("damaged.img");
        std::fs::copy(&img, &copy).unwrap();
        damage(&copy);
        let (ov, mut fs) = over(&copy);
        let err = fs.replace_file(&fstab, new).unwrap_err().to_string();
        assert!(
            err.contains("log is not clean") && err.contains(why),
            "{err}"
        );
        assert!(!ov.is_dirty(), "{why}: the refusal wrote");
    };
    // One byte of the unmount record's data (past its 20-byte payload).
    refused(
        &|p| patch(p, off + (rec as u64 + 1) * 512 + 100, &[0x5A]),
        "CRC does not match",
    );
    // A block of the previous cycle 40 blocks before the unmount record.
    let hole = (rec - 40..rec).find(|&i| cyc[i] == cycle).unwrap();
    refused(
        &|p| {
            let mut f = std::fs::File::open(p).unwrap();
            let mut first = [0u8; 4];
            f.seek(SeekFrom::Start(off + hole as u64 * 512)).unwrap();
            f.read_exact(&mut first).unwrap();
            let at = if first == [0xFE, 0xED, 0xBA, 0xBE] {
                4
            } else {
                0
            };
            patch(p, off + hole as u64 * 512 + at, &(cycle - 1).to_be_bytes());
        },
        "before the head has cycle",
    );

    let (ov, mut fs) = over(&img);
    fs.replace_file(&fstab, new).unwrap();
    commit(&ov, &img);
    let (ok, out) = repair_n(&img);
    assert!(ok, "{out}");
    let m = Mounted::new(&img, true);
    assert_eq!(std::fs::read(m.path("etc/fstab")).unwrap(), new);
}
