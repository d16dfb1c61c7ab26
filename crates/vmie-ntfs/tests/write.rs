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

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs, Timestamp};
use vmie_ntfs::NtfsFs;

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

/// dfVFS's Windows-made volume: the syslog in `Windows/System32/config`
/// replaced (grown past resident, shrunk back), a file created beside it.
#[test]
fn windows_volume_replace() {
    let (_dir, raw) = windows_volume_raw();
    let img = Img {
        dir: tempfile::tempdir().unwrap(),
        path: raw,
    };
    let p = "/Windows/System32/config/syslog";
    let old = ntfscat(&img.path, p);
    let mut files = BTreeMap::new();
    files.insert(p.to_string(), old);
    let mut m = Model::new(&img.path, files);
    m.verify(&img.path);
    replace(&img, &mut m, p, random(20, 3 << 20));
    replace(&img, &mut m, p, random(21, 900));
    let mut fs = open_rw(&img.path);
    let np = "/Windows/System32/config/SYSTEM";
    let data = random(22, 200_000);
    fs.create_file(&GuestPath::from(np), &data, &NewAttrs::default())
        .unwrap();
    m.files.insert(np.to_string(), data.clone());
    m.verify(&img.path);
    assert_eq!(fuse_read(&img, np), data);
}

/// A device that counts what goes through it.
#[derive(Debug)]
struct Counting {
    inner: vmie_disk::FileDevice,
    read: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
}

impl vmie_disk::Device for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), vmie_disk::DiskError> {
        self.read
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), vmie_disk::DiskError> {
        self.written
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.write_at(offset, buf)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Bytes read and written, and wall time, of replacing a 600-byte hive
/// with 20 MiB on a 4 GiB volume (printed; no timing assertion).
#[test]
fn measure_replace_20mib_on_4gib() {
    use std::sync::atomic::Ordering::Relaxed;
    // VMIE_NTFS_BENCH_MIB=40960 measures the 40 GiB volume.
    let mib = std::env::var("VMIE_NTFS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let img = mkntfs_geom(mib, 512, 4096);
    let hive = random(30, 600);
    img.populate(&["Windows/System32/config"], &[(HIVE, &hive)]);
    let dev = std::sync::Arc::new(Counting {
        inner: vmie_disk::FileDevice::open_rw(&img.path).unwrap(),
        read: 0.into(),
        written: 0.into(),
    });
    let t0 = std::time::Instant::now();
    let mut fs = NtfsFs::open(dev.clone(), "4g.img")
        .unwrap()
        .with_clock(CLOCK);
    let opened = (t0.elapsed(), dev.read.load(Relaxed));
    let data = random(31, 20 << 20);
    let r0 = dev.read.load(Relaxed);
    let t1 = std::time::Instant::now();
    fs.replace_file(&GuestPath::from(HIVE), &data).unwrap();
    let took = t1.elapsed();
    let (read, written) = (dev.read.load(Relaxed) - r0, dev.written.load(Relaxed));
    println!(
        "open: {:?}, {} bytes read; replace 600 B -> 20 MiB: {took:?}, {read} bytes read, {written} bytes written ({} of metadata)",
        opened.0,
        opened.1,
        written - (20 << 20)
    );
    assert!((20 << 20..(20 << 20) + (1 << 20)).contains(&written));
    let mut files = BTreeMap::new();
    files.insert(HIVE.to_string(), data);
    ntfsfix_clean(&img.path);
    assert_eq!(ntfscat(&img.path, HIVE), files[HIVE]);
}

/// Renames within a directory: to a new name, onto an existing file (which
/// is removed), a change of case; then a move into another directory.
#[test]
fn rename_within_a_directory() {
    for cluster in [512u32, 4096] {
        let (img, mut m) = hive_image(64, 512, cluster);
        let cfg = "/Windows/System32/config";
        let step = |m: &mut Model, from: &str, to: &str| {
            let mut fs = open_rw(&img.path);
            fs.rename(&GuestPath::from(from), &GuestPath::from(to))
                .unwrap();
            let data = m.files.remove(from).unwrap();
            m.files.remove(to);
            m.files.insert(to.to_string(), data);
            m.verify(&img.path);
            let names = ntfsls(&img.path, cfg);
            let want = to.rsplit('/').next().unwrap();
            assert!(names.contains(want), "{names:?}");
            assert!(
                from.eq_ignore_ascii_case(to) || !names.contains(from.rsplit('/').next().unwrap()),
                "{names:?}"
            );
        };
        step(
            &mut m,
            &format!("{cfg}/SYSTEM"),
            &format!("{cfg}/SYSTEM.bak"),
        );
        step(
            &mut m,
            &format!("{cfg}/SYSTEM.bak"),
            &format!("{cfg}/a much longer name for the hive"),
        );
        // Onto an existing file.
        step(
            &mut m,
            &format!("{cfg}/a much longer name for the hive"),
            &format!("{cfg}/SOFTWARE"),
        );
        // Case only.
        step(
            &mut m,
            &format!("{cfg}/SOFTWARE"),
            &format!("{cfg}/Software"),
        );
        // Into another directory.
        let mut fs = open_rw(&img.path);
        fs.rename(
            &GuestPath::from(format!("{cfg}/Software").as_str()),
            &GuestPath::from("/Software"),
        )
        .unwrap();
        drop(fs);
        let data = m.files.remove(&format!("{cfg}/Software")).unwrap();
        m.files.insert("/Software".to_string(), data);
        m.verify(&img.path);
        assert!(!ntfsls(&img.path, cfg).contains("Software"));
        assert!(ntfsls(&img.path, "/").contains("Software"));
    }
}
