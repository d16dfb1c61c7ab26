//! Node-form directories (data blocks, a hash tree of leafN blocks under
//! a da node, a freeindex block): grown by our writer from empty past
//! 5,000 entries, and mkfs-made ones changed at random; after every
//! committed batch xfs_repair -n is clean and xfs_db and a fresh reader
//! list exactly the expected entries. Corrupted hash-tree and freeindex
//! blocks are refused without a write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vmie_guestfs::{GuestFs, GuestPath, NewAttrs};

const RHEL9: &str = "crc=1,finobt=1,reflink=1,bigtime=1,inobtcount=1";

/// (name, mkfs arguments, block size).
const NODE_PROFILES: [(&str, &[&str], u64); 4] = [
    ("v5-rhel9", &["-m", RHEL9], 4096),
    ("v4", &["-m", "crc=0"], 4096),
    ("v5-rhel9-1k", &["-b", "size=1024", "-m", RHEL9], 1024),
    ("v4-1k", &["-b", "size=1024", "-m", "crc=0"], 1024),
];

/// The profiles mkfs can populate with a 5,000-entry directory in an
/// extent list (1 KiB inodes need 4 KiB blocks).
const MKFS_PROFILES: [(&str, &[&str], u64); 2] = [NODE_PROFILES[0], NODE_PROFILES[1]];

/// mkfs.xfs with `args` and 1 KiB inodes, from `proto`. mkfs fills a
/// 5,000-entry directory with its inode chunks between the directory's
/// blocks: 40-odd extents, a btree block map in a 256 or 512-byte inode
/// (tests/bmbt.rs), an extent list in a 1 KiB one.
fn mkfs_big_inodes(args: &[&str], proto: &Path) -> Img {
    let mut a = args.to_vec();
    a.extend(["-i", "size=1024"]);
    mkfs(&a, 300, Some(proto))
}

/// Unique names of mixed lengths (about 8 to 200 bytes).
fn name_for(i: usize, salt: u64) -> String {
    let len = if salt == 0 {
        [3, 12, 40, 7, 25][i % 5]
    } else {
        [3, 12, 40, 100, 200, 7, 25][i % 7]
    };
    let mut s = format!("{salt}-{i}-");
    while s.len() < len {
        s.push((b'a' + ((i * 7 + s.len() * 3) % 26) as u8) as char);
    }
    s
}

fn attrs() -> NewAttrs {
    NewAttrs {
        mode: 0o644,
        ..NewAttrs::default()
    }
}

fn base_tree() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    let dir = Node::Dir {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    t.insert("etc".into(), dir.clone());
    t.insert(
        "etc/fstab".into(),
        regular(b"/dev/sda1 / xfs defaults 0 0\n".to_vec()),
    );
    t.insert("big".into(), dir);
    t
}

/// A tree with `n` empty files in /big.
fn node_tree(n: usize) -> BTreeMap<String, Node> {
    let mut t = base_tree();
    for i in 0..n {
        t.insert(format!("big/{}", name_for(i, 0)), regular(Vec::new()));
    }
    t
}

fn gp(p: &str) -> GuestPath {
    GuestPath::lexical(format!("/{p}").as_bytes())
}

