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
/// `major.minor`, `flags` and the in-use client list in the restart area;
/// one NTFS client record), consistent in every field ntfs-3g checks
/// (`ntfs_check_restart_area`, `ntfs_check_log_client_array`).
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
    let log_size = u64::from_le_bytes(rec[a + 48..a + 56].try_into().unwrap());
    let bits = 64 - log_size.leading_zeros();
    let free_list: u16 = if in_use == 0 { 0xFFFF } else { 0 };
    for (i, lsn) in [(0u64, 0x1000u64), (1, 0x2000)] {
        let mut p = vec![0u8; 4096];
        let put16 =
            |p: &mut Vec<u8>, o: usize, v: u16| p[o..o + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |p: &mut Vec<u8>, o: usize, v: u32| p[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |p: &mut Vec<u8>, o: usize, v: u64| p[o..o + 8].copy_from_slice(&v.to_le_bytes());
        p[..4].copy_from_slice(b"RSTR");
        put16(&mut p, 4, 30);
        put16(&mut p, 6, 9);
        put32(&mut p, 16, 4096);
        put32(&mut p, 20, 4096);
        put16(&mut p, 24, 0x30);
        put16(&mut p, 26, minor);
        put16(&mut p, 28, major);
        let ra = 0x30;
        put64(&mut p, ra, lsn);
        put16(&mut p, ra + 8, 1); // log clients
        put16(&mut p, ra + 10, free_list);
        put16(&mut p, ra + 12, in_use);
        put16(&mut p, ra + 14, flags);
        put32(&mut p, ra + 16, 67 - bits); // sequence number bits
        put16(&mut p, ra + 20, 0x40 + 0xA0); // restart area length
        put16(&mut p, ra + 22, 0x40); // client array offset
        put64(&mut p, ra + 24, log_size);
        put16(&mut p, ra + 36, 0x30); // log record header length
        put16(&mut p, ra + 38, 0x40); // log page data offset
        let cr = ra + 0x40;
        put64(&mut p, cr, lsn);
        put64(&mut p, cr + 8, lsn);
        put16(&mut p, cr + 16, 0xFFFF);
        put16(&mut p, cr + 18, 0xFFFF);
        put32(&mut p, cr + 28, 8);
        for (k, c) in "NTFS".encode_utf16().enumerate() {
            put16(&mut p, cr + 32 + 2 * k, c);
        }
        protect(&mut p);
        file.write_all_at(&p, log + i * 4096).unwrap();
    }
}

/// The first 8 KiB of `$LogFile` (its restart pages).
fn logfile_head(img: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let (cs, mft, rs) = geometry(img);
    let file = std::fs::File::open(img).unwrap();
    let mut rec = vec![0u8; rs];
    file.read_exact_at(&mut rec, mft + 2 * rs as u64).unwrap();
    unprotect(&mut rec);
    let at = first_run_offset(&rec, find_attr(&rec, 0x80), cs);
    let mut head = vec![0u8; 8192];
    file.read_exact_at(&mut head, at).unwrap();
    head
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
    // Version 2.0 (Windows 8+ may hold the metadata cached), even clean:
    // refused by us and by ntfs-3g.
    write_restart_pages(&img.path, 2, 0, 2, 0);
    refused(&img, "version 2.0");
    let err = mount_norecover(&img).unwrap_err();
    assert!(err.contains("Windows cache"), "{err}");
    for (flags, in_use) in [(2u16, 0u16), (0, 0xFFFF)] {
        write_restart_pages(&img.path, 1, 1, flags, in_use);
        let log = logfile_head(&img.path);
        let mut fs = open_rw(&img.path).unwrap();
        fs.replace_file(&GuestPath::from("/f"), b"written").unwrap();
        assert!(logfile_head(&img.path) == log, "the log changed");
        assert_eq!(ntfscat(&img.path, "/f"), b"written");
        ntfsfix_clean(&img.path);
        assert_eq!(fuse_read(&img, "/f"), b"written");
        // ntfs-3g mounts it read-write with `norecover` (which refuses an
        // unclean log rather than emptying it) and, like us, leaves a clean
        // log as it is (ntfs-3g 2017 and later reset only an unclean log,
        // and only with `recover`).
        mount_norecover(&img).unwrap();
        assert!(
            logfile_head(&img.path) == log,
            "ntfs-3g changed a clean log"
        );
        assert_eq!(ntfscat(&img.path, "/f"), b"written");
    }
    // The dirty log is refused by ntfs-3g too.
    write_restart_pages(&img.path, 1, 1, 0, 0);
    let err = mount_norecover(&img).unwrap_err();
    assert!(err.contains("unsafe state"), "{err}");
}

/// Mount read-write through ntfs-3g with `-o norecover` and unmount; the
/// error output when it refuses.
fn mount_norecover(img: &Img) -> Result<(), String> {
    let mnt = img.dir.path().join("mnt-norecover");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = std::process::Command::new(tool("ntfs-3g"))
        .args(["-o", "norecover"])
        .arg(&img.path)
        .arg(&mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    // ntfs-3g falls back to a read-only mount rather than fail.
    let ro = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| {
            l.contains(mnt.to_str().unwrap())
                && l.split(' ')
                    .nth(3)
                    .is_some_and(|o| o.split(',').any(|f| f == "ro"))
        });
    let u = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(u.status.success(), "{u:?}");
    if ro {
        return Err(stderr);
    }
    Ok(())
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

/// Free space in one-cluster holes (every other free cluster marked in use
/// in `$Bitmap`, patched): a file whose runlist would not fit in its MFT
/// record is refused (attribute lists are not written), nothing written;
/// one that fits is written in pieces; more than the free space is
/// NoSpace, nothing written.
#[test]
fn runlist_too_long_for_the_record() {
    use std::os::unix::fs::FileExt;
    let img = mkntfs_geom(16, 512, 4096);
    img.add("victim", b"small");
    let (cs, mft, rs) = geometry(&img.path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let mut rec = vec![0u8; rs];
    file.read_exact_at(&mut rec, mft + 6 * rs as u64).unwrap();
    unprotect(&mut rec);
    let bitmap = first_run_offset(&rec, find_attr(&rec, 0x80), cs);
    let (_, clusters, _) = ntfsinfo_space(&img.path);
    let mut bm = vec![0u8; clusters.div_ceil(8) as usize];
    file.read_exact_at(&mut bm, bitmap).unwrap();
    for c in (1..clusters as usize).step_by(2) {
        bm[c / 8] |= 1 << (c % 8);
    }
    file.write_all_at(&bm, bitmap).unwrap();
    drop(file);
    let (_, _, free) = ntfsinfo_space(&img.path);
    assert!(free > 1000, "{free} clusters free");

    let before = std::fs::read(&img.path).unwrap();
    let mut fs = open_rw(&img.path).unwrap();
    match fs.replace_file(&GuestPath::from("/victim"), &vec![3u8; 780 * 4096]) {
        Err(FsError::Unsupported { why, .. }) => {
            assert!(
                why.contains("does not fit in the file's MFT record"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        std::fs::read(&img.path).unwrap() == before,
        "a refusal wrote"
    );
    // 40 clusters fit.
    let data = vec![4u8; 40 * 4096];
    fs.replace_file(&GuestPath::from("/victim"), &data).unwrap();
    assert_eq!(ntfscat(&img.path, "/victim"), data);
    ntfsfix_clean(&img.path);
    // More than the free space: no space, nothing written.
    let before = std::fs::read(&img.path).unwrap();
    assert!(matches!(
        fs.replace_file(&GuestPath::from("/victim"), &vec![5u8; 4000 * 4096]),
        Err(FsError::NoSpace { .. })
    ));
    assert!(
        std::fs::read(&img.path).unwrap() == before,
        "no-space wrote"
    );
}
