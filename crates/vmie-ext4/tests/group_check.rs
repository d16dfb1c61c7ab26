//! Never make a filesystem worse: a block group whose bitmaps disagree with
//! its descriptor, its own metadata or the superblock is not trusted, and
//! the write is refused with nothing written (issue 11: fixups that
//! allocated blocks or inodes in use on corrupt images).
//!
//! Each test corrupts a real mke2fs image minimally, with debugfs where it
//! can (it re-seals every checksum, so only the disagreement remains), and
//! asserts: the writer refuses with `Corrupt` naming the group and what
//! disagrees, the overlay holds no change, and the image bytes are those
//! of before. What the default checks cannot see, and `e2fsck -fn` (the
//! CLI's `--check-fs`) does, is pinned by
//! `a_freed_block_of_an_untouched_file_is_only_seen_by_e2fsck`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use vmie_guestfs::{FsError, GuestFs, NewAttrs};

/// 16 MiB ext4 (1 KiB blocks, 2 groups, flex_bg, metadata_csum), with
/// /etc/hosts, /etc/fstab and a few files in /data.
fn image(args: &[&str]) -> Img {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::create_dir_all(t.path().join("data")).unwrap();
    std::fs::write(t.path().join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(
        t.path().join("etc/fstab"),
        b"/dev/sda1 / ext4 defaults 0 1\n",
    )
    .unwrap();
    for i in 0..20 {
        std::fs::write(t.path().join(format!("data/f{i}")), vec![b'x'; 3000]).unwrap();
    }
    mkfs("ext4", args, 16, Some(t.path()))
}

fn debugfs(img: &Path, w: bool, cmd: &str) -> String {
    let mut c = Command::new("debugfs");
    if w {
        c.arg("-w");
    }
    let out = c.args(["-R", cmd]).arg(img).output().unwrap();
    assert!(out.status.success(), "debugfs {cmd}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.lines()
            .any(|l| l.contains(": ") && !l.starts_with("debugfs ")),
        "debugfs {cmd}: {err}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bmap(img: &Path, path: &str) -> u64 {
    debugfs(img, false, &format!("bmap {path} 0"))
        .trim()
        .parse()
        .unwrap()
}

fn ino(img: &Path, path: &str) -> u64 {
    let out = debugfs(
        img,
        false,
        &format!("ls -d {}", Path::new(path).parent().unwrap().display()),
    );
    let name = Path::new(path).file_name().unwrap().to_str().unwrap();
    // "  414  (12) hosts   ..." entries
    let toks: Vec<&str> = out.split_whitespace().collect();
    let at = toks.iter().position(|t| *t == name).unwrap();
    toks[at - 2].parse().unwrap()
}

/// A descriptor field (16 bits lo at `lo`, hi at `hi` with 64-byte
/// descriptors) of group `grp`, from the image bytes.
fn gd_field(img: &Path, grp: u64, lo: usize, hi: usize) -> u64 {
    let b = std::fs::read(img).unwrap();
    let sb = &b[1024..2048];
    let bs = 1024u64 << u32::from_le_bytes(sb[0x18..0x1C].try_into().unwrap());
    let fdb = u64::from(u32::from_le_bytes(sb[0x14..0x18].try_into().unwrap()));
    let big = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap()) & 0x80 != 0;
    let ds = if big {
        u64::from(u16::from_le_bytes(sb[0xFE..0x100].try_into().unwrap()))
    } else {
        32
    };
    let at = ((fdb + 1) * bs + grp * ds) as usize;
    let mut v = u64::from(u16::from_le_bytes(
        b[at + lo..at + lo + 2].try_into().unwrap(),
    ));
    if big {
        v |= u64::from(u16::from_le_bytes(
            b[at + hi..at + hi + 2].try_into().unwrap(),
        )) << 16;
    }
    v
}

/// Run `op` on a fresh session over `img`: it must refuse with `Corrupt`
/// at `place` whose detail contains `want`, and leave overlay and image
/// untouched.
fn assert_refused(
    img: &Path,
    place: &str,
    want: &str,
    op: impl FnOnce(&mut vmie_ext4::Ext4Fs) -> Result<(), FsError>,
) {
    let before = std::fs::read(img).unwrap();
    let mut s = open(img);
    match op(&mut s.fs) {
        Err(FsError::Corrupt {
            fs,
            place: p,
            detail,
        }) => {
            assert_eq!(fs, "test");
            assert_eq!(p, place, "{detail}");
            assert!(detail.contains(want), "want {want:?} in {detail:?}");
        }
        other => panic!("expected a Corrupt refusal at {place}, got {other:?}"),
    }
    assert!(
        s.overlay.changes().unwrap().is_empty(),
        "the overlay holds changes"
    );
    s.commit();
    assert!(std::fs::read(img).unwrap() == before, "the image changed");
}

/// Superblock free blocks and free inodes, from the image bytes.
fn sb_free(img: &Path) -> (u64, u64) {
    let b = std::fs::read(img).unwrap();
    let sb = &b[1024..2048];
    let lo = u64::from(u32::from_le_bytes(sb[0x0C..0x10].try_into().unwrap()));
    let hi = u64::from(u32::from_le_bytes(sb[0x158..0x15C].try_into().unwrap()));
    let big = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap()) & 0x80 != 0;
    let inodes = u64::from(u32::from_le_bytes(sb[0x10..0x14].try_into().unwrap()));
    (if big { lo | hi << 32 } else { lo }, inodes)
}

