//! Images made by the real mkntfs with 512-byte sectors and several cluster
//! sizes, filled by ntfscp with random files of 0 B to 3 MiB (and enough
//! small ones that the root index needs a multi-level B-tree), read back
//! through `NtfsFs` and compared with the bytes written and with what
//! ntfsls and ntfsinfo report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt, GuestPath};

/// Names as Windows would upcase them: characters whose uppercase is one
/// character (what `$UpCase` maps); others unchanged.
fn upcase(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

fn lowercase(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_lowercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

fn roundtrip(cluster: Option<u32>, seed: u64) {
    let img = mkntfs(16, cluster, "vmie-test");
    let mut rng = XorShift::new(seed);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let sizes = [
        0usize,
        1,
        100,
        511,
        512,
        700,
        1023,
        1024,
        4095,
        4096,
        4097,
        65535,
        65536,
        65537,
        300_000,
        1_000_000,
        3 << 20,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        files.insert(format!("Sized_{i:02}_{n}.bin"), rng.bytes(n));
    }
    for i in 0..8 {
        let n = rng.below(400 << 10) as usize;
        files.insert(format!("random-{i}.dat"), rng.bytes(n));
    }
    for name in [
        "Grüße 日本.txt",
        "with space",
        "MixedCase.TXT",
        "ÄÖÜ-åäö.txt",
        "a",
    ] {
        let n = rng.below(3000) as usize;
        files.insert(name.to_string(), rng.bytes(n));
    }
    // Enough names that the root index is a B-tree of more than one level.
    for i in 0..300 {
        let n = rng.below(200) as usize;
        files.insert(format!("small-file-number-{i:04}"), rng.bytes(n));
    }
    for (name, data) in &files {
        img.add(name, data);
    }

    let fs = open(&img.path);
    let listed: BTreeSet<String> = fs
        .read_dir(&GuestPath::root())
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.file_type, FileType::Regular);
            String::from_utf8(e.name).unwrap()
        })
        .collect();
    assert_eq!(listed, ntfsls(&img.path, "/"), "listing vs ntfsls");
    assert_eq!(listed, files.keys().cloned().collect::<BTreeSet<_>>());

    for (name, data) in &files {
        let path = format!("/{name}");
        let (_, m) = fs.metadata(&path).unwrap();
        assert_eq!(m.file_type, FileType::Regular, "{path}");
        assert_eq!(m.size, data.len() as u64, "{path}");
        assert_eq!(m.nlink, Some(1), "{path}");
        assert_eq!(&fs.read(&path).unwrap(), data, "{path}");
        // Case-insensitive lookups find the same file.
        for other in [upcase(name), lowercase(name)] {
            let (_, o) = fs.metadata(&format!("/{other}")).unwrap();
            assert_eq!(o.inode, m.inode, "/{other} vs {path}");
        }
        if data.len() <= 4096 {
            assert_eq!(&fs.read(&format!("/{}", upcase(name))).unwrap(), data);
        }
    }
    let three = "/Sized_16_3145728.bin";
    assert_eq!(fs.read(&upcase(three)).unwrap(), files[&three[1..]]);
    for missing in [
        "/small-file-number-0300",
        "/small-file-number-",
        "/Sized",
        "/zzz",
        "/",
    ] {
        if missing == "/" {
            continue;
        }
        assert!(
            matches!(fs.metadata(missing), Err(FsError::NotFound { .. })),
            "{missing}"
        );
    }

    let v = fs.volume_info().unwrap();
    let (cs, clusters, free) = ntfsinfo_space(&img.path);
    assert_eq!(u64::from(v.cluster_size), cs);
    if let Some(c) = cluster {
        assert_eq!(v.cluster_size, c);
    }
    assert_eq!(v.total_bytes / cs, clusters);
    assert_eq!(v.free_bytes, free * cs, "free space vs ntfsinfo");
    assert!(v.free_bytes > 0 && v.free_bytes < v.total_bytes);
    assert_eq!(v.label, "vmie-test");
    assert_eq!((v.major_version, v.minor_version, v.dirty), (3, 1, false));
}

#[test]
fn default_clusters() {
    roundtrip(None, 0x5EED_0001);
}

#[test]
fn clusters_512() {
    roundtrip(Some(512), 0x5EED_0512);
}

#[test]
fn clusters_4096() {
    roundtrip(Some(4096), 0x5EED_4096);
}

/// Index records (4 KiB) smaller than a cluster: subnode VCNs count 512-byte
/// blocks (the `ntfs` crate's own index code gets this wrong).
#[test]
fn clusters_65536() {
    roundtrip(Some(65536), 0x5EED_6553);
}

#[test]
fn large_volume_free_space() {
    // A bigger, mostly empty volume: $Bitmap is read in several chunks.
    let img = mkntfs(1100, Some(512), "big");
    img.add("one", b"1");
    let fs = open(&img.path);
    let v = fs.volume_info().unwrap();
    let (cs, clusters, free) = ntfsinfo_space(&img.path);
    assert!(clusters / 8 > 2 * (64 << 10), "bitmap should span chunks");
    assert_eq!(v.total_bytes / cs, clusters);
    assert_eq!(v.free_bytes, free * cs);
    assert_eq!(fs.read("/ONE").unwrap(), b"1");
    assert_eq!(fs.list("/").unwrap().1.len(), 1);
}
