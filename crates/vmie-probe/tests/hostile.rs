//! Hostile input: real images with random byte flips (aimed at the bytes
//! the probers actually read), truncations, random devices, and devices
//! whose reads fail. Probing must return `Ok` or `Err`, never panic, and
//! finish quickly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::{realdata, unxz, unzstd};
use proptest::prelude::*;
use vmie_disk::{check_range, Device, DiskError, MemDevice};
use vmie_probe::{probe, ProbeError, ProbeOptions};

/// A read-only device over shared bytes, cut to `len`, with byte XOR masks.
#[derive(Debug)]
struct Patched {
    base: Arc<Vec<u8>>,
    len: u64,
    flips: BTreeMap<u64, u8>,
    fail_from: Option<u64>,
}

impl Device for Patched {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        if let Some(f) = self.fail_from {
            if offset + buf.len() as u64 > f {
                return Err(DiskError::Io {
                    device: self.describe(),
                    op: format!("read at {offset}"),
                    source: std::io::Error::other("injected failure"),
                });
            }
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = self.base.get(at as usize).copied().unwrap_or(0);
        }
        for (&at, &x) in self.flips.range(offset..offset + buf.len() as u64) {
            buf[(at - offset) as usize] ^= x;
        }
        Ok(())
    }

    fn write_at(&self, _: u64, _: &[u8]) -> Result<(), DiskError> {
        Err(DiskError::ReadOnly {
            device: self.describe(),
        })
    }

    fn describe(&self) -> String {
        "hostile-device".into()
    }
}

/// Records the ranges a probe reads.
#[derive(Debug)]
struct Recording {
    inner: MemDevice,
    reads: Mutex<Vec<(u64, usize)>>,
}

impl Device for Recording {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.reads.lock().unwrap().push((offset, buf.len()));
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.inner.write_at(offset, buf)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct Image {
    name: String,
    data: Arc<Vec<u8>>,
    /// Ranges a clean probe reads: where flips do damage.
    hot: Vec<(u64, usize)>,
}

fn tool_image(
    name: &str,
    dir: &std::path::Path,
    make: impl FnOnce(&std::path::Path),
) -> (String, Vec<u8>) {
    let p = dir.join(name);
    make(&p);
    (name.to_string(), std::fs::read(&p).unwrap())
}

static IMAGES: LazyLock<Vec<Image>> = LazyLock::new(|| {
    let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
    let dir = realdata("util-linux-blkid/tests/ts/blkid/images-fs");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        raw.push((name, unxz(&p)));
    }
    raw.push((
        "ext4-view journal".into(),
        unzstd(&realdata(
            "ext4-view-rs/test_data/test_disk_4k_block_journal.bin.zst",
        )),
    ));
    raw.push((
        "ntfs-rs testfs1".into(),
        std::fs::read(realdata("ntfs-rs/testdata/testfs1")).unwrap(),
    ));
    // FAT and ISO9660 have no image in the real data: make them.
    let tmp = tempfile::tempdir().unwrap();
    for bits in ["12", "16", "32"] {
        raw.push(tool_image(&format!("fat{bits}"), tmp.path(), |p| {
            let kib = if bits == "32" { "40000" } else { "20000" };
            let ok = Command::new("mkfs.vfat")
                .args(["-C", "-F", bits, "-n", "HOSTILE"])
                .arg(p)
                .arg(kib)
                .output()
                .expect("mkfs.vfat missing: apt-get install dosfstools")
                .status
                .success();
            assert!(ok);
        }));
    }
    raw.push(tool_image("iso", tmp.path(), |p| {
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        let ok = Command::new("genisoimage")
            .args(["-quiet", "-J", "-V", "Hostile_Label_Long_Enough_For_Me"])
            .arg("-o")
            .arg(p)
            .arg(&src)
            .output()
            .expect("genisoimage missing: apt-get install genisoimage")
            .status
            .success();
        assert!(ok);
    }));

    raw.into_iter()
        .map(|(name, data)| {
            let rec = Recording {
                inner: MemDevice::new(name.clone(), data.clone()),
                reads: Mutex::new(Vec::new()),
            };
            let p = probe(&rec, &ProbeOptions::default()).unwrap();
            assert!(p.is_some(), "{name}: not recognised before mutation");
            let mut hot = rec.reads.into_inner().unwrap();
            hot.retain(|&(_, l)| l > 0);
            Image {
                name,
                data: Arc::new(data),
                hot,
            }
        })
        .collect()
});

