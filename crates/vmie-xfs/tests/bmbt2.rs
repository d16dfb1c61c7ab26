//! bmbt block maps deeper than one level of leaves: a file on a volume
//! whose free space is single blocks grows from an extent list through a
//! root over leaves to a root over interior nodes (and, on the heavier
//! run, over two levels of nodes), shrinks back level by level to an
//! extent list and to nothing, and grows again. The inode's data fork is
//! made as small as the kernel leaves it beside an attribute fork (a
//! btree root of 3 records), so a few hundred extents need a second
//! level. After every committed step xfs_repair -n is clean (on the
//! rmapbt profile it checks the reverse mappings of the bmbt blocks),
//! xfs_db and a fresh reader read exactly what was written, xfs_db's
//! block map equals ours, and on v5 the kernel reads the file back.
//! Corrupted interior node blocks (CRC, level, key, pointer, sibling) are
//! refused with nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vmie_disk::Device;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs, Xattr};

const V4_1K: &[&str] = &["-m", "crc=0", "-b", "size=1024", "-i", "size=256"];
const V5_1K_RMAP: &[&str] = &["-m", "crc=1,rmapbt=1,reflink=0", "-b", "size=1024"];
const V5_1K: &[&str] = &["-m", "crc=1,rmapbt=0,reflink=0", "-b", "size=1024"];

fn gp(p: &str) -> GuestPath {
    GuestPath::lexical(format!("/{p}").as_bytes())
}

fn is_v5(args: &[&str]) -> bool {
    args.iter().any(|a| a.contains("crc=1"))
}

/// Attributes whose shortform attribute fork leaves the data fork 56
/// bytes, the least the kernel leaves it (XFS_BMDR_SPACE_CALC(3) rounded
/// to 8): a bmbt root of 3 records.
fn small_root(img: &Path, v5: bool) -> NewAttrs {
    let isize = sb_fields(img, &["inodesize"])[0] as usize;
    let lit = isize - if v5 { 176 } else { 100 };
    let asize = (lit - 56) / 8 * 8;
    // Header 4 bytes, entry 3 bytes plus name and value.
    let both = asize - 7;
    let value = both.min(250) - 10;
    let name = both - value;
    NewAttrs {
        mode: 0o644,
        xattrs: vec![Xattr {
            name: format!("user.{}", "r".repeat(name)).into_bytes(),
            value: vec![b'v'; value],
        }],
        ..NewAttrs::default()
    }
}

/// An image whose free space is (almost all) single blocks: `n` one-block
/// files in directories of 500, a filler taking the other free space,
/// then every other small file removed through our API.
fn holes(args: &[&str], n: usize, mib: u64) -> Img {
    let work = tempfile::tempdir().unwrap();
    let bs = 1024;
    let mut t = BTreeMap::new();
    for i in 0..n {
        if i % 500 == 0 {
            t.insert(
                format!("h{}", i / 500),
                Node::Dir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                },
            );
        }
        t.insert(
            format!("h{}/f{i:05}", i / 500),
            regular(bytes(i as u64, bs)),
        );
    }
    let proto = protofile(&t, work.path());
    let probe = mkfs(args, mib, Some(&proto));
    let f = sb_fields(&probe.path, &["fdblocks", "agblocks", "agcount"]);
    let (free, agblocks, agcount) = (f[0], f[1], f[2]);
    drop(probe);
    // mkfs.xfs 6.1 writes broken AG headers when its protofile fills the
    // volume: leave an eighth free, filled below through our writer.
    let keep = agcount * (agblocks / 8) + 1024;
    add_fillers(&proto, work.path(), free.saturating_sub(keep) * bs as u64);
    let img = mkfs(args, mib, Some(&proto));
    let (ov, mut fs) = over(&img.path);
    let plain = NewAttrs {
        mode: 0o644,
        ..NewAttrs::default()
    };
    let mut k = 0;
    for len in [1usize << 20, 64 << 10, 4 << 10, 1 << 10] {
        loop {
            match fs.create_file(&gp(&format!("fill{k}")), &vec![0u8; len], &plain) {
                Ok(()) => k += 1,
                Err(FsError::NoSpace { .. }) => break,
                Err(e) => panic!("fill {k}: {e}"),
            }
        }
    }
    commit(&ov, &img.path);
    let (ov, mut fs) = over(&img.path);
    for i in (0..n).step_by(2) {
        fs.remove(&gp(&format!("h{}/f{i:05}", i / 500)))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    commit(&ov, &img.path);
    assert_clean(&img.path, "volume with holes");
    img
}

