//! Cases the ntfs-3g tools cannot make offline, made by patching records
//! and index entries of an mkntfs image: reparse points (symlink, junction,
//! WOF), a DOS name, compressed and encrypted data, a valid data length below
//! the file size, and directory entries naming a free or reused record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt, GuestPath};

const AT_FILE_NAME: u32 = 0x30;
const AT_DATA: u32 = 0x80;
const AT_REPARSE_POINT: u32 = 0xC0;
const TAG_SYMLINK: u32 = 0xA000_000C;
const TAG_MOUNT_POINT: u32 = 0xA000_0003;
const TAG_WOF: u32 = 0x8000_0017;

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Reparse data: a symlink (with `flags`) or a junction (`flags` None).
fn reparse_value(tag: u32, sub: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
    let (s, p) = (utf16(sub), utf16(print));
    let mut body = Vec::new();
    for v in [0, s.len(), s.len(), p.len()] {
        body.extend((v as u16).to_le_bytes());
    }
    if let Some(f) = flags {
        body.extend(f.to_le_bytes());
    }
    body.extend(&s);
    body.extend(&p);
    let mut d = tag.to_le_bytes().to_vec();
    d.extend((body.len() as u16).to_le_bytes());
    d.extend([0, 0]);
    d.extend(body);
    d
}

fn inode(fs: &dyn GuestFs, name: &str) -> u64 {
    fs.symlink_metadata(&GuestPath::from(name))
        .unwrap()
        .inode
        .unwrap()
}

/// Give the file `name` (MFT record `rn`) a reparse point, in its record
/// (attribute + `$STANDARD_INFORMATION` flag) and in its directory entry.
fn add_reparse(img: &Path, name: &str, rn: u64, value: &[u8]) {
    let tag = u32::from_le_bytes(value[0..4].try_into().unwrap());
    patch_record(img, rn, |rec| {
        append_resident(rec, AT_REPARSE_POINT, value);
        let si = find_attrs(rec, 0x10)[0];
        let voff = si + u16::from_le_bytes([rec[si + 20], rec[si + 21]]) as usize;
        rec[voff + 33] |= 0x04; // file attributes (at +32) |= REPARSE_POINT (0x400)
    });
    let n = patch_index_entries(img, name, |e| {
        e[16 + 57] |= 0x04;
        e[16 + 60..16 + 64].copy_from_slice(&tag.to_le_bytes());
    });
    assert_eq!(n, 1, "index entry of {name}");
}

/// Set attribute flags on the unnamed `$DATA` of record `rn`.
fn set_data_flags(img: &Path, rn: u64, flags: u16) {
    patch_record(img, rn, |rec| {
        let a = find_attrs(rec, AT_DATA)[0];
        let f = u16::from_le_bytes([rec[a + 12], rec[a + 13]]) | flags;
        rec[a + 12..a + 14].copy_from_slice(&f.to_le_bytes());
    });
}

