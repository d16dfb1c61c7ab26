//! Every refusal of the NTFS writer leaves the image byte for byte as it
//! was: a dirty volume, a hibernated Windows, a `$LogFile` that is not
//! clean (or of an unknown version), BitLocker, compressed, encrypted or
//! sparse files, attribute lists, a full directory index.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice};
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};
use vmie_ntfs::NtfsFs;

fn open_rw(path: &Path) -> Result<NtfsFs, FsError> {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open_rw(path).unwrap());
    NtfsFs::open(dev, path.display().to_string())
}

/// Try a replace, a create and a remove; each must be refused with `want`
/// in its reason, and the image must not change.
fn refused(img: &Img, want: &str) {
    let before = std::fs::read(&img.path).unwrap();
    let mut fs = open_rw(&img.path).unwrap();
    let results = [
        fs.replace_file(&GuestPath::from("/f"), b"new contents"),
        fs.create_file(&GuestPath::from("/g"), b"x", &NewAttrs::default()),
        fs.remove(&GuestPath::from("/f")),
    ];
    for r in results {
        match r {
            Err(FsError::Unsupported { why, fs, .. }) => {
                assert!(why.contains(want), "{why}");
                assert!(fs.contains("ntfs.img"), "{fs}");
            }
            other => panic!("expected a refusal naming {want:?}, got {other:?}"),
        }
    }
    assert!(
        std::fs::read(&img.path).unwrap() == before,
        "a refusal wrote"
    );
}

fn base() -> Img {
    let img = mkntfs_geom(16, 512, 4096);
    img.add("f", b"old");
    img
}

#[test]
fn dirty_volume() {
    let img = base();
    patch_record(&img.path, 3, |r| {
        let a = find_attr(r, 0x70);
        let v = a + u16::from_le_bytes([r[a + 20], r[a + 21]]) as usize;
        r[v + 10] |= 1;
    });
    assert!(open(&img.path).volume_info().unwrap().dirty);
    refused(&img, "marked dirty");
}

/// Set the first four bytes of `/hiberfil.sys` (made with a unique tag
/// after them) in the image.
fn hiberfil_header(img: &Img, magic: &[u8; 4]) {
    let tag = b"vmie-hiberfil-tag-0123456789abcdef";
    let mut b = std::fs::read(&img.path).unwrap();
    let at = b.windows(tag.len()).position(|w| w == tag).unwrap() - 4;
    b[at..at + 4].copy_from_slice(magic);
    std::fs::write(&img.path, b).unwrap();
}

#[test]
fn hibernated_windows() {
    let img = base();
    let mut file = vec![0u8; 8192];
    file[4..38].copy_from_slice(b"vmie-hiberfil-tag-0123456789abcdef");
    // ntfs-3g itself refuses a hibernated volume, so the header is set by
    // patching the file's first cluster.
    img.add("hiberfil.sys", &file);
    for magic in [b"hibr", b"HIBR", b"wake", b"WAKE"] {
        hiberfil_header(&img, magic);
        refused(&img, "hibernated");
    }
    // A zeroed header is fine.
    hiberfil_header(&img, &[0; 4]);
    let mut fs = open_rw(&img.path).unwrap();
    fs.replace_file(&GuestPath::from("/f"), b"ok").unwrap();
    assert_eq!(ntfscat(&img.path, "/f"), b"ok");
}

