//! Hostile directory indexes on the write side. A `$I30` `$BITMAP` that
//! says an index block in use is free is found when the block empties and
//! is freed; the removal is refused as corrupt, naming the directory and the
//! block, and nothing is written although entries were already cut in the
//! transaction. One that says the blocks in use are free: a split does not
//! take one of them for its new block (refused as corrupt, nothing written).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestPath, NewAttrs};

#[test]
fn emptied_block_marked_free_is_refused() {
    let img = mkntfs_geom(32, 512, 4096);
    {
        let mut fs = open_rw(&img.path);
        fs.mkdir(&GuestPath::from("/d"), &NewAttrs::default())
            .unwrap();
        for i in 0..400 {
            let p = format!("/d/f{i:03}");
            fs.create_file(
                &GuestPath::from(p.as_str()),
                b"0123456789",
                &NewAttrs::default(),
            )
            .unwrap();
        }
    }
    ntfsfix_clean(&img.path);
    let rn = ntfsls_inodes(&img.path, "/")["d"];
    // Every block of /d's index marked free.
    patch_record(&img.path, rn, |rec| {
        let bm = find_attrs(rec, 0xB0)[0];
        let len = u32::from_le_bytes(rec[bm + 16..bm + 20].try_into().unwrap()) as usize;
        let v = bm + u16::from_le_bytes([rec[bm + 20], rec[bm + 21]]) as usize;
        assert!(rec[v..v + len].iter().any(|&b| b != 0));
        rec[v..v + len].fill(0);
    });
    // Removing the first names in order empties the leftmost leaf.
    let mut done = 0;
    for i in 0..400 {
        let p = format!("/d/f{i:03}");
        let before = std::fs::read(&img.path).unwrap();
        let mut fs = open_rw(&img.path);
        match fs.remove(&GuestPath::from(p.as_str())) {
            Ok(()) => done += 1,
            Err(FsError::Corrupt { place, detail, .. }) => {
                assert!(place.contains("/d"), "{place}");
                assert!(detail.contains("already free"), "{detail}");
                assert!(
                    std::fs::read(&img.path).unwrap() == before,
                    "the refused removal wrote"
                );
                assert!(done >= 5, "{done} removed before the refusal");
                return;
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
    panic!("no block emptied after {done} removals");
}

/// A `$I30` `$BITMAP` that says the index blocks in use are free: the next
/// split must not take one of them for its new block; the insert is refused
/// as corrupt and nothing is written.
#[test]
fn live_block_marked_free_is_not_reused() {
    let img = mkntfs_geom(32, 512, 4096);
    {
        let mut fs = open_rw(&img.path);
        fs.mkdir(&GuestPath::from("/d"), &NewAttrs::default())
            .unwrap();
        for i in 0..200 {
            let p = format!("/d/f{i:03}");
            fs.create_file(&GuestPath::from(p.as_str()), b"x", &NewAttrs::default())
                .unwrap();
        }
    }
    let rn = ntfsls_inodes(&img.path, "/")["d"];
    patch_record(&img.path, rn, |rec| {
        let bm = find_attrs(rec, 0xB0)[0];
        let len = u32::from_le_bytes(rec[bm + 16..bm + 20].try_into().unwrap()) as usize;
        let v = bm + u16::from_le_bytes([rec[bm + 20], rec[bm + 21]]) as usize;
        rec[v..v + len].fill(0);
    });
    let mut made = 0;
    for i in 0..200 {
        let p = format!("/d/f000-{i:03}");
        let before = std::fs::read(&img.path).unwrap();
        let mut fs = open_rw(&img.path);
        match fs.create_file(&GuestPath::from(p.as_str()), b"y", &NewAttrs::default()) {
            Ok(()) => made += 1,
            Err(FsError::Corrupt { place, detail, .. }) => {
                assert!(place.contains("/d"), "{place}");
                assert!(detail.contains("in use but free"), "{detail}");
                assert!(
                    std::fs::read(&img.path).unwrap() == before,
                    "the refused insert wrote"
                );
                assert!(made >= 1, "{made} made before the refusal");
                return;
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
    panic!("no split after {made} inserts");
}

/// An `$INDEX_ALLOCATION` whose data size is far past what it allocates
/// (2^62 bytes): a new index block is refused as corrupt at once (no search
/// over 2^50 blocks, no allocation the field asks for), nothing written.
#[test]
fn index_allocation_data_size_past_its_allocation_is_refused() {
    let img = mkntfs_geom(32, 512, 4096);
    {
        let mut fs = open_rw(&img.path);
        fs.mkdir(&GuestPath::from("/d"), &NewAttrs::default())
            .unwrap();
        for i in 0..200 {
            let p = format!("/d/f{i:03}");
            fs.create_file(&GuestPath::from(p.as_str()), b"x", &NewAttrs::default())
                .unwrap();
        }
    }
    let rn = ntfsls_inodes(&img.path, "/")["d"];
    patch_record(&img.path, rn, |rec| {
        let ia = find_attrs(rec, 0xA0)[0];
        // Non-resident header: data size at +48 (allocated at +40).
        rec[ia + 48..ia + 56].copy_from_slice(&(1u64 << 62).to_le_bytes());
        rec[ia + 56..ia + 64].copy_from_slice(&(1u64 << 62).to_le_bytes());
    });
    let mut refused = false;
    for i in 200..2000 {
        let p = format!("/d/f{i:04}");
        let before = std::fs::read(&img.path).unwrap();
        let mut fs = open_rw(&img.path);
        match fs.create_file(&GuestPath::from(p.as_str()), b"x", &NewAttrs::default()) {
            Ok(()) => continue,
            Err(FsError::Corrupt { detail, .. }) => {
                assert!(detail.contains("data size"), "{detail}");
                drop(fs);
                assert!(
                    std::fs::read(&img.path).unwrap() == before,
                    "the refused create wrote"
                );
                refused = true;
                break;
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
    assert!(refused, "no index block was ever needed");
}
