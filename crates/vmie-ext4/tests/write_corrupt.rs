//! Hostile input: random bytes flipped in the metadata of a small image
//! (without metadata_csum, so nothing catches them early). Every write
//! operation must return (Ok or an error), never panic or hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use vmie_disk::{Device, MemDevice, Overlay};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{GuestFs, NewAttrs};

type Op = dyn Fn(&mut Ext4Fs) -> Result<(), vmie_guestfs::FsError>;

#[test]
fn flipped_metadata_never_panics() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/fstab"), b"old\n").unwrap();
    std::fs::create_dir_all(t.path().join("big")).unwrap();
    for i in 0..300 {
        std::fs::write(
            t.path().join(format!("big/f{i:04}-name")),
            vec![b'x'; i * 37],
        )
        .unwrap();
    }
    let mut result = Vec::new();
    for (kind, args) in [
        ("ext4", &["-O", "^metadata_csum", "-b", "1024"][..]),
        ("ext2", &["-b", "1024"][..]),
    ] {
        let img = mkfs(kind, args, 4, Some(t.path()));
        let pristine = std::fs::read(&img.path).unwrap();
        // Metadata lives in the first ~400 KiB of this image.
        let meta_len = 400usize << 10;
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let cases: usize = std::env::var("CORRUPT_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let (mut ok, mut err) = (0, 0);
        for _ in 0..cases {
            let mut data = pristine.clone();
            for _ in 0..1 + next() % 8 {
                // Half the flips in the first 96 KiB (superblock, group
                // descriptors, bitmaps, the first inode table blocks).
                let span = if next() % 2 == 0 { 96 << 10 } else { meta_len };
                let at = 1024 + (next() as usize) % (span - 1024);
                data[at] ^= 1 << (next() % 8);
            }
            let dev: Arc<dyn Device> = Arc::new(MemDevice::new("corrupt", data));
            let ov: Arc<dyn Device> = Arc::new(Overlay::new(dev));
            let Ok(mut fs) = Ext4Fs::open(ov, "corrupt") else {
                continue;
            };
            let n = (next() % 300) as usize;
            let ops: [Box<Op>; 6] = [
                Box::new(|fs| fs.replace_file(&gp("/etc/fstab"), &[b'n'; 20_000])),
                Box::new(move |fs| fs.replace_file(&gp(&format!("/big/f{n:04}-name")), b"y")),
                Box::new(|fs| fs.create_file(&gp("/big/new"), b"z", &NewAttrs::default())),
                Box::new(move |fs| fs.remove(&gp(&format!("/big/f{n:04}-name")))),
                Box::new(|fs| fs.mkdir(&gp("/etc/d"), &NewAttrs::default())),
                Box::new(|fs| fs.rename(&gp("/etc/fstab"), &gp("/big/fstab"))),
            ];
            for op in &ops {
                match op(&mut fs) {
                    Ok(()) => ok += 1,
                    Err(_) => err += 1,
                }
            }
        }
        result.push(format!("{kind}: {ok} ok, {err} errors"));
    }
    eprintln!("{result:?}");
}