/// The root level of `path`'s bmbt (0: not in btree form).
fn root_level(img: &Path, path: &str, v5: bool) -> u64 {
    if xfs_db_format(img, path).0 != "3 (btree)" {
        return 0;
    }
    let f = if v5 { "u3" } else { "u" };
    let o = xfs_db(
        img,
        false,
        &[&format!("path {path}"), &format!("print {f}.bmbt.level")],
    );
    o.split('=').nth(1).unwrap().trim().parse().unwrap()
}

/// Every check after a committed step: repair clean, contents through
/// xfs_db, a fresh reader and (v5) the kernel, xfs_db's map equal to ours.
fn check_file(img: &Path, data: &[u8], v5: bool, what: &str) {
    assert_clean(img, what);
    assert!(xfs_db_read(img, "/grown") == data, "{what}: xfs_db reads");
    let (_, fs) = open(img);
    assert!(fs.read("/grown").unwrap() == data, "{what}: our reader");
    let ours: Vec<(u64, u64)> = fs
        .block_map(&gp("grown"))
        .unwrap()
        .into_iter()
        .map(|(off, _, len)| (off, len))
        .collect();
    assert_eq!(xfs_db_bmap(img, "/grown"), ours, "{what}: block maps");
    if v5 && kernel_reads(img) {
        let m = Mounted::new(img, true);
        assert!(
            std::fs::read(m.path("grown")).unwrap() == data,
            "{what}: the kernel reads it differently"
        );
    }
}

#[derive(Default)]
struct Times {
    n: u32,
    total: Duration,
}

/// Replace `/grown` with files of each of `steps` blocks in turn (1 KiB
/// blocks), checking each; the root level after each step. With
/// `by_one`, a file grows one block per replace (the allocator places a
/// one-block growth in the smallest free extent, a hole, so every block
/// becomes an extent), all in one overlay, committed at the step's size;
/// otherwise (and when shrinking) in one replace. The last 300 bytes of
/// the last block are left out.
fn run_steps(img: &Path, args: &[&str], name: &str, steps: &[usize], by_one: bool) -> Vec<u64> {
    let v5 = is_v5(args);
    let p = gp("grown");
    let mut levels = Vec::new();
    let mut cur = 0usize;
    for (step, &blocks) in steps.iter().enumerate() {
        let full = bytes(11 + step as u64, blocks * 1024);
        let size = |b: usize| (b * 1024).saturating_sub(300 * usize::from(b > 0));
        let (ov, mut fs) = over(img);
        let from = if by_one && blocks > cur {
            cur + 1
        } else {
            blocks
        };
        let mut t = Times::default();
        for b in from..=blocks {
            let s = Instant::now();
            fs.replace_file(&p, &full[..size(b)])
                .unwrap_or_else(|e| panic!("{name} step {step} ({b} blocks): {e}"));
            t.n += 1;
            t.total += s.elapsed();
        }
        let before = root_level(img, "/grown", v5);
        cur = blocks;
        let data = &full[..size(blocks)];
        assert!(fs.read("/grown").unwrap() == data, "{name} step {step}");
        commit(&ov, img);
        let level = root_level(img, "/grown", v5);
        let what = format!(
            "{name} step {step} ({blocks} blocks, {} extents, root level {before} -> {level})",
            xfs_db_bmap(img, "/grown").len()
        );
        eprintln!("{what}: {} replaces, mean {:?}", t.n, t.total / t.n.max(1));
        check_file(img, data, v5, &what);
        levels.push(level);
    }
    levels
}

