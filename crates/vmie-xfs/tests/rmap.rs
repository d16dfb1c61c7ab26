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
use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath, NewAttrs};

/// The rmapbt profiles this mkfs can make.
fn profiles() -> Vec<Vec<&'static str>> {
    let mut v = vec![
        vec!["-m", "crc=1,rmapbt=1,reflink=0"],
        vec!["-m", "crc=1,rmapbt=1,reflink=1", "-b", "size=1024"],
    ];
    // nrext64 needs a recent mkfs.
    let probe = tempfile::tempdir().unwrap();
    let p = probe.path().join("p.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
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

/// The rmapbt shape by xfs_db: the most levels of any AG and the blocks
/// of all AGs' trees (agf_rmap_level, agf_rmap_blocks).
fn rmap_shape(img: &std::path::Path) -> (u64, u64) {
    let agcount = sb_fields(img, &["agcount"])[0];
    let mut shape = (0, 0);
    for a in 0..agcount {
        let o = xfs_db(
            img,
            false,
            &[&format!("agf {a}"), "print rmaplevel rmapblocks"],
        );
        let f = |k: &str| {
            o.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap_or_else(|| panic!("{k} in {o}"))
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        shape.0 = f("rmaplevel").max(shape.0);
        shape.1 += f("rmapblocks");
    }
    shape
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
            step(
                &img.path,
                &want,
                &format!("{what} replace {len}"),
                &mut |fs| fs.replace_file(&gp("/etc/odd"), &data).unwrap(),
            );
        }
        // New files, a directory, a long symlink.
        step(
            &img.path,
            &want.clone(),
            &format!("{what} noop"),
            &mut |_| {},
        );
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
        step(
            &img.path,
            &want,
            &format!("{what} rename+remove"),
            &mut |fs| {
                fs.rename(&gp("/new3"), &gp("/sub/moved")).unwrap();
                for k in 0..12u64 {
                    if k != 3 {
                        fs.remove(&gp(&format!("/new{k}"))).unwrap();
                    }
                }
                for k in 0..300 {
                    fs.remove(&gp(&format!("/sub/f{k:04}"))).unwrap();
                }
            },
        );
    }
}

/// Hundreds of one-block files side by side (1 KiB blocks: 40 records a
/// leaf) split the rmapbt of AG 0 into a two-level tree with low and high
/// keys; removing them merges it back to one leaf. xfs_repair -n checks
/// the records and the keys after each step.
#[test]
fn rmapbt_leaves_split_and_merge() {
    let mut t = BTreeMap::new();
    t.insert(
        "d".to_string(),
        Node::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    );
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for args in [
        &["-m", "crc=1,rmapbt=1,reflink=0", "-b", "size=1024"][..],
        &["-m", "crc=1,rmapbt=1,reflink=1", "-b", "size=1024"][..],
    ] {
        let img = mkfs(args, 300, Some(&proto));
        let what = format!("{args:?}");
        let fresh = rmap_shape(&img.path);
        assert_eq!(fresh.0, 1, "{what}: after mkfs");
        let mut want = t.clone();
        let n = 400;
        for k in 0..n {
            want.insert(format!("d/f{k:04}"), regular(bytes(k, 700)));
        }
        let start = std::time::Instant::now();
        step(&img.path, &want, &format!("{what} {n} files"), &mut |fs| {
            for k in 0..n {
                fs.create_file(
                    &gp(&format!("/d/f{k:04}")),
                    &bytes(k, 700),
                    &NewAttrs::default(),
                )
                .unwrap();
            }
        });
        let grown = rmap_shape(&img.path);
        eprintln!(
            "{what}: {n} files in {:?}: rmapbt up to {} levels, {} blocks in all AGs",
            start.elapsed(),
            grown.0,
            grown.1
        );
        assert!(grown.0 >= 2 && grown.1 >= fresh.1 + 2, "{what}: {grown:?}");
        // Every other file goes (records split into islands), then the
        // rest (the tree shrinks back).
        for k in (0..n).step_by(2) {
            want.remove(&format!("d/f{k:04}"));
        }
        step(
            &img.path,
            &want,
            &format!("{what} half removed"),
            &mut |fs| {
                for k in (0..n).step_by(2) {
                    fs.remove(&gp(&format!("/d/f{k:04}"))).unwrap();
                }
            },
        );
        for k in (1..n).step_by(2) {
            want.remove(&format!("d/f{k:04}"));
        }
        step(
            &img.path,
            &want,
            &format!("{what} all removed"),
            &mut |fs| {
                for k in (1..n).step_by(2) {
                    fs.remove(&gp(&format!("/d/f{k:04}"))).unwrap();
                }
            },
        );
        let shrunk = rmap_shape(&img.path);
        eprintln!("{what}: after removing them: {shrunk:?}");
        assert_eq!(shrunk, fresh, "{what}");
    }
}

