//! The AG btrees change shape under our writer: on a 1 KiB-block
//! filesystem with thousands of small files (mkfs.xfs -p), removing every
//! other file fragments the free space until the bnobt and cntbt grow past
//! one level (leaf splits, a root split) and the finobt fills past one
//! leaf; random create/replace/remove sequences then split and merge
//! blocks and refill and trim the AGFL; removing everything coalesces the
//! free space again until the trees shrink back (merges, root removal).
//! After each stage xfs_repair -n is clean, the AGFL holds at least the
//! kernel's minimum, xfs_db reads sampled files back through its own block
//! map, and a fresh reader of ours sees exactly the expected tree. The
//! heights are asserted from xfs_db, so the test cannot pass without the
//! splits having happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use vmie_guestfs::{GuestFs, GuestPath, NewAttrs};

fn gp(p: &str) -> GuestPath {
    GuestPath::lexical(p.as_bytes())
}

const DIRS: usize = 100;
const PER_DIR: usize = 80;

fn name(d: usize, f: usize) -> String {
    format!("d{d:03}/f{f:03}")
}

/// 8000 files of one or two blocks, in 100 leaf-form directories.
fn many_small() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    for d in 0..DIRS {
        t.insert(
            format!("d{d:03}"),
            Node::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
        for f in 0..PER_DIR {
            let len = 300 + (d * 7 + f * 13) % 1500;
            t.insert(name(d, f), regular(bytes((d * 1000 + f) as u64, len)));
        }
    }
    t
}

/// One AG's tree heights and AGFL state as xfs_db prints them.
#[derive(Debug, Clone, Copy, Default)]
struct AgState {
    bno: u64,
    cnt: u64,
    ino: u64,
    fino: u64,
    flcount: u64,
    btreeblks: u64,
    flfirst: u64,
    fllast: u64,
}

fn ag_state(img: &Path, agno: u64) -> AgState {
    let o = xfs_db(
        img,
        false,
        &[
            &format!("agf {agno}"),
            "print bnolevel cntlevel flcount btreeblks flfirst fllast",
            &format!("agi {agno}"),
            "print level free_level",
        ],
    );
    let f = |k: &str| -> u64 {
        o.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k} in {o}"))
            .trim()
            .parse()
            .unwrap()
    };
    AgState {
        bno: f("bnolevel"),
        cnt: f("cntlevel"),
        ino: f("level"),
        fino: f("free_level"),
        flcount: f("flcount"),
        btreeblks: f("btreeblks"),
        flfirst: f("flfirst"),
        fllast: f("fllast"),
    }
}

fn states(img: &Path) -> Vec<AgState> {
    (0..2).map(|a| ag_state(img, a)).collect()
}

/// The kernel's AGFL minimum (xfs_alloc_min_freelist, no rmapbt) is at
/// most 2 * (level + 1) - 2 per free-space tree; the AGFL must hold it.
fn assert_agfl(img: &Path, what: &str) {
    for (a, s) in states(img).iter().enumerate() {
        let need = 2 * (s.bno + 1) - 2 + 2 * (s.cnt + 1) - 2;
        assert!(
            s.flcount >= need,
            "{what}: AG {a} AGFL holds {} < {need} ({s:?})",
            s.flcount
        );
    }
}

/// xfs_repair -n clean, the AGFL full enough, a sample read back by
/// xfs_db, and everything by a fresh reader of ours.
fn check(img: &Path, want: &BTreeMap<String, Node>, what: &str) {
    assert_clean(img, what);
    assert_agfl(img, what);
    for (k, n) in want.iter().step_by(331) {
        if let Node::File { data, .. } = n {
            assert!(
                xfs_db_read(img, &format!("/{k}")) == *data,
                "{what}: xfs_db reads /{k}"
            );
        }
    }
    let (_, fs) = open(img);
    assert_eq!(compare(&fs, want), want.len(), "{what}: compared");
}