/// Create `/grown` (with the small-root attributes when `small`) and run
/// `steps`; then remove it: every block it used is free again.
fn grow_and_shrink(
    args: &[&str],
    name: &str,
    img: &Img,
    steps: &[usize],
    by_one: bool,
    small: bool,
) -> Vec<u64> {
    let v5 = is_v5(args);
    let free0 = sb_fields(&img.path, &["fdblocks"])[0];
    {
        let (ov, mut fs) = over(&img.path);
        let attrs = if small {
            small_root(&img.path, v5)
        } else {
            NewAttrs {
                mode: 0o644,
                ..NewAttrs::default()
            }
        };
        fs.create_file(&gp("grown"), b"", &attrs).unwrap();
        commit(&ov, &img.path);
        let o = xfs_db(&img.path, false, &["path /grown", "print core.forkoff"]);
        let forkoff = if small { 7 } else { 0 };
        assert_eq!(o.trim(), format!("core.forkoff = {forkoff}"), "{name}");
    }
    let levels = run_steps(&img.path, args, name, steps, by_one);
    let (ov, mut fs) = over(&img.path);
    fs.remove(&gp("grown")).unwrap();
    commit(&ov, &img.path);
    assert_clean(&img.path, &format!("{name} removed"));
    // The inode chunk stays; every data and bmbt block is back.
    assert_eq!(sb_fields(&img.path, &["fdblocks"])[0], free0, "{name}");
    levels
}

/// (a) Extent list → root over leaves → root over nodes over leaves →
/// back through one level to an extent list and to nothing → grown
/// again, on v4 and on v5 with reverse mappings.
#[test]
fn file_grows_to_two_levels_and_back() {
    for (name, args) in [("v4-1k", V4_1K), ("v5-1k-rmapbt", V5_1K_RMAP)] {
        let img = holes(args, 1400, 300);
        // A 3-record root over 59- or 62-record leaves: more than 186
        // (177) extents need nodes.
        let steps = [2, 40, 300, 560, 420, 120, 3, 0, 450];
        let levels = grow_and_shrink(args, name, &img, &steps, true, true);
        assert_eq!(levels[0], 0, "{name}: 2 blocks as an extent list");
        assert_eq!(levels[1], 1, "{name}: 40 blocks under one level");
        assert_eq!(levels[2], 2, "{name}: 300 blocks under two levels");
        assert_eq!(levels[3], 2, "{name}");
        assert_eq!(levels[5], 1, "{name}: back to one level");
        assert_eq!(levels[6], 0, "{name}: back to an extent list");
        assert_eq!(levels[7], 0, "{name}: empty");
        assert_eq!(levels[8], 2, "{name}: regrown to two levels");
    }
}

/// (b) Corrupted interior node blocks (CRC, level, record count, key,
/// pointer outside the volume or used twice, sibling pointer) are refused
/// by replace and remove, nothing written.
#[test]
fn corrupted_node_blocks_are_refused() {
    for (name, args) in [("v4-1k", V4_1K), ("v5-1k", V5_1K)] {
        let v5 = is_v5(args);
        let base = holes(args, 700, 300);
        {
            let (ov, mut fs) = over(&base.path);
            fs.create_file(&gp("grown"), b"", &small_root(&base.path, v5))
                .unwrap();
            commit(&ov, &base.path);
        }
        let levels = run_steps(&base.path, args, name, &[250], true);
        assert_eq!(levels, [2], "{name}");
        let at = first_bmbt_child(&base.path, "/grown", v5);
        let hdr = if v5 { 72 } else { 24 };
        let max = (1024 - hdr) / 16;
        let kinds: &[&str] = if v5 {
            &[
                "crc",
                "level",
                "numrecs",
                "key",
                "ptr",
                "ptr-twice",
                "sibling",
            ]
        } else {
            &[
                "level",
                "numrecs",
                "key",
                "ptr",
                "ptr-twice",
                "sibling",
                "magic",
            ]
        };
        let work = tempfile::tempdir().unwrap();
        for kind in kinds {
            let img = work.path().join(format!("{kind}.img"));
            std::fs::copy(&base.path, &img).unwrap();
            let dev = vmie_disk::FileDevice::open_rw(&img).unwrap();
            let mut b = vec![0u8; 1024];
            dev.read_at(at, &mut b).unwrap();
            assert_eq!(b[5], 1, "{name}: the root's child is a node");
            let ptr = |j: usize| hdr + max * 8 + j * 8;
            match *kind {
                "crc" => b[64] ^= 1,
                "level" => b[5] = 0,
                "numrecs" => b[6..8].copy_from_slice(&0u16.to_be_bytes()),
                "key" => b[hdr + 15] ^= 1,
                "ptr" => b[ptr(1)..ptr(1) + 8].copy_from_slice(&(1u64 << 50).to_be_bytes()),
                "ptr-twice" => b.copy_within(ptr(0)..ptr(0) + 8, ptr(1)),
                "sibling" => b[16..24].copy_from_slice(&7u64.to_be_bytes()),
                _ => b[0] ^= 1,
            }
            if v5 && *kind != "crc" {
                reseal(&mut b);
            }
            dev.write_at(at, &b).unwrap();
            drop(dev);
            let (ov, mut fs) = over(&img);
            let e1 = fs
                .replace_file(&gp("grown"), &bytes(5, 100 * 1024))
                .unwrap_err();
            let e2 = fs.remove(&gp("grown")).unwrap_err();
            for e in [&e1, &e2] {
                assert!(matches!(e, FsError::Corrupt { .. }), "{name} {kind}: {e}");
                assert!(e.to_string().contains("bmbt"), "{name} {kind}: {e}");
            }
            let says = match *kind {
                "crc" => "CRC mismatch",
                "level" => "level 0 with",
                "numrecs" => "with 0 records",
                "key" => "its key says",
                "ptr" => "outside the filesystem",
                "ptr-twice" => "used twice",
                "sibling" => "sibling pointers",
                _ => "bad magic",
            };
            assert!(e1.to_string().contains(says), "{name} {kind}: {e1}");
            eprintln!("{name} {kind}: {e1}");
            assert!(!ov.is_dirty(), "{name} {kind}: something was written");
        }
    }
}

