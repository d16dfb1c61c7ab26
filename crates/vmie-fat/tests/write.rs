//! Every write operation on each FAT type, committed to images made by
//! mkfs.fat and mtools, then checked by `fsck.fat -n` and read back by
//! mtools; refusals leave the image byte-identical.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use vmie_disk::Device;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, NewAttrs};

/// Run `op` in a fresh session, commit, fsck.
fn step(img: &Img, op: impl FnOnce(&mut Session)) {
    let mut s = open(&img.path);
    op(&mut s);
    s.commit();
    fsck(&img.path);
}

/// `op` must fail with an error `ok` accepts and leave the image as it was,
/// with nothing in the overlay either.
fn refused(
    img: &Img,
    op: impl FnOnce(&mut Session) -> Result<(), FsError>,
    ok: fn(&FsError) -> bool,
) {
    let before = img.bytes();
    let mut s = open(&img.path);
    let e = op(&mut s).expect_err("the operation must be refused");
    assert!(ok(&e), "unexpected error: {e}");
    assert!(
        s.overlay.changes().unwrap().is_empty(),
        "{e}: the overlay was written"
    );
    s.commit();
    assert!(img.bytes() == before, "{e}: the image changed");
}

fn check_model(img: &Img, files: &BTreeMap<String, Vec<u8>>) {
    for (p, d) in files {
        assert_eq!(&img.get(p), d, "mtools reads {p}");
    }
    let s = open(&img.path);
    for (p, d) in files {
        assert_eq!(&s.fs.read(p).unwrap(), d, "we read {p}");
    }
    let ff = fatfs_tree(&img.path);
    for (p, d) in files {
        assert_eq!(
            ff.get(p),
            Some(&Some(d.clone())),
            "the fatfs crate reads {p}"
        );
    }
}

