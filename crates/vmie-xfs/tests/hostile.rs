//! Hostile images: metadata blocks of a real mkfs.xfs image with bytes
//! flipped (half of them re-checksummed, so the structural checks behind
//! the v5 CRCs are reached too), and truncated volumes. The whole tree is
//! walked each time: errors are fine, panics and runaway allocations are
//! not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice, Overlay, Window};
use vmie_guestfs::GuestFsExt;
use vmie_xfs::XfsFs;

fn small_tree() -> BTreeMap<String, Node> {
    let mut t: BTreeMap<String, Node> = tree()
        .into_iter()
        .filter(|(p, _)| !p.starts_with("node/") && !p.starts_with("leaf/") && p != "etc/big")
        .collect();
    // With 1 KiB blocks, 400 entries make a node-form directory.
    for i in 0..400 {
        t.insert(
            format!("node/entry-with-a-longer-name-{i:04}"),
            Node::File {
                data: bytes(i, 100),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        );
    }
    t.insert(
        "etc/frag".into(),
        Node::File {
            data: bytes(77, 300_000),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    );
    t
}

/// CRC offset and structure size of a metadata structure starting at `b`,
/// recognised by its magic.
fn crc_spec(b: &[u8], block: usize, inode: usize) -> Option<(usize, usize)> {
    let m32 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let m16_8 = u16::from_be_bytes([b[8], b[9]]);
    if &b[0..2] == b"IN" && b[4] == 3 {
        return Some((100, inode));
    }
    match m32 {
        0x5844_4233 | 0x5844_4433 | 0x5844_4633 => return Some((4, block)),
        0x424d_4133 => return Some((64, block)),
        0x5853_4c4d | 0x5841_524d => return Some((12, block)),
        0x4142_3342 | 0x4142_3343 | 0x4941_4233 | 0x4649_4233 | 0x524d_4233 | 0x5233_4643 => {
            return Some((52, block))
        }
        _ => {}
    }
    match m16_8 {
        0x3bee | 0x3ebe | 0x3df1 | 0x3dff => Some((12, block)),
        _ => None,
    }
}

fn crc32c(data: &[u8]) -> u32 {
    !vmie_disk::checksum::crc32c_update(!0, data)
}

fn recrc(buf: &mut [u8], off: usize) {
    buf[off..off + 4].fill(0);
    let c = crc32c(buf);
    buf[off..off + 4].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn corrupted_metadata_never_panics() {
    let t = small_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (args, iterations) in [
        (&["-b", "size=1024"][..], 250usize),
        (&["-m", "crc=0", "-b", "size=1024"][..], 100),
    ] {
        let img = mkfs(args, 300, Some(&proto));
        let v5 = !args.contains(&"crc=0");
        let base: Arc<dyn Device> = Arc::new(FileDevice::open(&img.path).unwrap());
        // Find the metadata in the first 16 MiB.
        let mut region = vec![0u8; 16 << 20];
        base.read_at(0, &mut region).unwrap();
        let mut targets = Vec::new();
        for off in (0..region.len()).step_by(512) {
            let b = &region[off..off + 512];
            let is_meta = if v5 {
                crc_spec(&region[off..], 1024, 512).is_some()
            } else {
                &b[0..2] == b"IN"
                    || [0x5844_3242u32, 0x5844_3244, 0x424d_4150]
                        .contains(&u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    || [0xfbeeu16, 0xfebe, 0xd2f1, 0xd2ff]
                        .contains(&u16::from_be_bytes([b[8], b[9]]))
            };
            if is_meta {
                targets.push(off);
            }
        }
        targets.push(0); // the superblock
        assert!(
            targets.len() > 50,
            "found only {} metadata structures",
            targets.len()
        );
        let overlay = Arc::new(Overlay::new(Arc::clone(&base)));
        let dev: Arc<dyn Device> = overlay.clone();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (mut opened, mut walked) = (0, 0);
        for i in 0..iterations {
            overlay.discard().unwrap();
            let at = targets[rng.below(targets.len())];
            let spec = if v5 {
                crc_spec(&region[at..], 1024, 512)
            } else {
                None
            };
            let size = spec.map_or(512, |s| s.1);
            let mut buf = region[at..at + size].to_vec();
            for _ in 0..1 + rng.below(4) {
                // Mostly in the header, where lengths and counts live.
                let pos = if rng.below(2) == 0 {
                    rng.below(size.min(128))
                } else {
                    rng.below(size)
                };
                buf[pos] ^= 1 << rng.below(8);
            }
            if let Some((crc_off, _)) = spec {
                if i % 2 == 0 {
                    recrc(&mut buf, crc_off);
                }
            }
            if at == 0 && i % 2 == 0 && v5 {
                recrc(&mut buf[..512], 224);
            }
            dev.write_at(at as u64, &buf).unwrap();
            if let Ok(fs) = XfsFs::open(Arc::clone(&dev), "hostile") {
                opened += 1;
                walked += walk_all(&fs);
                let _ = fs.check_writable();
            }
        }
        eprintln!("{args:?}: {} targets, {iterations} corruptions, {opened} opened, {walked} entries walked", targets.len());
    }
}

#[test]
fn truncated_volumes_are_refused_or_read_cleanly() {
    let t = small_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let img = mkfs(&["-b", "size=1024"], 300, Some(&proto));
    let base: Arc<dyn Device> = Arc::new(FileDevice::open(&img.path).unwrap());
    for len in [0u64, 100, 512, 4096, 1 << 20, 8 << 20, (300 << 20) - 1024] {
        let w: Arc<dyn Device> = Arc::new(Window::new(Arc::clone(&base), 0, len, "cut").unwrap());
        match XfsFs::open(w, "cut") {
            Ok(_) => panic!("a {len}-byte cut of a 300 MiB XFS opened"),
            Err(e) => eprintln!("{len}: {e}"),
        }
    }
    // The whole volume reads.
    let (_, fs) = open(&img.path);
    assert_eq!(compare(&fs, &t), t.len());
    assert!(fs.list("/node").unwrap().1.len() == 400);
}
