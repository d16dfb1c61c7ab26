//! Writing to the real images of ext4-view's test suite (made by mke2fs and
//! the kernel: 1 KiB blocks, ext2, ext3, and ext4 with 64bit,
//! metadata_csum_seed, orphan_file, encrypted directories and large
//! directories): every file replaced, one file and one directory created in
//! every directory, every third file removed; then e2fsck -fn is clean and
//! debugfs reads back every byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;
use vmie_guestfs::{FileType, FsError, GuestFs, GuestPath, NewAttrs};

fn unpack(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata/ext4-view-rs/test_data")
        .join(name);
    let f = std::fs::File::open(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f)).unwrap();
    let mut out = Vec::new();
    dec.read_to_end(&mut out).unwrap();
    let dst = dir.join(name.trim_end_matches(".zst"));
    std::fs::write(&dst, out).unwrap();
    dst
}

fn walk(fs: &dyn GuestFs, dir: &GuestPath, dirs: &mut Vec<GuestPath>, files: &mut Vec<GuestPath>) {
    let entries = match fs.read_dir(dir) {
        Ok(e) => e,
        Err(FsError::Unsupported { why, .. }) if why.contains("encrypted") => return,
        Err(e) => panic!("{dir}: {e}"),
    };
    dirs.push(dir.clone());
    for e in entries {
        let p = dir.join(&e.name);
        match fs.symlink_metadata(&p).unwrap().file_type {
            FileType::Directory => walk(fs, &p, dirs, files),
            FileType::Regular => files.push(p),
            _ => {}
        }
    }
}

fn exercise(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = unpack(name, tmp.path());
    fsck(&img);
    let mut s = open(&img);
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    walk(&s.fs, &GuestPath::root(), &mut dirs, &mut files);
    let mut expect: Vec<(GuestPath, Option<Vec<u8>>)> = Vec::new();
    let mut refused = 0;
    let mut full = 0;
    for (i, d) in dirs.iter().enumerate() {
        let p = d.join(format!("vmie-new-{i}").as_bytes());
        match s.fs.create_file(&p, b"created\n", &NewAttrs::default()) {
            Ok(()) => expect.push((p, Some(b"created\n".to_vec()))),
            Err(FsError::Unsupported { .. }) => refused += 1,
            Err(FsError::NoSpace { .. }) => full += 1,
            Err(e) => panic!("{p}: {e}"),
        }
        let _ = s.fs.mkdir(
            &d.join(format!("vmie-dir-{i}").as_bytes()),
            &NewAttrs::default(),
        );
    }
    for f in files.iter().step_by(3) {
        match s.fs.remove(f) {
            Ok(()) => {
                expect.push((f.clone(), None));
            }
            Err(FsError::Unsupported { .. }) => refused += 1,
            Err(e) => panic!("{f}: {e}"),
        }
    }
    for (i, f) in files.iter().enumerate() {
        if i % 3 == 0 {
            continue;
        }
        let data: Vec<u8> = (0..[0usize, 17, 1500, 9000, 70_000][i % 5])
            .map(|j| (j * 31 + i) as u8)
            .collect();
        match s.fs.replace_file(f, &data) {
            Ok(()) => expect.push((f.clone(), Some(data))),
            Err(FsError::Unsupported { .. }) => refused += 1,
            Err(FsError::NoSpace { .. }) => full += 1,
            Err(e) => panic!("{f}: {e}"),
        }
    }
    eprintln!(
        "{name}: {} files, {} dirs, {refused} refusals, {full} out of space",
        files.len(),
        dirs.len()
    );
    s.fs.verify_paths(&expect).unwrap();
    s.commit();
    fsck(&img);
    for (p, want) in &expect {
        match want {
            Some(d) => assert_eq!(&cat(&img, &p.to_string()), d, "{p}"),
            None => assert!(!exists(&img, &p.to_string()), "{p}"),
        }
    }
}

#[test]
fn ext4_realdata() {
    exercise("test_disk1.bin.zst");
}

#[test]
fn ext2_realdata() {
    exercise("test_disk_ext2.bin.zst");
}

#[test]
fn ext3_realdata() {
    exercise("test_disk_ext3.bin.zst");
}

/// The kernel-made ext4 image: encrypted directories are refused; fast and
/// slow symlinks and a sparse file are removed or replaced cleanly.
#[test]
fn ext4_realdata_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let img = unpack("test_disk1.bin.zst", tmp.path());
    let mut s = open(&img);
    for r in [
        s.fs.create_file(&gp("/encrypted_dir/x"), b"x", &NewAttrs::default()),
        s.fs.remove(&gp("/encrypted_dir")),
    ] {
        assert!(matches!(r, Err(FsError::Unsupported { .. })), "{r:?}");
    }
    assert!(s.overlay.changes().unwrap().is_empty());
    for l in ["/sym_simple", "/sym_59", "/sym_60", "/sym_long"] {
        s.fs.remove(&gp(l)).unwrap();
    }
    s.fs.replace_file(&gp("/holes"), b"no more holes\n")
        .unwrap();
    s.fs.symlink(&gp("/new_long_link"), &[b'a'; 300], &NewAttrs::default())
        .unwrap();
    s.fs.rename(&gp("/dir1"), &gp("/big_dir/dir1-moved"))
        .unwrap();
    s.fs.remove(&gp("/empty_dir")).unwrap();
    s.commit();
    fsck(&img);
    assert_eq!(cat(&img, "/holes"), b"no more holes\n");
    assert!(!exists(&img, "/sym_long"));
    assert!(!exists(&img, "/empty_dir"));
    assert!(exists(&img, "/big_dir/dir1-moved"));
}