#[test]
fn crafted_cases() {
    let img = mkntfs(16, Some(4096), "crafted");
    let mut rng = XorShift::new(0xC4AF);
    let target = rng.bytes(5000);
    let long = rng.bytes(3000);
    let vdl = rng.bytes(100_000);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("target.txt", target.clone()),
        ("link", b"L".to_vec()),
        ("junction", b"J".to_vec()),
        ("junction-elsewhere", b"E".to_vec()),
        ("wof.bin", rng.bytes(700)),
        ("A Long File Name.txt", long.clone()),
        ("ALONGF~1.TXT", b"the orphaned short-name file".to_vec()),
        ("comp.bin", rng.bytes(20_000)),
        ("enc.bin", rng.bytes(300)),
        ("vdl.bin", vdl.clone()),
        ("gone.txt", b"gone".to_vec()),
        ("stale.txt", b"stale".to_vec()),
    ];
    for (name, data) in &files {
        img.add(name, data);
    }
    let p = &img.path;
    let before = open(p);
    let rn = |name: &str| inode(&before, &format!("/{name}"));
    let (link, junction, elsewhere, wof) = (
        rn("link"),
        rn("junction"),
        rn("junction-elsewhere"),
        rn("wof.bin"),
    );
    let (long_rn, comp, enc, vdl_rn, gone) = (
        rn("A Long File Name.txt"),
        rn("comp.bin"),
        rn("enc.bin"),
        rn("vdl.bin"),
        rn("gone.txt"),
    );
    let long_seq = {
        let raw = std::fs::read(p).unwrap();
        let (_, mft, size) = layout(&raw);
        let at = (mft + long_rn * size as u64) as usize;
        u16::from_le_bytes([raw[at + 0x10], raw[at + 0x11]])
    };
    drop(before);

    add_reparse(
        p,
        "link",
        link,
        &reparse_value(TAG_SYMLINK, "target.txt", "target.txt", Some(1)),
    );
    add_reparse(
        p,
        "junction",
        junction,
        &reparse_value(
            TAG_MOUNT_POINT,
            "\\??\\C:\\target.txt",
            "C:\\target.txt",
            None,
        ),
    );
    add_reparse(
        p,
        "junction-elsewhere",
        elsewhere,
        &reparse_value(TAG_MOUNT_POINT, "\\??\\Volume{0123}\\x", "", None),
    );
    let mut wof_value = TAG_WOF.to_le_bytes().to_vec();
    wof_value.extend([16, 0, 0, 0]);
    wof_value.extend([1u8; 16]);
    patch_record(p, wof, |rec| {
        append_resident(rec, AT_REPARSE_POINT, &wof_value)
    });

    // "ALONGF~1.TXT" becomes the DOS name of "A Long File Name.txt": its
    // entry is in the DOS namespace and names the long file's record, which
    // gets the matching $FILE_NAME.
    let n = patch_index_entries(p, "ALONGF~1.TXT", |e| {
        e[0..8].copy_from_slice(&(long_rn | u64::from(long_seq) << 48).to_le_bytes());
        e[16 + 65] = 2;
    });
    assert_eq!(n, 1);
    patch_record(p, long_rn, |rec| {
        let fname = find_attrs(rec, AT_FILE_NAME)[0];
        let voff = fname + u16::from_le_bytes([rec[fname + 20], rec[fname + 21]]) as usize;
        rec[voff + 65] = 1; // Win32
        let mut dos = rec[voff..voff + 66].to_vec();
        dos[64] = 12;
        dos[65] = 2;
        dos.extend(utf16("ALONGF~1.TXT"));
        append_resident(rec, AT_FILE_NAME, &dos);
    });
    let n = patch_index_entries(p, "A Long File Name.txt", |e| e[16 + 65] = 1);
    assert_eq!(n, 1);

    set_data_flags(p, comp, 0x0001);
    set_data_flags(p, enc, 0x4000);
    patch_record(p, vdl_rn, |rec| {
        let a = find_attrs(rec, AT_DATA)[0];
        assert_ne!(rec[a + 8], 0, "vdl.bin should be non-resident");
        rec[a + 56..a + 64].copy_from_slice(&50_000u64.to_le_bytes());
    });
    patch_record(p, gone, |rec| rec[0x16] &= !1);
    let n = patch_index_entries(p, "stale.txt", |e| {
        let seq = u16::from_le_bytes([e[6], e[7]]);
        e[6..8].copy_from_slice(&(seq + 1).to_le_bytes());
    });
    assert_eq!(n, 1);

    let fs = open(p);
    let gp = |s: &str| GuestPath::from(s);

    // The listing: the DOS name is hidden, as ntfsls hides it; symlinks and
    // junctions are symlinks.
    let listed = fs.read_dir(&GuestPath::root()).unwrap();
    let names: std::collections::BTreeSet<String> = listed
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    assert!(!names.contains("ALONGF~1.TXT"));
    assert!(names.contains("A Long File Name.txt"));
    assert_eq!(names, ntfsls(p, "/"));
    let kind = |n: &str| {
        listed
            .iter()
            .find(|e| e.name == n.as_bytes())
            .unwrap()
            .file_type
    };
    assert_eq!(kind("link"), FileType::Symlink);
    assert_eq!(kind("junction"), FileType::Symlink);
    assert_eq!(kind("wof.bin"), FileType::Regular);

    // Symlink and junction.
    let m = fs.symlink_metadata(&gp("/link")).unwrap();
    assert_eq!(
        (m.file_type, m.mode, m.size),
        (FileType::Symlink, 0o777, 10)
    );
    assert_eq!(fs.read_link(&gp("/link")).unwrap(), b"target.txt");
    assert_eq!(fs.read_link(&gp("/junction")).unwrap(), b"/target.txt");
    assert_eq!(fs.read("/link").unwrap(), target);
    assert_eq!(fs.read("/JUNCTION").unwrap(), target);
    assert_eq!(
        fs.metadata("/link").unwrap().1.inode,
        Some(rn_of(&fs, "/target.txt"))
    );
    assert!(matches!(
        fs.read_file(&gp("/link"), 1 << 20),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        fs.read_dir(&gp("/junction")),
        Err(FsError::NotADirectory { .. })
    ));
    match fs.read_link(&gp("/junction-elsewhere")) {
        Err(FsError::Unsupported { op, why, .. }) => {
            assert!(op.contains("/junction-elsewhere"), "{op}");
            assert!(why.contains("Volume{0123}"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(fs.read("/junction-elsewhere").is_err());

    // Another reparse tag: a regular file whose contents we refuse to guess.
    let m = fs.symlink_metadata(&gp("/wof.bin")).unwrap();
    assert_eq!(m.file_type, FileType::Regular);
    match fs.read_file(&gp("/wof.bin"), 1 << 20) {
        Err(FsError::Unsupported { op, why, .. }) => {
            assert!(op.contains("/wof.bin"), "{op}");
            assert!(why.contains("0x80000017"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fs.read_link(&gp("/wof.bin")),
        Err(FsError::NotASymlink { .. })
    ));

    // The DOS name still finds the file, in any case; it is not a second link.
    let m = fs.symlink_metadata(&gp("/alongf~1.txt")).unwrap();
    assert_eq!(m.inode, Some(long_rn));
    assert_eq!(m.nlink, Some(1));
    assert_eq!(fs.read("/ALONGF~1.TXT").unwrap(), long);
    assert_eq!(fs.read("/a long file name.TXT").unwrap(), long);

    // Compressed and encrypted: refused, naming the path.
    for (path, word) in [("/comp.bin", "compressed"), ("/enc.bin", "encrypted")] {
        match fs.read_file(&gp(path), 1 << 20) {
            Err(FsError::Unsupported { op, why, .. }) => {
                assert!(op.contains(path), "{op}");
                assert!(why.contains(word), "{why}");
            }
            other => panic!("{path}: {other:?}"),
        }
        assert_eq!(
            fs.symlink_metadata(&gp(path)).unwrap().file_type,
            FileType::Regular
        );
    }

    // Past the valid data length the file reads as zeros, as ntfs-3g reads it.
    let got = fs.read("/vdl.bin").unwrap();
    assert_eq!(got.len(), 100_000);
    assert_eq!(&got[..50_000], &vdl[..50_000]);
    assert!(got[50_000..].iter().all(|&b| b == 0));
    assert_eq!(got, ntfscat(p, "/vdl.bin"));

    // Entries naming a free record, or a reused one.
    for (path, word) in [("/gone.txt", "not in use"), ("/stale.txt", "stale")] {
        match fs.symlink_metadata(&gp(path)) {
            Err(FsError::Corrupt { place, detail, .. }) => {
                assert!(place.contains(path), "{place}");
                assert!(detail.contains(word), "{detail}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}

fn rn_of(fs: &dyn GuestFs, p: &str) -> u64 {
    fs.symlink_metadata(&GuestPath::from(p))
        .unwrap()
        .inode
        .unwrap()
}
