//! Node-form directories whose hash tree has two node levels and whose
//! free segment has more than one freeindex block. With 4 KiB directory
//! blocks (the least mkfs.xfs allows) a leaf and a node hold 504 entries,
//! so a second node level takes some 127,000 names: the host's kernel
//! (loop mount, as root) makes them as hard links to one file, in
//! ascending hash order (each leaf and node split then leaves half-full
//! blocks), which takes seconds. Our writer then adds, removes and
//! renames in the kernel's two-level tree, grows a one-level tree into
//! two levels (its root node splitting) while its data blocks spill into
//! a second freeindex block, and removes until the tree joins back into
//! one level. After every committed batch xfs_repair -n is clean, and
//! xfs_db and a fresh reader list exactly the expected names; the kernel
//! lists them too at the end. Corrupted node blocks are refused with
//! nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vmie_guestfs::{GuestFs, GuestPath, NewAttrs};

const RHEL9: &str = "crc=1,finobt=1,reflink=1,bigtime=1,inobtcount=1";
/// File blocks of the leaf and free segments (4 KiB blocks).
const LEAF_FO: u64 = (32u64 << 30) / 4096;
const FREE_FO: u64 = 2 * LEAF_FO;

/// A unique name of `len` bytes (at least 12).
fn name(tag: &str, i: usize, len: usize) -> String {
    let mut s = format!("{tag}{i}-");
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut k = i;
    while s.len() < len {
        s.push(fill[k % fill.len()] as char);
        k = k / 3 + s.len();
    }
    s
}

/// `n` names of `len` bytes whose hash `keep` accepts, in hash order.
fn names_by_hash(tag: &str, n: usize, len: usize, keep: impl Fn(u32) -> bool) -> Vec<String> {
    let mut v: Vec<(u32, String)> = (0..)
        .map(|i| name(tag, i, len))
        .map(|s| (da_hash(s.as_bytes()), s))
        .filter(|(h, _)| keep(*h))
        .take(n)
        .collect();
    v.sort();
    v.into_iter().map(|(_, s)| s).collect()
}

fn gp(p: &str) -> GuestPath {
    GuestPath::lexical(format!("/{p}").as_bytes())
}

fn attrs() -> NewAttrs {
    NewAttrs {
        mode: 0o644,
        ..NewAttrs::default()
    }
}

/// A v5 filesystem whose /big the kernel filled with `names` (hard links
/// to /target, made in the order given).
fn kernel_built(names: &[String]) -> Img {
    let img = mkfs(&["-m", RHEL9], 300, None);
    let m = Mounted::new(&img.path, false);
    std::fs::create_dir(m.path("big")).unwrap();
    std::fs::write(m.path("target"), b"").unwrap();
    let target = m.path("target");
    let big = m.path("big");
    for n in names {
        std::fs::hard_link(&target, big.join(n)).unwrap();
    }
    drop(m);
    img
}

/// The hash tree root of /big: (level, entries); level 0 for a leaf.
fn root(img: &Path) -> (u64, u64) {
    let out = xfs_db(
        img,
        false,
        &["path /big", &format!("dblock {LEAF_FO}"), "print"],
    );
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .map(|v| v.trim().parse::<u64>().unwrap())
    };
    match field("nhdr.level = ") {
        Some(level) => (level, field("nhdr.count = ").unwrap()),
        None => (0, field("lhdr.count = ").unwrap()),
    }
}

/// Freeindex blocks /big maps.
fn free_blocks(img: &Path) -> u64 {
    xfs_db_bmap(img, "/big")
        .iter()
        .filter(|e| e.0 >= FREE_FO)
        .map(|e| e.1)
        .sum()
}

