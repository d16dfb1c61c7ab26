//! bmbt block maps written by us: mkfs's own btree-form 5,000-entry
//! directories (512-byte inodes) take batches of adds, removes and
//! renames; a file on a fragmented volume grows into a btree block map
//! and shrinks back to an extent list; removing btree-form files frees
//! their bmbt blocks. After every committed step xfs_repair -n is clean
//! and xfs_db and a fresh reader read exactly what was written. A
//! corrupted bmbt block (CRC, owner, level, record order) is refused
//! with nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vmie_disk::Device;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

const RHEL9: &str = "crc=1,finobt=1,reflink=1,bigtime=1,inobtcount=1";
const PROFILES2: [(&str, &[&str]); 2] = [("v5-rhel9", &["-m", RHEL9]), ("v4", &["-m", "crc=0"])];

fn gp(p: &str) -> GuestPath {
    GuestPath::lexical(format!("/{p}").as_bytes())
}

fn attrs() -> NewAttrs {
    NewAttrs {
        mode: 0o644,
        ..NewAttrs::default()
    }
}

fn name_for(i: usize, salt: u64) -> String {
    let len = [3, 12, 40, 100, 200, 7, 25][i % 7];
    let mut s = format!("{salt}-{i}-");
    while s.len() < len {
        s.push((b'a' + ((i * 7 + s.len() * 3) % 26) as u8) as char);
    }
    s
}

fn dir_node() -> Node {
    Node::Dir {
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}

/// xfs_repair -n clean; xfs_db and a fresh reader list `dir` as expected.
fn check_dir(img: &Path, want: &BTreeMap<String, Node>, dir: &str, what: &str) {
    assert_clean(img, what);
    let mut got = xfs_db_ls(img, &format!("/{dir}"));
    got.dedup();
    let exp = listing(want, dir);
    assert!(
        got == exp,
        "{what}: xfs_db lists {} entries, {} expected",
        got.len(),
        exp.len()
    );
    let (_, fs) = open(img);
    let mut ours: Vec<Vec<u8>> = fs
        .read_dir(&gp(dir))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    ours.sort();
    assert!(ours == exp, "{what}: our reader lists /{dir} differently");
}

/// With `VMIE_KEEP_IMG=DIR`, a copy of `img` as DIR/`name` (for a
/// kernel read through guestfish by hand).
fn keep(img: &Path, name: &str) {
    if let Ok(d) = std::env::var("VMIE_KEEP_IMG") {
        std::fs::copy(img, Path::new(&d).join(name)).unwrap();
    }
}

fn format_of(img: &Path, path: &str) -> String {
    xfs_db_format(img, path).0
}

#[derive(Default)]
struct Times {
    n: u32,
    total: Duration,
    max: Duration,
}

impl Times {
    fn add(&mut self, d: Duration) {
        self.n += 1;
        self.total += d;
        self.max = self.max.max(d);
    }
    fn show(&self, what: &str) -> String {
        format!(
            "{what}: {} ops, mean {:?}, max {:?}",
            self.n,
            self.total / self.n.max(1),
            self.max
        )
    }
}

/// `big/` with 5,000 empty files: mkfs leaves it in btree form in a
/// 512-byte inode.
fn big_dir() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    t.insert("big".to_string(), dir_node());
    for i in 0..5000 {
        t.insert(format!("big/{}", name_for(i, 0)), regular(Vec::new()));
    }
    t
}

/// (a) mkfs's 5,000-entry directory in a 512-byte inode is in btree form;
/// batches of adds, removes and renames keep it consistent.
#[test]
fn mkfs_btree_directory_takes_batches() {
    let t = big_dir();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in PROFILES2 {
        let img = mkfs(args, 300, Some(&proto));
        assert_eq!(format_of(&img.path, "/big"), "3 (btree)", "{name}");
        let mut want = t.clone();
        let (mut add, mut rm, mut mv) = (Times::default(), Times::default(), Times::default());
        let mut next = 0usize;
        for batch in 0..4u64 {
            let (ov, mut fs) = over(&img.path);
            let salt = batch + 1;
            for i in 0..150 {
                let n = format!("big/{}", name_for(i, salt));
                let s = Instant::now();
                fs.create_file(&gp(&n), b"", &attrs())
                    .unwrap_or_else(|e| panic!("{name} batch {batch}: create {n}: {e}"));
                add.add(s.elapsed());
                want.insert(n, regular(Vec::new()));
            }
            for _ in 0..150 {
                let n = format!("big/{}", name_for(next, 0));
                next += 1;
                let s = Instant::now();
                fs.remove(&gp(&n))
                    .unwrap_or_else(|e| panic!("{name} batch {batch}: remove {n}: {e}"));
                rm.add(s.elapsed());
                want.remove(&n);
            }
            for _ in 0..100 {
                let from = format!("big/{}", name_for(next, 0));
                next += 1;
                let to = format!("big/{}-moved-{batch}", name_for(next, 9));
                let s = Instant::now();
                fs.rename(&gp(&from), &gp(&to))
                    .unwrap_or_else(|e| panic!("{name} batch {batch}: rename {from}: {e}"));
                mv.add(s.elapsed());
                let node = want.remove(&from).unwrap();
                want.insert(to, node);
            }
            commit(&ov, &img.path);
            check_dir(&img.path, &want, "big", &format!("{name} batch {batch}"));
        }
        let (_, fs) = open(&img.path);
        compare(&fs, &want);
        keep(&img.path, &format!("dir-{name}.img"));
        eprintln!(
            "{name}: {}; {}; {}; format now {}",
            add.show("create"),
            rm.show("remove"),
            mv.show("rename"),
            format_of(&img.path, "/big")
        );
    }
}

