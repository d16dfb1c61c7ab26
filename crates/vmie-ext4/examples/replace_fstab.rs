//! Benchmark: replace /etc/fstab on a 1 GiB and a 10 GiB sparse ext4 image
//! through a fresh Overlay, timing the operation and counting the bytes read
//! from the base device.
//!
//! `cargo run --release -p vmie-ext4 --example replace_fstab`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmie_disk::{Device, DiskError, FileDevice, Overlay};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{GuestFs, GuestPath};

#[derive(Debug)]
struct Counting {
    inner: FileDevice,
    read: AtomicU64,
}

impl Device for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.inner.write_at(offset, buf)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/fstab"), b"UUID=1234 / ext4 defaults 0 1\n").unwrap();
    let new = b"UUID=abcd / ext4 defaults 0 1\n/dev/vdb1 /data xfs defaults,nofail 0 2\n";
    let iters = 20u32;
    for gib in [1u64, 10] {
        let img = tmp.path().join(format!("{gib}g.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(gib << 30)
            .unwrap();
        let st = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&tree)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let base = Arc::new(Counting {
            inner: FileDevice::open(&img).unwrap(),
            read: AtomicU64::new(0),
        });
        let (mut t_open, mut t_rep, mut r_open, mut r_rep) = (Duration::ZERO, Duration::ZERO, 0, 0);
        for _ in 0..iters {
            let ov = Arc::new(Overlay::new(base.clone() as Arc<dyn Device>));
            let r0 = base.read.load(Ordering::Relaxed);
            let t0 = Instant::now();
            let mut fs = Ext4Fs::open(ov.clone() as Arc<dyn Device>, "bench").unwrap();
            let t1 = Instant::now();
            let r1 = base.read.load(Ordering::Relaxed);
            fs.replace_file(&GuestPath::lexical(b"/etc/fstab"), new)
                .unwrap();
            let t2 = Instant::now();
            let r2 = base.read.load(Ordering::Relaxed);
            t_open += t1 - t0;
            t_rep += t2 - t1;
            r_open += r1 - r0;
            r_rep += r2 - r1;
            assert_eq!(
                fs.read_file(&GuestPath::lexical(b"/etc/fstab"), 1 << 20)
                    .unwrap(),
                new
            );
        }
        let n = u64::from(iters);
        println!(
            "{gib:>2} GiB: open {:.2} ms, {} KiB read; replace_file {:.2} ms, {} KiB read (mean of {iters})",
            t_open.as_secs_f64() * 1e3 / f64::from(iters),
            r_open / n / 1024,
            t_rep.as_secs_f64() * 1e3 / f64::from(iters),
            r_rep / n / 1024,
        );
    }
}
