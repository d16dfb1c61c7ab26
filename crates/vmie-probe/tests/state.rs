//! Dirty / recovery / error / hibernation state, on real images and on
//! images put into that state, each checked against the state the tool's
//! own reader reports (dumpe2fs, xfs_logprint, ntfsinfo, fsck.vfat, btrfs
//! inspect-internal) where one exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{realdata, unxz, unzstd};
use vmie_disk::{FileDevice, MemDevice};
use vmie_probe::{probe, FsKind, Probe, ProbeOptions};

fn tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install {package}"))
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn probe_file(img: &Path) -> Probe {
    probe(&FileDevice::open(img).unwrap(), &ProbeOptions::default())
        .unwrap()
        .unwrap_or_else(|| panic!("{}: nothing recognised", img.display()))
}

fn probe_mem(name: &str, data: Vec<u8>) -> Probe {
    probe(&MemDevice::new(name, data), &ProbeOptions::default())
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: nothing recognised"))
}

fn patch(img: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn read_at(img: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(img).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------- ext

#[test]
fn ext4_view_journal_needs_recovery() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind, recover) in [
        ("test_disk_4k_block_journal.bin.zst", FsKind::Ext4, true),
        ("test_disk1.bin.zst", FsKind::Ext4, false),
        ("test_disk_ext2.bin.zst", FsKind::Ext2, false),
        ("test_disk_ext3.bin.zst", FsKind::Ext3, false),
    ] {
        let data = unzstd(&realdata(&format!("ext4-view-rs/test_data/{name}")));
        let img = dir.path().join(name);
        std::fs::write(&img, &data).unwrap();
        let header = output(
            Command::new(tool("dumpe2fs", "e2fsprogs"))
                .arg("-h")
                .arg(&img),
        );
        assert_eq!(
            header.contains("needs_recovery"),
            recover,
            "{name}: dumpe2fs disagrees"
        );
        let p = probe_mem(name, data);
        assert_eq!(p.kind, kind, "{name}");
        assert_eq!(p.state.needs_recovery, recover, "{name}: {:?}", p.state);
        assert!(!p.state.errors, "{name}: {:?}", p.state);
    }
}

#[test]
fn btrfs_progs_ext4_needs_recovery() {
    let data = unxz(&realdata(
        "btrfs-progs/tests/convert-tests/020-refuse-needs-recovery/ext4.raw.xz",
    ));
    let p = probe_mem("ext4.raw", data);
    assert_eq!(p.kind, FsKind::Ext4);
    assert!(p.state.needs_recovery, "{:?}", p.state);
}

#[test]
fn ext4_error_state() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank(dir.path(), "ext4", 16 << 20);
    run(Command::new(tool("mkfs.ext4", "e2fsprogs"))
        .args(["-q", "-F"])
        .arg(&img));
    let p = probe_file(&img);
    assert!(!p.state.errors && !p.state.needs_recovery, "{:?}", p.state);

    // Through debugfs, which keeps the superblock checksum right.
    for (state, dumpe2fs_says) in [
        (2u16, "not clean with errors"),
        (3, "clean with errors"),
        (0, "not clean"),
    ] {
        run(Command::new(tool("debugfs", "e2fsprogs"))
            .args(["-w", "-R", &format!("ssv state {state}")])
            .arg(&img));
        let header = output(
            Command::new(tool("dumpe2fs", "e2fsprogs"))
                .arg("-h")
                .arg(&img),
        );
        let line = header
            .lines()
            .find(|l| l.starts_with("Filesystem state:"))
            .unwrap();
        assert!(line.trim_end().ends_with(dumpe2fs_says), "{line}");
        let p = probe_file(&img);
        assert!(p.state.errors, "state {state}: {:?}", p.state);
        assert_eq!(
            p.state.notes.iter().any(|n| n.contains("ERROR_FS")),
            state & 2 != 0,
            "{:?}",
            p.state.notes
        );
        assert_eq!(
            p.state.notes.iter().any(|n| n.contains("lacks VALID_FS")),
            state & 1 == 0,
            "{:?}",
            p.state.notes
        );
        assert!(!p.state.notes.iter().any(|n| n.contains("checksum")));
    }

    // Patched by hand: s_state at 1024 + 0x3a; the checksum is now wrong,
    // which is reported but does not hide the filesystem.
    run(Command::new(tool("debugfs", "e2fsprogs"))
        .args(["-w", "-R", "ssv state 1"])
        .arg(&img));
    assert!(!probe_file(&img).state.errors);
    patch(&img, 1024 + 0x3a, &2u16.to_le_bytes());
    let p = probe_file(&img);
    assert_eq!(p.kind, FsKind::Ext4);
    assert!(p.state.errors);
    assert!(
        p.state.notes.iter().any(|n| n.contains("checksum")),
        "{:?}",
        p.state.notes
    );
}

