//! Sparse inode chunks: on a volume whose free space holds no whole
//! aligned inode chunk, a new chunk is allocated as a piece of
//! sb_spino_align blocks (a sparse inobt/finobt record, the rest of the
//! chunk holes), a later piece of the same chunk merges into that record,
//! and when not even a piece fits the writer fails with NoSpace, writing
//! nothing.
//!
//! The volumes are made by the real mkfs.xfs and fragmented by the
//! kernel (a loop mount: one fallocated file filling the volume, holes
//! punched in it at chosen blocks); after every step xfs_repair -n is
//! clean, xfs_db and our reader read the new files back, and at the end
//! the kernel mounts the result read-only and reads them too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

/// The geometry the test needs, from superblock 0.
struct G {
    bs: u64,
    /// sb_inoalignmt: blocks of a whole chunk.
    chunk: u64,
    /// sb_spino_align: blocks of a sparse piece.
    piece: u64,
    inopblog: u32,
    agblocks: u64,
    agcount: u64,
}

fn geo(img: &Path) -> G {
    let v = sb_fields(
        img,
        &[
            "blocksize",
            "inoalignmt",
            "spino_align",
            "inopblog",
            "agblocks",
            "agcount",
        ],
    );
    G {
        bs: v[0],
        chunk: v[1],
        piece: v[2],
        inopblog: v[3] as u32,
        agblocks: v[4],
        agcount: v[5],
    }
}

/// Free extents (agno, agbno, len) as xfs_db lists them.
fn free_extents(img: &Path) -> Vec<(u64, u64, u64)> {
    let out = xfs_db(img, false, &["freesp -d"]);
    out.lines()
        .filter_map(|l| {
            let w: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            (w.len() == 3).then(|| (w[0], w[1], w[2]))
        })
        .collect()
}

/// The data extents of `path`: (file offset, agno, agbno, count).
fn extents(img: &Path, path: &str) -> Vec<(u64, u64, u64, u64)> {
    let out = xfs_db(img, false, &[&format!("path {path}"), "bmap"]);
    out.lines()
        .filter(|l| l.starts_with("data offset"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let pair = w[5].trim_matches(|c| c == '(' || c == ')');
            let (ag, agbno) = pair.split_once('/').unwrap();
            (
                w[2].parse().unwrap(),
                ag.parse().unwrap(),
                agbno.parse().unwrap(),
                w[7].parse().unwrap(),
            )
        })
        .collect()
}

/// The inobt records of AG 0 (a single leaf in these tests):
/// (startino, holemask, count, freecount, free).
fn inobt_recs(img: &Path) -> Vec<(u64, u64, u64, u64, u64)> {
    let out = xfs_db(
        img,
        false,
        &["agi 0", "addr root", "print level", "print recs"],
    );
    assert!(
        out.contains("level = 0"),
        "inobt of AG 0 is one leaf: {out}"
    );
    let n = |s: &str| {
        s.strip_prefix("0x").map_or_else(
            || s.parse().unwrap(),
            |h| u64::from_str_radix(h, 16).unwrap(),
        )
    };
    out.split_whitespace()
        .filter_map(|w| {
            let (i, r) = w.split_once(":[")?;
            i.parse::<u64>().ok()?;
            let f: Vec<u64> = r.strip_suffix(']')?.split(',').map(n).collect();
            Some((f[0], f[1], f[2], f[3], f[4]))
        })
        .collect()
}

/// The same records as the finobt of AG 0 holds them.
fn finobt_recs(img: &Path) -> String {
    xfs_db(img, false, &["agi 0", "addr free_root", "print recs"])
}

fn plain() -> NewAttrs {
    NewAttrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
    }
}

/// A prepared volume: AG 0's free space is the blocks 1..piece of every
/// chunk-aligned run of the filler file `/F` (no piece-aligned piece, no
/// whole chunk), the other AGs hold less than the writer's reserve, and
/// chunk `x` (AG block) is the one the test frees pieces of.
struct Vol {
    img: Img,
    g: G,
    x: u64,
    /// File offset (blocks) of chunk `x`'s first block in `/F`.
    x_off: u64,
    files: Vec<(String, Vec<u8>)>,
}

/// Punch `(file offset, blocks)` ranges out of `/F` through the kernel.
fn punch(img: &Path, bs: u64, ranges: &[(u64, u64)]) {
    let m = Mounted::new(img, false);
    // The volume is (nearly) full: give the kernel's reserve pool back so
    // the punches can split /F's block map.
    sh(Command::new("xfs_io")
        .args(["-x", "-c", "resblks 0"])
        .arg(m.dir.path()));
    let mut cmd = Command::new("xfs_io");
    for (off, len) in ranges {
        cmd.arg("-c")
            .arg(format!("fpunch {} {}", off * bs, len * bs));
    }
    let out = cmd.arg(m.path("F")).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "xfs_io fpunch ({} ranges): {}",
        ranges.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(m);
}

