//! remove and rename: in shortform, block and leaf directories on every
//! mkfs profile a guest may carry, with files of every size (freed blocks
//! go back to the free-space btrees, freed inodes to the inobt/finobt);
//! after every operation xfs_repair -n is clean (it rebuilds the block and
//! inode maps on its own and compares them with the trees and counters)
//! and both our reader (fresh) and xfs_db read the result back. Refusals
//! write nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestPath, NewAttrs};
use vmie_xfs::XfsFs;

fn gp(p: &str) -> GuestPath {
    GuestPath::lexical(p.as_bytes())
}

fn leaf_name(i: usize) -> String {
    format!("leaf/a-long-name-to-fill-blocks-{i:04}")
}

/// The free block and inode counts of the superblock.
fn sb_free(img: &Path) -> (u64, u64) {
    let v = sb_fields(img, &["fdblocks", "ifree"]);
    (v[0], v[1])
}

/// One committed step: run `f`, apply `changes` to `want` (None removes),
/// commit, check everything.
struct Steps<'a> {
    img: &'a Path,
    name: &'a str,
    want: BTreeMap<String, Node>,
    n: usize,
}

impl Steps<'_> {
    fn run(
        &mut self,
        what: &str,
        f: &mut dyn FnMut(&mut XfsFs) -> Result<(), FsError>,
        changes: &[(&str, Option<Node>)],
    ) {
        let (ov, mut fs) = over(self.img);
        f(&mut fs).unwrap_or_else(|e| panic!("{}: {what}: {e}", self.name));
        let expected: Vec<(GuestPath, Option<Vec<u8>>)> = changes
            .iter()
            .map(|(k, n)| {
                let d = match n {
                    Some(Node::File { data, .. }) => Some(data.clone()),
                    _ => None,
                };
                (gp(&format!("/{k}")), d)
            })
            .collect();
        let files: Vec<_> = expected
            .into_iter()
            .filter(|(p, d)| {
                d.is_some()
                    || changes
                        .iter()
                        .any(|(k, n)| n.is_none() && gp(&format!("/{k}")) == *p)
            })
            .collect();
        fs.verify_paths(&files)
            .unwrap_or_else(|e| panic!("{}: {what}: self-check: {e}", self.name));
        commit(&ov, self.img);
        for (k, n) in changes {
            match n {
                Some(n) => self.want.insert(k.to_string(), n.clone()),
                None => self.want.remove(*k),
            };
        }
        let what = format!("{} step {}: {what}", self.name, self.n);
        assert_clean(self.img, &what);
        for (k, n) in &self.want {
            if matches!(n, Node::Dir { .. }) && k != "node" {
                assert_eq!(
                    xfs_db_ls(self.img, &format!("/{k}")),
                    listing(&self.want, k),
                    "{what}: /{k}"
                );
            }
        }
        for (k, n) in changes {
            if let Some(Node::File { data, .. }) = n {
                assert!(
                    xfs_db_read(self.img, &format!("/{k}")) == *data,
                    "{what}: xfs_db reads /{k}"
                );
            }
        }
        let (_, fs) = open(self.img);
        compare(&fs, &self.want);
        self.n += 1;
    }
}