/// xfs_repair -n clean, and xfs_db lists /big exactly as expected.
fn check_big(img: &Path, want: &BTreeMap<String, Node>, what: &str) {
    assert_clean(img, what);
    // xfs_db 6.1's ls lists the data block after a hole in the data
    // segment once per block of the hole (the kernel leaves such holes
    // when it frees a data block, as we do): compare distinct names; the
    // fresh reader's listing is compared exactly by `compare`.
    let mut got = xfs_db_ls(img, "/big");
    got.dedup();
    let exp = listing(want, "big");
    if got != exp {
        let show = |v: Vec<&Vec<u8>>| -> Vec<String> {
            v.iter()
                .take(8)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        };
        panic!(
            "{what}: xfs_db lists {} entries in /big, {} expected; extra {:?}, missing {:?}",
            got.len(),
            exp.len(),
            show(got.iter().filter(|n| !exp.contains(n)).collect()),
            show(exp.iter().filter(|n| !got.contains(n)).collect()),
        );
    }
    let (_, fs) = open(img);
    let mut ours: Vec<Vec<u8>> = fs
        .read_dir(&gp("big"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    ours.sort();
    assert!(ours == exp, "{what}: our reader lists /big differently");
}

#[test]
fn empty_directory_grows_into_node_form() {
    let t = base_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args, bs) in NODE_PROFILES {
        let img = mkfs(args, 300, Some(&proto));
        let mut want = t.clone();
        let mut spent = Duration::ZERO;
        let mut n = 0usize;
        let mut node_at = None;
        for batch in 0..10 {
            let (ov, mut fs) = over(&img.path);
            let start = Instant::now();
            for _ in 0..500 {
                let p = format!("big/{}", name_for(n, 1));
                fs.create_file(&gp(&p), b"", &attrs())
                    .unwrap_or_else(|e| panic!("{name}: create /{p} (entry {n}): {e}"));
                want.insert(p, regular(Vec::new()));
                n += 1;
            }
            spent += start.elapsed();
            commit(&ov, &img.path);
            check_big(&img.path, &want, &format!("{name} batch {batch}"));
            if node_at.is_none() && xfs_db_is_node_dir(&img.path, "/big", bs) {
                node_at = Some(n);
            }
        }
        assert!(
            xfs_db_is_node_dir(&img.path, "/big", bs),
            "{name}: /big never reached node form"
        );
        let (_, fs) = open(&img.path);
        compare(&fs, &want);
        assert_eq!(fs.read_dir(&gp("big")).unwrap().len(), n);
        eprintln!(
            "{name}: {n} entries added in {spent:?} ({:?} per add); node form by {node_at:?} entries",
            spent / n as u32
        );
    }
}

#[test]
fn mkfs_node_directory_takes_random_changes_then_empties() {
    let t = node_tree(5000);
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args, bs) in MKFS_PROFILES {
        let img = mkfs_big_inodes(args, &proto);
        assert!(
            xfs_db_is_node_dir(&img.path, "/big", bs),
            "{name}: mkfs made no node-form /big"
        );
        let mut want = t.clone();
        let mut rng = Rng(0x5eed ^ bs);
        let mut counts = [0usize; 4];
        let mut spent = Duration::ZERO;
        let mut ops = 0u32;
        for batch in 0..4 {
            let (ov, mut fs) = over(&img.path);
            let start = Instant::now();
            for op in 0..150 {
                let names = listing(&want, "big");
                let pick =
                    |r: usize| format!("big/{}", String::from_utf8_lossy(&names[r % names.len()]));
                let fresh = format!("big/{}", name_for(batch * 1000 + op, 2));
                match rng.below(4) {
                    0 => {
                        let p = pick(rng.below(1 << 20));
                        fs.remove(&gp(&p))
                            .unwrap_or_else(|e| panic!("{name}: remove /{p}: {e}"));
                        want.remove(&p);
                        counts[0] += 1;
                    }
                    1 => {
                        fs.create_file(&gp(&fresh), b"", &attrs())
                            .unwrap_or_else(|e| panic!("{name}: create /{fresh}: {e}"));
                        want.insert(fresh, regular(Vec::new()));
                        counts[1] += 1;
                    }
                    2 => {
                        let p = pick(rng.below(1 << 20));
                        fs.rename(&gp(&p), &gp(&fresh))
                            .unwrap_or_else(|e| panic!("{name}: rename /{p} /{fresh}: {e}"));
                        let n = want.remove(&p).unwrap();
                        want.insert(fresh, n);
                        counts[2] += 1;
                    }
                    _ => {
                        let p = pick(rng.below(1 << 20));
                        let q = pick(rng.below(1 << 20));
                        if p == q {
                            continue;
                        }
                        fs.rename(&gp(&p), &gp(&q))
                            .unwrap_or_else(|e| panic!("{name}: rename /{p} over /{q}: {e}"));
                        let n = want.remove(&p).unwrap();
                        want.insert(q, n);
                        counts[3] += 1;
                    }
                }
                ops += 1;
            }
            spent += start.elapsed();
            commit(&ov, &img.path);
            check_big(&img.path, &want, &format!("{name} batch {batch}"));
        }
        assert!(xfs_db_is_node_dir(&img.path, "/big", bs), "{name}");
        let (_, fs) = open(&img.path);
        compare(&fs, &want);
        eprintln!(
            "{name}: {ops} random changes (remove, create, rename, rename over: {counts:?}) in {spent:?} ({:?} per change)",
            spent / ops
        );
        // Emptying it: data blocks and leaves are freed on the way.
        let blocks_before = xfs_db_bmap(&img.path, "/big")
            .iter()
            .map(|e| e.1)
            .sum::<u64>();
        let start = Instant::now();
        let mut removed = 0u32;
        loop {
            let names = listing(&want, "big");
            if names.len() <= 20 {
                break;
            }
            let (ov, mut fs) = over(&img.path);
            for nm in names.iter().take(1500.min(names.len() - 20)) {
                let p = format!("big/{}", String::from_utf8_lossy(nm));
                fs.remove(&gp(&p))
                    .unwrap_or_else(|e| panic!("{name}: remove /{p}: {e}"));
                want.remove(&p);
                removed += 1;
            }
            commit(&ov, &img.path);
            check_big(&img.path, &want, &format!("{name} emptying"));
        }
        let blocks_after = xfs_db_bmap(&img.path, "/big")
            .iter()
            .map(|e| e.1)
            .sum::<u64>();
        eprintln!(
            "{name}: {removed} removes in {:?} ({:?} each); /big maps {blocks_before} then {blocks_after} blocks",
            start.elapsed(),
            start.elapsed() / removed
        );
        // Every emptied data block was freed: at most one per entry left
        // (block 0 holds . and ..), counted in directory blocks.
        let dir_fsbs = 4096 / bs;
        let data_blocks = xfs_db_bmap(&img.path, "/big")
            .iter()
            .filter(|e| e.0 < (32u64 << 30) / bs)
            .map(|e| e.1)
            .sum::<u64>()
            / dir_fsbs;
        // Small leaves joined their neighbours, down to one root leaf.
        let leaf_blocks = xfs_db_bmap(&img.path, "/big")
            .iter()
            .filter(|e| e.0 >= (32u64 << 30) / bs && e.0 < (64u64 << 30) / bs)
            .map(|e| e.1)
            .sum::<u64>()
            / dir_fsbs;
        eprintln!("{name}: {data_blocks} data and {leaf_blocks} leaf blocks left");
        assert!(
            leaf_blocks <= 2,
            "{name}: {leaf_blocks} leaf blocks for 20 entries"
        );
        assert!(
            blocks_after < blocks_before && data_blocks <= 21,
            "{name}: {data_blocks} data blocks for 20 entries: emptied blocks were not freed"
        );
        let (_, fs) = open(&img.path);
        compare(&fs, &want);
    }
}