/// A damaged rmapbt block (bad magic; a record count past the block; a
/// record outside the AG, CRC recomputed by xfs_db) is refused by any
/// write that would change it, naming the rmapbt, and nothing is written.
#[test]
fn damaged_rmapbt_is_refused() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (what, cmd) in [
        ("magic", "write -d magic 0x41425442"),
        ("numrecs", "write -d numrecs 5000"),
        ("record", "write -d recs[1].startblock 4000000000"),
    ] {
        let img = mkfs(&["-m", "crc=1,rmapbt=1,reflink=0"], 300, Some(&proto));
        let agcount = sb_fields(&img.path, &["agcount"])[0];
        for a in 0..agcount {
            xfs_db(
                &img.path,
                true,
                &[&format!("agf {a}"), "addr rmaproot", cmd],
            );
        }
        let before = std::fs::read(&img.path).unwrap();
        let (ov, mut fs) = over(&img.path);
        // Reading still works.
        assert_eq!(fs.read("/etc/odd").unwrap().len(), 10_001, "{what}: read");
        let e = fs
            .create_file(&gp("/etc/new"), &bytes(1, 9000), &NewAttrs::default())
            .expect_err(what)
            .to_string();
        assert!(e.contains("rmapbt"), "{what}: {e}");
        let e2 = fs
            .replace_file(&gp("/etc/odd"), &bytes(2, 100_000))
            .expect_err(what)
            .to_string();
        assert!(e2.contains("rmapbt"), "{what}: {e2}");
        assert!(!ov.is_dirty(), "{what}: the overlay was written");
        drop(fs);
        assert!(std::fs::read(&img.path).unwrap() == before, "{what}");
        eprintln!("{what}: {e}");
    }
}

/// Random sequences of create, replace, mkdir, rename and remove on the
/// rmapbt profiles, each operation committed and checked by xfs_repair -n
/// and read back. One sequence per profile by default;
/// `VMIE_PROPTEST_CASES=N` runs N per profile.
#[test]
fn random_rmapbt_sequences() {
    let t = tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let profiles = profiles();
    let per = std::env::var("VMIE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    let mut ops = 0;
    for seq in 0..per * profiles.len() as u64 {
        let args = &profiles[(seq as usize) % profiles.len()];
        let img = mkfs(args, 300, Some(&proto));
        let mut want = t.clone();
        let mut rng = Rng(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut dirs = vec!["etc".to_string()];
        for op in 0..14u64 {
            let files: Vec<String> = want
                .iter()
                .filter(|(k, n)| matches!(n, Node::File { .. }) && !k.contains(".bak"))
                .map(|(k, _)| k.clone())
                .collect();
            let len = match rng.below(4) {
                0 => 0,
                1 => rng.below(5000),
                2 => rng.below(100_000),
                _ => rng.below(600_000) + 1,
            };
            let data = bytes(seq * 100 + op, len);
            let dir = dirs[rng.below(dirs.len())].clone();
            let what = format!("{args:?} seq {seq} op {op}");
            let (ov, mut fs) = over(&img.path);
            match rng.below(5) {
                0 if !files.is_empty() => {
                    let p = files[rng.below(files.len())].clone();
                    fs.replace_file(&gp(&format!("/{p}")), &data)
                        .unwrap_or_else(|e| panic!("{what}: replace /{p}: {e}"));
                    let Node::File { mode, uid, gid, .. } = want[&p].clone() else {
                        unreachable!()
                    };
                    want.insert(
                        p,
                        Node::File {
                            data,
                            mode,
                            uid,
                            gid,
                        },
                    );
                }
                1 if !files.is_empty() => {
                    let p = files[rng.below(files.len())].clone();
                    fs.remove(&gp(&format!("/{p}")))
                        .unwrap_or_else(|e| panic!("{what}: remove /{p}: {e}"));
                    want.remove(&p);
                }
                2 if !files.is_empty() => {
                    let p = files[rng.below(files.len())].clone();
                    let q = format!("{dir}/mv{seq}-{op}");
                    fs.rename(&gp(&format!("/{p}")), &gp(&format!("/{q}")))
                        .unwrap_or_else(|e| panic!("{what}: rename /{p}: {e}"));
                    let n = want.remove(&p).unwrap();
                    want.insert(q, n);
                }
                3 => {
                    let d = format!("{dir}/d{seq}-{op}");
                    fs.mkdir(&gp(&format!("/{d}")), &NewAttrs::default())
                        .unwrap_or_else(|e| panic!("{what}: mkdir /{d}: {e}"));
                    want.insert(
                        d.clone(),
                        Node::Dir {
                            mode: 0o644,
                            uid: 0,
                            gid: 0,
                        },
                    );
                    dirs.push(d);
                }
                _ => {
                    let p = format!("{dir}/n{seq}-{op}");
                    fs.create_file(&gp(&format!("/{p}")), &data, &NewAttrs::default())
                        .unwrap_or_else(|e| panic!("{what}: create /{p}: {e}"));
                    want.insert(p, regular(data));
                }
            }
            commit(&ov, &img.path);
            check_all(&img.path, &want, &what);
            ops += 1;
        }
        assert!(
            kernel_check(&img.path, &want, &format!("sequence {seq}")),
            "sequence {seq}: an rmapbt volume the kernel cannot mount"
        );
    }
    eprintln!(
        "{ops} random operations on rmapbt volumes, each checked by xfs_repair -n, \
         each sequence read back by the kernel"
    );
}