// ---------------------------------------------------------------- xfs

/// The internal log's start (in 512-byte blocks) and length, as
/// xfs_logprint reports them, and its verdict.
fn logprint(img: &Path) -> (u64, u64, bool) {
    let out = output(
        Command::new(tool("xfs_logprint", "xfsprogs"))
            .arg("-t")
            .arg(img),
    );
    let num_after = |key: &str| -> u64 {
        let i = out
            .find(key)
            .unwrap_or_else(|| panic!("{key} not in {out}"))
            + key.len();
        out[i..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let daddr = num_after("daddr:");
    let length = num_after("length:");
    let dirty = if out.contains("<DIRTY>") {
        true
    } else if out.contains("<CLEAN>") {
        false
    } else {
        panic!("xfs_logprint gave no state: {out}")
    };
    (daddr, length, dirty)
}

#[test]
fn xfs_log_state_agrees_with_xfs_logprint() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank(dir.path(), "xfs", 300 << 20);
    run(Command::new(tool("mkfs.xfs", "xfsprogs"))
        .args(["-q", "-f"])
        .arg(&img));
    let (start, blocks, dirty) = logprint(&img);
    assert!(!dirty);
    let p = probe_file(&img);
    assert!(!p.state.needs_recovery, "{:?}", p.state);

    // The log formatted to cycle 5: every block then holds a stale
    // unmount record of cycle 4 after the current one.
    run(Command::new(tool("xfs_db", "xfsprogs"))
        .args(["-x", "-c", "logformat -c 5"])
        .arg(&img));
    let base = start * 512;
    let pristine = dir.path().join("pristine");
    std::fs::copy(&img, &pristine).unwrap();
    // Move the head to block `k` by turning the records before it into
    // cycle-5 unmount records; then optionally clear the unmount flag of
    // the last one, which makes the log dirty.
    for k in [2u64, 1000, 4096, blocks - 2, blocks] {
        for make_dirty in [false, true] {
            std::fs::copy(&pristine, &img).unwrap();
            for i in (0..k).step_by(2) {
                let off = base + i * 512;
                let mut rec = read_at(&img, off, 1024);
                rec[4..8].copy_from_slice(&5u32.to_be_bytes());
                rec[16..20].copy_from_slice(&5u32.to_be_bytes());
                rec[20..24].copy_from_slice(&(i as u32).to_be_bytes());
                rec[24..28].copy_from_slice(&5u32.to_be_bytes());
                rec[28..32].copy_from_slice(&(i as u32).to_be_bytes());
                rec[512..516].copy_from_slice(&5u32.to_be_bytes());
                patch(&img, off, &rec);
            }
            if make_dirty {
                let flags = base + (k - 2) * 512 + 512 + 9;
                let b = read_at(&img, flags, 1)[0];
                assert_eq!(b & 0x20, 0x20);
                patch(&img, flags, &[b & !0x20]);
            }
            let (_, _, dirty) = logprint(&img);
            assert_eq!(
                dirty, make_dirty,
                "head {k}: xfs_logprint disagrees with the setup"
            );
            let p = probe_file(&img);
            assert_eq!(
                p.state.needs_recovery, make_dirty,
                "head {k}, dirty {make_dirty}: {:?}",
                p.state
            );
        }
    }

    // With the check disabled, nothing is claimed.
    let opts = ProbeOptions {
        check_xfs_log: false,
        ..ProbeOptions::default()
    };
    let p = probe(&FileDevice::open(&img).unwrap(), &opts)
        .unwrap()
        .unwrap();
    assert!(!p.state.needs_recovery);
    assert!(p
        .state
        .notes
        .iter()
        .any(|n| n.contains("log state not checked")));
}

#[test]
fn xfs_needsrepair_and_inprogress() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank(dir.path(), "xfs", 300 << 20);
    run(Command::new(tool("mkfs.xfs", "xfsprogs"))
        .args(["-q", "-f"])
        .arg(&img));
    run(Command::new(tool("xfs_db", "xfsprogs"))
        .args(["-x", "-c", "sb 0", "-c", "write -d inprogress 1"])
        .arg(&img));
    let p = probe_file(&img);
    assert_eq!(p.kind, FsKind::Xfs);
    assert!(p.state.errors, "{:?}", p.state);
    assert!(p.state.notes.iter().any(|n| n.contains("inprogress")));
}

