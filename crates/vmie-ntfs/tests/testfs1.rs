//! The ntfs-rs test filesystem (made by mkntfs with 512-byte clusters; a
//! directory of 512 subdirectories, a sparse file, an empty file), read
//! through `NtfsFs` and compared with what the ntfs-3g tools read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt, GuestPath, Limits, NewAttrs};

#[test]
fn tree_matches_ntfsls() {
    let img = testfs1();
    let fs = open(&img);
    let ours = our_tree(&fs);
    let theirs = ntfsls_tree(&img);
    assert_eq!(ours, theirs);
    assert_eq!(ours["/many_subdirs"].len(), 512);
}

#[test]
fn files_match_ntfscat() {
    let img = testfs1();
    let fs = open(&img);
    let (_, root) = fs.list("/").unwrap();
    let mut files = 0;
    for e in root.iter().filter(|e| e.file_type == FileType::Regular) {
        let name = String::from_utf8(e.name.clone()).unwrap();
        let path = format!("/{name}");
        let ours = fs.read(&path).unwrap();
        assert_eq!(ours, ntfscat(&img, &path), "{path}");
        let (_, meta) = fs.metadata(&path).unwrap();
        assert_eq!(meta.size, ours.len() as u64, "{path}");
        files += 1;
    }
    assert_eq!(files, 4);
    assert_eq!(fs.read("/file-with-12345").unwrap(), b"12345");
    assert!(fs.read("/empty-file").unwrap().is_empty());
    let sparse = fs.read("/sparse-file").unwrap();
    assert_eq!(sparse.len(), 500_005);
}

#[test]
fn inode_numbers_match_ntfsls() {
    let img = testfs1();
    let fs = open(&img);
    for dir in ["/", "/many_subdirs"] {
        let theirs = ntfsls_inodes(&img, dir);
        assert!(!theirs.is_empty());
        for (name, inode) in theirs {
            let p = GuestPath::from(dir).join(name.as_bytes());
            let m = fs.symlink_metadata(&p).unwrap();
            assert_eq!(m.inode, Some(inode), "{p}");
            assert_eq!(m.nlink, Some(1), "{p}");
        }
    }
}

#[test]
fn metadata() {
    let fs = open(&testfs1());
    let root = fs.symlink_metadata(&GuestPath::root()).unwrap();
    assert_eq!(root.file_type, FileType::Directory);
    assert_eq!(root.mode, 0o755);
    assert_eq!(root.inode, Some(5));
    let (_, d) = fs.metadata("/many_subdirs").unwrap();
    assert_eq!(d.file_type, FileType::Directory);
    assert_eq!(d.st_mode(), 0o040755);
    let (_, f) = fs.metadata("/1000-bytes-file").unwrap();
    assert_eq!(f.file_type, FileType::Regular);
    assert_eq!((f.mode, f.uid, f.gid, f.size), (0o644, 0, 0, 1000));
    assert!(f.xattrs.is_none());
    // ntfsls -l shows Jan 23 20:45 2023 (UTC on this machine) for all of them.
    let day = 1_674_432_000..1_674_518_400;
    assert!(day.contains(&f.mtime.secs), "{:?}", f.mtime);
    assert!(day.contains(&f.atime.secs), "{:?}", f.atime);
    assert!(day.contains(&f.ctime.secs), "{:?}", f.ctime);
    assert!(f.mtime.nanos < 1_000_000_000);
}

#[test]
fn lookups_ignore_case() {
    let fs = open(&testfs1());
    let want = fs.read("/1000-bytes-file").unwrap();
    for p in ["/1000-BYTES-FILE", "/1000-Bytes-File", "//1000-bytes-FILE"] {
        assert_eq!(fs.read(p).unwrap(), want, "{p}");
    }
    let a = fs.metadata("/MANY_SUBDIRS/511").unwrap().1;
    let b = fs.metadata("/many_subdirs/511").unwrap().1;
    assert_eq!(a.inode, b.inode);
    assert_eq!(a.file_type, FileType::Directory);
    // Every one of the 512 subdirectories is found through the B-tree.
    for i in 1..=512 {
        let p = GuestPath::from(format!("/Many_Subdirs/{i}").as_str());
        assert_eq!(
            fs.symlink_metadata(&p).unwrap().file_type,
            FileType::Directory,
            "{p}"
        );
        assert!(fs.read_dir(&p).unwrap().is_empty());
    }
    // The metadata files are hidden from listings but can be looked up.
    assert!(!fs
        .list("/")
        .unwrap()
        .1
        .iter()
        .any(|e| e.name.starts_with(b"$")));
    assert_eq!(fs.metadata("/$MFT").unwrap().1.inode, Some(0));
    assert_eq!(fs.metadata("/$upcase").unwrap().1.size, 131_072);
    assert_eq!(
        fs.metadata("/$Extend").unwrap().1.file_type,
        FileType::Directory
    );
}