fn all_ops(bits: u32, kb: u64, args: &[&str]) {
    let (img, mut files) = populated(bits, kb, args);
    let cs = open(&img.path).fs.cluster_size() as usize;
    let attrs = NewAttrs::default();

    // Grow across many clusters, shrink, to zero and back.
    let big = pattern(150 * cs + 17, 11);
    step(&img, |s| {
        s.fs.replace_file(&gp("/EFI/Microsoft/Boot/BCD"), &big)
            .unwrap()
    });
    files.insert("/EFI/Microsoft/Boot/BCD".into(), big);
    let small = pattern(1000, 12);
    step(&img, |s| {
        s.fs.replace_file(&gp("/efi/boot/bootx64.efi"), &small)
            .unwrap()
    });
    files.insert("/EFI/BOOT/BOOTX64.EFI".into(), small);
    step(&img, |s| s.fs.replace_file(&gp("/grub.cfg"), b"").unwrap());
    files.insert("/grub.cfg".into(), Vec::new());
    check_model(&img, &files);
    step(&img, |s| {
        s.fs.replace_file(&gp("/grub.cfg"), &pattern(3 * cs + 1, 13))
            .unwrap()
    });
    files.insert("/grub.cfg".into(), pattern(3 * cs + 1, 13));
    step(&img, |s| {
        s.fs.replace_file(&gp("/empty.txt"), b"now something\n")
            .unwrap()
    });
    files.insert("/empty.txt".into(), b"now something\n".to_vec());
    // Fragmented file rewritten in place.
    step(&img, |s| {
        s.fs.replace_file(&gp("/fragmented.bin"), &pattern(30 * cs, 14))
            .unwrap()
    });
    files.insert("/fragmented.bin".into(), pattern(30 * cs, 14));
    check_model(&img, &files);

    // Create: long name, upper-case 8.3, lower-case 8.3 (NT flags), in a subdirectory.
    step(&img, |s| {
        s.fs.create_file(&gp("/EFI/new file with a long name.txt"), b"long\n", &attrs)
            .unwrap();
        s.fs.create_file(&gp("/NEWFILE.TXT"), &pattern(2 * cs, 15), &attrs)
            .unwrap();
        s.fs.create_file(&gp("/lower.cfg"), b"", &attrs).unwrap();
        s.fs.create_file(&gp("/EFI/BOOT/grubx64.efi"), &pattern(5 * cs, 16), &attrs)
            .unwrap();
    });
    files.insert(
        "/EFI/new file with a long name.txt".into(),
        b"long\n".to_vec(),
    );
    files.insert("/NEWFILE.TXT".into(), pattern(2 * cs, 15));
    files.insert("/lower.cfg".into(), Vec::new());
    files.insert("/EFI/BOOT/grubx64.efi".into(), pattern(5 * cs, 16));
    let root = img.ls("/");
    for n in ["lower.cfg", "NEWFILE.TXT", "grub.cfg"] {
        assert!(root.contains(&n.to_string()), "{n} in {root:?}");
    }
    assert!(img
        .ls("/EFI")
        .contains(&"new file with a long name.txt".to_string()));
    assert!(img.ls("/EFI/BOOT").contains(&"grubx64.efi".to_string()));
    refused(
        &img,
        |s| s.fs.create_file(&gp("/NewFile.txt"), b"x", &attrs),
        |e| matches!(e, FsError::Exists { .. }),
    );
    refused(
        &img,
        |s| s.fs.create_file(&gp("/bad:name"), b"x", &attrs),
        |e| matches!(e, FsError::Unsupported { .. }),
    );
    refused(
        &img,
        |s| s.fs.create_file(&gp("/nodir/x"), b"x", &attrs),
        |e| matches!(e, FsError::NotFound { .. }),
    );

    // mkdir with `.` and `..`, nested, a file inside.
    step(&img, |s| {
        s.fs.mkdir(&gp("/EFI/Linux Boot"), &attrs).unwrap();
        s.fs.mkdir(&gp("/EFI/Linux Boot/sub"), &attrs).unwrap();
        s.fs.mkdir(&gp("/TOPDIR"), &attrs).unwrap();
    });
    step(&img, |s| {
        s.fs.create_file(&gp("/EFI/Linux Boot/sub/grub.cfg"), b"menuentry\n", &attrs)
            .unwrap()
    });
    files.insert(
        "/EFI/Linux Boot/sub/grub.cfg".into(),
        b"menuentry\n".to_vec(),
    );
    assert!(img.ls("/EFI").contains(&"Linux Boot/".to_string()));
    refused(
        &img,
        |s| s.fs.mkdir(&gp("/efi/linux boot"), &attrs),
        |e| matches!(e, FsError::Exists { .. }),
    );

    // Rename within a directory, case only, across directories replacing a file.
    step(&img, |s| {
        s.fs.rename(&gp("/MixedCase.Txt"), &gp("/Renamed Mixed.txt"))
            .unwrap()
    });
    let d = files.remove("/MixedCase.Txt").unwrap();
    files.insert("/Renamed Mixed.txt".into(), d);
    assert!(!img.exists("/MixedCase.Txt"));
    step(&img, |s| {
        s.fs.rename(&gp("/empty.txt"), &gp("/EMPTY.TXT")).unwrap()
    });
    let d = files.remove("/empty.txt").unwrap();
    files.insert("/EMPTY.TXT".into(), d);
    assert!(img.ls("/").contains(&"EMPTY.TXT".to_string()));
    step(&img, |s| {
        s.fs.rename(&gp("/grub.cfg"), &gp("/EFI/BOOT/BOOTX64.EFI"))
            .unwrap()
    });
    let d = files.remove("/grub.cfg").unwrap();
    files.insert("/EFI/BOOT/BOOTX64.EFI".into(), d);
    assert!(!img.exists("/grub.cfg"));
    // A directory moved across directories: `..` follows.
    step(&img, |s| {
        s.fs.rename(&gp("/a/b/c"), &gp("/EFI/c moved")).unwrap()
    });
    let deep = "/a/b/c/d/e/A directory with a long name/deep file.txt";
    let d = files.remove(deep).unwrap();
    let moved = "/EFI/c moved/d/e/A directory with a long name/deep file.txt";
    files.insert(moved.into(), d);
    step(&img, |s| {
        s.fs.rename(&gp("/EFI/c moved/d"), &gp("/d at root"))
            .unwrap()
    });
    let d = files.remove(moved).unwrap();
    files.insert(
        "/d at root/e/A directory with a long name/deep file.txt".into(),
        d,
    );
    check_model(&img, &files);
    refused(
        &img,
        |s| s.fs.rename(&gp("/NEWFILE.TXT"), &gp("/TOPDIR")),
        |e| matches!(e, FsError::IsADirectory { .. }),
    );
    refused(
        &img,
        |s| s.fs.rename(&gp("/TOPDIR"), &gp("/EFI/Linux Boot")),
        |e| matches!(e, FsError::IsADirectory { .. }),
    );
    refused(
        &img,
        |s| s.fs.rename(&gp("/EFI"), &gp("/EFI/Linux Boot/sub/efi2")),
        |e| matches!(e, FsError::Unsupported { .. }),
    );
    refused(
        &img,
        |s| s.fs.rename(&gp("/nothing"), &gp("/x")),
        |e| matches!(e, FsError::NotFound { .. }),
    );

    // Remove a file, an empty directory; a full one is refused.
    step(&img, |s| {
        s.fs.remove(&gp("/NEWFILE.TXT")).unwrap();
        s.fs.remove(&gp("/TOPDIR")).unwrap();
        s.fs.remove(&gp("/a/b")).unwrap();
    });
    files.remove("/NEWFILE.TXT");
    assert!(!img.exists("/NEWFILE.TXT") && !img.exists("/TOPDIR") && !img.exists("/a/b"));
    refused(
        &img,
        |s| s.fs.remove(&gp("/EFI")),
        |e| matches!(e, FsError::NotEmpty { .. }),
    );
    check_model(&img, &files);

    // No space: nothing written.
    let free = free_bytes(&img) as usize;
    refused(
        &img,
        |s| s.fs.create_file(&gp("/huge"), &vec![1; free + cs], &attrs),
        |e| matches!(e, FsError::NoSpace { .. }),
    );
    refused(
        &img,
        |s| {
            s.fs.replace_file(&gp("/fragmented.bin"), &vec![1; free + 31 * cs])
        },
        |e| matches!(e, FsError::NoSpace { .. }),
    );
    // Exactly full works (on the small volumes: the 4 KiB-sector one
    // would need 260 MiB in memory).
    if free < 64 << 20 {
        step(&img, |s| {
            s.fs.replace_file(&gp("/fragmented.bin"), &vec![3; free + 30 * cs])
                .unwrap()
        });
        files.insert("/fragmented.bin".into(), vec![3; free + 30 * cs]);
    }
    check_model(&img, &files);
}