// ---------------------------------------------------------------- ntfs

#[test]
fn ntfs_dirty_flag() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank(dir.path(), "ntfs", 32 << 20);
    run(Command::new(tool("mkntfs", "ntfs-3g"))
        .args(["-F", "-Q", "-f", "-q"])
        .arg(&img));
    let info = || {
        output(
            Command::new(tool("ntfsinfo", "ntfs-3g"))
                .args(["-f", "-m"])
                .arg(&img),
        )
    };
    assert!(info().contains("Volume Flags: 0x0000"));
    let p = probe_file(&img);
    assert!(
        !p.state.dirty && !p.state.needs_recovery && !p.state.hibernated,
        "{:?}",
        p.state
    );
    for off in xtask::fixtures::image::ntfs_volume_flag_offsets(&img).unwrap() {
        patch(&img, off, &1u16.to_le_bytes());
    }
    assert!(info().contains("Volume Flags: 0x0001"), "{}", info());
    let p = probe_file(&img);
    assert!(p.state.dirty, "{:?}", p.state);
}

#[test]
fn ntfs_hiberfil() {
    let dir = tempfile::tempdir().unwrap();
    let filler = dir.path().join("filler");
    std::fs::write(&filler, b"x").unwrap();
    for (i, (content, hibernated)) in [
        (&b"HIBR"[..], true),
        (b"hibr", true),
        (b"RSTR", true),
        (b"wake", false),
        (b"\0\0\0\0", false),
    ]
    .iter()
    .enumerate()
    {
        let img = blank(dir.path(), &format!("ntfs{i}"), 32 << 20);
        run(Command::new(tool("mkntfs", "ntfs-3g"))
            .args(["-F", "-Q", "-f", "-q"])
            .arg(&img));
        // Enough files that the root index needs index blocks.
        for n in 0..40 {
            run(Command::new(tool("ntfscp", "ntfs-3g"))
                .args(["-q", "-f"])
                .arg(&img)
                .arg(&filler)
                .arg(format!("file-{n:03}.txt")));
        }
        let mut hib = content.to_vec();
        hib.resize(64 * 1024, 0);
        let src = dir.path().join("hib");
        std::fs::write(&src, &hib).unwrap();
        run(Command::new(tool("ntfscp", "ntfs-3g"))
            .args(["-q", "-f"])
            .arg(&img)
            .arg(&src)
            .arg("hiberfil.sys"));
        let p = probe_file(&img);
        assert_eq!(
            p.state.hibernated, *hibernated,
            "{:?}: {:?}",
            content, p.state
        );
        assert!(
            !p.state.notes.iter().any(|n| n.contains("no hiberfil.sys")),
            "{:?}",
            p.state.notes
        );
    }

    // A hiberfil.sys too small to hold a header is no hibernation image.
    let img = blank(dir.path(), "ntfs-small", 32 << 20);
    run(Command::new(tool("mkntfs", "ntfs-3g"))
        .args(["-F", "-Q", "-f", "-q"])
        .arg(&img));
    let src = dir.path().join("small");
    std::fs::write(&src, b"HIBR and little else").unwrap();
    run(Command::new(tool("ntfscp", "ntfs-3g"))
        .args(["-q", "-f"])
        .arg(&img)
        .arg(&src)
        .arg("hiberfil.sys"));
    assert!(!probe_file(&img).state.hibernated);
}

