//! Directory indexes on the write side: entries in `$INDEX_ROOT` and in
//! INDX leaf and internal blocks of a directory ntfs-3g filled; inserts
//! until a node is full (then the refusal, nothing written), removals from
//! leaves, and the refusal of a removal from an internal node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice};
use vmie_guestfs::{FsError, GuestFs, GuestPath, NewAttrs};
use vmie_ntfs::NtfsFs;

fn open_rw(path: &Path) -> NtfsFs {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open_rw(path).unwrap());
    NtfsFs::open(dev, path.display().to_string()).unwrap()
}

/// Read every file of `files` back through ntfscat and our reader, and the
/// sizes of `dir` through ntfsls; ntfsfix clean.
fn verify(img: &Path, dir: &str, files: &BTreeMap<String, Vec<u8>>) {
    ntfsfix_clean(img);
    let listed = ntfsls_sizes(img, dir);
    let names: Vec<&String> = listed.keys().collect();
    let want: Vec<String> = files
        .keys()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, want.iter().collect::<Vec<_>>(), "ntfsls {dir}");
    let fs = open(img);
    for (p, d) in files {
        let name = p.rsplit('/').next().unwrap();
        assert_eq!(listed[name], d.len() as u64, "{p}");
        assert_eq!(&ntfscat(img, p), d, "{p}");
        assert_eq!(&vmie_guestfs::GuestFsExt::read(&fs, p).unwrap(), d, "{p}");
    }
}

fn attempt(img: &Path, op: impl FnOnce(&mut NtfsFs) -> Result<(), FsError>) -> Result<(), String> {
    let before = std::fs::read(img).unwrap();
    let mut fs = open_rw(img);
    match op(&mut fs) {
        Ok(()) => Ok(()),
        Err(FsError::Unsupported { why, .. }) => {
            assert!(
                std::fs::read(img).unwrap() == before,
                "a refusal wrote: {why}"
            );
            Err(why)
        }
        Err(e) => panic!("{e}"),
    }
}