#[test]
fn remove_and_rename_in_every_form_and_profile() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in PROFILES {
        let img = mkfs(args, 300, Some(&proto));
        let before = sb_free(&img.path);
        let mut s = Steps {
            img: &img.path,
            name,
            want: t.clone(),
            n: 0,
        };
        let file = |k: &str| s_node(&t, k);
        // Plain removals in each form: with blocks and without.
        for k in ["small/f1", "small/f0", "block/entry-005", &leaf_name(7)] {
            s.run(
                &format!("remove /{k}"),
                &mut |fs| fs.remove(&gp(&format!("/{k}"))),
                &[(k, None)],
            );
        }
        // Everything freed came back: blocks and inodes.
        let after = sb_free(&img.path);
        assert_eq!(after.1, before.1 + 4, "{name}: ifree");
        assert!(after.0 > before.0, "{name}: fdblocks {before:?} {after:?}");
        // Symlinks, inline and in a block.
        for (ln, target) in [("short", b"fstab".to_vec()), ("long", vec![b'x'; 900])] {
            let k = format!("etc/{ln}-link");
            s.run(
                &format!("symlink /{k}"),
                &mut |fs| fs.symlink(&gp(&format!("/{k}")), &target, &NewAttrs::default()),
                &[(&k, Some(Node::Link(target.clone())))],
            );
            s.run(
                &format!("remove /{k}"),
                &mut |fs| fs.remove(&gp(&format!("/{k}"))),
                &[(&k, None)],
            );
        }
        // Renames in one directory of each form.
        for (from, to) in [
            ("small/f2", "small/renamed-in-small"),
            ("block/entry-006", "block/renamed-in-block"),
            (leaf_name(8).as_str(), "leaf/renamed-in-leaf"),
        ] {
            let n = file(from);
            s.run(
                &format!("rename /{from} /{to}"),
                &mut |fs| fs.rename(&gp(&format!("/{from}")), &gp(&format!("/{to}"))),
                &[(from, None), (to, Some(n.clone()))],
            );
        }
        // Across directories, between every pair of forms.
        for (from, to) in [
            ("small/f3", "block/from-small"),
            ("block/entry-007", "leaf/from-block"),
            (leaf_name(9).as_str(), "small/from-leaf"),
            ("block/entry-008", "small/from-block"),
            ("small/f4", "leaf/from-small"),
            (leaf_name(10).as_str(), "block/from-leaf"),
        ] {
            let n = file(from);
            s.run(
                &format!("rename /{from} /{to}"),
                &mut |fs| fs.rename(&gp(&format!("/{from}")), &gp(&format!("/{to}"))),
                &[(from, None), (to, Some(n.clone()))],
            );
        }
        // Replacing a target (freed with its blocks) in each form, the way
        // an editor saves: a new file renamed over the old one.
        for target in ["etc/fstab", "small/f5", "block/entry-009", &leaf_name(11)] {
            let tmp = format!("{target}.tmp");
            let data = bytes(target.len() as u64, 7000);
            s.run(
                &format!("create /{tmp}"),
                &mut |fs| fs.create_file(&gp(&format!("/{tmp}")), &data, &NewAttrs::default()),
                &[(&tmp, Some(regular(data.clone())))],
            );
            s.run(
                &format!("rename /{tmp} over /{target}"),
                &mut |fs| fs.rename(&gp(&format!("/{tmp}")), &gp(&format!("/{target}"))),
                &[(&tmp, None), (target, Some(regular(data.clone())))],
            );
        }
        // Across directories over an existing name.
        let n = file("block/entry-010");
        s.run(
            "rename /block/entry-010 over /small/from-leaf",
            &mut |fs| fs.rename(&gp("/block/entry-010"), &gp("/small/from-leaf")),
            &[
                ("block/entry-010", None),
                ("small/from-leaf", Some(n.clone())),
            ],
        );
        // Directories: an empty one removed; one with a file moved across
        // parents ('..' and both parents' link counts follow), emptied and
        // removed.
        let dir = Node::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let attrs = NewAttrs {
            mode: 0o755,
            ..NewAttrs::default()
        };
        s.run(
            "mkdir /etc/d",
            &mut |fs| fs.mkdir(&gp("/etc/d"), &attrs),
            &[("etc/d", Some(dir.clone()))],
        );
        s.run(
            "rmdir /etc/d",
            &mut |fs| fs.remove(&gp("/etc/d")),
            &[("etc/d", None)],
        );
        s.run(
            "mkdir /small/sub and a file in it",
            &mut |fs| {
                fs.mkdir(&gp("/small/sub"), &attrs)?;
                fs.create_file(&gp("/small/sub/inner"), b"inner\n", &NewAttrs::default())
            },
            &[
                ("small/sub", Some(dir.clone())),
                ("small/sub/inner", Some(regular(b"inner\n".to_vec()))),
            ],
        );
        for (from, to) in [("small/sub", "leaf/sub"), ("leaf/sub", "block/sub")] {
            s.run(
                &format!("rename directory /{from} /{to}"),
                &mut |fs| fs.rename(&gp(&format!("/{from}")), &gp(&format!("/{to}"))),
                &[
                    (from, None),
                    (&format!("{from}/inner"), None),
                    (to, Some(dir.clone())),
                    (&format!("{to}/inner"), Some(regular(b"inner\n".to_vec()))),
                ],
            );
            let out = xfs_db(&img.path, false, &[&format!("path /{to}/.."), "print core"]);
            let parent = to.split('/').next().unwrap();
            let want_links = 2 + s
                .want
                .iter()
                .filter(|(k, n)| {
                    k.starts_with(&format!("{parent}/"))
                        && !k[parent.len() + 1..].contains('/')
                        && matches!(n, Node::Dir { .. })
                })
                .count();
            let links = out
                .lines()
                .find_map(|l| {
                    l.strip_prefix("core.nlink = ")
                        .or(l.strip_prefix("core.nlinkv2 = "))
                })
                .unwrap();
            assert_eq!(links, want_links.to_string(), "{name}: /{to}/..");
        }
        s.run(
            "remove /block/sub/inner and /block/sub",
            &mut |fs| {
                fs.remove(&gp("/block/sub/inner"))?;
                fs.remove(&gp("/block/sub"))
            },
            &[("block/sub/inner", None), ("block/sub", None)],
        );
        // Empty the leaf directory (its data blocks stay, empty), then
        // fill it again.
        let names: Vec<String> = s
            .want
            .keys()
            .filter(|k| k.starts_with("leaf/"))
            .cloned()
            .collect();
        let gone: Vec<(&str, Option<Node>)> = names.iter().map(|k| (k.as_str(), None)).collect();
        s.run(
            "remove every entry of /leaf",
            &mut |fs| {
                for k in &names {
                    fs.remove(&gp(&format!("/{k}")))?;
                }
                Ok(())
            },
            &gone,
        );
        let refill: Vec<(String, Vec<u8>)> = (0..60)
            .map(|i| (format!("leaf/refill-{i:03}"), bytes(i, i as usize * 50)))
            .collect();
        let adds: Vec<(&str, Option<Node>)> = refill
            .iter()
            .map(|(k, d)| (k.as_str(), Some(regular(d.clone()))))
            .collect();
        s.run(
            "refill /leaf",
            &mut |fs| {
                for (k, d) in &refill {
                    fs.create_file(&gp(&format!("/{k}")), d, &NewAttrs::default())?;
                }
                Ok(())
            },
            &adds,
        );
        check_all(&img.path, &s.want, name);
        eprintln!("{name}: {} operations checked", s.n);
    }
}