/// xfs_repair -n clean; xfs_db and a fresh reader list /big as `want`;
/// a sample of names resolves through our reader.
fn check(img: &Path, want: &BTreeSet<String>, what: &str) {
    assert_clean(img, what);
    let exp: Vec<Vec<u8>> = want.iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut got = xfs_db_ls(img, "/big");
    // xfs_db lists a data block after a hole once per hole block.
    got.dedup();
    let diff = |got: &[Vec<u8>]| {
        let g: BTreeSet<&Vec<u8>> = got.iter().collect();
        let e: BTreeSet<&Vec<u8>> = exp.iter().collect();
        let show = |v: Vec<&&Vec<u8>>| -> Vec<String> {
            v.iter()
                .take(5)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        };
        format!(
            "{} listed, {} expected; extra {:?}, missing {:?}",
            got.len(),
            exp.len(),
            show(g.difference(&e).collect()),
            show(e.difference(&g).collect())
        )
    };
    assert!(got == exp, "{what}: xfs_db: {}", diff(&got));
    let (_, fs) = open(img);
    let mut ours: Vec<Vec<u8>> = fs
        .read_dir(&gp("big"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    ours.sort();
    assert!(ours == exp, "{what}: our reader: {}", diff(&ours));
    for n in want.iter().step_by(want.len() / 40 + 1) {
        fs.symlink_metadata(&gp(&format!("big/{n}")))
            .unwrap_or_else(|e| panic!("{what}: our reader resolves /big/{n}: {e}"));
    }
}

/// The kernel mounts the image read-only and lists /big as `want`.
fn kernel_lists(img: &Path, want: &BTreeSet<String>, what: &str) {
    let m = Mounted::new(img, true);
    let got: BTreeSet<String> = std::fs::read_dir(m.path("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        &got == want,
        "{what}: the kernel lists {} names, {} expected",
        got.len(),
        want.len()
    );
}

/// A directory the kernel grew to two node levels and two freeindex
/// blocks takes random adds, removes, renames and renames over names (150
/// a batch);
/// then its blocks corrupted one at a time are refused with nothing
/// written.
#[test]
fn kernel_two_level_directory_takes_changes() {
    let names = names_by_hash("k", 130_000, 52, |_| true);
    let t0 = Instant::now();
    let img = kernel_built(&names);
    let built = t0.elapsed();
    assert_eq!(root(&img.path).0, 2, "the kernel made no second node level");
    assert!(free_blocks(&img.path) >= 2, "one freeindex block only");
    let mut want: BTreeSet<String> = names.iter().cloned().collect();
    check(&img.path, &want, "as the kernel made it");
    let mut rng = Rng(0x2e7e15);
    // Time and count per kind: remove, create, rename, rename over.
    let mut spent = [Duration::ZERO; 4];
    let mut ops = [0u32; 4];
    // 3 batches by default; `VMIE_PROPTEST_CASES=N` runs 3 N.
    let batches = std::env::var("VMIE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(3, |n| n.saturating_mul(3));
    for batch in 0..batches {
        let (ov, mut fs) = over(&img.path);
        let mut list: Vec<String> = want.iter().cloned().collect();
        for op in 0..150 {
            let fresh = name(&format!("n{batch}."), op, 12 + rng.below(200));
            let i = rng.below(list.len());
            let what = format!("batch {batch} op {op}");
            let kind = rng.below(4);
            let start = Instant::now();
            match kind {
                0 => {
                    let p = list.swap_remove(i);
                    fs.remove(&gp(&format!("big/{p}")))
                        .unwrap_or_else(|e| panic!("{what}: remove {p}: {e}"));
                    want.remove(&p);
                }
                1 => {
                    fs.create_file(&gp(&format!("big/{fresh}")), b"", &attrs())
                        .unwrap_or_else(|e| panic!("{what}: create {fresh}: {e}"));
                    want.insert(fresh.clone());
                    list.push(fresh);
                }
                2 => {
                    let p = std::mem::replace(&mut list[i], fresh.clone());
                    fs.rename(&gp(&format!("big/{p}")), &gp(&format!("big/{fresh}")))
                        .unwrap_or_else(|e| panic!("{what}: rename {p} {fresh}: {e}"));
                    want.remove(&p);
                    want.insert(fresh);
                }
                _ => {
                    let j = rng.below(list.len());
                    if i == j {
                        continue;
                    }
                    let (p, q) = (list[i].clone(), list[j].clone());
                    fs.rename(&gp(&format!("big/{p}")), &gp(&format!("big/{q}")))
                        .unwrap_or_else(|e| panic!("{what}: rename {p} over {q}: {e}"));
                    want.remove(&p);
                    list.swap_remove(i);
                }
            }
            spent[kind] += start.elapsed();
            ops[kind] += 1;
        }
        commit(&ov, &img.path);
        check(&img.path, &want, &format!("batch {batch}"));
    }
    assert_eq!(root(&img.path).0, 2);
    kernel_lists(&img.path, &want, "after our changes");
    let each: Vec<Duration> = (0..4).map(|k| spent[k] / ops[k].max(1)).collect();
    eprintln!(
        "kernel-made {} names in {built:?}; in the two-level tree: {} removes, {} creates, {} renames, {} renames over, each {each:?}",
        names.len(),
        ops[0],
        ops[1],
        ops[2],
        ops[3]
    );

    // Corruptions (xfs_db re-seals the CRC, so only our checks see them).
    let node_entry = |img: &Path, fo: u64, i: usize| -> (u32, u64) {
        let out = xfs_db(
            img,
            false,
            &[
                "path /big",
                &format!("dblock {fo}"),
                &format!("print nbtree[{i}]"),
            ],
        );
        out.split_once(":[")
            .and_then(|(_, r)| r.split_once(']'))
            .and_then(|(v, _)| v.split_once(','))
            .map(|(h, b)| {
                (
                    u32::from_str_radix(h.trim_start_matches("0x"), 16).unwrap(),
                    b.parse::<u64>().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("node entry {i} of block {fo}: {out}"))
    };
    let (_, mid) = node_entry(&img.path, LEAF_FO, 0);
    let (h0, _) = node_entry(&img.path, mid, 0);
    let low = (0..1_000_000)
        .map(|k| name("aim", k, 40))
        .find(|n| da_hash(n.as_bytes()) <= h0)
        .unwrap();
    let victim = want
        .iter()
        .find(|n| da_hash(n.as_bytes()) <= h0)
        .unwrap()
        .clone();
    let cases: [(&str, u64, &str); 5] = [
        ("second freeindex", FREE_FO + 1, "write -d fhdr.firstdb 0"),
        ("root level", LEAF_FO, "write -d nhdr.level 3"),
        ("node count", mid, "write -d nhdr.count 0"),
        ("node hash", mid, "write -d nbtree[0].hashval 0xffffffff"),
        ("node sibling", mid, "write -d nhdr.info.hdr.back 12345"),
    ];
    for (case, fo, cmd) in cases {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("c.img");
        std::fs::copy(&img.path, &copy).unwrap();
        xfs_db(&copy, true, &["path /big", &format!("dblock {fo}"), cmd]);
        let (ov, mut fs) = over(&copy);
        let err = fs
            .create_file(&gp(&format!("big/{low}")), b"", &attrs())
            .unwrap_err()
            .to_string();
        assert!(err.contains("file block"), "{case}: {err}");
        assert!(!ov.is_dirty(), "{case}: a refused add wrote");
        let err = fs
            .remove(&gp(&format!("big/{victim}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file block"), "{case}: {err}");
        assert!(!ov.is_dirty(), "{case}: a refused remove wrote");
    }
}

/// Our writer grows a one-level tree into two levels, its data blocks
/// spilling into a second freeindex block, then removes until the tree is
/// one level again.
#[test]
fn writer_grows_second_level_and_joins_back() {
    // The kernel's names hash below 0xe000_0000; ours above, in order, so
    // that they all go into the last leaf, which splits every 252 names.
    // 126,800 names make 503 leaves of 252 (the root node splits at 505)
    // in 2,013 data blocks (a freeindex block covers 2,016).
    let names = names_by_hash("k", 126_800, 52, |h| h < 0xe000_0000);
    let img = kernel_built(&names);
    // The kernel removes every fourth name: leaves of about 189 entries,
    // two of which do not fit in three quarters of a block.
    {
        let m = Mounted::new(&img.path, false);
        for n in names.iter().skip(3).step_by(4) {
            std::fs::remove_file(m.path("big").join(n)).unwrap();
        }
    }
    let mut want: BTreeSet<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 3)
        .map(|(_, n)| n.clone())
        .collect();
    let (level, count) = root(&img.path);
    assert_eq!(level, 1, "the kernel's tree");
    assert_eq!(free_blocks(&img.path), 1);
    check(&img.path, &want, "as the kernel left it");

    // Adds: 200-byte names do not fit the kernel's holes, so they take
    // new data blocks past the first freeindex block's 2016.
    let ours = names_by_hash("w", 2000, 200, |h| h >= 0xe000_0000);
    let mut added = 0;
    let (mut spent, mut n_ops) = (Duration::ZERO, 0u32);
    while root(&img.path).0 < 2 || free_blocks(&img.path) < 2 {
        assert!(added < ours.len(), "no second level after {added} adds");
        let (ov, mut fs) = over(&img.path);
        let start = Instant::now();
        for n in ours.iter().skip(added).take(250) {
            fs.create_file(&gp(&format!("big/{n}")), b"", &attrs())
                .unwrap_or_else(|e| panic!("create {n}: {e}"));
            want.insert(n.clone());
            added += 1;
            n_ops += 1;
        }
        spent += start.elapsed();
        commit(&ov, &img.path);
        check(&img.path, &want, &format!("after {added} adds"));
    }
    let (level, top) = root(&img.path);
    assert_eq!(
        (level, top),
        (2, 2),
        "after {added} adds (root had {count})"
    );
    assert_eq!(free_blocks(&img.path), 2, "no second freeindex block");
    kernel_lists(&img.path, &want, "grown to two levels");
    eprintln!(
        "{added} adds grew the root from {count} leaves to a second level in {spent:?} ({:?} each)",
        spent / n_ops
    );

    // Removes of every 40th remaining kernel name, in hash order: two
    // leaves of about 184 entries fit in three quarters of a block, so
    // neighbours join pairwise; the nodes over them, at most half full,
    // join then, and the root takes the one node left.
    let victims: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 3)
        .map(|(_, n)| n.clone())
        .step_by(40)
        .collect();
    let mut removed = 0;
    let (mut spent, mut n_ops) = (Duration::ZERO, 0u32);
    while root(&img.path).0 == 2 {
        assert!(removed < victims.len(), "still two levels");
        let (ov, mut fs) = over(&img.path);
        let start = Instant::now();
        for n in victims.iter().skip(removed).take(600) {
            fs.remove(&gp(&format!("big/{n}")))
                .unwrap_or_else(|e| panic!("remove {n}: {e}"));
            want.remove(n);
            removed += 1;
            n_ops += 1;
        }
        spent += start.elapsed();
        commit(&ov, &img.path);
        check(&img.path, &want, &format!("after {removed} removes"));
    }
    assert_eq!(root(&img.path).0, 1);
    kernel_lists(&img.path, &want, "joined back to one level");
    eprintln!(
        "{removed} removes joined the tree back to one level in {spent:?} ({:?} each)",
        spent / n_ops
    );
}
