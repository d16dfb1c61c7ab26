//! Images made by the real mkfs tools, probed, and compared with what the
//! installed `blkid -p -o udev` reports on the same file. A missing tool
//! fails the test with the Debian package to install.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{compare, parse_kv};
use vmie_disk::FileDevice;
use vmie_probe::{probe, FsKind, Probe, ProbeOptions};

/// Find `name` on PATH or in the sbin directories; fail naming the package.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install {package}"))
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
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

fn blkid(img: &Path) -> std::collections::BTreeMap<String, String> {
    let out = Command::new(tool("blkid", "util-linux"))
        .args(["-p", "-o", "udev"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "blkid found nothing on {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_kv(&String::from_utf8(out.stdout).unwrap())
}

fn ours(img: &Path) -> Probe {
    let dev = FileDevice::open(img).unwrap();
    let started = std::time::Instant::now();
    let p = probe(&dev, &ProbeOptions::default())
        .unwrap()
        .unwrap_or_else(|| panic!("{}: nothing recognised", img.display()));
    assert!(started.elapsed().as_secs() < 5, "{}: slow", img.display());
    p
}

/// Probe `img`, compare with blkid, and return our result.
fn check(img: &Path, kind: FsKind) -> Probe {
    let want = blkid(img);
    let got = ours(img);
    let bad = compare(&got, &want, &[]);
    assert!(
        bad.is_empty(),
        "{}: {got:#?}\nblkid: {want:#?}\nmismatches:\n{}",
        img.display(),
        bad.join("\n")
    );
    assert_eq!(got.kind, kind, "{}", img.display());
    got
}

const U: &str = "3f1a62c4-5e0b-4d2a-9c71-0b8e4f6a2d13";

#[test]
fn ext_family() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], FsKind)] = &[
        ("mkfs.ext2", &[], FsKind::Ext2),
        ("mkfs.ext3", &[], FsKind::Ext3),
        ("mkfs.ext4", &[], FsKind::Ext4),
        ("mkfs.ext4", &["-O", "^has_journal"], FsKind::Ext4),
        (
            "mkfs.ext4",
            &["-b", "4096", "-O", "^metadata_csum,^64bit"],
            FsKind::Ext4,
        ),
        (
            "mkfs.ext3",
            &["-O", "^dir_index,^resize_inode"],
            FsKind::Ext3,
        ),
        ("mkfs.ext2", &["-r", "0"], FsKind::Ext2),
    ];
    for (i, (mkfs, extra, kind)) in cases.iter().enumerate() {
        let img = blank(dir.path(), &format!("ext{i}"), 32 << 20);
        run(Command::new(tool(mkfs, "e2fsprogs"))
            .args(["-q", "-F", "-U", U, "-L", &format!("lbl-{i}")])
            .args(*extra)
            .arg(&img));
        let p = check(&img, *kind);
        assert_eq!(p.uuid.as_deref(), Some(U));
        assert_eq!(p.size, Some(32 << 20));
        assert!(!p.state.needs_recovery && !p.state.errors, "{:?}", p.state);
        assert!(p.state.unknown_features.is_empty());
    }
}

#[test]
fn xfs_v4_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    for (i, extra) in [&["-m", "crc=1"][..], &["-m", "crc=0"][..]]
        .iter()
        .enumerate()
    {
        let img = blank(dir.path(), &format!("xfs{i}"), 300 << 20);
        let mut cmd = Command::new(tool("mkfs.xfs", "xfsprogs"));
        cmd.args(["-q", "-f", "-L", "xfs-lbl"]).args(*extra);
        if i == 0 {
            cmd.args(["-m", &format!("uuid={U}")]);
        }
        run(cmd.arg(&img));
        let p = check(&img, FsKind::Xfs);
        assert_eq!(p.size, Some(300 << 20));
        assert!(!p.state.needs_recovery, "{:?}", p.state);
        assert!(
            p.state.notes.iter().any(|n| n.contains("log is clean")),
            "{:?}",
            p.state
        );
    }
}

#[test]
fn btrfs_checksums() {
    let dir = tempfile::tempdir().unwrap();
    for csum in ["crc32c", "xxhash", "sha256", "blake2"] {
        let img = blank(dir.path(), &format!("btrfs-{csum}"), 128 << 20);
        run(Command::new(tool("mkfs.btrfs", "btrfs-progs"))
            .args([
                "-q",
                "-f",
                "-U",
                U,
                "-L",
                &format!("b-{csum}"),
                "--csum",
                csum,
            ])
            .arg(&img));
        let p = check(&img, FsKind::Btrfs);
        assert_eq!(p.size, Some(128 << 20));
        assert!(!p.state.needs_recovery);
    }
}