/// `levels`: the height the free-space trees must reach once fragmented.
fn shape_changes(profile: &str, args: &[&str], levels: u64) {
    let t = many_small();
    let root = tempfile::tempdir().unwrap();
    let proto = protofile(&t, root.path());
    let mut a = vec!["-d", "agcount=2"];
    a.extend_from_slice(args);
    let img = mkfs(&a, 300, Some(&proto));
    let mut want = t;
    let before = states(&img.path);
    eprintln!("{profile}: after mkfs {before:?}");
    assert!(
        before.iter().all(|s| s.bno == 1 && s.cnt == 1),
        "{profile}: mkfs already made multi-level free-space trees: {before:?}"
    );
    assert!(
        before.iter().all(|s| s.ino > 1),
        "{profile}: the inobt should start with two levels: {before:?}"
    );

    // 0. The chunks mkfs made are (nearly) full: 200 more files take new
    // chunks, whose records go into the two-level inobt.
    let (icount0, _) = sb_inodes(&img.path);
    let (ov, mut fs) = over(&img.path);
    for i in 0..200 {
        let k = format!("d{:03}/n{i:03}", i % DIRS);
        let data = bytes(77 + i as u64, 100 + i * 5);
        let attrs = NewAttrs {
            mode: 0o644,
            ..NewAttrs::default()
        };
        fs.create_file(&gp(&format!("/{k}")), &data, &attrs)
            .unwrap_or_else(|e| panic!("{profile}: create {k}: {e}"));
        want.insert(k, regular(data));
    }
    drop(fs);
    commit(&ov, &img.path);
    let (icount1, _) = sb_inodes(&img.path);
    assert!(
        icount1 >= icount0 + 128,
        "{profile}: no new inode chunks ({icount0} -> {icount1})"
    );
    check(&img.path, &want, &format!("{profile}: new chunks"));

    // 1. Every other file goes: one-block holes everywhere.
    let (ov, mut fs) = over(&img.path);
    for d in 0..DIRS {
        for f in (0..PER_DIR).step_by(2) {
            let k = name(d, f);
            fs.remove(&gp(&format!("/{k}")))
                .unwrap_or_else(|e| panic!("{profile}: remove {k}: {e}"));
            want.remove(&k);
        }
    }
    drop(fs);
    commit(&ov, &img.path);
    let grown = states(&img.path);
    eprintln!("{profile}: after fragmenting {grown:?}");
    assert!(
        grown.iter().any(|s| s.bno >= levels) && grown.iter().any(|s| s.cnt >= levels),
        "{profile}: the free-space trees did not grow: {grown:?}"
    );
    if args.iter().any(|a| a.contains("finobt=1")) {
        assert!(
            grown.iter().any(|s| s.fino > 1),
            "{profile}: the finobt did not grow: {grown:?}"
        );
    }
    check(&img.path, &want, &format!("{profile}: fragmented"));

    // 2. Random creates, replaces and removes.
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut fresh = 0usize;
    for round in 0..4 {
        let (ov, mut fs) = over(&img.path);
        for _ in 0..150 {
            let d = rng.below(DIRS);
            let f = rng.below(PER_DIR);
            let k = name(d, f);
            let p = gp(&format!("/{k}"));
            let len = match rng.below(4) {
                0 => 1 + rng.below(1024),
                1 => 1024 + rng.below(4096),
                2 => rng.below(20_000),
                _ => rng.below(3000),
            };
            let data = bytes(rng.next(), len);
            let exists = want.contains_key(&k);
            let node = regular(data.clone());
            let kept = if exists && rng.below(3) != 0 {
                fs.remove(&p)
                    .unwrap_or_else(|e| panic!("{profile}: remove {k}: {e}"));
                None
            } else if exists {
                fs.replace_file(&p, &data)
                    .unwrap_or_else(|e| panic!("{profile}: replace {k}: {e}"));
                Some(node)
            } else {
                let attrs = NewAttrs {
                    mode: 0o644,
                    ..NewAttrs::default()
                };
                fs.create_file(&p, &data, &attrs)
                    .unwrap_or_else(|e| panic!("{profile}: create {k}: {e}"));
                fresh += 1;
                Some(node)
            };
            match kept {
                Some(n) => want.insert(k, n),
                None => want.remove(&k),
            };
        }
        drop(fs);
        commit(&ov, &img.path);
        check(
            &img.path,
            &want,
            &format!("{profile}: random round {round}"),
        );
    }
    let mid = states(&img.path);
    eprintln!("{profile}: {fresh} files created; {mid:?}");

    // 3. Everything goes, the directories too: the free space coalesces
    // (only the inode chunks, which stay, split it), blocks merge, roots
    // are removed.
    let (ov, mut fs) = over(&img.path);
    let files: Vec<String> = want
        .iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    for k in files {
        fs.remove(&gp(&format!("/{k}")))
            .unwrap_or_else(|e| panic!("{profile}: remove {k}: {e}"));
        want.remove(&k);
    }
    for d in 0..DIRS {
        let k = format!("d{d:03}");
        fs.remove(&gp(&format!("/{k}")))
            .unwrap_or_else(|e| panic!("{profile}: rmdir {k}: {e}"));
        want.remove(&k);
    }
    drop(fs);
    commit(&ov, &img.path);
    let shrunk = states(&img.path);
    eprintln!("{profile}: after emptying {shrunk:?}");
    // Fewer levels everywhere (the inode chunks, which stay, keep some
    // free extents apart).
    assert!(
        shrunk
            .iter()
            .zip(&grown)
            .all(|(s, g)| s.bno < g.bno && s.cnt < g.cnt),
        "{profile}: the free-space trees did not shrink back: {grown:?} -> {shrunk:?}"
    );
    // The AGFL indices only move forwards: a smaller index later means
    // the circular array wrapped (and xfs_repair was clean after it).
    assert!(
        shrunk
            .iter()
            .zip(&mid)
            .any(|(s, m)| s.flfirst < m.flfirst && s.fllast < m.fllast),
        "{profile}: the AGFL never wrapped: {mid:?} -> {shrunk:?}"
    );
    let (peak, now): (u64, u64) = (
        grown.iter().map(|s| s.btreeblks).sum(),
        shrunk.iter().map(|s| s.btreeblks).sum(),
    );
    assert!(
        peak >= 8 && now * 8 <= peak,
        "{profile}: free-space btree blocks {peak} -> {now}"
    );
    check(&img.path, &want, &format!("{profile}: emptied"));
}

