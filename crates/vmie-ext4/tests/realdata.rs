//! Reading the ext2/3/4 images of ext4-view's own test suite (made by mke2fs,
//! one with a journal that needs recovery), and comparing every file with what
//! debugfs, e2fsprogs' independent reader, returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::{Device, FileDevice};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt, GuestPath};

fn realdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata/ext4-view-rs/test_data")
        .join(name)
}

fn unpack(name: &str, dir: &Path) -> PathBuf {
    let src = realdata(name);
    let f = std::fs::File::open(&src)
        .unwrap_or_else(|e| panic!("{}: {e} (is ../shared beside the checkout?)", src.display()));
    let mut dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f)).unwrap();
    let mut out = Vec::new();
    dec.read_to_end(&mut out).unwrap();
    let dst = dir.join(name.trim_end_matches(".zst"));
    std::fs::write(&dst, out).unwrap();
    dst
}

fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat \"{path}\"")])
        .arg(img)
        .output()
        .expect("debugfs (Debian package e2fsprogs) must be installed");
    assert!(out.status.success(), "debugfs failed on {path}");
    out.stdout
}

/// Walk the whole tree; return regular files and symlinks.
fn walk(fs: &Ext4Fs, dir: &GuestPath, files: &mut Vec<GuestPath>, links: &mut Vec<GuestPath>) {
    let entries = match fs.read_dir(dir) {
        Ok(e) => e,
        // fscrypt directories are refused clearly, never read as garbage.
        Err(FsError::Unsupported { why, .. }) if why.contains("encrypted") => return,
        Err(e) => panic!("{dir}: {e}"),
    };
    for e in entries {
        let p = dir.join(&e.name);
        if p.components().first().map(|c| c.as_slice()) == Some(b"lost+found") {
            continue;
        }
        match fs.symlink_metadata(&p).unwrap().file_type {
            FileType::Directory => walk(fs, &p, files, links),
            FileType::Regular => files.push(p),
            FileType::Symlink => links.push(p),
            _ => {}
        }
    }
}

fn check_image(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack(name, dir.path());
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&img).unwrap());
    let fs = Ext4Fs::open(dev, name.to_string()).unwrap();
    let (mut files, mut links) = (Vec::new(), Vec::new());
    walk(&fs, &GuestPath::root(), &mut files, &mut links);
    assert!(!files.is_empty(), "{name}: no files found");
    let mut compared = 0;
    for p in files.iter().take(200) {
        let ours = fs.read_file(p, 256 << 20).unwrap();
        let theirs = debugfs_cat(&img, &p.to_string());
        assert_eq!(ours, theirs, "{name}: {p} differs from debugfs");
        compared += 1;
    }
    for l in &links {
        // Every symlink either resolves inside the guest or fails with a clear error.
        match fs.metadata(&l.to_string()) {
            Ok(_)
            | Err(FsError::NotFound { .. })
            | Err(FsError::SymlinkLoop { .. })
            | Err(FsError::NotADirectory { .. }) => {}
            Err(e) => panic!("{name}: {l}: unexpected {e}"),
        }
    }
    eprintln!(
        "{name}: {compared} files identical to debugfs, {} symlinks resolved",
        links.len()
    );
}

#[test]
fn ext2_image_matches_debugfs() {
    check_image("test_disk_ext2.bin.zst");
}

#[test]
fn ext3_image_matches_debugfs() {
    check_image("test_disk_ext3.bin.zst");
}

#[test]
fn ext4_image_matches_debugfs() {
    check_image("test_disk1.bin.zst");
}

#[test]
fn journal_needing_recovery_is_replayed_in_memory_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack("test_disk_4k_block_journal.bin.zst", dir.path());
    let before = std::fs::read(&img).unwrap();
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&img).unwrap());
    let fs = Ext4Fs::open(dev, "journal image").unwrap();
    let (p, entries) = fs.list("/").unwrap();
    assert!(p.is_root());
    assert!(!entries.is_empty());
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "reading must not write"
    );
}

#[test]
fn corrupted_block_count_is_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack("test_disk_ext2.bin.zst", dir.path());
    let mut bytes = std::fs::read(&img).unwrap();
    // s_blocks_count_lo = 0xFFFFFFFF
    bytes[1024 + 4..1024 + 8].copy_from_slice(&[0xFF; 4]);
    let dev: Arc<dyn Device> = Arc::new(vmie_disk::MemDevice::new("corrupt.img", bytes));
    let err = Ext4Fs::open(dev, "corrupt.img partition 1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("corrupt.img partition 1") && err.contains("do not fit"),
        "{err}"
    );
}