#[test]
fn vfat_12_16_32() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, kib, id) in [
        (12, 8192u64, "12AB34CD"),
        (16, 65536, "00C0FFEE"),
        (32, 65536, "DEADBEEF"),
    ] {
        let img = dir.path().join(format!("fat{bits}"));
        run(Command::new(tool("mkfs.vfat", "dosfstools"))
            .args([
                "-C",
                "-F",
                &bits.to_string(),
                "-i",
                id,
                "-n",
                &format!("LAB {bits}"),
            ])
            .arg(&img)
            .arg(kib.to_string()));
        let p = check(&img, FsKind::Vfat);
        assert_eq!(p.version.as_deref(), Some(format!("FAT{bits}").as_str()));
        assert!(!p.state.dirty, "{:?}", p.state);
    }
    // Without a label: no LABEL, and no LABEL_FATBOOT for "NO NAME".
    let img = dir.path().join("fat-nolabel");
    run(Command::new(tool("mkfs.vfat", "dosfstools"))
        .args(["-C", "-F", "16"])
        .arg(&img)
        .arg("32768"));
    let p = check(&img, FsKind::Vfat);
    assert_eq!(p.label, None);
}

#[test]
fn swap_variants() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[&[], &["-p", "8192"], &["-p", "65536"]];
    for (i, extra) in cases.iter().enumerate() {
        let img = blank(dir.path(), &format!("swap{i}"), 2 << 20);
        run(Command::new(tool("mkswap", "util-linux"))
            .args(["-q", "-U", U, "-L", "swp"])
            .args(*extra)
            .arg(&img));
        let p = check(&img, FsKind::Swap);
        assert_eq!(p.uuid.as_deref(), Some(U));
        assert!(!p.state.hibernated);
    }

    // A big-endian header (as mkswap writes on big-endian machines): swap
    // the version and last_page words.
    let img = blank(dir.path(), "swap-be", 2 << 20);
    run(Command::new(tool("mkswap", "util-linux"))
        .args(["-q", "-U", U])
        .arg(&img));
    let mut data = std::fs::read(&img).unwrap();
    data[1024..1028].reverse();
    data[1028..1032].reverse();
    std::fs::write(&img, &data).unwrap();
    let p = check(&img, FsKind::Swap);
    assert_eq!(p.detail("ENDIANNESS"), Some("BIG"));
    assert_eq!(p.size, Some((2 << 20) - 4096));

    // A swap area holding a Linux hibernation image: blkid says swsuspend.
    let img = blank(dir.path(), "swsuspend", 2 << 20);
    run(Command::new(tool("mkswap", "util-linux"))
        .args(["-q", "-U", U, "-L", "hib"])
        .arg(&img));
    let mut data = std::fs::read(&img).unwrap();
    data[4086..4096].copy_from_slice(b"S1SUSPEND\0");
    std::fs::write(&img, &data).unwrap();
    let p = check(&img, FsKind::Swap);
    assert_eq!(p.detail("TYPE"), Some("swsuspend"));
    assert_eq!(p.version.as_deref(), Some("s1suspend"));
    assert!(p.state.hibernated);
}

#[test]
fn ntfs_by_mkntfs() {
    let dir = tempfile::tempdir().unwrap();
    for (i, extra) in [
        &[][..],
        &["-c", "512"][..],
        &["-c", "65536"][..],
        &["-s", "4096"][..],
    ]
    .iter()
    .enumerate()
    {
        let img = blank(dir.path(), &format!("ntfs{i}"), 64 << 20);
        run(Command::new(tool("mkntfs", "ntfs-3g"))
            .args(["-F", "-Q", "-f", "-q", "-L", "Données ü"])
            .args(*extra)
            .arg(&img));
        let p = check(&img, FsKind::Ntfs);
        assert_eq!(p.label.as_deref(), Some("Données ü"));
        assert!(
            !p.state.dirty && !p.state.hibernated && !p.state.needs_recovery,
            "{:?}",
            p.state
        );
    }
}

#[test]
fn iso9660_by_genisoimage() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello").unwrap();
    let cases: &[&[&str]] = &[
        &["-V", "plain"],
        &["-J", "-V", "A_Long_Volume_Label_With_32Chars"],
        &["-J", "-V", "Mixed Case label"],
        &[
            "-J",
            "-joliet-long",
            "-V",
            "CDROM",
            "-publisher",
            "Some Publisher",
            "-p",
            "Preparer",
            "-A",
            "App id",
            "-volset",
            "VolSet",
        ],
        &["-V", "x", "-publisher", "Pub Only", "-sysid", "SYSID"],
    ];
    for (i, args) in cases.iter().enumerate() {
        let img = dir.path().join(format!("cd{i}.iso"));
        run(Command::new(tool("genisoimage", "genisoimage"))
            .arg("-quiet")
            .args(*args)
            .arg("-o")
            .arg(&img)
            .arg(&src));
        check(&img, FsKind::Iso9660);
    }
}