/// Two restart pages of 4 KiB at the start of `$LogFile` (version
/// `major.minor`, `flags` in the restart area, the second page `lsn2`).
fn write_restart_pages(img: &Path, major: u16, minor: u16, flags: u16, in_use: u16) {
    use std::os::unix::fs::FileExt;
    let (cs, mft, rs) = geometry(img);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut rec = vec![0u8; rs];
    file.read_exact_at(&mut rec, mft + 2 * rs as u64).unwrap();
    unprotect(&mut rec);
    let a = find_attr(&rec, 0x80);
    let log = first_run_offset(&rec, a, cs);
    for (i, lsn) in [(0u64, 0x1000u64), (1, 0x2000)] {
        let mut p = vec![0u8; 4096];
        p[..4].copy_from_slice(b"RSTR");
        p[4..6].copy_from_slice(&30u16.to_le_bytes());
        p[6..8].copy_from_slice(&9u16.to_le_bytes());
        p[16..20].copy_from_slice(&4096u32.to_le_bytes());
        p[20..24].copy_from_slice(&4096u32.to_le_bytes());
        p[24..26].copy_from_slice(&0x30u16.to_le_bytes());
        p[26..28].copy_from_slice(&minor.to_le_bytes());
        p[28..30].copy_from_slice(&major.to_le_bytes());
        let ra = 0x30;
        p[ra..ra + 8].copy_from_slice(&lsn.to_le_bytes());
        p[ra + 8..ra + 10].copy_from_slice(&1u16.to_le_bytes());
        p[ra + 10..ra + 12].copy_from_slice(&0xFFFFu16.to_le_bytes());
        p[ra + 12..ra + 14].copy_from_slice(&in_use.to_le_bytes());
        p[ra + 14..ra + 16].copy_from_slice(&flags.to_le_bytes());
        protect(&mut p);
        file.write_all_at(&p, log + i * 4096).unwrap();
    }
}

#[test]
fn logfile_not_clean() {
    let img = base();
    // Open log (a client in use) without the clean flag: dirty.
    write_restart_pages(&img.path, 1, 1, 0, 0);
    refused(&img, "$LogFile is not clean");
    // Unknown version.
    write_restart_pages(&img.path, 3, 0, 2, 0);
    refused(&img, "unknown");
    // Clean (XP+: open with the flag; 2000: closed): writes go ahead and the
    // log is left as it is.
    for (flags, in_use) in [(2u16, 0u16), (0, 0xFFFF)] {
        write_restart_pages(&img.path, 2, 0, flags, in_use);
        let mut fs = open_rw(&img.path).unwrap();
        fs.replace_file(&GuestPath::from("/f"), b"written").unwrap();
        assert_eq!(ntfscat(&img.path, "/f"), b"written");
        ntfsfix_clean(&img.path);
        assert_eq!(fuse_read(&img, "/f"), b"written");
    }
}

#[test]
fn bitlocker() {
    let img = base();
    let mut b = std::fs::read(&img.path).unwrap();
    b[3..11].copy_from_slice(b"-FVE-FS-");
    std::fs::write(&img.path, &b).unwrap();
    match open_rw(&img.path) {
        Err(FsError::Unsupported { why, .. }) => assert!(why.contains("BitLocker"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(std::fs::read(&img.path).unwrap() == b);
}

/// Files the writer does not touch: compressed (made by ntfs-3g with
/// `-o compression` and the compressed attribute set on the directory
/// through `setfattr`), and files whose `$STANDARD_INFORMATION` says
/// encrypted or sparse (patched: ntfs-3g makes neither).
#[test]
fn untouchable_files() {
    let img = mkntfs_geom(16, 512, 4096);
    let mnt = img.dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(
        "ntfs-3g",
        &[
            std::ffi::OsStr::new("-o"),
            std::ffi::OsStr::new("compression"),
            img.path.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    std::fs::create_dir(mnt.join("c")).unwrap();
    run(
        "setfattr",
        &[
            "-n",
            "system.ntfs_attrib_be",
            "-v",
            "0x00000810",
            mnt.join("c").to_str().unwrap(),
        ],
    );
    std::fs::write(mnt.join("c/z"), vec![0u8; 100_000]).unwrap();
    std::fs::write(mnt.join("plain"), b"plain").unwrap();
    let out = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success());
    let before = std::fs::read(&img.path).unwrap();
    let mut fs = open_rw(&img.path).unwrap();
    for r in [
        fs.replace_file(&GuestPath::from("/c/z"), b"x"),
        fs.remove(&GuestPath::from("/c/z")),
    ] {
        match r {
            Err(FsError::Unsupported { why, op, .. }) => {
                assert!(why.contains("compressed"), "{why}");
                assert!(op.contains("/c/z"), "{op}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(std::fs::read(&img.path).unwrap() == before);
    // The plain file next to it is writable.
    fs.replace_file(&GuestPath::from("/plain"), b"changed")
        .unwrap();
    assert_eq!(ntfscat(&img.path, "/plain"), b"changed");
    let _ = fs.metadata("/plain").unwrap();
}