fn s_node(t: &BTreeMap<String, Node>, k: &str) -> Node {
    t.get(k)
        .cloned()
        .unwrap_or_else(|| panic!("{k} in the tree"))
}

/// Every refusal names what it refuses and leaves the overlay untouched;
/// the image stays clean.
#[test]
fn refusals_write_nothing() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let refused = |fs: &mut XfsFs,
                   ov: &vmie_disk::Overlay,
                   what: &str,
                   r: Result<(), FsError>,
                   check: &dyn Fn(&FsError) -> bool| {
        let e = r.expect_err(what);
        assert!(check(&e), "{what}: {e}");
        assert!(!ov.is_dirty(), "{what}: a refusal wrote");
        let _ = fs;
        eprintln!("{what}: {e}");
    };
    let has = |s: &'static str| move |e: &FsError| e.to_string().contains(s);

    // rmapbt: blocks are freed with their reverse mappings.
    let img = mkfs(&["-m", "rmapbt=1"], 300, Some(&proto));
    let (ov, mut fs) = over(&img.path);
    fs.remove(&gp("/block/entry-001")).unwrap();
    fs.create_file(&gp("/etc/empty"), b"", &NewAttrs::default())
        .unwrap();
    fs.rename(&gp("/block/entry-002"), &gp("/small/moved"))
        .unwrap();
    fs.remove(&gp("/etc/empty")).unwrap();
    commit(&ov, &img.path);
    assert_clean(&img.path, "rmapbt: rename and remove");

    let img = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
    let (ov, mut fs) = over(&img.path);
    type Check = Box<dyn Fn(&FsError) -> bool>;
    let cases: Vec<(&str, Result<(), FsError>, Check)> = vec![
        (
            "non-empty directory",
            fs.remove(&gp("/small")),
            Box::new(|e| matches!(e, FsError::NotEmpty { .. })),
        ),
        (
            "missing file",
            fs.remove(&gp("/etc/nothing")),
            Box::new(|e| matches!(e, FsError::NotFound { .. })),
        ),
        (
            "the root",
            fs.remove(&GuestPath::root()),
            Box::new(has("root")),
        ),
        (
            "a directory into itself",
            fs.rename(&gp("/small"), &gp("/small/inner")),
            Box::new(has("into itself")),
        ),
        (
            "a file over a directory",
            fs.rename(&gp("/etc/fstab"), &gp("/small")),
            Box::new(|e| matches!(e, FsError::IsADirectory { .. })),
        ),
        (
            "a directory over a file",
            fs.rename(&gp("/small"), &gp("/etc/fstab")),
            Box::new(|e| matches!(e, FsError::NotADirectory { .. })),
        ),
        (
            "a missing source",
            fs.rename(&gp("/etc/nothing"), &gp("/etc/else")),
            Box::new(|e| matches!(e, FsError::NotFound { .. })),
        ),
        (
            "into a missing directory",
            fs.rename(&gp("/etc/fstab"), &gp("/nowhere/fstab")),
            Box::new(|e| matches!(e, FsError::NotFound { .. })),
        ),
        (
            "a name XFS cannot hold",
            fs.rename(&gp("/etc/fstab"), &gp(&format!("/etc/{}", "n".repeat(256)))),
            Box::new(has("name")),
        ),
    ];
    for (what, r, check) in cases {
        refused(&mut fs, &ov, what, r, &*check);
    }
    // Renaming a name onto itself changes nothing.
    fs.rename(&gp("/etc/fstab"), &gp("/etc/fstab")).unwrap();
    assert!(!ov.is_dirty());
    drop(fs);
    // An immutable file (set by xfs_db) stays.
    xfs_db(
        &img.path,
        true,
        &["path /etc/fstab", "write core.immutable 1"],
    );
    let (ov, mut fs) = over(&img.path);
    let r = fs.remove(&gp("/etc/fstab"));
    refused(&mut fs, &ov, "immutable file", r, &has("immutable"));
    let r = fs.rename(&gp("/small/f1"), &gp("/etc/fstab"));
    refused(&mut fs, &ov, "over an immutable file", r, &has("immutable"));
    drop(fs);
    xfs_db(
        &img.path,
        true,
        &["path /etc/fstab", "write core.immutable 0"],
    );
    assert_clean(&img.path, "after the refusals");

    // Reflink: blocks the refcountbt calls shared are never freed (the
    // record is planted with xfs_db; only our refusal is checked).
    let img = mkfs(&["-m", "reflink=1"], 300, Some(&proto));
    let bmap = xfs_db(&img.path, false, &["path /block/entry-002", "bmap"]);
    // data offset 0 startblock 1234 (ag/agbno) count 1 flag 0
    let pair = bmap
        .split_whitespace()
        .find(|w| w.starts_with('('))
        .unwrap()
        .trim_matches(|c| c == '(' || c == ')')
        .to_string();
    let (ag, agbno) = pair.split_once('/').unwrap();
    xfs_db(
        &img.path,
        true,
        &[
            &format!("agf {ag}"),
            "addr refcntroot",
            "write numrecs 1",
            &format!("write recs[1].startblock {agbno}"),
            "write recs[1].blockcount 1",
            "write recs[1].refcount 2",
        ],
    );
    let (ov, mut fs) = over(&img.path);
    let r = fs.remove(&gp("/block/entry-002"));
    refused(&mut fs, &ov, "shared blocks", r, &has("reflink"));
    let r = fs.rename(&gp("/small/f1"), &gp("/block/entry-002"));
    refused(
        &mut fs,
        &ov,
        "over a file with shared blocks",
        r,
        &has("reflink"),
    );
}