/// Random add/remove/rename sequences in a 5,000-entry node directory,
/// one profile per case in turn. 4 cases by default;
/// `VMIE_PROPTEST_CASES=N` runs N per profile.
#[test]
fn random_node_sequences_stay_consistent() {
    let t = node_tree(5000);
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let cases = std::env::var("VMIE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(4, |n| n.saturating_mul(MKFS_PROFILES.len() as u64));
    let start = Instant::now();
    let mut kernel_n = 0usize;
    for case in 0..cases {
        let (name, args, _) = MKFS_PROFILES[(case as usize) % MKFS_PROFILES.len()];
        let img = mkfs_big_inodes(args, &proto);
        let mut want = t.clone();
        let mut rng = Rng(case.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (ov, mut fs) = over(&img.path);
        let mut names: Vec<String> = listing(&want, "big")
            .into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .collect();
        for op in 0..60 {
            let nl = 1 + rng.below(120);
            let fresh: String = (0..nl)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect::<String>()
                + &format!("-{case}-{op}");
            let i = rng.below(names.len());
            let what = format!("{name} case {case} op {op}");
            match rng.below(10) {
                0..=3 => {
                    fs.create_file(&gp(&format!("big/{fresh}")), b"", &attrs())
                        .unwrap_or_else(|e| panic!("{what}: create {fresh}: {e}"));
                    names.push(fresh);
                }
                4..=6 => {
                    let p = names.swap_remove(i);
                    fs.remove(&gp(&format!("big/{p}")))
                        .unwrap_or_else(|e| panic!("{what}: remove {p}: {e}"));
                }
                7 | 8 => {
                    let p = std::mem::replace(&mut names[i], fresh.clone());
                    fs.rename(&gp(&format!("big/{p}")), &gp(&format!("big/{fresh}")))
                        .unwrap_or_else(|e| panic!("{what}: rename {p} {fresh}: {e}"));
                }
                _ => {
                    let j = rng.below(names.len());
                    if i == j {
                        continue;
                    }
                    let p = names[i].clone();
                    fs.rename(&gp(&format!("big/{p}")), &gp(&format!("big/{}", names[j])))
                        .unwrap_or_else(|e| panic!("{what}: rename {p} over {}: {e}", names[j]));
                    names.swap_remove(i);
                }
            }
        }
        commit(&ov, &img.path);
        want.retain(|k, _| !k.starts_with("big/"));
        for n in &names {
            want.insert(format!("big/{n}"), regular(Vec::new()));
        }
        check_big(&img.path, &want, &format!("{name} case {case}"));
        let (_, fs) = open(&img.path);
        compare(&fs, &want);
        kernel_n += usize::from(kernel_check(
            &img.path,
            &want,
            &format!("{name} case {case}"),
        ));
    }
    assert!(kernel_n > 0, "no case was read back by the kernel");
    eprintln!(
        "{cases} cases of 60 changes ({kernel_n} read back by the kernel) in {:?}",
        start.elapsed()
    );
}

/// A freeindex or leafN block corrupted (CRC re-sealed by xfs_db, so only
/// our checks can see it): the add is refused naming the block, and
/// nothing is written.
#[test]
fn corrupted_node_blocks_refuse_adds() {
    let t = node_tree(3000);
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args, bs) in MKFS_PROFILES {
        let leaf_fo = (32u64 << 30) / bs;
        let free_fo = 2 * leaf_fo;
        // The freeindex's used count.
        let img = mkfs_big_inodes(args, &proto);
        xfs_db(
            &img.path,
            true,
            &[
                "path /big",
                &format!("dblock {free_fo}"),
                "write fhdr.nused 1",
            ],
        );
        let (ov, mut fs) = over(&img.path);
        let err = fs
            .create_file(&gp("big/one-more"), b"", &attrs())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("freeindex block at file block {free_fo}")),
            "{name}: {err}"
        );
        assert!(!ov.is_dirty(), "{name}");
        // The first leaf's stale count, and a name that hashes into it.
        let img = mkfs_big_inodes(args, &proto);
        let out = xfs_db(
            &img.path,
            false,
            &["path /big", &format!("dblock {leaf_fo}"), "print nbtree[0]"],
        );
        let (h0, leaf0) = out
            .split_once(":[")
            .and_then(|(_, r)| r.split_once(']'))
            .and_then(|(v, _)| v.split_once(','))
            .map(|(h, b)| {
                (
                    u32::from_str_radix(h.trim_start_matches("0x"), 16).unwrap(),
                    b.parse::<u64>().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("{name}: node entry 0 in {out}"));
        xfs_db(
            &img.path,
            true,
            &[
                "path /big",
                &format!("dblock {leaf0}"),
                "write -d lhdr.stale 9999",
            ],
        );
        let target = (0..)
            .map(|k| format!("aimed-{k}"))
            .find(|n| da_hash(n.as_bytes()) <= h0)
            .unwrap();
        let (ov, mut fs) = over(&img.path);
        let err = fs
            .create_file(&gp(&format!("big/{target}")), b"", &attrs())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("leafN block at file block {leaf0}")),
            "{name}: {err}"
        );
        assert!(!ov.is_dirty(), "{name}");
        // A remove through that leaf is refused the same way.
        let victim = (0..3000)
            .map(|i| name_for(i, 0))
            .find(|n| da_hash(n.as_bytes()) <= h0)
            .unwrap();
        let err = fs
            .remove(&gp(&format!("big/{victim}")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("leafN block at file block {leaf0}")),
            "{name}: {err}"
        );
        assert!(!ov.is_dirty(), "{name}");
    }
}

