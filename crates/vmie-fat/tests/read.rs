//! Reading volumes made by mkfs.fat and populated by mtools: long names,
//! deep directories, an empty file, a fragmented multi-cluster file; what
//! we read must equal what mtools reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vmie_fat::FatKind;
use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt};

fn check_volume(bits: u32, kb: u64, args: &[&str], kind: FatKind) {
    let (img, files) = populated(bits, kb, args);
    let s = open(&img.path);
    assert_eq!(s.fs.fat_kind(), kind);
    for (p, d) in &files {
        assert_eq!(&s.fs.read(p).unwrap(), d, "{p}");
        assert_eq!(&img.get(p), d, "mtools {p}");
        let (_, m) = s.fs.metadata(p).unwrap();
        assert_eq!(m.size, d.len() as u64);
        assert_eq!(m.file_type, FileType::Regular);
        assert_eq!(m.mode, 0o644);
        assert!(m.mtime.secs > 1_700_000_000, "{p}: {:?}", m.mtime);
    }
    // Case-insensitive lookup, by long and short name.
    assert_eq!(s.fs.read("/efi/boot/bootx64.efi").unwrap().len(), 100_000);
    assert_eq!(s.fs.read("/GRUB.CFG").unwrap(), b"set timeout=5\n");
    assert_eq!(s.fs.read("/LONGFI~1.CON").unwrap(), b"unicode\n");
    // Every directory lists as mdir lists it.
    for dir in [
        "/",
        "/EFI",
        "/EFI/Microsoft/Boot",
        "/a/b/c/d/e/A directory with a long name",
    ] {
        let (_, ents) = s.fs.list(dir).unwrap();
        let mut ours: Vec<String> = ents
            .iter()
            .map(|e| {
                let mut n = String::from_utf8(e.name.clone()).unwrap();
                if e.file_type == FileType::Directory {
                    n.push('/');
                }
                n
            })
            .collect();
        ours.sort();
        assert_eq!(ours, img.ls(dir), "{dir}");
    }
    let (_, m) = s.fs.metadata("/a/b").unwrap();
    assert_eq!((m.file_type, m.mode), (FileType::Directory, 0o755));
    // Inode numbers: distinct, stable.
    let i1 = s.fs.metadata("/grub.cfg").unwrap().1.inode;
    let i2 = s.fs.metadata("/empty.txt").unwrap().1.inode;
    assert!(i1.is_some() && i1 != i2);
    assert_eq!(s.fs.metadata("/GRUB.cfg").unwrap().1.inode, i1);
    assert!(matches!(
        s.fs.readlink("/grub.cfg"),
        Err(FsError::NotASymlink { .. })
    ));
    assert!(matches!(
        s.fs.read_file(&gp("/EFI/BOOT/BOOTX64.EFI"), 99_999),
        Err(FsError::TooLarge { .. })
    ));
    assert!(matches!(s.fs.read("/nope"), Err(FsError::NotFound { .. })));
    assert!(matches!(
        s.fs.read("/grub.cfg/x"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        s.fs.read("/EFI"),
        Err(FsError::IsADirectory { .. })
    ));
}

#[test]
fn read_fat12() {
    check_volume(12, 4096, &[], FatKind::Fat12);
}

#[test]
fn read_fat16() {
    check_volume(16, 20_000, &["-n", "EFISYSTEM"], FatKind::Fat16);
}

#[test]
fn read_fat32() {
    check_volume(32, 40_000, &[], FatKind::Fat32);
}

#[test]
fn read_fat32_4k_sectors() {
    check_volume(32, 300_000, &["-S", "4096", "-s", "1"], FatKind::Fat32);
}

/// Long-name entries whose checksum does not match their short entry, or
/// whose sequence is broken, are ignored: the short name is shown.
#[test]
fn orphan_long_names_fall_back_to_short_names() {
    let img = mkfs(16, 20_000, &[]);
    img.put("/A longer name number one.txt", b"one");
    img.put("/A longer name number two.txt", b"two");
    let mut b = img.bytes();
    let bps = u16::from_le_bytes([b[11], b[12]]) as usize;
    let reserved = u16::from_le_bytes([b[14], b[15]]) as usize;
    let fatsz = u16::from_le_bytes([b[22], b[23]]) as usize;
    let root = (reserved + 2 * fatsz) * bps;
    // Entries: [lfn3 lfn2 lfn1 short] twice. The first file's checksum
    // breaks; the second loses its middle long-name entry.
    let slots: Vec<usize> = (0..16).map(|i| root + 32 * i).collect();
    assert_eq!(b[slots[0]], 0x43);
    assert_eq!(b[slots[4]], 0x43);
    for &s in &slots[0..3] {
        b[s + 13] ^= 0xFF;
    }
    b[slots[5]] = 0xE5;
    std::fs::write(&img.path, &b).unwrap();
    let s = open(&img.path);
    let mut names: Vec<String> =
        s.fs.read_dir(&gp("/"))
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.name).unwrap())
            .collect();
    names.sort();
    assert_eq!(names, ["ALONGE~1.TXT", "ALONGE~2.TXT"]);
    assert_eq!(s.fs.read("/alonge~2.txt").unwrap(), b"two");
}
