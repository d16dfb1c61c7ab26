//! Running out of blocks or inodes: NoSpace, and the failed operation
//! writes nothing (the overlay is unchanged by it); what succeeded before
//! commits to an image e2fsck finds clean; discarding leaves the image as it
//! was, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vmie_guestfs::{FsError, GuestFs, NewAttrs};

fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/fstab"), b"old\n").unwrap();
    t
}

fn fill(args: &[&str], mib: u64, chunk: usize) {
    let t = tree();
    let img = mkfs("ext4", args, mib, Some(t.path()));
    let before = std::fs::read(&img.path).unwrap();
    let mut s = open(&img.path);
    let data = vec![0x5au8; chunk];
    let mut made = Vec::new();
    let err = loop {
        let p = gp(&format!("/etc/f{}", made.len()));
        let pending = s.overlay.changes().unwrap();
        match s.fs.create_file(&p, &data, &NewAttrs::default()) {
            Ok(()) => made.push(p),
            Err(e) => {
                assert_eq!(s.overlay.changes().unwrap(), pending, "the failed op wrote");
                break e;
            }
        }
        assert!(made.len() < 100_000);
    };
    assert!(matches!(err, FsError::NoSpace { .. }), "{err}");
    assert!(!made.is_empty());
    // A replace that needs more than is left fails the same way, changing
    // nothing (the old contents stay).
    let pending = s.overlay.changes().unwrap();
    let huge = vec![1u8; (mib as usize) << 20];
    let err = s.fs.replace_file(&gp("/etc/fstab"), &huge).unwrap_err();
    assert!(matches!(err, FsError::NoSpace { .. }), "{err}");
    assert_eq!(s.overlay.changes().unwrap(), pending);
    // Discarding: the image is untouched.
    assert_eq!(std::fs::read(&img.path).unwrap(), before);
    // Committing what succeeded: clean and readable.
    s.commit();
    fsck(&img.path);
    assert_eq!(cat(&img.path, "/etc/fstab"), b"old\n");
    assert_eq!(cat(&img.path, "/etc/f0"), data);
    // After freeing, space is usable again.
    let mut s = open(&img.path);
    s.fs.remove(&made[0]).unwrap();
    s.fs.create_file(&gp("/etc/again"), &data, &NewAttrs::default())
        .unwrap();
    s.commit();
    fsck(&img.path);
}

#[test]
fn blocks_exhausted() {
    fill(&["-O", "^has_journal"], 8, 256 << 10);
    fill(&["-b", "1024"], 8, 100 << 10);
    // Four 8 MiB groups (flex_bg: BLOCK_UNINIT groups get their bitmaps
    // initialised), and the same with the older uninit_bg checksums.
    fill(&["-b", "1024"], 32, 300 << 10);
    fill(
        &["-b", "1024", "-O", "^metadata_csum,uninit_bg"],
        32,
        300 << 10,
    );
}

#[test]
fn inodes_exhausted() {
    fill(&["-N", "16"], 16, 10);
    // Few inodes per group over four groups: INODE_UNINIT groups are
    // initialised as allocation moves on.
    fill(&["-b", "1024", "-N", "64"], 32, 10);
    fill(
        &["-b", "1024", "-N", "64", "-O", "^metadata_csum,uninit_bg"],
        32,
        10,
    );
}