#[test]
fn ops_fat12() {
    all_ops(12, 4096, &[]);
}

#[test]
fn ops_fat16() {
    all_ops(16, 20_000, &["-n", "EFISYSTEM"]);
}

#[test]
fn ops_fat32() {
    all_ops(32, 40_000, &[]);
}

#[test]
fn ops_fat32_4k_sectors() {
    all_ops(32, 270_000, &["-S", "4096", "-s", "1"]);
}

#[test]
fn fat32_root_grows() {
    let img = mkfs(32, 40_000, &[]);
    let attrs = NewAttrs::default();
    let before = open(&img.path);
    assert_eq!(before.fs.cluster_size(), 512);
    drop(before);
    // 16 entries per cluster: 60 files of 3 entries each span many clusters.
    let names: Vec<String> = (0..60)
        .map(|i| format!("Root file number {i:03}.txt"))
        .collect();
    step(&img, |s| {
        for n in &names {
            s.fs.create_file(&gp(&format!("/{n}")), n.as_bytes(), &attrs)
                .unwrap();
        }
    });
    let mut want = names.clone();
    want.sort();
    assert_eq!(img.ls("/"), want);
    for n in &names {
        assert_eq!(img.get(&format!("/{n}")), n.as_bytes());
    }
}

#[test]
fn fat16_root_full_refused() {
    let img = mkfs(16, 20_000, &["-r", "16"]);
    let b = img.bytes();
    // mkfs.fat rounds the root directory up (to 64 entries here).
    let n = u16::from_le_bytes([b[17], b[18]]) as usize;
    assert!((16..=512).contains(&n));
    let attrs = NewAttrs::default();
    step(&img, |s| {
        for i in 0..n {
            s.fs.create_file(&gp(&format!("/F{i}")), b"x", &attrs)
                .unwrap();
        }
    });
    assert_eq!(img.ls("/").len(), n);
    refused(
        &img,
        |s| s.fs.create_file(&gp("/one more"), b"x", &attrs),
        |e| matches!(e, FsError::NoSpace { what, .. } if what.contains("root directory")),
    );
    // A freed slot is reused.
    step(&img, |s| {
        s.fs.remove(&gp("/F3")).unwrap();
        s.fs.create_file(&gp("/G"), b"g", &attrs).unwrap();
    });
    assert_eq!(img.get("/G"), b"g");
}