#[test]
fn volume_info_matches_ntfsinfo() {
    let img = testfs1();
    let fs = open(&img);
    let v = fs.volume_info().unwrap();
    let (cluster, clusters, free) = ntfsinfo_space(&img);
    assert_eq!(u64::from(v.cluster_size), cluster);
    assert_eq!(v.total_bytes / cluster, clusters);
    assert_eq!(v.free_bytes, free * cluster);
    assert_eq!(v.total_bytes, 2_096_640);
    assert_eq!(v.label, "mylabel");
    assert_eq!((v.major_version, v.minor_version), (3, 1));
    assert!(!v.dirty);
}

#[test]
fn errors() {
    let fs = open(&testfs1());
    let p = |s: &str| GuestPath::from(s);
    assert!(matches!(
        fs.symlink_metadata(&p("/nope")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        fs.symlink_metadata(&p("/empty-file/x")),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read_dir(&p("/empty-file")),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read_file(&p("/many_subdirs"), 1 << 20),
        Err(FsError::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.read_link(&p("/empty-file")),
        Err(FsError::NotASymlink { .. })
    ));
    match fs.read_file(&p("/1000-bytes-file"), 999) {
        Err(FsError::TooLarge {
            size: 1000,
            limit: 999,
            path,
            ..
        }) => {
            assert_eq!(path, "/1000-bytes-file")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fs.read_file(&p("/1000-bytes-file"), 1000).unwrap().len(),
        1000
    );
    // Names no NTFS name can equal.
    assert!(matches!(
        fs.symlink_metadata(&p("/\u{0}")),
        Err(FsError::NotFound { .. })
    ));
    let long = format!("/{}", "x".repeat(300));
    assert!(matches!(
        fs.symlink_metadata(&p(&long)),
        Err(FsError::NotFound { .. })
    ));
    let bad = GuestPath::root().join(b"\xff\xfe");
    assert!(matches!(
        fs.symlink_metadata(&bad),
        Err(FsError::NotFound { .. })
    ));
}

#[test]
fn writes_need_a_writable_device() {
    // The image is opened read-only: every write that gets as far as the
    // device fails there (nothing is written), and symlink is not implemented.
    let img = testfs1();
    let before = std::fs::read(&img).unwrap();
    let mut fs = open(&img);
    let p = GuestPath::from("/empty-file");
    for r in [
        fs.replace_file(&p, b"x"),
        fs.create_file(&GuestPath::from("/new"), b"x", &NewAttrs::default()),
        fs.remove(&p),
        fs.mkdir(&GuestPath::from("/d"), &NewAttrs::default()),
    ] {
        assert!(matches!(r, Err(FsError::Disk(_))), "{r:?}");
    }
    match fs.symlink(&GuestPath::from("/l"), b"/x", &NewAttrs::default()) {
        Err(FsError::Unsupported { why, .. }) => assert!(why.contains("ntfs"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs.kind(), "ntfs");
    assert!(fs.location().ends_with("testfs1"));
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn listing_is_capped() {
    let fs = open(&testfs1()).with_limits(Limits {
        max_dir_entries: 100,
        ..Limits::default()
    });
    match fs.read_dir(&GuestPath::from("/many_subdirs")) {
        Err(FsError::Corrupt { detail, place, .. }) => {
            assert!(detail.contains("more than 100"), "{detail}");
            assert!(place.contains("/many_subdirs"), "{place}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs.read_dir(&GuestPath::root()).unwrap().len(), 5);
}