/// Removing every other file of a directory fragments the free space until
/// a free-space btree leaf is full: the next removal splits it (the tree
/// grows a level, its new blocks taken from the AGFL), every removal is
/// committed on its own, and the image is clean.
#[test]
fn a_free_space_btree_split_on_remove() {
    let mut t = BTreeMap::new();
    t.insert(
        "many".to_string(),
        Node::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    );
    for i in 0..400 {
        t.insert(format!("many/file-{i:04}"), regular(bytes(i, 700)));
    }
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let img = mkfs(
        &[
            "-b",
            "size=1024",
            "-d",
            "agcount=2",
            "-m",
            "finobt=1,reflink=0",
        ],
        300,
        Some(&proto),
    );
    let levels = |img: &Path| -> Vec<String> {
        (0..2)
            .map(|a| {
                xfs_db(
                    img,
                    false,
                    &[&format!("agf {a}"), "print bnolevel cntlevel"],
                )
                .replace('\n', " ")
            })
            .collect()
    };
    let before = levels(&img.path);
    let mut want = t.clone();
    for i in (0..400).step_by(2) {
        let k = format!("many/file-{i:04}");
        let (ov, mut fs) = over(&img.path);
        fs.remove(&gp(&format!("/{k}")))
            .unwrap_or_else(|e| panic!("remove {k}: {e}"));
        commit(&ov, &img.path);
        want.remove(&k);
    }
    let after = levels(&img.path);
    eprintln!("{before:?} -> {after:?}");
    assert!(
        before.iter().all(|l| l.contains("bnolevel = 1"))
            && after.iter().any(|l| l.contains("bnolevel = 2")),
        "the bnobt did not grow: {before:?} -> {after:?}"
    );
    check_all(&img.path, &want, "after the split");
}