/// Bytes of the hash tree root, a leaf and the freeindex block changed
/// at random (v5 CRCs re-sealed, so only our checks stand between the
/// bytes and the writer): an add and a remove never panic, and a refusal
/// writes nothing.
#[test]
fn mutated_node_blocks_never_panic() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let t = node_tree(3000);
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args, bs) in MKFS_PROFILES {
        let img = mkfs_big_inodes(args, &proto);
        let v5 = name.starts_with("v5");
        let agblocks = sb_fields(&img.path, &["agblocks"])[0];
        let leaf_fo = (32u64 << 30) / bs;
        // Physical byte offset of file block `fo` of /big.
        let out = xfs_db(&img.path, false, &["path /big", "bmap"]);
        let phys = |fo: u64| -> u64 {
            for l in out.lines() {
                let w: Vec<&str> = l.split_whitespace().collect();
                let (Some(off), Some(cnt), Some(ag)) = (
                    w.get(2).and_then(|x| x.parse::<u64>().ok()),
                    w.get(7).and_then(|x| x.parse::<u64>().ok()),
                    w.get(5),
                ) else {
                    continue;
                };
                if off <= fo && fo < off + cnt {
                    let (a, b) = ag
                        .trim_matches(|c| c == '(' || c == ')')
                        .split_once('/')
                        .unwrap();
                    let fsb = a.parse::<u64>().unwrap() * agblocks + b.parse::<u64>().unwrap();
                    return (fsb + fo - off) * bs;
                }
            }
            panic!("{name}: file block {fo} of /big not in {out}");
        };
        let node_out = xfs_db(
            &img.path,
            false,
            &["path /big", &format!("dblock {leaf_fo}"), "print nbtree[1]"],
        );
        let leaf1: u64 = node_out
            .rsplit_once(',')
            .and_then(|(_, r)| r.trim().trim_end_matches(']').parse().ok())
            .unwrap_or_else(|| panic!("{name}: {node_out}"));
        let targets = [
            (phys(leaf_fo), 12),
            (phys(leaf1), 12),
            (phys(2 * leaf_fo), 4),
        ];
        let mut rng = Rng(0xbad5eed ^ bs);
        let (mut refused, mut done) = (0, 0);
        for (at, crc) in targets {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&img.path)
                .unwrap();
            let mut orig = vec![0u8; 4096];
            file.seek(SeekFrom::Start(at)).unwrap();
            file.read_exact(&mut orig).unwrap();
            for _ in 0..40 {
                let mut b = orig.clone();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(160);
                    b[i] = rng.below(256) as u8;
                }
                if v5 {
                    b[crc..crc + 4].fill(0);
                    let c = !vmie_disk::checksum::crc32c_update(!0, &b);
                    b[crc..crc + 4].copy_from_slice(&c.to_le_bytes());
                }
                file.seek(SeekFrom::Start(at)).unwrap();
                file.write_all(&b).unwrap();
                file.sync_all().unwrap();
                for k in 0..2 {
                    let (ov, mut fs) = over(&img.path);
                    let r = if k == 0 {
                        fs.create_file(&gp(&format!("big/m-{}", rng.below(1 << 30))), b"", &attrs())
                    } else {
                        fs.remove(&gp(&format!("big/{}", name_for(rng.below(3000), 0))))
                    };
                    match r {
                        Ok(()) => done += 1,
                        Err(_) => {
                            assert!(!ov.is_dirty(), "{name}: a refusal wrote");
                            refused += 1;
                        }
                    }
                }
            }
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&orig).unwrap();
        }
        eprintln!("{name}: {refused} refused, {done} went through");
        assert!(refused > 0, "{name}: no mutation was noticed");
    }
}

