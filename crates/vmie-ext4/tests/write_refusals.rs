//! What the writer refuses, and that a refusal writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice, Overlay};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{FsError, GuestFs};

fn expect_refusal(s: &mut Session, needle: &str) {
    let err = s.fs.replace_file(&gp("/etc/fstab"), b"x\n").unwrap_err();
    match &err {
        FsError::Unsupported { why, .. } => assert!(why.contains(needle), "{err}"),
        other => panic!("expected a refusal naming {needle}, got {other}"),
    }
    assert!(
        s.overlay.changes().unwrap().is_empty(),
        "a refusal wrote something"
    );
    assert!(s.fs.check_writable().is_err());
}

fn small_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/fstab"), b"old\n").unwrap();
    t
}

fn debugfs_w(img: &Path, req: &str) {
    let out = Command::new("debugfs")
        .args(["-w", "-R", req])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn needs_recovery_is_refused() {
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/realdata/ext4-view-rs/test_data/test_disk_4k_block_journal.bin.zst"
    );
    let f = std::fs::File::open(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let mut dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f)).unwrap();
    let mut data = Vec::new();
    dec.read_to_end(&mut data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.img");
    std::fs::write(&path, &data).unwrap();
    let base = Arc::new(FileDevice::open_rw(&path).unwrap());
    let overlay = Arc::new(Overlay::new(base as Arc<dyn Device>));
    let mut fs = Ext4Fs::open(overlay.clone() as Arc<dyn Device>, "j").unwrap();
    let err = fs.replace_file(&gp("/small_file"), b"x").unwrap_err();
    match &err {
        FsError::Unsupported { why, .. } => assert!(why.contains("needs recovery"), "{err}"),
        other => panic!("{other}"),
    }
    assert!(overlay.changes().unwrap().is_empty());
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn error_state_and_unclean_are_refused() {
    let t = small_tree();
    for (state, needle) in [("3", "errors"), ("0", "not cleanly")] {
        let img = mkfs("ext4", &[], 16, Some(t.path()));
        debugfs_w(&img.path, &format!("ssv state {state}"));
        let mut s = open(&img.path);
        expect_refusal(&mut s, needle);
    }
}

#[test]
fn unknown_and_unsupported_features_are_refused() {
    let t = small_tree();
    // quota: refused (usage would go stale). (meta_bg, large_dir and
    // inline_data filesystems are refused by ext4-view at open already.)
    let img = mkfs("ext4", &["-O", "quota"], 32, Some(t.path()));
    let mut s = open(&img.path);
    expect_refusal(&mut s, "quota");
    // An unknown read-only-compatible bit (ext4-view still reads it).
    let img = mkfs("ext4", &[], 16, Some(t.path()));
    debugfs_w(&img.path, "ssv feature_ro_compat 0x40000");
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&img.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if let Ok(mut s) = std::panic::catch_unwind(|| open(&img.path)) {
        expect_refusal(&mut s, "unknown");
    } else {
        panic!("could not open after setting an ro_compat bit: {text}");
    }
    // An unknown incompatible bit: refused at open (ext4-view) or at write.
    let img = mkfs("ext4", &[], 16, Some(t.path()));
    debugfs_w(&img.path, "ssv feature_incompat 0x800000");
    let base = Arc::new(FileDevice::open_rw(&img.path).unwrap());
    let overlay = Arc::new(Overlay::new(base as Arc<dyn Device>));
    match Ext4Fs::open(overlay.clone() as Arc<dyn Device>, "t") {
        Err(FsError::Unsupported { .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(mut fs) => {
            let err = fs.replace_file(&gp("/etc/fstab"), b"x").unwrap_err();
            assert!(matches!(err, FsError::Unsupported { .. }), "{err}");
            assert!(overlay.changes().unwrap().is_empty());
        }
    }
}
