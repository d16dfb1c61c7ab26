//! Directory indexes on the write side: entries in `$INDEX_ROOT` and in
//! INDX leaf and internal blocks of a directory ntfs-3g filled; inserts
//! that split leaves and internal blocks, removals from leaves and internal
//! nodes, blocks freed when emptied; a directory of 5,000+ entries made by
//! our writer (a three-level index) emptied again in random order; moves
//! between two big directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice};
use vmie_guestfs::{FsError, GuestFs, GuestPath, NewAttrs};
use vmie_ntfs::NtfsFs;

fn open_rw(path: &Path) -> NtfsFs {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open_rw(path).unwrap());
    NtfsFs::open(dev, path.display().to_string()).unwrap()
}

/// Read every file of `files` back through ntfscat and our reader, and the
/// sizes of `dir` through ntfsls; ntfsfix clean.
fn verify(img: &Path, dir: &str, files: &BTreeMap<String, Vec<u8>>) {
    ntfsfix_clean(img);
    let listed = ntfsls_sizes(img, dir);
    let names: Vec<&String> = listed.keys().collect();
    let want: Vec<String> = files
        .keys()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, want.iter().collect::<Vec<_>>(), "ntfsls {dir}");
    let fs = open(img);
    for (p, d) in files {
        let name = p.rsplit('/').next().unwrap();
        assert_eq!(listed[name], d.len() as u64, "{p}");
        assert_eq!(&ntfscat(img, p), d, "{p}");
        assert_eq!(&vmie_guestfs::GuestFsExt::read(&fs, p).unwrap(), d, "{p}");
    }
}

fn attempt(img: &Path, op: impl FnOnce(&mut NtfsFs) -> Result<(), FsError>) -> Result<(), String> {
    let before = std::fs::read(img).unwrap();
    let mut fs = open_rw(img);
    match op(&mut fs) {
        Ok(()) => Ok(()),
        Err(FsError::Unsupported { why, .. }) => {
            assert!(
                std::fs::read(img).unwrap() == before,
                "a refusal wrote: {why}"
            );
            Err(why)
        }
        Err(e) => panic!("{e}"),
    }
}

