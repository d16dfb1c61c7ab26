//! Hostile images on the read side: minimal corruptions of a real mke2fs
//! image that made ext4-view panic or allocate a size taken from the image
//! (found by the mutation campaign of issue 11). Every read must return a
//! clean error naming the volume and path; none may panic or allocate what
//! a corrupted field asks for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, MemDevice};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{FsError, GuestFs, GuestPath};

const NAME: &str = "entry-00007-with-a-longer-name";

/// /big: an htree directory of 400 entries; /lsym: a symlink whose 100-byte
/// target lives in a block; /etc/hosts.
fn image() -> Img {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("big")).unwrap();
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    for i in 0..400 {
        std::fs::write(
            t.path()
                .join(format!("big/entry-{i:05}-with-a-longer-name")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("a".repeat(100), t.path().join("lsym")).unwrap();
    let img = mkfs("ext4", &[], 16, Some(t.path()));
    assert!(is_htree(&img.path, "/big"), "/big must be an htree");
    img
}

fn debugfs_w(img: &Path, cmd: &str) {
    let out = Command::new("debugfs")
        .args(["-w", "-R", cmd])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("sif:"),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Physical block of logical block `l` of `path`.
fn bmap(img: &Path, path: &str, l: u64) -> u64 {
    let out = Command::new("debugfs")
        .args(["-R", &format!("bmap {path} {l}")])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn open_mem(bytes: Vec<u8>) -> Ext4Fs {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new("hostile", bytes));
    Ext4Fs::open(dev, "hostile.img partition 1").unwrap()
}

/// A refusal of corrupt data naming the volume and `place`.
fn assert_corrupt(r: Result<impl std::fmt::Debug, FsError>, place: &str, what: &str) -> String {
    match r {
        Err(FsError::Corrupt {
            fs,
            place: p,
            detail,
        }) => {
            assert_eq!(fs, "hostile.img partition 1", "{what}");
            assert_eq!(p, place, "{what}: {detail}");
            detail
        }
        other => panic!("{what}: expected Corrupt at {place}, got {other:?}"),
    }
}

/// The dx root's `count` (offset 0x22 of the directory's first block) set
/// past what the block holds: ext4-view 1.0.0 checksums `count` entries
/// before comparing the checksum and slices past the block
/// (dir_block.rs:134, "range end index N out of range for slice of length
/// 4096"). No checksum needs re-sealing: the panic comes first.
#[test]
fn htree_root_count_past_the_block_is_a_clean_error() {
    let img = image();
    let root = bmap(&img.path, "/big", 0);
    let mut bytes = std::fs::read(&img.path).unwrap();
    let bs = 1024u64 << u32::from_le_bytes(bytes[1024 + 0x18..1024 + 0x1C].try_into().unwrap());
    let at = (root * bs + 0x22) as usize;
    bytes[at..at + 2].copy_from_slice(&0xFFFFu16.to_le_bytes());

    // The input does make ext4-view itself panic (this is the bug guarded).
    let raw = bytes.clone();
    let direct = std::panic::catch_unwind(move || {
        let fs = ext4_view::Ext4::load(Box::new(raw)).unwrap();
        let _ = fs.read_dir("/big").map(|it| it.count());
    });
    assert!(direct.is_err(), "ext4-view no longer panics on this input");

    let fs = open_mem(bytes);
    let big = gp("/big");
    let d = assert_corrupt(fs.read_dir(&big), "/big", "read_dir");
    assert!(d.contains("the ext4 reader failed on corrupt data"), "{d}");
    let entry = big.join(NAME.as_bytes());
    let d = assert_corrupt(fs.symlink_metadata(&entry), &entry.to_string(), "lookup");
    assert!(d.contains("out of range"), "{d}");
    assert_corrupt(fs.read_file(&entry, 1 << 20), &entry.to_string(), "read");
    // The reader was dropped after each panic and reloads: the rest of the
    // volume still reads.
    assert_eq!(
        fs.read_file(&gp("/etc/hosts"), 1 << 20).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_corrupt(fs.read_dir(&big), "/big", "read_dir again");
}

/// A long symlink whose inode claims 2^40 bytes (checksum re-sealed by
/// debugfs; ext4-view itself refuses sizes of 2^32 blocks or more): it
/// would `vec![0; 2^40]` for the target and abort the process. We refuse from the size in the inode, before it reads.
#[test]
fn symlink_target_sized_from_the_image_is_refused_before_reading() {
    let img = image();
    debugfs_w(&img.path, "sif /lsym size_hi 0x100");
    let fs = open_mem(std::fs::read(&img.path).unwrap());
    let m = fs.symlink_metadata(&gp("/lsym")).unwrap();
    assert_eq!(m.size, (1 << 40) + 100);
    let d = assert_corrupt(fs.read_link(&gp("/lsym")), "/lsym", "read_link");
    assert!(d.contains("1099511627876 bytes"), "{d}");
    // Not followed as an intermediate component either.
    match fs.read_dir(&gp("/lsym/x")) {
        Err(FsError::NotADirectory { path, .. }) => assert_eq!(path, "/lsym"),
        other => panic!("expected NotADirectory, got {other:?}"),
    }
    // Resolution through the guest API stops at the same check.
    assert!(vmie_guestfs::resolve(&fs, b"/lsym", true).is_err());
}

/// A regular file claiming 2^40 bytes: read_file refuses by the caller's
/// limit, and the self-check compares sizes before reading, so neither
/// hands ext4-view the size to allocate.
#[test]
fn file_size_from_the_image_is_checked_before_reading() {
    let img = image();
    debugfs_w(&img.path, "sif /etc/hosts size_hi 0x100");
    let fs = open_mem(std::fs::read(&img.path).unwrap());
    match fs.read_file(&gp("/etc/hosts"), 256 << 20) {
        Err(FsError::TooLarge { size, .. }) => assert_eq!(size, (1 << 40) + 20),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let d = assert_corrupt(
        fs.verify_paths(&[(gp("/etc/hosts"), Some(b"127.0.0.1 localhost\n".to_vec()))]),
        "/etc/hosts",
        "verify_paths",
    );
    assert!(d.contains("read back 1099511627796 bytes"), "{d}");
}

/// A directory claiming 2^40 bytes: ext4-view would walk 2^30 blocks (its
/// extent tree can map the same blocks again and again). Refused by its
/// size before ext4-view walks it, for listing and for lookups through it.
#[test]
fn directory_size_from_the_image_is_capped() {
    let img = image();
    debugfs_w(&img.path, "sif /big size_hi 0x100");
    let fs = open_mem(std::fs::read(&img.path).unwrap());
    let d = assert_corrupt(fs.read_dir(&gp("/big")), "/big", "read_dir");
    assert!(d.contains("directory size 1099511"), "{d}");
    let entry = gp("/big").join(NAME.as_bytes());
    assert_corrupt(fs.read_file(&entry, 1 << 20), "/big", "lookup through it");
    // Other directories are unaffected.
    assert_eq!(fs.read_dir(&gp("/etc")).unwrap().len(), 1);
}

/// A group count that cannot fit its descriptor table in group 0 (a
/// corrupted blocks-per-group of 8): refused at open, before ext4-view
/// allocates a record per group.
#[test]
fn group_count_from_the_image_is_bounded_at_open() {
    let img = image();
    let mut bytes = std::fs::read(&img.path).unwrap();
    bytes[1024 + 0x20..1024 + 0x24].copy_from_slice(&8u32.to_le_bytes());
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new("hostile", bytes));
    match Ext4Fs::open(dev, "hostile.img partition 1") {
        Err(FsError::Corrupt { detail, .. }) => {
            assert!(detail.contains("do not fit in group 0"), "{detail}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Found by the ext4_read fuzz target (fuzz/regressions/ext4_read): a high
/// half of the block count without the 64bit feature, which ext4-view reads
/// anyway and sizes its group table from (a 49 GB allocation). Refused at
/// open.
#[test]
fn block_count_high_half_without_64bit_is_refused_at_open() {
    let img = mkfs("ext4", &["-O", "^64bit,^metadata_csum"], 8, None);
    let mut bytes = std::fs::read(&img.path).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[1024 + 0x60..1024 + 0x64].try_into().unwrap()) & 0x80,
        0,
        "the test image is not 64bit"
    );
    bytes[1024 + 0x150..1024 + 0x154].copy_from_slice(&5887u32.to_le_bytes());
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new("hostile", bytes));
    match Ext4Fs::open(dev, "hostile.img partition 1") {
        Err(FsError::Corrupt { detail, .. }) => {
            assert!(detail.contains("without the 64bit feature"), "{detail}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// The clean image reads as before through every checked path.
#[test]
fn clean_image_reads() {
    let img = image();
    let fs = open_mem(std::fs::read(&img.path).unwrap());
    assert_eq!(fs.read_dir(&gp("/big")).unwrap().len(), 400);
    assert_eq!(
        fs.read_link(&gp("/lsym")).unwrap(),
        "a".repeat(100).as_bytes()
    );
    let p = GuestPath::root().join(b"big").join(NAME.as_bytes());
    assert_eq!(fs.read_file(&p, 100).unwrap(), b"7\n");
    fs.verify_paths(&[(p, Some(b"7\n".to_vec())), (gp("/big/nope"), None)])
        .unwrap();
}