/// Node-form leaves as the Linux kernel leaves them: the kernel marks a
/// removed name's hash entry stale instead of compacting the leaf. A
/// mkfs-made 5,000-entry directory loses two names in three to the kernel
/// (guestfish's appliance mounts the image and removes them), so its
/// leaves are under half full and end in stale entries; then our writer
/// removes (joining leaves, rewriting their neighbours' sibling pointers),
/// adds and renames in it. After every committed batch xfs_repair -n is clean, and xfs_db
/// and our reader list exactly what is expected; the kernel mounts the
/// result and lists the same names.
#[test]
fn kernel_made_stale_leaf_entries_are_kept_consistent() {
    let t = node_tree(5000);
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let (name, args, bs) = MKFS_PROFILES[0];
    let img = mkfs_big_inodes(args, &proto);
    let guestfish = |script: &str| -> String {
        let out = std::process::Command::new("guestfish")
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
            .args(["--rw", "-a"])
            .arg(&img.path)
            .arg("--")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "guestfish: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut want = t.clone();
    let mut script = String::from("run\nmount /dev/sda /\n");
    for i in (0..5000).filter(|i| i % 3 != 0) {
        let p = format!("big/{}", name_for(i, 0));
        script.push_str(&format!("rm \"/{p}\"\n"));
        want.remove(&p);
    }
    script.push_str("umount-all\n");
    guestfish(&script);
    check_big(
        &img.path,
        &want,
        &format!("{name}: after the kernel's removes"),
    );
    assert!(xfs_db_is_node_dir(&img.path, "/big", bs));
    // The kernel's leaves carry stale entries now (4 KiB blocks: the leaf
    // segment starts at file block 2^35 / 4096).
    let stale = |img: &Path| -> u64 {
        let leaf0 = (1u64 << 35) / bs;
        let mut cmds = vec!["path /big".to_string()];
        for k in 1..64 {
            cmds.push(format!("dblock {}", leaf0 + k));
            cmds.push("print lhdr.stale".into());
        }
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        xfs_db(img, false, &cmds)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("lhdr.stale = "))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum()
    };
    let kernel_stale = stale(&img.path);
    assert!(
        kernel_stale > 0,
        "{name}: the kernel left no stale leaf entry"
    );

    let mut rng = Rng(0x57a1e);
    for batch in 0..3 {
        let (ov, mut fs) = over(&img.path);
        for op in 0..100 {
            let names = listing(&want, "big");
            let p = format!(
                "big/{}",
                String::from_utf8_lossy(&names[rng.below(1 << 20) % names.len()])
            );
            let fresh = format!("big/{}", name_for(batch * 1000 + op, 5));
            match rng.below(3) {
                0 => {
                    fs.remove(&gp(&p))
                        .unwrap_or_else(|e| panic!("remove /{p}: {e}"));
                    want.remove(&p);
                }
                1 => {
                    fs.create_file(&gp(&fresh), b"", &attrs())
                        .unwrap_or_else(|e| panic!("create /{fresh}: {e}"));
                    want.insert(fresh, regular(Vec::new()));
                }
                _ => {
                    fs.rename(&gp(&p), &gp(&fresh))
                        .unwrap_or_else(|e| panic!("rename /{p} /{fresh}: {e}"));
                    let n = want.remove(&p).unwrap();
                    want.insert(fresh, n);
                }
            }
        }
        commit(&ov, &img.path);
        check_big(&img.path, &want, &format!("{name}: batch {batch}"));
    }
    // The kernel reads what we wrote.
    let listed = guestfish("run\nmount-ro /dev/sda /\nls /big\n");
    let mut got: Vec<&str> = listed.lines().collect();
    got.sort_unstable();
    let exp: Vec<String> = listing(&want, "big")
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    assert_eq!(got, exp, "the kernel lists /big differently");
}