/// Mark block `b` free as a consistent corruption: debugfs `freeb` clears
/// the bit (re-sealing the bitmap checksum); the descriptor and superblock
/// counts are raised to match and their checksums re-sealed.
fn freeb_sealed(img: &Path, b: u64) {
    let grp = (b - 1) / 8192;
    let free = gd_field(img, grp, 0x0C, 0x2C);
    let (sbf, _) = sb_free(img);
    debugfs(img, true, &format!("freeb {b}"));
    debugfs(
        img,
        true,
        &format!("set_bg {grp} free_blocks_count {}", free + 1),
    );
    debugfs(img, true, &format!("set_bg {grp} checksum calc"));
    debugfs(img, true, &format!("ssv free_blocks_count {}", sbf + 1));
}

fn create(fs: &mut vmie_ext4::Ext4Fs, path: &str, len: usize) -> Result<(), FsError> {
    fs.create_file(&gp(path), &vec![b'n'; len], &NewAttrs::default())
}

fn e2fsck_n(img: &Path) -> (bool, String) {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The bitmap marks a used data block free (its checksum re-sealed) and the
/// descriptor keeps its old count: zero bits and count disagree.
#[test]
fn bitmap_and_descriptor_count_disagree() {
    let img = image(&[]);
    let b = bmap(&img.path, "/etc/hosts");
    let grp = (b - 1) / 8192;
    let free = gd_field(&img.path, grp, 0x0C, 0x2C);
    // debugfs freeb clears the bit and re-seals the bitmap checksum only.
    debugfs(&img.path, true, &format!("freeb {b}"));
    assert_eq!(gd_field(&img.path, grp, 0x0C, 0x2C), free);
    assert!(!e2fsck_n(&img.path).0);
    assert_refused(
        &img.path,
        &format!("group {grp}"),
        &format!(
            "the block bitmap has {} free blocks, the group descriptor {free}",
            free + 1
        ),
        |fs| create(fs, "/etc/new", 5000),
    );
}

/// A block of the parent directory marked free, counts and checksums
/// re-sealed: only a cross-check can see it. The allocator
/// picks it (the lowest free block) for the new file, and the check
/// against the blocks mapped by the inodes the operation read refuses.
#[test]
fn a_freed_block_of_the_directory_being_written_is_not_allocated() {
    let img = image(&[]);
    let b = bmap(&img.path, "/etc");
    let etc = ino(&img.path, "/etc");
    freeb_sealed(&img.path, b);
    assert_refused(
        &img.path,
        &format!("group {}", (b - 1) / 8192),
        &format!("the block bitmap marks block {b} free, but inode {etc} maps it"),
        |fs| create(fs, "/etc/new", 3000),
    );
}

/// The limit of the default checks, documented: a block of a file the
/// operation does not read, marked free with every count and checksum
/// re-sealed, is consistent as far as the bitmap, descriptor and
/// superblock go. Only a scan of every inode sees it: `e2fsck -fn`, which
/// the CLI's `--check-fs` runs before committing, reports it.
#[test]
fn a_freed_block_of_an_untouched_file_is_only_seen_by_e2fsck() {
    let img = image(&[]);
    let b = bmap(&img.path, "/etc/hosts");
    freeb_sealed(&img.path, b);
    let (ok, out) = e2fsck_n(&img.path);
    assert!(!ok && out.contains("Block bitmap differences"), "{out}");
}

/// The inode bitmap block of group 1 (in group 0, flex_bg) marked free,
/// counts re-sealed: group 0's bitmap no longer covers the metadata it holds.
#[test]
fn group_metadata_not_marked_in_use() {
    let img = image(&[]);
    let ib1 = gd_field(&img.path, 1, 0x04, 0x24);
    assert!(ib1 < 8193, "flex_bg puts group 1's bitmaps in group 0");
    freeb_sealed(&img.path, ib1);
    assert_refused(
        &img.path,
        "group 0",
        &format!("inode bitmap of group 1 (block {ib1}) is not marked in use"),
        |fs| create(fs, "/etc/new", 3000),
    );
}

/// The padding bit past the last block of a short last group cleared (no
/// metadata_csum, so no bitmap checksum to re-seal). One group of 8191
/// blocks in a 1 KiB-block bitmap of 8192 bits.
#[test]
fn bitmap_padding_not_set() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("hosts"), b"x\n").unwrap();
    let img = mkfs("ext4", &["-O", "^metadata_csum"], 8, Some(t.path()));
    let bb = gd_field(&img.path, 0, 0x00, 0x20);
    let mut bytes = std::fs::read(&img.path).unwrap();
    let last = (bb * 1024 + 1023) as usize;
    assert_eq!(bytes[last] & 0x80, 0x80, "mke2fs sets the padding");
    bytes[last] &= 0x7F;
    std::fs::write(&img.path, bytes).unwrap();
    assert!(!e2fsck_n(&img.path).0);
    assert_refused(
        &img.path,
        "group 0",
        "block bitmap padding bit 8191 (past the group's 8191 blocks) is not set",
        |fs| create(fs, "/new", 3000),
    );
}