/// A v5 volume whose free space is all single blocks, made by the kernel:
/// its reserve pool emptied, a file preallocated over every free block,
/// then every other block of it punched out.
fn kernel_holes(args: &[&str]) -> Img {
    let img = mkfs(args, 300, None);
    let m = Mounted::new(&img.path, false);
    let dir = m.dir.path().display().to_string();
    sh(std::process::Command::new("xfs_io").args(["-x", "-c", "resblks 0", &dir]));
    let script = format!(
        r#"off=0
for len in 1048576 65536 1024; do
  while fallocate -o $off -l $len {dir}/pad 2>/dev/null; do off=$((off+len)); done
done
blocks=$((off / 1024))
seq 0 2 $((blocks - 1)) | awk '{{printf "fpunch %d 1k\n", $1 * 1024}}' | xfs_io {dir}/pad"#
    );
    sh(std::process::Command::new("sh").args(["-c", &script]));
    drop(m);
    assert_clean(&img.path, "kernel-made holes");
    img
}

/// (c) Three levels below the root (3-record root, 59-record blocks: more
/// than 10,443 extents): a file grown in one replace over single-block
/// holes to a root over two levels of nodes, grown further, shrunk
/// through two levels and one level to an extent list and to nothing,
/// grown again, then removed with every block freed; then a file with
/// the whole fork as its root to two levels and back. v5 without reverse
/// mappings (the kernel prepares the holes; each rmapbt change rewrites
/// the whole tree, too slow over 100,000 holes). About a minute in debug
/// (some 10,000 single-block allocations and frees per step), so it runs
/// only with the heavier variants: `VMIE_PROPTEST_CASES` set.
#[test]
fn file_grows_to_three_levels_and_back() {
    if std::env::var_os("VMIE_PROPTEST_CASES").is_none() {
        eprintln!("skipped: set VMIE_PROPTEST_CASES to run");
        return;
    }
    let args = ["-m", "crc=1,rmapbt=0,reflink=0,finobt=0", "-b", "size=1024"];
    let img = kernel_holes(&args);
    let steps = [10_600, 11_500, 4_000, 100, 2, 0, 10_600];
    let levels = grow_and_shrink(&args, "v5-1k", &img, &steps, false, true);
    assert_eq!(levels, [3, 3, 2, 1, 0, 0, 3]);
    // A whole 512-byte inode's root (20 records): two levels past 1,180.
    let levels = grow_and_shrink(&args, "v5-1k plain", &img, &[1_300, 1_100, 0], false, false);
    assert_eq!(levels, [2, 1, 0]);
}
