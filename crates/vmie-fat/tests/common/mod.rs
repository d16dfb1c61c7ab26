//! Shared helpers: images made by mkfs.fat and populated by mtools, written
//! through an Overlay, checked by fsck.fat and read back by mtools.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::{Device, FileDevice, Overlay};
use vmie_fat::FatFs;
use vmie_guestfs::Timestamp;

pub struct Img {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// `mkfs.fat -F BITS ARGS -C IMG KB`.
pub fn mkfs(bits: u32, kb: u64, args: &[&str]) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fat.img");
    let out = Command::new("mkfs.fat")
        .args(["-F", &bits.to_string(), "-i", "1234abcd"])
        .args(args)
        .arg("-C")
        .arg(&path)
        .arg(kb.to_string())
        .output()
        .expect("mkfs.fat (dosfstools) must be installed");
    assert!(
        out.status.success(),
        "mkfs.fat -F {bits} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Img { dir, path }
}

fn mtools(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    c.env("MTOOLS_SKIP_CHECK", "1");
    c
}

fn run(mut c: Command, what: &str) -> Vec<u8> {
    let out = c.output().expect("mtools must be installed");
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Img {
    pub fn mmd(&self, path: &str) {
        let mut c = mtools("mmd");
        c.arg("-i").arg(&self.path).arg(format!("::{path}"));
        run(c, &format!("mmd {path}"));
    }

    /// Copy `data` to `path` with mcopy.
    pub fn put(&self, path: &str, data: &[u8]) {
        let src = self.dir.path().join("src.bin");
        std::fs::write(&src, data).unwrap();
        let mut c = mtools("mcopy");
        c.arg("-o")
            .arg("-i")
            .arg(&self.path)
            .arg(&src)
            .arg(format!("::{path}"));
        run(c, &format!("mcopy {path}"));
    }

    /// Copy many host files into guest directory `dir` with one mcopy.
    pub fn put_many(&self, dir: &str, files: &[(String, Vec<u8>)]) {
        let src = self.dir.path().join("many");
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir(&src).unwrap();
        let mut c = mtools("mcopy");
        c.arg("-o").arg("-i").arg(&self.path);
        for (n, d) in files {
            std::fs::write(src.join(n), d).unwrap();
            c.arg(src.join(n));
        }
        c.arg(format!("::{dir}/"));
        run(c, &format!("mcopy into {dir}"));
    }

    pub fn mdel(&self, path: &str) {
        let mut c = mtools("mdel");
        c.arg("-i").arg(&self.path).arg(format!("::{path}"));
        run(c, &format!("mdel {path}"));
    }

    /// The file's contents as mtools reads them.
    pub fn get(&self, path: &str) -> Vec<u8> {
        let mut c = mtools("mcopy");
        c.arg("-n")
            .arg("-i")
            .arg(&self.path)
            .arg(format!("::{path}"))
            .arg("-");
        run(c, &format!("mcopy {path} -"))
    }

    /// Whether mtools finds `path`.
    pub fn exists(&self, path: &str) -> bool {
        let out = mtools("mdir")
            .arg("-b")
            .arg("-i")
            .arg(&self.path)
            .arg(format!("::{path}"))
            .output()
            .unwrap();
        out.status.success()
    }

    /// Names in guest directory `dir` as mdir shows them (directories
    /// with a trailing `/`), sorted.
    pub fn ls(&self, dir: &str) -> Vec<String> {
        let mut c = mtools("mdir");
        c.arg("-b")
            .arg("-i")
            .arg(&self.path)
            .arg(format!("::{dir}"));
        let out = String::from_utf8(run(c, &format!("mdir {dir}"))).unwrap();
        let prefix = if dir == "/" {
            "::/".to_string()
        } else {
            format!("::{dir}/")
        };
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .filter(|n| !n.is_empty())
            .collect();
        v.sort();
        v
    }

    /// Every path under the root as `mdir -/ -b` lists it (directories
    /// with a trailing `/`), sorted.
    pub fn tree(&self) -> Vec<String> {
        let mut c = mtools("mdir");
        c.arg("-/").arg("-b").arg("-i").arg(&self.path).arg("::/");
        let out = String::from_utf8(run(c, "mdir -/")).unwrap();
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("::").map(str::to_string))
            .collect();
        v.sort();
        v
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

/// `fsck.fat -n`: exit 0 and nothing but the version and summary lines.
pub fn fsck(img: &Path) {
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(img)
        .output()
        .expect("fsck.fat (dosfstools) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("fsck.fat ") && !l.contains(" files, "))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "fsck.fat -n {}: exit {:?}\n{text}",
        img.display(),
        out.status.code()
    );
}

pub const NOW: Timestamp = Timestamp {
    secs: 1_767_225_600, // 2026-01-01T00:00:00Z
    nanos: 0,
};

pub struct Session {
    pub overlay: Arc<Overlay>,
    pub fs: FatFs,
    pub base: Arc<FileDevice>,
}

pub fn open(img: &Path) -> Session {
    let base = Arc::new(FileDevice::open_rw(img).unwrap());
    let overlay = Arc::new(Overlay::new(base.clone() as Arc<dyn Device>));
    let fs = FatFs::open(overlay.clone() as Arc<dyn Device>, "test")
        .unwrap()
        .with_clock(NOW);
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

/// Deterministic bytes of `len`, seeded.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn gp(s: &str) -> vmie_guestfs::GuestPath {
    vmie_guestfs::GuestPath::from(s)
}

/// Free bytes as mdir reports them.
pub fn free_bytes(img: &Img) -> u64 {
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&img.path)
        .arg("::/")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().find(|l| l.contains("bytes free")).unwrap();
    line.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A populated volume and what it holds (path -> contents).
pub fn populated(bits: u32, kb: u64, args: &[&str]) -> (Img, BTreeMap<String, Vec<u8>>) {
    let img = mkfs(bits, kb, args);
    let cs = open(&img.path).fs.cluster_size() as usize;
    let mut files = BTreeMap::new();
    for d in [
        "/EFI",
        "/EFI/BOOT",
        "/EFI/Microsoft",
        "/EFI/Microsoft/Boot",
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/b/c/d",
        "/a/b/c/d/e",
        "/a/b/c/d/e/A directory with a long name",
    ] {
        img.mmd(d);
    }
    let put = |files: &mut BTreeMap<String, Vec<u8>>, p: &str, d: Vec<u8>| {
        img.put(p, &d);
        files.insert(p.to_string(), d);
    };
    put(&mut files, "/EFI/BOOT/BOOTX64.EFI", pattern(100_000, 1));
    put(&mut files, "/EFI/Microsoft/Boot/BCD", pattern(28 * 1024, 2));
    put(
        &mut files,
        "/a/b/c/d/e/A directory with a long name/deep file.txt",
        b"deep\n".to_vec(),
    );
    put(&mut files, "/empty.txt", Vec::new());
    put(
        &mut files,
        "/Long File Name With Ünïcödé and more than 26 chars.conf",
        b"unicode\n".to_vec(),
    );
    put(&mut files, "/grub.cfg", b"set timeout=5\n".to_vec());
    put(&mut files, "/MixedCase.Txt", b"mixed\n".to_vec());
    // Fragmentation: small files, the rest filled, every other small file
    // deleted, then a file that can only go into the holes.
    for i in 0..20 {
        put(
            &mut files,
            &format!("/s{i:02}"),
            pattern(3 * cs - 10, 100 + i),
        );
    }
    let free = free_bytes(&img);
    // A few clusters left for directories to grow into.
    img.put("/filler", &vec![0xAA; free as usize - 4 * cs]);
    assert!(img.exists("/filler"));
    for i in (1..20).step_by(2) {
        let p = format!("/s{i:02}");
        img.mdel(&p);
        files.remove(&p);
    }
    put(&mut files, "/fragmented.bin", pattern(30 * cs, 7));
    img.mdel("/filler");
    fsck(&img.path);
    (img, files)
}

/// Every path under the root as the fatfs crate reads the image file
/// (directories with a trailing `/`, long names), each file with its
/// contents; `.`/`..` skipped. A reader independent of ours and of mtools.
pub fn fatfs_tree(img: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    use std::io::Read;
    // Opened read-only: a write attempt by fatfs would fail.
    let file = std::fs::File::open(img).unwrap();
    let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new())
        .unwrap_or_else(|e| panic!("fatfs cannot mount {}: {e}", img.display()));
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = todo.pop() {
        for e in dir.iter() {
            let e = e.unwrap_or_else(|err| panic!("fatfs lists {prefix}/: {err}"));
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let p = format!("{prefix}/{name}");
            if e.is_dir() {
                out.insert(p.clone(), None);
                todo.push((p, e.to_dir()));
            } else {
                let mut d = Vec::new();
                e.to_file()
                    .read_to_end(&mut d)
                    .unwrap_or_else(|err| panic!("fatfs reads {p}: {err}"));
                assert_eq!(d.len() as u64, e.len(), "fatfs: {p} size");
                out.insert(p, Some(d));
            }
        }
    }
    assert!(out.len() < 100_000, "runaway tree");
    out
}