/// A bit flipped in a block bitmap, its checksum not re-sealed.
#[test]
fn bitmap_checksum_mismatch() {
    let img = image(&[]);
    let bb = gd_field(&img.path, 0, 0x00, 0x20);
    let mut bytes = std::fs::read(&img.path).unwrap();
    // Block 8000 of group 0 is free (the tree fills far less).
    let at = (bb * 1024) as usize + 7999 / 8;
    bytes[at] ^= 1 << (7999 % 8);
    std::fs::write(&img.path, bytes).unwrap();
    assert_refused(
        &img.path,
        "group 0",
        &format!("block bitmap (block {bb}) checksum mismatch"),
        |fs| create(fs, "/etc/new", 3000),
    );
}

/// A linked inode marked free, counts and checksums re-sealed: the allocator would hand it out again and two names would
/// share it ("Inode N ref count is 1, should be 2"). Its link count says so.
#[test]
fn a_linked_inode_marked_free_is_not_allocated() {
    let img = image(&[]);
    let n = ino(&img.path, "/etc/hosts");
    let free = gd_field(&img.path, 0, 0x0E, 0x2E);
    let (_, sbi) = sb_free(&img.path);
    debugfs(&img.path, true, &format!("freei <{n}>"));
    debugfs(
        &img.path,
        true,
        &format!("set_bg 0 free_inodes_count {}", free + 1),
    );
    debugfs(&img.path, true, "set_bg 0 checksum calc");
    debugfs(
        &img.path,
        true,
        &format!("ssv free_inodes_count {}", sbi + 1),
    );
    assert_refused(
        &img.path,
        "group 0",
        &format!("the inode bitmap marks inode {n} free, but it has 1 link(s)"),
        |fs| create(fs, "/etc/new", 10),
    );
}

/// The same with the descriptor's old free-inodes count kept.
#[test]
fn inode_bitmap_and_descriptor_count_disagree() {
    let img = image(&[]);
    let n = ino(&img.path, "/etc/hosts");
    let free = gd_field(&img.path, 0, 0x0E, 0x2E);
    // debugfs freei clears the bit and re-seals the bitmap checksum only.
    debugfs(&img.path, true, &format!("freei <{n}>"));
    assert_refused(
        &img.path,
        "group 0",
        &format!(
            "the inode bitmap has {} free inodes, the group descriptor {free}",
            free + 1
        ),
        |fs| create(fs, "/etc/new", 10),
    );
}

/// The superblock's free-blocks count below what the group holds (the
/// superblock checksum re-sealed by debugfs): on a cleanly unmounted
/// filesystem the superblock count is exact, so this is corruption.
#[test]
fn superblock_free_count_below_a_group() {
    let img = image(&[]);
    debugfs(&img.path, true, "ssv free_blocks_count 50");
    let free0 = gd_field(&img.path, 0, 0x0C, 0x2C);
    assert_refused(
        &img.path,
        "group 0",
        &format!("the groups checked have {free0} free blocks, more than the superblock's 50"),
        |fs| create(fs, "/etc/new", 3000),
    );
}

/// Clean images of each flavour pass the checks, in every group, and stay
/// clean for e2fsck.
#[test]
fn clean_images_pass_the_checks() {
    for args in [
        &[][..],
        &["-O", "^metadata_csum,^64bit"][..],
        &["-O", "^flex_bg"][..],
    ] {
        let img = image(args);
        let mut s = open(&img.path);
        // 12 MiB spills into group 1 (and its BLOCK_UNINIT or used blocks).
        create(&mut s.fs, "/etc/big", 12 << 20).unwrap();
        for i in 0..30 {
            create(&mut s.fs, &format!("/data/n{i}"), 100).unwrap();
        }
        s.fs.remove(&gp("/data/f3")).unwrap();
        s.commit();
        fsck(&img.path);
    }
}

/// Found by tests/mutation.rs (plain seed 62): a file whose xattr-block
/// pointer was corrupted to a block past the volume end was rewritten, and
/// its recomputed i_blocks counted that block ("i_blocks is 4, should be
/// 2"). The kernel refuses such an inode; so does the writer now, and an
/// in-range block that holds no xattr block likewise.
#[test]
fn a_corrupt_xattr_block_pointer_is_refused() {
    for bad in ["999999999", "7"] {
        let img = image(&[]);
        let n = ino(&img.path, "/etc/fstab");
        debugfs(&img.path, true, &format!("sif /etc/fstab file_acl {bad}"));
        let want = if bad == "7" {
            "does not hold one"
        } else {
            "is outside the volume"
        };
        assert_refused(&img.path, &format!("inode {n}"), want, |fs| {
            fs.replace_file(&gp("/etc/fstab"), b"UUID=x / ext4 defaults 0 1\n")
        });
    }
}
