//! Hostile images: truncated, garbage, and real images with random bytes
//! changed (mostly in the boot sector, MFT records and index records). Every
//! operation must return `Ok` or `Err`; a panic fails the test and names the
//! iteration and the changes, and leaves the image in the temp directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::*;
use proptest::prelude::*;
use vmie_guestfs::{FileType, GuestFs, GuestPath};

/// Run `exercise` on `img`, turning a panic into a test failure that says
/// how to reproduce it.
fn survive(img: &[u8], what: &str, budget: usize) -> bool {
    let r = catch_unwind(AssertUnwindSafe(|| match open_bytes(img.to_vec()) {
        Ok(fs) => {
            exercise(&fs, budget);
            true
        }
        Err(_) => false,
    }));
    match r {
        Ok(opened) => opened,
        Err(_) => {
            let keep = std::env::temp_dir().join("vmie-ntfs-panic.img");
            let _ = std::fs::write(&keep, img);
            panic!("{what}: panicked (image kept as {})", keep.display());
        }
    }
}

/// Byte ranges worth changing: the boot sector, and every 512-aligned block
/// that starts a file record or an index record.
fn metadata_blocks(img: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 512)];
    let mut at = 0;
    while at + 1024 <= img.len() {
        match &img[at..at + 4] {
            b"FILE" => out.push((at, 1024)),
            b"INDX" if at + 4096 <= img.len() => out.push((at, 4096)),
            _ => {}
        }
        at += 512;
    }
    out
}

