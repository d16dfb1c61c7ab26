//! The allocating writer: files grown past their blocks, new files,
//! symlinks and directories in shortform, block and leaf directories, on
//! every mkfs profile a guest may carry; after every operation
//! xfs_repair -n is clean and both our reader (fresh) and xfs_db read the
//! result back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice, Overlay};
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs, Xattr};
use vmie_xfs::XfsFs;

fn over(img: &Path) -> (Arc<Overlay>, XfsFs) {
    let base: Arc<dyn Device> = Arc::new(FileDevice::open(img).unwrap());
    let ov = Arc::new(Overlay::new(base));
    let fs = XfsFs::open(ov.clone(), "test.img").unwrap();
    (ov, fs)
}

fn commit(ov: &Overlay, img: &Path) {
    let f = FileDevice::open_rw(img).unwrap();
    for (off, data) in ov.changes().unwrap() {
        f.write_at(off, &data).unwrap();
    }
    ov.discard().unwrap();
}

/// xfs_repair -n must exit 0 and print nothing but its phase banners.
fn assert_clean(img: &Path, what: &str) {
    let (ok, out) = repair_n(img);
    assert!(ok, "{what}: xfs_repair -n failed:\n{out}");
    let benign = [
        "Phase ",
        "        - ",
        "Cannot get host filesystem geometry.",
        "Repair may fail if there is a sector size mismatch between",
        "the image and the host filesystem.",
        "No modify flag set, skipping",
    ];
    for l in out.lines() {
        assert!(
            benign.iter().any(|b| l.starts_with(b)),
            "{what}: xfs_repair -n reports: {l}\n{out}"
        );
    }
}

/// xfs_db's view of a path: its inode number via `path`, then its size.
fn xfs_db_size(img: &Path, path: &str) -> u64 {
    let out = xfs_db(img, false, &[&format!("path {path}"), "print core.size"]);
    out.lines()
        .find_map(|l| l.strip_prefix("core.size = "))
        .unwrap_or_else(|| panic!("core.size in {out}"))
        .trim()
        .parse()
        .unwrap()
}

const PROFILES: [(&str, &[&str]); 6] = [
    ("v4", &["-m", "crc=0"]),
    ("v5-nofinobt", &["-m", "finobt=0,reflink=0"]),
    ("v5-finobt", &["-m", "finobt=1,reflink=0"]),
    ("v5-reflink", &["-m", "reflink=1"]),
    (
        "v5-bigtime-inobtcount",
        &["-m", "reflink=1,bigtime=1,inobtcount=1"],
    ),
    ("v5-1k", &["-b", "size=1024", "-m", "reflink=1"]),
];

fn selinux() -> NewAttrs {
    NewAttrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: vec![Xattr {
            name: b"security.selinux".to_vec(),
            value: b"system_u:object_r:etc_t:s0\0".to_vec(),
        }],
    }
}

#[test]
fn smoke_create_in_every_form() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in PROFILES {
        let img = mkfs(args, 300, Some(&proto));
        let mut want: BTreeMap<String, Node> = t.clone();
        for (step, dir) in ["etc", "block", "leaf"].iter().enumerate() {
            let (ov, mut fs) = over(&img.path);
            let p = format!("/{dir}/new-file-{step}");
            let data = bytes(77 + step as u64, 5000 + step * 3000);
            fs.create_file(&GuestPath::lexical(p.as_bytes()), &data, &selinux())
                .unwrap_or_else(|e| panic!("{name}: create {p}: {e}"));
            assert_eq!(fs.read(&p).unwrap(), data);
            commit(&ov, &img.path);
            assert_clean(&img.path, &format!("{name}: create {p}"));
            assert_eq!(xfs_db_size(&img.path, &p), data.len() as u64);
            want.insert(
                p[1..].to_string(),
                Node::File {
                    data,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            );
            let (_, fs) = open(&img.path);
            compare(&fs, &want);
            let m = fs.lstat(&p).unwrap().1;
            assert_eq!(
                m.selinux_label(),
                Some(&b"system_u:object_r:etc_t:s0\0"[..])
            );
        }
        // Grow a file past its blocks.
        let (ov, mut fs) = over(&img.path);
        let data = bytes(5, 200_000);
        fs.replace_file(&GuestPath::lexical(b"/etc/fstab"), &data)
            .unwrap();
        commit(&ov, &img.path);
        assert_clean(&img.path, &format!("{name}: grow fstab"));
        let (_, fs) = open(&img.path);
        assert_eq!(fs.read("/etc/fstab").unwrap(), data);
        let _ = FsError::Unsupported {
            fs: String::new(),
            op: String::new(),
            why: String::new(),
        };
    }
}
