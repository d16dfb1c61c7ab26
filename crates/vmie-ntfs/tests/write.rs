//! Writes through `NtfsFs` (replace, create, remove) on images made by the
//! real mkntfs and populated through the real ntfs-3g driver, each result
//! read back through our reader (the `ntfs` crate path) and through
//! ntfs-3g: `ntfsfix -n` clean, `ntfsinfo -m` works, `ntfscat` gives the
//! bytes, `ntfsls -l` lists the names with the sizes of the index entries,
//! and the free clusters equal what the files' runlists (as ntfsinfo reads
//! them) leave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use vmie_disk::{Device, FileDevice};
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs, Timestamp};
use vmie_ntfs::NtfsFs;

pub const CLOCK: Timestamp = Timestamp {
    secs: 1_700_000_000,
    nanos: 123_456_700,
};

pub fn open_rw(path: &Path) -> NtfsFs {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open_rw(path).unwrap());
    NtfsFs::open(dev, path.display().to_string())
        .unwrap()
        .with_clock(CLOCK)
}

/// The model: every regular file the test made, by path.
#[derive(Debug)]
pub struct Model {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Free clusters with no user file.
    pub base_free: u64,
    pub cluster: u64,
}

impl Model {
    /// After populating: the base is what is free plus what the files hold.
    pub fn new(img: &Path, files: BTreeMap<String, Vec<u8>>) -> Self {
        let (cluster, _, free) = ntfsinfo_space(img);
        let held: u64 = files
            .keys()
            .map(|p| ntfsinfo_data_clusters(img, p, cluster))
            .sum();
        Self {
            files,
            base_free: free + held,
            cluster,
        }
    }

    pub fn verify(&self, img: &Path) {
        ntfsfix_clean(img);
        let (_, _, free) = ntfsinfo_space(img);
        let fs = open(img);
        let mut held = 0;
        let mut dirs: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (p, data) in &self.files {
            assert_eq!(&fs.read(p).unwrap(), data, "{p} through our reader");
            assert_eq!(&ntfscat(img, p), data, "{p} through ntfscat");
            held += ntfsinfo_data_clusters(img, p, self.cluster);
            let gp = GuestPath::from(p.as_str());
            dirs.entry(gp.parent().to_string()).or_default().insert(
                String::from_utf8(gp.file_name().unwrap().to_vec()).unwrap(),
                data.len() as u64,
            );
        }
        assert_eq!(
            free + held,
            self.base_free,
            "free clusters vs the files' runlists"
        );
        for (dir, want) in dirs {
            let listed = ntfsls_sizes(img, &dir);
            for (name, size) in &want {
                assert_eq!(
                    listed.get(name),
                    Some(size),
                    "ntfsls -l {dir}: {name}: {listed:?}"
                );
            }
        }
    }
}

fn random(seed: u64, n: usize) -> Vec<u8> {
    XorShift::new(seed).bytes(n)
}

const HIVE: &str = "/Windows/System32/config/SYSTEM";

fn hive_image(mib: u64, sector: u32, cluster: u32) -> (Img, Model) {
    let img = mkntfs_geom(mib, sector, cluster);
    let hive = random(1, 600);
    let other = random(2, 70_000);
    img.populate(
        &["Windows/System32/config"],
        &[(HIVE, &hive), ("/Windows/System32/config/SOFTWARE", &other)],
    );
    let mut files = BTreeMap::new();
    files.insert(HIVE.to_string(), hive);
    files.insert("/Windows/System32/config/SOFTWARE".to_string(), other);
    let m = Model::new(&img.path, files);
    (img, m)
}

fn replace(img: &Img, m: &mut Model, path: &str, data: Vec<u8>) {
    let mut fs = open_rw(&img.path);
    let p = resolve_path(&fs, path);
    fs.replace_file(&p, &data).unwrap();
    let (_, meta) = fs.metadata(path).unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(
        meta.mtime,
        Timestamp {
            secs: CLOCK.secs,
            nanos: CLOCK.nanos
        }
    );
    assert_eq!(meta.ctime, meta.mtime);
    m.files.insert(path.to_string(), data);
    m.verify(&img.path);
}

fn resolve_path(fs: &NtfsFs, path: &str) -> GuestPath {
    vmie_guestfs::resolve(fs, path.as_bytes(), true).unwrap()
}

fn replace_cycle(sector: u32, cluster: u32) {
    let (img, mut m) = hive_image(96, sector, cluster);
    m.verify(&img.path);
    // Resident → non-resident, like a hive growing by many hbins.
    replace(&img, &mut m, HIVE, random(3, 20 << 20));
    // Grow in place, then shrink, then back to resident, then to nothing.
    replace(&img, &mut m, HIVE, random(4, (20 << 20) + 12_345));
    replace(&img, &mut m, HIVE, random(5, 1 << 20));
    replace(&img, &mut m, HIVE, random(6, 300));
    replace(&img, &mut m, HIVE, Vec::new());
    replace(&img, &mut m, HIVE, random(7, 5000));
    replace(
        &img,
        &mut m,
        "/Windows/System32/config/SOFTWARE",
        random(8, 3 << 20),
    );
}

#[test]
fn replace_clusters_4096() {
    replace_cycle(512, 4096);
}

#[test]
fn replace_clusters_512() {
    replace_cycle(512, 512);
}

#[test]
fn replace_clusters_65536() {
    replace_cycle(512, 65536);
}

#[test]
fn replace_sectors_4096() {
    replace_cycle(4096, 4096);
}

#[test]
fn create_and_remove() {
    for cluster in [512u32, 4096, 65536] {
        let (img, mut m) = hive_image(64, 512, cluster);
        let cases: [(&str, usize); 5] = [
            ("/Windows/System32/config/SYSTEM.new", 100),
            ("/Windows/System32/config/BIG.BIN", 3 << 20),
            ("/Windows/System32/config/empty", 0),
            ("/fstab-like file.txt", 2000),
            ("/A.TXT", 10),
        ];
        for (i, (path, n)) in cases.iter().enumerate() {
            let data = random(100 + i as u64, *n);
            let mut fs = open_rw(&img.path);
            let p = resolve_path(&fs, path);
            fs.create_file(&p, &data, &NewAttrs::default()).unwrap();
            assert!(matches!(
                fs.create_file(&p, &data, &NewAttrs::default()),
                Err(FsError::Exists { .. })
            ));
            m.files.insert(path.to_string(), data);
            m.verify(&img.path);
        }
        for path in ["/Windows/System32/config/BIG.BIN", "/A.TXT", HIVE] {
            let mut fs = open_rw(&img.path);
            let p = resolve_path(&fs, path);
            fs.remove(&p).unwrap();
            assert!(matches!(fs.metadata(path), Err(FsError::NotFound { .. })));
            m.files.remove(path);
            m.verify(&img.path);
            assert!(!ntfsls(&img.path, &p.parent().to_string())
                .contains(&String::from_utf8(p.file_name().unwrap().to_vec()).unwrap()));
        }
    }
}