/// An image whose free space is fragmented: `n` files of `size` bytes
/// each, a filler taking (almost) all other free space, then every other
/// small file removed through our API, committed.
fn fragmented(args: &[&str], n: usize, size: usize) -> Img {
    let work = tempfile::tempdir().unwrap();
    let mut t = BTreeMap::new();
    t.insert("frag".to_string(), dir_node());
    for i in 0..n {
        t.insert(format!("frag/f{i:05}"), regular(bytes(i as u64, size)));
    }
    let proto = protofile(&t, work.path());
    let probe = mkfs(args, 300, Some(&proto));
    let f = sb_fields(
        &probe.path,
        &["fdblocks", "agblocks", "agcount", "blocksize"],
    );
    let (free, agblocks, agcount, bs) = (f[0], f[1], f[2], f[3]);
    // mkfs.xfs 6.1 writes broken AG headers when its protofile fills the
    // volume: leave an eighth free, filled below through our writer.
    let keep = agcount * (agblocks / 8) + 1024;
    add_fillers(&proto, work.path(), free.saturating_sub(keep) * bs);
    let img = mkfs(args, 300, Some(&proto));
    assert_clean(&img.path, "fresh fragmented");
    let (ov, mut fs) = over(&img.path);
    let mut k = 0;
    for len in [1usize << 20, 64 << 10, 4 << 10] {
        loop {
            match fs.create_file(&gp(&format!("fill{k}")), &vec![0u8; len], &attrs()) {
                Ok(()) => k += 1,
                Err(FsError::NoSpace { .. }) => break,
                Err(e) => panic!("fill {k}: {e}"),
            }
        }
    }
    commit(&ov, &img.path);
    assert_clean(&img.path, "filled");
    let (ov, mut fs) = over(&img.path);
    for i in (0..n).step_by(2) {
        fs.remove(&gp(&format!("frag/f{i:05}")))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    commit(&ov, &img.path);
    assert_clean(&img.path, "fragmented volume");
    img
}

/// Extents of a file as xfs_db counts them.
fn nextents(img: &Path, path: &str) -> u64 {
    let o = xfs_db(
        img,
        false,
        &[&format!("path {path}"), "print core.nextents"],
    );
    o.trim()
        .strip_prefix("core.nextents = ")
        .unwrap()
        .parse()
        .unwrap()
}

/// (b) A file grown on fragmented free space converts to a btree block
/// map (one and several leaves), then shrinks back to an extent list and
/// to nothing; removing a btree-form file frees every block.
#[test]
fn file_grows_into_btree_and_back() {
    for (name, args) in PROFILES2 {
        let img = fragmented(args, 4000, 4096);
        let free0 = sb_fields(&img.path, &["fdblocks"])[0];
        let p = gp("grown");
        {
            let (ov, mut fs) = over(&img.path);
            fs.create_file(&p, b"", &attrs()).unwrap();
            commit(&ov, &img.path);
        }
        let mut most = 0;
        for (step, kib) in [
            16usize, 600, 3000, 6000, 7000, 4000, 2700, 1000, 150, 40, 0, 1200,
        ]
        .into_iter()
        .enumerate()
        {
            let data = bytes(7 + step as u64, kib * 1024 + 123 * usize::from(kib > 0));
            let (ov, mut fs) = over(&img.path);
            fs.replace_file(&p, &data)
                .unwrap_or_else(|e| panic!("{name} step {step} ({kib} KiB): {e}"));
            assert_eq!(fs.read("/grown").unwrap(), data);
            commit(&ov, &img.path);
            let what = format!("{name} step {step} ({kib} KiB)");
            assert_clean(&img.path, &what);
            assert!(xfs_db_read(&img.path, "/grown") == data, "{what}: xfs_db");
            let (_, fs) = open(&img.path);
            assert!(fs.read("/grown").unwrap() == data, "{what}: reader");
            let fmt = format_of(&img.path, "/grown");
            let n = nextents(&img.path, "/grown");
            eprintln!("{what}: {fmt}, {n} extents");
            if fmt == "3 (btree)" {
                if n > most {
                    keep(&img.path, &format!("file-{name}.img"));
                }
                most = most.max(n);
            }
            if kib <= 40 {
                assert_eq!(fmt, "2 (extents)", "{what}");
            }
        }
        // More extents than one leaf holds: a root over several leaves.
        assert!(most > 260, "{name}: at most {most} extents in btree form");
        let (ov, mut fs) = over(&img.path);
        fs.remove(&p).unwrap();
        commit(&ov, &img.path);
        assert_clean(&img.path, &format!("{name} removed"));
        // Every data and bmbt block is back (the inode chunk stays).
        assert_eq!(sb_fields(&img.path, &["fdblocks"])[0], free0, "{name}");
    }
}

/// (c) Corrupted bmbt leaves are refused by every writer, nothing written.
#[test]
fn corrupted_bmbt_blocks_are_refused() {
    let t = big_dir();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in PROFILES2 {
        let v5 = name.starts_with("v5");
        let base = mkfs(args, 300, Some(&proto));
        let at = first_bmbt_child(&base.path, "/big", v5);
        let kinds: &[&str] = if v5 {
            &["crc", "owner", "level", "order"]
        } else {
            &["level", "order", "magic"]
        };
        for kind in kinds {
            let img = mkfs(args, 300, Some(&proto));
            let dev = vmie_disk::FileDevice::open_rw(&img.path).unwrap();
            let mut b = vec![0u8; 4096];
            dev.read_at(at, &mut b).unwrap();
            let hdr = if v5 { 72 } else { 24 };
            match *kind {
                "crc" => b[64] ^= 1,
                "owner" => b[63] ^= 1,
                "level" => b[5] = 1,
                "magic" => b[0] ^= 1,
                _ => {
                    let (r0, r1) = (hdr, hdr + 16);
                    let tmp = b[r0..r0 + 16].to_vec();
                    b.copy_within(r1..r1 + 16, r0);
                    b[r1..r1 + 16].copy_from_slice(&tmp);
                }
            }
            if v5 && *kind != "crc" {
                reseal(&mut b);
            }
            dev.write_at(at, &b).unwrap();
            drop(dev);
            let (ov, mut fs) = over(&img.path);
            let e1 = fs.create_file(&gp("big/new"), b"", &attrs()).unwrap_err();
            let e2 = fs
                .remove(&gp(&format!("big/{}", name_for(3, 0))))
                .unwrap_err();
            for e in [&e1, &e2] {
                assert!(matches!(e, FsError::Corrupt { .. }), "{name} {kind}: {e}");
                let m = e.to_string();
                assert!(
                    m.contains("bmbt") || m.contains("Data fork"),
                    "{name} {kind}: {e}"
                );
            }
            assert!(!ov.is_dirty(), "{name} {kind}: something was written");
        }
    }
}

/// (d) Random create/replace/remove of files of 0–8 MiB on a fragmented
/// volume; after each case's changes, committed: repair clean and every
/// file read back. 2 cases by default; `VMIE_PROPTEST_CASES=N` runs N
/// per profile.
#[test]
fn random_files_on_fragmented_volume() {
    let cases = std::env::var("VMIE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(2, |n| n.saturating_mul(PROFILES2.len() as u64));
    let mut btree = 0;
    let mut kernel_n = 0usize;
    for case in 0..cases {
        let (name, args) = PROFILES2[(case as usize) % PROFILES2.len()];
        let img = fragmented(args, 4000, 16384);
        let mut rng = Rng(case.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for round in 0..3 {
            let (ov, mut fs) = over(&img.path);
            for op in 0..8 {
                let what = format!("{name} case {case} round {round} op {op}");
                let k = format!("r{}", rng.below(6));
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(64 * 1024),
                    _ => rng.below(8 << 20),
                };
                let data = bytes(rng.next(), len);
                let r = if files.contains_key(&k) {
                    if rng.below(4) == 0 {
                        fs.remove(&gp(&k)).map(|()| None)
                    } else {
                        fs.replace_file(&gp(&k), &data).map(|()| Some(data))
                    }
                } else {
                    fs.create_file(&gp(&k), &data, &attrs())
                        .map(|()| Some(data))
                };
                match r {
                    Ok(Some(d)) => {
                        files.insert(k, d);
                    }
                    Ok(None) => {
                        files.remove(&k);
                    }
                    Err(FsError::NoSpace { .. }) => {}
                    Err(e) => panic!("{what}: {k} ({len} bytes): {e}"),
                }
            }
            commit(&ov, &img.path);
            let what = format!("{name} case {case} round {round}");
            assert_clean(&img.path, &what);
            let (_, fs) = open(&img.path);
            for (k, d) in &files {
                assert!(fs.read(&format!("/{k}")).unwrap() == *d, "{what}: {k}");
                assert!(
                    xfs_db_read(&img.path, &format!("/{k}")) == *d,
                    "{what}: xfs_db {k}"
                );
                btree += usize::from(format_of(&img.path, &format!("/{k}")) == "3 (btree)");
            }
        }
        // The kernel reads every file back (v5 only: see kernel_reads).
        if kernel_reads(&img.path) {
            let m = Mounted::new(&img.path, true);
            for (k, d) in &files {
                assert!(
                    std::fs::read(m.path(k)).unwrap() == *d,
                    "{name} case {case}: the kernel reads {k} differently"
                );
            }
            kernel_n += 1;
        }
    }
    assert!(kernel_n > 0, "no case was read back by the kernel");
    eprintln!("{cases} cases; {btree} files read back in btree form");
    assert!(btree > 0, "no file needed a btree block map");
}