#[test]
fn big_directory() {
    let img = mkfs(32, 40_000, &[]);
    img.mmd("/big");
    let files: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| {
            (
                format!("entry-{i:04}-with-a-longer-name"),
                format!("{i}\n").into_bytes(),
            )
        })
        .collect();
    img.put_many("/big", &files);
    assert_eq!(img.ls("/big").len(), 600);
    let attrs = NewAttrs::default();
    step(&img, |s| {
        for i in (0..600).step_by(7) {
            s.fs.remove(&gp(&format!("/big/entry-{i:04}-with-a-longer-name")))
                .unwrap();
        }
    });
    step(&img, |s| {
        for i in 0..120 {
            s.fs.create_file(
                &gp(&format!("/big/new entry {i}")),
                format!("n{i}").as_bytes(),
                &attrs,
            )
            .unwrap();
        }
        s.fs.rename(
            &gp("/big/entry-0001-with-a-longer-name"),
            &gp("/big/entry-0002-with-a-longer-name"),
        )
        .unwrap();
    });
    let mut want: Vec<String> = (0..600)
        .filter(|i| i % 7 != 0 && *i != 1)
        .map(|i| format!("entry-{i:04}-with-a-longer-name"))
        .chain((0..120).map(|i| format!("new entry {i}")))
        .collect();
    want.sort();
    assert_eq!(img.ls("/big"), want);
    assert_eq!(img.get("/big/entry-0002-with-a-longer-name"), b"1\n");
    assert_eq!(img.get("/big/new entry 77"), b"n77");
    let s = open(&img.path);
    assert_eq!(s.fs.read_dir(&gp("/big")).unwrap().len(), want.len());
}

/// Patch FAT[1] (in every copy) or the boot-sector state byte: writes
/// are refused, nothing written; reads still work.
#[test]
fn dirty_volumes_refused() {
    for (bits, kb) in [(16u32, 20_000u64), (32, 40_000)] {
        for what in ["clean bit", "hard error bit", "boot state"] {
            let img = mkfs(bits, kb, &[]);
            img.put("/f.txt", b"data");
            let mut b = img.bytes();
            let bps = u16::from_le_bytes([b[11], b[12]]) as usize;
            let reserved = u16::from_le_bytes([b[14], b[15]]) as usize;
            let nfats = b[16] as usize;
            let fatsz = if bits == 32 {
                u32::from_le_bytes([b[36], b[37], b[38], b[39]]) as usize
            } else {
                u16::from_le_bytes([b[22], b[23]]) as usize
            };
            match what {
                "boot state" => b[if bits == 32 { 65 } else { 37 }] |= 1,
                _ => {
                    for k in 0..nfats {
                        let fat = (reserved + k * fatsz) * bps;
                        let (byte, bit) = match (bits, what) {
                            (16, "clean bit") => (fat + 3, 0x80),
                            (16, _) => (fat + 3, 0x40),
                            (_, "clean bit") => (fat + 7, 0x08),
                            _ => (fat + 7, 0x04),
                        };
                        b[byte] &= !bit;
                    }
                }
            }
            std::fs::write(&img.path, &b).unwrap();
            refused(
                &img,
                |s| s.fs.replace_file(&gp("/f.txt"), b"new"),
                |e| matches!(e, FsError::Unsupported { why, .. } if why.contains("dirty") || why.contains("error")),
            );
            refused(
                &img,
                |s| s.fs.create_file(&gp("/g"), b"", &NewAttrs::default()),
                |e| matches!(e, FsError::Unsupported { .. }),
            );
            assert_eq!(open(&img.path).fs.read("/f.txt").unwrap(), b"data");
        }
    }
}