fn prepare(args: &[&str]) -> Vol {
    let img = mkfs(args, 300, None);
    let g = geo(&img.path);
    assert!(
        g.piece > 0 && g.piece < g.chunk,
        "sparse pieces are smaller than a chunk"
    );
    // Fill the volume with one fallocated file.
    {
        let m = Mounted::new(&img.path, false);
        sh(Command::new("xfs_io")
            .args(["-x", "-c", "resblks 0"])
            .arg(m.dir.path()));
        let avail: u64 = sh(Command::new("stat")
            .args(["-f", "-c", "%a"])
            .arg(m.dir.path()))
        .trim()
        .parse()
        .unwrap();
        let mut blocks = avail.saturating_sub(64);
        loop {
            let ok = Command::new("fallocate")
                .stderr(std::process::Stdio::null())
                .arg("-l")
                .arg((blocks * g.bs).to_string())
                .arg(m.path("F"))
                .status()
                .unwrap()
                .success();
            if ok {
                break;
            }
            let _ = std::fs::remove_file(m.path("F"));
            sh(&mut Command::new("sync"));
            blocks -= blocks / 100 + 1;
        }
    }
    // In AG 0, free blocks 1..piece of every whole chunk inside /F.
    let mut chunks = Vec::new();
    for (off, ag, agbno, count) in extents(&img.path, "/F") {
        if ag != 0 {
            continue;
        }
        let mut c = agbno.div_ceil(g.chunk) * g.chunk;
        while c + g.chunk <= agbno + count {
            chunks.push((c, off + (c - agbno)));
            c += g.chunk;
        }
    }
    assert!(chunks.len() > 1000, "{} chunks in /F", chunks.len());
    let ranges: Vec<(u64, u64)> = chunks.iter().map(|&(_, o)| (o + 1, g.piece - 1)).collect();
    punch(&img.path, g.bs, &ranges);
    let (x, x_off) = chunks[chunks.len() / 2];
    // The rest of AG 0's free space that could hold a piece (what the
    // kernel kept for its reservations, crumbs by the AG headers): taken
    // by files of our own writer, largest first, each exactly one extent.
    let reserve = g.agblocks / 32 + 64;
    let free = free_extents(&img.path);
    for ag in 1..g.agcount {
        let f: u64 = free.iter().filter(|e| e.0 == ag).map(|e| e.2).sum();
        assert!(f <= reserve, "AG {ag} keeps {f} free blocks");
    }
    let mut big: Vec<u64> = free
        .iter()
        .filter(|e| e.0 == 0 && e.2 >= g.piece)
        .map(|e| e.2)
        .collect();
    big.sort_unstable_by(|a, b| b.cmp(a));
    let mut files = Vec::new();
    {
        let (ov, mut fs) = over(&img.path);
        for (i, len) in big.iter().enumerate() {
            let name = format!("/eat{i}");
            let data = bytes(i as u64, (len * g.bs) as usize);
            fs.create_file(&GuestPath::lexical(name.as_bytes()), &data, &plain())
                .unwrap();
            files.push((name, data));
        }
        commit(&ov, &img.path);
    }
    let left: Vec<_> = free_extents(&img.path)
        .into_iter()
        .filter(|e| e.0 == 0 && e.2 >= g.piece)
        .collect();
    assert!(left.is_empty(), "AG 0 still has {left:?}");
    assert_clean(&img.path, "prepared");
    Vol {
        img,
        g,
        x,
        x_off,
        files,
    }
}

/// The free inodes the volume counts.
fn ifree(img: &Path) -> u64 {
    sb_fields(img, &["ifree"])[0]
}

/// Create `n` files named `{stem}{i}` with our writer (one overlay), then
/// commit.
fn create_n(v: &mut Vol, stem: &str, n: u64) {
    let (ov, mut fs) = over(&v.img.path);
    for i in 0..n {
        let name = format!("/{stem}{i}");
        let data = bytes(1000 + i, 100 + i as usize);
        fs.create_file(&GuestPath::lexical(name.as_bytes()), &data, &plain())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        v.files.push((name, data));
    }
    commit(&ov, &v.img.path);
}

/// Every file written reads back through our reader and (for the last
/// `db` of them) xfs_db; xfs_repair -n is clean.
fn check(v: &Vol, what: &str, db: usize) {
    assert_clean(&v.img.path, what);
    let (_, fs) = open(&v.img.path);
    for (name, data) in &v.files {
        assert!(fs.read(name).unwrap() == *data, "{what}: {name}");
    }
    for (name, data) in v.files.iter().rev().take(db) {
        assert!(
            xfs_db_read(&v.img.path, name) == *data,
            "{what}: xfs_db {name}"
        );
    }
}