/// `len` pseudo-random bytes from `seed` (xorshift64*), fast to make.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn check(dev: &Patched, what: &str) {
    let started = Instant::now();
    let r = probe(dev, &ProbeOptions::default());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{what}: probing took {took:?}"
    );
    if let Err(ProbeError::Io { device, .. }) = &r {
        assert_eq!(device, "hostile-device");
        assert!(
            dev.fail_from.is_some(),
            "{what}: unexpected I/O error {r:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn flipped_and_truncated_images(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u32>(), 1u8..=255), 0..48),
        cut in prop_oneof![
            3 => Just(None),
            1 => (0u64..(256 << 10)).prop_map(Some),
            1 => any::<prop::sample::Index>().prop_map(|i| Some(i.index(u32::MAX as usize) as u64)),
        ],
        fail in prop_oneof![5 => Just(None), 1 => (0u64..(8 << 20)).prop_map(Some)],
    ) {
        let img = &IMAGES[pick.index(IMAGES.len())];
        let full = img.data.len() as u64;
        let len = match cut {
            None => full,
            Some(c) => c % (full + 1),
        };
        let mut map = BTreeMap::new();
        for (range, within, x) in flips {
            // Mostly bytes the probers read; sometimes anywhere.
            let at = if within % 8 == 0 || img.hot.is_empty() {
                u64::from(within) % full.max(1)
            } else {
                let (off, l) = img.hot[range.index(img.hot.len())];
                off + u64::from(within) % l as u64
            };
            *map.entry(at).or_insert(0) ^= x;
        }
        let dev = Patched { base: img.data.clone(), len, flips: map, fail_from: fail };
        check(&dev, &img.name);
    }

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..(8 << 10))) {
        let len = data.len() as u64;
        let dev = Patched { base: Arc::new(data), len, flips: BTreeMap::new(), fail_from: None };
        check(&dev, "random");
    }

    #[test]
    fn random_large_device(seed in any::<u64>(), len in 0usize..(2 << 20)) {
        let data = noise(seed, len);
        let dev = Patched { base: Arc::new(data), len: len as u64, flips: BTreeMap::new(), fail_from: None };
        check(&dev, "random");
    }

    /// Random bytes behind a real signature: the first bytes of an image
    /// kept, the rest random.
    #[test]
    fn real_head_random_tail(
        pick in any::<prop::sample::Index>(),
        keep in 0usize..(80 << 10),
        seed in any::<u64>(),
        tail in 0usize..(4 << 20),
    ) {
        let img = &IMAGES[pick.index(IMAGES.len())];
        let keep = keep.min(img.data.len());
        let mut data = img.data[..keep].to_vec();
        data.extend_from_slice(&noise(seed, tail));
        let len = data.len() as u64;
        let dev = Patched { base: Arc::new(data), len, flips: BTreeMap::new(), fail_from: None };
        check(&dev, &img.name);
    }
}

/// Every image still probes the same once the device is exactly as long as
/// its reads need, and a device whose every read fails is an error that
/// names it.
#[test]
fn io_errors_are_reported() {
    for img in IMAGES.iter() {
        let dev = Patched {
            base: img.data.clone(),
            len: img.data.len() as u64,
            flips: BTreeMap::new(),
            fail_from: Some(0),
        };
        match probe(&dev, &ProbeOptions::default()) {
            Err(ProbeError::Io { device, offset, .. }) => {
                assert_eq!(device, "hostile-device");
                assert_eq!(offset, 0);
            }
            other => panic!("{}: {other:?}", img.name),
        }
    }
}

/// A small read budget stops deep checks but never panics.
#[test]
fn tiny_budget() {
    let opts = ProbeOptions {
        max_total_read_bytes: 4096,
        max_read_bytes: 4096,
        ..ProbeOptions::default()
    };
    for img in IMAGES.iter() {
        let dev = MemDevice::new(img.name.clone(), img.data.to_vec());
        let _ = probe(&dev, &opts).unwrap();
    }
}