/// FAT copies that differ where the operation reads are refused.
#[test]
fn fat_copies_disagree() {
    let img = mkfs(16, 20_000, &[]);
    img.put("/f.txt", &pattern(5000, 1));
    let mut b = img.bytes();
    let bps = u16::from_le_bytes([b[11], b[12]]) as usize;
    let reserved = u16::from_le_bytes([b[14], b[15]]) as usize;
    let fatsz = u16::from_le_bytes([b[22], b[23]]) as usize;
    // Second copy: cluster 3's entry made free.
    let second = (reserved + fatsz) * bps;
    b[second + 6] = 0;
    b[second + 7] = 0;
    std::fs::write(&img.path, &b).unwrap();
    refused(
        &img,
        |s| s.fs.replace_file(&gp("/f.txt"), b"x"),
        |e| matches!(e, FsError::Corrupt { place, .. } if place.contains("FAT copy 2")),
    );
}

/// The numbers asked for: replacing a 1 MiB file on a 512 MiB FAT32 volume.
#[test]
fn measure_replace_1mib_on_512mib_fat32() {
    let img = mkfs(32, 512 * 1024, &[]);
    img.put("/EFI_BCD.bin", &pattern(1 << 20, 1));
    let data = pattern(1 << 20, 2);
    let base = std::sync::Arc::new(vmie_disk::FileDevice::open_rw(&img.path).unwrap());
    let overlay = std::sync::Arc::new(vmie_disk::Overlay::new(base.clone()));
    let t = std::time::Instant::now();
    let mut fs = vmie_fat::FatFs::open(overlay.clone(), "bench")
        .unwrap()
        .with_clock(NOW);
    fs.replace_file(&gp("/EFI_BCD.bin"), &data).unwrap();
    let el = t.elapsed();
    let (rb, rc) = base.read_stats();
    let written = overlay.pending_bytes();
    println!(
        "replace 1 MiB on 512 MiB FAT32 ({} B clusters): {:.2} ms, read {rb} bytes in {rc} calls, wrote {written} bytes to the overlay",
        fs.cluster_size(),
        el.as_secs_f64() * 1000.0
    );
    for (off, d) in overlay.changes().unwrap() {
        println!("  changed {} bytes at {off}", d.len());
        base.write_at(off, &d).unwrap();
    }
    fsck(&img.path);
    assert_eq!(img.get("/EFI_BCD.bin"), data);
}

/// FAT12 entries are 1.5 bytes: with ~3900 one-sector clusters the FAT is
/// over 4 KiB, so entries straddle the writer's 4 KiB FAT chunks (cluster
/// 2730's entry is bytes 4095 and 4096).
#[test]
fn fat12_entries_across_fat_chunks() {
    let img = mkfs(12, 2000, &["-s", "1"]);
    let s = open(&img.path);
    assert_eq!(s.fs.cluster_size(), 512);
    assert!(s.fs.cluster_count() > 2800, "{}", s.fs.cluster_count());
    drop(s);
    img.put("/first.bin", &pattern(100 * 512, 1));
    let big = pattern(2900 * 512 - 3, 2);
    step(&img, |s| {
        s.fs.create_file(&gp("/big file.bin"), &big, &NewAttrs::default())
            .unwrap()
    });
    assert_eq!(img.get("/big file.bin"), big);
    step(&img, |s| s.fs.remove(&gp("/first.bin")).unwrap());
    let again = pattern(2950 * 512, 3);
    step(&img, |s| {
        s.fs.replace_file(&gp("/big file.bin"), &again).unwrap()
    });
    assert_eq!(img.get("/big file.bin"), again);
    assert_eq!(open(&img.path).fs.read("/BIGFIL~1.BIN").unwrap(), again);
}