fn big_dir(cluster: u32) {
    let img = mkntfs_geom(32, 512, cluster);
    let mut files = BTreeMap::new();
    let mut rng = XorShift::new(u64::from(cluster));
    for i in 0..300 {
        let n = rng.below(2000) as usize;
        files.insert(format!("/big/file-{i:04}"), rng.bytes(n));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    img.populate(&["big"], &refs);
    verify(&img.path, "/big", &files);

    // Replace every tenth file (entries in leaves and internal nodes).
    for i in (0..300).step_by(10) {
        let p = format!("/big/file-{i:04}");
        let n = rng.below(9000) as usize;
        let data = rng.bytes(n);
        attempt(&img.path, |fs| {
            fs.replace_file(&GuestPath::from(p.as_str()), &data)
        })
        .unwrap();
        files.insert(p, data);
    }
    verify(&img.path, "/big", &files);

    // Long names crowded into one leaf: it splits, and so do the blocks
    // above it when they fill.
    for i in 0..40 {
        let p = format!("/big/file-0150-{}-{i:02}", "x".repeat(200));
        let data = rng.bytes(100);
        attempt(&img.path, |fs| {
            fs.create_file(&GuestPath::from(p.as_str()), &data, &NewAttrs::default())
        })
        .unwrap();
        files.insert(p, data);
    }
    verify(&img.path, "/big", &files);

    // Remove every seventh file: entries of leaves and of internal nodes.
    for i in (0..300).step_by(7) {
        let p = format!("/big/file-{i:04}");
        attempt(&img.path, |fs| fs.remove(&GuestPath::from(p.as_str()))).unwrap();
        files.remove(&p);
    }
    verify(&img.path, "/big", &files);
}

#[test]
fn big_directory_4096() {
    big_dir(4096);
}

#[test]
fn big_directory_512() {
    big_dir(512);
}

#[test]
fn big_directory_65536() {
    big_dir(65536);
}

/// A directory whose index is all in `$INDEX_ROOT`: inserts until the MFT
/// record is full, then the root's entries move down into a new index block
/// of a new `$INDEX_ALLOCATION` and the inserts go on.
#[test]
fn root_index_fills() {
    let img = mkntfs_geom(16, 512, 4096);
    img.populate(&["d"], &[("/d/a", b"a")]);
    let mut files = BTreeMap::new();
    files.insert("/d/a".to_string(), b"a".to_vec());
    assert_eq!(index_allocation_size(&img.path, "/d"), (0, 0));
    for i in 0..10 {
        let p = format!("/d/{}{i}", "n".repeat(100));
        attempt(&img.path, |fs| {
            fs.create_file(&GuestPath::from(p.as_str()), b"x", &NewAttrs::default())
        })
        .unwrap();
        files.insert(p, b"x".to_vec());
        verify(&img.path, "/d", &files);
    }
    assert_eq!(index_allocation_size(&img.path, "/d"), (4096, 4096));
    // Removing from the (now one) leaf block works.
    attempt(&img.path, |fs| fs.remove(&GuestPath::from("/d/a"))).unwrap();
    files.remove("/d/a");
    verify(&img.path, "/d", &files);
}

/// A directory of 1500 files (a three-level index made by ntfs-3g): 200
/// new names crowded into one region split leaves, the middle entries going
/// up into internal blocks; every name is then found by ntfs-3g, by a FUSE
/// mount's listing and by our reader.
fn leaf_splits(cluster: u32) {
    let img = mkntfs_geom(64, 512, cluster);
    let mut files = BTreeMap::new();
    for i in 0..1500 {
        files.insert(format!("/big/f{i:04}"), vec![(i % 251) as u8; 3]);
    }
    let mut refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    // Spare files, removed again, so $MFT has free records (we do not grow it).
    let spare: Vec<String> = (0..250).map(|i| format!("/spare/s{i:03}")).collect();
    refs.extend(spare.iter().map(|p| (p.as_str(), b"s".as_slice())));
    img.populate(&["big", "spare"], &refs);
    let mnt = img.dir.path().join("mnt");
    run("ntfs-3g", &[img.path.as_os_str(), mnt.as_os_str()]);
    for p in &spare {
        std::fs::remove_file(mnt.join(p.trim_start_matches('/'))).unwrap();
    }
    let u = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(u.status.success());
    let blocks_before = index_allocation_size(&img.path, "/big");
    let (cs, _, free_before) = ntfsinfo_space(&img.path);
    let mut made = 0;
    for i in 0..200 {
        let p = format!("/big/f0750-new-{i:03}");
        let data = vec![7u8; i * 40];
        match attempt(&img.path, |fs| {
            fs.create_file(&GuestPath::from(p.as_str()), &data, &NewAttrs::default())
        }) {
            Ok(()) => {
                files.insert(p, data);
                made += 1;
            }
            Err(why) => panic!("{why}"),
        }
    }
    assert_eq!(made, 200);
    let blocks_after = index_allocation_size(&img.path, "/big");
    println!("{made} made; $INDEX_ALLOCATION {blocks_before:?} -> {blocks_after:?} bytes");
    assert!(blocks_after.0 > blocks_before.0, "no block was added");
    // Every cluster taken is a new file's or the index's.
    let (_, _, free_after) = ntfsinfo_space(&img.path);
    let data: u64 = files
        .keys()
        .filter(|p| p.contains("-new-"))
        .map(|p| ntfsinfo_data_clusters(&img.path, p, cs))
        .sum();
    assert_eq!(
        free_before - free_after,
        data + (blocks_after.1 - blocks_before.1) / cs
    );
    verify(&img.path, "/big", &files);
    // ntfs-3g's own directory walk (FUSE readdir) sees every name.
    let mnt = img.dir.path().join("mnt-ls");
    std::fs::create_dir_all(&mnt).unwrap();
    run(
        "ntfs-3g",
        &[
            std::ffi::OsStr::new("-o"),
            std::ffi::OsStr::new("ro"),
            img.path.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    let listed = std::fs::read_dir(mnt.join("big")).unwrap().count();
    let for_sure = std::fs::read(mnt.join("big/f0750-new-199"));
    let u = std::process::Command::new("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(u.status.success());
    assert_eq!(listed, files.len());
    if files.contains_key("/big/f0750-new-199") {
        assert_eq!(for_sure.unwrap(), files["/big/f0750-new-199"]);
    }
}

/// The data size of a directory's `$INDEX_ALLOCATION`, as ntfsinfo reads it.
fn index_allocation_size(img: &Path, dir: &str) -> (u64, u64) {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            std::ffi::OsStr::new("-f"),
            std::ffi::OsStr::new("-F"),
            std::ffi::OsStr::new(dir),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    let Some(part) = out.split("Dumping attribute $INDEX_ALLOCATION").nth(1) else {
        return (0, 0);
    };
    let field = |k: &str| -> u64 {
        let line = part.lines().find_map(|l| l.trim().strip_prefix(k)).unwrap();
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("Data size:"), field("Allocated size:"))
}

#[test]
fn leaf_splits_4096() {
    leaf_splits(4096);
}

#[test]
fn leaf_splits_512() {
    leaf_splits(512);
}

#[test]
fn leaf_splits_65536() {
    leaf_splits(65536);
}

/// The shape of `dir`'s index as the image holds it (parsed here from the
/// raw bytes): whether the root leads to blocks, and the internal and leaf
/// blocks in use (their `$BITMAP` bits set).
fn index_shape(img: &Path, dir: &str) -> (bool, usize, usize) {
    let gp = GuestPath::from(dir);
    let name = String::from_utf8(gp.file_name().unwrap().to_vec()).unwrap();
    let rn = ntfsinfo_inode(img, &gp.parent().to_string(), &name);
    let bytes = std::fs::read(img).unwrap();
    let (cs, mft, rs) = layout(&bytes);
    let at = (mft + rn * rs as u64) as usize;
    let mut rec = bytes[at..at + rs].to_vec();
    unprotect(&mut rec);
    let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let root = find_attrs(&rec, 0x90)[0];
    let value = root + le16(&rec, root + 20);
    let large = rec[value + 16 + 12] & 1 != 0;
    let Some(&alloc) = find_attrs(&rec, 0xA0).first() else {
        return (large, 0, 0);
    };
    // The allocation's runs.
    let mut runs = Vec::new();
    let mut p = alloc + le16(&rec, alloc + 32);
    let mut lcn = 0i64;
    while rec[p] != 0 {
        let (ll, ol) = ((rec[p] & 0xF) as usize, (rec[p] >> 4) as usize);
        let mut len = [0u8; 8];
        len[..ll].copy_from_slice(&rec[p + 1..p + 1 + ll]);
        let mut off = [0u8; 8];
        off[..ol].copy_from_slice(&rec[p + 1 + ll..p + 1 + ll + ol]);
        if ol > 0 && off[ol - 1] & 0x80 != 0 {
            off[ol..].fill(0xFF);
        }
        lcn += i64::from_le_bytes(off);
        runs.push((lcn as u64, u64::from_le_bytes(len)));
        p += 1 + ll + ol;
    }
    let bm = find_attrs(&rec, 0xB0)[0];
    let bv = bm + le16(&rec, bm + 20);
    let bitmap = rec[bv..bv + le32(&rec, bm + 16)].to_vec();
    let block = 4096u64;
    let (mut internal, mut leaves) = (0, 0);
    for nb in 0..bitmap.len() as u64 * 8 {
        if bitmap[(nb / 8) as usize] & (1 << (nb % 8)) == 0 {
            continue;
        }
        // Map the block's first byte through the runs (blocks do not
        // straddle runs in the images made here: a cluster is 512, 4096 or
        // 65536 bytes and runs are whole blocks or whole clusters).
        let mut v = nb * block / cs;
        let mut dev = None;
        for &(l, n) in &runs {
            if v < n {
                dev = Some((l + v) * cs + (nb * block) % cs);
                break;
            }
            v -= n;
        }
        let dev = dev.unwrap() as usize;
        let b = &bytes[dev..dev + block as usize];
        assert_eq!(&b[0..4], b"INDX", "block {nb} of {dir}");
        if b[24 + 12] & 1 != 0 {
            internal += 1;
        } else {
            leaves += 1;
        }
    }
    (large, internal, leaves)
}

/// The MFT record of `name` in `parent`, as ntfsls lists it.
fn ntfsinfo_inode(img: &Path, parent: &str, name: &str) -> u64 {
    ntfsls_inodes(img, parent)[name]
}

/// Names of a directory through our reader.
fn our_names(img: &Path, dir: &str) -> std::collections::BTreeSet<String> {
    let fs = open(img);
    fs.read_dir(&GuestPath::from(dir))
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

/// ntfsfix clean, and ntfs-3g's listing and ours equal the model.
fn check_names(img: &Path, dir: &str, want: &std::collections::BTreeSet<String>) {
    ntfsfix_clean(img);
    assert_eq!(&ntfsls(img, dir), want, "ntfsls {dir}");
    assert_eq!(&our_names(img, dir), want, "our read_dir {dir}");
}

/// A directory of 5,200 entries (files and empty directories, names of
/// varied lengths in shuffled order) made by our writer: a three-level
/// index (root → internal blocks → leaves). Then every entry is removed in
/// random order (entries of leaves and internal nodes, emptied blocks
/// freed, levels collapsing) down to an empty directory, checked every 400
/// steps by ntfsfix, ntfsls and our reader.
fn five_thousand(cluster: u32) {
    const N: usize = 5200;
    let img = mkntfs_geom(96, 512, cluster);
    let mut rng = XorShift::new(u64::from(cluster) ^ 0x5eed);
    let mut order: Vec<usize> = (0..N).collect();
    for i in (1..N).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let name = |i: usize| format!("e{i:05}{}", "-long".repeat(i % 13));
    let mut want = std::collections::BTreeSet::new();
    let mut data = BTreeMap::new();
    let t = std::time::Instant::now();
    {
        let mut fs = open_rw(&img.path);
        fs.mkdir(&GuestPath::from("/big"), &NewAttrs::default())
            .unwrap();
        for &i in &order {
            let p = format!("/big/{}", name(i));
            if i % 10 == 3 {
                fs.mkdir(&GuestPath::from(p.as_str()), &NewAttrs::default())
                    .unwrap();
            } else {
                let n = rng.below(300) as usize;
                let d = rng.bytes(n);
                fs.create_file(&GuestPath::from(p.as_str()), &d, &NewAttrs::default())
                    .unwrap();
                data.insert(p, d);
            }
            want.insert(name(i));
        }
    }
    println!("{N} entries made in {:?}", t.elapsed());
    let (large, internal, leaves) = index_shape(&img.path, "/big");
    println!("index: large root {large}, {internal} internal blocks, {leaves} leaves");
    assert!(
        large && internal >= 1 && leaves > internal,
        "not three levels"
    );
    check_names(&img.path, "/big", &want);
    for (p, d) in data.iter().step_by(250) {
        assert_eq!(&ntfscat(&img.path, p), d, "{p}");
    }

    // Remove everything in random order.
    let mut order: Vec<usize> = (0..N).collect();
    for i in (1..N).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let t = std::time::Instant::now();
    for chunk in order.chunks(400) {
        let mut fs = open_rw(&img.path);
        for &i in chunk {
            fs.remove(&GuestPath::from(format!("/big/{}", name(i)).as_str()))
                .unwrap();
            want.remove(&name(i));
        }
        drop(fs);
        check_names(&img.path, "/big", &want);
    }
    println!("{N} entries removed in {:?}", t.elapsed());
    let (large, internal, leaves) = index_shape(&img.path, "/big");
    assert_eq!((large, internal, leaves), (false, 0, 0));
    // Filled again until the root moves down once more: the free blocks
    // of the kept allocation (block 0 first) are reused, not refused.
    {
        let mut fs = open_rw(&img.path);
        for i in 0..600 {
            let p = format!("/big/{}", name(i));
            fs.create_file(&GuestPath::from(p.as_str()), b"again", &NewAttrs::default())
                .unwrap();
            want.insert(name(i));
        }
    }
    let (large, _, leaves) = index_shape(&img.path, "/big");
    assert!(large && leaves >= 2, "the refilled root did not move down");
    check_names(&img.path, "/big", &want);
    ntfsfix_clean(&img.path);
    {
        let mut fs = open_rw(&img.path);
        for i in 0..600 {
            fs.remove(&GuestPath::from(format!("/big/{}", name(i)).as_str()))
                .unwrap();
        }
    }
    // The emptied directory can go, and its clusters come back.
    let mut fs = open_rw(&img.path);
    fs.remove(&GuestPath::from("/big")).unwrap();
    drop(fs);
    ntfsfix_clean(&img.path);
    assert!(!ntfsls(&img.path, "/").contains("big"));
}

#[test]
fn five_thousand_4096() {
    five_thousand(4096);
}

#[test]
fn five_thousand_512() {
    five_thousand(512);
}