#[test]
fn free_space_and_inode_btrees_split_merge_v5() {
    shape_changes(
        "v5-finobt",
        &["-b", "size=1024", "-m", "crc=1,finobt=1,reflink=0,rmapbt=0"],
        2,
    );
}

#[test]
fn free_space_and_inode_btrees_split_merge_v4() {
    // 512-byte blocks: 62 records a leaf, 41 keys a node, so the holes
    // make three levels (node splits, a level-1 root split); directory
    // blocks of 4 KiB keep the directories in leaf form.
    shape_changes(
        "v4",
        &["-b", "size=512", "-n", "size=4096", "-m", "crc=0"],
        3,
    );
}

/// The superblock's inode count and free inodes.
fn sb_inodes(img: &Path) -> (u64, u64) {
    let v = sb_fields(img, &["icount", "ifree"]);
    (v[0], v[1])
}

/// Fill every free inode of every chunk, then create more files: new
/// 64-inode chunks are allocated (aligned, initialised, in the inobt and
/// finobt, AGI and superblock counters), and xfs_repair -n agrees.
fn new_chunks(profile: &str, args: &[&str]) {
    let mut t = BTreeMap::new();
    for d in 0..4 {
        t.insert(
            format!("d{d}"),
            Node::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
    }
    t.insert("d0/seed".into(), regular(bytes(9, 5000)));
    let root = tempfile::tempdir().unwrap();
    let proto = protofile(&t, root.path());
    let img = mkfs(args, 300, Some(&proto));
    let (icount0, ifree0) = sb_inodes(&img.path);
    assert!(ifree0 > 0, "{profile}: {icount0} {ifree0}");
    let mut want = t;
    let extra = 150u64;
    let (ov, mut fs) = over(&img.path);
    for i in 0..ifree0 + extra {
        let k = format!("d{}/f{i:04}", i % 4);
        let data = bytes(1000 + i, (i as usize * 37) % 3000);
        let attrs = NewAttrs {
            mode: 0o644,
            ..NewAttrs::default()
        };
        fs.create_file(&gp(&format!("/{k}")), &data, &attrs)
            .unwrap_or_else(|e| panic!("{profile}: create {k} ({i} of {}): {e}", ifree0 + extra));
        want.insert(k, regular(data));
        if i + 1 == ifree0 {
            // Every chunk is full now.
            drop(fs);
            commit(&ov, &img.path);
            assert_eq!(sb_inodes(&img.path), (icount0, 0), "{profile}: filled");
            fs = vmie_xfs::XfsFs::open(ov.clone(), "test.img").unwrap();
        }
    }
    drop(fs);
    commit(&ov, &img.path);
    let (icount, ifree) = sb_inodes(&img.path);
    let chunks = extra.div_ceil(64);
    assert_eq!(
        (icount, ifree),
        (icount0 + 64 * chunks, 64 * chunks - extra),
        "{profile}: counters after {extra} files beyond the existing chunks"
    );
    assert_clean(&img.path, profile);
    for (k, n) in want.iter().step_by(17) {
        if let Node::File { data, .. } = n {
            assert!(
                xfs_db_read(&img.path, &format!("/{k}")) == *data,
                "{profile}: xfs_db reads /{k}"
            );
        }
    }
    let (_, fs) = open(&img.path);
    assert_eq!(compare(&fs, &want), want.len(), "{profile}: compared");
}

#[test]
fn new_inode_chunks() {
    for (profile, args) in [
        ("v4", &["-m", "crc=0"][..]),
        ("v5-finobt", &["-m", "finobt=1,reflink=0"][..]),
        (
            "v5-bigtime-inobtcount",
            &["-m", "reflink=1,bigtime=1,inobtcount=1"][..],
        ),
        (
            "v5-1k-nosparse",
            &["-b", "size=1024", "-i", "sparse=0", "-m", "reflink=0"][..],
        ),
    ] {
        new_chunks(profile, args);
    }
}

/// A corrupted AGFL met when the free list must be refilled (AGF
/// pointers past the array, a bad AGFL header) is refused naming it, and
/// nothing is written; an rmapbt filesystem whose chunks are full gets a
/// new chunk with its reverse mapping.
#[test]
fn hostile_agfl_and_rmapbt_refusals() {
    let t = tree();
    let root = tempfile::tempdir().unwrap();
    let proto = protofile(&t, root.path());
    let base = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
    let agcount: u64 = xfs_db(&base.path, false, &["sb 0", "print agcount"])
        .trim()
        .strip_prefix("agcount = ")
        .unwrap()
        .parse()
        .unwrap();
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "AGFL last past the array",
            &["write -d flcount 0", "write -d fllast 500"],
            "AGFL last 500",
        ),
        (
            "AGFL first past the array",
            &["write -d flcount 9", "write -d flfirst 700"],
            "AGFL first 700",
        ),
        ("AGFL header", &["write -d flcount 1"], "AGFL of AG"),
    ];
    for (what, agf_cmds, needle) in cases {
        let img = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
        for a in 0..agcount {
            let mut cmds = vec![format!("agf {a}")];
            cmds.extend(agf_cmds.iter().map(|c| c.to_string()));
            if needle == "AGFL of AG" {
                cmds.push(format!("agfl {a}"));
                cmds.push("write -d magicnum 0".into());
            }
            let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
            xfs_db(&img.path, true, &refs);
        }
        let before = std::fs::read(&img.path).unwrap();
        let (ov, mut fs) = over(&img.path);
        let r = fs.create_file(&gp("/etc/new"), &bytes(5, 9000), &NewAttrs::default());
        let e = r.expect_err(what).to_string();
        assert!(e.contains(needle), "{what}: {e}");
        eprintln!("{what}: {e}");
        assert!(!ov.is_dirty(), "{what}: the overlay was written");
        drop(fs);
        assert!(std::fs::read(&img.path).unwrap() == before, "{what}");
    }

    // rmapbt: empty files in the root directory (block form, room to
    // spare) take the last free inodes.
    let mut flat = BTreeMap::new();
    for i in 0..61 {
        flat.insert(format!("e{i:02}"), regular(Vec::new()));
    }
    let proto = protofile(&flat, &root.path().join("flat"));
    let img = mkfs(&["-m", "rmapbt=1,reflink=0"], 300, Some(&proto));
    let (_, ifree) = sb_inodes(&img.path);
    assert!(ifree < 20, "rmapbt: {ifree} free inodes after mkfs");
    let (ov, mut fs) = over(&img.path);
    for i in 0..ifree {
        let k = format!("/n{i:02}");
        fs.create_file(&gp(&k), b"", &NewAttrs::default())
            .unwrap_or_else(|e| panic!("rmapbt: create {k}: {e}"));
    }
    drop(fs);
    commit(&ov, &img.path);
    assert_clean(&img.path, "rmapbt filled");
    assert_eq!(sb_inodes(&img.path).1, 0, "rmapbt: inodes left");
    // The next one needs a new chunk, which gets its reverse mapping
    // (XFS_RMAP_OWN_INODES).
    let (ov, mut fs) = over(&img.path);
    fs.create_file(&gp("/one-more"), b"", &NewAttrs::default())
        .expect("rmapbt new chunk");
    drop(fs);
    commit(&ov, &img.path);
    assert_clean(&img.path, "rmapbt new chunk");
    assert_eq!(
        sb_inodes(&img.path).1,
        63,
        "rmapbt: a new chunk's free inodes"
    );
}