fn sparse_chunks(args: &[&str], what: &str) {
    let mut v = prepare(args);
    let (x, x_off, chunk, piece, bs) = (v.x, v.x_off, v.g.chunk, v.g.piece, v.g.bs);
    let startino = x << v.g.inopblog;
    let piece_inos = piece << v.g.inopblog;
    assert_eq!(chunk << v.g.inopblog, 64, "{what}");
    // Only chunk x's last piece is free to hold inodes.
    punch(&v.img.path, bs, &[(x_off + chunk - piece, piece)]);
    // Use every free inode of the existing chunks.
    let n = ifree(&v.img.path);
    create_n(&mut v, "fill", n);
    assert_eq!(ifree(&v.img.path), 0, "{what}");
    check(&v, &format!("{what}: inodes used up"), 2);
    let before = inobt_recs(&v.img.path);
    // The next file needs a new chunk: a sparse piece at the end of x.
    create_n(&mut v, "sparse", 1);
    check(&v, &format!("{what}: first sparse piece"), 1);
    let recs = inobt_recs(&v.img.path);
    assert_eq!(
        recs.len(),
        before.len() + 1,
        "{what}: {before:?} then {recs:?}"
    );
    let holes = (1u64 << ((64 - piece_inos) / 4)) - 1;
    let rec = *recs.iter().find(|r| r.0 == startino).unwrap();
    assert_eq!(
        rec,
        (
            startino,
            holes,
            piece_inos,
            piece_inos - 1,
            !(1u64 << (64 - piece_inos))
        ),
        "{what}: the sparse record"
    );
    eprintln!("{what}: chunk {x}, {n} inodes filled, sparse record {rec:?}");
    let ro = xfs_db(&v.img.path, false, &["sb 0", "print features_ro_compat"]);
    let ro = ro.trim().trim_start_matches("features_ro_compat = ");
    let ro = ro.strip_prefix("0x").map_or_else(
        || ro.parse::<u64>().unwrap(),
        |h| u64::from_str_radix(h, 16).unwrap(),
    );
    let finobt = ro & 1 != 0;
    let fino = if finobt {
        finobt_recs(&v.img.path)
    } else {
        String::new()
    };
    assert!(
        !finobt
            || fino.contains(&format!(
                ":[{startino},{holes:#x},{piece_inos},{}",
                piece_inos - 1
            )),
        "{what}: finobt {fino}"
    );
    assert_eq!(ifree(&v.img.path), piece_inos - 1, "{what}");
    // Free chunk x's first piece (the blocks the kernel still held),
    // use up the first piece's inodes, then one more: the new piece
    // merges into x's record, which becomes whole.
    punch(&v.img.path, bs, &[(x_off, 1)]);
    create_n(&mut v, "more", piece_inos - 1);
    assert_eq!(ifree(&v.img.path), 0, "{what}");
    check(&v, &format!("{what}: first piece used up"), 1);
    create_n(&mut v, "merged", 1);
    check(&v, &format!("{what}: merged piece"), 1);
    let recs = inobt_recs(&v.img.path);
    assert_eq!(recs.len(), before.len() + 1, "{what}: {recs:?}");
    let rec = *recs.iter().find(|r| r.0 == startino).unwrap();
    // The first piece's inodes all used, the second's first one too.
    assert_eq!(
        rec,
        (
            startino,
            0,
            64,
            piece_inos - 1,
            ((1u64 << (piece_inos - 1)) - 1) << 1
        ),
        "{what}: the merged record"
    );
    eprintln!("{what}: merged record {rec:?}");
    // Use the rest; then not even a piece fits: NoSpace, nothing written.
    create_n(&mut v, "last", piece_inos - 1);
    assert_eq!(ifree(&v.img.path), 0, "{what}");
    check(&v, &format!("{what}: all used"), 1);
    {
        let (ov, mut fs) = over(&v.img.path);
        let e = fs
            .create_file(&GuestPath::lexical(b"/none"), b"x", &plain())
            .unwrap_err();
        assert!(matches!(e, FsError::NoSpace { .. }), "{what}: {e}");
        assert!(!ov.is_dirty(), "{what}: the failed create wrote");
    }
    // The kernel reads the new files.
    let m = Mounted::new(&v.img.path, true);
    for (name, data) in &v.files {
        let got = std::fs::read(m.path(&name[1..])).unwrap();
        assert!(got == *data, "{what}: the kernel reads {name}");
    }
    drop(m);
}

#[test]
fn sparse_chunk_4k_blocks() {
    sparse_chunks(&["-i", "size=512"], "4 KiB blocks, 512-byte inodes");
}

#[test]
fn sparse_chunk_1k_blocks() {
    sparse_chunks(
        &["-b", "size=1024", "-i", "size=512"],
        "1 KiB blocks, 512-byte inodes",
    );
}

#[test]
fn sparse_chunk_without_finobt() {
    sparse_chunks(
        &["-b", "size=2048", "-m", "finobt=0,reflink=0"],
        "2 KiB blocks, 512-byte inodes, no finobt",
    );
}

#[test]
fn sparse_chunk_rmapbt() {
    sparse_chunks(
        &["-i", "size=512", "-m", "rmapbt=1"],
        "4 KiB blocks, 512-byte inodes, rmapbt",
    );
}
