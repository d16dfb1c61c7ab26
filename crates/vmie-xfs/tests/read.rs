//! The reader against images made by the real mkfs.xfs from a protofile,
//! in the profiles of the distributions (v4, RHEL 7.9, RHEL 8, RHEL 9,
//! RHEL 10) and in unusual geometries (1 KiB blocks, 4 KiB sectors, 8 KiB
//! directory blocks): every file's bytes, mode, owner, every listing and
//! symlink target, xattrs (shortform, leaf, node, remote values) set by
//! xfs_db, and times as xfs_db prints them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use vmie_guestfs::{GuestFs, GuestFsExt};

const PROFILES: &[(&str, &[&str])] = &[
    (
        "v4 ftype=0 (RHEL 7.0-7.2)",
        &["-m", "crc=0", "-n", "ftype=0"],
    ),
    (
        "v4 ftype=1, 1 KiB blocks",
        &["-m", "crc=0", "-b", "size=1024"],
    ),
    (
        "v5 finobt=0 (RHEL 7.3-7.9)",
        &[
            "-m",
            "crc=1,finobt=0,reflink=0,bigtime=0,inobtcount=0",
            "-i",
            "sparse=0",
        ],
    ),
    (
        "v5 reflink (RHEL 8)",
        &["-m", "reflink=1,bigtime=0,inobtcount=0"],
    ),
    (
        "v5 reflink bigtime inobtcount (RHEL 9)",
        &["-m", "reflink=1,bigtime=1,inobtcount=1"],
    ),
    (
        "v5 rmapbt nrext64 (RHEL 10)",
        &[
            "-m",
            "rmapbt=1,reflink=1,bigtime=1,inobtcount=1",
            "-i",
            "nrext64=1",
        ],
    ),
    (
        "v5 1 KiB blocks, 8 KiB dir blocks",
        &["-b", "size=1024", "-n", "size=8192"],
    ),
    (
        "v5 4 KiB sectors, 64 KiB dir blocks",
        &["-s", "size=4096", "-n", "size=65536"],
    ),
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Times and sizes as xfs_db prints them.
fn times(img: &std::path::Path, fs: &vmie_xfs::XfsFs, name: &str, start: i64, end: i64) {
    for p in ["/etc/odd", "/node/n01499", "/leaf"] {
        let (_, m) = fs.lstat(p).unwrap();
        let out = xfs_db(
            img,
            false,
            &[
                &format!("path {p}"),
                "print core.mtime.nsec core.ctime.nsec core.size",
            ],
        );
        assert!(
            out.contains(&format!("core.mtime.nsec = {}\n", m.mtime.nanos))
                && out.contains(&format!("core.ctime.nsec = {}\n", m.ctime.nanos))
                && out.contains(&format!("core.size = {}\n", m.size)),
            "{name} {p}: {out} vs {m:?}"
        );
        assert!(
            (start - 2..=end + 2).contains(&m.mtime.secs),
            "{name} {p}: mtime {}",
            m.mtime.secs
        );
    }
}

#[test]
fn profiles_read_back_exactly() {
    let work = tempfile::tempdir().unwrap();
    let mut comparisons = 0;
    for (name, args) in PROFILES {
        let v4 = args.contains(&"crc=0");
        let t = tree_with(v4);
        let proto = protofile(&t, work.path());
        let start = now();
        let img = mkfs(args, 300, Some(&proto));
        // Attributes in every form, set by xfs_db.
        // (xfs_db 6.1 crashes converting v4 attributes out of shortform,
        // so v4 images get shortform attributes only.)
        xfs_db(
            &img.path,
            true,
            &["path /etc/fstab", "attr_set -s -v 40 selinux"],
        );
        let remote = if v4 {
            "attr_set -s -v 50 selinux"
        } else {
            "attr_set -s -v 3000 selinux"
        };
        xfs_db(
            &img.path,
            true,
            &["path /etc/odd", remote, "attr_set -r -v 10 trusted1"],
        );
        let end = now();
        let (ok, out) = repair_n(&img.path);
        assert!(ok, "{name}: xfs_repair -n on the fresh image: {out}");
        let (_, fs) = open(&img.path);
        comparisons += compare(&fs, &t);
        let (_, m) = fs.lstat("/etc/fstab").unwrap();
        assert_eq!(m.selinux_label(), Some(&[b'v'; 40][..]), "{name}");
        let (_, m) = fs.lstat("/etc/odd").unwrap();
        let x = m.xattrs.unwrap();
        assert!(
            x.iter()
                .any(|a| a.name == b"trusted.trusted1" && a.value == [b'v'; 10]),
            "{name}"
        );
        assert!(
            x.iter()
                .any(|a| a.name == b"security.selinux"
                    && a.value.len() == if v4 { 50 } else { 3000 }),
            "{name}"
        );
        times(&img.path, &fs, name, start, end);
        comparisons += 5;
        if v4 {
            assert!(
                fs.check_writable().is_ok(),
                "{name}: a fresh filesystem's log is clean"
            );
            eprintln!("{name}: ok");
            continue;
        }
        let leaf: Vec<String> = (0..30)
            .map(|i| format!("attr_set -u -v 60 leafattr{i:02}"))
            .collect();
        let node: Vec<String> = (0..150)
            .map(|i| format!("attr_set -u -v 90 nodeattr{i:03}"))
            .collect();
        let mut c = vec!["path /etc/page".to_string()];
        c.extend(leaf);
        xfs_db(
            &img.path,
            true,
            &c.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut c = vec!["path /block".to_string()];
        c.extend(node);
        c.push("attr_set -s -v 28 selinux".into());
        xfs_db(
            &img.path,
            true,
            &c.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let (_, fs) = open(&img.path);
        let (ok, out) = repair_n(&img.path);
        assert!(ok, "{name}: xfs_repair -n after the attributes: {out}");
        let (_, m) = fs.lstat("/etc/odd").unwrap();
        assert_eq!(
            m.selinux_label(),
            Some(&[b'v'; 3000][..]),
            "{name}: remote value"
        );
        let (_, m) = fs.lstat("/etc/page").unwrap();
        let mut names: Vec<_> = m
            .xattrs
            .unwrap()
            .into_iter()
            .map(|a| (a.name, a.value.len()))
            .collect();
        names.sort();
        let want: Vec<_> = (0..30)
            .map(|i| (format!("user.leafattr{i:02}").into_bytes(), 60))
            .collect();
        assert_eq!(names, want, "{name}: leaf attributes");
        let (_, m) = fs.lstat("/block").unwrap();
        assert_eq!(
            m.selinux_label(),
            Some(&[b'v'; 28][..]),
            "{name}: node-form attributes"
        );
        assert_eq!(m.xattrs.unwrap().len(), 151, "{name}");
        comparisons += 5;

        assert!(
            fs.check_writable().is_ok(),
            "{name}: a fresh filesystem's log is clean"
        );
        eprintln!("{name}: ok");
    }
    eprintln!(
        "{comparisons} read-back comparisons over {} profiles",
        PROFILES.len()
    );
}

/// The directory forms the tree is meant to produce really are produced
/// (checked with xfs_db on the default profile), so the test above covers
/// shortform, block, leaf and node directories.
#[test]
fn tree_has_every_directory_form() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let img = mkfs(&[], 300, Some(&proto));
    let fmt = |p: &str| {
        xfs_db(
            &img.path,
            false,
            &[&format!("path {p}"), "print core.format core.size"],
        )
    };
    assert!(fmt("/node/sub").contains("core.format = 1 (local)"));
    let block = fmt("/block");
    assert!(block.contains("core.size = 4096"), "{block}");
    let leaf = fmt("/leaf");
    assert!(leaf.contains("core.format = 2"), "{leaf}");
    // Leaf form: a leaf1 block (magic 0x3df1) at 32 GiB.
    let l = xfs_db(
        &img.path,
        false,
        &["path /leaf", "dblock 8388608", "print lhdr.info.hdr.magic"],
    );
    assert!(l.contains("0x3df1"), "{l}");
    // Node form: a da node (0x3ebe) at 32 GiB.
    let n = xfs_db(
        &img.path,
        false,
        &["path /node", "dblock 8388608", "print nhdr.info.hdr.magic"],
    );
    assert!(n.contains("0x3ebe"), "{n}");
    let (_, fs) = open(&img.path);
    assert_eq!(fs.list("/node").unwrap().1.len(), 1501);
}

#[test]
fn empty_and_realdata_filesystems() {
    // blkid's XFS v4 and v5 samples, and blsforme's empty XFS.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/realdata");
    let mut opened = 0;
    for rel in [
        "util-linux-blkid/tests/ts/blkid/images-fs/xfs.img.xz",
        "util-linux-blkid/tests/ts/blkid/images-fs/xfs-v5.img.xz",
    ] {
        let xz = std::fs::read(base.join(rel)).unwrap();
        let mut raw = Vec::new();
        lzma_rs::xz_decompress(&mut &xz[..], &mut raw).unwrap();
        let dev: std::sync::Arc<dyn vmie_disk::Device> =
            std::sync::Arc::new(vmie_disk::MemDevice::new(rel, raw));
        let fs = vmie_xfs::XfsFs::open(dev, rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let (_, root) = fs.list("/").unwrap();
        eprintln!(
            "{rel}: label {:?} uuid {} root {:?}",
            fs.label(),
            fs.uuid(),
            root.len()
        );
        let _ = walk_all(&fs);
        opened += 1;
    }
    let blsforme = walk_dir(&base.join("blsforme"));
    for p in blsforme
        .iter()
        .filter(|p| p.to_string_lossy().contains("xfs"))
    {
        eprintln!("blsforme sample {}", p.display());
    }
    assert_eq!(opened, 2);
    let img = mkfs(&[], 300, None);
    let (_, fs) = open(&img.path);
    assert!(fs.list("/").unwrap().1.is_empty());
    assert_eq!(fs.kind(), "xfs");
}

fn walk_dir(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_dir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