/// Change 1..=8 bytes of `img` in place, mostly inside metadata (`hot`:
/// the metadata files' records and the index records, where a walk of the
/// volume goes first). Returns a description of the changes and the original
/// bytes, to put back with [`restore`].
fn mutate(
    rng: &mut XorShift,
    img: &mut [u8],
    blocks: &[(usize, usize)],
    hot: &[(usize, usize)],
) -> (String, Vec<(usize, u8)>) {
    let mut log = String::new();
    let mut undo = Vec::new();
    for _ in 0..1 + rng.below(8) {
        let (start, len) = match rng.below(10) {
            0 => (0, 512),
            1..=5 => hot[rng.below(hot.len() as u64) as usize],
            9 => (0, img.len()),
            _ => blocks[rng.below(blocks.len() as u64) as usize],
        };
        let at = start + rng.below(len as u64) as usize;
        let how = rng.below(5);
        let width = if how >= 3 {
            [2usize, 4][rng.below(2) as usize]
        } else {
            1
        };
        let end = (at + width).min(img.len());
        undo.extend((at..end).map(|i| (i, img[i])));
        match how {
            0 => img[at] ^= 1 << rng.below(8),
            1 => img[at] = rng.next() as u8,
            2 => img[at] = [0, 0xFF, 0x7F, 0x80][rng.below(4) as usize],
            _ => {
                // A little-endian field set to an interesting value.
                let v: u32 = [0, 1, 0xFFFF, 0xFFFF_FFFF, 0x8000_0000, 16, 24, 1024, 4096]
                    [rng.below(9) as usize];
                img[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
        }
        log.push_str(&format!(" {at:#x}/{how}"));
    }
    (log, undo)
}

fn restore(img: &mut [u8], undo: &[(usize, u8)]) {
    for &(i, b) in undo.iter().rev() {
        img[i] = b;
    }
}

fn flip_loop(base: &[u8], seed: u64, iterations: usize, budget: usize, name: &str) -> usize {
    let blocks = metadata_blocks(base);
    let first_record = blocks.get(1).map_or(0, |b| b.0);
    let hot: Vec<(usize, usize)> = blocks
        .iter()
        .copied()
        .filter(|&(at, len)| len != 1024 || at < first_record + 24 * 1024)
        .collect();
    let mut rng = XorShift::new(seed);
    let mut img = base.to_vec();
    let mut opened = 0;
    for i in 0..iterations {
        let (log, undo) = mutate(&mut rng, &mut img, &blocks, &hot);
        let what = format!("{name} iteration {i} (seed {seed:#x}):{log}");
        if survive(&img, &what, budget) {
            opened += 1;
        }
        restore(&mut img, &undo);
    }
    assert_eq!(img, base);
    opened
}

#[test]
fn bit_flips_in_testfs1() {
    let base = std::fs::read(testfs1()).unwrap();
    assert!(survive(&base, "testfs1 unchanged", 10_000));
    let opened = flip_loop(&base, 0x7E57_F5E1, 400, 60, "testfs1");
    // Most changes leave the volume openable: the loop reaches past open.
    assert!(opened > 100, "only {opened} of 400 opened");
}

#[test]
fn bit_flips_in_a_large_cluster_image() {
    // 64 KiB clusters, a multi-level root index, resident and non-resident
    // files.
    let img = mkntfs(16, Some(65536), "flip");
    let mut rng = XorShift::new(7);
    for i in 0..120 {
        let n = [10usize, 900, 70_000][i % 3];
        img.add(&format!("file-{i:03}"), &rng.bytes(n));
    }
    let base = std::fs::read(&img.path).unwrap();
    let opened = flip_loop(&base, 0xB16C_1057, 200, 50, "64k-cluster image");
    assert!(opened > 50, "only {opened} of 200 opened");
}

#[test]
fn bit_flips_in_the_windows_volume() {
    let (_dir, raw) = windows_volume_raw();
    let base = std::fs::read(raw).unwrap();
    let opened = flip_loop(&base, 0x3117_D0E5, 150, 40, "windows_volume");
    assert!(opened > 40, "only {opened} of 150 opened");
}

#[test]
fn truncated_images_are_refused() {
    let base = std::fs::read(testfs1()).unwrap();
    // The volume is 4095 sectors; the image has one more (the backup boot
    // sector).
    let volume = 4095 * 512;
    for len in [
        0,
        1,
        511,
        512,
        513,
        4096,
        16_384,
        100_000,
        1 << 20,
        volume - 1,
    ] {
        assert!(
            !survive(&base[..len], &format!("truncated to {len}"), 100),
            "{len}"
        );
    }
    for len in [volume, base.len() - 1] {
        assert!(
            survive(&base[..len], &format!("truncated to {len}"), 100),
            "{len}"
        );
    }
}

#[test]
fn garbage_is_refused() {
    let base = std::fs::read(testfs1()).unwrap();
    let mut rng = XorShift::new(0x6A4B);
    assert!(!survive(&vec![0u8; 1 << 20], "zeros", 100));
    assert!(!survive(&vec![0xFFu8; 1 << 20], "ones", 100));
    for i in 0..40 {
        let mut img = rng.bytes(base.len());
        assert!(!survive(&img, &format!("random {i}"), 100));
        // A valid boot sector in front of garbage.
        img[..512].copy_from_slice(&base[..512]);
        assert!(!survive(&img, &format!("boot sector + random {i}"), 100));
        // Valid metadata up to the MFT, garbage after it.
        let keep = 0x4000 + 1024 * (1 + rng.below(20) as usize);
        img[..keep].copy_from_slice(&base[..keep]);
        survive(&img, &format!("first {keep} bytes + random {i}"), 100);
    }
}

#[test]
fn every_mft_record_zeroed_or_filled() {
    // Each of the first 80 MFT records in turn destroyed (zeros, then 0xFF),
    // then the whole volume walked.
    let base = std::fs::read(testfs1()).unwrap();
    let (_, mft, size) = layout(&base);
    for rn in 0..80u64 {
        for fill in [0u8, 0xFF] {
            let mut img = base.clone();
            let at = (mft + rn * size as u64) as usize;
            img[at..at + size].fill(fill);
            let opened = survive(&img, &format!("record {rn} filled with {fill:#x}"), 60);
            // Records the volume cannot open without: $MFT, $UpCase, root.
            if [0, 5, 10].contains(&rn) {
                assert!(!opened, "record {rn}");
            }
        }
    }
}

#[test]
fn index_entries_shredded() {
    // Every 2-byte field of the first index entries of many_subdirs' index
    // records set to hostile values, one at a time.
    let base = std::fs::read(testfs1()).unwrap();
    let fs = open_bytes(base.clone()).unwrap();
    assert_eq!(
        fs.symlink_metadata(&GuestPath::from("/many_subdirs"))
            .unwrap()
            .file_type,
        FileType::Directory
    );
    drop(fs);
    let indx: Vec<usize> = metadata_blocks(&base)
        .into_iter()
        .filter(|&(_, len)| len == 4096)
        .map(|(at, _)| at)
        .collect();
    assert!(indx.len() > 3);
    for &at in indx.iter().take(4) {
        let mut rec = base[at..at + 4096].to_vec();
        unprotect(&mut rec);
        let first = 24 + u32::from_le_bytes(rec[24..28].try_into().unwrap()) as usize;
        for field in (0..48).step_by(2) {
            for v in [0u16, 1, 8, 15, 0x7FFF, 0xFFFF] {
                let mut r = rec.clone();
                r[first + field..first + field + 2].copy_from_slice(&v.to_le_bytes());
                protect(&mut r);
                let mut img = base.clone();
                img[at..at + 4096].copy_from_slice(&r);
                survive(
                    &img,
                    &format!("INDX at {at:#x}, entry byte {field} = {v:#x}"),
                    40,
                );
            }
        }
    }
}

/// Apply `f` to the unprotected record or index record of `len` bytes at
/// `at` of `img`, then protect it again.
fn patch_at(img: &mut [u8], at: usize, len: usize, f: impl FnOnce(&mut [u8])) {
    let mut rec = img[at..at + len].to_vec();
    unprotect(&mut rec);
    f(&mut rec);
    protect(&mut rec);
    img[at..at + len].copy_from_slice(&rec);
}

/// testfs1 and the byte offset of the record of `path` (in the MFT's first
/// extent).
fn testfs1_record(path: &str) -> (Vec<u8>, usize) {
    let img = std::fs::read(testfs1()).unwrap();
    let fs = open_bytes(img.clone()).unwrap();
    let rn = fs
        .symlink_metadata(&GuestPath::from(path))
        .unwrap()
        .inode
        .unwrap();
    assert!(rn < 255, "record {rn} is past the MFT's first extent");
    let (_, mft, size) = layout(&img);
    let at = (mft + rn * size as u64) as usize;
    (img, at)
}

fn corrupt_detail(r: Result<impl std::fmt::Debug, vmie_guestfs::FsError>) -> String {
    match r {
        Err(vmie_guestfs::FsError::Corrupt { detail, .. }) => detail,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// The `ntfs` crate reads a resident attribute's value offset at +20 without
/// checking that the attribute is that long: an attribute of 16 bytes at the
/// end of the record made it index past the record (a panic). Our record
/// check refuses resident headers under 24 bytes first.
#[test]
fn resident_header_at_the_end_of_a_record() {
    let (mut img, at) = testfs1_record("/file-with-12345");
    patch_at(&mut img, at, 1024, |r| {
        r[0x14..0x16].copy_from_slice(&1008u16.to_le_bytes());
        r[1008..1024].fill(0);
        r[1008] = 0x10; // $STANDARD_INFORMATION
        r[1012] = 16; // length
    });
    let fs = open_bytes(img).unwrap();
    let detail = corrupt_detail(fs.symlink_metadata(&GuestPath::from("/file-with-12345")));
    assert!(
        detail.contains("resident header needs 24 bytes"),
        "{detail}"
    );
    assert!(fs
        .read_file(&GuestPath::from("/file-with-12345"), 100)
        .is_err());
    assert_eq!(fs.read_dir(&GuestPath::root()).unwrap().len(), 5);
}

/// The crate adds a data run's byte position and the offset inside it
/// without overflow checks: a run at cluster 2^55 - 1 (position
/// 0xFFFF_FFFF_FFFF_FE00) made reading an index node there overflow (a
/// panic in debug builds, a wrapped read in release). Our record check
/// refuses runs outside the volume.
#[test]
fn data_run_past_the_end_of_the_volume() {
    let (mut img, at) = testfs1_record("/many_subdirs");
    patch_at(&mut img, at, 1024, |r| {
        let a = find_attrs(r, 0xA0)[0];
        let runs = a + u16::from_le_bytes([r[a + 32], r[a + 33]]) as usize;
        let new = [
            0x81, 0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x00,
        ];
        r[runs..runs + new.len()].copy_from_slice(&new);
    });
    let fs = open_bytes(img).unwrap();
    let detail = corrupt_detail(fs.read_dir(&GuestPath::from("/many_subdirs")));
    assert!(detail.contains("outside the volume"), "{detail}");
    assert!(fs
        .symlink_metadata(&GuestPath::from("/many_subdirs/7"))
        .is_err());
    assert_eq!(fs.read_dir(&GuestPath::root()).unwrap().len(), 5);
}

/// An index node whose subnode is itself: the listing refuses a node reached
/// twice, a lookup stops at the depth limit (the crate's own index walk would
/// grow without end).
#[test]
fn index_node_that_is_its_own_subnode() {
    let mut img = std::fs::read(testfs1()).unwrap();
    let (_, len) = (0, 4096);
    let node = metadata_blocks(&img)
        .into_iter()
        .find(|&(at, l)| {
            l == len && u64::from_le_bytes(img[at + 16..at + 24].try_into().unwrap()) == 40
        })
        .map(|(at, _)| at)
        .unwrap();
    let mut first_key = String::new();
    patch_at(&mut img, node, len, |r| {
        let p = 24 + u32::from_le_bytes(r[24..28].try_into().unwrap()) as usize;
        let elen = u16::from_le_bytes([r[p + 8], r[p + 9]]) as usize;
        assert_eq!(r[p + 12] & 1, 1, "VCN 40 should be an inner node");
        r[p + elen - 8..p + elen].copy_from_slice(&40i64.to_le_bytes());
        let n = r[p + 16 + 64] as usize;
        let name: Vec<u16> = r[p + 16 + 66..p + 16 + 66 + 2 * n]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        first_key = String::from_utf16(&name).unwrap();
    });
    let fs = open_bytes(img).unwrap();
    let detail = corrupt_detail(fs.read_dir(&GuestPath::from("/many_subdirs")));
    assert!(detail.contains("reached twice"), "{detail}");
    // A name sorting before the first key descends into the loop.
    let detail = corrupt_detail(fs.symlink_metadata(&GuestPath::from("/many_subdirs/0")));
    assert!(detail.contains("deeper than 64"), "{detail}");
    // The first key itself is still found.
    let p = format!("/many_subdirs/{first_key}");
    assert!(
        fs.symlink_metadata(&GuestPath::from(p.as_str())).is_ok(),
        "{p}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random boot sector fields (after the OEM ID, before the boot code)
    /// over the real volume.
    #[test]
    fn boot_sector_fields(fields in proptest::collection::vec(any::<u8>(), 0x54 - 0x0B)) {
        let mut img = std::fs::read(testfs1()).unwrap();
        img[0x0B..0x54].copy_from_slice(&fields);
        survive(&img, &format!("boot sector fields {fields:02x?}"), 30);
    }

    /// Random bytes over a random stretch of the MFT's first records.
    #[test]
    fn mft_stretch(offset in 0usize..(24 * 1024), bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
        let mut img = std::fs::read(testfs1()).unwrap();
        let (_, mft, _) = layout(&img);
        let at = mft as usize + offset;
        img[at..at + bytes.len()].copy_from_slice(&bytes);
        survive(&img, &format!("{} bytes at {at:#x}", bytes.len()), 30);
    }
}

#[test]
fn the_unchanged_volume_still_walks_fully() {
    // The budget of the loops above is not what stops a clean walk.
    let fs = open_bytes(std::fs::read(testfs1()).unwrap()).unwrap();
    assert!(exercise(&fs, 100_000) >= 517);
    assert!(fs.read_dir(&GuestPath::root()).unwrap().len() == 5);
}