/// A Windows-made NTFS (plaso's vsstest, in qcow2) has a real `$LogFile`;
/// clean as shipped, unclean once its restart areas lose the clean flag.
#[test]
fn ntfs_logfile_from_windows() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vss.raw");
    run(Command::new(tool("qemu-img", "qemu-utils"))
        .args(["convert", "-O", "raw"])
        .arg(realdata("plaso/test_data/vsstest.qcow2"))
        .arg(&img));
    let p = probe_file(&img);
    assert_eq!(p.label.as_deref(), Some("vsstest"));
    assert!(!p.state.needs_recovery, "{:?}", p.state);
    assert!(
        p.state.notes.iter().any(|n| n == "$LogFile is clean"),
        "{:?}",
        p.state.notes
    );

    // Find $LogFile's first cluster with ntfsinfo, and clear
    // RESTART_VOLUME_IS_CLEAN in both restart pages.
    let info = output(
        Command::new(tool("ntfsinfo", "ntfs-3g"))
            .args(["-v", "-i", "2"])
            .arg(&img),
    );
    let runs = info.split("Runlist:").nth(1).unwrap();
    let lcn_hex = runs.split_whitespace().nth(4).unwrap();
    let lcn = u64::from_str_radix(lcn_hex.trim_start_matches("0x"), 16).unwrap();
    let cluster: u64 = 4096;
    for page in 0..2u64 {
        let off = lcn * cluster + page * 4096;
        let pg = read_at(&img, off, 4096);
        assert_eq!(&pg[..4], b"RSTR");
        let ra = u64::from(u16::from_le_bytes([pg[24], pg[25]]));
        let flags_off = off + ra + 14;
        assert!((ra + 14) % 512 < 510);
        let flags = u16::from_le_bytes(read_at(&img, flags_off, 2).try_into().unwrap());
        assert_eq!(flags & 2, 2);
        patch(&img, flags_off, &(flags & !2).to_le_bytes());
    }
    let p = probe_file(&img);
    assert!(p.state.needs_recovery, "{:?}", p.state);
}

// ---------------------------------------------------------------- vfat

#[test]
fn vfat_dirty_bits() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, kib, flag_off, fat1_clean_bit) in [
        (16, 32768u64, 0x25u64, 0x8000u32),
        (32, 65536, 0x41, 0x0800_0000),
    ] {
        let img = dir.path().join(format!("fat{bits}"));
        run(Command::new(tool("mkfs.vfat", "dosfstools"))
            .args(["-C", "-F", &bits.to_string()])
            .arg(&img)
            .arg(kib.to_string()));
        assert!(!probe_file(&img).state.dirty);

        // Linux's dirty bit in the boot sector; fsck.fat sees it too.
        patch(&img, flag_off, &[1]);
        let fsck = output(
            Command::new(tool("fsck.vfat", "dosfstools"))
                .arg("-n")
                .arg(&img),
        );
        assert!(fsck.contains("Dirty bit is set"), "{fsck}");
        assert!(probe_file(&img).state.dirty);
        patch(&img, flag_off, &[0]);
        assert!(!probe_file(&img).state.dirty);

        // Windows' clean-shutdown bit in FAT entry 1.
        let boot = read_at(&img, 0, 512);
        let fat = u64::from(u16::from_le_bytes([boot[14], boot[15]])) * 512;
        if bits == 16 {
            let e = u16::from_le_bytes(read_at(&img, fat + 2, 2).try_into().unwrap());
            patch(&img, fat + 2, &(e & !(fat1_clean_bit as u16)).to_le_bytes());
        } else {
            let e = u32::from_le_bytes(read_at(&img, fat + 4, 4).try_into().unwrap());
            patch(&img, fat + 4, &(e & !fat1_clean_bit).to_le_bytes());
        }
        let p = probe_file(&img);
        assert!(p.state.dirty && !p.state.errors, "{:?}", p.state);
    }
}

// ---------------------------------------------------------------- btrfs

#[test]
fn btrfs_log_root() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank(dir.path(), "btrfs", 128 << 20);
    run(Command::new(tool("mkfs.btrfs", "btrfs-progs"))
        .args(["-q", "-f"])
        .arg(&img));
    assert!(!probe_file(&img).state.needs_recovery);
    let mut sb = read_at(&img, 65536, 4096);
    sb[96..104].copy_from_slice(&0x1d4000u64.to_le_bytes());
    let csum = crc32c(&sb[32..]);
    sb[..4].copy_from_slice(&csum.to_le_bytes());
    patch(&img, 65536, &sb);
    let dump = output(
        Command::new(tool("btrfs", "btrfs-progs"))
            .args(["inspect-internal", "dump-super"])
            .arg(&img),
    );
    assert!(dump.contains("[match]"), "{dump}");
    assert!(
        dump.lines()
            .any(|l| l.starts_with("log_root") && l.trim_end().ends_with("1916928")),
        "{dump}"
    );
    let p = probe_file(&img);
    assert!(p.state.needs_recovery, "{:?}", p.state);
}