fn big_dir(cluster: u32) {
    let img = mkntfs_geom(32, 512, cluster);
    let mut files = BTreeMap::new();
    let mut rng = XorShift::new(u64::from(cluster));
    for i in 0..300 {
        let n = rng.below(2000) as usize;
        files.insert(format!("/big/file-{i:04}"), rng.bytes(n));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    img.populate(&["big"], &refs);
    verify(&img.path, "/big", &files);

    // Replace every tenth file (entries in leaves and internal nodes).
    for i in (0..300).step_by(10) {
        let p = format!("/big/file-{i:04}");
        let n = rng.below(9000) as usize;
        let data = rng.bytes(n);
        attempt(&img.path, |fs| {
            fs.replace_file(&GuestPath::from(p.as_str()), &data)
        })
        .unwrap();
        files.insert(p, data);
    }
    verify(&img.path, "/big", &files);

    // Long names into one leaf until it is full.
    let mut full = 0;
    for i in 0..40 {
        let p = format!("/big/file-0150-{}-{i:02}", "x".repeat(200));
        let data = rng.bytes(100);
        match attempt(&img.path, |fs| {
            fs.create_file(&GuestPath::from(p.as_str()), &data, &NewAttrs::default())
        }) {
            Ok(()) => {
                files.insert(p, data);
            }
            Err(why) => {
                assert!(why.contains("splitting not implemented"), "{why}");
                full += 1;
                break;
            }
        }
    }
    assert_eq!(full, 1, "the leaf never filled");
    verify(&img.path, "/big", &files);

    // Remove every seventh file: leaves work, internal nodes are refused.
    let (mut done, mut internal) = (0, 0);
    for i in (0..300).step_by(7) {
        let p = format!("/big/file-{i:04}");
        match attempt(&img.path, |fs| fs.remove(&GuestPath::from(p.as_str()))) {
            Ok(()) => {
                files.remove(&p);
                done += 1;
            }
            Err(why) => {
                assert!(
                    why.contains("internal index node")
                        || why.contains("last one of its index block"),
                    "{why}"
                );
                internal += 1;
            }
        }
    }
    assert!(
        done > 10 && internal > 0,
        "{done} removed, {internal} internal"
    );
    verify(&img.path, "/big", &files);
}

#[test]
fn big_directory_4096() {
    big_dir(4096);
}

#[test]
fn big_directory_512() {
    big_dir(512);
}

#[test]
fn big_directory_65536() {
    big_dir(65536);
}

/// A directory whose index is all in `$INDEX_ROOT`: inserts until the MFT
/// record is full, then the root's entries move down into a new index block
/// of a new `$INDEX_ALLOCATION` and the inserts go on.
#[test]
fn root_index_fills() {
    let img = mkntfs_geom(16, 512, 4096);
    img.populate(&["d"], &[("/d/a", b"a")]);
    let mut files = BTreeMap::new();
    files.insert("/d/a".to_string(), b"a".to_vec());
    assert_eq!(index_allocation_size(&img.path, "/d"), (0, 0));
    for i in 0..10 {
        let p = format!("/d/{}{i}", "n".repeat(100));
        attempt(&img.path, |fs| {
            fs.create_file(&GuestPath::from(p.as_str()), b"x", &NewAttrs::default())
        })
        .unwrap();
        files.insert(p, b"x".to_vec());
        verify(&img.path, "/d", &files);
    }
    assert_eq!(index_allocation_size(&img.path, "/d"), (4096, 4096));
    // Removing from the (now one) leaf block works.
    attempt(&img.path, |fs| fs.remove(&GuestPath::from("/d/a"))).unwrap();
    files.remove("/d/a");
    verify(&img.path, "/d", &files);
}

/// A directory of 1500 files (a three-level index made by ntfs-3g): 200
/// new names crowded into one region split leaves, the middle entries going
/// up into internal blocks; every name is then found by ntfs-3g, by a FUSE
/// mount's listing and by our reader.
fn leaf_splits(cluster: u32) {
    let img = mkntfs_geom(64, 512, cluster);
    let mut files = BTreeMap::new();
    for i in 0..1500 {
        files.insert(format!("/big/f{i:04}"), vec![(i % 251) as u8; 3]);
    }
    let mut refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    // Spare files, removed again, so $MFT has free records (we do not grow it).
    let spare: Vec<String> = (0..250).map(|i| format!("/spare/s{i:03}")).collect();
    refs.extend(spare.iter().map(|p| (p.as_str(), b"s".as_slice())));
    img.populate(&["big", "spare"], &refs);
    let mnt = img.dir.path().join("mnt");
    run("ntfs-3g", &[img.path.as_os_str(), mnt.as_os_str()]);
    for p in &spare {
        std::fs::remove_file(mnt.join(p.trim_start_matches('/'))).unwrap();
    }
    let u = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(u.status.success());
    let blocks_before = index_allocation_size(&img.path, "/big");
    let (cs, _, free_before) = ntfsinfo_space(&img.path);
    let mut made = 0;
    let mut refused = 0;
    for i in 0..200 {
        let p = format!("/big/f0750-new-{i:03}");
        let data = vec![7u8; i * 40];
        match attempt(&img.path, |fs| {
            fs.create_file(&GuestPath::from(p.as_str()), &data, &NewAttrs::default())
        }) {
            Ok(()) => {
                files.insert(p, data);
                made += 1;
            }
            Err(why) => {
                assert!(why.contains("splitting not implemented"), "{why}");
                refused += 1;
            }
        }
    }
    assert!(made >= 150, "{made} made, {refused} refused");
    let blocks_after = index_allocation_size(&img.path, "/big");
    println!("{made} made, {refused} refused; $INDEX_ALLOCATION {blocks_before:?} -> {blocks_after:?} bytes");
    assert!(blocks_after.0 > blocks_before.0, "no block was added");
    // Every cluster taken is a new file's or the index's.
    let (_, _, free_after) = ntfsinfo_space(&img.path);
    let data: u64 = files
        .keys()
        .filter(|p| p.contains("-new-"))
        .map(|p| ntfsinfo_data_clusters(&img.path, p, cs))
        .sum();
    assert_eq!(
        free_before - free_after,
        data + (blocks_after.1 - blocks_before.1) / cs
    );
    verify(&img.path, "/big", &files);
    // ntfs-3g's own directory walk (FUSE readdir) sees every name.
    let mnt = img.dir.path().join("mnt-ls");
    std::fs::create_dir_all(&mnt).unwrap();
    run(
        "ntfs-3g",
        &[
            std::ffi::OsStr::new("-o"),
            std::ffi::OsStr::new("ro"),
            img.path.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    let listed = std::fs::read_dir(mnt.join("big")).unwrap().count();
    let for_sure = std::fs::read(mnt.join("big/f0750-new-199"));
    let u = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(u.status.success());
    assert_eq!(listed, files.len());
    if files.contains_key("/big/f0750-new-199") {
        assert_eq!(for_sure.unwrap(), files["/big/f0750-new-199"]);
    }
}

/// The data size of a directory's `$INDEX_ALLOCATION`, as ntfsinfo reads it.
fn index_allocation_size(img: &Path, dir: &str) -> (u64, u64) {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            std::ffi::OsStr::new("-f"),
            std::ffi::OsStr::new("-F"),
            std::ffi::OsStr::new(dir),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    let Some(part) = out.split("Dumping attribute $INDEX_ALLOCATION").nth(1) else {
        return (0, 0);
    };
    let field = |k: &str| -> u64 {
        let line = part.lines().find_map(|l| l.trim().strip_prefix(k)).unwrap();
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("Data size:"), field("Allocated size:"))
}

#[test]
fn leaf_splits_4096() {
    leaf_splits(4096);
}

#[test]
fn leaf_splits_512() {
    leaf_splits(512);
}

#[test]
fn leaf_splits_65536() {
    leaf_splits(65536);
}