/// Corrupted metadata met while removing (changed with xfs_db, which
/// re-seals the CRCs, so only our checks can notice): refused naming the
/// structure, nothing written.
#[test]
fn corrupted_metadata_is_refused_on_remove() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let base = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
    let sb = xfs_db(&base.path, false, &["sb 0", "print agcount"]);
    let agcount: u32 = sb
        .trim()
        .strip_prefix("agcount = ")
        .unwrap()
        .parse()
        .unwrap();
    let per_ag = |cmds: &[&str]| -> Vec<String> {
        let mut v = Vec::new();
        for a in 0..agcount {
            for c in cmds {
                v.push(c.replace("{a}", &a.to_string()));
            }
        }
        v
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "block count of the inode",
            vec![
                "path /block/entry-003".into(),
                "write core.nblocks 5".into(),
            ],
            "counts 5 blocks but maps",
        ),
        (
            "inobt calls the inode free",
            per_ag(&[
                "agi {a}",
                "addr root",
                "write recs[1].free 0xffffffffffffffff",
            ]),
            "free already",
        ),
        (
            "AGF counts the whole AG free",
            (0..agcount)
                .flat_map(|a| {
                    let o = xfs_db(&base.path, false, &[&format!("agf {a}"), "print length"]);
                    let len = o.trim().strip_prefix("length = ").unwrap().to_string();
                    [format!("agf {a}"), format!("write freeblks {len}")]
                })
                .collect(),
            "more free blocks than the AG has",
        ),
        (
            "bnobt magic",
            per_ag(&["agf {a}", "addr bnoroot", "write -d magic 0x41425443"]),
            "bnobt",
        ),
    ];
    for (what, cmds, needle) in cases {
        let img = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        xfs_db(&img.path, true, &refs);
        let before = std::fs::read(&img.path).unwrap();
        let (ov, mut fs) = over(&img.path);
        let e = fs.remove(&gp("/block/entry-003")).expect_err(what);
        assert!(
            matches!(e, FsError::Corrupt { .. }) && e.to_string().contains(needle),
            "{what}: {e}"
        );
        eprintln!("{what}: {e}");
        assert!(!ov.is_dirty(), "{what}: the overlay was written");
        drop(fs);
        assert!(
            std::fs::read(&img.path).unwrap() == before,
            "{what}: the image changed"
        );
    }
}