#[test]
fn luks_by_cryptsetup() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"not a secret").unwrap();
    for (ty, size) in [("luks1", 4u64 << 20), ("luks2", 20 << 20)] {
        let img = blank(dir.path(), ty, size);
        let mut cmd = Command::new(tool("cryptsetup", "cryptsetup-bin"));
        cmd.args([
            "luksFormat",
            "-q",
            "--batch-mode",
            "--type",
            ty,
            "--uuid",
            U,
        ]);
        cmd.args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
        if ty == "luks2" {
            cmd.args(["--label", "crypt label", "--subsystem", "sub sys"]);
        }
        run(cmd.arg(&img).arg(&key));
        let p = check(&img, FsKind::Luks);
        assert!(p.state.encrypted);
        assert_eq!(p.uuid.as_deref(), Some(U));
    }
}

/// An ext2 superblock planted in an ISO9660 image's system area: blkid -p
/// calls this ambivalent (exit code 8); we return the first match in
/// blkid's order and say so.
#[test]
fn ambivalent_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let iso = dir.path().join("amb.iso");
    run(Command::new(tool("genisoimage", "genisoimage"))
        .args(["-quiet", "-V", "amb", "-o"])
        .arg(&iso)
        .arg(&src));
    let ext = blank(dir.path(), "ext2", 4 << 20);
    run(Command::new(tool("mkfs.ext2", "e2fsprogs"))
        .args(["-q", "-F"])
        .arg(&ext));
    let sb = std::fs::read(&ext).unwrap()[1024..2048].to_vec();
    let mut data = std::fs::read(&iso).unwrap();
    data[1024..2048].copy_from_slice(&sb);
    // Larger than a floppy, where blkid stops at the first match.
    data.resize(4 << 20, 0);
    std::fs::write(&iso, &data).unwrap();

    let out = Command::new(tool("blkid", "util-linux"))
        .args(["-p", "-o", "udev"])
        .arg(&iso)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(8),
        "blkid should find this ambivalent"
    );
    let p = ours(&iso);
    assert_eq!(p.kind, FsKind::Ext2);
    assert_eq!(p.detail("AMBIVALENT"), Some("iso9660"));
}

/// MD superblocks at every place blkid looks: v0.90 (built here, both byte
/// orders) and v1.0/v1.1 (the real v1.2 superblock of util-linux's
/// mdraid-1 image moved, with its offset and checksum updated).
#[test]
fn md_superblock_placements() {
    let dir = tempfile::tempdir().unwrap();
    let len: usize = 3 << 20;

    for big_endian in [false, true] {
        let mut data = vec![0u8; len];
        let off = (len & !0xffff) - 0x10000;
        let words: [(usize, u32); 9] = [
            (0, 0xa92b_4efc),
            (4, 0),
            (8, 90),
            (12, 3),
            (20, 0x0123_4567),
            (32, 1024),
            (52, 0x89ab_cdef),
            (56, 0xfeed_f00d),
            (60, 0x1357_9bdf),
        ];
        for (o, v) in words {
            let b = if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            data[off + o..off + o + 4].copy_from_slice(&b);
        }
        let img = dir.path().join(format!("md090-{big_endian}"));
        std::fs::write(&img, &data).unwrap();
        let p = check(&img, FsKind::LinuxRaid);
        assert_eq!(p.version.as_deref(), Some("0.90.3"));
        assert_eq!(
            p.uuid.as_deref(),
            Some("01234567-89ab-cdef-feed-f00d13579bdf")
        );
    }

    let real = common::unxz(&common::realdata(
        "util-linux-blkid/tests/ts/blkid/images-fs/mdraid-1.img.xz",
    ));
    let sb = &real[4096..8192];
    for (place, version) in [(0usize, "1.1"), ((len & !0xfff) - 0x2000, "1.0")] {
        let mut moved = sb.to_vec();
        moved[144..152].copy_from_slice(&((place as u64) >> 9).to_le_bytes());
        let max_dev = u32::from_le_bytes(moved[220..224].try_into().unwrap()) as usize;
        moved[216..220].fill(0);
        let csummed = &moved[..256 + max_dev * 2];
        let mut sum: u64 = csummed
            .chunks_exact(4)
            .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
            .sum();
        if csummed.len() % 4 == 2 {
            let t = &csummed[csummed.len() - 2..];
            sum += u64::from(u16::from_le_bytes([t[0], t[1]]));
        }
        let csum = ((sum >> 32) + (sum & 0xffff_ffff)) as u32;
        moved[216..220].copy_from_slice(&csum.to_le_bytes());
        let mut data = vec![0u8; len];
        data[place..place + 4096].copy_from_slice(&moved);
        let img = dir.path().join(format!("md{version}"));
        std::fs::write(&img, &data).unwrap();
        let p = check(&img, FsKind::LinuxRaid);
        assert_eq!(p.version.as_deref(), Some(version));
        assert_eq!(p.label.as_deref(), Some("troy.t-8ch.de:0"));
    }
}
