//! Shared helpers of the write tests: images made by the real mke2fs,
//! written through an Overlay, checked by e2fsck and debugfs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::{Device, FileDevice, Overlay};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::GuestPath;

pub struct Img {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Make a sparse image of `mib` MiB with `mkfs -t TYPE ARGS`, populated from
/// `tree` (if given).
pub fn mkfs(kind: &str, args: &[&str], mib: u64, tree: Option<&Path>) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    let mut cmd = Command::new("mke2fs");
    cmd.args([
        "-q",
        "-F",
        "-t",
        kind,
        "-E",
        "hash_seed=8b1e2a4c-1f8a-4f6e-9a55-0d2c7e3f9b10",
    ]);
    cmd.args(["-U", "3f1c9c0e-5d7b-4a2e-8c1f-6a9b2d4e7f01"]);
    cmd.args(args);
    if let Some(t) = tree {
        cmd.arg("-d").arg(t);
    }
    cmd.arg(&path);
    let out = cmd.output().expect("mke2fs (e2fsprogs) must be installed");
    assert!(
        out.status.success(),
        "mke2fs {kind} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if tree.is_some() {
        // mke2fs -d writes linear directories; e2fsck -D indexes the large
        // ones (htree), as a kernel would have grown them.
        let out = Command::new("e2fsck")
            .arg("-fyD")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0..=1)),
            "e2fsck -fyD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Img { dir, path }
}

/// Whether `dir` is hash-indexed (htree), per debugfs.
pub fn is_htree(img: &Path, dir: &str) -> bool {
    let out = Command::new("debugfs")
        .args(["-R", &format!("htree \"{dir}\"")])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("Root node dump")
}

/// A tree: /etc/fstab, /etc/hosts, /big with `n` entries, a few larger files.
pub fn tree(n: usize) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("fstab"), b"UUID=1234 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(etc.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::create_dir(t.path().join("boot")).unwrap();
    std::fs::write(t.path().join("boot/grub.cfg"), vec![b'g'; 5000]).unwrap();
    let big = t.path().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..n {
        std::fs::write(
            big.join(format!("entry-{i:05}-with-a-longer-name")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(t.path().join("blob"), data).unwrap();
    std::os::unix::fs::symlink("etc/fstab", t.path().join("link")).unwrap();
    t
}

pub struct Session {
    pub overlay: Arc<Overlay>,
    pub fs: Ext4Fs,
    pub base: Arc<FileDevice>,
}

pub fn open(img: &Path) -> Session {
    let base = Arc::new(FileDevice::open_rw(img).unwrap());
    let overlay = Arc::new(Overlay::new(base.clone() as Arc<dyn Device>));
    let fs = Ext4Fs::open(overlay.clone() as Arc<dyn Device>, "test").unwrap();
    Session { overlay, fs, base }
}

impl Session {
    /// Write the overlay's changes to the image.
    pub fn commit(&self) {
        for (off, data) in self.overlay.changes().unwrap() {
            self.base.write_at(off, &data).unwrap();
        }
        self.overlay.discard().unwrap();
    }
}

pub fn fsck(img: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: exit {:?}\n{}\n{}",
        img.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn cat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat \"{path}\"")])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Whether debugfs finds `path`.
pub fn exists(img: &Path, path: &str) -> bool {
    let out = Command::new("debugfs")
        .args(["-R", &format!("stat \"{path}\"")])
        .arg(img)
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stderr).contains("File not found")
}

pub fn gp(s: &str) -> GuestPath {
    GuestPath::lexical(s.as_bytes())
}
